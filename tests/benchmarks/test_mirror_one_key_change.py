"""mirror_one_key_change: S3 requests and time to mirror ONE key change (a pending key
accepted) with 10, 1,000 and 10,000 keys on the master: aws_ork's incremental mirror
(``S3Mirror.sync_paths``, what the mirror thread runs after a key change) against
``aws s3 sync --delete`` (what 0.4.5 ran), on the same tree and the same moto server in the
same run. Prints the ratios. Target: O(1) requests per key change whatever the tree's size.

No message is handled and no daemon runs: the mirror is driven directly with a file Salt
moved, so the trust settings (signatures, topics, the EC2 check) play no part in what this
measures; they decide whether a key changes, never how the change is mirrored. The cost of
the mirror within a drain with the trust defaults is test_drain.py's "aws_ork + mirror".
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest

from aws_ork.config import BucketUrl
from aws_ork.mirror.bucket import S3Tree
from aws_ork.mirror.planner import S3Mirror
from aws_ork.mirror.worker import key_paths, unmirrored_dirs
from tests.awsenv import script
from tests.benchmarks.bench import SCALE, scaled
from tests.saltenv import generate_public_key_pem

SIZES = (10, scaled(1_000, 100), scaled(10_000, 1_000))
PUB = generate_public_key_pem().encode()


def make_tree(root: Path, keys: int) -> str:
    """A master pki with ``keys`` accepted keys and one pending; returns the pending id."""
    for state in ("minions", "minions_pre", "minions_rejected", "minions_denied"):
        (root / "master" / state).mkdir(parents=True)
    (root / "master" / "master.pem").write_bytes(b"private")
    os.chmod(root / "master" / "master.pem", 0o400)
    for n in range(keys):
        (root / "master" / "minions" / f"i-{n:017x}").write_bytes(PUB)
    pending = f"i-{keys + 1:017x}"
    (root / "master" / "minions_pre" / pending).write_bytes(PUB)
    # files older than their upload: awscli compares mtimes with LastModified (1 s
    # resolution) and would upload files written in the same second again
    old = time.time() - 3600
    for path in root.rglob("*"):
        os.utime(path, (old, old))
    return pending


def aws_sync(tree: Path, bucket: str, debug: bool = False) -> tuple[float, int]:
    """``aws s3 sync --delete``: (seconds, S3 requests made)."""
    argv = [
        script("aws"),
        "s3",
        "sync",
        "--delete",
        "--only-show-errors",
        str(tree),
        f"s3://{bucket}/cli/",
    ]
    started = time.perf_counter()
    result = subprocess.run(
        argv + (["--debug"] if debug else []), capture_output=True, text=True, timeout=1800
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    return elapsed, len(re.findall(r"Making request for OperationModel", result.stderr))


@pytest.mark.parametrize("keys", SIZES)
def test_one_key_change(keys, tmp_path, moto, s3, capsys):
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    root = tmp_path / "pki"
    pending = make_tree(root, keys)
    client = boto3.client("s3", region_name="us-west-2")
    calls: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    # as the daemon makes it: pending and denied keys and autosign stubs are not mirrored
    mirror = S3Mirror(
        S3Tree(client, BucketUrl(bucket, "pki/")),
        root,
        tmp_path / "manifest",
        unmirrored=unmirrored_dirs("master"),
    )

    started = time.perf_counter()
    mirror.reconcile()  # the first full mirror (start-up)
    first = time.perf_counter() - started
    aws_sync(root, bucket)  # the awscli copy starts from the same tree

    # the change: Salt moves the key from minions_pre/ to minions/
    os.rename(root / "master" / "minions_pre" / pending, root / "master" / "minions" / pending)
    calls.clear()
    started = time.perf_counter()
    mirror.sync_paths(key_paths("master", pending))
    ours = time.perf_counter() - started
    ours_requests = len(calls)
    theirs, theirs_requests = aws_sync(root, bucket, debug=True)
    again, _ = aws_sync(root, bucket)  # nothing left to do: the cost of looking

    with capsys.disabled():
        print(
            f"\n{keys:>6} keys | aws_ork: {ours_requests} requests {ours * 1000:8.1f} ms | "
            f"aws s3 sync --delete: {theirs_requests} requests {theirs * 1000:8.1f} ms "
            f"(no-op run {again * 1000:.0f} ms) | ratio requests "
            f"{theirs_requests / ours_requests:.1f}x, time {theirs / ours:.0f}x | "
            f"first full mirror {first:.1f}s"
            + (f" [AWS_ORK_BENCH_SCALE={SCALE:g}: reduced size]" if SCALE != 1 else "")
        )
    # one PUT, whatever the tree's size (the pending key it replaces was never mirrored)
    assert ours_requests == 1
