"""Pending lifecycle actions: completed once their key is accepted, kept alive meanwhile.

Who completes what (see the README, "Lifecycle hooks"):

- the decide stage, when a hook's message finds the key accepted (launching) or deleted
  (terminating): :meth:`Completer.complete`;
- the decide stage, when a launching hook's key is not accepted yet: :meth:`Completer.wait`
  registers the action and the message is retried (kept in the queue: a restart loses
  nothing, the message brings the action back);
- the arrivals thread (key binding) and the loop's key-directory watcher (Salt used the
  autosign stub): :meth:`Completer.accepted` completes a waiting action at once, and the
  message, when it comes back, finds it done and is deleted.

A small background thread sends ``RecordLifecycleActionHeartbeat`` for every waiting action,
each time :data:`~aws_ork.defaults.HEARTBEAT_FRACTION` of the hook's HeartbeatTimeout has
passed since the last one (the first at once: when the hook started is not known), and gives
up after :data:`~aws_ork.defaults.HOOK_WAIT_SECONDS` with one WARNING line: the action is
then left to the hook's own timeout and DefaultResult.

The waits are durable (:mod:`~aws_ork.lifecycle.waits`, ``StateDir/lifecycle-waits``): after a
restart a waiting action keeps the time its wait began (so it is given up at the same
deadline) and the time its next heartbeat is due, and a given-up action is not waited for
again when its message returns. Their times are wall-clock times for that reason.

Hook and group names come from the message: every log line shows them escaped
(:func:`~aws_ork.base.text.clean`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aws_ork import defaults
from aws_ork.base.text import clean
from aws_ork.events import Event
from aws_ork.lifecycle import waits
from aws_ork.lifecycle.client import ActionGone, HookClient, LifecycleError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HookAction:
    """One lifecycle action: what CompleteLifecycleAction needs."""

    group: str
    hook: str
    token: str
    instance_id: str

    @classmethod
    def of(cls, event: Event) -> HookAction | None:
        """The action an event carries; None for a message of no hook (or missing a part)."""
        if event.group and event.lifecycle_hook and event.lifecycle_token and event.instance_id:
            return cls(event.group, event.lifecycle_hook, event.lifecycle_token, event.instance_id)
        return None

    def describe(self) -> str:
        """For a log line: the hook and group names escaped (they are the message's text)."""
        return f"lifecycle action {clean(self.hook)} ({clean(self.group)})"


class State(enum.Enum):
    """What became of a launching action its message asks about."""

    WAITING = "waiting for the key; heartbeats keep the action alive"
    DONE = "lifecycle action completed (CONTINUE)"
    GIVEN_UP = "gave up waiting for the key; left to the hook's DefaultResult"


@dataclass
class _Waiting:
    action: HookAction
    since: float
    due: float  # next heartbeat
    beats: int = 0


class Completer:
    """The lifecycle actions aws_ork answers (thread-safe: the loop, the arrivals thread and
    the heartbeat thread all use it)."""

    def __init__(
        self,
        client: HookClient,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        fraction: float = defaults.HEARTBEAT_FRACTION,
        give_up_seconds: float = defaults.HOOK_WAIT_SECONDS,
        path: Path | None = None,
    ) -> None:
        self.client = client
        self.dry_run = dry_run
        self.clock = clock  # wall-clock: the waits' times outlive the process (``path``)
        self.fraction = fraction
        self.give_up_seconds = give_up_seconds
        self.path = path  # StateDir/lifecycle-waits; None: the waits live in memory only
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}  # token -> action
        # tokens answered or given up in this run, so a returning message is finished
        self._ended: OrderedDict[str, State] = OrderedDict()
        # given up (durable, so that a restart does not wait for them again): token ->
        # (action, when its wait began)
        self._given_up: OrderedDict[str, tuple[HookAction, float]] = OrderedDict()
        self._dirty = False  # the file is behind memory
        self._save_failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: actions completed with CONTINUE in this run (the metrics read it)
        self.completed = 0
        if path is not None and not dry_run:
            self._load(path)

    # --- StateDir/lifecycle-waits ---

    def _load(self, path: Path) -> None:
        """Take up the waits of the previous run (OSError: the file cannot be read, a start-up
        failure like the other StateDir memories). A given-up action older than Auto
        Scaling's longest action is forgotten: AWS has ended it anyway."""
        horizon = self.clock() - defaults.LIFECYCLE_ACTION_MAX_SECONDS
        for saved in waits.load(path):
            action = HookAction(saved.group, saved.hook, saved.token, saved.instance_id)
            if saved.state == waits.WAITING:
                self._waiting[saved.token] = _Waiting(
                    action, since=saved.since, due=saved.due, beats=saved.beats
                )
            elif saved.since >= horizon:
                self._given_up[saved.token] = (action, saved.since)
                self._ended[saved.token] = State.GIVEN_UP
        if self._waiting:
            log.info(
                "%d lifecycle action(s) still waiting for their key since the last run (%s)",
                len(self._waiting),
                path,
            )

    def _saved(self) -> Iterator[waits.SavedWait]:
        """What the file holds: the waiting actions, then the newest given-up ones."""
        for w in self._waiting.values():
            a = w.action
            if waits.storable(a.group, a.hook, a.token, a.instance_id):
                yield waits.SavedWait(
                    a.group, a.hook, a.token, a.instance_id, w.since, w.due, w.beats, waits.WAITING
                )
        for a, since in reversed(self._given_up.values()):
            if waits.storable(a.group, a.hook, a.token, a.instance_id):
                yield waits.SavedWait(
                    a.group, a.hook, a.token, a.instance_id, since, since, 0, waits.GIVEN_UP
                )

    def _save(self) -> None:
        """Write the file if memory changed since (the caller holds the lock). A failure is
        logged once (and again once it works): the waits go on in memory meanwhile."""
        if self.path is None or self.dry_run or not self._dirty:
            return
        horizon = self.clock() - defaults.LIFECYCLE_ACTION_MAX_SECONDS
        while self._given_up and next(iter(self._given_up.values()))[1] < horizon:
            self._given_up.popitem(last=False)
        while len(self._given_up) > defaults.HOOK_WAITS_LIMIT:
            self._given_up.popitem(last=False)
        try:
            waits.save(self.path, self._saved(), defaults.HOOK_WAITS_LIMIT)
        except OSError as exc:
            if not self._save_failing:
                log.error(
                    "%s: cannot save the lifecycle waits (a restart would forget them): %s",
                    self.path,
                    exc,
                )
            self._save_failing = True
            return
        if self._save_failing:
            log.info("%s: lifecycle waits saved again", self.path)
        self._save_failing = False
        self._dirty = False

    # --- the decide stage ---

    def complete(self, action: HookAction) -> str:
        """CONTINUE the action; a log fragment. Raises LifecycleError to retry later."""
        if self.dry_run:
            return "lifecycle action would be completed (CONTINUE)"
        with self._lock:
            ended = self._ended.get(action.token)
        if ended is State.DONE:
            return State.DONE.value
        try:
            self.client.complete(action.group, action.hook, action.token)
        except ActionGone:
            self._end(action, State.DONE)
            log.info(
                "%s: %s is no longer waiting (instance gone, or the token expired or was "
                "answered); dropped",
                action.instance_id,
                action.describe(),
            )
            return "lifecycle action no longer waiting; dropped"
        self._end(action, State.DONE)
        with self._lock:
            self.completed += 1
        log.info("%s: %s completed: CONTINUE", action.instance_id, action.describe())
        return State.DONE.value

    def wait(self, action: HookAction) -> State:
        """A launching action whose key is not accepted yet: keep it alive until it is."""
        if self.dry_run:
            return State.WAITING
        now = self.clock()
        with self._lock:
            ended = self._ended.get(action.token)
            if ended is not None:
                return ended
            waiting = self._waiting.get(action.token)
            if waiting is None:
                self._waiting[action.token] = _Waiting(action, since=now, due=now)
                self._dirty = True
            self._save()
        if waiting is not None and now - waiting.since >= self.give_up_seconds:
            self._give_up(waiting, now)  # the bound, even before the heartbeat thread looks
            return State.GIVEN_UP
        return State.WAITING

    def forget(self, action: HookAction) -> None:
        """The launch will not be accepted (rejected, given up): no more heartbeats; the hook's
        DefaultResult decides."""
        with self._lock:
            if self._waiting.pop(action.token, None) is not None:
                self._dirty = True
                self._save()

    # --- the arrivals thread and the key-directory watcher ---

    def accepted(self, instance_id: str) -> None:
        """The key of ``instance_id`` was accepted outside a message: complete its waiting
        actions now. A failure is left for the message's next retry."""
        with self._lock:
            actions = [
                w.action for w in self._waiting.values() if w.action.instance_id == instance_id
            ]
        for action in actions:
            try:
                self.complete(action)
            except LifecycleError as exc:
                log.error(
                    "%s: %s not completed yet (the message retries): %s",
                    instance_id,
                    action.describe(),
                    exc,
                )

    # --- heartbeats ---

    def start(self) -> None:
        """Start the heartbeat thread."""
        if self._thread is None and not self.dry_run:
            self._thread = threading.Thread(
                target=self._run, name="lifecycle-heartbeats", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(defaults.HEARTBEAT_TICK_SECONDS):
            try:
                self.tick()
            except Exception:  # a bug of ours must not end the heartbeats
                log.error("unexpected error sending lifecycle heartbeats", exc_info=True)

    def tick(self) -> None:
        """Send the heartbeats that are due; give up on actions waiting too long."""
        now = self.clock()
        with self._lock:
            due = [w for w in self._waiting.values() if w.due <= now]
        for waiting in due:
            action = waiting.action
            if now - waiting.since >= self.give_up_seconds:
                self._give_up(waiting, now)
                continue
            try:
                timeout = self._timeout(action)
                self.client.heartbeat(action.group, action.hook, action.token)
            except ActionGone:
                self._end(action, State.DONE)
                log.info(
                    "%s: %s is no longer waiting (instance gone, or the token expired or "
                    "was answered); dropped",
                    action.instance_id,
                    action.describe(),
                )
                continue
            except LifecycleError as exc:
                log.error(
                    "%s: heartbeat for %s failed, retrying: %s",
                    action.instance_id,
                    action.describe(),
                    exc,
                )
                waiting.due = now + defaults.HEARTBEAT_RETRY_SECONDS
                continue
            waiting.beats += 1
            waiting.due = now + timeout * self.fraction
            log.debug(
                "%s: heartbeat %d for %s; next in %.0f s",
                action.instance_id,
                waiting.beats,
                action.describe(),
                timeout * self.fraction,
            )
        if due:
            with self._lock:  # once per tick: the next heartbeats' times survive a restart
                self._dirty = True
                self._save()

    def _give_up(self, waiting: _Waiting, now: float) -> None:
        """The wait reached its bound: no more heartbeats; one WARNING line."""
        action = waiting.action
        with self._lock:
            if self._waiting.get(action.token) is not waiting:
                return  # ended meanwhile (completed, or given up by the other thread)
            self._end_locked(action, State.GIVEN_UP, since=waiting.since)
        log.warning(
            "%s: gave up waiting for its key after %.0f s (%d heartbeats): %s is left "
            "to its HeartbeatTimeout and DefaultResult",
            action.instance_id,
            now - waiting.since,
            waiting.beats,
            action.describe(),
        )

    def _timeout(self, action: HookAction) -> float:
        """The hook's HeartbeatTimeout; AWS's minimum when it cannot be learnt."""
        try:
            timeout = self.client.heartbeat_timeout(action.group, action.hook)
        except LifecycleError as exc:
            log.warning(
                "%s: cannot learn the HeartbeatTimeout of %s (%s); assuming %d s",
                action.instance_id,
                action.describe(),
                exc,
                defaults.MIN_HEARTBEAT_TIMEOUT_SECONDS,
            )
            timeout = None
        return float(timeout or defaults.MIN_HEARTBEAT_TIMEOUT_SECONDS)

    def _end(self, action: HookAction, state: State) -> None:
        with self._lock:
            self._end_locked(action, state)

    def _end_locked(self, action: HookAction, state: State, *, since: float | None = None) -> None:
        """The action is no longer waited for (the caller holds the lock); a given-up one is
        remembered durably with the time its wait began."""
        self._dirty = self._waiting.pop(action.token, None) is not None or self._dirty
        self._ended[action.token] = state
        self._ended.move_to_end(action.token)
        while len(self._ended) > defaults.ENDED_ACTIONS_LIMIT:
            self._ended.popitem(last=False)
        if state is State.GIVEN_UP:
            self._given_up.pop(action.token, None)
            self._given_up[action.token] = (action, self.clock() if since is None else since)
            self._dirty = True
        self._save()
