"""The reconcile sweep through the moto server (EC2, Auto Scaling) and a real salt-master (and
real salt-minions: a stranger presenting a key, a minion accepted through aws_ork's autosign
stub): it finds what lost messages would have changed, and nothing else. It accepts only a
key its instance published (key binding) and deletes only keys aws_ork enrolled."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from aws_ork.base import pubkey
from tests.daemon import run_aws_ork, send, start_aws_ork, stop_aws_ork, wait_for
from tests.saltenv import make_minion_keys, start_minion
from tests.trustenv import LAUNCH, group_instance, plain_instance, signed, trust_config

TAG = "salt:minion-fingerprint"


def publish(fleet, instance: str, fingerprint: str) -> None:
    """What the instance's user data does under key binding: tag itself with its key."""
    fleet["ec2"].create_tags(Resources=[instance], Tags=[{"Key": TAG, "Value": fingerprint}])


def sweeps(log: Path) -> list[str]:
    """The summary line of every sweep so far."""
    return re.findall(r"sweep: \d+ instance keys looked up in EC2.*", log.read_text())


def enrol(sqs, queue_url, identity, fleet, conf: Path, *instances: str) -> None:
    """Launch messages for these instances, handled by one run: their keys (pending, or
    pre-authorised with none yet) are aws_ork's from now on."""
    send(sqs, queue_url, *(signed(identity, LAUNCH, i, fleet["group"]) for i in instances))
    result = run_aws_ork(conf, "--once")
    assert result.returncode == 0, result.stderr


def test_without_key_binding_the_sweep_never_accepts_a_key_a_stranger_presented(
    master, tmp_path, queue_url, cert_dir, fleet
):
    """A stranger reaching the master's port presents a key under the id of a running
    instance of the managed group whose launch is long over: the key is younger than the
    instance, yet nothing proves whose it is. The sweep leaves it pending, and says so once."""
    instance = group_instance(fleet)
    stranger = start_minion(master, tmp_path / "stranger", instance)
    try:
        master.wait_for_key(instance, "minions_pre", timeout=60)
    finally:
        stranger.stop()
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], SweepMinutes="0.05")
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        wait_for(lambda: len(sweeps(log)) >= 3, 90, "three sweeps")
    finally:
        stop_aws_ork(daemon)
    assert master.key_state_of(instance) == "minions_pre"
    text = log.read_text()
    left = [
        line for line in text.splitlines() if f"sweep: {instance}: pending key left alone" in line
    ]
    assert len(left) == 1, text  # once per key, not every sweep
    assert " INFO " in left[0] and "without key binding the sweep accepts no key" in left[0]
    assert "0 accepted" in sweeps(log)[-1]


def test_under_key_binding_the_sweep_accepts_only_the_key_the_instance_published(
    master, tmp_path, queue_url, cert_dir, fleet
):
    lost, unpublished, impostor = (group_instance(fleet) for _ in range(3))
    outsider = plain_instance(fleet, {"role": "salt-minion"})  # in no managed group
    for instance in (lost, impostor, outsider):
        keys = tmp_path / instance
        publish(fleet, instance, make_minion_keys(keys))
        if instance != impostor:
            master.add_pending_key(instance, (keys / "minion.pub").read_text())
    master.add_pending_key(impostor)  # not the key it published
    master.add_pending_key(unpublished)  # fresh, but its instance published nothing
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], SweepMinutes="60", KeyBinding="tag"
    )

    dry = run_aws_ork(conf, "--once", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"sweep: launch {lost} (its launch message was lost): would be accepted" in dry.stderr
    assert master.key_state_of(lost) == "minions_pre"

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert (
        master.key_state_of(lost),
        master.key_state_of(unpublished),
        master.key_state_of(impostor),
        master.key_state_of(outsider),
    ) == ("minions", "minions_pre", "minions_pre", "minions_pre")  # the impostor's: never
    assert (
        f"sweep: launch {lost} (its launch message was lost): accepted (key binding: "
        in result.stderr
    )
    assert f"SECURITY: {impostor}: a key with fingerprint" in result.stderr

    # the genuine minion presents its key: Salt puts it in the denied keys (one is pending);
    # the next sweep accepts it from there, and the impostor's pending key goes
    genuine = (tmp_path / impostor / "minion.pub").read_text()
    master.add_denied_key(impostor, genuine)
    again = run_aws_ork(conf, "--once")
    assert again.returncode == 0, again.stderr
    assert master.key_state_of(impostor) == "minions"
    assert master.key_path(impostor, "minions").read_text().strip() == genuine.strip()
    assert not master.key_path(impostor, "minions_pre").exists()


def test_a_sweep_needs_verify_instances(master, tmp_path, queue_url, cert_dir, fleet):
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        SweepMinutes="60",
        VerifyInstances="false",
        AutoScalingGroups="",
        InstanceTags="",
    )
    result = run_aws_ork(conf, "--once")
    assert (
        result.returncode == 2
        and "SweepMinutes: is set but VerifyInstances is off" in result.stderr
    )


