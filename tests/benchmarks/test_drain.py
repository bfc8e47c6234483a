"""drain: N launches (for N pending keys), then N terminates, through ``aws_ork --once``,
with and without the S3 mirror, against a bare boto3 receive/delete loop on the same server.

Target (issue 4): with the mirror on, at least 0.75 of the bare loop's rate.
"""

from __future__ import annotations

import uuid

import pytest

from tests.benchmarks.bench import (
    add_keys,
    instance_ids,
    report,
    send_all,
    time_aws_ork,
    time_bare_loop,
)
from tests.daemon import bucket_objects, write_config
from tests.messages import sns_launch, sns_terminate

N = 500



def fresh_queue(sqs) -> str:
    return sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:12]}",
                            Attributes={"VisibilityTimeout": "60"})["QueueUrl"]


def drain(master, sqs, tmp_path, ids, *, bucket=None) -> float:
    """Seconds for aws_ork to work off N launches, then N terminates (two --once runs)."""
    add_keys(master, ids)
    total = 0.0
    for make in (sns_launch, sns_terminate):
        url = fresh_queue(sqs)
        send_all(sqs, url, [make(i) for i in ids])
        conf = write_config(tmp_path / "c.conf", queue_url=url, master=master, bucket=bucket)
        total += time_aws_ork(conf)
        sqs.delete_queue(QueueUrl=url)
        expected = "minions" if make is sns_launch else None
        listing = master.key_states()
        found = {s for s, names in listing.items() if ids[0] in names}
        assert found == ({expected} if expected else set()), found
    return total


def bare(sqs, ids) -> float:
    total = 0.0
    for make in (sns_launch, sns_terminate):
        url = fresh_queue(sqs)
        send_all(sqs, url, [make(i) for i in ids])
        seconds, handled = time_bare_loop(url)
        assert handled == len(ids)
        total += seconds
        sqs.delete_queue(QueueUrl=url)
    return total


ROUNDS = 2  # interleaved, so load from other work on the machine hits every variant alike


@pytest.mark.timeout(900)
def test_drain(master, sqs, s3, bucket, tmp_path):
    totals = {"bare": 0.0, "plain": 0.0, "mirror": 0.0}
    lines = []
    for r in range(ROUNDS):
        bare_s = bare(sqs, instance_ids(N, f"b0{r}"))
        plain_s = drain(master, sqs, tmp_path, instance_ids(N, f"b1{r}"))
        mirror_s = drain(master, sqs, tmp_path, instance_ids(N, f"b2{r}"), bucket=bucket)
        assert not any(f"b2{r}" in key for key in bucket_objects(s3, bucket)), "mirror deletes"
        for name, value in (("bare", bare_s), ("plain", plain_s), ("mirror", mirror_s)):
            totals[name] += value
        lines.append(f"round {r + 1}: bare {bare_s:5.1f} s, aws_ork {plain_s:5.1f} s "
                     f"({bare_s / plain_s:.2f}), aws_ork + mirror {mirror_s:5.1f} s "
                     f"({bare_s / mirror_s:.2f})")
    count = ROUNDS * 2 * N
    bare_s, plain_s, mirror_s = totals["bare"], totals["plain"], totals["mirror"]
    report(f"drain: {N} launches + {N} terminates x {ROUNDS} rounds, process start included", [
        *lines,
        f"bare boto3 loop : {bare_s:6.1f} s  {count / bare_s:6.1f} msg/s",
        f"aws_ork         : {plain_s:6.1f} s  {count / plain_s:6.1f} msg/s  "
        f"rate {bare_s / plain_s:.2f} of the bare loop",
        f"aws_ork + mirror: {mirror_s:6.1f} s  {count / mirror_s:6.1f} msg/s  "
        f"rate {bare_s / mirror_s:.2f} of the bare loop (target >= 0.75)",
    ])
