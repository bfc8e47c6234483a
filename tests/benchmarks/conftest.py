"""Fixtures shared by the benchmarks."""

from __future__ import annotations

import pytest

from tests.saltenv import start_master


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    """Two real salt-masters: ours, and the limit (``auto_accept: True``)."""
    ours = start_master(tmp_path_factory.mktemp("ours"))
    limit = start_master(tmp_path_factory.mktemp("limit"), extra_opts={"auto_accept": True})
    yield ours, limit
    ours.stop()
    limit.stop()
