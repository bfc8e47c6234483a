"""Proves the Salt harness in tests/saltenv.py against real salt-master/salt-minion processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.saltenv import (
    KEY_STATES,
    SaltEnvError,
    SaltMaster,
    SaltMinion,
    live_processes,
    start_master,
    start_minion,
    stop_process,
)

pytestmark = pytest.mark.slow

INSTANCE_ID = "i-0123456789abcdef0"
PEM_HEAD = "-----BEGIN PUBLIC KEY-----"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def salt_master(tmp_path_factory) -> SaltMaster:
    master = start_master(tmp_path_factory.mktemp("salt-master"))
    yield master
    master.cleanup()


@pytest.fixture
def master(salt_master: SaltMaster) -> SaltMaster:
    """The shared running master with no minion keys, before and after the test."""
    salt_master.clear_keys()
    yield salt_master
    salt_master.clear_keys()


@pytest.fixture
def minion_factory(tmp_path_factory):
    """start_minion() that stops every minion it started at teardown."""
    started: list[SaltMinion] = []

    def make(master: SaltMaster, minion_id: str, **kw) -> SaltMinion:
        minion = start_minion(master, tmp_path_factory.mktemp("minion"), minion_id, **kw)
        started.append(minion)
        return minion

    yield make
    for minion in started:
        minion.stop()


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line contains *text*."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry), cmdline))
    return found


# ---------------------------------------------------------- without a master


def test_unstarted_master_config_and_key_files(tmp_path):
    m = start_master(tmp_path, start=False, extra_opts={"autosign_timeout": 5})
    assert m.proc is None
    assert m.config_file == m.config_dir / "master" and m.config_file.is_file()
    assert m.pki_root == m.pki_dir.parent and m.pki_dir.name == "master"
    assert m.publish_port != m.ret_port

    opts = m.opts()
    # root_dir "/" keeps our absolute paths as they are
    assert Path(opts["pki_dir"]) == m.pki_dir
    assert Path(opts["sock_dir"]) == m.sock_dir
    assert opts["interface"] == "127.0.0.1"
    assert (opts["publish_port"], opts["ret_port"]) == (m.publish_port, m.ret_port)
    assert opts["autosign_timeout"] == 5  # extra_opts reach Salt
    assert opts["auto_accept"] is False

    assert m.key_states() == {s: [] for s in KEY_STATES}
    paths = {
        "minions_pre": m.add_pending_key("i-00000000000000001"),
        "minions": m.add_accepted_key("i-00000000000000002"),
        "minions_rejected": m.add_rejected_key("i-00000000000000003"),
        "minions_denied": m.add_denied_key("i-00000000000000004"),
    }
    for state, path in paths.items():
        assert path == m.pki_dir / state / path.name
        assert path.read_text().startswith(PEM_HEAD)
    assert m.key_states() == {
        "minions": ["i-00000000000000002"],
        "minions_pre": ["i-00000000000000001"],
        "minions_rejected": ["i-00000000000000003"],
        "minions_denied": ["i-00000000000000004"],
    }

    import salt.key

    listed = salt.key.Key(opts).list_keys()
    assert listed["minions_pre"] == ["i-00000000000000001"]
    assert listed["minions"] == ["i-00000000000000002"]

    m.clear_keys()
    assert m.key_states() == {s: [] for s in KEY_STATES}


# ------------------------------------------------------------- with a master


def test_master_is_sandboxed_and_running(master: SaltMaster):
    assert master.running
    assert (master.pki_dir / "master.pem").is_file()
    assert (master.sock_dir / "master_event_pub.ipc").exists()
    opts = master.opts()
    # the autosign-directory mechanism needs none of these
    assert opts["auto_accept"] is False
    assert "autosign_file" not in opts
    assert "autosign_grains_dir" not in opts


def test_added_pending_key_is_listed_as_pending(master: SaltMaster):
    path = master.add_pending_key("i-0aaaaaaaaaaaaaaaa")
    assert path == master.pki_dir / "minions_pre" / "i-0aaaaaaaaaaaaaaaa"
    states = master.key_states()
    assert states["minions_pre"] == ["i-0aaaaaaaaaaaaaaaa"]
    assert states["minions"] == states["minions_rejected"] == states["minions_denied"] == []
    master.wait_for_key("i-0aaaaaaaaaaaaaaaa", "minions_pre", timeout=5)
    with pytest.raises(SaltEnvError, match="timed out"):
        master.wait_for_key("i-0aaaaaaaaaaaaaaaa", "minions", timeout=0.5)


def test_real_minion_pends_then_answers_ping_once_accepted(master: SaltMaster, minion_factory):
    t0 = time.monotonic()
    minion = minion_factory(master, INSTANCE_ID)
    master.wait_for_key(INSTANCE_ID, "minions_pre", timeout=20)
    print(f"minion start -> pending: {time.monotonic() - t0:.1f}s")
    # the master stores exactly the key the minion submitted
    pending = master.pki_dir / "minions_pre" / INSTANCE_ID
    assert pending.read_text().strip() == minion.public_key()

    master.salt_key("-a", INSTANCE_ID, "-y")
    master.wait_for_key(INSTANCE_ID, "minions", timeout=5)
    t1 = time.monotonic()
    master.wait_for_ping(INSTANCE_ID, timeout=30)
    print(f"accept -> ping: {time.monotonic() - t1:.1f}s")
    assert master.salt_cmd(INSTANCE_ID, "test.ping") == {INSTANCE_ID: True}


@pytest.mark.parametrize("stub_content", ["", "any text at all\n"], ids=["empty", "text"])
def test_autosign_stub_accepts_a_new_minion(master: SaltMaster, minion_factory, stub_content):
    minion_id = "i-0bbbbbbbbbbbbbbbb"
    stub = master.pki_dir / "minions_autosign" / minion_id
    stub.write_text(stub_content)

    t0 = time.monotonic()
    minion_factory(master, minion_id)
    master.wait_for_key(minion_id, "minions", timeout=20)
    print(f"minion start -> accepted via stub: {time.monotonic() - t0:.1f}s")
    assert not stub.exists(), "the master consumes the stub"
    master.wait_for_ping(minion_id, timeout=30)


def test_autosign_stub_accepts_an_already_pending_minion(master: SaltMaster, minion_factory):
    minion_id = "i-0cccccccccccccccc"
    minion_factory(master, minion_id, acceptance_wait_time=1)
    master.wait_for_key(minion_id, "minions_pre", timeout=20)

    t0 = time.monotonic()
    stub = master.add_autosign_stub(minion_id)
    master.wait_for_key(minion_id, "minions", timeout=15)
    print(f"stub -> pending key accepted: {time.monotonic() - t0:.1f}s")
    assert not stub.exists()


def test_stop_leaves_no_salt_process(tmp_path):
    m = start_master(tmp_path / "m")
    try:
        minion = start_minion(m, tmp_path / "mi", "i-0dddddddddddddddd")
    except BaseException:
        m.stop()
        raise
    m_pgid, mi_pgid = m.proc.pid, minion.proc.pid
    assert len(live_processes(m_pgid)) > 3  # salt-master forks many children
    assert live_processes(mi_pgid)
    assert _processes_mentioning(str(tmp_path))

    minion.stop()
    m.stop()
    assert m.proc is None and minion.proc is None
    assert live_processes(m_pgid) == []
    assert live_processes(mi_pgid) == []
    assert _processes_mentioning(str(tmp_path)) == []
    stop_process(None)  # stopping nothing is fine
    m.stop()  # idempotent
