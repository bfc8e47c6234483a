"""The SQS queue: receive, delete in batches, retry later, purge.

Only this module talks to SQS; botocore errors are translated into :class:`QueueError`
(and counted for the metrics endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aws_ork import defaults
from aws_ork.aws import AWS_ERRORS, error_code
from aws_ork.base.awserrors import count_aws_error
from aws_ork.base.errors import QueueError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    #: when SQS received it (SentTimestamp, epoch seconds): the backlog's age for the metrics
    sent_timestamp: float | None = None


class Queue:
    """One SQS queue, by URL."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url
        #: how long the queue keeps a message (read by :meth:`check`; SQS's maximum until then)
        self.retention_seconds = defaults.SQS_MAX_RETENTION_SECONDS

    @classmethod
    def open(cls, client: Any, *, url: str | None, name: str) -> Queue:
        """The queue named in the config; QueueUrl wins over QueueName."""
        if url:
            return cls(client, url)
        try:
            return cls(client, client.get_queue_url(QueueName=name)["QueueUrl"])
        except AWS_ERRORS as exc:
            raise QueueError(f"queue {name!r}: {_failed(exc)}: {exc}") from exc

    def check(self) -> int:
        """Reach the queue; return its approximate depth, and note its retention period
        (no envelope older than that can come from it: see the Timestamp check)."""
        attrs = self.attributes("ApproximateNumberOfMessages", "MessageRetentionPeriod")
        try:
            self.retention_seconds = int(attrs["MessageRetentionPeriod"])
        except (KeyError, TypeError, ValueError):
            self.retention_seconds = defaults.SQS_MAX_RETENTION_SECONDS
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def attributes(self, *names: str) -> dict[str, str]:
        """The queue's attributes of these names (those the queue has: ``RedrivePolicy`` and
        ``Policy`` are absent when unset)."""
        try:
            attrs: dict[str, str] = self.client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=list(names)
            )["Attributes"]
        except AWS_ERRORS as exc:
            raise QueueError(f"queue {self.url}: {_failed(exc)}: {exc}") from exc
        return attrs

    def receive(self, wait_seconds: int = defaults.WAIT_TIME_SECONDS) -> list[Message]:
        """Long-poll for up to MAX_MESSAGES messages."""
        try:
            response = self.client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=defaults.MAX_MESSAGES,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            )
        except AWS_ERRORS as exc:
            raise QueueError(f"receive: {_failed(exc)}: {exc}") from exc
        return [_message(raw) for raw in response.get("Messages", [])]

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        """Delete handled messages with one DeleteMessageBatch call; return those that failed."""
        if not messages:
            return []
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)
        ]
        try:
            response = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        except AWS_ERRORS as exc:
            _failed(exc)
            log.error(
                "delete of %d messages failed: %s; they will be delivered again", len(messages), exc
            )
            return list(messages)
        failed = [messages[int(f["Id"])] for f in response.get("Failed", [])]
        for entry in response.get("Failed", []):
            log.error(
                "message %s not deleted: %s %s",
                messages[int(entry["Id"])].message_id,
                entry.get("Code"),
                entry.get("Message", ""),
            )
        return failed

    def retry_later(self, message: Message, delay: int) -> None:
        """Make the message visible again after ``delay`` seconds instead of the queue default."""
        try:
            self.client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=delay
            )
        except AWS_ERRORS as exc:
            log.warning(
                "message %s: could not set retry delay (%s); it returns after the "
                "queue's visibility timeout",
                message.message_id,
                _failed(exc),
            )

    def release(self, messages: Iterable[Message]) -> None:
        """Give unhandled messages back at once (used when stopping mid-batch)."""
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        if not entries:
            return
        try:
            self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
        except AWS_ERRORS as exc:
            log.warning(
                "could not release %d unhandled messages (%s); they return after the "
                "queue's visibility timeout",
                len(entries),
                _failed(exc),
            )

    def purge(self) -> None:
        """Drop every message in the queue (``--purge``)."""
        try:
            self.client.purge_queue(QueueUrl=self.url)
        except AWS_ERRORS as exc:
            raise QueueError(f"purge: {_failed(exc)}: {exc}") from exc


def _failed(exc: BaseException) -> str:
    """The AWS error code of a failed SQS call, counted for the metrics."""
    code = error_code(exc)
    count_aws_error("sqs", code)
    return code


def _message(raw: dict[str, Any]) -> Message:
    attributes = raw.get("Attributes", {})
    try:
        count = int(attributes.get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        count = 1
    try:
        sent: float | None = int(attributes["SentTimestamp"]) / 1000
    except (KeyError, TypeError, ValueError):
        sent = None
    return Message(raw["MessageId"], raw["ReceiptHandle"], raw.get("Body", ""), count, sent)
