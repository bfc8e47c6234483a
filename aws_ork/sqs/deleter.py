"""Delete a handled batch while the loop goes on with the next one.

A DeleteMessageBatch is a round trip the loop does not need to wait for: by the time it is
sent, the batch's key changes are made and its replay memories and mirror journal are
durable, so nothing the loop does next depends on its answer. One delete is in flight at a
time (the next one waits for it), and what it deleted is reported (``on_deleted``) only once
SQS confirmed it. A delete that fails leaves its messages in the queue; they come back after
the visibility timeout and the replay memories answer them, as after any failed delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from aws_ork.sqs.queue import Message, Queue

log = logging.getLogger(__name__)


class Deleter:
    """Deletes handled batches in a helper thread, one after the other."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqs-delete")
        self._last: Future[None] | None = None

    def delete(
        self, messages: Sequence[Message], on_deleted: Callable[[list[Message]], None]
    ) -> None:
        """Delete ``messages`` in the helper thread once the delete before has returned;
        ``on_deleted`` gets those SQS confirmed (called in the helper thread)."""
        if not messages:
            return
        self.wait()
        batch = list(messages)

        def work() -> None:
            failed = {id(m) for m in self.queue.delete(batch)}
            on_deleted([m for m in batch if id(m) not in failed])

        self._last = self._pool.submit(work)

    def wait(self) -> None:
        """Until the delete in flight (if any) has returned."""
        last, self._last = self._last, None
        if last is None:
            return
        try:
            last.result()
        except Exception:  # Queue.delete does not raise; a bug in on_deleted must not stop us
            log.error("a background delete failed", exc_info=True)

    def close(self) -> None:
        """On the way out: the delete in flight is finished, then the thread ends."""
        self.wait()
        self._pool.shutdown(wait=True)
