"""Unit tests for aws_ork.events and aws_ork.base.ids: which key a message body would touch."""

from __future__ import annotations

import copy
import json
import logging
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aws_ork import defaults, events
from aws_ork.base import ids
from aws_ork.events import Event, Kind, Source
from tests.messages import FIXTURES, envelope, fixture, fixture_text, notification

#: Independent of aws_ork.base.ids: what may ever reach Salt as a minion id.
ID_PATTERN = re.compile(r"i-([0-9a-f]{8}|[0-9a-f]{17})")

LAUNCHED = "i-0a1b2c3d4e5f60718"
TERMINATED = "i-0fedcba9876543210"
TOPIC = "arn:aws:sns:us-west-2:123456789012:salt-master-asg-events"

#: fixture -> (kind, instance id, group, source)
EXPECTED: dict[str, tuple[Kind, str | None, str | None, Source]] = {
    "eventbridge-asg-launch-lifecycle-action": (
        Kind.LAUNCH,
        LAUNCHED,
        "web-asg",
        Source.EVENTBRIDGE,
    ),
    "eventbridge-asg-launch-successful": (Kind.LAUNCH, LAUNCHED, "web-asg", Source.EVENTBRIDGE),
    "eventbridge-asg-terminate-lifecycle-action": (
        Kind.TERMINATE,
        TERMINATED,
        "web-asg",
        Source.EVENTBRIDGE,
    ),
    "eventbridge-asg-terminate-successful": (
        Kind.TERMINATE,
        TERMINATED,
        "web-asg",
        Source.EVENTBRIDGE,
    ),
    "eventbridge-ec2-running": (Kind.LAUNCH, LAUNCHED, None, Source.EVENTBRIDGE),
    "eventbridge-ec2-shutting-down": (Kind.TERMINATE, TERMINATED, None, Source.EVENTBRIDGE),
    "eventbridge-ec2-terminated": (Kind.TERMINATE, TERMINATED, None, Source.EVENTBRIDGE),
    "hook-launching": (Kind.LAUNCH, LAUNCHED, "web-asg", Source.HOOK),
    "hook-terminating": (Kind.TERMINATE, TERMINATED, "web-asg", Source.HOOK),
    "hook-test-notification": (Kind.TEST, None, "web-asg", Source.HOOK),
    "raw-asg-launch": (Kind.LAUNCH, LAUNCHED, "web-asg", Source.RAW),
    "sns-asg-launch-error": (Kind.LAUNCH_ERROR, LAUNCHED, "web-asg", Source.SNS),
    "sns-asg-launch": (Kind.LAUNCH, LAUNCHED, "web-asg", Source.SNS),
    "sns-asg-terminate": (Kind.TERMINATE, TERMINATED, "web-asg", Source.SNS),
    "sns-asg-test-notification": (Kind.TEST, None, "web-asg", Source.SNS),
    "sns-hook-launching": (Kind.LAUNCH, LAUNCHED, "web-asg", Source.SNS),
}


def check_invariants(event: object) -> None:
    """What the handler relies on, whatever the body was."""
    assert isinstance(event, Event)
    assert event.instance_id is None or ID_PATTERN.fullmatch(event.instance_id)
    if event.kind in (Kind.LAUNCH, Kind.TERMINATE):
        assert event.instance_id is not None  # the handler asserts this before touching a key
    if event.kind is Kind.UNKNOWN:
        assert event.instance_id is None
        assert event.reason


def assert_no_crash(event: Event) -> None:
    """The invariants hold and the parser itself did not fail: :func:`events.parse` turns any
    exception into UNKNOWN "unparseable body (ExcType)", which must never be the answer."""
    check_invariants(event)
    assert not event.reason.startswith("unparseable body"), event.reason


def assert_ignored(event: Event) -> None:
    """Nothing would be touched, and the log line says why (not the parser's safety net)."""
    assert_no_crash(event)
    assert event.kind is Kind.UNKNOWN
    assert event.instance_id is None
    assert event.reason.strip()


