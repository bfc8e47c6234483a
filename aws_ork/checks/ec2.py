"""VerifyInstances: EC2 must confirm what a message says before a key is touched.

One ``DescribeInstances`` per receive batch (:meth:`InstanceCheck.look_ahead`, before the
batch is handled; a message looks its instance up alone only when that call failed), in SQS_Region
(the queue's region: the instances a master manages live there). EC2's request-rate bucket is
shared with the rest of the account: one call per ten messages instead of ten.

Launch: the instance must exist and be ``pending`` or ``running``; with AutoScalingGroups its
``aws:autoscaling:groupName`` tag must match one of the patterns (shell globs, case-sensitive);
with InstanceTags it must carry every ``Key=Value`` exactly. Then its minion id: the one it
was given before, else MinionIdTemplate's from what EC2 said (a tag missing: asked again a few
times; an unsafe result: refused); the key stage decides whether it may hold that id. Then
freshness, of the pending key under that id: a pending key
written before the instance was launched (more than :data:`CLOCK_SKEW_SECONDS` before its
LaunchTime) was submitted by someone else under that id: the verdict says so
(``stale_key``) and the key stage moves it to the rejected keys; it is never accepted.

Terminate: honoured only when EC2 says the instance is ``shutting-down`` or ``terminated``, or
still does not know it after :data:`NOT_FOUND_ATTEMPTS` receives (terminated long ago, or
never ours; a brand-new instance can be "not found" for a few seconds): so a forged terminate
cannot delete a live minion's key. A terminate for an instance still running is retried with
backoff until EC2 reports it gone. Group and tag filters do not apply to a terminate: the key
of an instance that is gone can only serve an impostor.

Terminating lifecycle hook whose action aws_ork completes (LifecycleHooks): the instance stays
``running`` until the action is completed, so EC2's word cannot come first. What proves the
instance is leaving instead is Auto Scaling's own word, ``DescribeAutoScalingInstances`` saying
``Terminating:Wait`` or ``Terminating:Proceed``, asked for every such message, signed or not:
a signature only proves that someone allowed to publish to the topic sent it, not that Auto
Scaling is terminating the instance. Anything else Auto Scaling says (``InService``, no group,
the call failed) leaves the EC2 rule above, which keeps a live minion's key.

Throttling, a network error or any other EC2 failure: retry later, never accept.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import botocore.exceptions

from aws_ork.aws import AWS_ERRORS, error_code
from aws_ork.base import binding, pubkey
from aws_ork.base.awserrors import count_aws_error
from aws_ork.base.errors import AwsOrkError, KeyStoreError
from aws_ork.base.naming import NamingError, Template
from aws_ork.base.saltkeys import KeyAgeUnknown, KeyLocation
from aws_ork.base.text import shorten
from aws_ork.checks.verdict import Verdict
from aws_ork.defaults import BINDING_TAG_ATTEMPTS, NOT_FOUND_ATTEMPTS
from aws_ork.defaults import KEY_CLOCK_SKEW_SECONDS as CLOCK_SKEW_SECONDS
from aws_ork.events import Event, Kind
from aws_ork.lifecycle.client import TERMINATING_STATES, HookClient, LifecycleError
from aws_ork.memory import MinionNames

log = logging.getLogger(__name__)

GROUP_TAG = "aws:autoscaling:groupName"
LIVE_STATES = frozenset({"pending", "running"})
GONE_STATES = frozenset({"shutting-down", "terminated"})
#: Ids per DescribeInstances call in a batched lookup (the most values a filter takes).
BATCH = 200
#: EC2 error codes that mean "no such instance" (Malformed cannot happen for a checked id, and
#: could never succeed later either).
NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})


class InstanceLookupError(AwsOrkError):
    """EC2 could not be asked (throttled, unreachable, not authorised): try again later."""


@dataclass(frozen=True)
class Instance:
    """What EC2 says about one instance."""

    instance_id: str
    state: str
    launch_time: datetime | None
    tags: Mapping[str, str] = field(default_factory=dict)
    private_dns_name: str = ""

    @property
    def group(self) -> str | None:
        """The Auto Scaling group that launched it, from the tag Auto Scaling sets."""
        return self.tags.get(GROUP_TAG)

    def facts(self) -> dict[str, Any]:
        """For the verdict: what a Salt reactor may want to know (see Verdict.facts)."""
        launched = (
            self.launch_time.astimezone(UTC).isoformat(timespec="seconds")
            if self.launch_time is not None
            else None
        )
        return {
            "state": self.state,
            "launch_time": launched,
            "tags": dict(self.tags),
            "private_dns_name": self.private_dns_name or None,
        }


class Ec2Lookup:
    """``DescribeInstances`` for one id; None when EC2 does not know it."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    def get(self, instance_id: str) -> Instance | None:
        try:
            response = self.ec2.describe_instances(InstanceIds=[instance_id])
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise _failed(exc) from exc
        except AWS_ERRORS as exc:
            raise _failed(exc) from exc
        for reservation in response.get("Reservations", []):
            for item in reservation.get("Instances", []):
                if item.get("InstanceId") == instance_id:
                    return _instance(item)
        return None

    def get_many(self, instance_ids: Collection[str]) -> dict[str, Instance]:
        """What EC2 says about these instances, in batches of BATCH ids (an ``instance-id``
        filter: unknown ids are simply missing from the answer, where ``InstanceIds`` would
        fail the whole call). Raises InstanceLookupError when EC2 cannot be asked."""
        found: dict[str, Instance] = {}
        ids = sorted(set(instance_ids))
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            try:
                pages = self.ec2.get_paginator("describe_instances").paginate(
                    Filters=[{"Name": "instance-id", "Values": chunk}]
                )
                for page in pages:
                    for reservation in page.get("Reservations", []):
                        for item in reservation.get("Instances", []):
                            if item.get("InstanceId") in chunk:
                                found[item["InstanceId"]] = _instance(item)
            except AWS_ERRORS as exc:
                raise _failed(exc) from exc
        return found


