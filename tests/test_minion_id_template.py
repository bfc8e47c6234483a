"""MinionIdTemplate through the moto server and a real salt-master (and a real salt-minion
whose id is the instance's Name tag): the key is accepted under the templated id, the
terminate deletes that key after a restart and after the tag is gone, and an id that is
unsafe or that another instance or key holds is refused."""

from __future__ import annotations

import os
import time
import uuid

from tests.daemon import queue_counts, run_aws_ork, send, start_aws_ork, stop_aws_ork, wait_for
from tests.saltenv import make_minion_keys, start_minion
from tests.trustenv import LAUNCH, TERMINATE, decision_line, group_instance, signed, trust_config


def named_instance(fleet, name: str) -> str:
    """An instance of the managed group that its launch template named ``name``."""
    instance = group_instance(fleet)
    fleet["ec2"].create_tags(Resources=[instance], Tags=[{"Key": "Name", "Value": name}])
    return instance


def about(stderr: str, instance: str) -> str:
    """The decision line whose event is this instance's launch (other lines may name it)."""
    lines = [line for line in stderr.splitlines() if f": launch {instance} " in line]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_tag_named_minion_is_accepted_and_its_key_deleted_after_a_restart_without_the_tag(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    name = f"web-{uuid.uuid4().hex[:6]}"
    instance = named_instance(fleet, name)
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], MinionIdTemplate="{tag:Name}"
    )
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    launched = run_aws_ork(conf, "--once")
    assert launched.returncode == 0, launched.stderr
    assert f"minion {name}: pre-authorised" in decision_line(launched.stderr, instance)
    minion = start_minion(master, tmp_path / "minion", name)
    try:
        master.wait_for_ping(name, timeout=60)  # the minion named by the tag answers
    finally:
        minion.stop()
    assert master.key_state_of(name) == "minions"
    assert master.key_state_of(instance) is None  # nothing under the instance id

    # the tags go with the instance; another run of the daemon still finds the key
    fleet["ec2"].delete_tags(Resources=[instance], Tags=[{"Key": "Name"}])
    fleet["ec2"].terminate_instances(InstanceIds=[instance])
    send(sqs, queue_url, signed(identity, TERMINATE, instance, fleet["group"]))
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr
    assert f"minion {name}: deleted" in decision_line(result.stderr, instance)
    assert master.key_state_of(name) is None


def test_an_id_held_by_another_instance_or_key_or_unsafe_is_refused(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    shared = f"web-{uuid.uuid4().hex[:6]}"
    first, second = named_instance(fleet, shared), named_instance(fleet, shared)
    hand_made = f"db-{uuid.uuid4().hex[:6]}"
    master.add_accepted_key(hand_made)  # accepted by an operator, not enrolled by aws_ork
    squatter = named_instance(fleet, hand_made)
    escaper = named_instance(fleet, "../minions/evil")
    impersonator = named_instance(fleet, first)  # another instance's id as its Name
    master.add_pending_key(shared)
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], MinionIdTemplate="{tag:Name}"
    )
    send(
        sqs,
        queue_url,
        *(
            signed(identity, LAUNCH, i, fleet["group"])
            for i in (first, second, squatter, escaper, impersonator)
        ),
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert f"minion {shared}: accepted" in about(result.stderr, first)
    assert f"minion id {shared} is held by instance {first}" in about(result.stderr, second)
    assert f"minion id {hand_made} belongs to an accepted key that aws_ork did not enrol" in about(
        result.stderr, squatter
    )
    assert (
        "REJECTED: MinionIdTemplate gives '../minions/evil', which is not a safe minion id"
        in about(result.stderr, escaper)
    )
    assert f"minion id {first} is the id of another instance" in about(result.stderr, impersonator)
    assert (
        master.key_state_of(shared),
        master.key_state_of(hand_made),
        master.key_state_of(first),
    ) == ("minions", "minions", None)
    assert not (master.pki_dir / "minions").joinpath("..", "minions", "evil").exists()
    assert not list((master.pki_dir / "minions_autosign").glob("*evil*"))


def test_the_sweep_deletes_a_templated_key_whose_instance_went_while_the_daemon_was_stopped(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    name = f"web-{uuid.uuid4().hex[:6]}"
    instance = named_instance(fleet, name)
    master.add_pending_key(name)
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        MinionIdTemplate="{tag:Name}",
        SweepMinutes="0.05",
    )
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr
    assert master.key_state_of(name) == "minions"

    fleet["ec2"].terminate_instances(InstanceIds=[instance])  # its terminate was lost
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        wait_for(lambda: master.key_state_of(name) is None, 60, "the sweep to delete the key")
    finally:
        stop_aws_ork(daemon)
    assert (
        f"sweep: terminate {instance} (minion {name}) (EC2: terminated on two sweeps in "
        f"a row): deleted" in log.read_text()
    )


def test_a_template_other_than_the_instance_id_needs_verify_instances(
    master, tmp_path, queue_url, cert_dir, fleet
):
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        MinionIdTemplate="{tag:Name}",
        VerifyInstances="false",
        AutoScalingGroups="",
        InstanceTags="",
    )
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 2
    assert "MinionIdTemplate: is not {instance_id} but VerifyInstances is off" in result.stderr


