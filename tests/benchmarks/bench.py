"""Helpers shared by the benchmarks: preload a queue, make keys fast, time processes.

Benchmarks print ratios measured in one run on one machine, against a baseline run on the
same moto server in the same session: absolute numbers from moto say little about AWS.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.daemon import command
from tests.saltenv import SaltMaster, generate_public_key_pem

_PUB: list[str] = []


def shared_pub() -> str:
    """One valid RSA public key for all bench keys (Salt checks it parses, not that it's unique)."""
    if not _PUB:
        _PUB.append(generate_public_key_pem())
    return _PUB[0]


def instance_ids(count: int, prefix: str) -> list[str]:
    """Distinct, valid instance ids; ``prefix`` is 1-5 hex digits that keep sets apart."""
    width = 17 - len(prefix)
    return [f"i-{prefix}{n:0{width}x}" for n in range(count)]


def add_keys(master: SaltMaster, ids: Iterable[str], state: str = "minions_pre") -> None:
    """Write keys straight into a key directory (what a minion's auth would leave there)."""
    directory = master.pki_dir / state
    pub = shared_pub()
    for minion_id in ids:
        (directory / minion_id).write_text(pub)


def send_all(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start:start + 10]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)])


def time_aws_ork(conf: Path, *args: str) -> float:
    """Wall time of ``aws_ork --once`` from process start to exit (incl. the final mirror)."""
    started = time.perf_counter()
    result = subprocess.run(command(conf, "--once", *args), capture_output=True, text=True,
                            env=os.environ.copy(), timeout=900)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise AssertionError(f"aws_ork failed ({result.returncode}): {result.stderr[-3000:]}")
    return elapsed


BARE_LOOP = textwrap.dedent("""
    import sys, boto3
    sqs = boto3.client("sqs", region_name="us-west-2")
    url, handled = sys.argv[1], 0
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                  MessageSystemAttributeNames=["ApproximateReceiveCount"])
        messages = got.get("Messages", [])
        if not messages:
            break
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        handled += len(messages)
    print(handled)
""")


def time_bare_loop(queue_url: str) -> tuple[float, int]:
    """The floor: a bare boto3 receive(10) + delete_message_batch loop in a fresh process that,
    like ``aws_ork --once``, stops at the first empty 2 s receive. Returns (seconds, handled)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", BARE_LOOP, queue_url], capture_output=True,
                            text=True, env=os.environ.copy(), timeout=900, check=True)
    return time.perf_counter() - started, int(result.stdout.strip())


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()} {platform.machine()} {cpus} cores {model}, Python " \
           f"{platform.python_version()}"


def report(title: str, lines: list[str]) -> None:
    print(f"\n=== {title} ({time.strftime('%Y-%m-%d %H:%M')}, {machine()}) ===")
    for line in lines:
        print("  " + line)
