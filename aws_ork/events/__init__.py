"""Parse SQS message bodies into :class:`Event`.

Every body is untrusted. :func:`parse` never raises: whatever arrives becomes an Event, and
anything that is no instance event becomes ``Kind.UNKNOWN`` with the reason in one line.
"""

from __future__ import annotations

import json
import logging

from aws_ork import defaults
from aws_ork.events import autoscaling, eventbridge, sns
from aws_ork.events.model import Event, Kind, Source, unknown

__all__ = ["Event", "Kind", "Source", "parse"]

log = logging.getLogger(__name__)


def parse(body: object) -> Event:
    """The event in an SQS message body; UNKNOWN (with a reason) for anything else."""
    try:
        return _parse(body)
    except Exception as exc:  # a parser bug must not stop key management for the fleet
        log.debug("parser failed", exc_info=True)
        return unknown(f"unparseable body ({type(exc).__name__})")


def _parse(body: object) -> Event:
    if not isinstance(body, str):
        return unknown("body is not text")
    if len(body) > defaults.MAX_BODY_BYTES:
        return unknown(f"body of {len(body)} characters is larger than SQS allows")
    try:
        doc = json.loads(body)
    except ValueError:
        return unknown("body is not JSON")
    except RecursionError:  # JSON nested thousands deep: no AWS message looks like that
        return unknown("body is JSON nested too deeply")
    if not isinstance(doc, dict):
        return unknown(f"body is a JSON {type(doc).__name__}, not an object")
    if sns.is_envelope(doc):
        return sns.parse(doc)
    if eventbridge.is_eventbridge(doc):
        return eventbridge.parse(doc)
    if autoscaling.is_autoscaling(doc):
        source = (
            Source.HOOK
            if "LifecycleTransition" in doc or "LifecycleHookName" in doc
            else Source.RAW
        )
        return autoscaling.parse(doc, source)
    return unknown("body is no SNS, Auto Scaling or EventBridge message")
