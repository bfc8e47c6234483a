"""Unit tests of the trust checks' decisions (no network, no Salt).

EC2 answers come from botocore's Stubber on a real client, so the check sees exactly the
shapes and errors botocore produces. What Salt sees is tested end to end in test_trust.py.
"""

from __future__ import annotations

import json
import os
import urllib.error
from datetime import UTC, datetime
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.stub import Stubber

from aws_ork import config, events
from aws_ork.base.errors import ConfigError
from aws_ork.base.saltkeys import KeyLocation
from aws_ork.checks import Verdict, build_checks
from aws_ork.checks.ec2 import NOT_FOUND_ATTEMPTS, Ec2Lookup, InstanceCheck
from aws_ork.checks.signature import SignatureVerifier
from aws_ork.checks.source import SourceCheck
from aws_ork.checks.terminations import RETENTION_SECONDS, TerminationCheck, Terminations
from aws_ork.checks.topic import TopicCheck
from aws_ork.decide import Handler
from aws_ork.decision import Action
from aws_ork.events import Event, Kind, Source
from aws_ork.keys.result import KeyResult
from aws_ork.keys.stage import KeyStage
from aws_ork.sqs.queue import Message
from tests.fakechecks import Said
from tests.fakekeys import UnusedKeys
from tests.messages import envelope, fixture, notification
from tests.snssign import make_signing_identity, sign_envelope

ID = "i-0a1b2c3d4e5f60718"
TOPIC = "arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"
LAUNCH = Event(Kind.LAUNCH, Source.SNS, instance_id=ID, topic_arn=TOPIC)
TERMINATE = Event(Kind.TERMINATE, Source.SNS, instance_id=ID, topic_arn=TOPIC)


# --- topic and source ---------------------------------------------------------------------


def test_topic_check_passes_only_listed_topics_and_leaves_unsigned_sources_alone():
    check = TopicCheck([TOPIC])
    assert check(LAUNCH).ok
    other = Event(Kind.LAUNCH, Source.SNS, instance_id=ID, topic_arn=TOPIC + "-evil")
    verdict = check(other)
    assert not verdict.ok and not verdict.retry and "AllowedTopicArns" in verdict.reason
    assert check(Event(Kind.LAUNCH, Source.SNS, instance_id=ID, topic_arn=None)).ok is False
    assert check(Event(Kind.LAUNCH, Source.RAW, instance_id=ID)).ok


@pytest.fixture
def identity(tmp_path: Path):
    return make_signing_identity(tmp_path, "us-west-2")


def parsed(body: dict) -> Event:
    return events.parse(json.dumps(body))


def test_source_check_believes_a_signed_envelope_and_nothing_else(tmp_path, identity):
    check = SourceCheck(SignatureVerifier(tmp_path))
    good = sign_envelope(envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID)), identity)
    assert check(parsed(good)).ok
    bad = dict(
        good,
        Message=json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", "i-00000000000000001")),
    )
    verdict = check(parsed(bad))
    assert not verdict.ok and not verdict.retry and "bad signature" in verdict.reason


@pytest.mark.parametrize("source", ["raw", "hook", "eventbridge"])
def test_unsigned_sources_need_their_name_in_unsigned_sources(tmp_path, source):
    event = Event(Kind.LAUNCH, Source(source), instance_id=ID)
    refused = SourceCheck(SignatureVerifier(tmp_path))(event)
    assert not refused.ok and f"unsigned {source} message" in refused.reason
    others = [s for s in config.UNSIGNED_SOURCES if s != source]
    assert not SourceCheck(SignatureVerifier(tmp_path), others)(event).ok
    assert SourceCheck(SignatureVerifier(tmp_path), [source])(event).ok


def test_fixture_bodies_map_to_the_sources_unsigned_sources_names():
    assert parsed(fixture("raw-asg-launch")).source is Source.RAW
    assert parsed(fixture("hook-launching")).source is Source.HOOK
    assert parsed(fixture("eventbridge-ec2-running")).source is Source.EVENTBRIDGE
    assert {s.value for s in (Source.RAW, Source.HOOK, Source.EVENTBRIDGE)} == set(
        config.UNSIGNED_SOURCES
    )


def test_unsigned_sources_option_is_parsed_and_validated():
    cfg = config.from_mapping({"unsignedsources": "Raw, hook  eventbridge"}, "t.conf")
    assert cfg.unsigned_sources == ("raw", "hook", "eventbridge")
    assert config.Config().unsigned_sources == ()
    with pytest.raises(ConfigError, match="t.conf: UnsignedSources: .*'sns'"):
        config.from_mapping({"UnsignedSources": "raw sns"}, "t.conf")


