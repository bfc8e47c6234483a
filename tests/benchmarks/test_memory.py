"""memory: RSS of a running daemon after 1,000 and after 10,000 handled messages.

With the shipped trust defaults (every message an SNS envelope signed by a test CA, from a
topic in AllowedTopicArns; VerifyInstances on; replay memories in StateDir). The baseline is
the same process's RSS after the first 1,000 messages. Target (issue 4): the RSS after 10,000
within a few MB of the RSS after 1,000.

The queue is fed in chunks of 100 (moto's SQS slows with depth: each receive and each delete
walks the whole queue); each chunk launches 50 new moto instances (half of them with a pending
key: accept; half without: pre-authorise) and terminates the 50 of the previous chunk (EC2
says so first; then delete the key, or withdraw the stub). So 10,000 messages are 5,000
launches and 5,000 terminates of 5,000 distinct instances, as a real fleet sends them.

Why not a small pool of instances launched again with fresh message ids: an instance id
launches once. The EC2 check refuses a launch of a terminated instance, and an instance whose
key was accepted once is never enrolled again (the enrolled-instances memory), so from the
second lap on a pool would measure refusals, not accepts and deletes.

By design the daemon keeps what it has done in two memories (aws_ork/memory.py): the SNS
MessageId of every finished envelope (one per message here) and every enrolled instance (one
per accepted launch), bounded at 200,000 ids each. The report prints their share of the
growth, measured with tracemalloc on the same class, and what is left beyond them.
"""

from __future__ import annotations

import time
import tracemalloc
import uuid

import pytest

from aws_ork.memory import IdMemory
from tests.benchmarks.bench import (
    add_keys,
    defaults_config,
    fresh_queue,
    launch_instances,
    report,
    rss_kib,
    scaled,
    send_all,
    sign_body,
    terminate_instances,
)
from tests.daemon import queue_counts, start_aws_ork, states, stop_aws_ork, wait_for
from tests.messages import sns_launch, sns_terminate

CHUNK = 100
CHECKPOINTS = tuple(scaled(n) for n in (1_000, 2_000, 5_000, 10_000))
FIRST, LAST = CHECKPOINTS[0], CHECKPOINTS[-1]
TOTAL = LAST


def bytes_per_id(count: int = 20_000) -> float:
    """Heap bytes one remembered id costs in IdMemory (an SNS MessageId, a uuid4 string),
    measured by loading a memory file of ``count`` ids under tracemalloc."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ids"
        now = time.time()
        path.write_text("".join(f"{now:.3f} {uuid.uuid4()}\n" for _ in range(count)))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            memory = IdMemory(path, keep_seconds=3600, limit=10 * count)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(memory) == count
        return (after - before) / count


def ids_in(state_dir) -> int:
    """Ids written to the replay memories so far (lines of their files)."""
    return sum(
        len(path.read_bytes().splitlines())
        for path in (state_dir / "finished-sns-messages", state_dir / "enrolled-instances")
        if path.exists()
    )


@pytest.mark.timeout(2400)
def test_memory(master, sqs, tmp_path, identity, cert_dir):
    url = fresh_queue(sqs)
    conf = defaults_config(tmp_path / "c.conf", queue_url=url, master=master, cert_dir=cert_dir)
    state_dir = tmp_path / "state"
    log = tmp_path / "daemon.log"
    daemon = start_aws_ork(conf, log)
    rss: dict[int, int] = {}
    remembered: dict[int, int] = {}
    previous: list[str] = []
    first: list[str] = []
    try:
        handled = 0
        while handled < TOTAL:
            ids = launch_instances(CHUNK // 2)
            first = first or ids
            add_keys(master, ids[::2])
            terminate_instances(previous)  # EC2 must say they are gone before a key goes
            bodies = [sign_body(identity, sns_launch(i)) for i in ids] + [
                sign_body(identity, sns_terminate(i)) for i in previous
            ]
            send_all(sqs, url, bodies)
            wait_for(lambda: queue_counts(sqs, url) == (0, 0), 300, "the chunk to drain")
            handled += len(bodies)
            previous = ids
            for mark in CHECKPOINTS:
                if handled >= mark and mark not in rss:
                    rss[mark] = rss_kib(daemon.pid)
                    remembered[mark] = ids_in(state_dir)
    finally:
        status = stop_aws_ork(daemon)
    text = log.read_text()
    assert status == 0 and "Traceback" not in text, text[-3000:]
    # what was measured is the accept/delete path, not refusals
    assert set(states(master, *first).values()) == {None}, "the first chunk's keys deleted"
    last = states(master, *previous)
    assert all(last[i] == "minions" for i in previous[::2]), last
    assert all((master.pki_dir / "minions_autosign" / i).exists() for i in previous[1::2])

    growth = (rss[LAST] - rss[FIRST]) / 1024
    new_ids = remembered[LAST] - remembered[FIRST]
    by_design = new_ids * bytes_per_id() / 2**20
    report(
        "memory (shipped trust defaults): RSS of the running daemon",
        [
            *(
                f"after {mark:>6} messages: {rss[mark] / 1024:6.1f} MiB "
                f"({remembered[mark]:>6} ids in the replay memories)"
                for mark in CHECKPOINTS
            ),
            f"growth from {FIRST:,} to {LAST:,}: {growth:+.1f} MiB (target: within a few MB)",
            f"of which the replay memories' {new_ids:,} new ids: ~{by_design:.1f} MiB (by design, "
            f"bounded); beyond them: {growth - by_design:+.1f} MiB",
        ],
    )