def test_with_key_binding_only_the_published_key_is_accepted_under_the_templated_id(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    """A templated id is easy to guess: with KeyBinding = tag an impostor's key pending under
    it is never accepted, and the key the instance published is accepted there when its
    minion presents it (Salt puts it in the denied keys, the impostor's being pending)."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    instance = named_instance(fleet, name)
    fingerprint = make_minion_keys(tmp_path / "genuine")
    make_minion_keys(tmp_path / "impostor")
    master.add_pending_key(name, (tmp_path / "impostor" / "minion.pub").read_text())
    fleet["ec2"].create_tags(
        Resources=[instance], Tags=[{"Key": "salt:minion-fingerprint", "Value": fingerprint}]
    )
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        MinionIdTemplate="{tag:Name}",
        KeyBinding="tag",
    )
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    waiting = run_aws_ork(conf, "--once")
    assert waiting.returncode == 0, waiting.stderr
    assert f"SECURITY: {name}: a key with fingerprint" in waiting.stderr
    assert master.key_state_of(name) == "minions_pre"  # the impostor's: never accepted

    master.add_denied_key(name, (tmp_path / "genuine" / "minion.pub").read_text())
    wait_for(lambda: queue_counts(sqs, queue_url) == (1, 0), 60, "the launch visible again")
    accepted = run_aws_ork(conf, "--once")  # the retried launch finds the genuine key
    assert accepted.returncode == 0, accepted.stderr
    assert f"minion {name}: accepted (key binding: {fingerprint})" in about(
        accepted.stderr, instance
    )
    assert (
        master.key_path(name, "minions").read_text().strip()
        == (tmp_path / "genuine" / "minion.pub").read_text().strip()
    )
    assert not master.key_path(name, "minions_pre").exists()  # the impostor's key is gone


def test_a_pending_key_under_a_name_another_instance_holds_is_left_alone(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    """A later instance given the same Name is refused the id; the earlier instance's pending
    key under it is not moved to the rejected keys (the id is claimed before a stale key is
    rejected, and a refused claim touches nothing)."""
    name = f"web-{uuid.uuid4().hex[:6]}"
    first = named_instance(fleet, name)
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], MinionIdTemplate="{tag:Name}"
    )
    send(sqs, queue_url, signed(identity, LAUNCH, first, fleet["group"]))
    launched = run_aws_ork(conf, "--once")  # first holds the id now (its key not there yet)
    assert launched.returncode == 0, launched.stderr
    assert f"minion {name}: pre-authorised" in decision_line(launched.stderr, first)

    pending = master.add_pending_key(name)  # first's minion, its key presented a while ago
    os.utime(pending, (time.time() - 3600, time.time() - 3600))
    second = named_instance(fleet, name)  # launched after that key: to it, the key is stale
    send(sqs, queue_url, signed(identity, LAUNCH, second, fleet["group"]))
    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert f"REJECTED: minion id {name} is held by instance {first}" in about(result.stderr, second)
    assert master.key_state_of(name) == "minions_pre"  # left alone, not rejected
    assert "someone else submitted a key" not in result.stderr
