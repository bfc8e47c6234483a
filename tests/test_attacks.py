"""Fail closed: each attack of the fail-closed issue, tried against the daemon as shipped.

Real CLI subprocess, moto server (SQS, EC2, Auto Scaling) and a real salt-master shared by the
module; envelopes signed at test time by a test CA whose certificate sits in CertCacheDir.
Each test is an attack that worked against aws_ork before these changes.
"""

from __future__ import annotations

import json
import os
import signal
import time

import yaml

from tests.daemon import (
    queue_counts,
    run_aws_ork,
    send,
    start_aws_ork,
    wait_for,
    write_config,
)
from tests.messages import envelope, new_id, notification, sns_launch
from tests.saltenv import generate_public_key_pem
from tests.snssign import sign_envelope
from tests.trustenv import (
    LAUNCH,
    OTHER_TOPIC,
    TOPIC,
    decision_line,
    group_instance,
    signed,
    trust_config,
)


def test_a_launch_signed_for_the_attackers_own_topic(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    """Any account can publish to a topic of its own and capture what AWS signed."""
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"], topic=OTHER_TOPIC))

    unset = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], AllowedTopicArns="")
    refused = run_aws_ork(unset, "--once")
    assert refused.returncode == 2
    assert "AllowedTopicArns: not set while VerifySignatures is on" in refused.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert sum(queue_counts(sqs, queue_url)) == 1  # nothing was read

    allowed = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    result = run_aws_ork(allowed, "--once")
    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert "is not in AllowedTopicArns" in decision_line(result.stderr, instance)


def test_a_replay_after_the_operator_removed_the_key(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    captured = signed(identity, LAUNCH, instance, fleet["group"])
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(sqs, queue_url, captured)
    assert run_aws_ork(conf, "--once").returncode == 0
    assert master.key_state_of(instance) == "minions"

    master.salt_key("-y", "-d", instance)  # the operator removes it
    master.add_pending_key(instance)  # someone presents a key under that id again
    send(sqs, queue_url, captured)  # the same envelope, sent again
    again = run_aws_ork(conf, "--once")
    assert again.returncode == 0, again.stderr
    assert "a replay" in decision_line(again.stderr, instance)

    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))  # another, genuine
    late = run_aws_ork(conf, "--once")
    assert late.returncode == 0, late.stderr
    assert "removed by someone else" in decision_line(late.stderr, instance)
    assert f"SECURITY: {instance}" in late.stderr and f"salt-key -a {instance}" in late.stderr
    assert master.key_state_of(instance) == "minions_pre"  # never accepted again
    assert not (master.pki_dir / "minions_autosign" / instance).exists()
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_an_envelope_older_than_the_queue_could_keep_it(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    old = envelope(notification(LAUNCH, instance, fleet["group"]), TOPIC)
    old["Timestamp"] = "2015-06-01T12:00:00.000Z"  # it still verifies: signatures never expire
    send(sqs, queue_url, json.dumps(sign_envelope(old, identity)))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions_pre"
    line = decision_line(result.stderr, instance)
    assert "REJECTED" in line and "Timestamp '2015-06-01T12:00:00.000Z'" in line, line


def test_a_flood_of_unfetchable_certificates_does_not_delay_a_genuine_launch(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    genuine = group_instance(fleet)
    master.add_pending_key(genuine)
    flood = []
    for n in range(30):  # invented regions: NXDOMAIN in real life; never fetched at all
        body = sign_envelope(
            envelope(notification(LAUNCH, new_id(), fleet["group"]), TOPIC), identity
        )
        body["SigningCertURL"] = (
            f"https://sns.zz-nowhere-{n}.amazonaws.com/SimpleNotificationService-{n:032x}.pem"
        )
        flood.append(json.dumps(body))
    send(
        sqs, queue_url, *flood[:15], signed(identity, LAUNCH, genuine, fleet["group"]), *flood[15:]
    )
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(genuine) == "minions"
    refusals = [
        line
        for line in result.stderr.splitlines()
        if "REJECTED: SNS signature invalid: SigningCertURL region" in line
    ]
    assert len(refusals) == 30
    assert "fetched SNS signing certificate" not in result.stderr
    assert queue_counts(sqs, queue_url) == (0, 0)  # refused for good, not retried for ever


def test_an_unreadable_pending_key_does_not_stop_the_daemon(master, tmp_path, queue_url, sqs):
    poison, good = new_id(), new_id()
    master.add_pending_key(poison)
    master.key_path(poison, "minions_pre").write_bytes(b"\xff\xfe not UTF-8 \x80\x81")
    master.add_pending_key(good)
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master)
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        send(sqs, queue_url, sns_launch(poison))
        send(sqs, queue_url, sns_launch(good))
        wait_for(lambda: master.key_state_of(good) == "minions", 60, "the good launch")
        wait_for(
            lambda: "unexpected UnicodeDecodeError while handling it; retrying" in log.read_text(),
            30,
            "the poison message to be retried",
        )
        assert daemon.poll() is None, log.read_text()  # still running
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    text = log.read_text()
    assert daemon.returncode == 0, text
    assert "Traceback" in text and "retrying" in text
    assert master.key_state_of(poison) == "minions_pre"


def test_freshness_on_a_clustered_master(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    """Keys live in cluster_pki_dir; a key written there before the instance existed is
    someone else's, and must not be accepted because the check looked in pki_dir."""
    cluster = tmp_path / "cluster"
    for state in (
        "minions",
        "minions_pre",
        "minions_rejected",
        "minions_denied",
        "minions_autosign",
    ):
        (cluster / state).mkdir(parents=True)
    opts = yaml.safe_load(master.config_file.read_text())
    opts.update({"cluster_id": "aws-ork-test", "cluster_pki_dir": str(cluster)})
    clustered = tmp_path / "master-clustered"
    clustered.write_text(yaml.safe_dump(opts))
    instance = group_instance(fleet)
    stale = cluster / "minions_pre" / instance
    stale.write_text(generate_public_key_pem())
    old = time.time() - 3600
    os.utime(stale, (old, old))
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], SaltMasterConfig=clustered
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert "is older than the instance" in decision_line(result.stderr, instance)
    assert (cluster / "minions_rejected" / instance).is_file()
    assert not (cluster / "minions" / instance).exists()


def test_a_body_cannot_forge_or_flood_the_log(master, tmp_path, queue_url, sqs):
    instance = new_id()
    forged = (
        f"web\n2026-11-23 10:00:00,000 INFO aws_ork.decide: message x: launch "
        f"{instance} via=sns: accepted\x1b[2K"
    )
    send(sqs, queue_url, sns_launch(instance, forged), sns_launch(new_id(), "x" * 200_000))
    conf = write_config(tmp_path / "aws_ork.conf", queue_url=queue_url, master=master)

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not [line for line in lines if line.startswith("2026-11-23 10:00:00,000")]
    assert "\x1b" not in result.stderr
    assert max(len(line) for line in lines) < 1000
    assert sum(f"{instance}" in line for line in lines) == 1
