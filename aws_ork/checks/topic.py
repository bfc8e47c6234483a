"""AllowedTopicArns: an SNS envelope from another topic is rejected before anything else.

Any AWS account can publish to a topic of its own and capture the envelope AWS signed for
it: a valid signature proves only that *some* topic sent the message. The topic allow-list
is what ties a signed envelope to our Auto Scaling groups.
"""

from __future__ import annotations

from collections.abc import Collection

from aws_ork.base.text import shorten
from aws_ork.checks.verdict import Verdict
from aws_ork.events import Event, Source


class TopicCheck:
    """Only envelopes from these topics (exact ARNs) pass.

    Bodies that are no SNS envelope carry no topic; the source check decides about them."""

    #: the reason code of its failures in the metrics (a fixed word, never message text)
    code = "topic"

    def __init__(self, allowed: Collection[str]) -> None:
        self.allowed = frozenset(allowed)

    def __call__(self, event: Event) -> Verdict:
        if event.source is not Source.SNS:
            return Verdict.passed()
        if event.topic_arn in self.allowed:
            return Verdict.passed()
        return Verdict.refused(f"topic {shorten(event.topic_arn, 120)} is not in AllowedTopicArns")
