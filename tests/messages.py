"""Message bodies for tests, made from the fixtures in tests/fixtures/messages/."""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "messages"


def new_id() -> str:
    """A fresh, well-formed 17-digit instance id: tests sharing a master never collide."""
    return "i-" + secrets.token_hex(9)[:17]


def fixture_text(name: str) -> str:
    """The body of one fixture file, as AWS would deliver it."""
    return (FIXTURES / f"{name}.json").read_text()


def fixture(name: str) -> dict[str, Any]:
    return json.loads(fixture_text(name))


def notification(event: str, instance_id: Any, group: str = "web-asg") -> dict[str, Any]:
    """An Auto Scaling notification (what SNS carries in Message, or a raw-delivery body)."""
    inner = fixture("raw-asg-launch")
    inner.update(
        {
            "Event": event,
            "EC2InstanceId": instance_id,
            "AutoScalingGroupName": group,
            "Description": f"{event} {instance_id}",
        }
    )
    return inner


def sns_timestamp(when: datetime | None = None) -> str:
    """A Timestamp as SNS writes it (``2026-11-23T10:15:30.123Z``), now by default."""
    when = when or datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def envelope(inner: dict[str, Any], topic_arn: str | None = None) -> dict[str, Any]:
    """An SNS envelope around ``inner`` (unsigned: the fixture's placeholder signature), with
    a MessageId of its own and the Timestamp of now, as SNS gives each notification."""
    outer = fixture("sns-asg-launch")
    outer["Message"] = json.dumps(inner)
    outer["MessageId"] = str(uuid.uuid4())
    outer["Timestamp"] = sns_timestamp()
    if topic_arn:
        outer["TopicArn"] = topic_arn
    return outer


def sns_launch(instance_id: Any, group: str = "web-asg") -> str:
    return json.dumps(envelope(notification("autoscaling:EC2_INSTANCE_LAUNCH", instance_id, group)))


def sns_terminate(instance_id: Any, group: str = "web-asg") -> str:
    return json.dumps(
        envelope(notification("autoscaling:EC2_INSTANCE_TERMINATE", instance_id, group))
    )
