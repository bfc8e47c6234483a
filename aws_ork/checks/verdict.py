"""What a check answers: pass, fail for good, or ask again later; and what it found.

A check only looks. When it finds something the key stage must act on (a pending key older
than its instance), it says so in the verdict and :mod:`aws_ork.decide` acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aws_ork.events import Event


@dataclass(frozen=True)
class Verdict:
    """A check's answer: pass, fail for good (delete), or retry later (``retry=True``)."""

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
    #: a finer reason code for the metrics than the check's own ``code`` (group, tag...)
    code: str = ""
    #: what EC2 said about the instance (``state``, ``launch_time`` ISO 8601, ``tags``), for
    #: the Salt event of the decision (:mod:`aws_ork.keys.reactor`)
    facts: Mapping[str, Any] | None = None
    #: MinionIdTemplate: the minion id the instance's key is accepted under (None: its
    #: instance id); the key stage decides whether the instance may hold it
    minion_id: str | None = None


class Check(Protocol):
    """Looks at a parsed event before any key is touched (topic, signature, instance...)."""

    def __call__(self, event: Event) -> Verdict: ...
