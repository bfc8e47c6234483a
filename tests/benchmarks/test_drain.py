"""drain: N launches (for N pending keys), then N terminates, through ``aws_ork --once``,
with and without the S3 mirror, against a bare boto3 receive/delete loop on the same server.

With the shipped trust defaults: every message an SNS envelope signed by a test CA (its
certificate in CertCacheDir), AllowedTopicArns set, VerifyInstances on (N real moto instances,
running for the launches and terminated before the terminates), replay memories in StateDir.
Targets: with the mirror on, at least 0.8 of the bare loop's rate for both phases.
N = 500 (AWS_ORK_BENCH_SCALE scales it). The queue is preloaded, which is why N stays small:
moto's receive and delete walk the whole queue, so a deeper queue measures moto (the
5,000-launch drain is test_drain_flat.py, fed rather than preloaded).
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.awsenv import start_moto
from tests.benchmarks.bench import (
    add_keys,
    cpu_seconds,
    defaults_config,
    fresh_queue,
    instance_ids,
    launch_instances,
    report,
    scaled,
    send_all,
    sign_body,
    terminate_instances,
    time_aws_ork,
    time_bare_loop,
)
from tests.daemon import bucket_objects
from tests.messages import sns_launch, sns_terminate

N = scaled(500, 20)


PHASES = ("launch", "terminate")


def drain(
    master, sqs, tmp_path, ids, identity, cert_dir, meter=lambda run: run(), *, bucket=None
) -> list[float]:
    """Seconds for aws_ork to work off N launches, then N terminates (two --once runs),
    with the shipped trust defaults: one figure per phase. ``meter`` runs each timed run
    (measure() adds moto's CPU seconds during it)."""
    add_keys(master, ids)
    times = []
    for make in (sns_launch, sns_terminate):
        url = fresh_queue(sqs)
        send_all(sqs, url, [sign_body(identity, make(i)) for i in ids])
        if make is sns_terminate:
            terminate_instances(ids)  # EC2 must say they are gone before a key goes
        conf = defaults_config(
            tmp_path / "c.conf", queue_url=url, master=master, cert_dir=cert_dir, bucket=bucket
        )
        times.append(meter(lambda: time_aws_ork(conf)))
        sqs.delete_queue(QueueUrl=url)
        expected = "minions" if make is sns_launch else None
        listing = master.key_states()
        found = {s for s, names in listing.items() if ids[0] in names}
        assert found == ({expected} if expected else set()), found
    return times


def bare(sqs, ids, identity, meter) -> list[float]:
    """The bare loop over the same two phases: one figure per phase."""
    times = []
    for make in (sns_launch, sns_terminate):
        url = fresh_queue(sqs)
        send_all(sqs, url, [sign_body(identity, make(i)) for i in ids])
        seconds, handled = meter(lambda: time_bare_loop(url))
        assert handled == len(ids)
        times.append(seconds)
        sqs.delete_queue(QueueUrl=url)
    return times


ROUNDS = 2  # interleaved, so load from other work on the machine hits every variant alike


def measure(
    master, sqs, s3, bucket, tmp_path, identity, cert_dir, title: str, servers: list
) -> None:
    """ROUNDS interleaved rounds of the bare loop, aws_ork, aws_ork + mirror; the report,
    with the ratio of each phase (launches, terminates) and of both together, and how busy
    the moto server(s) were: a moto server answers one request at a time (one interpreter
    lock), so where the bare loop alone keeps it busy, every request the defaults add
    (DescribeInstances, PutObject) costs wall time one for one."""
    variants = ("bare", "plain", "mirror")
    totals = {(v, p): 0.0 for v in variants for p in PHASES}
    busy = {v: 0.0 for v in variants}
    lines = []

    def meter(variant: str):
        def run(timed):
            before = sum(cpu_seconds(server.proc.pid) for server in servers)
            result = timed()
            busy[variant] += sum(cpu_seconds(server.proc.pid) for server in servers) - before
            return result

        return run

    for r in range(ROUNDS):
        seconds = {
            "bare": bare(sqs, instance_ids(N, f"b0{r}"), identity, meter("bare")),
            "plain": drain(
                master, sqs, tmp_path, launch_instances(N), identity, cert_dir, meter("plain")
            ),
        }
        mirrored = launch_instances(N)
        seconds["mirror"] = drain(
            master, sqs, tmp_path, mirrored, identity, cert_dir, meter("mirror"), bucket=bucket
        )
        objects = bucket_objects(s3, bucket)
        assert not any(i in key for i in mirrored for key in objects), "mirror deletes"
        for variant in variants:
            for phase, value in zip(PHASES, seconds[variant]):
                totals[variant, phase] += value
        b, p, m = (sum(seconds[v]) for v in variants)
        lines.append(
            f"round {r + 1}: bare {b:5.1f} s, aws_ork {p:5.1f} s ({b / p:.2f}), "
            f"aws_ork + mirror {m:5.1f} s ({b / m:.2f})"
        )
    count = ROUNDS * N
    lines.append(f"{'':16}  {'launches':>20}  {'terminates':>20}  {'both':>8}")
    for variant, name in (
        ("bare", "bare boto3 loop"),
        ("plain", "aws_ork"),
        ("mirror", "aws_ork + mirror"),
    ):
        cells = []
        for phase in PHASES:
            s, base = totals[variant, phase], totals["bare", phase]
            cells.append(f"{s:5.1f} s {count / s:5.1f}/s {base / s:4.2f}")
        both = sum(totals["bare", p] for p in PHASES) / sum(totals[variant, p] for p in PHASES)
        lines.append(f"{name:16}  {cells[0]:>20}  {cells[1]:>20}  {both:8.2f}")
    lines.append(
        "(seconds, messages per second, rate as a fraction of the bare loop's; "
        "target: aws_ork + mirror >= 0.8 in each phase)"
    )
    lines.append(
        "moto CPU while each ran (all servers): "
        + ", ".join(
            f"{name} {busy[v]:.1f} s ({busy[v] / sum(totals[v, p] for p in PHASES):.0%} of its "
            f"wall time)"
            for v, name in (
                ("bare", "bare loop"),
                ("plain", "aws_ork"),
                ("mirror", "aws_ork + mirror"),
            )
        )
    )
    report(
        f"drain (shipped trust defaults{title}): {N} launches + {N} terminates x {ROUNDS} "
        f"rounds, process start included",
        lines,
    )


@pytest.mark.timeout(900)
def test_drain(master, sqs, s3, bucket, tmp_path, identity, cert_dir, moto):
    """Everything on one moto server: SQS, EC2 and S3 share one Python process."""
    measure(master, sqs, s3, bucket, tmp_path, identity, cert_dir, "", [moto])


@pytest.fixture
def services_apart(tmp_path, monkeypatch):
    """EC2 and S3 on a second moto server, SQS alone on the first. In AWS they are separate
    services; one moto process serves every request under one interpreter lock, so there the
    daemon's DescribeInstances and the mirror's PutObjects queue up behind the bare loop's
    own kind of work (receives and deletes) and are charged to the daemon twice."""
    side = start_moto(tmp_path / "moto-side.log")
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", side.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", side.url)
    yield side
    side.stop()


@pytest.mark.timeout(900)
def test_drain_services_apart(master, sqs, tmp_path, identity, cert_dir, services_apart, moto):
    s3 = boto3.client("s3", region_name="us-west-2")  # made after the endpoint moved
    bucket = f"aws-ork-bench-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    measure(
        master,
        sqs,
        s3,
        bucket,
        tmp_path,
        identity,
        cert_dir,
        "; SQS on one moto server, EC2 and S3 on another",
        [moto, services_apart],
    )
