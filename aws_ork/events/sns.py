"""SNS envelopes, as an SQS subscription delivers them with raw delivery off::

    {"Type": "Notification", "MessageId": "...", "TopicArn": "arn:aws:sns:...",
     "Subject": "...", "Message": "<the notification, as a JSON string>",
     "Timestamp": "...", "SignatureVersion": "1", "Signature": "...",
     "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-....pem"}

The envelope is kept on the event so the signature can be checked against exactly what AWS
signed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_ork.events import autoscaling, fields
from aws_ork.events.model import Event, Source, unknown

SOURCE = Source.SNS
ENVELOPE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")


def is_envelope(doc: Mapping[str, Any]) -> bool:
    """Does this object look like an SNS envelope?"""
    return doc.get("Type") in ENVELOPE_TYPES and "TopicArn" in doc


def parse(doc: Mapping[str, Any]) -> Event:
    """Unwrap the envelope and parse the notification inside it."""
    context: dict[str, Any] = {
        "topic_arn": fields.text(doc, "TopicArn"),
        "envelope": doc,
        "message_id": fields.text(doc, "MessageId"),
    }
    if doc.get("Type") != "Notification":
        return unknown(f"SNS {doc.get('Type')} (not a notification)", SOURCE, **context)
    message = fields.text(doc, "Message")
    if message is None:
        return unknown("SNS Message is missing or not a string", SOURCE, **context)
    try:
        inner = json.loads(message)
    except ValueError:
        return unknown("SNS Message is not JSON", SOURCE, **context)
    except RecursionError:
        return unknown("SNS Message is JSON nested too deeply", SOURCE, **context)
    if not isinstance(inner, dict):
        return unknown(
            f"SNS Message is a JSON {type(inner).__name__}, not an object", SOURCE, **context
        )
    if not autoscaling.is_autoscaling(inner):
        return unknown("SNS Message is no Auto Scaling notification", SOURCE, **context)
    return autoscaling.parse(inner, SOURCE, **context)