def test_build_checks_orders_topic_then_signature_then_instance(tmp_path):
    cfg = config.from_mapping({"AllowedTopicArns": TOPIC, "StateDir": str(tmp_path)}, "t")
    keys = KeyLocation(tmp_path / "pki")
    built = build_checks(cfg, location=keys, ec2=object())
    assert [type(c).__name__ for c in built.all] == ["TopicCheck", "SourceCheck", "InstanceCheck"]
    assert built.instance is built.all[-1]  # the sweep's, named
    loose = config.from_mapping(
        {"VerifySignatures": "no", "VerifyInstances": "no", "StateDir": str(tmp_path)}, "t"
    )
    memory = Terminations(tmp_path / "terminated")
    built = build_checks(loose, location=keys, terminations=memory)
    assert [type(c).__name__ for c in built.all] == ["TerminationCheck"]
    assert built.instance is None


# --- EC2 ----------------------------------------------------------------------------------


@pytest.fixture
def ec2():
    client = boto3.client(
        "ec2",
        region_name="us-west-2",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    with Stubber(client) as stub:
        yield client, stub


#: A key directory with no pending key (freshness not involved).
NO_KEYS = KeyLocation(Path("/nonexistent/aws-ork-test-pki"))


def reply(state: str, tags: dict[str, str] | None = None) -> dict:
    return {
        "Reservations": [
            {
                "Instances": [
                    {
                        "InstanceId": ID,
                        "State": {"Name": state},
                        "LaunchTime": datetime(2026, 1, 1, tzinfo=UTC),
                        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
                    }
                ]
            }
        ]
    }


def check_with(ec2, answer, *, groups=(), tags=(), event=LAUNCH):
    client, stub = ec2
    if isinstance(answer, str):
        stub.add_client_error(
            "describe_instances", service_error_code=answer, expected_params={"InstanceIds": [ID]}
        )
    else:
        stub.add_response("describe_instances", answer, {"InstanceIds": [ID]})
    verdict = InstanceCheck(Ec2Lookup(client), NO_KEYS, groups=groups, tags=tags)(event)
    stub.assert_no_pending_responses()
    return verdict


@pytest.mark.parametrize("state", ["pending", "running"])
def test_a_live_instance_passes(ec2, state):
    assert check_with(ec2, reply(state)).ok


@pytest.mark.parametrize("state", ["shutting-down", "terminated", "stopping", "stopped"])
def test_a_launch_of_an_instance_that_is_not_live_is_refused_for_good(ec2, state):
    verdict = check_with(ec2, reply(state))
    assert (verdict.ok, verdict.retry) == (False, False) and state in verdict.reason


@pytest.mark.parametrize("code", ["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"])
def test_a_launch_of_an_unknown_instance_is_asked_again_then_refused(ec2, code):
    verdict = check_with(ec2, code)
    assert (verdict.ok, verdict.retry, verdict.attempts) == (False, True, NOT_FOUND_ATTEMPTS)
    assert "not found" in verdict.reason


def test_an_empty_reply_is_not_found(ec2):
    verdict = check_with(ec2, {"Reservations": []})
    assert (verdict.ok, verdict.retry) == (False, True) and "not found" in verdict.reason


@pytest.mark.parametrize(
    ("receives", "action"),
    [(1, Action.RETRY), (4, Action.RETRY), (5, Action.DELETE), (9, Action.DELETE)],
)
def test_a_retry_with_limited_attempts_becomes_final_at_the_limit(receives, action):
    not_found = Said(Verdict(False, "instance not found in EC2", retry=True, attempts=5))
    handler = Handler(KeyStage(UnusedKeys()), checks=[not_found])
    body = json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID))
    decision = handler.handle(Message("m", "r", body, receives))
    assert decision.action is action
    assert decision.rejected is (action is Action.DELETE)


@pytest.mark.parametrize(
    "code", ["Throttling", "RequestLimitExceeded", "UnauthorizedOperation", "InternalError"]
)
def test_ec2_failures_are_retried_and_never_accepted(ec2, code):
    for event in (LAUNCH, TERMINATE):
        verdict = check_with(ec2, code, event=event)
        assert (verdict.ok, verdict.retry) == (False, True) and code in verdict.reason


@pytest.mark.parametrize(
    ("group", "ok"),
    [
        ("web-1", True),
        ("batch", True),
        ("web", False),
        ("WEB-1", False),
        ("db-web-1", False),
        (None, False),
    ],
)
def test_group_patterns_are_case_sensitive_globs(ec2, group, ok):
    tags = {"aws:autoscaling:groupName": group} if group else {}
    verdict = check_with(ec2, reply("running", tags), groups=("web-*", "batch"))
    assert verdict.ok is ok and not verdict.retry


