"""The key stage: every key-side effect, under one lock.

Accept, delete, reject, the MinionIdTemplate claim of an id, enrolment, autosign stubs and
pre-accepts (through :class:`~aws_ork.keys.manager.KeyManager`), the impostor tally and the
key-change counts for the metrics (:attr:`KeyStage.key_counts`). The loop (through
:mod:`aws_ork.decide`), the reconcile sweep and the arrivals watcher all change keys through
it, in their own threads: one change at a time (:attr:`KeyStage.lock`). It calls nothing
above it: what a key change means for the message, the lifecycle action or Salt's reactor is
decided and applied by the caller.

The memories it writes (enrolled-instances, preauthorised-instances, minion-ids) are made
durable at once, or, for the loop's batch, once at :meth:`KeyStage.flush`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from aws_ork import defaults
from aws_ork.base.ids import is_instance_id
from aws_ork.base.naming import claim_refusal, owner_of_key
from aws_ork.base.saltkeys import ACCEPTED
from aws_ork.base.text import clean
from aws_ork.keys.arrivals import KeyArrivals
from aws_ork.keys.manager import KeyManager
from aws_ork.keys.result import KeyPlan, KeyResult, Outcome, Step
from aws_ork.memory import IdMemory, MinionNames

log = logging.getLogger(__name__)


class TerminateRecords(Protocol):
    """Where an honoured terminate is remembered (``checks.terminations.Terminations``,
    without VerifyInstances): the key stage records it as it deletes the key."""

    def remember(self, instance_id: str, /) -> None: ...


class LaunchProof(Protocol):
    """What the sweep found for a lost launch (the launch check's ``Verdict``): the key stage
    reads only these."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def published(self) -> str | None: ...

    @property
    def minion_id(self) -> str | None: ...


class KeyStore(Protocol):
    """Salt's key store as the key stage uses it (:class:`~aws_ork.keys.manager.KeyManager`):
    a Protocol, so that a test fakes it."""

    dry_run: bool

    def close(self) -> None: ...

    def instance_keys(self, named: Collection[str] = ..., /) -> dict[str, set[str]]: ...

    def states(self, minion_id: str, /) -> set[str]: ...

    def accept(self, minion_id: str, /, *, enrolled: bool = ...) -> KeyResult: ...

    def accept_bound(
        self,
        minion_id: str,
        fingerprint: str,
        /,
        *,
        enrolled: bool = ...,
        presented: str | None = ...,
    ) -> KeyResult: ...

    def drop_impostors(self, minion_id: str, fingerprint: str, /) -> tuple[str, ...]: ...

    def preaccept(
        self, minion_id: str, published: str, /, *, enrolled: bool = ...
    ) -> KeyResult: ...

    def denied_impostors(self, minion_id: str, /) -> tuple[str | None, tuple[str, ...]]: ...

    def restore_bound(self, minion_id: str, fingerprint: str, pub: str, /) -> KeyResult: ...

    def public_key(self, minion_id: str, /) -> str | None: ...

    def delete(self, minion_id: str, /) -> KeyResult: ...

    def reject(self, minion_id: str, /) -> KeyResult: ...


class KeyStage:
    """Owns the key store's changes and the key lock (see the module docstring)."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        terminations: TerminateRecords | None = None,
        enrolled: IdMemory | None = None,
        arrivals: KeyArrivals | None = None,
        names: MinionNames | None = None,
        preauthorised: IdMemory | None = None,
    ) -> None:
        self.keys = keys
        self.terminations = terminations  # without VerifyInstances: honoured terminates
        self.enrolled = enrolled  # instances whose keys were accepted once (never again)
        self.arrivals = arrivals  # key binding: an accepted bound key is guarded there
        self.names = names  # MinionIdTemplate: the minion id each instance was given
        self.preauthorised = preauthorised  # instances given an autosign stub (the sweep's)
        #: the loop, the sweep and the arrivals thread all change keys: one at a time
        self.lock = threading.RLock()
        #: the loop's thread while it handles a batch: memories written there are made
        #: durable once for the batch (:meth:`flush`), before its messages are deleted
        self._batch_thread: int | None = None
        self._unsynced: set[IdMemory] = set()
        #: key changes made (accepted, deleted, preauthorised, rejected, impostor), for metrics
        self.key_counts: Counter[str] = Counter()
        #: key binding: (minion id, fingerprint) of impostor keys already logged
        self._impostors_seen: set[tuple[str, str]] = set()

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: a key manager for the master's (re-read) config."""
        with self.lock:
            old, self.keys = self.keys, KeyManager(opts, dry_run=self.keys.dry_run)
        old.close()

    def begin_batch(self) -> None:
        """The loop's thread starts a batch: what it remembers is synced at :meth:`flush`."""
        self._batch_thread = threading.get_ident()

    def flush(self) -> None:
        """After a batch, before its messages are deleted: make what it remembered durable,
        one fsync per memory instead of one per message. OSError when that fails: none of the
        batch's messages may then be reported done."""
        self._batch_thread = None
        unsynced, self._unsynced = self._unsynced, set()
        for memory in unsynced:
            memory.sync()

    def minion_of(self, instance_id: str) -> str:
        """The minion id of this instance's key: the one it was given (MinionIdTemplate),
        else its instance id."""
        given = self.names.minion_of(instance_id) if self.names is not None else None
        return given or instance_id

    def instance_of(self, minion_id: str) -> str | None:
        """The instance a key belongs to (None: not one aws_ork named)."""
        return owner_of_key(
            minion_id, self.names.owner_of(minion_id) if self.names is not None else None
        )

    def _claim(self, instance_id: str, minion_id: str) -> str | None:
        """MinionIdTemplate: give ``minion_id`` to this instance, durably, before any key is
        accepted under it; or say why it may not have it (the caller holds the keys lock).
        OSError when StateDir cannot be written."""
        if minion_id == instance_id:
            return None  # an instance id names its own instance
        owner = self.names.owner_of(minion_id) if self.names is not None else None
        asks_salt = self.names is not None and owner is None and not is_instance_id(minion_id)
        refusal = claim_refusal(
            instance_id,
            minion_id,
            templated=self.names is not None,
            owner=owner,
            accepted=asks_salt and ACCEPTED in self.keys.states(minion_id),
        )
        if refusal is None and self.names is not None:
            self.names.bind(instance_id, minion_id)
        return refusal

    def _do(self, key_plan: KeyPlan) -> KeyResult:
        """The plan's key change (the caller holds the keys lock)."""
        instance_id, minion_id = key_plan.instance_id, key_plan.minion_id
        if key_plan.step is Step.DELETE:
            return self._delete(instance_id, minion_id)
        if key_plan.published is not None:
            return self._preaccept(
                instance_id, minion_id, key_plan.published, key_plan.fingerprint or "?"
            )
        if key_plan.fingerprint is not None:
            return self._accept_bound(instance_id, minion_id, key_plan.fingerprint)
        return self._accept(instance_id, minion_id)

    def _delete(self, instance_id: str, minion_id: str) -> KeyResult:
        """The terminate's key change: delete the instance's key; its minion id is free
        again once the key is gone."""
        result = self._tally(self.keys.delete(minion_id))
        if (
            self.names is not None
            and result.outcome.done
            and not result.dry_run
            and self.names.minion_of(instance_id) == minion_id
        ):
            self.names.release(instance_id)
        return result

    def _is_enrolled(self, instance_id: str | None) -> bool:
        return (
            self.enrolled is not None and instance_id is not None and instance_id in self.enrolled
        )

    def _enrol(self, instance_id: str | None, result: KeyResult) -> None:
        """Remember an instance whose key is accepted: it is never enrolled again."""
        if (
            result.outcome in (Outcome.ACCEPTED, Outcome.ALREADY_ACCEPTED)
            and not result.dry_run
            and self.enrolled is not None
            and instance_id is not None
        ):
            self.remember(self.enrolled, instance_id)

    def _accept(self, instance_id: str, minion_id: str) -> KeyResult:
        """Accept (or pre-authorise) unless this instance was enrolled before; remember an
        accepted key."""
        result = self._tally(self.keys.accept(minion_id, enrolled=self._is_enrolled(instance_id)))
        if result.outcome is Outcome.REMOVED:
            self._removed(instance_id, minion_id)
        elif (
            result.outcome is Outcome.PREAUTHORISED
            and not result.dry_run
            and self.preauthorised is not None
        ):
            # whatever key Salt accepts through the stub is aws_ork's doing: the sweep may
            # delete it once the instance is gone (even if no running daemon saw it used)
            self.remember(self.preauthorised, instance_id)
        self._enrol(instance_id, result)
        return result

    @staticmethod
    def _removed(instance_id: str | None, minion_id: str) -> None:
        log.error(
            "SECURITY: %s: its key was accepted before and has since been removed "
            "(salt-key -d?); a launch message never enrols an instance twice. To "
            "enrol it again by hand, compare salt-key -f %s with the minion's own "
            "salt-call --local key.finger, then salt-key -a %s",
            instance_id
            if instance_id in (None, minion_id)
            else f"{minion_id} (instance {instance_id})",
            minion_id,
            minion_id,
        )

    def _accept_bound(
        self,
        instance_id: str | None,
        minion_id: str,
        fingerprint: str,
        presented: str | None = None,
    ) -> KeyResult:
        """Key binding: accept exactly the published key; say loudly what else was there
        (once per impostor key: an impostor presents its key as often as it likes)."""
        result = self._tally(
            self.keys.accept_bound(
                minion_id, fingerprint, enrolled=self._is_enrolled(instance_id), presented=presented
            )
        )
        self._say_bound(
            instance_id,
            minion_id,
            fingerprint,
            result,
            "never accepted, and removed (pending: once the genuine key is accepted, or the "
            "launch is given up)",
        )
        self._enrol(instance_id, result)
        if result.outcome is Outcome.ACCEPTED and result.changed and self.arrivals is not None:
            pub = self.keys.public_key(minion_id)
            if pub is not None:
                self.arrivals.guard(minion_id, fingerprint, pub)
        return result

    def _preaccept(
        self, instance_id: str | None, minion_id: str, published: str, fingerprint: str
    ) -> KeyResult:
        """Key binding by key: store the key the instance published as accepted before its
        minion's first contact; say loudly what else was there (the caller holds the lock)."""
        result = self._tally(
            self.keys.preaccept(minion_id, published, enrolled=self._is_enrolled(instance_id))
        )
        if result.outcome is Outcome.KEY_TWICE:
            log.error(
                "SECURITY: %s: the key it published (%s) is already accepted under %s; "
                "refused: one key must not be two minions (an image shipping one key pair, "
                "or an instance publishing another's key)",
                named(instance_id or minion_id, minion_id),
                fingerprint,
                clean(", ".join(result.others), 200),
            )
        else:
            self._say_bound(
                instance_id,
                minion_id,
                fingerprint,
                result,
                "never accepted, and removed: the published key is accepted",
            )
        self._enrol(instance_id, result)
        if result.outcome is Outcome.ACCEPTED and result.changed and self.arrivals is not None:
            # a Salt authentication that found the id without a key just before the accept
            # would store its key as pending over ours: put ours back (keys/arrivals.py)
            self.arrivals.guard(minion_id, fingerprint, published)
        return result

    def preaccept_published(
        self, instance_id: str, minion_id: str, fingerprint: str, published: str
    ) -> tuple[str | None, KeyResult | None]:
        """The key tag watcher found the key an instance published (its launch passed every
        other check): claim the minion id and store the key as accepted. (why the instance
        may not hold the id, None) or (None, what was done). KeyStoreError, OSError."""
        with self.lock:
            refused = self._claim(instance_id, minion_id)
            if refused is not None:
                return refused, None
            return None, self._preaccept(instance_id, minion_id, published, fingerprint)

    def impostor_denied(self, minion_id: str) -> bool:
        """Salt denied a key under this id (its ``salt/auth`` event said so; the event only
        says where to look: what is judged is read from the key store). An impostor's key
        under an accepted id: one SECURITY line naming both fingerprints, counted, and
        removed from the denied keys so that it stalls nothing. True when one was removed."""
        with self.lock:
            accepted, impostors = self.keys.denied_impostors(minion_id)
            dry = self.keys.dry_run
            # one line and one count per impostor key: one seen pending before is not new
            fresh = [
                other
                for other in impostors
                if self._new_impostor(minion_id, other, counted=not dry)
            ]
        for other in fresh:
            log.error(
                "SECURITY: %s: Salt denied a key with fingerprint %s presented under this id, "
                "whose accepted key is %s: someone else holds a key for this minion id; %s",
                minion_id,
                clean(other, 200),
                accepted,
                "it would be removed from the denied keys"
                if dry
                else "removed from the denied keys",
            )
        return bool(impostors) and not dry

    def _say_bound(
        self,
        instance_id: str | None,
        minion_id: str,
        fingerprint: str,
        result: KeyResult,
        removed: str,
    ) -> None:
        """Key binding: say loudly what else was under the id (once per impostor key: an
        impostor presents its key as often as it likes); ``removed``: what became of an
        impostor's key."""
        if result.outcome is Outcome.REMOVED:
            self._removed(instance_id, minion_id)
        elif result.outcome is Outcome.OTHER_KEY_ACCEPTED:
            log.error(
                "SECURITY: %s: the key accepted under this id has fingerprint %s, not %s "
                "which the instance published; left alone (check it: salt-key -f %s)",
                minion_id,
                ", ".join(result.others) or "?",
                fingerprint,
                minion_id,
            )
        elif result.others:
            for other in result.others:
                if not self._new_impostor(minion_id, other, counted=not result.dry_run):
                    continue
                log.error(
                    "SECURITY: %s: a key with fingerprint %s is not the key the instance "
                    "published (%s): someone else presented it under this id; %s",
                    minion_id,
                    clean(other, 200),
                    fingerprint,
                    "it would never be accepted" if result.dry_run else removed,
                )

    def _new_impostor(self, minion_id: str, fingerprint: str, *, counted: bool) -> bool:
        """First sight of this impostor key (id, fingerprint): counted once for the metrics
        (with its one SECURITY line), however often it is presented. Under the keys lock."""
        if (minion_id, fingerprint) in self._impostors_seen:
            return False
        if len(self._impostors_seen) >= defaults.IMPOSTORS_REMEMBERED:
            self._impostors_seen.clear()  # bounded; a repeat line (and count) at worst
        self._impostors_seen.add((minion_id, fingerprint))
        if counted:
            self.key_counts["impostor"] += 1
        return True

    def on_key_lost(self, minion_id: str, fingerprint: str, pub: str) -> None:
        """The arrivals thread saw a just-accepted bound key replaced by a pending one (a
        Salt auth attempt that found the id without a key stored it over ours): accept the
        bound key again, with one SECURITY line."""
        with self.lock:
            result = self.keys.restore_bound(minion_id, fingerprint, pub)
            if result.outcome is not Outcome.ACCEPTED:
                return
            for other in result.others:
                self._new_impostor(minion_id, other, counted=not result.dry_run)
        log.error(
            "SECURITY: %s: the accepted key (the instance's, %s) was replaced by a "
            "pending key with fingerprint %s, stored by a Salt authentication that found "
            "the id without a key just before the acceptance; %s",
            minion_id,
            fingerprint,
            clean(", ".join(result.others), 200),
            "the instance's key would be accepted again"
            if result.dry_run
            else "the instance's key is accepted again and that key removed",
        )

    def _tally(self, result: KeyResult) -> KeyResult:
        """Count a key change for the metrics (the loop and the arrivals thread both count)."""
        if result.dry_run:
            return result
        with self.lock:
            if (
                result.outcome is Outcome.PREAUTHORISED
                or result.changed
                and result.outcome in (Outcome.ACCEPTED, Outcome.DELETED, Outcome.REJECTED)
            ):  # a stub: no change
                self.key_counts[result.outcome.name.lower()] += 1
        return result

    def remember(self, memory: IdMemory, value: str) -> None:
        """Add to a replay memory: durable now, or (in the loop's batch) at :meth:`flush`."""
        deferred = self._batch_thread == threading.get_ident()
        memory.add(value, sync=not deferred)
        if deferred:
            self._unsynced.add(memory)

    def instance_keys(self) -> list[tuple[str, str, set[str]]]:
        """(instance id, minion id, states) of every key this daemon manages: those named
        like an instance id, and those MinionIdTemplate gave an instance."""
        given = (
            {minion_id: instance_id for instance_id, minion_id in self.names.items()}
            if self.names is not None
            else {}
        )
        with self.lock:
            listing = self.keys.instance_keys(given)
        found = []
        for minion_id, states in sorted(listing.items()):
            instance_id = given.get(minion_id) or minion_id
            if is_instance_id(instance_id):
                found.append((instance_id, minion_id, states))
        return found

    def enrolled_here(self, instance_id: str, minion_id: str) -> bool:
        """Did aws_ork enrol this key (the sweep deletes nothing else)? Its instance's key was
        accepted by aws_ork (a message, key binding, or Salt through aws_ork's autosign stub
        while the daemon watched: StateDir/enrolled-instances), or aws_ork wrote the
        instance an autosign stub (StateDir/preauthorised-instances), or MinionIdTemplate
        gave the instance this id (StateDir/minion-ids). A key shaped like an instance id
        that none of these knows was put there by someone else (a hand-accepted minion of
        another region or account): EC2 of SQS_Region not knowing it proves nothing."""
        if minion_id != instance_id:
            return self.names is not None and self.names.minion_of(instance_id) == minion_id
        return any(
            memory is not None and instance_id in memory
            for memory in (self.enrolled, self.preauthorised)
        )

    def sweep_accept(self, instance_id: str, minion_id: str, verdict: LaunchProof) -> int:
        """A pending key whose launch message was lost: accept it only if the instance passes
        what a launch must pass and published the key's fingerprint (key binding), and the
        key is under the id the instance is given. Never by freshness: a key presented now
        under a long-running instance's id is "younger than the instance" whoever presented
        it. Returns 1 when a key was accepted."""
        if (verdict.minion_id or instance_id) != minion_id:
            log.debug(
                "sweep: %s: pending key %s left alone: the instance's minion id is %s",
                instance_id,
                minion_id,
                verdict.minion_id or instance_id,
            )
            return 0
        if not verdict.ok:
            log.debug("sweep: %s: pending key left alone: %s", minion_id, verdict.reason)
            return 0
        if verdict.fingerprint is None:  # never by freshness (Sweep asks only under binding)
            log.debug(
                "sweep: %s: pending key left alone: the sweep accepts only the key the "
                "instance published (KeyBinding = tag)",
                minion_id,
            )
            return 0
        with self.lock:
            refused = self._claim(instance_id, minion_id)
            if refused is not None:
                log.warning("sweep: %s: pending key left alone: %s", minion_id, refused)
                return 0
            if verdict.published is not None:
                result = self._preaccept(
                    instance_id, minion_id, verdict.published, verdict.fingerprint
                )
            else:
                result = self._accept_bound(instance_id, minion_id, verdict.fingerprint)
        log.info(
            "sweep: launch %s (its launch message was lost): %s (key binding: %s)",
            named(instance_id, minion_id),
            result.describe(),
            verdict.fingerprint,
        )
        return int(result.outcome is Outcome.ACCEPTED and result.changed)

    def sweep_delete(self, instance_id: str, minion_id: str, why: str) -> int:
        """The key of an instance that is gone: delete it, as its terminate would have.
        Returns 1 when a key was deleted."""
        with self.lock:
            if self.terminations is not None:
                self.terminations.remember(instance_id)
            result = self._delete(instance_id, minion_id)
        log.info(
            "sweep: terminate %s (%s): %s", named(instance_id, minion_id), why, result.describe()
        )
        return int(result.changed)

    def change(self, key_plan: KeyPlan) -> tuple[str | None, KeyResult | None]:
        """The plan's accept or delete, after the claim of the minion id (MinionIdTemplate):
        (why the instance may not hold the id, None) or (None, what the key stage did).
        OSError when StateDir cannot be written."""
        with self.lock:
            refused = (
                self._claim(key_plan.instance_id, key_plan.minion_id) if key_plan.claims else None
            )
            return refused, self._do(key_plan) if refused is None else None

    def reject_stale(self, key_plan: KeyPlan) -> tuple[str | None, KeyResult | None]:
        """The instance check found a pending key older than the instance: someone else
        submitted it under this id. Move it to the rejected keys, where it is never accepted
        and an operator can still inspect it; but only under an id this instance may hold
        (MinionIdTemplate: the id is claimed first): a pending key under an id another
        instance holds is that instance's, and is left alone. KeyStoreError, OSError."""
        minion_id = key_plan.minion_id
        with self.lock:
            refused = self._claim(key_plan.instance_id, minion_id)
            if refused is not None:
                return refused, None
            log.error(
                "SECURITY: %s: %s: someone else submitted a key under this id; it "
                "is moved to the rejected keys and never accepted (inspect it: "
                "salt-key -f %s)",
                minion_id,
                key_plan.reason,
                minion_id,
            )
            return None, self._tally(self.keys.reject(minion_id))

    def give_up_bound(self, minion_id: str, fingerprint: str) -> bool:
        """A bound launch given up (the bound key never presented): the impostors' pending
        and denied keys under the id were proven not to be the instance's key; remove them
        (never a key with the published fingerprint, never an accepted key). True when
        the key store changed."""
        with self.lock:
            removed = self.keys.drop_impostors(minion_id, fingerprint)
        if not removed:
            return False
        dry = self.keys.dry_run
        log.warning(
            "%s: key binding gave up; %s %d key(s) presented under this id with "
            "another fingerprint than the instance published (%s): %s",
            minion_id,
            "would remove" if dry else "removed",
            len(removed),
            fingerprint,
            clean(", ".join(removed), 400),
        )
        return not dry

    def key_presented(
        self, minion_id: str, fingerprint: str, presented: str | None = None
    ) -> tuple[str | None, KeyResult]:
        """Key binding: a key was presented under a waiting id (``presented``: the public
        key of its ``salt/auth`` event): accept it if it is the bound key. Returns the
        instance the id belongs to and what was done."""
        instance_id = self.instance_of(minion_id)
        with self.lock:
            result = self._accept_bound(instance_id, minion_id, fingerprint, presented)
        return instance_id, result

    def wait_for_bound_key(self, minion_id: str, fingerprint: str) -> None:
        """Key binding: the arrivals watcher looks out for this id's bound key."""
        if self.arrivals is not None:
            self.arrivals.wait_for(minion_id, fingerprint)

    def salt_accepted(self, minion_id: str) -> bool:
        """Salt used our autosign stub for this minion: is its key accepted now?"""
        return ACCEPTED in self.keys.states(minion_id)

    def enrol(self, instance_id: str) -> None:
        """An instance whose key Salt accepted through our stub: never enrolled again.
        OSError when StateDir cannot be written."""
        if self.enrolled is not None:
            self.enrolled.add(instance_id)


def named(instance_id: str, minion_id: str) -> str:
    """An instance for a log line: its id, and its minion id when that is another."""
    return instance_id if minion_id == instance_id else f"{instance_id} (minion {minion_id})"
