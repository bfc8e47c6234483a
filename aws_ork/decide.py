"""Decide what one message means for the key store, and what becomes of the message.

Data flows one way: message body -> :func:`aws_ork.events.parse` -> checks -> key manager ->
:class:`~aws_ork.decision.Decision`. The checks only look; what they found is read, and what
follows from it decided, by the pure functions of :mod:`aws_ork.decision` (a
:class:`~aws_ork.decision.CheckReport`, a :class:`~aws_ork.decision.KeyPlan`); this module asks
the checks and the key manager and applies the effects (the key change, a stale pending key
rejected, a terminate remembered, the lifecycle action, the reactor event). The loop acts on
the decision (delete, retry soon, or leave). Every decision is one log line: message id,
event, outcome, reason.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aws_ork import decision as policy
from aws_ork import defaults, events
from aws_ork.base.errors import AwsOrkError, KeyStoreError
from aws_ork.base.ids import is_instance_id
from aws_ork.base.saltkeys import ACCEPTED
from aws_ork.base.text import clean
from aws_ork.checks import Check, Verdict
from aws_ork.checks.terminations import Terminations
from aws_ork.checks.verdict import BatchLookup, Reading, Reloadable
from aws_ork.decision import (
    CheckReport,
    Decision,
    HookStep,
)
from aws_ork.events import Event, Kind, Source
from aws_ork.keys import reactor
from aws_ork.keys.arrivals import KeyArrivals
from aws_ork.keys.manager import KeyManager
from aws_ork.keys.naming import claim_refusal, owner_of_key
from aws_ork.keys.result import KeyPlan, KeyResult, Outcome, Step
from aws_ork.lifecycle import Completer, HookAction, LifecycleError
from aws_ork.memory import IdMemory, MinionNames, valid_id
from aws_ork.sqs.queue import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Prepared:
    """A batch parsed, and what the checks looked up ahead for it (check, what it found)."""

    message_ids: tuple[str, ...]
    parsed: Mapping[str, Event]
    looked: Sequence[tuple[BatchLookup, Any]]


class Handler:
    """Turns a message into a key operation and a decision about the message."""

    def __init__(
        self,
        keys: KeyManager,
        *,
        delete_unknown: bool = True,
        checks: Sequence[Check] = (),
        terminations: Terminations | None = None,
        finished: IdMemory | None = None,
        enrolled: IdMemory | None = None,
        arrivals: KeyArrivals | None = None,
        salt_events: reactor.SaltEvents | None = None,
        completer: Completer | None = None,
        completes_hook: Callable[[str | None], bool] = lambda _name: True,
        names: MinionNames | None = None,
        preauthorised: IdMemory | None = None,
    ) -> None:
        self.keys = keys
        self.delete_unknown = delete_unknown
        self.checks = tuple(checks)
        #: the checks that look a whole batch up at once (the EC2 check)
        self._lookups = tuple(c for c in self.checks if isinstance(c, BatchLookup))
        self._codes = tuple(check.code for check in self.checks)
        self.terminations = terminations  # without VerifyInstances: honoured terminates
        self.finished = finished  # SNS MessageIds of finished envelopes (no replay)
        self.enrolled = enrolled  # instances whose keys were accepted once (never again)
        self.arrivals = arrivals  # key binding: launches waiting for their bound key
        self.salt_events = salt_events  # aws_ork/<kind>/<id> for Salt's reactor (SaltEvents)
        self.completer = completer  # lifecycle actions: completed once the key work is done
        self.completes_hook = completes_hook  # LifecycleHooks: is this hook ours to answer?
        self.names = names  # MinionIdTemplate: the minion id each instance was given
        self.preauthorised = preauthorised  # instances given an autosign stub (the sweep's)
        # the loop and the arrivals thread both change keys: one at a time
        self._keys_lock = threading.RLock()
        self._parsed: dict[str, Event] = {}  # the batch in hand, parsed once by prime()
        #: batches prepared ahead (defaults.RECEIVE_AHEAD at most), by their message ids
        self._prepared: dict[tuple[str, ...], _Prepared] = {}
        self._prepared_lock = threading.Lock()
        #: the loop's thread while it handles a batch: memories written there are made
        #: durable once for the batch (:meth:`flush`), before its messages are deleted
        self._batch_thread: int | None = None
        self._unsynced: set[IdMemory] = set()
        #: key changes made (accepted, deleted, preauthorised, rejected, impostor), for metrics
        self.key_counts: Counter[str] = Counter()
        #: key binding: (minion id, fingerprint) of impostor keys already logged
        self._impostors_seen: set[tuple[str, str]] = set()

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: a key manager for the master's (re-read) config, and the same for every
        check that reads the key store."""
        with self._keys_lock:
            old, self.keys = self.keys, KeyManager(opts, dry_run=self.keys.dry_run)
        old.close()
        if self.salt_events is not None:
            self.salt_events.reload(opts)
        for check in self.checks:
            if isinstance(check, Reloadable):
                check.reload(opts)

    def prepare(self, messages: Sequence[Message]) -> None:
        """Right after a prefetched receive, in the receiver's helper thread: parse the batch
        and make the look-ups that can be made ahead (the EC2 check's one DescribeInstances)
        while the loop still handles the previous batch, so that the EC2 round trip is not
        on the drain's critical path. Only looks; :meth:`prime` takes the result when this
        very batch comes up. Never raises (prime then does the work itself)."""
        try:
            prepared = self._prepare(messages)
        except Exception:
            log.debug("could not prepare the next batch ahead; prime will", exc_info=True)
            return
        with self._prepared_lock:
            self._prepared[prepared.message_ids] = prepared
            while len(self._prepared) > defaults.RECEIVE_AHEAD:  # never taken (a stop)
                del self._prepared[next(iter(self._prepared))]

    def _prepare(self, messages: Sequence[Message]) -> _Prepared:
        parsed = {m.message_id: events.parse(m.body) for m in messages}
        ids = {
            e.instance_id
            for e in parsed.values()
            if e.instance_id is not None and e.kind in (Kind.LAUNCH, Kind.TERMINATE)
        }
        looked = [(check, check.look_ahead(ids)) for check in self._lookups]
        return _Prepared(tuple(m.message_id for m in messages), parsed, looked)

    def prime(self, messages: Sequence[Message]) -> None:
        """Before a batch: parse its messages once and let the checks that can (the EC2
        check) look up every instance of the batch in one call, or take what
        :meth:`prepare` found ahead for exactly this batch."""
        self._batch_thread = threading.get_ident()
        with self._prepared_lock:
            prepared = self._prepared.pop(tuple(m.message_id for m in messages), None)
        try:
            if prepared is None:
                prepared = self._prepare(messages)
            self._parsed = dict(prepared.parsed)
            for check, found in prepared.looked:
                check.use(found)
        except Exception:  # only an optimisation: each message is still handled on its own
            log.error("could not prepare the batch; handling message by message", exc_info=True)
            self.forget()

    def flush(self) -> None:
        """After a batch, before its messages are deleted: make what it remembered durable,
        one fsync per memory instead of one per message. OSError when that fails: none of the
        batch's messages may then be reported done."""
        self._batch_thread = None
        unsynced, self._unsynced = self._unsynced, set()
        for memory in unsynced:
            memory.sync()

    def _remember(self, memory: IdMemory, value: str) -> None:
        """Add to a replay memory: durable now, or (in the loop's batch) at :meth:`flush`."""
        deferred = self._batch_thread == threading.get_ident()
        memory.add(value, sync=not deferred)
        if deferred:
            self._unsynced.add(memory)

    def forget(self) -> None:
        """After a batch: nothing of it is reused for the next one."""
        self._parsed = {}
        for check in self._lookups:
            check.forget()

    def handle(self, message: Message) -> Decision:
        """Handle one message; never raises. Whatever goes wrong (a key file Salt cannot
        read, a bug of ours) is logged with its traceback and the message retried with
        backoff: the queue's redrive policy sets a message aside that always fails."""
        try:
            event = self._parsed.pop(message.message_id, None) or events.parse(message.body)
            decision = replace(self._decide(event, message), kind=event.kind.value)
            described = event.describe()
        except Exception as exc:
            log.error(
                "message %s: unexpected %s while handling it; retrying",
                clean(message.message_id),
                type(exc).__name__,
                exc_info=True,
            )
            return policy.retry(message.receive_count, f"unexpected {type(exc).__name__}")
        level = logging.WARNING if decision.rejected else logging.INFO
        log.log(level, "message %s: %s: %s", clean(message.message_id), described, decision.reason)
        return decision

    def _decide(self, event: Event, message: Message) -> Decision:
        unchecked = policy.unchecked(event.kind, delete_unknown=self.delete_unknown)
        if unchecked is not None:
            return unchecked
        assert event.instance_id is not None  # parser guarantees it for launch/terminate
        report = policy.read_checks(
            event.kind, self._codes, (check(event) for check in self.checks), message.receive_count
        )
        # whose key: a launch's from the checks (MinionIdTemplate), a terminate's remembered
        minion_id = report.minion_id or self._minion_of(event.instance_id)
        if report.reading is Reading.DEFER:
            return self._deferred(event, message, report)
        if report.reading is Reading.REFUSE:
            self._forget_hook(event)
            denied = policy.refused(report)
            if not report.announced:
                return denied  # anyone's text: never on the master's bus
            return self._announced(denied, event, message, report.facts, minion_id=minion_id)
        key_plan = policy.plan(event.kind, event.instance_id, minion_id, report)
        if key_plan.step is Step.REJECT_STALE:
            return self._announced(
                self._reject_stale(key_plan, message),
                event,
                message,
                report.facts,
                minion_id=minion_id,
            )
        return self._change_keys(event, message, key_plan, report.facts)

    def _change_keys(
        self,
        event: Event,
        message: Message,
        key_plan: KeyPlan,
        facts: Mapping[str, Any] | None,
    ) -> Decision:
        """The key stage does the plan's accept or delete; then what follows from it (the
        lifecycle action, the wait for a bound key, the replay memory)."""
        count = message.receive_count
        try:
            if event.kind is Kind.TERMINATE and self.terminations is not None:
                self.terminations.remember(key_plan.instance_id)
            with self._keys_lock:
                refused = (
                    self._claim(key_plan.instance_id, key_plan.minion_id)
                    if key_plan.claims
                    else None
                )
                result = self._do(key_plan) if refused is None else None
            if result is None:
                assert refused is not None
                self._forget_hook(event)
                return self._announced(
                    policy.id_refused(refused),
                    event,
                    message,
                    facts,
                    minion_id=key_plan.minion_id,
                )
            decision = self._followed(event, count, key_plan, result)
        except KeyStoreError as exc:
            log.error("message %s: key store error: %s", message.message_id, exc)
            return policy.retry(count, f"key store error, retrying: {exc}", "key_store")
        except OSError as exc:  # the memories in StateDir
            return policy.retry(count, f"cannot write to StateDir: {exc}", "state_dir")
        except AwsOrkError as exc:
            return policy.retry(count, f"error, retrying: {exc}")
        return self._announced(
            policy.with_minion(decision, key_plan),
            event,
            message,
            facts,
            result,
            minion_id=key_plan.minion_id,
        )

    def _do(self, key_plan: KeyPlan) -> KeyResult:
        """The plan's key change (the caller holds the keys lock)."""
        instance_id, minion_id = key_plan.instance_id, key_plan.minion_id
        if key_plan.step is Step.DELETE:
            return self._delete(instance_id, minion_id)
        if key_plan.fingerprint is not None:
            return self._accept_bound(instance_id, minion_id, key_plan.fingerprint)
        return self._accept(instance_id, minion_id)

    def _followed(self, event: Event, count: int, key_plan: KeyPlan, result: KeyResult) -> Decision:
        """The decision from the key result, and its effects: the arrivals watcher looks out
        for a bound key, the lifecycle action, a given-up bound launch's impostors, the
        finished envelope remembered (durable before the message goes)."""
        decision = policy.after_keys(key_plan, result, count)
        if self.arrivals is not None and policy.waits_for_bound_key(key_plan, result, decision):
            assert key_plan.fingerprint is not None
            self.arrivals.wait_for(key_plan.minion_id, key_plan.fingerprint)
        action = self._hook_action(event)
        if action is not None:
            decision = self._hook_decision(event.kind, action, decision, result, count)
        if policy.gives_up_bound(key_plan, result, decision):
            assert key_plan.fingerprint is not None
            decision = self._give_up_bound(decision, key_plan.minion_id, key_plan.fingerprint)
        if self.finished is not None and policy.remembers_envelope(
            decision, event.source is Source.SNS, valid_id(event.message_id)
        ):
            assert event.message_id is not None
            self._remember(self.finished, event.message_id)
        return decision

    # --- MinionIdTemplate: which key belongs to which instance ---

    def _minion_of(self, instance_id: str) -> str:
        """The minion id of this instance's key: the one it was given (MinionIdTemplate),
        else its instance id."""
        given = self.names.minion_of(instance_id) if self.names is not None else None
        return given or instance_id

    def _instance_of(self, minion_id: str) -> str | None:
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

    def _announced(
        self,
        decision: Decision,
        event: Event,
        message: Message,
        facts: Mapping[str, Any] | None,
        result: KeyResult | None = None,
        *,
        minion_id: str | None = None,
    ) -> Decision:
        """Fire the decision's ``aws_ork/<kind>/<id>`` event for Salt's reactor (best effort:
        :mod:`aws_ork.keys.reactor`); nothing for a retry that decided nothing yet."""
        if self.salt_events is None or event.instance_id is None:
            return decision
        if decision.rejected:
            kind: reactor.Kind | None = reactor.Kind.REJECTED
        elif result is not None:
            kind = reactor.kind_of(result.outcome, terminate=event.kind is Kind.TERMINATE)
        else:
            kind = None  # a stale key that could not be rejected yet: retried
        if kind is not None:
            self.salt_events.fire(
                kind,
                minion_id or event.instance_id,
                {
                    "instance_id": event.instance_id,
                    "group": event.group,
                    "facts": facts,
                    "message_id": message.message_id,
                    "outcome": result.describe() if result is not None else "refused",
                    "reason": decision.reason,
                    "source": event.source.value,
                    "event": event.name,
                },
            )
        return decision

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
            self._remember(self.enrolled, instance_id)

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
            self._remember(self.preauthorised, instance_id)
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
                    "it would never be accepted"
                    if result.dry_run
                    else "never accepted, and removed (pending: once the genuine key is "
                    "accepted, or the launch is given up)",
                )
        self._enrol(instance_id, result)
        if result.outcome is Outcome.ACCEPTED and result.changed and self.arrivals is not None:
            pub = self.keys.public_key(minion_id)
            if pub is not None:
                self.arrivals.guard(minion_id, fingerprint, pub)
        return result

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
        with self._keys_lock:
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

    def _give_up_bound(self, decision: Decision, minion_id: str, fingerprint: str) -> Decision:
        """A bound launch given up (the bound key never presented): the impostors' pending
        and denied keys under the id were proven not to be the instance's key; remove them
        (never a key with the published fingerprint, never an accepted key)."""
        with self._keys_lock:
            removed = self.keys.drop_impostors(minion_id, fingerprint)
        if not removed:
            return decision
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
        if dry:
            return decision
        return replace(decision, changed=True, minion_id=minion_id)

    def _deferred(self, event: Event, message: Message, report: CheckReport) -> Decision:
        """A check cannot answer yet (EC2 does not list the instance yet, it has not
        published its key's fingerprint yet): retry; a launching hook's action is kept alive
        meanwhile, up to the give-up bound, but only once the message is authenticated
        (the topic, signature and source checks passed): a forged message whose certificate
        cannot be fetched must not keep anyone's action alive."""
        action = (
            self._hook_action(event) if event.kind is Kind.LAUNCH and report.authenticated else None
        )
        state = None
        if action is not None:
            assert self.completer is not None
            state = self.completer.wait(action)
        return policy.deferred(report, message.receive_count, state)

    def _forget_hook(self, event: Event) -> None:
        """A refused launch is never completed: no more heartbeats for its action."""
        action = self._hook_action(event)
        if action is not None and self.completer is not None:
            self.completer.forget(action)

    def _hook_action(self, event: Event) -> HookAction | None:
        """The lifecycle action this event asks us to complete, if any (LifecycleHooks)."""
        if self.completer is None or not self.completes_hook(event.lifecycle_hook):
            return None
        return HookAction.of(event)

    def _hook_decision(
        self,
        kind: Kind,
        action: HookAction,
        decision: Decision,
        result: KeyResult,
        count: int,
    ) -> Decision:
        """Complete the lifecycle action once the key work is done; while a launching
        action waits for its key, the message is kept (retried) so a restart loses nothing.
        A completion that fails is retried with the message; the key change it follows
        (``changed``) still reaches the mirror."""
        assert self.completer is not None
        step = policy.hook_step(kind, decision, result)
        if step is HookStep.KEEP:
            return decision  # the key is not deleted yet
        if step is HookStep.COMPLETE:
            try:
                note = self.completer.complete(action)
            except LifecycleError as exc:
                return policy.hook_failed(decision, count, str(exc))
            return policy.hook_completed(decision, note)
        if step is HookStep.FORGET:
            self.completer.forget(action)
            return policy.hook_forgotten(decision)
        return policy.hook_waited(decision, self.completer.wait(action), count)

    def on_key_presented(
        self, minion_id: str, fingerprint: str, presented: str | None = None
    ) -> bool:
        """The arrivals thread saw a key presented under a waiting id (``presented``: the
        public key of its ``salt/auth`` event, which Salt may not have kept): ask the key
        stage now. True when nothing is left to wait for."""
        instance_id = self._instance_of(minion_id)
        with self._keys_lock:
            result = self._accept_bound(instance_id, minion_id, fingerprint, presented)
        log.info(
            "key presented by %s: %s (key binding: %s)", minion_id, result.describe(), fingerprint
        )
        kind = reactor.kind_of(result.outcome, terminate=False)
        if self.salt_events is not None and kind is not None and result.outcome.done:
            self.salt_events.fire(
                kind,
                minion_id,
                {
                    "instance_id": instance_id,
                    "outcome": result.describe(),
                    "source": "key binding",
                    "reason": f"key presented (key binding: {fingerprint})",
                },
            )
        if (
            self.completer is not None
            and not result.dry_run
            and instance_id is not None
            and result.outcome in (Outcome.ACCEPTED, Outcome.ALREADY_ACCEPTED)
        ):
            self.completer.accepted(instance_id)
        return result.outcome.done

    # --- the reconcile sweep (aws_ork.sweep), in the loop's thread between receives ---

    def instance_keys(self) -> list[tuple[str, str, set[str]]]:
        """(instance id, minion id, states) of every key this daemon manages: those named
        like an instance id, and those MinionIdTemplate gave an instance."""
        given = (
            {minion_id: instance_id for instance_id, minion_id in self.names.items()}
            if self.names is not None
            else {}
        )
        with self._keys_lock:
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

    def sweep_accept(self, instance_id: str, minion_id: str, verdict: Verdict) -> int:
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
        with self._keys_lock:
            refused = self._claim(instance_id, minion_id)
            if refused is not None:
                log.warning("sweep: %s: pending key left alone: %s", minion_id, refused)
                return 0
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
        with self._keys_lock:
            if self.terminations is not None:
                self.terminations.remember(instance_id)
            result = self._delete(instance_id, minion_id)
        log.info(
            "sweep: terminate %s (%s): %s", named(instance_id, minion_id), why, result.describe()
        )
        return int(result.changed)

    def note_accepted_by_salt(self, minion_ids: Sequence[str]) -> None:
        """Salt used up our autosign stubs for these minions: those accepted are enrolled,
        announced to Salt's reactor, and their waiting lifecycle actions completed."""
        if self.enrolled is None and self.salt_events is None and self.completer is None:
            return
        for minion_id in minion_ids:
            instance_id = self._instance_of(minion_id)
            try:
                if ACCEPTED not in self.keys.states(minion_id):
                    continue
                if self.salt_events is not None:  # best effort: never raises
                    self.salt_events.fire(
                        reactor.Kind.ACCEPTED,
                        minion_id,
                        {
                            "instance_id": instance_id,
                            "outcome": Outcome.ACCEPTED.text,
                            "source": "autosign",
                            "reason": "accepted by Salt through aws_ork's autosign stub",
                        },
                    )
                if self.enrolled is not None and instance_id is not None:
                    self.enrolled.add(instance_id)
            except (OSError, ValueError, AwsOrkError) as exc:
                log.error("%s: could not remember its accepted key: %s", minion_id, exc)
                continue
            if self.completer is not None and instance_id is not None:
                self.completer.accepted(instance_id)

    def _reject_stale(self, key_plan: KeyPlan, message: Message) -> Decision:
        """The instance check found a pending key older than the instance: someone else
        submitted it under this id. Move it to the rejected keys, where it is never accepted
        and an operator can still inspect it; but only under an id this instance may hold
        (MinionIdTemplate: the id is claimed first): a pending key under an id another
        instance holds is that instance's, and is left alone."""
        minion_id = key_plan.minion_id
        try:
            with self._keys_lock:
                refused = self._claim(key_plan.instance_id, minion_id)
                if refused is not None:
                    return policy.id_refused(refused)
                log.error(
                    "SECURITY: %s: %s: someone else submitted a key under this id; it "
                    "is moved to the rejected keys and never accepted (inspect it: "
                    "salt-key -f %s)",
                    minion_id,
                    key_plan.reason,
                    minion_id,
                )
                result = self._tally(self.keys.reject(minion_id))
        except KeyStoreError as exc:
            return policy.retry(
                message.receive_count,
                f"stale pending key could not be rejected: {exc}",
                "stale_key",
            )
        except OSError as exc:  # the claim's StateDir/minion-ids
            return policy.retry(
                message.receive_count, f"cannot write to StateDir: {exc}", "state_dir"
            )
        return policy.stale_rejected(key_plan, result)

    def _tally(self, result: KeyResult) -> KeyResult:
        """Count a key change for the metrics (the loop and the arrivals thread both count)."""
        if result.dry_run:
            return result
        with self._keys_lock:
            if (
                result.outcome is Outcome.PREAUTHORISED
                or result.changed
                and result.outcome in (Outcome.ACCEPTED, Outcome.DELETED, Outcome.REJECTED)
            ):  # a stub: no change
                self.key_counts[result.outcome.name.lower()] += 1
        return result


def named(instance_id: str, minion_id: str) -> str:
    """An instance for a log line: its id, and its minion id when that is another."""
    return instance_id if minion_id == instance_id else f"{instance_id} (minion {minion_id})"
