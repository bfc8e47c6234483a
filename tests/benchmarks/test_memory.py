"""memory: RSS of a running daemon after 1,000 and after 10,000 handled messages.

Target (issue 4): the RSS after 10,000 within a few MB of the RSS after 1,000. The queue is
fed in chunks of 100 (moto SQS slows with depth); each chunk launches 50 instances (half of
them with a pending key: accept; half without: pre-authorise) and terminates the 50 of the
previous chunk (delete, or withdraw the stub).
"""

from __future__ import annotations

import signal
import uuid

import pytest

from tests.benchmarks.bench import add_keys, instance_ids, report, send_all
from tests.daemon import queue_counts, start_aws_ork, wait_for, write_config
from tests.messages import sns_launch, sns_terminate

TOTAL = 10_000
CHUNK = 100
CHECKPOINTS = (1_000, 2_000, 5_000, 10_000)



def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(900)
def test_memory(master, sqs, tmp_path):
    url = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:12]}",
                           Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    conf = write_config(tmp_path / "c.conf", queue_url=url, master=master)
    daemon = start_aws_ork(conf, tmp_path / "daemon.log")
    rss: dict[int, int] = {}
    previous: list[str] = []
    try:
        handled = 0
        chunk_no = 0
        while handled < TOTAL:
            ids = instance_ids(CHUNK // 2, f"{chunk_no:05x}")
            add_keys(master, ids[::2])
            bodies = [sns_launch(i) for i in ids] + [sns_terminate(i) for i in previous]
            send_all(sqs, url, bodies)
            wait_for(lambda: queue_counts(sqs, url) == (0, 0), 120, "the chunk to drain")
            handled += len(bodies)
            previous = ids
            chunk_no += 1
            for mark in CHECKPOINTS:
                if handled >= mark and mark not in rss:
                    rss[mark] = rss_kib(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    growth = (rss[10_000] - rss[1_000]) / 1024
    report("memory: RSS of the running daemon", [
        *(f"after {mark:>6} messages: {rss[mark] / 1024:6.1f} MiB" for mark in CHECKPOINTS),
        f"growth from 1,000 to 10,000: {growth:+.1f} MiB (target: within a few MB)",
    ])