# --- the fixtures ---


def test_every_fixture_has_an_expectation() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize(("name", "expected"), EXPECTED.items())
def test_fixture_parses(name: str, expected: tuple) -> None:
    event = events.parse(fixture_text(name))
    check_invariants(event)
    assert (event.kind, event.instance_id, event.group, event.source) == expected
    assert event.source.value == name.split("-")[0]
    assert event.reason == ""


@pytest.mark.parametrize("name", [n for n in EXPECTED if n.startswith("sns-")])
def test_sns_event_keeps_topic_and_envelope_for_the_trust_checks(name: str) -> None:
    event = events.parse(fixture_text(name))
    assert event.topic_arn == TOPIC
    assert event.envelope == fixture(name)


@pytest.mark.parametrize(
    "name",
    [
        "hook-launching",
        "hook-terminating",
        "sns-hook-launching",
        "eventbridge-asg-launch-lifecycle-action",
        "eventbridge-asg-terminate-lifecycle-action",
    ],
)
def test_lifecycle_hook_and_token_are_kept(name: str) -> None:
    body = fixture(name)
    if "Message" in body:
        body = json.loads(body["Message"])
    body = body.get("detail", body)
    event = events.parse(fixture_text(name))
    assert event.lifecycle_hook == body["LifecycleHookName"] == "salt-key-hook"
    assert event.lifecycle_token == body["LifecycleActionToken"]


@pytest.mark.parametrize("state", ["stopping", "stopped", "rebooting", "", None, 5])
def test_ec2_states_that_need_no_key_change(state: Any) -> None:
    body = fixture("eventbridge-ec2-running")
    body["detail"]["state"] = state
    assert_ignored(events.parse(json.dumps(body)))


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_sns_confirmations_touch_no_key(kind: str) -> None:
    body = fixture("sns-asg-launch")
    body["Type"] = kind
    event = events.parse(json.dumps(body))
    assert_ignored(event)
    assert event.source is Source.SNS


# --- broken bodies ---


def sns_with_message(message: Any) -> str:
    body = fixture("sns-asg-launch")
    body["Message"] = message
    return json.dumps(body)


def sns_inner(**changes: Any) -> str:
    """The SNS launch fixture with fields of its inner notification changed (None deletes)."""
    body = fixture("sns-asg-launch")
    inner = json.loads(body["Message"])
    for key, value in changes.items():
        inner.pop(key, None) if value is None else inner.__setitem__(key, value)
    body["Message"] = json.dumps(inner)
    return json.dumps(body)


_no_message = fixture("sns-asg-launch")
del _no_message["Message"]

BROKEN_BODIES = {
    "not JSON": "Event: autoscaling:EC2_INSTANCE_LAUNCH",
    "truncated JSON": fixture_text("sns-asg-launch")[:200],
    "empty": "",
    "JSON list": json.dumps([fixture("sns-asg-launch")]),
    "JSON number": "42",
    "JSON string": json.dumps(fixture_text("sns-asg-launch")),
    "JSON null": "null",
    "JSON true": "true",
    "empty object": "{}",
    "envelope without Message": json.dumps(_no_message),
    "Message not JSON": sns_with_message("autoscaling:EC2_INSTANCE_LAUNCH i-0123abcd"),
    "Message a JSON list": sns_with_message(
        json.dumps([json.loads(fixture("sns-asg-launch")["Message"])])
    ),
    "Message a JSON null": sns_with_message("null"),
    "Message a dict": sns_with_message(json.loads(fixture("sns-asg-launch")["Message"])),
    "Message an int": sns_with_message(1),
    "Event missing": sns_inner(Event=None),
    "Event an int": sns_inner(Event=1),
    "Event a list": sns_inner(Event=["autoscaling:EC2_INSTANCE_LAUNCH"]),
    "Event a dict": sns_inner(Event={"autoscaling:EC2_INSTANCE_LAUNCH": True}),
    "Event unhandled": sns_inner(Event="autoscaling:EC2_INSTANCE_REBOOT"),
    "Event lower-case": sns_inner(Event="autoscaling:ec2_instance_launch"),
    "EventBridge without detail": json.dumps(
        {**fixture("eventbridge-asg-launch-successful"), "detail": "i-0a1b2c3d4e5f60718"}
    ),
    "EventBridge other source": json.dumps(
        {**fixture("eventbridge-asg-launch-successful"), "source": "aws.s3"}
    ),
}


