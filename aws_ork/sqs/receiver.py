"""Keep the next receives going while the loop handles a batch.

A backlog drains at the pace of ReceiveMessage, not of ReceiveMessage plus the key work:
during a backlog the next long poll starts the moment the previous one returned (not when
the loop gets round to it), so receives follow each other back to back, as in a bare
receive/delete loop. At most ``defaults.RECEIVE_AHEAD`` batches are received and not yet
taken by the loop (the one in flight included), so a backlog is never pulled out of the
queue faster than it is handled: messages received ahead keep their visibility timeout
running.

A receive is chained only after one that brought messages, and never after a stop or
:meth:`Receiver.close`: an idle daemon still makes exactly one ReceiveMessage per long
poll. The receiver only receives: what the loop does with a batch received ahead before it
comes up (its look-ups) is the loop's step, started from :meth:`Receiver.received_ahead`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future

from aws_ork import defaults
from aws_ork.runtime.stopper import Stopped, Stopper
from aws_ork.sqs.queue import Message, Queue

log = logging.getLogger(__name__)


class Receiver:
    """Long polls for the loop; :meth:`prefetch` starts receiving ahead."""

    def __init__(self, queue: Queue, stopper: Stopper) -> None:
        self.queue = queue
        self.stopper = stopper
        self._lock = threading.Lock()
        #: receives started ahead, oldest first, not yet taken by the loop
        self._ahead: deque[Future[list[Message]]] = deque()
        self._in_flight = False  # a receive started ahead has not returned yet
        self._closed = False

    def prefetch(self, wait: int) -> None:
        """Start receiving ahead now, in a helper thread, unless a receive is in flight or
        :data:`defaults.RECEIVE_AHEAD` batches are already waiting."""
        with self._lock:
            self._start_locked(wait)

    def _start_locked(self, wait: int) -> None:
        if (
            self._closed
            or self._in_flight
            or len(self._ahead) >= defaults.RECEIVE_AHEAD
            or self.stopper.stopping
        ):
            return
        self._in_flight = True
        self._ahead.append(self.stopper.start(lambda: self._receive_ahead(wait)))

    def _receive_ahead(self, wait: int) -> list[Message]:
        try:
            messages = self.queue.receive(wait)
        finally:
            with self._lock:
                self._in_flight = False
        if messages:
            with self._lock:
                self._start_locked(wait)  # a backlog: the next receive goes out at once
        return messages

    def received_ahead(self) -> tuple[Future[list[Message]], ...]:
        """The receives started ahead and not yet taken by the loop, oldest first (done or
        still in flight)."""
        with self._lock:
            return tuple(self._ahead)

    def receive(self, wait: int) -> list[Message]:
        """The oldest batch received ahead if there is one, else a long poll now. Raises
        Stopped when a stop cuts the wait short, QueueError when the receive failed."""
        with self._lock:
            future = self._ahead.popleft() if self._ahead else None
        if future is None:
            return self.stopper.call(lambda: self.queue.receive(wait))
        try:
            return self.stopper.result(future)
        except Stopped:
            with self._lock:
                self._ahead.appendleft(future)  # still ours to give back in close()
            raise

    def close(self, *, give_back: bool = True) -> None:
        """On the way out: no more receives ahead; every batch received ahead and not
        handled goes back to the queue at once (when its receive returns), unless
        ``give_back`` is False (a dry run changes nothing in the queue)."""
        with self._lock:
            self._closed = True
            futures, self._ahead = list(self._ahead), deque()
        if give_back:
            for future in futures:
                future.add_done_callback(self._give_back)

    def _give_back(self, future: Future[list[Message]]) -> None:
        if future.exception() is not None:
            return
        messages = future.result()
        if messages:
            log.info("giving %d prefetched messages back to the queue", len(messages))
            self.queue.release(messages)
