"""Helpers shared by the benchmarks: preload a queue, make keys fast, time processes, run the
daemon with the shipped trust defaults.

Benchmarks print ratios measured in one run on one machine, against a baseline run on the
same moto server in the same session: absolute numbers from moto say little about AWS.

``AWS_ORK_BENCH_SCALE`` (default 1) multiplies the sizes (messages, keys, rounds) of every
benchmark: 0.1 is a quick check that a benchmark works, whose numbers are no measurement
(each report's title then says so).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import boto3

from tests.daemon import command, write_config
from tests.saltenv import SaltMaster, generate_public_key_pem
from tests.snssign import SigningIdentity, sign_envelope
from tests.trustenv import TOPIC

_PUB: list[str] = []

SCALE = float(os.environ.get("AWS_ORK_BENCH_SCALE", "1"))


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` at AWS_ORK_BENCH_SCALE, at least ``minimum``."""
    return max(minimum, round(n * SCALE))


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


def remove_keys(master: SaltMaster, ids: Iterable[str]) -> None:
    """Take keys out of the key directories again (the files add_keys wrote, or Salt moved)."""
    for minion_id in ids:
        for state in ("minions", "minions_pre"):
            (master.pki_dir / state / minion_id).unlink(missing_ok=True)


def fresh_queue(sqs: Any) -> str:
    return sqs.create_queue(
        QueueName=f"bench-{uuid.uuid4().hex[:12]}", Attributes={"VisibilityTimeout": "60"}
    )["QueueUrl"]


def sign_body(identity: SigningIdentity, body: str) -> str:
    """An SNS envelope (tests.messages.sns_launch / sns_terminate) as SNS would send it: from
    our topic (AllowedTopicArns), signed with the test CA's key (its certificate in
    CertCacheDir), with a MessageId of its own."""
    envelope = json.loads(body)
    envelope["TopicArn"] = TOPIC
    return json.dumps(sign_envelope(envelope, identity))


def launch_instances(n: int) -> list[str]:
    """N running moto instances (what VerifyInstances looks up), made 500 per call."""
    ec2 = boto3.client("ec2", region_name="us-west-2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < n:
        count = min(500, n - len(ids))
        reply = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count)
        ids += [i["InstanceId"] for i in reply["Instances"]]
    return sorted(ids)


def terminate_instances(ids: list[str]) -> None:
    """EC2 says they are gone (VerifyInstances: only then may a terminate delete a key)."""
    ec2 = boto3.client("ec2", region_name="us-west-2")
    for start in range(0, len(ids), 500):
        ec2.terminate_instances(InstanceIds=ids[start : start + 500])


def defaults_config(
    path: Path,
    *,
    queue_url: str,
    master: SaltMaster,
    cert_dir: Path,
    bucket: str | None = None,
    **options: Any,
) -> Path:
    """An aws_ork.conf with the shipped trust defaults: VerifySignatures and VerifyInstances on,
    AllowedTopicArns our topic, the test CA's certificate in CertCacheDir, replay memories in
    StateDir (next to the file). LifecycleHooks stays empty (tests.daemon.write_config): the
    benchmark messages are notifications without a lifecycle action, so no hook is completed
    with the shipped ``*`` either."""
    values: dict[str, Any] = {
        "VerifySignatures": "true",
        "VerifyInstances": "true",
        "AllowedTopicArns": TOPIC,
        "CertCacheDir": cert_dir,
    }
    values.update(options)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_config(path, queue_url=queue_url, master=master, bucket=bucket, **values)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def send_all(sqs: Any, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )


def time_aws_ork(conf: Path, *args: str) -> float:
    """Wall time of ``aws_ork --once`` from process start to exit (incl. the final mirror)."""
    started = time.perf_counter()
    result = subprocess.run(
        command(conf, "--once", *args),
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )
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
    result = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, queue_url],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
        check=True,
    )
    return time.perf_counter() - started, int(result.stdout.strip())


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, e.g. a moto server's."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    return (
        f"{platform.node()} {platform.machine()} {cpus} cores {model}, Python "
        f"{platform.python_version()}"
    )


def report(title: str, lines: list[str]) -> None:
    if SCALE != 1:
        title += f" [AWS_ORK_BENCH_SCALE={SCALE:g}: reduced size, not a measurement]"
    print(f"\n=== {title} ({time.strftime('%Y-%m-%d %H:%M')}, {machine()}) ===")
    for line in lines:
        print("  " + line)
