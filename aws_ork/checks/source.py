"""Who may get a key accepted: the topic and signature/source checks, and their wiring.

Threat: anyone allowed to send to the queue could forge "instance i-X launched" and get the key
of a minion they control accepted. The checks run in this order, each a
:data:`aws_ork.handler.Check` returning a :class:`~aws_ork.handler.Verdict`:

1. :class:`TopicCheck` (AllowedTopicArns): an SNS envelope from another topic is rejected
   before anything else, signature included.
2. :class:`SourceCheck` (VerifySignatures, UnsignedSources): an SNS envelope must carry a valid
   AWS signature; a body with no signature at all (SNS raw delivery, a lifecycle hook or an
   EventBridge rule sending to the queue directly) passes only when its source is named in
   UnsignedSources: the queue policy is then the only gate.
3. :class:`aws_ork.instances.InstanceCheck` (VerifyInstances, AutoScalingGroups, InstanceTags):
   EC2 must confirm the instance, and the pending key must be younger than it.
   Without VerifyInstances, :class:`aws_ork.terminations.TerminationCheck` keeps a terminate
   that arrives before its launch from being undone by that launch.

The checks apply to launches and terminates alike: a forged terminate would delete a live
minion's key (see :mod:`aws_ork.instances` for what EC2 must say about a terminate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from aws_ork.checks.signature import SignatureVerifier
from aws_ork.config import Config
from aws_ork.decide import Check, Verdict
from aws_ork.events import Event, Source
from aws_ork.keys.manager import KeyManager

log = logging.getLogger(__name__)


class TopicCheck:
    """AllowedTopicArns: only envelopes from these topics (exact ARNs) pass.

    Bodies that are no SNS envelope carry no topic; the source check decides about them."""

    def __init__(self, allowed: Collection[str]) -> None:
        self.allowed = frozenset(allowed)

    def __call__(self, event: Event) -> Verdict:
        if event.source is not Source.SNS:
            return Verdict(True)
        if event.topic_arn in self.allowed:
            return Verdict(True)
        return Verdict(False, f"topic {event.topic_arn!r} is not in AllowedTopicArns")


class SourceCheck:
    """VerifySignatures: SNS envelopes need a valid signature; unsigned sources must be enabled.

    ``unsigned`` holds the UnsignedSources names (``raw``, ``hook``, ``eventbridge``)."""

    def __init__(self, verifier: SignatureVerifier, unsigned: Collection[str] = ()) -> None:
        self.verifier = verifier
        self.unsigned = frozenset(unsigned)

    def __call__(self, event: Event) -> Verdict:
        if event.source is Source.SNS:
            if event.envelope is None:  # the SNS parser always keeps it; never trust a gap
                return Verdict(False, "SNS message without its envelope: cannot verify")
            result = self.verifier.verify(event.envelope)
            if result.ok:
                return Verdict(True)
            if result.retry:  # the certificate is unreachable for now: not a forgery (yet)
                return Verdict(False, f"SNS signature not verifiable yet: {result.reason}",
                               retry=True)
            return Verdict(False, f"SNS signature invalid: {result.reason}")
        if event.source.value in self.unsigned:
            return Verdict(True)
        return Verdict(False, f"unsigned {event.source.value} message: VerifySignatures is on "
                              f"and UnsignedSources does not name {event.source.value!r}")


def build_checks(cfg: Config, *, keys: Callable[[], KeyManager], ec2: Any = None,
                 dry_run: bool = False) -> Sequence[Check]:
    """The checks the config asks for, in order: topic, signature/source, instance.

    ``keys`` returns the current key manager (SIGHUP replaces it); ``ec2`` is an EC2 client,
    needed with VerifyInstances."""
    from aws_ork.checks.ec2 import Ec2Lookup, InstanceCheck
    from aws_ork.checks.terminations import TerminationCheck, Terminations

    checks: list[Check] = []
    if cfg.allowed_topic_arns:
        checks.append(TopicCheck(cfg.allowed_topic_arns))
    if cfg.verify_signatures:
        checks.append(SourceCheck(SignatureVerifier(cfg.effective_cert_cache_dir),
                                  cfg.unsigned_sources))
    else:
        log.warning("VerifySignatures is off: any message in the queue is believed")
    if cfg.verify_instances:
        if ec2 is None:
            raise ValueError("VerifyInstances needs an EC2 client")
        checks.append(InstanceCheck(Ec2Lookup(ec2), keys, groups=cfg.auto_scaling_groups,
                                    tags=cfg.instance_tags))
    else:
        log.warning("VerifyInstances is off: launches are not checked against EC2")
        checks.append(TerminationCheck(Terminations(Path(cfg.state_dir) / "terminated",
                                                    dry_run=dry_run)))
    return checks
