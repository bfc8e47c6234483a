"""The polling loop: receive -> handle each -> delete the handled -> mirror -> pause.

One ``while`` of named steps. A stop (SIGTERM/SIGINT) cuts the long poll short; a message
being handled is finished, the handled ones are deleted, the rest are given back at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from aws_ork import defaults
from aws_ork.base.errors import AwsOrkError, MirrorError, QueueError
from aws_ork.decision import Action, Decision
from aws_ork.defaults import HEALTH_POLLS
from aws_ork.keys.watcher import KeyDirWatcher
from aws_ork.mirror.worker import MirrorWorker
from aws_ork.runtime.stopper import Stopped, Stopper
from aws_ork.runtime.systemd import Watchdog
from aws_ork.sqs.archive import Archive
from aws_ork.sqs.deleter import Deleter
from aws_ork.sqs.queue import Message, Queue
from aws_ork.sqs.receiver import Receiver
from aws_ork.sweep import Sweep

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Totals for the run, logged at exit and read by the metrics endpoint at scrape time.

    The per-(event kind, reason code) tables hold short fixed codes only (see
    ``Decision.reason_code``), so the metrics built from them have a bounded number of series.
    """

    received: int = 0
    deleted: int = 0
    retried: int = 0
    rejected: int = 0
    batches_with_key_changes: int = 0  # receive batches in which we changed a key
    salt_key_changes: int = 0  # key directories changed by Salt itself (autosign, salt-key)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)  # deleted, by kind
    retries: Counter[tuple[str, str]] = field(default_factory=Counter)
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)


class MessageHandler(Protocol):
    """What the loop asks of the decide stage (:class:`aws_ork.decide.Handler`), in the
    order of a batch: ``prepare`` (the loop's look-ahead step, in a worker thread as soon as
    a receive ahead returns: the batch's look-ups made while the previous batch is handled),
    ``prime`` (the batch comes up), ``handle`` for each message, ``forget``, ``flush`` (its
    memories durable before any delete)."""

    def prepare(self, messages: Sequence[Message], /) -> None: ...

    def prime(self, messages: Sequence[Message], /) -> None: ...

    def handle(self, message: Message, /) -> Decision: ...

    def forget(self) -> None: ...

    def flush(self) -> None: ...


class StubsUsed(Protocol):
    """Who follows up keys Salt accepted through aws_ork's autosign stubs (the key
    directory watcher's news): :class:`aws_ork.effects.followups.KeyFollowups`."""

    def note_accepted_by_salt(self, minion_ids: Sequence[str], /) -> None: ...


def oldest_age(messages: list[Message], now: Callable[[], float] = time.time) -> float:
    """Seconds since the oldest of these messages was sent (0 for none or no SentTimestamp)."""
    sent = [m.sent_timestamp for m in messages if m.sent_timestamp is not None]
    return max(0.0, now() - min(sent)) if sent else 0.0


