"""key_scaling: the drain with 10 and with 10,000 other keys on the master.

Target (issue 4): the rate with 10,000 keys at least 0.9 of the rate with 10. The S3 mirror
is off here: the full-tree mirror is O(keys) per run by design of syncer.py (issue 5 makes
it incremental); this measures the per-message key work.
"""

from __future__ import annotations

import os

import pytest

from tests.benchmarks.bench import add_keys, instance_ids, report
from tests.benchmarks.test_drain import drain

N = 300
ROUNDS = 2



def others(master, count: int, prefix: str) -> list[str]:
    ids = instance_ids(count, prefix)
    half = count // 2
    add_keys(master, ids[:half], "minions")
    add_keys(master, ids[half:], "minions_pre")
    return ids


def remove(master, ids: list[str]) -> None:
    for minion_id in ids:
        for state in ("minions", "minions_pre"):
            (master.pki_dir / state / minion_id).unlink(missing_ok=True)


@pytest.mark.timeout(900)
def test_key_scaling(master, sqs, tmp_path):
    seconds = {10: 0.0, 10_000: 0.0}
    lines = []
    for r in range(ROUNDS):
        for count in (10, 10_000) if r % 2 == 0 else (10_000, 10):  # cancel drift
            bystanders = others(master, count, f"f{r}{count % 7}")
            os.sync()  # the 10,000 new files are written back before the clock starts
            took = drain(master, sqs, tmp_path, instance_ids(N, f"e{r}{count % 7}"))
            remove(master, bystanders)
            seconds[count] += took
            lines.append(f"round {r + 1}: {count:>6} other keys: {took:5.1f} s "
                         f"({2 * N / took:5.1f} msg/s)")
    ratio = seconds[10] / seconds[10_000]
    report(f"key_scaling: drain of {N} launches + {N} terminates, 10 vs 10,000 other keys", [
        *lines,
        f"rate with 10,000 keys = {ratio:.2f} of the rate with 10 (target >= 0.9)",
    ])
