"""Fire a decision's event for Salt's reactor, once the decision is taken.

The event is an effect after the decision, never part of it: what kind of event a decision
makes is :func:`aws_ork.decision.announced_kind` (pure); firing it is
:class:`~aws_ork.keys.reactor.SaltEvents` (best effort, off the caller's thread). Nothing is
fired without a bus (``SaltEvents = off``, ``--dry-run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_ork import decision as policy
from aws_ork.decision import Decision
from aws_ork.events import Event, Kind
from aws_ork.keys import reactor
from aws_ork.keys.result import KeyResult


class Announcer:
    """The master's bus as the effects see it; a no-op without one."""

    def __init__(self, salt_events: reactor.SaltEvents | None) -> None:
        self.salt_events = salt_events

    @property
    def off(self) -> bool:
        """No bus: nothing is ever fired."""
        return self.salt_events is None

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: the bus of the master's (re-read) config."""
        if self.salt_events is not None:
            self.salt_events.reload(opts)

    def fire(self, kind: reactor.Kind, minion_id: str, data: Mapping[str, Any]) -> None:
        """Fire one event (best effort: never raises)."""
        if self.salt_events is not None:
            self.salt_events.fire(kind, minion_id, data)

    def decided(
        self,
        decision: Decision,
        event: Event,
        message_id: str,
        facts: Mapping[str, Any] | None,
        result: KeyResult | None = None,
        *,
        minion_id: str | None = None,
    ) -> None:
        """The decision's ``aws_ork/<kind>/<id>`` event; nothing for a retry that decided
        nothing yet."""
        if self.salt_events is None or event.instance_id is None:
            return
        kind = policy.announced_kind(decision, result, terminate=event.kind is Kind.TERMINATE)
        if kind is None:
            return
        self.salt_events.fire(
            kind,
            minion_id or event.instance_id,
            {
                "instance_id": event.instance_id,
                "group": event.group,
                "facts": facts,
                "message_id": message_id,
                "outcome": result.describe() if result is not None else "refused",
                "reason": decision.reason,
                "source": event.source.value,
                "event": event.name,
            },
        )
