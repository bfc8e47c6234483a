"""The decision as pure functions (aws_ork.decision): every row of the decision tables of
docs/security.md and docs/aws.md ("The checks, in order", Terminates, Freshness, No replay,
Key binding, Lifecycle hooks), without moto, Salt or threads. What each check answers for
what EC2 or a signature says is tested with the checks (tests/test_checks.py,
tests/test_signature.py); here is what the daemon does with those answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aws_ork import decision as policy
from aws_ork import defaults
from aws_ork.base.naming import claim_refusal
from aws_ork.checks import Verdict
from aws_ork.checks.ec2 import BINDING_TAG_ATTEMPTS, NOT_FOUND_ATTEMPTS
from aws_ork.checks.verdict import Reading
from aws_ork.decision import Action, CheckReport, Decision, HookStep
from aws_ork.events import Kind
from aws_ork.keys import reactor
from aws_ork.keys.result import KeyPlan, KeyResult, Outcome, Step
from aws_ork.lifecycle.completer import State

ID = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
FP = "aa:bb"
#: the checks of the default config, in order; without VerifyInstances the last is "terminated"
CODES = ("topic", "signature", "replay", "instance")
WITHOUT_EC2 = ("topic", "signature", "replay", "terminated")
P = Verdict.passed()
PEM = "-----BEGIN PUBLIC KEY-----\nMII...\n-----END PUBLIC KEY-----\n"


def report(verdicts: list[Verdict], receives: int = 1, kind: Kind = Kind.LAUNCH) -> CheckReport:
    codes = WITHOUT_EC2 if len(verdicts) == 5 else CODES
    return policy.read_checks(kind, codes, verdicts[: len(codes)], receives)


@pytest.mark.parametrize(
    ("kind", "delete_unknown", "action", "code"),
    [
        (Kind.UNKNOWN, True, Action.DELETE, "unknown"),
        (Kind.UNKNOWN, False, Action.LEAVE, "unknown"),
        (Kind.TEST, True, Action.DELETE, "test"),
        (Kind.TEST, False, Action.DELETE, "test"),
        (Kind.LAUNCH_ERROR, True, Action.DELETE, "launch_error"),
    ],
)
def test_messages_without_a_key_change_are_never_checked(kind, delete_unknown, action, code):
    decided = policy.unchecked(kind, delete_unknown=delete_unknown)
    assert decided is not None and (decided.action, decided.reason_code) == (action, code)
    assert not decided.rejected and not decided.changed


@pytest.mark.parametrize("kind", [Kind.LAUNCH, Kind.TERMINATE])
def test_launches_and_terminates_are_checked(kind):
    assert policy.unchecked(kind, delete_unknown=True) is None


# (row of "The checks, in order", verdicts in check order, receive count, kind,
#  reading, reason code, announced to Salt's reactor, authenticated)
CHECK_ROWS = [
    ("topic: another topic", [Verdict.refused("topic x")], 1, Kind.LAUNCH,
     Reading.REFUSE, "topic", False, True),
    ("signature: bad signature", [P, Verdict.refused("SNS signature invalid")], 1, Kind.LAUNCH,
     Reading.REFUSE, "signature", False, True),
    ("signature: unsigned source", [P, Verdict.refused("unsigned raw")], 1, Kind.TERMINATE,
     Reading.REFUSE, "signature", False, True),
    ("signature: certificate unreachable", [P, Verdict.deferred("not verifiable yet")], 30,
     Kind.LAUNCH, Reading.DEFER, "signature", True, False),
    ("replay: already handled", [P, P, Verdict.refused("a replay")], 1, Kind.LAUNCH,
     Reading.REFUSE, "replay", False, True),
    ("instance: not pending/running", [P, P, P, Verdict.refused("stopped")], 1, Kind.LAUNCH,
     Reading.REFUSE, "instance", True, True),
    ("instance: group", [P, P, P, Verdict.refused("group g", "group")], 1, Kind.LAUNCH,
     Reading.REFUSE, "group", True, True),
    ("instance: tag", [P, P, P, Verdict.refused("lacks tag", "tag")], 1, Kind.LAUNCH,
     Reading.REFUSE, "tag", True, True),
    ("instance: not found, 1st receive", [P, P, P, Verdict.deferred("not found", times=5)], 1,
     Kind.LAUNCH, Reading.DEFER, "instance", True, True),
    ("instance: not found, 4th receive", [P, P, P, Verdict.deferred("not found", times=5)], 4,
     Kind.LAUNCH, Reading.DEFER, "instance", True, True),
    ("instance: not found, 5th receive", [P, P, P, Verdict.deferred("not found", times=5)], 5,
     Kind.LAUNCH, Reading.REFUSE, "instance", True, True),
    ("instance: EC2 throttling, for ever", [P, P, P, Verdict.deferred("Throttling")], 1000,
     Kind.LAUNCH, Reading.DEFER, "instance", True, True),
    ("freshness: stale pending key", [P, P, P, Verdict.stale("older than the instance")], 1,
     Kind.LAUNCH, Reading.STALE, "instance", True, True),
    ("freshness: no key age (key driver)", [P, P, P, Verdict.refused("freshness unknown")], 1,
     Kind.LAUNCH, Reading.REFUSE, "instance", True, True),
    ("key binding: no tag yet",
     [P, P, P, Verdict.deferred("no tag", times=BINDING_TAG_ATTEMPTS, code="binding")],
     BINDING_TAG_ATTEMPTS - 1, Kind.LAUNCH, Reading.DEFER, "binding", True, True),
    ("key binding: no tag after 12 receives",
     [P, P, P, Verdict.deferred("no tag", times=BINDING_TAG_ATTEMPTS, code="binding")],
     BINDING_TAG_ATTEMPTS, Kind.LAUNCH, Reading.REFUSE, "binding", True, True),
    ("key binding: tag is no fingerprint", [P, P, P, Verdict.refused("not a fp", "binding")], 1,
     Kind.LAUNCH, Reading.REFUSE, "binding", True, True),
    ("termination memory", [P, P, P, Verdict.refused("was terminated"), P], 1, Kind.LAUNCH,
     Reading.REFUSE, "terminated", True, True),
    ("terminates: still running", [P, P, P, Verdict.deferred("still running")], 40,
     Kind.TERMINATE, Reading.DEFER, "instance", True, True),
    ("terminates: not found, 4th receive",
     [P, P, P, Verdict.deferred("not found", times=5, then_pass=True)], 4, Kind.TERMINATE,
     Reading.DEFER, "instance", True, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("verdicts", "receives", "kind", "reading", "code", "announced", "authenticated"),
    [row[1:] for row in CHECK_ROWS],
    ids=[row[0] for row in CHECK_ROWS],
)
def test_the_first_check_that_does_not_pass_decides(
    verdicts, receives, kind, reading, code, announced, authenticated
):
    found = report(verdicts, receives, kind)
    assert (found.reading, found.code) == (reading, code)
    assert found.reason == next(v.reason for v in verdicts if v is not P)
    if reading is Reading.REFUSE:
        decided = policy.refused(found)
        assert decided.action is Action.DELETE and decided.rejected
        assert decided.reason == f"REJECTED: {found.reason}" and decided.reason_code == code
        assert found.announced is announced
    if reading is Reading.DEFER:
        decided = policy.deferred(found, receives)
        assert decided.action is Action.RETRY and not decided.rejected
        assert decided.delay == defaults.retry_delay(receives)
        assert found.authenticated is authenticated


@pytest.mark.parametrize(
    ("verdicts", "kind", "step"),
    [
        ([P, P, P, P], Kind.LAUNCH, Step.ACCEPT),
        ([P, P, P, Verdict.passed(fingerprint=FP)], Kind.LAUNCH, Step.ACCEPT_BOUND),
        ([P, P, P, Verdict.passed(fingerprint=FP, published=PEM)], Kind.LAUNCH, Step.PREACCEPT),
        ([P, P, P, P], Kind.TERMINATE, Step.DELETE),
        ([P, P, P, Verdict.passed("instance is terminated")], Kind.TERMINATE, Step.DELETE),
        ([P, P, P, Verdict.stale("older")], Kind.LAUNCH, Step.REJECT_STALE),
        ([P, P, P, P, P], Kind.LAUNCH, Step.ACCEPT),  # without VerifyInstances
    ],
)
def test_what_passed_its_checks_goes_to_the_key_stage(verdicts, kind, step):
    key_plan = policy.plan(kind, ID, ID, report(verdicts, 1, kind))
    assert key_plan.step is step and key_plan.claims is (step is not Step.DELETE)
    bound = step in (Step.ACCEPT_BOUND, Step.PREACCEPT)
    assert key_plan.fingerprint == (FP if bound else None)
    assert key_plan.published == (PEM if step is Step.PREACCEPT else None)


def test_a_terminate_ec2_still_does_not_know_after_five_receives_is_honoured():
    not_found = Verdict.deferred("not found", times=NOT_FOUND_ATTEMPTS, then_pass=True)
    found = report([P, P, P, not_found], NOT_FOUND_ATTEMPTS, Kind.TERMINATE)
    assert found.reading is Reading.PASS
    assert policy.plan(Kind.TERMINATE, ID, ID, found).step is Step.DELETE


def test_no_check_after_a_refusal_is_asked():
    asked: list[str] = []

    def verdicts() -> Iterator[Verdict]:
        for code in CODES:
            asked.append(code)
            yield Verdict.refused("replay") if code == "replay" else P

    found = policy.read_checks(Kind.LAUNCH, CODES, verdicts(), 1)
    assert found.reading is Reading.REFUSE and asked == ["topic", "signature", "replay"]


def test_what_earlier_checks_found_is_kept_and_a_template_id_only_for_a_launch():
    facts = {"state": "running"}
    verdicts = [P, P, P, Verdict(True, facts=facts, minion_id="web-1", fingerprint=FP)]
    launch = report(verdicts, 1, Kind.LAUNCH)
    assert (launch.facts, launch.minion_id, launch.fingerprint) == (facts, "web-1", FP)
    assert report(verdicts, 1, Kind.TERMINATE).minion_id is None


def test_a_stale_pending_key_is_rejected_and_the_message_deleted():
    key_plan = policy.plan(Kind.LAUNCH, ID, ID, report([P, P, P, Verdict.stale("older")]))
    decided = policy.stale_rejected(key_plan, KeyResult(Outcome.REJECTED, changed=True))
    assert (decided.action, decided.rejected, decided.changed) == (Action.DELETE, True, True)
    assert decided.reason_code == "stale_key" and decided.minion_id == ID
    assert decided.reason.startswith("REJECTED: older: ")
    dry = policy.stale_rejected(key_plan, KeyResult(Outcome.REJECTED, dry_run=True))
    assert dry.rejected and not dry.changed and dry.minion_id is None


# (key outcome, changed, dry run) -> (action, reason code, minion id for the mirror,
#  pre-authorised minion to watch)
OUTCOME_ROWS = [
    (Outcome.ACCEPTED, True, False, Action.DELETE, "accepted", ID, None),
    (Outcome.ACCEPTED, False, True, Action.DELETE, "accepted", None, None),
    (Outcome.ALREADY_ACCEPTED, False, False, Action.DELETE, "already_accepted", None, None),
    (Outcome.NOT_PENDING, False, False, Action.RETRY, "not_pending", None, None),
    (Outcome.REFUSED, False, False, Action.DELETE, "refused", None, None),
    (Outcome.DELETED, True, False, Action.DELETE, "deleted", ID, None),
    (Outcome.ABSENT, False, False, Action.DELETE, "absent", None, None),
    (Outcome.INVALID_ID, False, False, Action.DELETE, "invalid_id", None, None),
    (Outcome.PREAUTHORISED, True, False, Action.DELETE, "preauthorised", ID, ID),
    (Outcome.PREAUTHORISED, False, True, Action.DELETE, "preauthorised", None, None),
    (Outcome.PREAUTH_WITHDRAWN, True, False, Action.DELETE, "preauth_withdrawn", ID, None),
    (Outcome.OTHER_KEY_ACCEPTED, False, False, Action.DELETE, "other_key_accepted", None, None),
    # enrolment: accepted before and removed since: nothing accepted, the message deleted
    (Outcome.REMOVED, False, False, Action.DELETE, "removed", None, None),
]


@pytest.mark.parametrize(
    ("outcome", "changed", "dry_run", "action", "code", "mirrored", "watched"), OUTCOME_ROWS
)
def test_the_key_outcome_decides_the_message(
    outcome, changed, dry_run, action, code, mirrored, watched
):
    result = KeyResult(outcome, changed=changed, dry_run=dry_run)
    decided = policy.after_keys(KeyPlan(Step.ACCEPT, ID, ID), result, 3)
    assert (decided.action, decided.reason_code) == (action, code)
    assert (decided.minion_id, decided.preauthorised) == (mirrored, watched)
    assert decided.changed is changed and not decided.rejected
    assert decided.reason.startswith(result.describe())
    if action is Action.RETRY:
        assert decided.delay == defaults.retry_delay(3)


@pytest.mark.parametrize(
    ("outcome", "receives", "action", "rejected", "waits", "gives_up"),
    [
        (Outcome.ACCEPTED, 1, Action.DELETE, False, False, False),
        (Outcome.OTHER_KEY_ACCEPTED, 1, Action.DELETE, False, False, False),
        (Outcome.BOUND_NOT_YET, 1, Action.RETRY, False, True, False),
        (Outcome.BOUND_NOT_YET, defaults.BOUND_KEY_ATTEMPTS - 1, Action.RETRY, False, True, False),
        (Outcome.BOUND_NOT_YET, defaults.BOUND_KEY_ATTEMPTS, Action.DELETE, True, False, True),
    ],
)
def test_key_binding_waits_for_the_published_key_then_gives_up(
    outcome, receives, action, rejected, waits, gives_up
):
    key_plan = KeyPlan(Step.ACCEPT_BOUND, ID, ID, FP)
    result = KeyResult(outcome, changed=outcome is Outcome.ACCEPTED)
    decided = policy.after_keys(key_plan, result, receives)
    assert (decided.action, decided.rejected) == (action, rejected)
    assert f"(key binding: {FP})" in decided.reason
    assert policy.waits_for_bound_key(key_plan, result, decided) is waits
    assert policy.gives_up_bound(key_plan, result, decided) is gives_up
    if rejected:
        assert decided.reason_code == "binding"
        assert decided.reason.startswith(f"REJECTED: gave up after {receives} receives: ")


# key binding by key: (outcome) -> (action, rejected, reason code)
PREACCEPT_ROWS = [
    (Outcome.ACCEPTED, Action.DELETE, False, "accepted"),
    (Outcome.ALREADY_ACCEPTED, Action.DELETE, False, "already_accepted"),
    (Outcome.OTHER_KEY_ACCEPTED, Action.DELETE, False, "other_key_accepted"),
    (Outcome.REMOVED, Action.DELETE, False, "removed"),
    (Outcome.KEY_TWICE, Action.DELETE, True, "key_twice"),
]


@pytest.mark.parametrize(("outcome", "action", "rejected", "code"), PREACCEPT_ROWS)
def test_key_binding_by_key_stores_the_published_key_and_never_waits(
    outcome, action, rejected, code
):
    key_plan = KeyPlan(Step.PREACCEPT, ID, ID, FP, published=PEM)
    result = KeyResult(outcome, changed=outcome is Outcome.ACCEPTED)
    decided = policy.after_keys(key_plan, result, 1)
    assert (decided.action, decided.rejected, decided.reason_code) == (action, rejected, code)
    assert f"(key binding by key: the key the instance published, {FP})" in decided.reason
    assert decided.reason.startswith("REJECTED: ") is rejected
    assert not policy.waits_for_bound_key(key_plan, result, decided)
    assert policy.announced_kind(decided, result, terminate=False) is (
        reactor.Kind.ACCEPTED
        if outcome in (Outcome.ACCEPTED, Outcome.ALREADY_ACCEPTED)
        else reactor.Kind.REJECTED
    )


#: what the EC2 check says of an instance that published neither its key nor its fingerprint
BINDING_DEFER = Verdict.deferred("no tags", times=BINDING_TAG_ATTEMPTS, code="binding")


@pytest.mark.parametrize(
    ("verdict", "kind", "receives", "watched", "dropped"),
    [
        (BINDING_DEFER, Kind.LAUNCH, 1, True, False),
        (BINDING_DEFER, Kind.LAUNCH, BINDING_TAG_ATTEMPTS, False, True),  # given up
        (Verdict.refused("not a key", "binding"), Kind.LAUNCH, 1, False, True),
        (Verdict.deferred("instance not found"), Kind.LAUNCH, 1, False, False),
        (BINDING_DEFER, Kind.TERMINATE, 1, False, False),
        (Verdict.passed(fingerprint=FP, published=PEM), Kind.LAUNCH, 1, False, False),
    ],
)
def test_only_a_launch_waiting_for_its_key_tags_is_watched(
    verdict, kind, receives, watched, dropped
):
    found = report([P, P, P, verdict], receives, kind)
    assert policy.awaits_published_key(kind, found) is watched
    assert policy.gives_up_published_key(kind, found) is dropped


# (minion id asked for, MinionIdTemplate on, instance holding it, accepted key under it)
#  -> refused for this instance
CLAIM_ROWS = [
    (ID, False, None, True, False),  # an instance id names its own instance
    (ID, True, None, True, False),
    (OTHER, False, None, False, True),  # another instance's id
    (OTHER, True, None, False, True),  # MinionIdTemplate never gives another's id
    ("web-1", True, None, False, False),  # a new id: given
    ("web-1", True, ID, True, False),  # given to this instance before
    ("web-1", True, OTHER, False, True),  # held by another instance
    ("web-1", True, None, True, True),  # an accepted key aws_ork did not enrol
]


@pytest.mark.parametrize(("minion_id", "templated", "owner", "accepted", "refused"), CLAIM_ROWS)
def test_one_minion_id_for_one_instance(minion_id, templated, owner, accepted, refused):
    refusal = claim_refusal(ID, minion_id, templated=templated, owner=owner, accepted=accepted)
    assert (refusal is not None) is refused
    if refusal is not None:
        decided = policy.id_refused(refusal)
        assert (decided.action, decided.rejected, decided.reason_code) == (
            Action.DELETE,
            True,
            "minion_id",
        )


def test_the_decision_line_names_a_templated_key():
    decided = Decision(Action.DELETE, "accepted")
    assert policy.with_minion(decided, KeyPlan(Step.ACCEPT, ID, ID)).reason == "accepted"
    templated = policy.with_minion(decided, KeyPlan(Step.ACCEPT, ID, "web-1"))
    assert templated.reason == "minion web-1: accepted"


@pytest.mark.parametrize(
    ("action", "sns", "usable", "remembered"),
    [
        (Action.DELETE, True, True, True),
        (Action.RETRY, True, True, False),  # only deferred: handled when it comes back
        (Action.LEAVE, True, True, False),
        (Action.DELETE, False, True, False),  # no envelope, no SNS MessageId
        (Action.DELETE, True, False, False),  # a MessageId no memory can hold
    ],
)
def test_no_replay_remembers_each_finished_envelope(action, sns, usable, remembered):
    assert policy.remembers_envelope(Decision(action, "x"), sns, usable) is remembered


# Lifecycle hooks: (event, the message's decision, key outcome) -> the action's step
HOOK_ROWS = [
    (Kind.LAUNCH, Action.DELETE, Outcome.ACCEPTED, HookStep.COMPLETE),
    (Kind.LAUNCH, Action.DELETE, Outcome.ALREADY_ACCEPTED, HookStep.COMPLETE),
    (Kind.LAUNCH, Action.RETRY, Outcome.NOT_PENDING, HookStep.WAIT),
    (Kind.LAUNCH, Action.DELETE, Outcome.PREAUTHORISED, HookStep.WAIT),
    (Kind.LAUNCH, Action.RETRY, Outcome.BOUND_NOT_YET, HookStep.WAIT),
    (Kind.LAUNCH, Action.DELETE, Outcome.BOUND_NOT_YET, HookStep.FORGET),  # given up
    (Kind.LAUNCH, Action.DELETE, Outcome.REFUSED, HookStep.FORGET),
    (Kind.LAUNCH, Action.DELETE, Outcome.REMOVED, HookStep.FORGET),
    (Kind.LAUNCH, Action.DELETE, Outcome.OTHER_KEY_ACCEPTED, HookStep.FORGET),
    (Kind.LAUNCH, Action.DELETE, Outcome.INVALID_ID, HookStep.FORGET),
    (Kind.TERMINATE, Action.DELETE, Outcome.DELETED, HookStep.COMPLETE),
    (Kind.TERMINATE, Action.DELETE, Outcome.ABSENT, HookStep.COMPLETE),
    (Kind.TERMINATE, Action.RETRY, Outcome.DELETED, HookStep.KEEP),
]


@pytest.mark.parametrize(("kind", "action", "outcome", "step"), HOOK_ROWS)
def test_a_lifecycle_action_is_completed_once_the_key_work_is_done(kind, action, outcome, step):
    assert policy.hook_step(kind, Decision(action, "x"), KeyResult(outcome)) is step


def test_a_completed_or_forgotten_action_is_named_in_the_decision_line():
    decided = Decision(Action.DELETE, "accepted", changed=True, minion_id=ID)
    completed = policy.hook_completed(decided, "lifecycle action completed")
    assert completed.reason == "accepted; lifecycle action completed" and completed.changed
    forgotten = policy.hook_forgotten(Decision(Action.DELETE, "refused"))
    assert forgotten.reason.endswith("left to the hook's DefaultResult")


def test_a_failed_completion_is_retried_and_the_key_change_still_mirrored():
    decided = Decision(Action.DELETE, "deleted", changed=True, minion_id=ID)
    failed = policy.hook_failed(decided, 2, "Throttling")
    assert (failed.action, failed.delay, failed.changed, failed.minion_id) == (
        Action.RETRY,
        defaults.retry_delay(2),
        True,
        ID,
    )


@pytest.mark.parametrize(
    ("state", "action"),
    [(State.WAITING, Action.RETRY), (State.DONE, Action.DELETE), (State.GIVEN_UP, Action.DELETE)],
)
def test_a_waiting_launch_keeps_its_message_until_done_or_given_up(state, action):
    waited = policy.hook_waited(Decision(Action.RETRY, "no pending key yet"), state, 4)
    assert waited.action is action and state.value in waited.reason
    deferred = policy.deferred(report([P, P, P, Verdict.deferred("not found")]), 4, state)
    expected = Action.DELETE if state is State.GIVEN_UP else Action.RETRY
    assert deferred.action is expected and state.value in deferred.reason