def test_every_required_tag_must_match_exactly(ec2):
    required = (("role", "minion"), ("env", "prod"))
    assert check_with(
        ec2, reply("running", {"role": "minion", "env": "prod", "x": "y"}), tags=required
    ).ok
    verdict = check_with(ec2, reply("running", {"role": "minion", "env": "Prod"}), tags=required)
    assert not verdict.ok and "env=prod" in verdict.reason and "role" not in verdict.reason


@pytest.mark.parametrize(
    ("answer", "ok", "retry"),
    [
        # not found: honoured only after several receives (see the fail-closed tests below)
        ("InvalidInstanceID.NotFound", False, True),
        (reply("terminated"), True, False),
        (reply("shutting-down"), True, False),
        (reply("running"), False, True),
        (reply("stopped"), False, True),
    ],
)
def test_a_terminate_is_honoured_only_when_ec2_says_the_instance_is_gone(ec2, answer, ok, retry):
    # filters do not apply: the key of an instance that is gone can only serve an impostor
    verdict = check_with(
        ec2, answer, groups=("nothing-matches",), tags=(("a", "b"),), event=TERMINATE
    )
    assert (verdict.ok, verdict.retry) == (ok, retry)


# --- termination memory -------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_remembered_terminate_refuses_the_launch_until_retention_ends(tmp_path):
    clock = Clock(datetime.now(UTC).timestamp())
    memory = Terminations(tmp_path / "terminated", clock=clock)
    check = TerminationCheck(memory)
    assert check(LAUNCH).ok
    assert check(TERMINATE).ok
    assert check(LAUNCH).ok  # the check only looks: the decide stage remembers the terminate
    memory.remember(ID)
    refused = check(LAUNCH)
    assert (refused.ok, refused.retry) == (False, False) and "terminated" in refused.reason
    assert check(Event(Kind.LAUNCH, Source.SNS, instance_id="i-0000000000000000a")).ok
    clock.now += RETENTION_SECONDS + 3600
    assert check(LAUNCH).ok


def test_old_records_are_pruned_at_the_first_record_then_hourly(tmp_path):
    clock = Clock(datetime.now(UTC).timestamp())
    Terminations(tmp_path, clock=clock).remember(ID)
    expired = clock.now - RETENTION_SECONDS - 10
    os.utime(tmp_path / ID, (expired, expired))
    memory = Terminations(tmp_path, clock=clock)  # a new run
    memory.remember("i-0000000000000000a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i-0000000000000000a"]

    os.utime(tmp_path / "i-0000000000000000a", (expired, expired))
    memory.remember("i-0000000000000000b")  # pruned less than an hour ago: kept for now
    assert len(list(tmp_path.iterdir())) == 2
    clock.now += 3600
    memory.remember("i-0000000000000000c")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "i-0000000000000000b",
        "i-0000000000000000c",
    ]


def test_dry_run_remembers_nothing_and_unwritable_state_is_retried(tmp_path):
    dry = Terminations(tmp_path / "t", dry_run=True)
    dry.remember(ID)
    assert not (tmp_path / "t").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    memory = Terminations(blocker / "terminated")
    handler = Handler(KeyStage(UnusedKeys()), terminations=memory)
    body = json.dumps(notification("autoscaling:EC2_INSTANCE_TERMINATE", ID))
    decision = handler.handle(Message("m", "r", body))
    assert decision.action is Action.RETRY and "StateDir" in decision.reason


def test_records_are_named_only_by_instance_ids(tmp_path):
    with pytest.raises(ValueError):
        Terminations(tmp_path).remember("../../etc/passwd")


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (urllib.error.URLError("connection refused"), True),
        (TimeoutError("timed out"), True),
        (urllib.error.HTTPError("u", 503, "Service Unavailable", {}, None), True),  # type: ignore
        (urllib.error.HTTPError("u", 404, "Not Found", {}, None), False),  # type: ignore
        (ValueError("response larger than 65536 bytes"), False),
    ],
)
def test_an_unreachable_certificate_defers_and_a_missing_one_rejects(tmp_path, error, retry):
    identity = make_signing_identity(tmp_path / "elsewhere", "us-west-2")  # not in the cache

    def fetch(_url: str) -> bytes:
        raise error

    check = SourceCheck(SignatureVerifier(tmp_path / "cache", fetch=fetch))
    body = sign_envelope(envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID)), identity)
    verdict = check(parsed(body))
    assert (verdict.ok, verdict.retry) == (False, retry)
    assert "certificate fetch failed" in verdict.reason


# --- fail closed ----------------------------------------------------------------------------
def test_a_finished_sns_message_is_refused_as_a_replay(tmp_path):
    from aws_ork.checks.replay import ReplayCheck
    from aws_ork.memory import IdMemory

    finished = IdMemory(tmp_path / "finished", keep_seconds=3600, limit=10)
    check = ReplayCheck(finished)
    event = events.parse(
        json.dumps(envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID), TOPIC))
    )
    assert event.message_id and check(event).ok
    finished.add(event.message_id)
    verdict = check(event)
    assert (verdict.ok, verdict.retry) == (False, False) and "replay" in verdict.reason
    unsigned = events.parse(json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID)))
    assert check(unsigned).ok  # no MessageId to go by: the other checks decide