@pytest.mark.parametrize("body", BROKEN_BODIES.values(), ids=BROKEN_BODIES.keys())
def test_broken_body_touches_no_key(body: str) -> None:
    assert_ignored(events.parse(body))


#: EC2InstanceId values that must never reach Salt (0.4.5 used them as globs).
BAD_IDS = {
    "missing": None,
    "int": 1234567890,
    "list": [LAUNCHED],
    "dict": {"id": LAUNCHED},
    "empty": "",
    "star": "*",
    "i-star": "i-*",
    "question marks": "i-????????",
    "char class": "i-[0-9a-f]*",
    "dotdot": "../x",
    "traversal": "i-123/../../etc",
    "trailing newline": "i-0123456789abcdef0\n",
    "leading space": " i-0123456789abcdef0",
    "trailing space": "i-0123456789abcdef0 ",
    "upper-case hex": "i-0123456789ABCDEF0",
    "upper-case prefix": "I-0123456789abcdef0",
    "9 hex digits": "i-0123abcde",
    "16 hex digits": "i-0123456789abcdef",
    "18 hex digits": "i-0123456789abcdef01",
    "not hex": "i-0123456789abcdefg",
    "no prefix": "0123456789abcdef0",
    "two ids": f"{LAUNCHED},{TERMINATED}",
    "unicode digits": "i-٠١٢٣٤٥٦٧",
    "NUL": "i-0123abcd\x00",
}

#: Every place an instance id is read from: fixture, (path to the id's parent object).
CARRIERS = {
    "sns launch": ("sns-asg-launch", "Message", "EC2InstanceId"),
    "sns terminate": ("sns-asg-terminate", "Message", "EC2InstanceId"),
    "sns hook": ("sns-hook-launching", "Message", "EC2InstanceId"),
    "raw launch": ("raw-asg-launch", None, "EC2InstanceId"),
    "hook terminating": ("hook-terminating", None, "EC2InstanceId"),
    "eventbridge asg": ("eventbridge-asg-terminate-successful", "detail", "EC2InstanceId"),
    "eventbridge ec2": ("eventbridge-ec2-terminated", "detail", "instance-id"),
}


