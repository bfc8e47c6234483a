"""boot_latency: from minion start to accepted key and to the first answered test.ping.

aws_ork with the shipped trust defaults (the launch an SNS envelope signed by a test CA, from
a topic in AllowedTopicArns, for a real moto instance that VerifyInstances looks up; replay
memories in StateDir; KeyBinding = off, tests.daemon.write_config's: the launch writes an
autosign stub) against the limit, measured in the same run: a master with
``auto_accept: True``. The launch message
is sent first and handled; the minion starts a few seconds later, as an instance boots after
its launch event. Both minions use Salt's default ``acceptance_wait_time`` (10 s).
Target (issue 4): within 1.25x of the limit.
"""

from __future__ import annotations

import statistics
import time

from tests.benchmarks.bench import defaults_config, launch_instances, report, scaled, sign_body
from tests.daemon import send, start_aws_ork, stop_aws_ork, wait_for
from tests.messages import new_id, sns_launch
from tests.saltenv import start_minion

ROUNDS = scaled(3)
BOOT_DELAY = 3  # seconds between the launch event and the minion's start


def time_boot(master, root, minion_id) -> tuple[float, float]:
    """(seconds to accepted key, seconds to first answered ping) from minion start."""
    accepted_file = master.pki_dir / "minions" / minion_id
    started = time.monotonic()
    minion = start_minion(master, root, minion_id, acceptance_wait_time=10)
    try:
        while not accepted_file.exists():
            if time.monotonic() - started > 120:
                raise AssertionError(f"{minion_id} not accepted in 120 s")
            time.sleep(0.02)
        accepted = time.monotonic() - started
        while (
            master.salt_cmd(minion_id, "test.ping", timeout=15, salt_timeout=2).get(minion_id)
            is not True
        ):
            if time.monotonic() - started > 120:
                raise AssertionError(f"{minion_id} did not answer in 120 s")
        return accepted, time.monotonic() - started
    finally:
        minion.stop()


def test_boot_latency(masters, sqs, queue_url, tmp_path, identity, cert_dir):
    ours, limit = masters
    conf = defaults_config(tmp_path / "c.conf", queue_url=queue_url, master=ours, cert_dir=cert_dir)
    daemon = start_aws_ork(conf, tmp_path / "daemon.log")
    results: dict[str, list[tuple[float, float]]] = {"aws_ork": [], "auto_accept": []}
    try:
        for r in range(ROUNDS):
            minion_id = launch_instances(1)[0]  # the instance EC2 knows; its id the minion's
            send(sqs, queue_url, sign_body(identity, sns_launch(minion_id)))
            wait_for(
                lambda: (ours.pki_dir / "minions_autosign" / minion_id).exists(),
                60,
                "the launch to be handled",
            )
            time.sleep(BOOT_DELAY)  # the instance boots; the minion starts later
            results["aws_ork"].append(time_boot(ours, tmp_path / f"o{r}", minion_id))
            results["auto_accept"].append(time_boot(limit, tmp_path / f"l{r}", new_id()))
    finally:
        status = stop_aws_ork(daemon)
    assert status == 0, f"aws_ork exited {status}: {(tmp_path / 'daemon.log').read_text()[-3000:]}"

    def median(name: str, index: int) -> float:
        return statistics.median(sample[index] for sample in results[name])

    lines = [
        f"{name:11}: " + ", ".join(f"key {a:4.1f} s / ping {p:4.1f} s" for a, p in runs)
        for name, runs in results.items()
    ]
    for label, index in (("accepted key", 0), ("first ping  ", 1)):
        ours_s, limit_s = median("aws_ork", index), median("auto_accept", index)
        lines.append(
            f"median to {label}: aws_ork {ours_s:.2f} s, auto_accept {limit_s:.2f} s"
            f" -> {ours_s / limit_s:.2f}x (target <= 1.25x)"
        )
    report(
        f"boot_latency (shipped trust defaults): signed launch first, minion {BOOT_DELAY} s "
        f"later; {ROUNDS} rounds",
        lines,
    )
