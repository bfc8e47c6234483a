"""Decide what one message means for the key store, and what becomes of the message.

Data flows one way: message body -> :func:`aws_ork.events.parse` -> checks ->
:class:`~aws_ork.decision.CheckReport` -> :class:`~aws_ork.keys.result.KeyPlan` -> the key stage
-> :class:`~aws_ork.keys.result.KeyResult` -> :class:`~aws_ork.decision.Decision`. The checks
only look; what they found is read, and what follows from it decided, by the pure functions of
:mod:`aws_ork.decision`; the key stage (:class:`~aws_ork.keys.stage.KeyStage`) makes every key
change; the effects after the decision (the lifecycle action, the reactor event) are
:mod:`aws_ork.effects`'. This module only calls them, in that order, downward. The loop acts on
the decision (delete, retry soon, or leave). Every decision is one log line: message id, event,
outcome, reason.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from aws_ork import decision as policy
from aws_ork import defaults, events
from aws_ork.base.errors import AwsOrkError, KeyStoreError
from aws_ork.base.text import clean
from aws_ork.checks import Check
from aws_ork.checks.terminations import Terminations
from aws_ork.checks.verdict import BatchLookup, Reading, Reloadable
from aws_ork.decision import Decision
from aws_ork.effects.announce import Announcer
from aws_ork.effects.hooks import Hooks
from aws_ork.events import Event, Kind, Source
from aws_ork.keys.result import KeyPlan, KeyResult, Step
from aws_ork.keys.stage import KeyStage, KeyStore
from aws_ork.memory import IdMemory, valid_id
from aws_ork.sqs.queue import Message

log = logging.getLogger(__name__)


class TagWatch(Protocol):
    """Key binding: where a launch waiting for its instance's key tags is looked after
    (:class:`~aws_ork.checks.keytags.KeyTagWatcher`)."""

    def watch(self, instance_id: str, /) -> None: ...

    def drop(self, instance_id: str, /) -> None: ...


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
        stage: KeyStage,
        *,
        delete_unknown: bool = True,
        checks: Sequence[Check] = (),
        terminations: Terminations | None = None,
        finished: IdMemory | None = None,
        announcer: Announcer | None = None,
        hooks: Hooks | None = None,
        key_tags: TagWatch | None = None,
    ) -> None:
        #: every key-side effect and the key lock
        self.stage = stage
        self.delete_unknown = delete_unknown
        self.checks = tuple(checks)
        #: the checks that look a whole batch up at once (the EC2 check)
        self._lookups = tuple(c for c in self.checks if isinstance(c, BatchLookup))
        self._codes = tuple(check.code for check in self.checks)
        self.terminations = terminations  # without VerifyInstances: honoured terminates
        self.finished = finished  # SNS MessageIds of finished envelopes (no replay)
        #: the effects after a decision: the reactor event, the lifecycle action
        self.announcer = announcer or Announcer(None)
        self.hooks = hooks or Hooks(None)
        #: key binding: launches waiting for their key tags are looked for every second
        self.key_tags = key_tags
        self._parsed: dict[str, Event] = {}  # the batch in hand, parsed once by prime()
        #: batches prepared ahead (defaults.RECEIVE_AHEAD at most), by their message ids
        self._prepared: dict[tuple[str, ...], _Prepared] = {}
        self._prepared_lock = threading.Lock()

    @property
    def keys(self) -> KeyStore:
        """The key store (the key stage's; replaced on SIGHUP)."""
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
        self.announcer.reload(opts)
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
        if self.key_tags is not None:
            if policy.awaits_published_key(event.kind, report):
                self.key_tags.watch(event.instance_id)
            elif policy.gives_up_published_key(event.kind, report):
                self.key_tags.drop(event.instance_id)
        if report.reading is Reading.DEFER:
            state = self.hooks.while_deferred(event, report)
            return policy.deferred(report, message.receive_count, state)
        if report.reading is Reading.REFUSE:
            self.hooks.refused(event)
            denied = policy.refused(report)
            if report.announced:  # else anyone's text: never on the master's bus
                self.announcer.decided(
                    denied, event, message.message_id, report.facts, minion_id=minion_id
                )
            return denied
        key_plan = policy.plan(event.kind, event.instance_id, minion_id, report)
        if key_plan.step is Step.REJECT_STALE:
            decision = self._reject_stale(key_plan, message)
            self.announcer.decided(
                decision, event, message.message_id, report.facts, minion_id=minion_id
            )
            return decision
        return self._change_keys(event, message, key_plan, report.facts)

    def _change_keys(
        self,
        event: Event,
        message: Message,
        key_plan: KeyPlan,
        facts: Mapping[str, Any] | None,
    ) -> Decision:
        """The key stage does the plan's accept or delete; then what follows from it (the
        lifecycle action, the wait for a bound key, the replay memory, the reactor event)."""
        count = message.receive_count
        result: KeyResult | None = None
        try:
            if event.kind is Kind.TERMINATE and self.terminations is not None:
                self.terminations.remember(key_plan.instance_id)
            refused, result = self.stage.change(key_plan)
            if result is None:
                assert refused is not None
                self.hooks.refused(event)
                decision = policy.id_refused(refused)
            else:
                decision = policy.with_minion(
                    self._followed(event, count, key_plan, result), key_plan
                )
        except KeyStoreError as exc:
            log.error("message %s: key store error: %s", message.message_id, exc)
            return policy.retry(count, f"key store error, retrying: {exc}", "key_store")
        except OSError as exc:  # the memories in StateDir
            return policy.retry(count, f"cannot write to StateDir: {exc}", "state_dir")
        except AwsOrkError as exc:
            return policy.retry(count, f"error, retrying: {exc}")
        self.announcer.decided(
            decision, event, message.message_id, facts, result, minion_id=key_plan.minion_id
        )
        return decision

    def _followed(self, event: Event, count: int, key_plan: KeyPlan, result: KeyResult) -> Decision:
        """The decision from the key result, and its effects: the arrivals watcher looks out
        for a bound key, the lifecycle action, a given-up bound launch's impostors, the
        finished envelope remembered (durable before the message goes)."""
        decision = policy.after_keys(key_plan, result, count)
        if policy.waits_for_bound_key(key_plan, result, decision):
            assert key_plan.fingerprint is not None
            self.stage.wait_for_bound_key(key_plan.minion_id, key_plan.fingerprint)
        decision = self.hooks.after_keys(event, decision, result, count)
        if policy.gives_up_bound(key_plan, result, decision):
            assert key_plan.fingerprint is not None
            if self.stage.give_up_bound(key_plan.minion_id, key_plan.fingerprint):
                # the key stage removed the impostors' keys: the mirror is due
                decision = replace(decision, changed=True, minion_id=key_plan.minion_id)
        if self.finished is not None and policy.remembers_envelope(
            decision, event.source is Source.SNS, valid_id(event.message_id)
        ):
            assert event.message_id is not None
            self.stage.remember(self.finished, event.message_id)
        return decision

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