def with_instance_id(carrier: str, value: Any, delete: bool = False) -> str:
    name, container, key = CARRIERS[carrier]
    body = fixture(name)
    if container == "Message":
        inner = json.loads(body["Message"])
        inner.pop(key) if delete else inner.__setitem__(key, value)
        body["Message"] = json.dumps(inner)
    else:
        target = body[container] if container else body
        target.pop(key) if delete else target.__setitem__(key, value)
    return json.dumps(body)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("bad", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_instance_id_touches_no_key(carrier: str, bad: Any) -> None:
    event = events.parse(with_instance_id(carrier, bad, delete=bad is None))
    assert_ignored(event)


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("good", ["i-0123abcd", "i-0123456789abcdef0"])
def test_good_instance_id_is_passed_through(carrier: str, good: str) -> None:
    event = events.parse(with_instance_id(carrier, good))
    check_invariants(event)
    assert event.kind in (Kind.LAUNCH, Kind.TERMINATE)
    assert event.instance_id == good


def test_test_notification_needs_no_instance_id_and_ignores_a_bad_one() -> None:
    body = fixture("sns-asg-test-notification")
    inner = json.loads(body["Message"])
    inner["EC2InstanceId"] = "*"
    body["Message"] = json.dumps(inner)
    event = events.parse(json.dumps(body))
    assert event.kind is Kind.TEST
    assert event.instance_id is None


def padded(size: int) -> str:
    """The SNS launch fixture padded with JSON whitespace to exactly ``size`` characters."""
    body = fixture_text("sns-asg-launch").strip()
    return body + " " * (size - len(body))


def test_body_of_the_largest_size_sqs_allows_is_parsed() -> None:
    body = padded(defaults.MAX_BODY_BYTES)
    assert len(body) == 256 * 1024
    assert events.parse(body).instance_id == LAUNCHED


def test_body_larger_than_sqs_allows_touches_no_key() -> None:
    body = padded(256 * 1024 + 1)
    assert json.loads(body)  # valid JSON: only its size is wrong
    assert_ignored(events.parse(body))


@pytest.mark.parametrize(
    "body",
    [fixture_text("sns-asg-launch").encode(), None, 42, fixture("sns-asg-launch")],
    ids=["bytes", "None", "int", "dict"],
)
def test_body_that_is_not_text_touches_no_key(body: object) -> None:
    assert_ignored(events.parse(body))


def test_deeply_nested_json_touches_no_key() -> None:
    event = events.parse("[" * 100_000 + "]" * 100_000)
    check_invariants(event)
    assert event.kind is Kind.UNKNOWN and event.reason == "body is JSON nested too deeply"
    inner = events.parse(
        json.dumps(
            {"Type": "Notification", "TopicArn": "t", "Message": "[" * 100_000 + "]" * 100_000}
        )
    )
    assert inner.reason == "SNS Message is JSON nested too deeply"


def test_long_hostile_id_is_shortened_in_the_reason() -> None:
    event = events.parse(with_instance_id("raw launch", "*" * 10_000))
    assert_ignored(event)
    assert len(event.reason) < 200


def test_parser_bug_becomes_unknown_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(doc: object) -> Event:
        raise KeyError("bug")

    monkeypatch.setattr(events.sns, "parse", broken)
    event = events.parse(fixture_text("sns-asg-launch"))
    check_invariants(event)
    assert event.kind is Kind.UNKNOWN
    assert "KeyError" in event.reason
    # the prefix the properties take for a crash (assert_no_crash)
    assert event.reason.startswith("unparseable body"), event.reason


# --- ids ---


@pytest.mark.parametrize(
    "value",
    [
        "i-0123abcd",
        "i-0123456789abcdef0",
        "i-00000000",
        "i-fffffffffffffffff",
        LAUNCHED,
        TERMINATED,
    ],
)
def test_is_instance_id_accepts(value: str) -> None:
    assert ids.is_instance_id(value)


@pytest.mark.parametrize(
    "value",
    [*BAD_IDS.values()] + [b"i-0123abcd", ("i-0123abcd",), "i-", "i-0123abc"],
    ids=[*BAD_IDS.keys(), "bytes", "tuple", "bare prefix", "7 hex digits"],
)
def test_is_instance_id_rejects(value: object) -> None:
    assert not ids.is_instance_id(value)


# --- properties ---

JSON_KEYS = [
    "Type",
    "TopicArn",
    "Message",
    "Event",
    "LifecycleTransition",
    "EC2InstanceId",
    "AutoScalingGroupName",
    "LifecycleHookName",
    "LifecycleActionToken",
    "source",
    "detail-type",
    "detail",
    "instance-id",
    "state",
]
JSON_STRINGS = [
    "Notification",
    "SubscriptionConfirmation",
    TOPIC,
    "aws.autoscaling",
    "aws.ec2",
    "EC2 Instance State-change Notification",
    "running",
    "terminated",
    "EC2 Instance Launch Successful",
    "EC2 Instance Terminate Successful",
    "autoscaling:EC2_INSTANCE_LAUNCH",
    "autoscaling:EC2_INSTANCE_TERMINATE",
    "autoscaling:EC2_INSTANCE_LAUNCHING",
    "autoscaling:TEST_NOTIFICATION",
    "i-0123abcd",
    LAUNCHED,
    "*",
    "i-*",
    LAUNCHED + "\n",
    "../x",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(JSON_STRINGS)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(JSON_KEYS) | st.text(), children, max_size=6)
        | children.map(json.dumps)
    ),  # JSON in a string, like SNS's Message
    max_leaves=20,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text())