def test_a_sweep_needs_a_group_or_tag_filter(master, tmp_path, queue_url, cert_dir, fleet):
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        SweepMinutes="60",
        AutoScalingGroups="",
        InstanceTags="",
    )
    for args in (("--once",), ("--check",)):
        result = run_aws_ork(conf, *args)
        assert result.returncode == 2, result.stderr
        assert (
            "SweepMinutes: is set but neither AutoScalingGroups nor InstanceTags is set"
            in result.stderr
        )


def test_a_sweep_deletes_the_key_of_an_instance_terminated_while_the_daemon_was_stopped(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    gone, alive = group_instance(fleet), group_instance(fleet)
    master.add_pending_key(gone)
    master.add_pending_key(alive)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    enrol(sqs, queue_url, identity, fleet, conf, gone, alive)
    assert (master.key_state_of(gone), master.key_state_of(alive)) == ("minions", "minions")
    fleet["ec2"].terminate_instances(InstanceIds=[gone])  # its terminate message was lost
    # a sweep every 3 s: the second in a row deletes (EC2 is eventually consistent)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], SweepMinutes="0.05")
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        wait_for(lambda: "1 gone once" in log.read_text(), 60, "the first sweep")
        assert master.key_state_of(gone) == "minions"  # not on the first sighting
        wait_for(lambda: master.key_state_of(gone) is None, 60, "the key deleted")
    finally:
        stop_aws_ork(daemon)
    text = log.read_text()
    assert f"sweep: terminate {gone} (EC2: terminated on two sweeps in a row): deleted" in text
    assert master.key_state_of(alive) == "minions"


def test_a_sweep_deletes_only_keys_aws_ork_enrolled(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    """A minion of another region or account accepted by hand on this master has a key shaped
    like an instance id that SQS_Region's EC2 does not know: it is left alone. The key Salt
    accepted through aws_ork's autosign stub is aws_ork's, even though no daemon was running
    to see the stub used: it is deleted once its instance is gone."""
    foreign = f"i-{secrets.token_hex(9)[:17]}"  # another region's instance
    master.add_accepted_key(foreign)
    stubbed = group_instance(fleet)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"])
    enrol(sqs, queue_url, identity, fleet, conf, stubbed)
    assert (master.pki_dir / "minions_autosign" / stubbed).exists()
    minion = start_minion(master, tmp_path / "minion", stubbed)  # after the daemon exited
    try:
        master.wait_for_key(stubbed, "minions", timeout=60)  # Salt used the stub
    finally:
        minion.stop()
    fleet["ec2"].terminate_instances(InstanceIds=[stubbed])  # its terminate was lost
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], SweepMinutes="0.05")
    log = tmp_path / "aws_ork.log"
    daemon = start_aws_ork(conf, log)
    try:
        wait_for(lambda: master.key_state_of(stubbed) is None, 60, "the key deleted")
        done = len(sweeps(log))
        wait_for(lambda: len(sweeps(log)) >= done + 2, 60, "two more sweeps")
    finally:
        stop_aws_ork(daemon)
    assert (master.key_state_of(stubbed), master.key_state_of(foreign)) == (None, "minions")
    text = log.read_text()
    assert f"sweep: terminate {stubbed} (EC2: terminated on two sweeps in a row): deleted" in text
    left = [line for line in text.splitlines() if f"sweep: {foreign}: EC2: not found" in line]
    assert len(left) == 1 and "aws_ork did not enrol this key" in left[0], text
    assert "1 not enrolled by aws_ork (left alone)" in sweeps(log)[-1]


def test_under_key_binding_by_key_the_sweep_stores_the_published_key_over_an_impostors(
    master, tmp_path, queue_url, cert_dir, fleet
):
    instance = group_instance(fleet)
    make_minion_keys(tmp_path / "genuine")
    genuine = (tmp_path / "genuine" / "minion.pub").read_text()
    fleet["ec2"].create_tags(
        Resources=[instance],
        Tags=[{"Key": k, "Value": v} for k, v in pubkey.to_tags(genuine).items()],
    )
    master.add_pending_key(instance)  # an impostor's, presented while the launch was lost
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, fleet["group"], SweepMinutes="60", KeyBinding="tag"
    )

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions"
    assert master.key_path(instance, "minions").read_text().strip() == genuine.strip()
    assert not master.key_path(instance, "minions_pre").exists()
    assert f"sweep: launch {instance} (its launch message was lost): accepted" in result.stderr
    assert f"SECURITY: {instance}: a key with fingerprint" in result.stderr
