"""What the key stage is asked to do (:class:`KeyPlan`) and what a key operation did: its
:class:`Outcome` and whether it changed the key store (:class:`KeyResult`).

Plain records (no Salt): the decision (:mod:`aws_ork.decision`) makes the plan and reads the
result, the key stage (:mod:`aws_ork.keys.stage`) takes the one and returns the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["KeyPlan", "KeyResult", "Outcome", "Step"]


class Outcome(enum.Enum):
    """What happened to a key; ``done`` says whether the message is finished."""

    ACCEPTED = ("accepted", True)
    ALREADY_ACCEPTED = ("already accepted", True)
    NOT_PENDING = ("no pending key yet", False)
    REFUSED = ("key was rejected by an operator; left rejected", True)
    DELETED = ("deleted", True)
    REJECTED = ("pending key moved to rejected keys", True)
    ABSENT = ("no key to delete", True)
    INVALID_ID = ("not a safe minion id; nothing passed to Salt", True)
    PREAUTHORISED = (
        "pre-authorised (no key yet): Salt accepts it on the minion's first contact",
        True,
    )
    PREAUTH_WITHDRAWN = ("withdrawn from pre-authorisation (no key)", True)
    BOUND_NOT_YET = ("the key the instance published is not presented yet", False)
    OTHER_KEY_ACCEPTED = (
        "a key with another fingerprint than the instance published is "
        "accepted under this id; left alone for an operator",
        True,
    )
    KEY_TWICE = (
        "the key the instance published is already accepted under another minion id; "
        "refused (one key must not be two minions)",
        True,
    )
    REMOVED = (
        "its key was accepted before and has since been removed by someone else; "
        "not accepted or pre-authorised again",
        True,
    )

    def __init__(self, text: str, done: bool) -> None:
        self.text = text
        self.done = done


@dataclass(frozen=True)
class KeyResult:
    """The outcome of one key operation and whether it changed the key store."""

    outcome: Outcome
    changed: bool = False
    dry_run: bool = False
    #: key binding: fingerprints (salt-key -f) of impostor keys deleted, or of the other key
    #: accepted under the id, for the SECURITY line
    others: tuple[str, ...] = ()

    def describe(self) -> str:
        """One log fragment."""
        return f"would be {self.outcome.text}" if self.dry_run else self.outcome.text


class Step(enum.Enum):
    """What the key stage is asked to do for a message that passed its checks."""

    ACCEPT = "accept"  # accept the pending key (or pre-authorise: an autosign stub)
    ACCEPT_BOUND = "accept bound"  # key binding: accept exactly the published key
    PREACCEPT = "preaccept"  # key binding by key: store the published key as accepted
    DELETE = "delete"  # a terminate: delete the instance's key
    REJECT_STALE = "reject stale"  # a pending key older than the instance: reject it


@dataclass(frozen=True)
class KeyPlan:
    """What the key stage is asked to do, for whom."""

    step: Step
    instance_id: str
    minion_id: str
    fingerprint: str | None = None  # ACCEPT_BOUND, PREACCEPT: the published fingerprint
    published: str | None = None  # PREACCEPT: the public key the instance published (PEM)
    reason: str = ""  # REJECT_STALE: why the key is someone else's

    @property
    def claims(self) -> bool:
        """The minion id is claimed for the instance first (MinionIdTemplate): every step
        but a terminate's."""
        return self.step is not Step.DELETE
