"""VerifySignatures and UnsignedSources: is the message from AWS at all?

An SNS envelope must carry a valid AWS signature (:mod:`aws_ork.checks.signature`); a body
with no signature at all (SNS raw delivery, a lifecycle hook or an EventBridge rule sending to
the queue directly) passes only when its source is named in UnsignedSources: the queue policy
is then the only gate.
"""

from __future__ import annotations

from collections.abc import Collection

from aws_ork.checks.signature import SignatureVerifier
from aws_ork.checks.verdict import Verdict
from aws_ork.events import Event, Source


class SourceCheck:
    """SNS envelopes need a valid signature; unsigned sources must be enabled.

    ``unsigned`` holds the UnsignedSources names (``raw``, ``hook``, ``eventbridge``)."""

    #: the reason code of its failures in the metrics (a fixed word, never message text)
    code = "signature"

    def __init__(self, verifier: SignatureVerifier, unsigned: Collection[str] = ()) -> None:
        self.verifier = verifier
        self.unsigned = frozenset(unsigned)

    def __call__(self, event: Event) -> Verdict:
        if event.source is Source.SNS:
            if event.envelope is None:  # the SNS parser always keeps it; never trust a gap
                return Verdict.refused("SNS message without its envelope: cannot verify")
            result = self.verifier.verify(event.envelope)
            if result.ok:
                return Verdict.passed()
            if result.retry:  # the certificate is unreachable for now: not a forgery (yet)
                return Verdict.deferred(f"SNS signature not verifiable yet: {result.reason}")
            return Verdict.refused(f"SNS signature invalid: {result.reason}")
        if event.source.value in self.unsigned:
            return Verdict.passed()
        return Verdict.refused(
            f"unsigned {event.source.value} message: VerifySignatures is on "
            f"and UnsignedSources does not name {event.source.value!r}",
        )
