"""Lifecycle hooks: launching actions completed once the key is accepted (with heartbeats
meanwhile), terminating actions completed once the key is deleted.

The daemon's Auto Scaling calls go to tests/asgproxy.py (moto cannot answer
CompleteLifecycleAction and RecordLifecycleActionHeartbeat); the rest is moto, the real
salt-master and signed envelopes with the shipped trust defaults (tests/trustenv.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

from aws_ork import config, defaults
from aws_ork.base.errors import ConfigError
from aws_ork.lifecycle import Completer, HookAction, HookClient
from aws_ork.lifecycle.completer import State
from tests.asgproxy import AsgProxy
from tests.daemon import (
    queue_counts,
    run_aws_ork,
    send,
    start_aws_ork,
    states,
    stop_aws_ork,
    wait_for,
)
from tests.messages import envelope, fixture, fixture_text
from tests.metricsenv import scrape, value
from tests.saltenv import SaltMinion, free_port, make_minion_keys, start_minion
from tests.snssign import SigningIdentity, make_signing_identity, sign_envelope
from tests.test_key_binding import publish
from tests.trustenv import TOPIC, group_instance, trust_config

LAUNCHING = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
LAUNCH_HOOK = "salt-launch"
TERMINATE_HOOK = "salt-terminate"
#: AWS's smallest HeartbeatTimeout: heartbeats every 15 s (HEARTBEAT_FRACTION 0.5)
HEARTBEAT_TIMEOUT = 30


@pytest.fixture
def asg(moto) -> Iterator[AsgProxy]:
    proxy = AsgProxy(moto.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def hooks(fleet) -> dict[str, Any]:
    """The managed group with a launching and a terminating hook (HeartbeatTimeout 30 s)."""
    for name, transition in ((LAUNCH_HOOK, LAUNCHING), (TERMINATE_HOOK, TERMINATING)):
        fleet["asg"].put_lifecycle_hook(
            AutoScalingGroupName=fleet["group"],
            LifecycleHookName=name,
            LifecycleTransition=transition,
            HeartbeatTimeout=HEARTBEAT_TIMEOUT,
            DefaultResult="ABANDON",
        )
    return fleet


@pytest.fixture
def minions() -> Iterator[list[SaltMinion]]:
    started: list[SaltMinion] = []
    yield started
    for minion in started:
        minion.stop()


def hook_message(
    transition: str, instance_id: str, group: str, hook: str, token: str | None = None
) -> dict[str, Any]:
    """A lifecycle-hook message as Auto Scaling sends it (tests/fixtures/messages)."""
    inner = fixture("hook-launching")
    inner.update(
        {
            "LifecycleTransition": transition,
            "EC2InstanceId": instance_id,
            "AutoScalingGroupName": group,
            "LifecycleHookName": hook,
            "LifecycleActionToken": token or str(uuid.uuid4()),
        }
    )
    return inner


def signed_hook(identity: SigningIdentity, inner: dict[str, Any]) -> str:
    """The hook message in an SNS envelope from the allowed topic, signed."""
    return json.dumps(sign_envelope(envelope(inner, TOPIC), identity, "2"))


@contextmanager
def daemon(conf: Path, log: Path, asg: AsgProxy) -> Iterator[Path]:
    """aws_ork in the background, its Auto Scaling calls going to ``asg``; stopped by PID."""
    proc = start_aws_ork(conf, log, env=asg.env())
    try:
        yield log
    finally:
        stop_aws_ork(proc)


def assert_action(call: dict[str, str], inner: dict[str, Any]) -> None:
    """The call names exactly the action of this hook message."""
    assert call["LifecycleHookName"] == inner["LifecycleHookName"]
    assert call["AutoScalingGroupName"] == inner["AutoScalingGroupName"]
    assert call["LifecycleActionToken"] == inner["LifecycleActionToken"]
    # by its token alone: an instance id from a message could name another instance's action
    assert "InstanceId" not in call
    assert call["_instance"] == inner["EC2InstanceId"]  # whose action Auto Scaling found


def test_launch_is_completed_only_once_its_late_key_is_accepted_with_heartbeats_meanwhile(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    group = hooks["group"]
    instance = group_instance(hooks)
    inner = asg.hold(hook_message(LAUNCHING, instance, group, LAUNCH_HOOK))
    port = free_port()
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        group,
        LifecycleHooks="*",
        MetricsAddress=f"127.0.0.1:{port}",
    )
    with daemon(conf, tmp_path / "aws_ork.log", asg) as log:
        send(sqs, queue_url, signed_hook(identity, inner))
        beats = wait_for(
            lambda: (
                len(asg.recorded("RecordLifecycleActionHeartbeat", instance)) >= 2
                and asg.recorded("RecordLifecycleActionHeartbeat", instance)
            ),
            3 * HEARTBEAT_TIMEOUT,
            "two heartbeats while the key is missing",
        )
        for beat in beats:
            assert_action(beat, inner)
        assert "waiting for the key" in log.read_text()
        assert not asg.recorded("CompleteLifecycleAction"), "completed before the key came"
        assert states(master, instance) == {instance: None}

        master.add_pending_key(instance)
        completed = wait_for(
            lambda: asg.recorded("CompleteLifecycleAction", instance),
            60,
            "the lifecycle action to be completed",
        )
        assert states(master, instance) == {instance: "minions"}
        assert len(completed) == 1
        assert_action(completed[0], inner)
        assert completed[0]["LifecycleActionResult"] == "CONTINUE"
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 60, "the message deleted")
        assert value(scrape(port), "aws_ork_lifecycle_actions_completed_total") == 1
    text = log.read_text()
    assert f"{instance}: lifecycle action {LAUNCH_HOOK} ({group}) completed: CONTINUE" in text


def test_launch_preauthorised_by_stub_is_completed_when_salt_uses_the_stub(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg, minions
):
    group = hooks["group"]
    instance = group_instance(hooks)
    inner = asg.hold(hook_message(LAUNCHING, instance, group, LAUNCH_HOOK))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, group, LifecycleHooks="*")
    with daemon(conf, tmp_path / "aws_ork.log", asg) as log:
        send(sqs, queue_url, signed_hook(identity, inner))
        wait_for(lambda: "pre-authorised" in log.read_text(), 60, "the autosign stub")
        assert not asg.recorded("CompleteLifecycleAction", instance)

        minions.append(start_minion(master, tmp_path / "minion", instance))
        completed = wait_for(
            lambda: asg.recorded("CompleteLifecycleAction", instance),
            60,
            "the lifecycle action to be completed",
        )
        assert states(master, instance) == {instance: "minions"}
        assert len(completed) == 1 and completed[0]["LifecycleActionResult"] == "CONTINUE"
        assert_action(completed[0], inner)
        master.wait_for_ping(instance, timeout=60)
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 60, "the message deleted")


def test_launch_under_key_binding_is_completed_when_the_published_key_is_presented(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    group = hooks["group"]
    instance = group_instance(hooks)
    pki = tmp_path / "minion-pki"
    fingerprint = make_minion_keys(pki)
    inner = asg.hold(hook_message(LAUNCHING, instance, group, LAUNCH_HOOK))
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, group, KeyBinding="tag", LifecycleHooks="*"
    )
    with daemon(conf, tmp_path / "aws_ork.log", asg) as log:
        send(sqs, queue_url, signed_hook(identity, inner))
        # the EC2 check defers (no fingerprint published yet): the action is kept alive
        wait_for(
            lambda: asg.recorded("RecordLifecycleActionHeartbeat", instance),
            60,
            "a heartbeat while the check is deferred",
        )
        assert "check deferred" in log.read_text()
        publish(hooks, instance, fingerprint)
        wait_for(lambda: "waiting for the key" in log.read_text(), 60, "the launch to wait")
        assert not asg.recorded("CompleteLifecycleAction", instance)

        master.add_pending_key(instance, (pki / "minion.pub").read_text())
        completed = wait_for(
            lambda: asg.recorded("CompleteLifecycleAction", instance),
            60,
            "the lifecycle action to be completed",
        )
        assert states(master, instance) == {instance: "minions"}
        assert len(completed) == 1
        assert_action(completed[0], inner)
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 60, "the message deleted")


def test_signed_terminate_hook_needs_auto_scaling_to_say_terminating_then_completes(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    """A signature proves only that someone allowed to publish to the topic sent it: a signed
    terminating hook for an instance Auto Scaling keeps InService deletes nothing; once Auto
    Scaling says Terminating:Wait the key goes at once (the instance still runs) and the
    action is completed."""
    group = hooks["group"]
    instance = group_instance(hooks)
    master.add_accepted_key(instance)
    inner = asg.hold(hook_message(TERMINATING, instance, group, TERMINATE_HOOK))
    send(sqs, queue_url, signed_hook(identity, inner))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, group, LifecycleHooks="*")

    forged = run_aws_ork(conf, "--once", env=asg.env())  # moto says InService

    assert forged.returncode == 0, forged.stderr
    assert "Auto Scaling says 'InService', not Terminating" in forged.stderr
    assert "is still running in EC2" in forged.stderr
    assert states(master, instance) == {instance: "minions"}
    assert not asg.recorded("CompleteLifecycleAction")

    completed = deleted_once_terminating(master, sqs, queue_url, asg, conf, instance, group, inner)
    assert completed["LifecycleActionResult"] == "CONTINUE"
    reply = hooks["ec2"].describe_instances(InstanceIds=[instance])
    assert reply["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert queue_counts(sqs, queue_url) == (0, 0)


def deleted_once_terminating(
    master: Any,
    sqs: Any,
    queue_url: str,
    asg: Any,
    conf: Path,
    instance: str,
    group: str,
    inner: dict[str, Any],
) -> dict[str, Any]:
    """Auto Scaling now says the instance is Terminating:Wait: the retried hook deletes its
    key and completes the action (returned) by its token alone."""
    asg.terminating[instance] = group
    wait_for(lambda: queue_counts(sqs, queue_url) == (1, 0), 60, "the retry to come back")
    leaving = run_aws_ork(conf, "--once", env=asg.env())
    assert leaving.returncode == 0, leaving.stderr
    assert "Auto Scaling says Terminating:Wait" in leaving.stderr
    assert states(master, instance) == {instance: None}
    [completed] = asg.recorded("CompleteLifecycleAction", instance)
    assert_action(completed, inner)
    return dict(completed)


def eventbridge_hook(inner: dict[str, Any]) -> dict[str, Any]:
    """The same hook message as EventBridge delivers it ("EC2 Instance-terminate Lifecycle
    Action", tests/fixtures/messages)."""
    event = fixture("eventbridge-asg-terminate-lifecycle-action")
    event["detail"] = {k: inner[k] for k in event["detail"]}
    return event


@pytest.mark.parametrize("source", ["hook", "eventbridge"])
def test_unsigned_terminate_hook_needs_auto_scaling_to_say_terminating(
    master, tmp_path, sqs, queue_url, cert_dir, hooks, asg, source
):
    group = hooks["group"]
    instance = group_instance(hooks)
    master.add_accepted_key(instance)
    inner = asg.hold(hook_message(TERMINATING, instance, group, TERMINATE_HOOK))
    conf = trust_config(
        tmp_path, queue_url, master, cert_dir, group, UnsignedSources=source, LifecycleHooks="*"
    )
    send(sqs, queue_url, json.dumps(inner if source == "hook" else eventbridge_hook(inner)))

    forged = run_aws_ork(conf, "--once", env=asg.env())  # InService: EC2's rule, retried
    assert forged.returncode == 0, forged.stderr
    assert "is still running in EC2" in forged.stderr
    assert states(master, instance) == {instance: "minions"}
    assert not asg.recorded("CompleteLifecycleAction")

    deleted_once_terminating(master, sqs, queue_url, asg, conf, instance, group, inner)
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_expired_token_is_dropped_and_other_hooks_and_tests_are_left_alone(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    group = hooks["group"]
    expired, foreign = group_instance(hooks), group_instance(hooks)
    master.add_pending_key(expired)
    master.add_pending_key(foreign)
    gone = asg.hold(hook_message(LAUNCHING, expired, group, LAUNCH_HOOK))
    asg.gone.add(gone["LifecycleActionToken"])
    other = hook_message(LAUNCHING, foreign, group, "someone-elses-hook")
    send(
        sqs,
        queue_url,
        signed_hook(identity, gone),
        signed_hook(identity, other),
        fixture_text("hook-test-notification"),
    )
    conf = trust_config(
        tmp_path,
        queue_url,
        master,
        cert_dir,
        group,
        LifecycleHooks=f"{LAUNCH_HOOK}, {TERMINATE_HOOK}",
        UnsignedSources="hook",
    )

    result = run_aws_ork(conf, "--once", env=asg.env())

    assert result.returncode == 0, result.stderr
    assert states(master, expired, foreign) == {expired: "minions", foreign: "minions"}
    assert len(asg.recorded("CompleteLifecycleAction", expired)) == 1
    assert (
        result.stderr.count(
            f"{expired}: lifecycle action {LAUNCH_HOOK} ({group}) is no longer waiting"
        )
        == 1
    )
    assert not asg.recorded("CompleteLifecycleAction", foreign)  # not in LifecycleHooks
    assert "test notification, deleted" in result.stderr
    assert queue_counts(sqs, queue_url) == (0, 0)


def test_heartbeats_at_the_documented_fraction_then_one_warning_at_the_bound(hooks, asg, caplog):
    """The heartbeat clock, on a fake clock (no waiting); the calls are real (the proxy)."""
    group = hooks["group"]
    client = HookClient(boto3.client("autoscaling", region_name="us-west-2", endpoint_url=asg.url))
    now = [0.0]
    completer = Completer(client, clock=lambda: now[0])
    action = HookAction(group, LAUNCH_HOOK, str(uuid.uuid4()), "i-0123456789abcdef0")
    asg.actions[action.token] = (group, LAUNCH_HOOK, action.instance_id)
    period = HEARTBEAT_TIMEOUT * defaults.HEARTBEAT_FRACTION

    def beats() -> int:
        return len(asg.recorded("RecordLifecycleActionHeartbeat", action.instance_id))

    assert completer.wait(action) is State.WAITING
    completer.tick()
    assert beats() == 1  # at once: when the hook started is not known
    now[0] = period - 0.1
    completer.tick()
    assert beats() == 1
    now[0] = period
    completer.tick()
    assert beats() == 2
    with caplog.at_level(logging.WARNING):
        now[0] = defaults.HOOK_WAIT_SECONDS
        completer.tick()
        now[0] += HEARTBEAT_TIMEOUT
        completer.tick()
    assert beats() == 2
    warnings = [r for r in caplog.records if "gave up waiting" in r.getMessage()]
    assert len(warnings) == 1
    assert completer.wait(action) is State.GIVEN_UP  # its message is then deleted
    assert not asg.recorded("CompleteLifecycleAction", action.instance_id)


def test_lifecycle_hooks_option() -> None:
    def parse(raw: str) -> tuple[str, ...]:
        return config.from_mapping({"LifecycleHooks": raw}, "f").lifecycle_hooks

    assert parse("*") == ("*",)
    assert parse("a-hook, b.hook  c_hook") == ("a-hook", "b.hook", "c_hook")
    assert parse("") == ()
    for bad in ("* a-hook", "a hook;rm"):
        with pytest.raises(ConfigError):
            parse(bad)
    cfg = config.from_mapping({"LifecycleHooks": "a-hook"}, "f")
    assert cfg.completes_hook("a-hook") and not cfg.completes_hook("b-hook")
    assert not cfg.completes_hook(None)
    assert config.Config().completes_hook("any-hook")


def test_a_hook_name_with_a_newline_is_logged_as_one_escaped_line(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    """Hook and group names are the message's text: a newline in one cannot forge a line."""
    group = hooks["group"]
    instance = group_instance(hooks)
    master.add_pending_key(instance)
    forged = "2026-01-01 00:00:00,000 INFO aws_ork: forged"
    inner = asg.hold(hook_message(LAUNCHING, instance, group, f"salt-launch\n{forged}"))
    send(sqs, queue_url, signed_hook(identity, inner))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, group, LifecycleHooks="*")

    result = run_aws_ork(conf, "--once", env=asg.env())

    assert result.returncode == 0, result.stderr
    [completed] = asg.recorded("CompleteLifecycleAction", instance)
    assert completed["LifecycleHookName"] == inner["LifecycleHookName"]  # answered as sent
    assert states(master, instance) == {instance: "minions"}
    lines = result.stderr.splitlines()
    assert not [line for line in lines if line.startswith(forged)], result.stderr
    escaped = f"lifecycle action salt-launch\\n{forged} ({group}) completed: CONTINUE"
    assert [line for line in lines if escaped in line], result.stderr


def test_no_heartbeat_for_a_message_whose_signature_cannot_be_checked_yet(
    master, tmp_path, sqs, queue_url, cert_dir, hooks, asg
):
    """The certificate of the envelope cannot be fetched (anyone can name any URL): the
    message is retried, and nothing keeps the named instance's action alive meanwhile."""
    group = hooks["group"]
    instance = group_instance(hooks)
    stranger = make_signing_identity(tmp_path / "elsewhere")  # its certificate is not cached
    inner = asg.hold(hook_message(LAUNCHING, instance, group, LAUNCH_HOOK))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, group, LifecycleHooks="*")
    unreachable = {"https_proxy": f"http://127.0.0.1:{free_port()}", **asg.env()}
    log = tmp_path / "aws_ork.log"
    proc = start_aws_ork(conf, log, env=unreachable)
    try:
        send(sqs, queue_url, signed_hook(stranger, inner))
        # three receives, each deferred: the old code sent a heartbeat within a tick (1 s)
        # of the first, and the third comes at least 6 s later
        wait_for(
            lambda: log.read_text().count("SNS signature not verifiable yet") >= 3,
            90,
            "three deferred receives",
        )
        assert not asg.recorded("RecordLifecycleActionHeartbeat"), log.read_text()
    finally:
        stop_aws_ork(proc)
    assert not asg.recorded("CompleteLifecycleAction")
    assert states(master, instance) == {instance: None}


def test_a_wait_survives_a_restart_and_is_given_up_at_its_first_deadline(
    master, tmp_path, sqs, queue_url, identity, cert_dir, hooks, asg
):
    """The daemon is stopped while a launch waits for its key and started again later: the
    wait goes on from where it was (StateDir), and it ends at the deadline it had, not 30
    minutes after the restart."""
    group = hooks["group"]
    instance = group_instance(hooks)
    inner = asg.hold(hook_message(LAUNCHING, instance, group, LAUNCH_HOOK))
    conf = trust_config(tmp_path, queue_url, master, cert_dir, group, LifecycleHooks="*")
    saved = tmp_path / "state" / "lifecycle-waits"
    with daemon(conf, tmp_path / "first.log", asg) as log:
        send(sqs, queue_url, signed_hook(identity, inner))
        wait_for(
            lambda: asg.recorded("RecordLifecycleActionHeartbeat", instance),
            60,
            "a heartbeat while the key is missing",
        )
        assert "waiting for the key" in log.read_text()
    [wait] = [json.loads(line) for line in saved.read_text().splitlines()]
    assert (wait["token"], wait["instance"], wait["state"]) == (
        inner["LifecycleActionToken"],
        instance,
        "waiting",
    )

    # the daemon stays down until the wait's deadline is 10 s away (the test moves the
    # wait's start back instead of waiting half an hour)
    wait["since"] -= defaults.HOOK_WAIT_SECONDS - 10
    saved.write_text(json.dumps(wait) + "\n")
    with daemon(conf, tmp_path / "second.log", asg) as log:
        wait_for(
            lambda: "gave up waiting for its key" in log.read_text(),
            90,
            "the wait to end at its first deadline",
        )
        wait_for(lambda: queue_counts(sqs, queue_url) == (0, 0), 90, "the message deleted")
    text = log.read_text()
    [warning] = [line for line in text.splitlines() if "gave up waiting for its key" in line]
    elapsed = float(warning.split("gave up waiting for its key after ")[1].split(" s ")[0])
    assert elapsed >= defaults.HOOK_WAIT_SECONDS  # counted from the first run's start
    assert "1 lifecycle action(s) still waiting for their key since the last run" in text
    assert not asg.recorded("CompleteLifecycleAction")
    assert states(master, instance) == {instance: None}
    [ended] = [json.loads(line) for line in saved.read_text().splitlines()]
    assert (ended["token"], ended["state"]) == (inner["LifecycleActionToken"], "given_up")


def test_torn_or_forged_lines_of_the_waits_file_are_ignored(tmp_path, hooks, asg):
    """What a crash or another writer left in StateDir/lifecycle-waits never becomes a wait:
    only whole lines with what Auto Scaling could have sent are taken up."""
    from aws_ork.lifecycle import waits

    group = hooks["group"]
    client = HookClient(boto3.client("autoscaling", region_name="us-west-2", endpoint_url=asg.url))
    path = tmp_path / "lifecycle-waits"
    good = waits.SavedWait(
        group,
        LAUNCH_HOOK,
        str(uuid.uuid4()),
        "i-0123456789abcdef0",
        since=1000.0,
        due=1010.0,
        beats=2,
        state=waits.WAITING,
    )
    forged = dict(json.loads(good.line()), token="../x y", instance="i-0123456789abcdef1")
    path.write_text(
        good.line() + json.dumps(forged) + "\n" + "not json\n" + good.line()[:40]
    )  # the last one torn
    now = [1005.0]
    completer = Completer(client, clock=lambda: now[0], path=path)
    action = HookAction(group, LAUNCH_HOOK, good.token, good.instance_id)
    assert completer.wait(action) is State.WAITING  # taken up, not a fresh wait
    asg.actions[good.token] = (group, LAUNCH_HOOK, good.instance_id)
    completer.tick()
    assert not asg.recorded("RecordLifecycleActionHeartbeat")  # not due before 1010
    now[0] = 1010.0
    completer.tick()
    assert len(asg.recorded("RecordLifecycleActionHeartbeat", good.instance_id)) == 1
    assert [json.loads(line)["token"] for line in path.read_text().splitlines()] == [good.token]
