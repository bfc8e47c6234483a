"""The replay memories in StateDir: durable, bounded, expiring, never forged by an id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aws_ork import memory as memory_module
from aws_ork.decide import Handler
from aws_ork.keys.manager import KeyManager, load_master_opts
from aws_ork.keys.stage import KeyStage
from aws_ork.memory import IdMemory
from aws_ork.sqs.queue import Message
from tests.messages import envelope, new_id, notification


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def memory(path: Path, clock: Clock, **kwargs) -> IdMemory:
    return IdMemory(
        path,
        keep_seconds=kwargs.pop("keep", 100),
        limit=kwargs.pop("limit", 5),
        clock=clock,
        **kwargs,
    )


def test_an_added_id_survives_a_restart_until_it_expires(tmp_path):
    clock = Clock()
    first = memory(tmp_path / "m", clock)
    first.add("a1d3c1b5-1d0e-5b1f-9f5e-0c5e4a2e3b11")
    again = memory(tmp_path / "m", clock)  # a new process reads the file
    assert "a1d3c1b5-1d0e-5b1f-9f5e-0c5e4a2e3b11" in again
    assert "another" not in again
    clock.now += 101
    assert "a1d3c1b5-1d0e-5b1f-9f5e-0c5e4a2e3b11" not in again
    assert "a1d3c1b5-1d0e-5b1f-9f5e-0c5e4a2e3b11" not in memory(tmp_path / "m", clock)


def test_the_oldest_ids_go_first_beyond_the_limit(tmp_path):
    clock = Clock()
    mem = memory(tmp_path / "m", clock, limit=3)
    for n in range(5):
        clock.now += 1
        mem.add(f"id-{n}")
    assert [f"id-{n}" in mem for n in range(5)] == [False, False, True, True, True]
    assert len(memory(tmp_path / "m", clock, limit=3)) == 3


def test_the_file_is_compacted_and_stays_bounded(tmp_path):
    clock = Clock()
    mem = memory(tmp_path / "m", clock, limit=10)
    for n in range(3000):
        mem.add(f"id-{n}")
    assert len((tmp_path / "m").read_text().splitlines()) <= 2 * 10 + 1000 + 1
    assert "id-2999" in memory(tmp_path / "m", clock, limit=10)


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "x" * 129, "id\x1b[31m", "../x"])
def test_an_id_that_could_forge_a_line_is_refused(tmp_path, bad):
    mem = memory(tmp_path / "m", Clock())
    with pytest.raises(ValueError):
        mem.add(bad)
    assert not (tmp_path / "m").exists()


def test_damaged_lines_are_skipped_and_dry_run_writes_nothing(tmp_path):
    clock = Clock()
    (tmp_path / "m").write_text(f"garbage\n{clock.now} ok-1\n{clock.now} bad id\n{clock.now} o")
    mem = memory(tmp_path / "m", clock)
    assert "ok-1" in mem and "o" in mem and "bad" not in mem
    dry = memory(tmp_path / "d", clock, dry_run=True)
    dry.add("x")
    assert "x" not in dry and not (tmp_path / "d").exists()


def test_an_unwritable_state_dir_raises_so_the_message_is_not_reported_done(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):  # at start-up: the daemon does not start
        memory(blocker / "m", Clock())
    state = tmp_path / "state"
    mem = memory(state / "m", Clock())
    state.write_text("StateDir replaced by a file while running")
    with pytest.raises(OSError):
        mem.add("id-1")


def test_a_batch_makes_its_memories_durable_with_one_fsync_each(master, tmp_path, monkeypatch):
    """Ten launches handled as one batch: the MessageIds and instances are written as they are
    handled, made durable by one fsync per memory at flush (before the loop deletes the
    batch), not two per message; a restart reads every one back."""
    finished = IdMemory(tmp_path / "finished", keep_seconds=3600, limit=100)
    enrolled = IdMemory(tmp_path / "enrolled", keep_seconds=3600, limit=100)
    handler = Handler(
        KeyStage(KeyManager(load_master_opts(master.config_file)), enrolled=enrolled),
        finished=finished,
    )
    instances = [new_id() for _ in range(10)]
    for instance in instances:
        master.add_pending_key(instance)
    bodies = [envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", i)) for i in instances]
    messages = [Message(f"m{n}", f"r{n}", json.dumps(b), 1) for n, b in enumerate(bodies)]
    fsyncs: list[int] = []
    real_fsync = memory_module.os.fsync
    monkeypatch.setattr(
        memory_module.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1]
    )

    handler.prime(messages)
    decisions = [handler.handle(m) for m in messages]
    handler.forget()
    assert [d.reason for d in decisions] == ["accepted"] * 10
    assert fsyncs == []  # nothing reported done yet
    handler.flush()

    assert len(fsyncs) == 2
    again = [
        IdMemory(tmp_path / name, keep_seconds=3600, limit=100) for name in ("finished", "enrolled")
    ]
    assert all(b["MessageId"] in again[0] for b in bodies)
    assert all(i in again[1] for i in instances)
    assert [master.key_state_of(i) for i in instances] == ["minions"] * 10