def test_any_text_parses_safely(body: str) -> None:
    assert_no_crash(events.parse(body))


@PROPERTY
@given(json_values)
def test_any_json_parses_safely(value: Any) -> None:
    assert_no_crash(events.parse(json.dumps(value)))


def mutation_targets(body: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(container, key) pairs that can be replaced: top level, SNS Message, EventBridge detail."""
    targets: list[tuple[str | None, str]] = [(None, key) for key in [*body, *JSON_KEYS]]
    if "Message" in body:
        targets += [("Message", key) for key in [*json.loads(body["Message"]), *JSON_KEYS]]
    if "detail" in body:
        targets += [("detail", key) for key in [*body["detail"], *JSON_KEYS]]
    return targets


@PROPERTY
@given(st.sampled_from(sorted(EXPECTED)), st.data())
def test_fixture_with_fields_replaced_parses_safely(name: str, data: st.DataObject) -> None:
    original = fixture(name)
    body = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3), label="replacements")):
        container, key = data.draw(st.sampled_from(mutation_targets(original)), label="field")
        new = data.draw(json_values, label="value")
        if container == "Message" and isinstance(body.get("Message"), str):
            try:
                inner = json.loads(body["Message"])
            except ValueError:
                continue
            if isinstance(inner, dict):
                inner[key] = new
                body["Message"] = json.dumps(inner)
        elif container == "detail" and isinstance(body.get("detail"), dict):
            body["detail"][key] = new
        elif container is None:
            body[key] = new
    serialised = json.dumps(body)
    event = events.parse(serialised)
    assert_no_crash(event)
    if event.instance_id is not None:  # never an id the message did not carry
        assert event.instance_id in serialised


# --- log lines: a message cannot forge or flood them ------------------------------------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@settings(max_examples=300, deadline=None)
@given(
    group=st.text(max_size=3000),
    name=st.text(max_size=3000),
    state=st.text(max_size=300),
    kind=st.sampled_from(["sns", "raw", "bridge", "ec2"]),
)
def test_no_value_from_a_message_reaches_a_log_line_unescaped_or_unbounded(
    group, name, state, kind
):
    from aws_ork.checks import Verdict
    from aws_ork.decide import Handler
    from aws_ork.keys.stage import KeyStage
    from aws_ork.sqs.queue import Message
    from tests.fakechecks import Said
    from tests.fakekeys import UnusedKeys

    inner = notification("autoscaling:EC2_INSTANCE_LAUNCH", "i-0123456789abcdef0", group)
    if kind == "sns":
        doc = envelope(inner)
        doc["TopicArn"] = name
    elif kind == "raw":
        inner["Event"] = name
        doc = inner
    elif kind == "bridge":
        doc = fixture("eventbridge-asg-launch-successful")
        doc["detail-type"], doc["detail"]["AutoScalingGroupName"] = name, group
    else:
        doc = fixture("eventbridge-ec2-running")
        doc["detail"]["state"] = state
    records = _Records()
    logger = logging.getLogger("aws_ork")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        handler = Handler(KeyStage(UnusedKeys()), checks=[Said(Verdict(False, "refused"))])
        handler.handle(Message("m-1", "r", json.dumps(doc)))
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    assert records.lines
    for line in records.lines:
        assert line.isprintable(), repr(line)  # no newline, CR, escape or other control
        assert len(line) < 1000, len(line)