def test_freshness_reads_the_key_where_a_clustered_master_keeps_it(ec2, tmp_path):
    pending = tmp_path / "cluster" / "minions_pre" / ID
    pending.parent.mkdir(parents=True)
    pending.write_text("pub")
    old = datetime(2025, 1, 1, tzinfo=UTC).timestamp()  # before the instance's LaunchTime
    os.utime(pending, (old, old))
    location = KeyLocation.from_opts(
        {
            "pki_dir": str(tmp_path / "own"),
            "cluster_id": "c1",
            "cluster_pki_dir": str(tmp_path / "cluster"),
        }
    )
    client, stub = ec2
    stub.add_response("describe_instances", reply("running"), {"InstanceIds": [ID]})
    verdict = InstanceCheck(Ec2Lookup(client), location)(LAUNCH)
    assert (verdict.ok, verdict.stale_key) == (False, True)


def test_freshness_fails_closed_when_salt_keeps_no_key_files(ec2):
    location = KeyLocation.from_opts({"pki_dir": "/nonexistent", "keys.cache_driver": "mysql"})
    client, stub = ec2
    stub.add_response("describe_instances", reply("running"), {"InstanceIds": [ID]})
    verdict = InstanceCheck(Ec2Lookup(client), location)(LAUNCH)
    assert (verdict.ok, verdict.retry) == (False, False)
    assert "'mysql'" in verdict.reason and "no key is accepted" in verdict.reason


@pytest.mark.parametrize(("receives", "ok"), [(1, False), (4, False), (5, True)])
def test_a_terminate_for_an_unknown_instance_is_honoured_only_after_several_receives(
    ec2, receives, ok
):
    verdict = check_with(ec2, "InvalidInstanceID.NotFound", event=TERMINATE)
    assert (verdict.retry, verdict.then_ok, verdict.attempts) == (True, True, NOT_FOUND_ATTEMPTS)
    from aws_ork.keys.result import Outcome

    class Keys(UnusedKeys):
        deleted: list[str] = []

        def delete(self, minion_id: str, /) -> KeyResult:
            self.deleted.append(minion_id)
            return KeyResult(Outcome.ABSENT)

    keys = Keys()
    handler = Handler(KeyStage(keys), checks=[Said(verdict)])
    body = json.dumps(notification("autoscaling:EC2_INSTANCE_TERMINATE", ID))
    decision = handler.handle(Message("m", "r", body, receives))
    assert (keys.deleted == [ID]) is ok
    assert decision.action is (Action.DELETE if ok else Action.RETRY)


def test_any_error_while_handling_a_message_is_logged_and_retried(caplog):
    class Broken(UnusedKeys):
        def accept(self, minion_id: str, /, *, enrolled: bool = False) -> KeyResult:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    handler = Handler(KeyStage(Broken()))
    body = json.dumps(notification("autoscaling:EC2_INSTANCE_LAUNCH", ID))
    decision = handler.handle(Message("m", "r", body, 3))
    assert decision.action is Action.RETRY and decision.delay == 8
    assert "UnicodeDecodeError" in caplog.text and "Traceback" in caplog.text


# --- key binding --------------------------------------------------------------------------
FINGER = ":".join(["ab"] * 32)


def bound_check(ec2, tags):
    client, stub = ec2
    stub.add_response("describe_instances", reply("running", tags), {"InstanceIds": [ID]})
    return InstanceCheck(Ec2Lookup(client), NO_KEYS, binding_tag="salt:minion-fingerprint")(LAUNCH)


def test_binding_passes_the_published_fingerprint_to_the_key_stage(ec2):
    verdict = bound_check(ec2, {"salt:minion-fingerprint": FINGER.upper()})
    assert (verdict.ok, verdict.fingerprint) == (True, FINGER)


def test_binding_waits_for_the_tag_then_gives_up(ec2):
    from aws_ork.checks.ec2 import BINDING_TAG_ATTEMPTS

    verdict = bound_check(ec2, {})
    assert (verdict.ok, verdict.retry, verdict.attempts) == (False, True, BINDING_TAG_ATTEMPTS)
    assert "salt:minion-fingerprint" in verdict.reason


def test_binding_refuses_a_tag_that_is_no_fingerprint(ec2):
    verdict = bound_check(ec2, {"salt:minion-fingerprint": "pick me\n"})
    assert (verdict.ok, verdict.retry) == (False, False) and "'pick me\\n'" in verdict.reason
