"""Receive the next batch while the current one is handled.

A backlog drains at the pace of ReceiveMessage, not of ReceiveMessage plus the key work: as
soon as a batch arrives, the next long poll starts in a helper thread, and the loop picks its
result up when the batch is done. There is never more than one receive in flight, so an idle
daemon still makes exactly one ReceiveMessage per long poll (a poll is prefetched only after
a batch that held messages, and with PollPause 0). A prefetched batch is also prepared in that
thread (``prepare``: parsed, its instances looked up in EC2), so that the look-up too runs
while the previous batch is handled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future

from aws_ork.runtime.stopper import Stopped, Stopper
from aws_ork.sqs.queue import Message, Queue

log = logging.getLogger(__name__)


class Receiver:
    """Long polls for the loop; :meth:`prefetch` starts the next one early."""

    def __init__(self, queue: Queue, stopper: Stopper, *,
                 prepare: Callable[[list[Message]], None] | None = None) -> None:
        self.queue = queue
        self.stopper = stopper
        self.prepare = prepare  # never raises (Handler.prepare)
        self._next: Future[list[Message]] | None = None

    def prefetch(self, wait: int) -> None:
        """Start the next long poll now, in a helper thread (one at most); its batch is
        prepared there too."""
        if self._next is not None:
            return
        future = self.stopper.start(lambda: self._receive_and_prepare(wait))
        self._next = future

    def _receive_and_prepare(self, wait: int) -> list[Message]:
        messages = self.queue.receive(wait)
        if messages and self.prepare is not None:
            self.prepare(messages)
        return messages

    def receive(self, wait: int) -> list[Message]:
        """The prefetched batch if there is one, else a long poll now. Raises Stopped when
        a stop cuts the wait short, QueueError when the receive failed."""
        future, self._next = self._next, None
        if future is None:
            return self.stopper.call(lambda: self.queue.receive(wait))
        try:
            return self.stopper.result(future)
        except Stopped:
            self._next = future  # still ours to give back in close()
            raise

    def close(self) -> None:
        """On the way out: give a prefetched, unhandled batch back to the queue at once."""
        future, self._next = self._next, None
        if future is None:
            return
        future.add_done_callback(self._give_back)

    def _give_back(self, future: Future[list[Message]]) -> None:
        if future.exception() is not None:
            return
        messages = future.result()
        if messages:
            log.info("giving %d prefetched messages back to the queue", len(messages))
            self.queue.release(messages)
