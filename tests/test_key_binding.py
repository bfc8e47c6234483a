"""Key binding end to end: two real salt-minions under one instance id; only the key the
instance published on its EC2 tag is accepted, whoever connects first.

Moto server (EC2 tags are real there), a real salt-master shared by the module, the real
daemon with the shipped trust defaults (signed envelopes, EC2 checks) plus KeyBinding = tag.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import salt.utils.crypt

from aws_ork import defaults
from tests.bindingenv import AS_THE_SCRIPT_SETS, accepted_pub, answers_from
from tests.daemon import queue_counts, run_aws_ork, send, wait_for
from tests.metricsenv import scrape, value
from tests.presenter import Presenter, start_presenter
from tests.saltenv import (
    generate_public_key_pem,
    make_minion_keys,
    start_minion,
)
from tests.trustenv import LAUNCH, decision_line, group_instance, signed, trust_config

TAG = "salt:minion-fingerprint"


def publish(fleet: dict[str, Any], instance: str, fingerprint: str) -> None:
    fleet["ec2"].create_tags(Resources=[instance], Tags=[{"Key": TAG, "Value": fingerprint}])


def test_an_impostor_connecting_first_never_gets_the_key(
    master, tmp_path, sqs, queue_url, identity, fleet, bound_daemon, minions
):
    log, proc = bound_daemon
    instance = group_instance(fleet)
    genuine_root = tmp_path / "genuine"
    publish(fleet, instance, make_minion_keys(genuine_root / "pki"))
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    wait_for(
        lambda: f"{instance} " in log.read_text() and "key binding:" in log.read_text(),
        60,
        "the launch to wait for the bound key",
    )

    minions.append(start_minion(master, tmp_path / "impostor", instance))
    wait_for(
        lambda: "not the key the instance published" in log.read_text(),
        60,
        "the impostor's key to be deleted",
    )
    assert accepted_pub(master, instance) is None

    genuine = start_minion(master, genuine_root, instance, extra_opts=AS_THE_SCRIPT_SETS)
    minions.append(genuine)
    wait_for(
        lambda: accepted_pub(master, instance) == genuine.public_key(),
        60,
        "the genuine key to be accepted",
    )
    wait_for(
        lambda: answers_from(master, instance) == str(genuine.pki_dir),
        180,
        "the genuine minion to answer",
    )
    assert accepted_pub(master, instance) == genuine.public_key()  # never the impostor's
    text = log.read_text()
    assert f"SECURITY: {instance}" in text and proc.poll() is None, text
    wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 60, "the launch to finish")


@pytest.fixture
def impostors() -> Iterator[list[Presenter]]:
    started: list[Presenter] = []
    yield started
    for impostor in started:
        impostor.stop()


def test_impostors_holding_the_pending_and_denied_keys_cannot_stall_the_genuine_minion(
    master,
    tmp_path,
    sqs,
    queue_url,
    identity,
    fleet,
    bound_daemon,
    minions,
    impostors,
    metrics_port,
):
    """Salt keeps one pending and one denied key per id: two impostors presenting their keys
    as fast as the master answers hold both, and Salt throws the genuine key away at each of
    its attempts unless aws_ork takes it from what Salt saw (the salt/auth event)."""
    log, proc = bound_daemon
    instance = group_instance(fleet)
    genuine_root = tmp_path / "genuine"
    publish(fleet, instance, make_minion_keys(genuine_root / "pki"))
    impostors.extend(start_presenter(master, tmp_path / f"impostor{n}", instance) for n in (1, 2))
    wait_for(
        lambda: (
            master.key_path(instance, "minions_pre").is_file()
            and master.key_path(instance, "minions_denied").is_file()
        ),
        60,
        "the impostors' keys to be pending and denied",
    )
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    wait_for(lambda: "key binding:" in log.read_text(), 60, "the launch to wait for its key")

    genuine = start_minion(master, genuine_root, instance, extra_opts=AS_THE_SCRIPT_SETS)
    minions.append(genuine)
    wait_for(
        lambda: accepted_pub(master, instance) == genuine.public_key(),
        60,
        "the genuine key to be accepted",
    )
    # refused once (Salt denied it or threw it away), accepted at its next attempt; one more
    # refusal of slack for an attempt that crossed the acceptance
    refusals = genuine.log_file.read_text().count("seconds before retry")
    assert refusals <= 2, genuine.log_file.read_text()
    wait_for(
        lambda: answers_from(master, instance) == str(genuine.pki_dir),
        180,
        "the genuine minion to answer",
    )

    tried = [impostor.attempts() for impostor in impostors]
    wait_for(
        lambda: all(impostor.attempts() >= n + 50 for impostor, n in zip(impostors, tried)),
        120,
        "the impostors to present their keys 50 times more each",
    )
    assert accepted_pub(master, instance) == genuine.public_key()
    assert answers_from(master, instance) == str(genuine.pki_dir)
    assert proc.poll() is None
    text = log.read_text()
    for impostor in impostors:  # each impostor's key named once, however often it tried
        finger = salt.utils.crypt.pem_finger(key=impostor.public_key().encode())
        assert text.count(f"fingerprint {finger}") == 1, text
    # and counted once: two impostor keys, whatever the number of their presentations
    assert value(scrape(metrics_port), "aws_ork_keys_impostors_deleted_total") == 2


def test_an_accepted_key_wiped_by_a_racing_pending_store_is_accepted_again(
    master, tmp_path, sqs, queue_url, identity, fleet, bound_daemon
):
    """The id had no key when the bound key was accepted; a Salt auth attempt that looked
    just before then stores its key as pending, and Salt's store deletes minions/<id> first.
    Simulated as Salt's store does it: the accepted file removed, the impostor's pending file
    written."""
    log, proc = bound_daemon
    instance = group_instance(fleet)
    genuine = generate_public_key_pem()
    publish(fleet, instance, salt.utils.crypt.pem_finger(key=genuine.encode()))
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    wait_for(lambda: "key binding:" in log.read_text(), 60, "the launch to wait for its key")
    master.add_pending_key(instance, genuine)  # the genuine minion presents its key
    wait_for(
        lambda: accepted_pub(master, instance) == genuine, 60, "the genuine key to be accepted"
    )

    impostor = generate_public_key_pem()
    master.key_path(instance, "minions").unlink()
    master.add_pending_key(instance, impostor)

    wait_for(
        lambda: accepted_pub(master, instance) == genuine,
        60,
        "the genuine key to be accepted again",
    )
    wait_for(
        lambda: not master.key_path(instance, "minions_pre").exists(),
        60,
        "the impostor's pending key to be removed",
    )
    finger = salt.utils.crypt.pem_finger(key=impostor.strip().encode())  # as Salt keeps it
    line = wait_for(  # logged just after the key is put back
        lambda: next(
            (
                line
                for line in log.read_text().splitlines()
                if f"SECURITY: {instance}" in line and finger in line
            ),
            None,
        ),
        30,
        "the SECURITY line",
    )
    assert "accepted again" in line, line
    assert proc.poll() is None


def test_a_given_up_launch_removes_the_impostors_keys(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    """The bound key never came: the impostors' pending and denied keys were proven not to
    be the instance's key and do not outlive the launch."""
    instance = group_instance(fleet)
    publish(fleet, instance, make_minion_keys(tmp_path / "pki"))
    pending = master.add_pending_key(instance).read_text()
    master.add_denied_key(instance)  # deleted at once, as at every look (the slot is freed)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    for _ in range(defaults.BOUND_KEY_ATTEMPTS - 1):  # the receives of the last half hour
        got = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, WaitTimeSeconds=5).get(
            "Messages"
        )
        assert got, "the launch message"

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    line = decision_line(result.stderr, instance)
    assert "gave up" in line, line
    assert master.key_state_of(instance) is None
    assert not master.key_path(instance, "minions_denied").exists()
    finger = salt.utils.crypt.pem_finger(key=pending.encode())
    assert any(
        "key binding gave up; removed 1 key(s)" in line and line.endswith(finger)
        for line in result.stderr.splitlines()
    ), result.stderr
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_the_genuine_minion_connecting_first_is_accepted(
    master, tmp_path, sqs, queue_url, identity, fleet, bound_daemon, minions
):
    log, _proc = bound_daemon
    instance = group_instance(fleet)
    root = tmp_path / "genuine"
    publish(fleet, instance, make_minion_keys(root / "pki"))
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))
    wait_for(lambda: "key binding:" in log.read_text(), 60, "the launch to wait for its key")
    genuine = start_minion(master, root, instance, extra_opts=AS_THE_SCRIPT_SETS)
    minions.append(genuine)
    wait_for(
        lambda: answers_from(master, instance) == str(genuine.pki_dir),
        180,
        "the genuine minion to answer",
    )
    assert "SECURITY" not in log.read_text()


