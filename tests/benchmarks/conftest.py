"""Fixtures shared by the benchmarks."""

from __future__ import annotations

import pytest

from tests.saltenv import start_master


@pytest.fixture(scope="module", autouse=True)
def fresh_moto(moto):
    """Each benchmark module starts on an empty moto server: its costs grow with what it holds
    (DescribeInstances and RunInstances with the instances made so far, terminated ones
    included), so without the reset a benchmark's absolute times would depend on which ran
    before it in the session. Module-scoped fixtures (``fleet``) are made after this one."""
    moto.reset()


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    """Two real salt-masters: ours, and the limit (``auto_accept: True``)."""
    ours = start_master(tmp_path_factory.mktemp("ours"))
    limit = start_master(tmp_path_factory.mktemp("limit"), extra_opts={"auto_accept": True})
    yield ours, limit
    ours.stop()
    limit.stop()
