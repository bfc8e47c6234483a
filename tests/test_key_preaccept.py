"""Key binding by key end to end: the instance publishes its whole public key on its key tags
(salt:minion-key-N); aws_ork stores exactly that key as accepted before the minion's first
contact, so Salt accepts the genuine minion at once and denies every impostor itself.

Moto server (EC2 tags are real there), a real salt-master shared by the module, two real
salt-minions under one instance id, both with Salt's default acceptance_wait_time (10 s),
and the real daemon with the shipped trust defaults plus KeyBinding = tag.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import salt.utils.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aws_ork.base import pubkey
from tests.bindingenv import AS_THE_SCRIPT_SETS, accepted_pub, answers_from
from tests.daemon import queue_counts, run_aws_ork, send, start_aws_ork, stop_aws_ork, wait_for
from tests.metricsenv import scrape, value
from tests.saltenv import (
    SaltMinion,
    make_minion_keys,
    start_minion,
)
from tests.trustenv import LAUNCH, decision_line, group_instance, signed, trust_config

#: Salt's default: a minion whose key is not accepted at its first try waits this long
SALT_ACCEPTANCE_WAIT = 10


def publish_key(fleet: dict[str, Any], instance: str, pem: str) -> None:
    """What the instance-side script does: its key tags, in one CreateTags call."""
    tags = [{"Key": key, "Value": value} for key, value in pubkey.to_tags(pem).items()]
    fleet["ec2"].create_tags(Resources=[instance], Tags=tags)


def minion_pub(root: Path) -> str:
    """A key pair made before the minion starts (as the script makes it): its public key."""
    make_minion_keys(root / "pki")
    return (root / "pki" / "minion.pub").read_text()


def finger(pem: str) -> str:
    return str(salt.utils.crypt.pem_finger(key=pem.strip().encode()))


def test_the_published_key_is_accepted_before_the_minion_knocks_and_the_impostor_is_denied(
    master, tmp_path, sqs, queue_url, identity, fleet, bound_daemon, minions, metrics_port
):
    log, proc = bound_daemon
    instance = group_instance(fleet)
    # an impostor connects first, under the new instance's id
    impostor = start_minion(
        master, tmp_path / "impostor", instance, acceptance_wait_time=SALT_ACCEPTANCE_WAIT
    )
    minions.append(impostor)
    wait_for(lambda: master.key_state_of(instance) == "minions_pre", 60, "the impostor's key")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    wait_for(
        lambda: "has not published its key" in log.read_text(), 60, "the launch to wait for tags"
    )
    assert accepted_pub(master, instance) is None  # the impostor's pending key: never accepted

    # the instance publishes its key after the launch message, then starts its minion
    genuine_root = tmp_path / "genuine"
    pem = minion_pub(genuine_root)
    publish_key(fleet, instance, pem)
    wait_for(
        lambda: accepted_pub(master, instance) == pem.strip(), 30, "the published key accepted"
    )
    genuine = start_minion(
        master,
        genuine_root,
        instance,
        acceptance_wait_time=SALT_ACCEPTANCE_WAIT,
        extra_opts=AS_THE_SCRIPT_SETS,
    )
    minions.append(genuine)
    wait_for(
        lambda: answers_from(master, instance) == str(genuine.pki_dir),
        120,
        "the genuine minion to answer",
    )

    # accepted at its first authentication: it never waited for an acceptance retry
    def waited(minion: SaltMinion) -> bool:
        text = minion.log_file.read_text() if minion.log_file.is_file() else ""
        return "seconds before retry" in text or "has cached the public key" in text

    assert not waited(genuine), genuine.log_file.read_text()
    assert waited(impostor)  # the impostor's key was pending: it had to wait

    # its next attempt (10 s on) is denied by Salt: removed from the denied keys; it was
    # named once already (its pending key, cleared by the accept)
    wait_for(
        lambda: "has rejected this minion's public key" in impostor.log_file.read_text(),
        60,
        "the impostor's next attempt to be denied",
    )
    wait_for(
        lambda: not master.key_path(instance, "minions_denied").exists(),
        30,
        "the impostor's denied key to be removed",
    )
    # a second impostor, only once the key is accepted: Salt denies it; aws_ork names it once
    late = start_minion(
        master, tmp_path / "late", instance, acceptance_wait_time=SALT_ACCEPTANCE_WAIT
    )
    minions.append(late)
    wait_for(
        lambda: "SECURITY: " + instance + ": Salt denied a key" in log.read_text(),
        60,
        "the late impostor's denied attempt to be reported",
    )
    text = log.read_text()
    denied = [line for line in text.splitlines() if "Salt denied a key" in line]
    assert len(denied) == 1, denied
    assert finger(late.public_key()) in denied[0] and finger(pem) in denied[0], denied
    assert text.count(f"fingerprint {finger(impostor.public_key())}") == 1, text
    assert f"key tags published by {instance}: accepted" in text, text
    wait_for(
        lambda: not master.key_path(instance, "minions_denied").exists(),
        30,
        "the late impostor's denied key to be removed",
    )
    assert accepted_pub(master, instance) == pem.strip()  # never an impostor's
    # two impostor keys, whatever the number of their attempts
    assert value(scrape(metrics_port), "aws_ork_keys_impostors_deleted_total") == 2
    assert answers_from(master, instance) == str(genuine.pki_dir)
    wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 120, "the launch to finish")
    assert proc.poll() is None


def test_key_tags_published_before_the_launch_are_accepted_at_its_first_receive(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert len(pubkey.to_tags(pem)) == 3
    publish_key(fleet, instance, pem)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert accepted_pub(master, instance) == pem.strip()
    assert not (master.pki_dir / "minions_autosign" / instance).exists()
    line = decision_line(result.stderr, instance)
    assert "accepted" in line and f"the key the instance published, {finger(pem)}" in line, line
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_without_key_tags_nothing_is_accepted(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    master.add_pending_key(instance)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions_pre"
    assert not (master.pki_dir / "minions_autosign" / instance).exists()
    line = decision_line(result.stderr, instance)
    assert "check deferred" in line and "has not published its key" in line, line
    assert sum(queue_counts(sqs, queue_url)) == 1  # asked again later


def _small_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    "make_tags, why",
    [
        (lambda pem: {"salt:minion-key-0": "not base64!", "salt:minion-key-1": "x"}, "base64"),
        (lambda pem: pubkey.to_tags(_small_key()), "RSA-1024"),
        (
            lambda pem: {
                "salt:minion-key-0": pubkey.to_tags(pem)["salt:minion-key-0"],
                "salt:minion-key-2": pubkey.to_tags(pem)["salt:minion-key-1"],
            },
            "without a gap",
        ),
    ],
    ids=["not-base64", "rsa-1024", "gap"],
)
def test_malformed_key_tags_are_refused_and_nothing_is_accepted(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet, make_tags, why
):
    instance = group_instance(fleet)
    pem = minion_pub(tmp_path / "m")
    master.add_pending_key(instance, pem)  # even the key itself, pending: not accepted
    tags = make_tags(pem)
    fleet["ec2"].create_tags(
        Resources=[instance], Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
    )
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions_pre"
    line = decision_line(result.stderr, instance)
    assert "REJECTED" in line and "hold no minion key" in line and why in line, line
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_one_key_published_by_two_instances_is_accepted_for_the_first_only(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    first, second = group_instance(fleet), group_instance(fleet)
    pem = minion_pub(tmp_path / "shared")
    for instance in (first, second):
        publish_key(fleet, instance, pem)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, first, fleet["group"]))
    assert run_aws_ork(conf, "--once").returncode == 0
    assert accepted_pub(master, first) == pem.strip()
    send(sqs, queue_url, signed(identity, LAUNCH, second, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(second) is None  # nothing stored under the second id
    assert accepted_pub(master, first) == pem.strip()
    line = decision_line(result.stderr, second)
    assert "REJECTED" in line and "already accepted under another minion id" in line, line
    assert f"SECURITY: {second}: the key it published ({finger(pem)}) is already accepted " in (
        result.stderr
    ), result.stderr
    assert first in result.stderr


def test_another_key_accepted_under_the_id_is_left_alone(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    master.add_accepted_key(instance)  # accepted by hand, before the launch
    other = accepted_pub(master, instance)
    publish_key(fleet, instance, minion_pub(tmp_path / "m"))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert accepted_pub(master, instance) == other
    assert f"SECURITY: {instance}: the key accepted under this id has fingerprint" in (
        result.stderr
    ), result.stderr


def test_dry_run_says_what_it_would_store_and_stores_nothing(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    pem = minion_pub(tmp_path / "m")
    publish_key(fleet, instance, pem)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) is None
    line = decision_line(result.stderr, instance)
    assert "would be accepted" in line and finger(pem) in line, line


def test_a_key_the_watcher_stores_is_mirrored_to_s3(
    master, tmp_path, sqs, s3, bucket, queue_url, cert_dir, identity, fleet
):
    """The key tag watcher stores the key outside any message's key change: it still goes to
    the S3 mirror, like any accepted key."""
    instance = group_instance(fleet)
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag", bucket=bucket
    )
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log)
    try:
        send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
        wait_for(lambda: "has not published its key" in log.read_text(), 60, "the launch")
        pem = minion_pub(tmp_path / "m")
        publish_key(fleet, instance, pem)

        def mirrored() -> str | None:
            objects = s3.list_objects_v2(Bucket=bucket, Prefix="pki/").get("Contents", [])
            names = [o["Key"] for o in objects if o["Key"].endswith(f"/minions/{instance}")]
            if not names:
                return None
            return s3.get_object(Bucket=bucket, Key=names[0])["Body"].read().decode()

        body = wait_for(mirrored, 60, "the accepted key in the mirror")
        assert body.strip() == pem.strip()
        assert f"key tags published by {instance}: accepted" in log.read_text()
    finally:
        assert stop_aws_ork(proc) == 0, log.read_text()[-3000:]


def test_a_templated_minion_id_gets_the_published_key_by_the_watcher(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    """MinionIdTemplate: the key tag watcher stores the key under the id the template gives
    (claimed for the instance first), not under the instance id."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    instance = group_instance(fleet)
    fleet["ec2"].create_tags(Resources=[instance], Tags=[{"Key": "Name", "Value": name}])
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        KeyBinding="tag",
        MinionIdTemplate="{tag:Name}",
    )
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log)
    try:
        send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
        wait_for(lambda: "has not published its key" in log.read_text(), 60, "the launch")
        pem = minion_pub(tmp_path / "m")
        publish_key(fleet, instance, pem)
        wait_for(lambda: accepted_pub(master, name) == pem.strip(), 30, "the key under its name")
        assert master.key_state_of(instance) is None
        assert f"key tags published by {instance} (minion {name}): accepted" in log.read_text()
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 120, "the launch to finish")
    finally:
        assert stop_aws_ork(proc) == 0, log.read_text()[-3000:]


def test_the_published_key_rejected_by_an_operator_stays_rejected_and_anothers_is_replaced(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    kept, replaced = group_instance(fleet), group_instance(fleet)
    pems = {instance: minion_pub(tmp_path / instance) for instance in (kept, replaced)}
    master.add_rejected_key(kept, pems[kept])  # salt-key -r of this very key
    master.add_rejected_key(replaced)  # someone else's key, rejected
    for instance in (kept, replaced):
        publish_key(fleet, instance, pems[instance])
        send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(kept) == "minions_rejected"
    assert "rejected by an operator" in decision_line(result.stderr, kept)
    assert accepted_pub(master, replaced) == pems[replaced].strip()
    assert not master.key_path(replaced, "minions_rejected").exists()
