"""EventBridge events with the queue as the rule's target.

Auto Scaling::

    {"source": "aws.autoscaling", "detail-type": "EC2 Instance Launch Successful",
     "detail": {"EC2InstanceId": "i-0a1b2c3d4e5f60718", "AutoScalingGroupName": "web-asg"}}

EC2 state change (any instance of the account, no group)::

    {"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
     "detail": {"instance-id": "i-0a1b2c3d4e5f60718", "state": "running"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_ork.base.text import shorten
from aws_ork.events import autoscaling, fields
from aws_ork.events.model import Event, Kind, Source, unknown

AUTOSCALING: dict[str, Kind] = {
    "EC2 Instance-launch Lifecycle Action": Kind.LAUNCH,
    "EC2 Instance Launch Successful": Kind.LAUNCH,
    "EC2 Instance Launch Unsuccessful": Kind.LAUNCH_ERROR,
    "EC2 Instance-terminate Lifecycle Action": Kind.TERMINATE,
    "EC2 Instance Terminate Successful": Kind.TERMINATE,
}

#: EC2 states that mean "its minion may be coming" and "its key must go". ``stopping`` and
#: ``stopped`` are neither: a stopped instance keeps its disk and its minion key.
EC2_STATES: dict[str, Kind] = {
    "pending": Kind.LAUNCH,
    "running": Kind.LAUNCH,
    "shutting-down": Kind.TERMINATE,
    "terminated": Kind.TERMINATE,
}

SOURCE = Source.EVENTBRIDGE


def is_eventbridge(doc: Mapping[str, Any]) -> bool:
    """Does this object look like an EventBridge event?"""
    return "detail-type" in doc and "source" in doc


def parse(doc: Mapping[str, Any]) -> Event:
    """Turn an EventBridge event into an Event (UNKNOWN for any other kind of event)."""
    origin = fields.text(doc, "source")
    name = fields.text(doc, "detail-type")
    detail = fields.mapping(doc, "detail")
    if name is None or detail is None:
        return unknown("EventBridge event without detail-type or detail", SOURCE)
    if origin == "aws.autoscaling" and name in AUTOSCALING:
        return autoscaling.instance_event(AUTOSCALING[name], SOURCE, detail, name)
    if origin == "aws.ec2" and name == "EC2 Instance State-change Notification":
        state = fields.text(detail, "state")
        kind = EC2_STATES.get(state or "")
        instance_id, problem = fields.instance_id(detail, "instance-id")
        label = f"{name}: {state}"
        if kind is None:
            return unknown(f"EC2 state {shorten(state)} needs no key change", SOURCE, name=label)
        if instance_id is None:
            return unknown(problem, SOURCE, name=label)
        return Event(kind, SOURCE, instance_id=instance_id, name=label)
    return unknown(f"unhandled EventBridge {shorten(origin)} {shorten(name)}", SOURCE, name=name)
