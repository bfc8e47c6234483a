"""What a check answers: pass, fail for good, or ask again later; and what it found.

A check only looks. When it finds something the key stage must act on (a pending key older
than its instance), it says so in the verdict and :mod:`aws_ork.decide` acts on it.

A verdict is made with its named constructors (:meth:`Verdict.passed`,
:meth:`Verdict.refused`, :meth:`Verdict.deferred`, :meth:`Verdict.stale`) and read with
:meth:`Verdict.reading`, which says what it means at a message's receive count: the
"retry N times, then pass" rule is written once, here.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aws_ork.events import Event


class Reading(enum.Enum):
    """What a verdict means for the message at its receive count."""

    PASS = "pass"  # go on to the next check
    DEFER = "defer"  # cannot answer yet: retry the message with backoff
    STALE = "stale"  # a pending key older than the instance: the key stage rejects it
    REFUSE = "refuse"  # fails for good: the message is deleted, rejected


@dataclass(frozen=True)
class Verdict:
    """A check's answer: pass, fail for good (delete), or retry later (``retry=True``).

    Prefer the named constructors to the fields: ``Verdict.deferred("not found", times=5,
    then_pass=True)`` says "ask again until the 5th receive, then pass"."""

    ok: bool
    reason: str = ""
    retry: bool = False
    #: with ``retry``: after this many receives the failure is final (0: retry for ever)
    attempts: int = 0
    #: with ``retry`` and ``attempts``: at the limit the check passes instead of failing
    #: (a terminate for an instance EC2 still does not know after several receives)
    then_ok: bool = False
    #: the pending key under this id was written before the instance existed: someone else
    #: submitted it, and the key stage moves it to the rejected keys
    stale_key: bool = False
    #: key binding: the fingerprint the instance published; only that key may be accepted
    fingerprint: str | None = None
    #: key binding by key: the public key the instance published on its key tags (PEM)
    published: str | None = None
    #: a finer reason code for the metrics than the check's own ``code`` (group, tag...)
    code: str = ""
    #: what EC2 said about the instance (``state``, ``launch_time`` ISO 8601, ``tags``), for
    #: the Salt event of the decision (:mod:`aws_ork.keys.reactor`)
    facts: Mapping[str, Any] | None = None
    #: MinionIdTemplate: the minion id the instance's key is accepted under (None: its
    #: instance id); the key stage decides whether the instance may hold it
    minion_id: str | None = None

    @classmethod
    def passed(
        cls, reason: str = "", *, fingerprint: str | None = None, published: str | None = None
    ) -> Verdict:
        """The check passes (key binding: with the fingerprint the instance published, and
        by key: the public key it published)."""
        return cls(True, reason, fingerprint=fingerprint, published=published)

    @classmethod
    def refused(cls, reason: str, code: str = "") -> Verdict:
        """The check fails for good: the message is deleted, counted as rejected."""
        return cls(False, reason, code=code)

    @classmethod
    def deferred(
        cls, reason: str, *, times: int = 0, then_pass: bool = False, code: str = ""
    ) -> Verdict:
        """The check cannot answer yet: the message is retried with backoff, until its
        ``times``-th receive (0: for ever); then it fails for good, or passes
        (``then_pass``)."""
        return cls(False, reason, retry=True, attempts=times, then_ok=then_pass, code=code)

    @classmethod
    def stale(cls, reason: str) -> Verdict:
        """The pending key under the id is older than the instance: someone else's."""
        return cls(False, reason, stale_key=True)

    def reading(self, receive_count: int) -> Reading:
        """What this verdict means for a message received ``receive_count`` times."""
        if self.retry and not 0 < self.attempts <= receive_count:
            return Reading.DEFER
        if self.retry and self.then_ok:
            return Reading.PASS  # asked often enough: the check passes
        if self.stale_key:
            return Reading.STALE
        return Reading.PASS if self.ok else Reading.REFUSE


class Check(Protocol):
    """Looks at a parsed event before any key is touched (topic, signature, instance...).

    ``code`` is the fixed word naming it in the metrics and in the decision's rules (the
    topic, signature and replay checks prove who sent a message)."""

    code: str

    def __call__(self, event: Event) -> Verdict: ...


@runtime_checkable
class BatchLookup(Protocol):
    """A check that looks up a whole receive batch in one call (the EC2 check):
    :meth:`look_ahead` only looks (safe in another thread, for the next batch), :meth:`use`
    makes an answer the batch in hand's, :meth:`forget` drops it after the batch."""

    def look_ahead(self, instance_ids: Collection[str]) -> Any: ...

    def use(self, found: Any) -> None: ...

    def forget(self) -> None: ...


@runtime_checkable
class Reloadable(Protocol):
    """Something that reads the master's config and re-reads it on SIGHUP."""

    def reload(self, opts: Mapping[str, Any]) -> None: ...
