"""The one event type every message family is parsed into."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_ork.base.text import clean


class Kind(enum.Enum):
    """What the message asks of us."""

    LAUNCH = "launch"
    TERMINATE = "terminate"
    TEST = "test"
    LAUNCH_ERROR = "launch_error"
    UNKNOWN = "unknown"


class Source(enum.Enum):
    """How the message reached the queue; decides which trust checks apply."""

    SNS = "sns"  # SNS envelope, signed by AWS
    RAW = "raw"  # SNS raw delivery: the notification itself, unsigned
    HOOK = "hook"  # lifecycle hook targeting the queue directly, unsigned
    EVENTBRIDGE = "eventbridge"  # EventBridge rule targeting the queue, unsigned
    NONE = "none"  # could not tell


@dataclass(frozen=True)
class Event:
    """A parsed message. ``instance_id`` is set only when it is a well-formed instance id."""

    kind: Kind
    source: Source
    instance_id: str | None = None
    group: str | None = None
    name: str = ""  # AWS's own name for it, e.g. autoscaling:EC2_INSTANCE_LAUNCH
    reason: str = ""  # for UNKNOWN: why it is not an event we act on
    topic_arn: str | None = None
    message_id: str | None = None  # SNS's MessageId inside the (signed) envelope
    lifecycle_hook: str | None = None
    lifecycle_token: str | None = None
    envelope: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        """One log fragment: kind, id, group, source."""
        parts = [self.kind.value]
        if self.instance_id:
            parts.append(self.instance_id)
        if self.group:
            parts.append(f"group={clean(self.group)}")  # any text: escaped, bounded
        parts.append(f"via={self.source.value}")
        if self.reason:
            parts.append(f"({self.reason})")
        return " ".join(parts)


def unknown(reason: str, source: Source = Source.NONE, **kwargs: Any) -> Event:
    """An event we do not act on, with the reason for the log line."""
    return Event(Kind.UNKNOWN, source, reason=reason, **kwargs)