def _failed(exc: Exception) -> InstanceLookupError:
    """A DescribeInstances that failed (throttled, not authorised, unreachable, timed out, an
    answer botocore cannot read), counted for the metrics: retry later, never accept."""
    code = error_code(exc)
    count_aws_error("ec2", code)
    if isinstance(exc, botocore.exceptions.ClientError):
        return InstanceLookupError(f"EC2 DescribeInstances failed: {code}")
    return InstanceLookupError(f"EC2 DescribeInstances failed: {type(exc).__name__}: {exc}")


def _instance(item: Mapping[str, Any]) -> Instance:
    tags = {t["Key"]: t.get("Value", "") for t in item.get("Tags", []) if "Key" in t}
    launch = item.get("LaunchTime")
    if isinstance(launch, datetime) and launch.tzinfo is None:
        launch = launch.replace(tzinfo=UTC)
    dns = item.get("PrivateDnsName")
    return Instance(
        item["InstanceId"],
        str(item.get("State", {}).get("Name", "unknown")),
        launch if isinstance(launch, datetime) else None,
        tags,
        dns if isinstance(dns, str) else "",
    )


class InstanceCheck:
    """The VerifyInstances check (see the module docstring).

    ``location`` is where the master keeps keys: the pending key's age is read there."""

    #: the reason code of its failures in the metrics (a fixed word, never message text)
    code = "instance"

    def __init__(
        self,
        lookup: Ec2Lookup,
        location: KeyLocation,
        *,
        groups: Collection[str] = (),
        tags: Collection[tuple[str, str]] = (),
        binding_tag: str | None = None,
        hooks: Callable[[str | None], bool] | None = None,
        autoscaling: HookClient | None = None,
        template: Template = Template(),
        names: MinionNames | None = None,
    ) -> None:
        self.lookup = lookup
        self.template = template  # MinionIdTemplate
        self.names = names  # the minion id each instance was given (read only here)
        self.hooks = hooks  # LifecycleHooks: the hooks whose actions aws_ork completes
        self.autoscaling = autoscaling  # asked whether an instance is Terminating
        self.location = location
        self.groups = tuple(groups)
        self.tags = tuple(tags)
        self.binding_tag = binding_tag  # KeyBinding = tag: the tag holding the fingerprint
        #: what one batched DescribeInstances said about the ids of the batch in hand
        self._primed: dict[str, Instance | None] = {}

    def look_ahead(self, instance_ids: Collection[str]) -> dict[str, Instance | None]:
        """Look the instances of a receive batch up in one call (Ec2Lookup.get_many), so the
        messages of the batch need no call each. Only looks (safe in the receiver's thread,
        for the next batch); :meth:`use` makes the answer the batch's. When EC2 cannot be
        asked the answer is empty, and each message asks on its own (retried as before)."""
        if not instance_ids:
            return {}
        try:
            found = self.lookup.get_many(instance_ids)
        except InstanceLookupError as exc:
            log.debug("batched EC2 lookup failed (%s); asking per message", exc)
            return {}
        return {i: found.get(i) for i in instance_ids}

    def use(self, primed: Mapping[str, Instance | None]) -> None:
        """The batch in hand is the one ``primed`` was looked up for."""
        self._primed = dict(primed)

    def forget(self) -> None:
        """The batch is done: the next one is looked up afresh."""
        self._primed = {}

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: the master's config may have moved its key directory."""
        self.location = KeyLocation.from_opts(opts)

    def __call__(self, event: Event) -> Verdict:
        instance_id = event.instance_id
        if instance_id is None:  # the parser never lets this through; refuse if it did
            return Verdict.refused("no instance id")
        said = ""  # what Auto Scaling said about a terminating hook's instance
        if (
            event.kind is Kind.TERMINATE
            and event.lifecycle_token
            and self.hooks is not None
            and self.hooks(event.lifecycle_hook)
        ):
            leaving, said = self._leaving(instance_id)
            if leaving:  # said once: a running instance's key goes at once
                log.info("%s: %s: its key is deleted without waiting for EC2", instance_id, said)
                return Verdict.passed(said)
        try:
            instance = (
                self._primed[instance_id]
                if instance_id in self._primed
                else self.lookup.get(instance_id)
            )
        except InstanceLookupError as exc:
            log.debug("%s: EC2 lookup failed", instance_id, exc_info=True)
            return Verdict.deferred(f"{exc}; never accepted without EC2's word")
        if event.kind is Kind.TERMINATE:
            verdict = self._terminate(instance)
            if said and not verdict.ok:
                verdict = replace(verdict, reason=f"{said}; {verdict.reason}")
        else:
            verdict = self._launch(instance_id, instance)
        return verdict if instance is None else replace(verdict, facts=instance.facts())

    def _leaving(self, instance_id: str) -> tuple[bool, str]:
        """Whether Auto Scaling itself says a terminating hook's instance is leaving, and
        what it said (for the verdict's reason). Asked for every such message: the message's
        signature is no proof (SNS signs what anyone with sns:Publish on the topic sends)."""
        if self.autoscaling is None:
            return False, ""
        try:
            state = self.autoscaling.lifecycle_state(instance_id)
        except LifecycleError as exc:
            log.debug("%s: Auto Scaling lookup failed: %s", instance_id, exc)
            return False, f"Auto Scaling could not be asked ({exc})"
        if state in TERMINATING_STATES:
            return True, f"Auto Scaling says {state}"
        if state is None:
            return False, "Auto Scaling has the instance in no group, not Terminating"
        return False, f"Auto Scaling says {shorten(state)}, not Terminating"

    @staticmethod
    def _terminate(instance: Instance | None) -> Verdict:
        if instance is None:
            # Not found: terminated long ago, or so new that EC2's eventually consistent API
            # does not list it yet (a forged terminate for a brand-new instance would delete
            # its key). Honoured once it is still unknown after a few receives.
            return Verdict.deferred(
                "instance not found in EC2", times=NOT_FOUND_ATTEMPTS, then_pass=True
            )
        if instance.state in GONE_STATES:
            return Verdict.passed(f"instance is {instance.state}")
        return Verdict.deferred(
            f"instance is still {instance.state} in EC2; its key is deleted "
            f"once EC2 reports it shutting-down or terminated"
        )

    def judge_launch(self, instance_id: str, instance: Instance | None) -> Verdict:
        """The launch verdict for what EC2 already said (the reconcile sweep looks instances
        up in batches, then asks this)."""
        return self._launch(instance_id, instance)

    def _launch(self, instance_id: str, instance: Instance | None) -> Verdict:
        if instance is None:
            # EC2's API is eventually consistent: a brand-new instance can be "not found" for
            # a few seconds. Ask again a few times (2+4+8+16 s) before giving up for good.
            return Verdict.deferred("instance not found in EC2", times=NOT_FOUND_ATTEMPTS)
        if instance.state not in LIVE_STATES:
            return Verdict.refused(f"instance is {instance.state} in EC2, not pending/running")
        if self.groups:
            group = instance.group
            if group is None:
                return Verdict.refused(
                    "instance is in no Auto Scaling group (AutoScalingGroups is set)",
                    "group",
                )
            if not any(fnmatch.fnmatchcase(group, pattern) for pattern in self.groups):
                return Verdict.refused(
                    f"group {shorten(group)} is not in AutoScalingGroups", code="group"
                )
        missing = [f"{key}={value}" for key, value in self.tags if instance.tags.get(key) != value]
        if missing:
            return Verdict.refused(
                f"instance lacks required tag {', '.join(missing)} (InstanceTags)",
                "tag",
            )
        try:
            minion_id = self._minion_id(instance)
        except NamingError as exc:
            if exc.retry:
                return Verdict.deferred(exc.reason, times=NOT_FOUND_ATTEMPTS, code="minion_id")
            return Verdict.refused(exc.reason, "minion_id")
        named = None if minion_id == instance_id else minion_id
        if self.binding_tag is not None:
            return replace(self._bound(instance), minion_id=named)
        return replace(self._fresh(minion_id, instance.launch_time), minion_id=named)

    def _minion_id(self, instance: Instance) -> str:
        """MinionIdTemplate: the id given to this instance before (an instance keeps its
        first id, whatever its tags say now), else the template's."""
        if self.template.identity:
            return instance.instance_id
        given = self.names.minion_of(instance.instance_id) if self.names is not None else None
        return given or self.template.render(
            instance.instance_id, instance.tags, private_dns_name=instance.private_dns_name
        )

    def _bound(self, instance: Instance) -> Verdict:
        """Key binding: what the instance published is the fact the key stage needs: its
        whole public key (the key tags, :mod:`aws_ork.base.pubkey`: the key stage stores it
        as accepted before the minion's first contact), else its key's fingerprint.

        No freshness check: the key (or its fingerprint) proves itself, whenever written."""
        assert self.binding_tag is not None
        value = instance.tags.get(self.binding_tag)
        try:
            published = pubkey.from_tags(instance.tags)
        except pubkey.PublishedKeyError as exc:
            return Verdict.refused(
                f"the key tags ({pubkey.KEY_TAG_PREFIX}0...) hold no minion key: {exc}",
                "binding",
            )
        if published is not None:
            finger = binding.finger(published.strip())
            if value is not None and not binding.matches(
                published.strip(), binding.normalise(value) or ""
            ):
                return Verdict.refused(
                    f"tag {self.binding_tag} holds {shorten(value)}, which is not the "
                    f"fingerprint of the key the key tags hold ({finger})",
                    "binding",
                )
            return Verdict.passed(fingerprint=finger, published=published)
        if value is None:
            # The instance tags itself from user data once its minion has made its key:
            # seconds to minutes after launch. The key tag watcher looks every second
            # (checks/keytags.py); the message is asked again with backoff, then given up.
            return Verdict.deferred(
                f"the instance has not published its key (tags {pubkey.KEY_TAG_PREFIX}0...) "
                f"or its key's fingerprint (tag {self.binding_tag}) yet",
                times=BINDING_TAG_ATTEMPTS,
                code="binding",
            )
        fingerprint = binding.normalise(value)
        if fingerprint is None:
            return Verdict.refused(
                f"tag {self.binding_tag} holds {shorten(value)}, which is not a key fingerprint",
                "binding",
            )
        return Verdict.passed(fingerprint=fingerprint)

    def _fresh(self, minion_id: str, launch_time: datetime | None) -> Verdict:
        """A pending key written before the instance existed is someone else's."""
        if launch_time is None:
            return Verdict.refused("EC2 gave no LaunchTime: cannot tell the pending key's age")
        try:
            written = self.location.pending_mtime(minion_id)
        except KeyAgeUnknown as exc:  # fail closed: no key is accepted without its age
            return Verdict.refused(f"{exc}: freshness cannot be checked, so no key is accepted")
        except KeyStoreError as exc:
            return Verdict.deferred(str(exc))
        if written is None or written >= launch_time.timestamp() - CLOCK_SKEW_SECONDS:
            return Verdict.passed()
        key_time = datetime.fromtimestamp(written, UTC).isoformat(timespec="seconds")
        launched = launch_time.astimezone(UTC).isoformat(timespec="seconds")
        return Verdict.stale(
            f"pending key (written {key_time}) is older than the instance (launched {launched})"
        )
