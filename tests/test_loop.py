"""The polling loop against a real SQS endpoint (moto server): stopping, batching, failures."""

from __future__ import annotations

import threading

import boto3
import pytest

from aws_ork.decision import Action, Decision
from aws_ork.loop import Loop
from aws_ork.runtime.stopper import Stopped, Stopper
from aws_ork.sqs.queue import Message, Queue
from tests.daemon import queue_counts, wait_for


class BatchFree:
    """The batch hooks of aws_ork.loop.MessageHandler (prepare, prime, forget, flush) as
    no-ops, for fake handlers that only decide."""

    def prepare(self, _messages: object) -> None:
        pass

    def prime(self, _messages: object) -> None:
        pass

    def forget(self) -> None:
        pass

    def flush(self) -> None:
        pass


class StopsAfter(BatchFree):
    """A handler that finishes every message it is given and requests a stop after ``n``."""

    def __init__(self, stopper: Stopper, n: int) -> None:
        self.stopper = stopper
        self.n = n
        self.handled: list[str] = []

    def handle(self, message: Message) -> Decision:
        self.handled.append(message.body)
        if len(self.handled) == self.n:
            self.stopper.stop("SIGTERM")
        return Decision(Action.DELETE, "done")


@pytest.fixture
def queue(sqs, queue_url) -> Queue:
    return Queue(boto3.client("sqs", region_name="us-west-2"), queue_url)


def test_stop_mid_batch_finishes_the_message_in_hand_and_gives_the_rest_back(queue, sqs, queue_url):
    sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    )
    stopper = Stopper()
    handler = StopsAfter(stopper, 3)
    loop = Loop(queue, handler, stopper)

    assert loop.run() == 0

    handled = set(handler.handled)
    assert len(handled) == 3
    # the handled three are deleted; the others are visible again at once, none lost
    remaining = set()
    for _ in range(5):
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        )
        remaining |= {m["Body"] for m in got.get("Messages", [])}
        if len(remaining) + len(handled) >= 10:
            break
    assert remaining == {f"m{i}" for i in range(10)} - handled
    assert queue_counts(sqs, queue_url)[0] == 0


def test_stop_cuts_a_blocking_call_short():
    stopper = Stopper()
    release = threading.Event()
    threading.Timer(0.2, stopper.stop, args=("SIGTERM",)).start()
    with pytest.raises(Stopped):
        stopper.call(lambda: release.wait(60))
    release.set()


def test_once_exits_1_when_the_queue_cannot_be_read(moto):
    stopper = Stopper()
    missing = Queue(
        boto3.client("sqs", region_name="us-west-2"), f"{moto.url}/123456789012/no-such-queue"
    )
    loop = Loop(missing, StopsAfter(stopper, 99), stopper, once=True)
    assert loop.run() == 1


def test_retry_sets_a_short_visibility_instead_of_the_queue_default(queue, sqs, queue_url):
    sqs.send_message(QueueUrl=queue_url, MessageBody="later")

    class RetryOnce(BatchFree):
        def handle(self, message: Message) -> Decision:
            return Decision(Action.RETRY, "not yet", delay=1)

    stopper = Stopper()
    loop = Loop(queue, RetryOnce(), stopper, once=True)
    assert loop.run() == 0
    # the queue's visibility timeout is 30 s; the message is back after about 1 s
    got = sqs.receive_message(
        QueueUrl=queue_url,
        WaitTimeSeconds=10,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    assert [m["Body"] for m in got["Messages"]] == ["later"]
    assert int(got["Messages"][0]["Attributes"]["ApproximateReceiveCount"]) >= 2


def test_a_batch_whose_memories_cannot_be_made_durable_is_not_deleted(queue, sqs, queue_url):
    """The replay memories are fsync'd once per batch, before its messages are deleted: when
    that fails, every message of the batch stays in the queue (retried soon), none is lost."""
    sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(5)]
    )

    class DiskFull(BatchFree):
        def handle(self, message: Message) -> Decision:
            return Decision(Action.DELETE, "done")

        def flush(self) -> None:
            raise OSError(28, "No space left on device")

    loop = Loop(queue, DiskFull(), Stopper(), once=True)
    assert loop.run() == 0
    assert loop.counters.deleted == 0
    back: set[str] = set()

    def all_back() -> bool:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60
        )
        back.update(m["Body"] for m in got.get("Messages", []))
        return len(back) == 5

    wait_for(all_back, 30, "the batch back in the queue")


def test_a_backlog_is_looked_up_ahead_once_per_batch_before_the_batch_comes_up(
    queue, sqs, queue_url
):
    """The loop's look-ahead step: every batch received ahead is prepared (its EC2 look-up)
    before it comes up, exactly once; so prime never has to ask EC2 itself but for the first
    batch, and a backlog's look-ups overlap the handling of the batch before."""
    for start in range(0, 40, 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)],
        )

    class Records(BatchFree):
        def __init__(self) -> None:
            self.prepared: list[tuple[str, ...]] = []
            self.primed: list[tuple[tuple[str, ...], bool]] = []  # (batch, prepared before)
            self.lock = threading.Lock()

        def prepare(self, messages: list[Message]) -> None:
            with self.lock:
                self.prepared.append(tuple(m.message_id for m in messages))

        def prime(self, messages: list[Message]) -> None:
            batch = tuple(m.message_id for m in messages)
            with self.lock:
                self.primed.append((batch, batch in self.prepared))

        def handle(self, message: Message) -> Decision:
            return Decision(Action.DELETE, "done")

    handler = Records()
    assert Loop(queue, handler, Stopper(), once=True).run() == 0

    assert sum(len(batch) for batch, _ in handler.primed) == 40
    assert len(handler.primed) >= 4
    # the first batch is received by the loop itself; each one after was received ahead
    assert [before for _, before in handler.primed[1:]] == [True] * (len(handler.primed) - 1)
    assert len(handler.prepared) == len(set(handler.prepared))  # never twice
    assert queue_counts(sqs, queue_url) == (0, 0)
