"""What the watchers report, followed up: the key stage first, then the effects.

Two threads learn of keys outside any message: the arrivals watcher (key binding: a key
presented under a waiting id, :class:`~aws_ork.keys.arrivals.KeyArrivals`) and the key
directory watcher (Salt used up an autosign stub, :class:`~aws_ork.keys.watcher.KeyDirWatcher`,
polled by the loop). Each calls :class:`KeyFollowups`, which asks the key stage (the only part
that changes keys) and then announces the result and completes the waiting lifecycle action:
the same effects a message's decision has, and never a call back into the message handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from aws_ork.base.errors import AwsOrkError
from aws_ork.checks.verdict import Verdict
from aws_ork.effects.announce import Announcer
from aws_ork.effects.hooks import Hooks
from aws_ork.keys import reactor
from aws_ork.keys.result import KeyResult, Outcome
from aws_ork.keys.stage import KeyStage

log = logging.getLogger(__name__)


class KeyFollowups:
    """The watchers' entry points (see the module docstring)."""

    def __init__(
        self,
        stage: KeyStage,
        announcer: Announcer,
        hooks: Hooks,
        changed: Callable[[str], None] | None = None,
    ) -> None:
        self.stage = stage
        self.announcer = announcer
        self.hooks = hooks
        #: the S3 mirror: a key a watcher accepted is sent now (the key directory watcher
        #: does not tell it from the loop's own changes of the same cycle)
        self.changed = changed

    def on_key_presented(
        self, minion_id: str, fingerprint: str, presented: str | None = None
    ) -> bool:
        """The arrivals thread saw a key presented under a waiting id (``presented``: the
        public key of its ``salt/auth`` event, which Salt may not have kept): ask the key
        stage now. True when nothing is left to wait for."""
        instance_id, result = self.stage.key_presented(minion_id, fingerprint, presented)
        log.info(
            "key presented by %s: %s (key binding: %s)", minion_id, result.describe(), fingerprint
        )
        self._bound(instance_id, minion_id, result, f"key presented (key binding: {fingerprint})")
        return result.outcome.done

    def on_key_published(self, instance_id: str, verdict: Verdict) -> bool:
        """The key tag watcher found the key an instance published (its launch passed the
        launch check): the key stage stores it as accepted now, before the minion's first
        authentication. True when nothing is left to look for."""
        assert verdict.published is not None
        minion_id = verdict.minion_id or instance_id
        fingerprint = verdict.fingerprint or "?"
        refused, result = self.stage.preaccept_published(
            instance_id, minion_id, fingerprint, verdict.published
        )
        who = instance_id if minion_id == instance_id else f"{instance_id} (minion {minion_id})"
        if result is None:
            log.warning("key tags published by %s: REJECTED: %s", who, refused)
            return True
        log.info(
            "key tags published by %s: %s (key binding by key: the key the instance published, %s)",
            who,
            result.describe(),
            fingerprint,
        )
        self._bound(
            instance_id,
            minion_id,
            result,
            f"key tags published (key binding by key: {fingerprint})",
        )
        return result.outcome.done

    def _bound(
        self, instance_id: str | None, minion_id: str, result: KeyResult, reason: str
    ) -> None:
        """A key binding's result outside a message: announced (the reactor event), and the
        waiting lifecycle action completed once the key is accepted."""
        if result.changed and not result.dry_run and self.changed is not None:
            self.changed(minion_id)
        kind = reactor.kind_of(result.outcome, terminate=False)
        if kind is not None and result.outcome.done:
            self.announcer.fire(
                kind,
                minion_id,
                {
                    "instance_id": instance_id,
                    "outcome": result.describe(),
                    "source": "key binding",
                    "reason": reason,
                },
            )
        if (
            not result.dry_run
            and instance_id is not None
            and result.outcome in (Outcome.ACCEPTED, Outcome.ALREADY_ACCEPTED)
        ):
            self.hooks.accepted(instance_id)

    def on_key_denied(self, minion_id: str) -> None:
        """Salt denied a key under this id: the key stage reports and removes an impostor's."""
        self.stage.impostor_denied(minion_id)

    def note_accepted_by_salt(self, minion_ids: Sequence[str]) -> None:
        """Salt used up our autosign stubs for these minions: those accepted are enrolled,
        announced to Salt's reactor, and their waiting lifecycle actions completed."""
        if self.stage.enrolled is None and self.announcer.off and self.hooks.off:
            return
        for minion_id in minion_ids:
            instance_id = self.stage.instance_of(minion_id)
            try:
                if not self.stage.salt_accepted(minion_id):
                    continue
                self.announcer.fire(  # best effort: never raises
                    reactor.Kind.ACCEPTED,
                    minion_id,
                    {
                        "instance_id": instance_id,
                        "outcome": Outcome.ACCEPTED.text,
                        "source": "autosign",
                        "reason": "accepted by Salt through aws_ork's autosign stub",
                    },
                )
                if instance_id is not None:
                    self.stage.enrol(instance_id)
            except (OSError, ValueError, AwsOrkError) as exc:
                log.error("%s: could not remember its accepted key: %s", minion_id, exc)
                continue
            if instance_id is not None:
                self.hooks.accepted(instance_id)
