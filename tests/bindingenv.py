"""What the key binding tests share (a pytest plugin of tests/conftest.py): the daemon with
KeyBinding = tag in the background, the minions a test starts, and which minion answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import start_aws_ork, stop_aws_ork
from tests.saltenv import SaltEnvError, SaltMaster, SaltMinion, free_port
from tests.trustenv import trust_config

#: what data/instance/aws_ork-bind-minion.sh sets: a minion Salt denied (an impostor's key
#: was pending first) keeps retrying instead of exiting
AS_THE_SCRIPT_SETS = {"rejected_retry": True}


#: Waits for a minion's answer are long on purpose: on a loaded machine a publication the minion
#: misses (sent just before it subscribed) costs the salt CLI its gather timeout per try.
def answers_from(master: SaltMaster, minion_id: str) -> Any:
    """Which minion answers under this id: its own pki_dir (None while no key is accepted:
    salt then says "No minions matched the target")."""
    try:
        reply = master.salt_cmd(
            minion_id, "config.get", timeout=20, args=["pki_dir"], salt_timeout=5
        )
    except SaltEnvError:
        return None
    return reply.get(minion_id)


def accepted_pub(master: SaltMaster, minion_id: str) -> str | None:
    """The key accepted under this id, as Salt stored it (whitespace at its ends stripped)."""
    path = master.key_path(minion_id, "minions")
    return path.read_text().strip() if path.is_file() else None


@pytest.fixture
def metrics_port() -> int:
    """Where the ``bound_daemon`` fixture's /metrics answers."""
    return free_port()


@pytest.fixture
def bound_daemon(
    master, tmp_path, queue_url, cert_dir, fleet, metrics_port
) -> Iterator[tuple[Path, Any]]:
    """The daemon with the shipped trust defaults and KeyBinding = tag, running in the
    background; (its log, process)."""
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        KeyBinding="tag",
        MetricsAddress=f"127.0.0.1:{metrics_port}",
    )
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log)
    try:
        yield log, proc
    finally:
        stop_aws_ork(proc)


@pytest.fixture
def minions() -> Iterator[list[SaltMinion]]:
    """The salt-minions a test starts, stopped after it."""
    started: list[SaltMinion] = []
    yield started
    for minion in started:
        minion.stop()
