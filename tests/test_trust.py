"""Trust end to end: only a launch AWS really announced, of an instance we manage, gets a key.

Real CLI subprocess, moto server (SQS, EC2, Auto Scaling) and a real salt-master shared by the
module. Envelopes are signed at test time (tests/snssign.py) with a certificate placed in
CertCacheDir, so nothing is fetched.
"""

from __future__ import annotations

import json
import os
import time

from tests.awsenv import free_port
from tests.daemon import queue_counts, run_aws_ork, send, wait_for, write_config
from tests.messages import envelope, fixture, new_id, notification
from tests.trustenv import (
    LAUNCH,
    OTHER_TOPIC,
    TERMINATE,
    TOPIC,
    decision_line,
    group_instance,
    plain_instance,
    signed,
    trust_config,
)


def test_signed_launch_of_a_managed_running_instance_is_accepted(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    v2, v1 = group_instance(fleet), group_instance(fleet)
    for instance in (v2, v1):
        master.add_pending_key(instance)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(
        sqs,
        queue_url,
        signed(identity, LAUNCH, v2, fleet["group"]),
        signed(identity, LAUNCH, v1, fleet["group"], version="1"),
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert (master.key_state_of(v2), master.key_state_of(v1)) == ("minions", "minions")
    assert queue_counts(sqs, queue_url) == (0, 0)
    assert "accepted" in decision_line(result.stderr, v2)


def test_launches_that_fail_a_check_accept_nothing_and_say_why(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    group, ec2 = fleet["group"], fleet["ec2"]
    cases: dict[str, tuple[str, str]] = {}  # name -> (instance id, expected reason)

    unsigned = group_instance(fleet)
    body = envelope(notification(LAUNCH, unsigned, group), TOPIC)  # placeholder signature
    send(sqs, queue_url, json.dumps(body))
    cases["unsigned"] = (unsigned, "SNS signature invalid")

    tampered = group_instance(fleet)
    forged = json.loads(signed(identity, LAUNCH, new_id(), group))
    forged["Message"] = json.dumps(notification(LAUNCH, tampered, group))
    send(sqs, queue_url, json.dumps(forged))
    cases["tampered"] = (tampered, "SNS signature invalid: bad signature")

    foreign = group_instance(fleet)
    send(sqs, queue_url, signed(identity, LAUNCH, foreign, group, topic=OTHER_TOPIC))
    cases["other topic"] = (foreign, "is not in AllowedTopicArns")

    unknown = new_id()
    send(sqs, queue_url, signed(identity, LAUNCH, unknown, group))
    cases["unknown"] = (unknown, "instance not found in EC2")

    gone = plain_instance(fleet, {"aws:autoscaling:groupName": group, "role": "salt-minion"})
    ec2.terminate_instances(InstanceIds=[gone])
    send(sqs, queue_url, signed(identity, LAUNCH, gone, group))
    cases["terminated"] = (gone, "instance is terminated in EC2")

    stranger = plain_instance(
        fleet, {"aws:autoscaling:groupName": "db-prod", "role": "salt-minion"}
    )
    send(sqs, queue_url, signed(identity, LAUNCH, stranger, group))  # the message lies
    cases["unmanaged group"] = (stranger, "group 'db-prod' is not in AutoScalingGroups")

    loner = plain_instance(fleet, {"role": "salt-minion"})
    send(sqs, queue_url, signed(identity, LAUNCH, loner, group))
    cases["no group"] = (loner, "instance is in no Auto Scaling group")

    untagged = plain_instance(fleet, {"aws:autoscaling:groupName": group})
    send(sqs, queue_url, signed(identity, LAUNCH, untagged, group))
    cases["missing tag"] = (untagged, "lacks required tag role=salt-minion")

    stale = group_instance(fleet)
    cases["stale key"] = (stale, "is older than the instance")

    for instance, _ in cases.values():
        master.add_pending_key(instance)
    old = time.time() - 3600
    os.utime(master.key_path(stale, "minions_pre"), (old, old))
    send(sqs, queue_url, signed(identity, LAUNCH, stale, group))

    conf = trust_config(tmp_path, queue_url, master, cert_dir, group)
    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    outcome = {name: master.key_state_of(instance) for name, (instance, _) in cases.items()}
    assert outcome == {**{name: "minions_pre" for name in cases}, "stale key": "minions_rejected"}
    for name, (instance, reason) in cases.items():
        line = decision_line(result.stderr, instance)
        if name == "unknown":  # EC2 is eventually consistent: asked again a few times first
            assert "check deferred" in line and reason in line, (name, line)
            continue
        assert "REJECTED" in line and reason in line, (name, line)
    assert "SECURITY" in result.stderr and f"salt-key -f {stale}" in result.stderr
    assert f"{len(cases) - 1} rejected" in result.stderr
    # all but the unknown instance's launch can never become valid: deleted
    assert sum(queue_counts(sqs, queue_url)) == 1


def _unsigned_bodies(raw: str, hook: str, bridge: str) -> list[str]:
    hook_body = fixture("hook-launching")
    hook_body["EC2InstanceId"] = hook
    bridge_body = fixture("eventbridge-ec2-running")
    bridge_body["detail"]["instance-id"] = bridge
    return [json.dumps(notification(LAUNCH, raw)), json.dumps(hook_body), json.dumps(bridge_body)]


def test_unsigned_sources_are_refused_unless_enabled(
    master, tmp_path, queue_url, sqs, cert_dir, fleet
):
    ids = [group_instance(fleet) for _ in range(3)]
    for instance in ids:
        master.add_pending_key(instance)
    send(sqs, queue_url, *_unsigned_bodies(*ids))
    strict = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])

    refused = run_aws_ork(strict, "--once")

    assert refused.returncode == 0, refused.stderr
    assert [master.key_state_of(i) for i in ids] == ["minions_pre"] * 3
    for instance, source in zip(ids, ("raw", "hook", "eventbridge"), strict=True):
        line = decision_line(refused.stderr, instance)
        assert f"unsigned {source} message" in line and "UnsignedSources" in line, line
    assert queue_counts(sqs, queue_url) == (0, 0)

    send(sqs, queue_url, *_unsigned_bodies(*ids))
    enabled = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        UnsignedSources="raw, hook eventbridge",
    )
    accepted = run_aws_ork(enabled, "--once")

    assert accepted.returncode == 0, accepted.stderr
    assert [master.key_state_of(i) for i in ids] == ["minions"] * 3  # EC2 checks still passed
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_terminate_before_launch_without_verify_instances(
    master, tmp_path, queue_url, sqs, cert_dir, identity
):
    instance = new_id()  # EC2 is not asked: no instance needed
    conf = write_config(
        tmp_path / "c.conf",
        queue_url=queue_url,
        master=master,
        VerifySignatures="true",
        CertCacheDir=cert_dir,
        AllowedTopicArns=TOPIC,
    )
    send(sqs, queue_url, signed(identity, TERMINATE, instance, "web-asg"))
    first = run_aws_ork(conf, "--once")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "state" / "terminated" / instance).is_file()

    master.add_pending_key(instance)  # the late launch: its minion's key shows up
    send(sqs, queue_url, signed(identity, LAUNCH, instance, "web-asg"))
    second = run_aws_ork(conf, "--once")

    assert second.returncode == 0, second.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert "instance was terminated" in decision_line(second.stderr, instance)
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_terminate_before_launch_with_verify_instances(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    fleet["ec2"].terminate_instances(InstanceIds=[instance])
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(sqs, queue_url, signed(identity, TERMINATE, instance, fleet["group"]))
    first = run_aws_ork(conf, "--once")
    assert first.returncode == 0, first.stderr
    assert "no key to delete" in decision_line(first.stderr, instance)

    master.add_pending_key(instance)
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    second = run_aws_ork(conf, "--once")

    assert second.returncode == 0, second.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert "instance is terminated in EC2" in decision_line(second.stderr, instance)
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_a_signed_terminate_of_a_running_instance_keeps_its_key(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    alive = group_instance(fleet)
    master.add_accepted_key(alive)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(sqs, queue_url, signed(identity, TERMINATE, alive, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(alive) == "minions"
    assert "still running in EC2" in decision_line(result.stderr, alive)
    assert sum(queue_counts(sqs, queue_url)) == 1  # retried until EC2 says it is gone

    fleet["ec2"].terminate_instances(InstanceIds=[alive])
    wait_for(lambda: queue_counts(sqs, queue_url)[0] == 1, 30, "the retried terminate")
    done = run_aws_ork(conf, "--once")
    assert done.returncode == 0, done.stderr
    assert master.key_state_of(alive) is None
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_ec2_unreachable_means_retry_never_accept(
    master, tmp_path, queue_url, sqs, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_aws_ork(conf, "--once", env={"AWS_ENDPOINT_URL_EC2": closed})

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions_pre"
    line = decision_line(result.stderr, instance)
    assert "check deferred" in line and "EC2 DescribeInstances failed" in line, line
    assert sum(queue_counts(sqs, queue_url)) == 1  # kept for a retry
