"""A stop flag that signal handlers can set and blocking waits can be cut short by.

Signal handlers only set the flag (they run in the main thread between bytecodes, so they
must not take a lock the main thread may hold: the condition uses a re-entrant lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """Raised by :meth:`Stopper.call` when a stop was requested before the call returned."""


class Stopper:
    """The daemon's stop flag."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._stopping = False
        self.reason = ""

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self, reason: str = "") -> None:
        """Request a stop (safe to call from a signal handler)."""
        with self._cond:
            if not self._stopping:
                self.reason = reason
            self._stopping = True
            self._cond.notify_all()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return True if a stop was requested meanwhile."""
        if seconds <= 0:
            return self._stopping
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping, seconds)

    def call(self, fn: Callable[[], T]) -> T:
        """Run a blocking call (the SQS long poll) in a helper thread; on stop, abandon it.

        An abandoned receive may still return messages: they stay invisible until the
        queue's visibility timeout and are then delivered again, so nothing is lost.
        """
        return self.result(self.start(fn))

    @staticmethod
    def start(fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in a daemon thread; its outcome arrives in the returned future."""
        future: Future[T] = Future()

        def target() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to whoever takes the result
                future.set_exception(exc)

        threading.Thread(target=target, name="long-poll", daemon=True).start()
        return future

    def result(self, future: Future[T]) -> T:
        """Wait for ``future``; raise Stopped if a stop comes first (the future stays valid)."""

        def wake(_done: Future[T]) -> None:
            with self._cond:
                self._cond.notify_all()

        future.add_done_callback(wake)
        with self._cond:
            self._cond.wait_for(lambda: future.done() or self._stopping)
        if not future.done():
            raise Stopped(self.reason)
        return future.result()
