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
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aws_ork import defaults
from aws_ork.events import Event
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
        if event.group and event.lifecycle_hook and event.lifecycle_token \
                and event.instance_id:
            return cls(event.group, event.lifecycle_hook, event.lifecycle_token,
                       event.instance_id)
        return None

    def describe(self) -> str:
        return f"lifecycle action {self.hook} ({self.group})"


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

    def __init__(self, client: HookClient, *, dry_run: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 fraction: float = defaults.HEARTBEAT_FRACTION,
                 give_up_seconds: float = defaults.HOOK_WAIT_SECONDS) -> None:
        self.client = client
        self.dry_run = dry_run
        self.clock = clock
        self.fraction = fraction
        self.give_up_seconds = give_up_seconds
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}  # token -> action
        # tokens answered or given up in this run, so a returning message is finished
        self._ended: OrderedDict[str, State] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: actions completed with CONTINUE in this run (the metrics read it)
        self.completed = 0

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
            self.client.complete(action.group, action.hook, action.token, action.instance_id)
        except ActionGone:
            self._end(action, State.DONE)
            log.info("%s: %s is no longer waiting (instance gone, or the token expired or was "
                     "answered); dropped", action.instance_id, action.describe())
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
            if action.token not in self._waiting:
                self._waiting[action.token] = _Waiting(action, since=now, due=now)
        return State.WAITING

    def forget(self, action: HookAction) -> None:
        """The launch will not be accepted (rejected, given up): no more heartbeats; the hook's
        DefaultResult decides."""
        with self._lock:
            self._waiting.pop(action.token, None)

    # --- the arrivals thread and the key-directory watcher ---

    def accepted(self, instance_id: str) -> None:
        """The key of ``instance_id`` was accepted outside a message: complete its waiting
        actions now. A failure is left for the message's next retry."""
        with self._lock:
            actions = [w.action for w in self._waiting.values()
                       if w.action.instance_id == instance_id]
        for action in actions:
            try:
                self.complete(action)
            except LifecycleError as exc:
                log.error("%s: %s not completed yet (the message retries): %s",
                          instance_id, action.describe(), exc)

    # --- heartbeats ---

    def start(self) -> None:
        """Start the heartbeat thread."""
        if self._thread is None and not self.dry_run:
            self._thread = threading.Thread(target=self._run, name="lifecycle-heartbeats",
                                            daemon=True)
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
                self._end(action, State.GIVEN_UP)
                log.warning("%s: gave up waiting for its key after %.0f s (%d heartbeats): %s "
                            "is left to its HeartbeatTimeout and DefaultResult", action.instance_id,
                            now - waiting.since, waiting.beats, action.describe())
                continue
            try:
                timeout = self._timeout(action)
                self.client.heartbeat(action.group, action.hook, action.token,
                                      action.instance_id)
            except ActionGone:
                self._end(action, State.DONE)
                log.info("%s: %s is no longer waiting (instance gone, or the token expired or "
                         "was answered); dropped", action.instance_id, action.describe())
                continue
            except LifecycleError as exc:
                log.error("%s: heartbeat for %s failed, retrying: %s", action.instance_id,
                          action.describe(), exc)
                waiting.due = now + defaults.HEARTBEAT_RETRY_SECONDS
                continue
            waiting.beats += 1
            waiting.due = now + timeout * self.fraction
            log.debug("%s: heartbeat %d for %s; next in %.0f s", action.instance_id,
                      waiting.beats, action.describe(), timeout * self.fraction)

    def _timeout(self, action: HookAction) -> float:
        """The hook's HeartbeatTimeout; AWS's minimum when it cannot be learnt."""
        try:
            timeout = self.client.heartbeat_timeout(action.group, action.hook)
        except LifecycleError as exc:
            log.warning("%s: cannot learn the HeartbeatTimeout of %s (%s); assuming %d s",
                        action.instance_id, action.describe(), exc,
                        defaults.MIN_HEARTBEAT_TIMEOUT_SECONDS)
            timeout = None
        return float(timeout or defaults.MIN_HEARTBEAT_TIMEOUT_SECONDS)

    def _end(self, action: HookAction, state: State) -> None:
        with self._lock:
            self._waiting.pop(action.token, None)
            self._ended[action.token] = state
            self._ended.move_to_end(action.token)
            while len(self._ended) > defaults.ENDED_ACTIONS_LIMIT:
                self._ended.popitem(last=False)
