"""Auto Scaling notifications and lifecycle-hook messages.

Notification (via SNS, or the SNS raw delivery body)::

    {"Event": "autoscaling:EC2_INSTANCE_LAUNCH", "EC2InstanceId": "i-0a1b2c3d4e5f60718",
     "AutoScalingGroupName": "web-asg", "StatusCode": "InProgress", ...}

Lifecycle hook (via SNS, or with the queue as the hook's notification target)::

    {"LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
     "EC2InstanceId": "i-0a1b2c3d4e5f60718", "AutoScalingGroupName": "web-asg",
     "LifecycleHookName": "salt-key-hook", "LifecycleActionToken": "...", ...}

A hook's test message carries ``"Event": "autoscaling:TEST_NOTIFICATION"`` like a notification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_ork.base.text import shorten
from aws_ork.events import fields
from aws_ork.events.model import Event, Kind, Source, unknown

NOTIFICATIONS: dict[str, Kind] = {
    "autoscaling:EC2_INSTANCE_LAUNCH": Kind.LAUNCH,
    "autoscaling:EC2_INSTANCE_LAUNCH_ERROR": Kind.LAUNCH_ERROR,
    "autoscaling:EC2_INSTANCE_TERMINATE": Kind.TERMINATE,
    "autoscaling:TEST_NOTIFICATION": Kind.TEST,
}

TRANSITIONS: dict[str, Kind] = {
    "autoscaling:EC2_INSTANCE_LAUNCHING": Kind.LAUNCH,
    "autoscaling:EC2_INSTANCE_TERMINATING": Kind.TERMINATE,
}


def is_autoscaling(doc: Mapping[str, Any]) -> bool:
    """Does this object look like an Auto Scaling notification or hook message?"""
    return "Event" in doc or "LifecycleTransition" in doc


def parse(doc: Mapping[str, Any], source: Source, **context: Any) -> Event:
    """Turn a notification or hook message into an Event (UNKNOWN when it is neither)."""
    group = fields.text(doc, "AutoScalingGroupName")
    name = fields.text(doc, "Event") or fields.text(doc, "LifecycleTransition")
    if name is None:
        return unknown("Event/LifecycleTransition is not a string", source, **context)
    kind = NOTIFICATIONS.get(name) or TRANSITIONS.get(name)
    if kind is None:
        return unknown(f"unhandled {shorten(name)}", source, name=name, **context)
    if kind is Kind.TEST:
        return Event(kind, source, group=group, name=name, **context)
    return instance_event(kind, source, doc, name, **context)


def instance_event(
    kind: Kind, source: Source, doc: Mapping[str, Any], name: str, **context: Any
) -> Event:
    """The Event for an Auto Scaling object about one instance (a notification, a hook
    message, or the ``detail`` of an EventBridge event: they share these field names)."""
    group = fields.text(doc, "AutoScalingGroupName")
    instance_id, problem = fields.instance_id(doc, "EC2InstanceId")
    if instance_id is None:
        return unknown(problem, source, name=name, group=group, **context)
    return Event(
        kind,
        source,
        instance_id=instance_id,
        group=group,
        name=name,
        lifecycle_hook=fields.text(doc, "LifecycleHookName"),
        lifecycle_token=fields.text(doc, "LifecycleActionToken"),
        **context,
    )
