"""Stage 3, the checks: may this event change a key? Each check only looks and answers.

Threat: anyone allowed to send to the queue could forge "instance i-X launched" and get the key
of a minion they control accepted. The checks run in this order, each a
:class:`~aws_ork.checks.verdict.Check` returning a :class:`~aws_ork.checks.verdict.Verdict`
(the first that fails decides):

1. :mod:`~aws_ork.checks.topic` (AllowedTopicArns): an SNS envelope from another topic is
   rejected before anything else, signature included.
2. :mod:`~aws_ork.checks.source` (VerifySignatures, UnsignedSources): an SNS envelope must
   carry a valid AWS signature (:mod:`~aws_ork.checks.signature`); an unsigned body passes
   only when its source is named in UnsignedSources.
   :mod:`~aws_ork.checks.replay`: an envelope already handled is not handled again.
3. :mod:`~aws_ork.checks.ec2` (VerifyInstances, AutoScalingGroups, InstanceTags): EC2 must
   confirm the instance, and the pending key must be younger than it. Without
   VerifyInstances, :mod:`~aws_ork.checks.terminations` keeps a terminate that arrives before
   its launch from being undone by that launch.

The checks apply to launches and terminates alike: a forged terminate would delete a live
minion's key (see :mod:`aws_ork.checks.ec2` for what EC2 must say about a terminate).
None of them changes the key store or the daemon's state: :mod:`aws_ork.decide` acts on what
they found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_ork.base.naming import Template
from aws_ork.base.saltkeys import KeyLocation
from aws_ork.checks.certurl import regions_of
from aws_ork.checks.ec2 import Ec2Lookup, InstanceCheck
from aws_ork.checks.replay import ReplayCheck
from aws_ork.checks.signature import SignatureVerifier
from aws_ork.checks.source import SourceCheck
from aws_ork.checks.terminations import TerminationCheck, Terminations
from aws_ork.checks.topic import TopicCheck
from aws_ork.checks.verdict import Check, Verdict
from aws_ork.config import ANY_TOPIC, Config
from aws_ork.lifecycle.client import HookClient
from aws_ork.memory import IdMemory, MinionNames

__all__ = ["Check", "Checks", "Verdict", "build_checks"]


@dataclass(frozen=True)
class Checks:
    """The checks of a config, in order; and the EC2 check among them, by name, for the
    reconcile sweep (which asks EC2 the same way), so that nobody searches for it by type."""

    all: tuple[Check, ...]
    instance: InstanceCheck | None = None


def build_checks(
    cfg: Config,
    *,
    location: KeyLocation,
    ec2: Any = None,
    terminations: Terminations | None = None,
    finished: IdMemory | None = None,
    max_age_seconds: float | None = None,
    autoscaling: HookClient | None = None,
    names: MinionNames | None = None,
) -> Checks:
    """The checks the config asks for, in order: topic, signature/source, replay, instance.

    ``location`` is where the master keeps keys (read for a pending key's age); ``ec2`` is an
    EC2 client, needed with VerifyInstances; ``terminations`` the termination memory, needed
    without it; ``finished`` the SNS MessageIds already handled; ``max_age_seconds`` how old a
    signed envelope may be (the queue's retention plus clock skew); ``autoscaling`` answers
    whether a terminating hook's instance is Terminating (LifecycleHooks); ``names`` the minion
    id each instance was given (MinionIdTemplate)."""
    checks: list[Check] = []
    if cfg.allowed_topic_arns and cfg.allowed_topic_arns != (ANY_TOPIC,):
        checks.append(TopicCheck(cfg.allowed_topic_arns))
    if cfg.verify_signatures:
        verifier = SignatureVerifier(
            cfg.effective_cert_cache_dir,
            allowed_regions=regions_of(cfg.allowed_topic_arns),
            max_age_seconds=max_age_seconds,
        )
        checks.append(SourceCheck(verifier, cfg.unsigned_sources))
    if finished is not None:
        checks.append(ReplayCheck(finished))
    instance: InstanceCheck | None = None
    if cfg.verify_instances:
        if ec2 is None:
            raise ValueError("VerifyInstances needs an EC2 client")
        instance = InstanceCheck(
            Ec2Lookup(ec2),
            location,
            groups=cfg.auto_scaling_groups,
            tags=cfg.instance_tags,
            binding_tag=cfg.key_binding_tag if cfg.key_binding == "tag" else None,
            hooks=cfg.completes_hook if cfg.lifecycle_hooks else None,
            autoscaling=autoscaling,
            template=Template(cfg.minion_id_template),
            names=names,
        )
        checks.append(instance)
    else:
        if terminations is None:
            raise ValueError("without VerifyInstances the termination memory is needed")
        checks.append(TerminationCheck(terminations))
    return Checks(tuple(checks), instance)
