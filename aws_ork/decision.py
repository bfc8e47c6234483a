"""The decision: what a message means, as pure functions of what is known about it.

A message's path is a chain of immutable records: :class:`~aws_ork.sqs.queue.Message` ->
:class:`~aws_ork.events.Event` -> :class:`CheckReport` (what the checks found, read at the
message's receive count) -> :class:`~aws_ork.keys.result.KeyPlan` (what the key stage is
asked to do) -> :class:`~aws_ork.keys.result.KeyResult` (what it did) -> :class:`Decision`
(what the loop does with the message). Every function here is pure: no Salt, no AWS, no
threads, no clock; what the key store holds and what a lifecycle action's wait says are
passed in. :mod:`aws_ork.decide` asks the checks and the key stage
(:mod:`aws_ork.keys.stage`) and applies the effects (reactor events, lifecycle completion,
memories); the rows of the README's decision tables are tested in ``tests/test_decision.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aws_ork import defaults
from aws_ork.checks.verdict import Reading, Verdict
from aws_ork.events import Kind
from aws_ork.keys import reactor
from aws_ork.keys.result import KeyPlan, KeyResult, Outcome, Step
from aws_ork.lifecycle.completer import State

#: The checks (by their ``code``) that say who sent a message (AllowedTopicArns,
#: VerifySignatures and UnsignedSources): nothing is done for a message's lifecycle action
#: before they pass.
AUTHENTICITY_CHECKS = frozenset({"topic", "signature"})
#: Those and the replay check: a message one of them refuses fires no reactor event: it is
#: anyone's (or anyone could send it again), and its text (a group name, a reason quoting
#: it) must not reach a reactor.
UNANNOUNCED_CHECKS = AUTHENTICITY_CHECKS | {"replay"}


class Action(enum.Enum):
    """What the loop does with the message."""

    DELETE = "delete"  # finished (or can never succeed): delete it
    RETRY = "retry"  # try again soon: set its visibility to ``Decision.delay``
    LEAVE = "leave"  # leave it for the queue's visibility timeout (DeleteUnknownMessages off)


@dataclass(frozen=True)
class Decision:
    """The result of handling one message."""

    action: Action
    reason: str
    changed: bool = False  # the key store was changed: the S3 mirror is due
    delay: int = 0
    rejected: bool = False  # failed a trust check (counted apart from unknown messages)
    minion_id: str | None = None  # whose key changed (``changed``): the mirror sends its files
    preauthorised: str | None = None  # a minion left to Salt's autosign stub: watch for it
    #: for the metrics, short fixed words only (never text from the message): the event kind,
    #: and why (a check's code, the key outcome, ``unknown``, ``error``...)
    kind: str = "unknown"
    reason_code: str = "error"


@dataclass(frozen=True)
class CheckReport:
    """What the checks found for one event, read at the message's receive count: the
    reading of the first check that did not pass (``PASS`` when all passed) and what the
    checks before it found."""

    reading: Reading = Reading.PASS
    reason: str = ""
    #: the reason code of the deciding check for the metrics (its verdict's, else its own)
    code: str = ""
    #: the deciding check does not prove who sent the message: its refusal may be announced
    announced: bool = True
    #: with ``DEFER``: every check saying who sent the message (topic, signature) passed
    authenticated: bool = True
    fingerprint: str | None = None  # key binding: the fingerprint the instance published
    published: str | None = None  # key binding by key: the public key it published (PEM)
    facts: Mapping[str, Any] | None = None  # what EC2 said, for the reactor event
    minion_id: str | None = None  # MinionIdTemplate: the id a launch's key is accepted under


def read_checks(
    kind: Kind, codes: Sequence[str], verdicts: Iterable[Verdict], receive_count: int
) -> CheckReport:
    """Read the checks' verdicts in order (``codes[i]`` names the check of the i-th
    verdict); the first that does not pass decides, and no verdict after it is taken
    (``verdicts`` may be lazy: a check after a refusal is never asked)."""
    fingerprint: str | None = None
    published: str | None = None
    facts: Mapping[str, Any] | None = None
    minion_id: str | None = None
    for index, (check_code, verdict) in enumerate(zip(codes, verdicts)):
        fingerprint = verdict.fingerprint or fingerprint
        published = verdict.published or published
        facts = verdict.facts or facts
        if kind is Kind.LAUNCH:
            minion_id = verdict.minion_id or minion_id
        reading = verdict.reading(receive_count)
        if reading is Reading.PASS:
            continue
        return CheckReport(
            reading,
            verdict.reason,
            verdict.code or check_code,
            announced=check_code not in UNANNOUNCED_CHECKS,
            authenticated=not any(code in AUTHENTICITY_CHECKS for code in codes[index:]),
            fingerprint=fingerprint,
            published=published,
            facts=facts,
            minion_id=minion_id,
        )
    return CheckReport(
        fingerprint=fingerprint, published=published, facts=facts, minion_id=minion_id
    )


def unchecked(kind: Kind, *, delete_unknown: bool) -> Decision | None:
    """The decision for a message no check looks at (unknown, a test notification, a
    launch error: no key change), or None for a launch or terminate."""
    if kind is Kind.UNKNOWN:
        if delete_unknown:
            return Decision(Action.DELETE, "ignored, deleted", reason_code="unknown")
        return Decision(
            Action.LEAVE,
            "ignored, left in queue (DeleteUnknownMessages off)",
            reason_code="unknown",
        )
    if kind is Kind.TEST:
        return Decision(Action.DELETE, "test notification, deleted", reason_code="test")
    if kind is Kind.LAUNCH_ERROR:
        return Decision(
            Action.DELETE, "launch failed in AWS; no key change", reason_code="launch_error"
        )
    return None


def retry(receive_count: int, reason: str, code: str = "error") -> Decision:
    """Retry with backoff (:func:`aws_ork.defaults.retry_delay` of the receive count)."""
    delay = defaults.retry_delay(receive_count)
    return Decision(Action.RETRY, f"{reason}; retry in {delay}s", delay=delay, reason_code=code)


def refused(report: CheckReport) -> Decision:
    """A check refused the message for good (or a stale key could not be told apart)."""
    return Decision(
        Action.DELETE, f"REJECTED: {report.reason}", rejected=True, reason_code=report.code
    )


def deferred(report: CheckReport, receive_count: int, hook: State | None = None) -> Decision:
    """A check cannot answer yet: retry. ``hook`` is what keeping the launch's lifecycle
    action alive said (None: no action kept alive); given up, the message is done."""
    reason = f"check deferred: {report.reason}"
    if hook is None:
        return retry(receive_count, reason, report.code)
    if hook is State.GIVEN_UP:
        return Decision(Action.DELETE, f"{reason}; {hook.value}", reason_code=report.code)
    return retry(receive_count, f"{reason}; {hook.value}", report.code)


def plan(kind: Kind, instance_id: str, minion_id: str, report: CheckReport) -> KeyPlan:
    """The key step for an event whose checks passed, or found a stale pending key
    (``minion_id``: the id its key is under, the checks' for a launch)."""
    if report.reading is Reading.STALE:
        return KeyPlan(Step.REJECT_STALE, instance_id, minion_id, reason=report.reason)
    if kind is Kind.TERMINATE:
        return KeyPlan(Step.DELETE, instance_id, minion_id)
    if report.published is not None:
        return KeyPlan(
            Step.PREACCEPT, instance_id, minion_id, report.fingerprint, published=report.published
        )
    if report.fingerprint is not None:
        return KeyPlan(Step.ACCEPT_BOUND, instance_id, minion_id, report.fingerprint)
    return KeyPlan(Step.ACCEPT, instance_id, minion_id)


def id_refused(refusal: str) -> Decision:
    """The instance may not hold the minion id it asks for."""
    return Decision(Action.DELETE, f"REJECTED: {refusal}", rejected=True, reason_code="minion_id")


def stale_rejected(key_plan: KeyPlan, result: KeyResult) -> Decision:
    """A stale pending key was moved to the rejected keys (or would be)."""
    return Decision(
        Action.DELETE,
        f"REJECTED: {key_plan.reason}: {result.describe()}",
        rejected=True,
        changed=result.changed,
        minion_id=key_plan.minion_id if result.changed else None,
        reason_code="stale_key",
    )


def from_result(result: KeyResult, receive_count: int, minion_id: str | None = None) -> Decision:
    """The message's fate from the key stage's outcome: done (deleted), or retried."""
    if result.outcome.done:
        stubbed = result.outcome is Outcome.PREAUTHORISED and not result.dry_run
        return Decision(
            Action.DELETE,
            result.describe(),
            changed=result.changed,
            minion_id=minion_id if result.changed else None,
            preauthorised=minion_id if stubbed else None,
            reason_code=result.outcome.name.lower(),
        )
    return retry(receive_count, result.describe(), result.outcome.name.lower())


def bound(decision: Decision, result: KeyResult, receive_count: int, fingerprint: str) -> Decision:
    """Key binding: name the fingerprint; give up on a key never presented after
    BOUND_KEY_ATTEMPTS receives."""
    reason = f"{decision.reason} (key binding: {fingerprint})"
    if result.outcome is Outcome.BOUND_NOT_YET and receive_count >= defaults.BOUND_KEY_ATTEMPTS:
        return Decision(
            Action.DELETE,
            f"REJECTED: gave up after {receive_count} receives: {reason}",
            rejected=True,
            reason_code="binding",
        )
    return replace(decision, reason=reason)


def published_key(decision: Decision, result: KeyResult, fingerprint: str | None) -> Decision:
    """Key binding by key: name the key the instance published; a key already accepted
    under another id is a refusal (one key must not be two minions)."""
    reason = (
        f"{decision.reason} (key binding by key: the key the instance published, {fingerprint})"
    )
    if result.outcome is Outcome.KEY_TWICE:
        return replace(
            decision, reason=f"REJECTED: {reason}", rejected=True, reason_code="key_twice"
        )
    return replace(decision, reason=reason)


def awaits_published_key(kind: Kind, report: CheckReport) -> bool:
    """Key binding: a launch deferred because its instance has published neither its key
    nor its fingerprint yet: the key tag watcher looks for them every second."""
    return kind is Kind.LAUNCH and report.reading is Reading.DEFER and report.code == "binding"


def gives_up_published_key(kind: Kind, report: CheckReport) -> bool:
    """Key binding: the launch's checks refused it for good (its tags never came, or do not
    hold a key): the key tag watcher stops looking."""
    return kind is Kind.LAUNCH and report.reading is Reading.REFUSE and report.code == "binding"


def after_keys(key_plan: KeyPlan, result: KeyResult, receive_count: int) -> Decision:
    """The decision once the key stage did the plan's accept or delete."""
    decision = from_result(result, receive_count, key_plan.minion_id)
    if key_plan.step is Step.PREACCEPT:
        return published_key(decision, result, key_plan.fingerprint)
    if key_plan.fingerprint is not None:
        decision = bound(decision, result, receive_count, key_plan.fingerprint)
    return decision


def waits_for_bound_key(key_plan: KeyPlan, result: KeyResult, decision: Decision) -> bool:
    """Key binding: the launch still waits for its key (the arrivals watcher looks out)."""
    return (
        key_plan.fingerprint is not None
        and result.outcome is Outcome.BOUND_NOT_YET
        and not decision.rejected
    )


def gives_up_bound(key_plan: KeyPlan, result: KeyResult, decision: Decision) -> bool:
    """Key binding: the launch is given up without its key (the impostors' keys under the
    id are then proven not the instance's)."""
    return (
        key_plan.fingerprint is not None
        and result.outcome is Outcome.BOUND_NOT_YET
        and decision.action is Action.DELETE
    )


def with_minion(decision: Decision, key_plan: KeyPlan) -> Decision:
    """MinionIdTemplate: the decision line names the key when it is not the instance id."""
    if key_plan.minion_id == key_plan.instance_id:
        return decision
    return replace(decision, reason=f"minion {key_plan.minion_id}: {decision.reason}")


class HookStep(enum.Enum):
    """What becomes of the lifecycle action (LifecycleHooks) once the key stage acted."""

    KEEP = "keep"  # nothing yet: a terminate whose key is not deleted yet
    COMPLETE = "complete"  # the key is accepted (launching) or deleted (terminating)
    FORGET = "forget"  # never completed by us: the hook's DefaultResult decides
    WAIT = "wait"  # a launching action waits for its key: kept alive, the message kept


def hook_step(kind: Kind, decision: Decision, result: KeyResult) -> HookStep:
    """The lifecycle action's step for this decision and key outcome."""
    if kind is Kind.TERMINATE:
        return HookStep.COMPLETE if decision.action is Action.DELETE else HookStep.KEEP
    if result.outcome in (Outcome.ACCEPTED, Outcome.ALREADY_ACCEPTED):
        return HookStep.COMPLETE
    if decision.action is Action.DELETE and result.outcome is not Outcome.PREAUTHORISED:
        # refused, removed, another key accepted, given up: never accepted by us
        return HookStep.FORGET
    return HookStep.WAIT


def hook_completed(decision: Decision, note: str) -> Decision:
    """The action was completed (``note``: what the completer said)."""
    return replace(decision, reason=f"{decision.reason}; {note}")


def hook_failed(decision: Decision, receive_count: int, error: str) -> Decision:
    """The completion failed: retried with the message; the key change it follows
    (``changed``) still reaches the mirror."""
    again = retry(receive_count, f"{decision.reason}; {error}")
    return replace(decision, action=Action.RETRY, delay=again.delay, reason=again.reason)


def hook_forgotten(decision: Decision) -> Decision:
    """A refused launch's action is never completed."""
    return replace(
        decision, reason=f"{decision.reason}; lifecycle action left to the hook's DefaultResult"
    )


def hook_waited(decision: Decision, state: State, receive_count: int) -> Decision:
    """A launching action waits for its key: the message is kept (retried) while it waits,
    so a restart loses nothing; done once completed or given up."""
    if state is State.WAITING:
        return hook_failed(decision, receive_count, state.value)
    return replace(decision, action=Action.DELETE, reason=f"{decision.reason}; {state.value}")


def remembers_envelope(decision: Decision, source_is_sns: bool, usable_id: bool) -> bool:
    """No replay: a finished SNS envelope's MessageId is remembered (durable before the
    message is deleted); a message only deferred is not finished."""
    return decision.action is Action.DELETE and source_is_sns and usable_id


def announced_kind(
    decision: Decision, result: KeyResult | None, *, terminate: bool
) -> reactor.Kind | None:
    """The kind of reactor event a decision makes: ``rejected`` for a refusal, else what the
    key result says; None for a retry that decided nothing yet (a stale key that could not be
    rejected yet)."""
    if decision.rejected:
        return reactor.Kind.REJECTED
    if result is None:
        return None
    return reactor.kind_of(result.outcome, terminate=terminate)
