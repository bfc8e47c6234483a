"""drain_flat: the rate of a 5,000-launch drain against the rate of a 500-launch drain.

With the shipped trust defaults (every launch an SNS envelope signed by a test CA, from a
topic in AllowedTopicArns, for a real moto instance that VerifyInstances looks up; replay
memories in StateDir; no S3 mirror, which is off unless BucketUrl is set). Each drain is one
running daemon (a fresh process and StateDir) accepting N pending keys; the clock runs from
the first message sent to the last key accepted, so process start-up is left out of both.
The baseline is the 500-launch drain, run before and after the 5,000 in the same run (the
sum of both against the 5,000 cancels drift from other load). Target: the 5,000-launch rate
within 10 % of the 500-launch rate.

The queue is fed, not preloaded: a preloaded moto queue is not flat by itself (each receive
and each delete walks the whole queue, so its cost grows with depth: the bare receive/delete
loop of bench.py drains 500 messages at ~36 msg/s and 2,000 at ~11 msg/s, and sending slows
the same way), which would measure moto. Here the feeder keeps at most DEPTH launches sent
but not yet accepted, so both drains see the same depth. All instances are made before the
first drain, so every DescribeInstances answers from the same moto fleet.
"""

from __future__ import annotations

import time

import pytest

from tests.benchmarks.bench import (
    add_keys,
    defaults_config,
    fresh_queue,
    launch_instances,
    remove_keys,
    report,
    scaled,
    send_all,
    sign_body,
)
from tests.daemon import start_aws_ork, stop_aws_ork, wait_for
from tests.messages import sns_launch

SHORT = scaled(500, 20)
LONG = scaled(5_000, 200)
DEPTH = 100  # launches sent ahead of the daemon: ten receive batches


def fed_drain(master, sqs, folder, ids: list[str], bodies: list[str], cert_dir) -> float:
    """Seconds for a running daemon to accept ``len(ids)`` pending keys, their launches fed
    to the queue DEPTH ahead of what it has accepted."""
    add_keys(master, ids)
    url = fresh_queue(sqs)
    conf = defaults_config(folder / "c.conf", queue_url=url, master=master, cert_dir=cert_dir)
    log = folder / "daemon.log"
    daemon = start_aws_ork(conf, log)
    accepted = master.pki_dir / "minions"
    try:
        wait_for(lambda: ": queue " in log.read_text(), 60, "the daemon to start")
        outstanding: list[str] = []  # sent, not accepted yet: at most DEPTH, so each poll
        sent = done = 0  # costs the same whatever the drain's length
        started = time.perf_counter()
        while done < len(ids):
            while sent < len(ids) and len(outstanding) < DEPTH:
                send_all(sqs, url, bodies[sent : sent + 10])
                outstanding += ids[sent : sent + 10]
                sent += len(bodies[sent : sent + 10])
            time.sleep(0.05)
            still = [i for i in outstanding if not (accepted / i).exists()]
            done += len(outstanding) - len(still)
            outstanding = still
            if daemon.poll() is not None or time.perf_counter() - started > 1200:
                raise AssertionError(f"{done} of {len(ids)} accepted: {log.read_text()[-3000:]}")
        elapsed = time.perf_counter() - started
    finally:
        status = stop_aws_ork(daemon)
    text = log.read_text()
    assert status == 0 and "Traceback" not in text, text[-3000:]
    remove_keys(master, ids)  # the next drain starts with the same key directories
    sqs.delete_queue(QueueUrl=url)
    return elapsed


@pytest.mark.timeout(2400)
def test_drain_flat(master, sqs, tmp_path, identity, cert_dir):
    runs = (("short, before", SHORT), ("long", LONG), ("short, after", SHORT))
    fleet = launch_instances(2 * SHORT + LONG)  # one fleet in moto for all three drains
    seconds: dict[str, float] = {}
    lines = []
    taken = 0
    for n, (name, count) in enumerate(runs):
        ids = fleet[taken : taken + count]
        taken += count
        bodies = [sign_body(identity, sns_launch(i)) for i in ids]  # signed before the clock
        seconds[name] = fed_drain(master, sqs, tmp_path / f"run{n}", ids, bodies, cert_dir)
        lines.append(
            f"{count:>5} launches: {seconds[name]:6.1f} s  {count / seconds[name]:5.1f} msg/s"
        )
    short_rate = 2 * SHORT / (seconds["short, before"] + seconds["short, after"])
    long_rate = LONG / seconds["long"]
    report(
        f"drain_flat (shipped trust defaults): {LONG:,} launches vs {SHORT} (before and "
        f"after), running daemon, queue fed {DEPTH} ahead, start-up not timed",
        [
            *lines,
            f"rate of {LONG:,} = {long_rate / short_rate:.2f} of the rate of {SHORT} "
            f"(target >= 0.9)",
        ],
    )
