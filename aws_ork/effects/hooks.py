"""The lifecycle action of a message, applied after its key work (LifecycleHooks).

Which step a decision asks of the action is :func:`aws_ork.decision.hook_step` (pure); this
module takes that step with the :class:`~aws_ork.lifecycle.Completer` and folds its outcome back
into the decision (a completion that failed retries the message). Without ``LifecycleHooks``
every method is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable

from aws_ork import decision as policy
from aws_ork.decision import CheckReport, Decision, HookStep
from aws_ork.events import Event, Kind
from aws_ork.keys.result import KeyResult
from aws_ork.lifecycle import Completer, HookAction, LifecycleError
from aws_ork.lifecycle.completer import State


class Hooks:
    """Answers the lifecycle actions aws_ork is to complete."""

    def __init__(
        self,
        completer: Completer | None,
        completes_hook: Callable[[str | None], bool] = lambda _name: True,
    ) -> None:
        self.completer = completer  # lifecycle actions: completed once the key work is done
        self.completes_hook = completes_hook  # LifecycleHooks: is this hook ours to answer?

    @property
    def off(self) -> bool:
        """No lifecycle actions are answered."""
        return self.completer is None

    def action(self, event: Event) -> HookAction | None:
        """The lifecycle action this event asks us to complete, if any (LifecycleHooks)."""
        if self.completer is None or not self.completes_hook(event.lifecycle_hook):
            return None
        return HookAction.of(event)

    def while_deferred(self, event: Event, report: CheckReport) -> State | None:
        """A check cannot answer yet: a launching hook's action is kept alive meanwhile, up
        to the give-up bound, but only once the message is authenticated (the topic,
        signature and source checks passed): a forged message whose certificate cannot be
        fetched must not keep anyone's action alive."""
        action = self.action(event) if event.kind is Kind.LAUNCH and report.authenticated else None
        if action is None:
            return None
        assert self.completer is not None
        return self.completer.wait(action)

    def refused(self, event: Event) -> None:
        """A refused launch is never completed: no more heartbeats for its action."""
        action = self.action(event)
        if action is not None and self.completer is not None:
            self.completer.forget(action)

    def after_keys(
        self, event: Event, decision: Decision, result: KeyResult, count: int
    ) -> Decision:
        """Complete the lifecycle action once the key work is done; while a launching
        action waits for its key, the message is kept (retried) so a restart loses nothing.
        A completion that fails is retried with the message; the key change it follows
        (``changed``) still reaches the mirror."""
        action = self.action(event)
        if action is None:
            return decision
        assert self.completer is not None
        step = policy.hook_step(event.kind, decision, result)
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

    def accepted(self, instance_id: str) -> None:
        """This instance's key was accepted outside a message (a bound key presented, an
        autosign stub used): its waiting launch action is completed."""
        if self.completer is not None:
            self.completer.accepted(instance_id)
