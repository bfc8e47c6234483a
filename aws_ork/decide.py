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
from aws_ork.base.saltkeys import ACCEPTED
from aws_ork.base.text import clean
from aws_ork.checks import Check
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
from aws_ork.keys.result import KeyPlan, KeyResult, Outcome, Step
from aws_ork.keys.stage import KeyStage
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
        #: every key-side effect and the key lock
        self.stage = KeyStage(
            keys,
            terminations=terminations,
            enrolled=enrolled,
            arrivals=arrivals,
            names=names,
            preauthorised=preauthorised,
        )
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
        self._parsed: dict[str, Event] = {}  # the batch in hand, parsed once by prime()
        #: batches prepared ahead (defaults.RECEIVE_AHEAD at most), by their message ids
        self._prepared: dict[tuple[str, ...], _Prepared] = {}
        self._prepared_lock = threading.Lock()

    @property
    def keys(self) -> KeyManager:
        """The key manager (the key stage's; replaced on SIGHUP)."""
        return self.stage.keys

    @property
    def key_counts(self) -> Counter[str]:
        """Key changes made (accepted, deleted, preauthorised, rejected, impostor), for the
        metrics: the key stage's tally."""
        return self.stage.key_counts

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: a key manager for the master's (re-read) config, and the same for every
        check that reads the key store."""
        self.stage.reload(opts)
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
        self.stage.begin_batch()
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
        self.stage.flush()

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
        minion_id = report.minion_id or self.stage.minion_of(event.instance_id)
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
            refused, result = self.stage.change(key_plan)
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
            self.stage.remember(self.finished, event.message_id)
        return decision

    # --- MinionIdTemplate: which key belongs to which instance ---

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

    def _give_up_bound(self, decision: Decision, minion_id: str, fingerprint: str) -> Decision:
        """A bound launch given up: the key stage removes the impostors' keys under the id;
        the mirror is due when it did."""
        if not self.stage.give_up_bound(minion_id, fingerprint):
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
        instance_id, result = self.stage.key_presented(minion_id, fingerprint, presented)
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

    def note_accepted_by_salt(self, minion_ids: Sequence[str]) -> None:
        """Salt used up our autosign stubs for these minions: those accepted are enrolled,
        announced to Salt's reactor, and their waiting lifecycle actions completed."""
        if self.enrolled is None and self.salt_events is None and self.completer is None:
            return
        for minion_id in minion_ids:
            instance_id = self.stage.instance_of(minion_id)
            try:
                if ACCEPTED not in self.stage.keys.states(minion_id):
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
        """A pending key older than the instance: the key stage rejects it (under an id this
        instance may hold); the message is retried when that cannot be done now."""
        try:
            refused, result = self.stage.reject_stale(key_plan)
        except KeyStoreError as exc:
            why = f"stale pending key could not be rejected: {exc}"
            return policy.retry(message.receive_count, why, "stale_key")
        except OSError as exc:  # the claim's StateDir/minion-ids
            return policy.retry(
                message.receive_count, f"cannot write to StateDir: {exc}", "state_dir"
            )
        if result is None:
            assert refused is not None
            return policy.id_refused(refused)
        return policy.stale_rejected(key_plan, result)