class QueueOutage:
    """Failed receives in a row, logged so that an outage of an hour is a few lines, not
    hundreds: the first failure, then at most one ERROR line every ``every`` seconds, and one
    INFO line when the queue answers again."""

    def __init__(
        self,
        every: float = defaults.OUTAGE_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.clock = clock
        self.failures = 0
        self._since = self._logged = 0.0

    def failed(self, exc: Exception, delay: float) -> None:
        """Count a failed receive; log it if it is the first or the last line is old."""
        now = self.clock()
        self.failures += 1
        if self.failures == 1:
            self._since = self._logged = now
            log.error(
                "%s; retrying in %ss, then less and less often (up to every %ss)",
                exc,
                delay,
                defaults.RECONNECT_CAP_SECONDS,
            )
        elif now - self._logged >= self.every:
            self._logged = now
            log.error(
                "queue still unreachable (%d failures over %.0f s): %s",
                self.failures,
                now - self._since,
                exc,
            )

    def over(self) -> None:
        """A receive worked: say so once if it ends an outage."""
        if self.failures:
            log.info(
                "queue reachable again after %d failures over %.0f s",
                self.failures,
                self.clock() - self._since,
            )
            self.failures = 0


class Loop:
    """Runs until stopped (or, with ``once``, until a receive comes back empty)."""

    def __init__(
        self,
        queue: Queue,
        handler: MessageHandler,
        stopper: Stopper,
        *,
        mirror: MirrorWorker | None = None,
        poll_pause: float = 0.0,
        once: bool = False,
        dry_run: bool = False,
        on_reload: Callable[[], None] | None = None,
        watcher: KeyDirWatcher | None = None,
        stubs_used: StubsUsed | None = None,
        watchdog: Watchdog | None = None,
        sweep: Sweep | None = None,
        archive: Archive | None = None,
    ) -> None:
        self.sweep = sweep  # the reconcile sweep (SweepMinutes), run between receives
        self.queue = queue
        self.handler = handler
        self.stopper = stopper
        self.mirror = mirror
        self.poll_pause = poll_pause
        self.once = once
        self.dry_run = dry_run
        self.on_reload = on_reload
        self.watcher = watcher
        self.stubs_used = stubs_used  # the key stage and effects for Salt's use of a stub
        self.watchdog = watchdog or Watchdog(None)
        self.archive = archive  # ArchiveDir: every received body, before anything else
        self.receiver = Receiver(queue, stopper)
        #: the receives ahead whose look-ahead step is arranged (see _look_ahead)
        self._looking: set[Future[list[Message]]] = set()
        #: look-aheads started, by their batch's message ids (taken when the batch comes up)
        self._ahead: dict[tuple[str, ...], Future[None]] = {}
        self._ahead_lock = threading.Lock()
        self.deleter = Deleter(queue)  # a handled batch is deleted while the next is handled
        self.counters = Counters()
        self.outage = QueueOutage()
        #: monotonic time of the last completed receive (the start counts as one), for /healthz
        self.last_receive = time.monotonic()
        #: /healthz: how long without a completed receive is unhealthy (set by run())
        self.health_seconds = HEALTH_POLLS * (defaults.WAIT_TIME_SECONDS + poll_pause)
        #: age (from SentTimestamp) of the oldest message of the latest receive, when received
        self.oldest_message_age = 0.0
        self._reload = False
        self._seen: set[str] = set()  # --once: ids handled in this run

    def request_reload(self) -> None:
        """SIGHUP: reload between batches (safe to call from a signal handler)."""
        self._reload = True

    def run(self) -> int:
        """The loop; returns the process exit status."""
        wait = defaults.ONCE_WAIT_TIME_SECONDS if self.once else defaults.WAIT_TIME_SECONDS
        wait = self.watchdog.longest_wait(wait)  # every cycle pings the systemd watchdog
        self.health_seconds = HEALTH_POLLS * (wait + self.poll_pause)
        self.last_receive = time.monotonic()
        status: int | None = 0
        errors = 0
        try:
            while not self.stopper.stopping:
                try:
                    status = self._cycle(wait)
                    errors = 0
                except Exception as exc:  # a bug of ours must not stop key management
                    errors += 1
                    delay = defaults.backoff(
                        errors, defaults.RECONNECT_BASE_SECONDS, defaults.RECONNECT_CAP_SECONDS
                    )
                    log.error(
                        "unexpected %s in the loop; going on in %ss",
                        type(exc).__name__,
                        delay,
                        exc_info=True,
                    )
                    if self._sleep(delay):
                        break
                    continue
                if status is not None:
                    break
        finally:
            self._tear_down()
        return status or 0

    def _cycle(self, wait: int) -> int | None:
        """One receive and its batch; an exit status when the loop is to end, else None."""
        self.watchdog.ping()
        self._maybe_reload()
        self._maybe_sweep()
        messages = self._receive(wait)
        if messages is None:
            if self.once and self.outage.failures:
                return 1  # --once reports a queue it could not read
            return None
        if self.archive is not None:
            self.archive.save(messages)  # never raises: a lost copy must not cost a key change
        if self.once:
            messages = self._first_sightings(messages)
            if not messages:
                return 0
        # the batch's one EC2 look-up (made ahead for every batch but the first) goes out
        # before the next receive, so it never waits behind that receive where one server
        # answers both
        self._await_look_ahead(messages)
        self.handler.prime(messages)
        if self.poll_pause <= 0:
            self.receiver.prefetch(wait)  # the next polls run while this batch is handled
            self._look_ahead()
        changed = self._handle_batch(messages)
        self._watch(changed)
        if self._sleep(self.poll_pause):
            return 0
        return None

    def _look_ahead(self) -> None:
        """The look-ahead step: each batch received ahead has its look-ups (the EC2 check's
        one DescribeInstances) made in a worker thread as soon as its receive returns, so the
        EC2 round trip overlaps both the next receive and the handling of the batch before;
        :meth:`MessageHandler.prime` takes the result when the batch comes up (or looks up
        itself). Arranged here, once per receive ahead: the receiver only receives."""
        ahead = set(self.receiver.received_ahead())
        self._looking &= ahead  # those the loop took are gone
        for future in ahead - self._looking:
            self._looking.add(future)
            future.add_done_callback(self._start_look_ahead)

    def _start_look_ahead(self, future: Future[list[Message]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        messages = future.result()
        if messages:
            looked = self.stopper.start(lambda: self.handler.prepare(messages))  # never raises
            with self._ahead_lock:
                self._ahead[tuple(m.message_id for m in messages)] = looked
                while len(self._ahead) > defaults.RECEIVE_AHEAD:  # a batch never taken
                    del self._ahead[next(iter(self._ahead))]

    def _await_look_ahead(self, messages: list[Message]) -> None:
        """A batch comes up: its look-ahead, if one is still running, finishes first, so that
        prime takes its result instead of asking EC2 a second time."""
        with self._ahead_lock:
            looked = self._ahead.pop(tuple(m.message_id for m in messages), None)
        if looked is not None:
            try:
                self.stopper.result(looked)
            except Stopped:
                pass  # prime looks up itself, or the stop ends the batch

    def _sleep(self, seconds: float) -> bool:
        """Stopper.sleep that keeps feeding the systemd watchdog: a loop that waits on
        purpose is alive. True if a stop was requested meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stopper.sleep(min(left, self.watchdog.interval)):
                return True
            self.watchdog.ping()
        return self.stopper.stopping

    def _maybe_sweep(self) -> None:
        """The reconcile sweep, when due; EC2 failing only postpones it."""
        if self.sweep is None or not self.sweep.due():
            return
        try:
            self.sweep.run()
        except AwsOrkError as exc:
            log.error(
                "sweep: %s; the next one is due in %.0f minutes", exc, self.sweep.every_seconds / 60
            )

    def _tear_down(self) -> None:
        """On the way out, however it ends: give back a prefetched batch, hand Salt's last
        changes to the mirror, log the totals."""
        self.receiver.close(give_back=not self.dry_run)
        self.deleter.close()  # the last batch's delete is confirmed before the totals
        try:
            self._watch(False)  # what Salt changed in the last cycle still goes to the mirror
        except Exception:
            log.error("could not look at the key directories a last time", exc_info=True)
        log.info(
            "stopping%s: %d received, %d deleted, %d retried, %d rejected, %d batches changed keys",
            f" ({self.stopper.reason})" if self.stopper.reason else "",
            self.counters.received,
            self.counters.deleted,
            self.counters.retried,
            self.counters.rejected,
            self.counters.batches_with_key_changes,
        )

    def _first_sightings(self, messages: list[Message]) -> list[Message]:
        """``--once``: a message retried in this run and back already is left for a later run.

        Otherwise a launch that keeps waiting for its key would keep ``--once`` from ending.
        """
        fresh = [m for m in messages if m.message_id not in self._seen]
        for message in messages:
            if message.message_id in self._seen and not self.dry_run:
                self.queue.retry_later(message, defaults.retry_delay(message.receive_count))
        self._seen.update(m.message_id for m in fresh)
        return fresh

    def _maybe_reload(self) -> None:
        if not self._reload:
            return
        self._reload = False
        if self.on_reload is None:
            return
        try:
            self.on_reload()
            log.info("reloaded the Salt master config")
        except Exception as exc:  # keep running with what we had
            log.error("reload failed, keeping the previous settings: %s", exc)

    def _receive(self, wait: int) -> list[Message] | None:
        """Long-poll; None when the receive failed or was cut short."""
        log.debug("long poll (up to %ss)", wait)
        try:
            messages = self.receiver.receive(wait)
        except Stopped:
            return None
        except QueueError as exc:
            if self.once:
                self.outage.failures += 1
                log.error("%s", exc)
                return None
            delay = defaults.backoff(
                self.outage.failures + 1,
                defaults.RECONNECT_BASE_SECONDS,
                defaults.RECONNECT_CAP_SECONDS,
            )
            self.outage.failed(exc, delay)
            self._sleep(delay)
            return None
        self.outage.over()
        self.last_receive = time.monotonic()
        self.oldest_message_age = oldest_age(messages)
        self.counters.received += len(messages)
        return messages

    def _watch(self, changed_by_us: bool) -> None:
        """Once per cycle: key changes Salt made without us still reach the S3 mirror.

        A pre-authorised minion accepted through its autosign stub is named exactly (its stub
        is gone); any other change on disk that our own batch does not explain (``salt-key``
        by hand) asks the mirror for a local rescan.
        """
        if self.watcher is None:
            return
        change = self.watcher.poll()
        if not change.changed:
            return
        if change.consumed:
            self.counters.salt_key_changes += len(change.consumed)
            if not self.dry_run and self.stubs_used is not None:
                self.stubs_used.note_accepted_by_salt(change.consumed)
        if self.mirror is None or self.dry_run:
            return
        try:
            if change.consumed:
                self.mirror.request(change.consumed)
            if not changed_by_us and not change.consumed:
                self.counters.salt_key_changes += 1
                self.mirror.request()
        except MirrorError as exc:  # the periodic reconciliation will still catch it
            log.error("could not record Salt's own key changes for the mirror: %s", exc)

    def _handle_batch(self, messages: list[Message]) -> bool:
        """Handle a primed batch, then delete the finished ones (in the deleter's thread);
        True if the key store was changed."""
        done: list[Message] = []
        changed: list[tuple[Message, Decision]] = []
        decided: dict[int, Decision] = {}
        for index, message in enumerate(messages):
            if self.stopper.stopping:
                self._give_back(messages[index:])
                break
            self.watchdog.ping()  # a slow batch (EC2 lookups timing out) is still progress
            decision = self.handler.handle(message)
            decided[id(message)] = decision
            if decision.changed:
                changed.append((message, decision))
            if self._act(message, decision):
                done.append(message)
        self.handler.forget()
        done = self._flush(done)
        if changed:
            self.counters.batches_with_key_changes += 1
            if self.mirror is not None and not self._record_for_mirror(changed):
                unrecorded = {id(m) for m, _ in changed}
                done = [m for m in done if id(m) not in unrecorded]
        if self.dry_run:
            if done:
                log.info("dry run: %d messages would be deleted", len(done))
            return bool(changed)
        self.deleter.delete(done, lambda deleted: self._count_deleted(deleted, decided))
        return bool(changed)

    def _act(self, message: Message, decision: Decision) -> bool:
        """Count a decision and act on it now (a retry's visibility, a stub to watch for);
        True when the message is done (to be deleted with its batch)."""
        self._count(decision)
        if decision.preauthorised and self.watcher is not None:
            self.watcher.expect(decision.preauthorised)
        if decision.action is Action.RETRY and not self.dry_run:
            self.queue.retry_later(message, decision.delay)
        return decision.action is Action.DELETE

    def _flush(self, done: list[Message]) -> list[Message]:
        """The batch's replay memories durable before any delete; when that fails, the
        finished messages are kept (retried soon): none is reported done."""
        try:
            self.handler.flush()
        except OSError as exc:
            log.error(
                "cannot make StateDir durable (%s); keeping %d finished messages for a retry",
                exc,
                len(done),
            )
            if not self.dry_run:
                for message in done:
                    self.queue.retry_later(message, defaults.RETRY_BASE_SECONDS)
            self.counters.retried += len(done)
            return []
        return done

    def _count_deleted(self, deleted: list[Message], decided: dict[int, Decision]) -> None:
        """Messages SQS confirmed deleted are done (in the deleter's thread)."""
        self.counters.deleted += len(deleted)
        for message in deleted:
            decision = decided[id(message)]
            self.counters.finished[decision.kind, decision.reason_code] += 1

    def _record_for_mirror(self, changed: list[tuple[Message, Decision]]) -> bool:
        """Durably note the changed keys for the S3 mirror before their messages are deleted.
        When that fails, those messages are kept (retried soon): not reported done."""
        assert self.mirror is not None
        ids = [d.minion_id for _, d in changed if d.minion_id]
        try:
            self.mirror.request(ids if len(ids) == len(changed) else None)
            return True
        except MirrorError as exc:
            log.error("%s; keeping %d messages for a retry", exc, len(changed))
            if not self.dry_run:
                for message, _ in changed:
                    self.queue.retry_later(message, defaults.RETRY_BASE_SECONDS)
            return False

    def _give_back(self, unhandled: list[Message]) -> None:
        log.info("stop requested: giving %d unhandled messages back to the queue", len(unhandled))
        if not self.dry_run:
            self.queue.release(unhandled)

    def _count(self, decision: Decision) -> None:
        labels = (decision.kind, decision.reason_code)
        if decision.action is Action.RETRY:
            self.counters.retried += 1
            self.counters.retries[labels] += 1
        if decision.rejected:
            self.counters.rejected += 1
            self.counters.rejections[labels] += 1