def test_without_the_tag_nothing_is_accepted(
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
    assert "check deferred" in line and f"(tag {TAG}) yet" in line, line
    assert sum(queue_counts(sqs, queue_url)) == 1  # asked again later


def test_the_genuine_key_already_pending_is_accepted_at_once(
    master, tmp_path, sqs, queue_url, cert_dir, identity, fleet
):
    instance = group_instance(fleet)
    fingerprint = make_minion_keys(tmp_path / "pki")
    master.add_pending_key(instance, (tmp_path / "pki" / "minion.pub").read_text())
    publish(fleet, instance, fingerprint)
    conf = trust_config(tmp_path, queue_url, master, cert_dir, fleet["group"], KeyBinding="tag")
    send(sqs, queue_url, signed(identity, LAUNCH, instance, fleet["group"]))

    result = run_aws_ork(conf, "--once")

    assert result.returncode == 0, result.stderr
    assert master.key_state_of(instance) == "minions"
    line = decision_line(result.stderr, instance)
    assert "accepted" in line and f"(key binding: {fingerprint})" in line, line
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_key_binding_needs_verify_instances(master, tmp_path, queue_url, cert_dir, fleet):
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        fleet["group"],
        KeyBinding="tag",
        VerifyInstances="false",
        AutoScalingGroups="",
        InstanceTags="",
    )
    result = run_aws_ork(conf, "--check")
    assert result.returncode == 2
    assert "KeyBinding: tag needs VerifyInstances" in result.stderr
