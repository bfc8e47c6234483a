"""key_scaling: the drain with 10 and with 10,000 other keys on the master.

The drain of tests/benchmarks/test_drain.py with the shipped trust defaults (signed envelopes,
AllowedTopicArns, the EC2 check on real moto instances, replay memories): N launches for N
pending keys, then N terminates, each through ``aws_ork --once``. The baseline is the same
drain with 10 other keys, measured in the same run, the order alternated per round.

Target (issue 4): the rate with 10,000 keys at least 0.9 of the rate with 10. The S3 mirror
is off here: this measures the per-message key work (the mirror's cost per key change is
test_mirror_one_key_change.py's).
"""

from __future__ import annotations

import os

import pytest

from tests.benchmarks.bench import (
    add_keys,
    instance_ids,
    launch_instances,
    remove_keys,
    report,
    scaled,
)
from tests.benchmarks.test_drain import drain

N = scaled(300, 20)
FEW = 10
MANY = scaled(10_000, 100)
ROUNDS = 2


def others(master, count: int, prefix: str) -> list[str]:
    """``count`` keys of instances we never hear about, half accepted, half pending."""
    ids = instance_ids(count, prefix)
    half = count // 2
    add_keys(master, ids[:half], "minions")
    add_keys(master, ids[half:], "minions_pre")
    return ids


@pytest.mark.timeout(1800)
def test_key_scaling(master, sqs, tmp_path, identity, cert_dir):
    seconds = {FEW: 0.0, MANY: 0.0}
    lines = []
    for r in range(ROUNDS):
        for count in (FEW, MANY) if r % 2 == 0 else (MANY, FEW):  # cancel drift
            bystanders = others(master, count, f"f{r}{int(count == MANY)}")
            ids = launch_instances(N)  # before the clock: moto's run_instances is slow
            os.sync()  # the new key files are written back before the clock starts
            took = sum(drain(master, sqs, tmp_path, ids, identity, cert_dir))
            remove_keys(master, bystanders)
            seconds[count] += took
            lines.append(
                f"round {r + 1}: {count:>6} other keys: {took:5.1f} s ({2 * N / took:5.1f} msg/s)"
            )
    ratio = seconds[FEW] / seconds[MANY]
    report(
        f"key_scaling (shipped trust defaults): drain of {N} launches + {N} terminates, "
        f"{FEW} vs {MANY:,} other keys",
        [
            *lines,
            f"rate with {MANY:,} keys = {ratio:.2f} of the rate with {FEW} (target >= 0.9)",
        ],
    )
