"""What a key operation did: its :class:`Outcome` and whether it changed the key store.

Plain records (no Salt): the key stage returns them, the decision (:mod:`aws_ork.decision`)
reads them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["KeyResult", "Outcome"]


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
