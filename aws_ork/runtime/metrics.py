"""Prometheus metrics and ``/healthz`` on MetricsAddress, read at scrape time.

Nothing is copied into metric objects as it happens: each scrape (and each health probe) asks
a :class:`~aws_ork.runtime.stats.StatsSource` for one :class:`~aws_ork.runtime.stats.Stats`
record (the loop's counters, the key stage's tallies, the mirror's status, the AWS error
tally, gathered by the wiring) and a custom collector over a private registry turns it into
metrics (no process-wide default registry, so tests and a SIGHUP never see stale metrics).
A scrape reads memory and the mirror journal's length only: it never calls AWS or Salt. This
module knows the records only, never the parts that keep the tallies.

Label values are short fixed codes (event kind, reason code, AWS service and error code),
never text from a message, so the number of series stays bounded whatever arrives.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from aws_ork import __version__, defaults
from aws_ork.base.text import clean
from aws_ork.defaults import METRICS_LOG_LINE_LIMIT as _LOG_LINE_LIMIT
from aws_ork.runtime.stats import MirrorStats, Stats, StatsSource

log = logging.getLogger(__name__)


def health(
    source: StatsSource,
    mirror_seconds: float,
    now: Callable[[], float] = time.monotonic,
) -> str | None:
    """None when healthy, else the one-line reason.

    Unhealthy when the loop has not completed a receive within 3 poll intervals (its long
    poll plus PollPause: a hung loop or an unreachable queue), or the S3 mirror has been
    failing for longer than ``mirror_seconds`` (HealthMirrorSeconds)."""
    stats = source.stats()
    queue = stats.queue
    limit = queue.health_seconds
    quiet = now() - queue.last_receive
    if quiet > limit:
        return (
            f"queue {queue.url}: no receive completed for {quiet:.0f} s (limit "
            f"{limit:.0f} s; {queue.receive_failures} failed receives in a row)"
        )
    mirror = stats.mirror
    if mirror is not None and mirror.failing_since is not None:
        failing = time.time() - mirror.failing_since
        if failing > mirror_seconds:
            return (
                f"S3 mirror failing for {failing:.0f} s (HealthMirrorSeconds "
                f"{mirror_seconds:.0f}; {mirror.failures} failed runs, "
                f"{mirror.pending} changes waiting)"
            )
    return None


class AwsOrkCollector(Collector):
    """Every aws_ork metric, read from one :class:`Stats` record taken at scrape time."""

    def __init__(self, source: StatsSource) -> None:
        self.source = source

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        stats = self.source.stats()
        yield InfoMetricFamily("aws_ork_build", "aws_ork's version", value={"version": __version__})
        queue = stats.queue
        received = CounterMetricFamily("aws_ork_messages_received", "SQS messages received")
        received.add_metric([], queue.received)
        yield received
        for name, text, table in (
            ("finished", "messages handled and deleted from the queue", queue.finished),
            ("retried", "messages given back for a retry after a delay", queue.retries),
            ("rejected", "messages that failed a trust check", queue.rejections),
        ):
            family = CounterMetricFamily(
                f"aws_ork_messages_{name}", text, labels=["kind", "reason"]
            )
            for (kind, reason), count in sorted(table.items()):
                family.add_metric([kind, reason], count)
            yield family
        keys = stats.keys
        for name, text, count in (
            ("accepted", "minion keys accepted", keys.accepted),
            ("deleted", "minion keys deleted (terminates)", keys.deleted),
            (
                "preauthorised",
                "minions pre-authorised (autosign stub written)",
                keys.preauthorised,
            ),
            ("rejected", "stale pending keys moved to the rejected keys", keys.rejected),
            (
                "impostors_deleted",
                "key binding: keys presented under a bound id with "
                "another fingerprint than the instance published "
                "(never accepted, removed), each key counted once",
                keys.impostors,
            ),
        ):
            family = CounterMetricFamily(f"aws_ork_keys_{name}", text)
            family.add_metric([], count)
            yield family
        lifecycle = CounterMetricFamily(
            "aws_ork_lifecycle_actions_completed",
            "lifecycle actions completed (CompleteLifecycleAction)",
        )
        lifecycle.add_metric([], stats.lifecycle_completed)
        yield lifecycle
        for name, text, count in (
            (
                "fired",
                "aws_ork/... events fired on the master's event bus (SaltEvents)",
                stats.salt_events_fired,
            ),
            (
                "dropped",
                "aws_ork/... events dropped: the bus was down, hung or full",
                stats.salt_events_dropped,
            ),
        ):
            family = CounterMetricFamily(f"aws_ork_salt_events_{name}", text)
            family.add_metric([], count)
            yield family
        errors = CounterMetricFamily(
            "aws_ork_aws_errors", "failed AWS calls", labels=["service", "code"]
        )
        for (service, code), count in sorted(stats.aws_errors.items()):
            errors.add_metric([service, code], count)
        yield errors
        if stats.mirror is not None:
            repaired = CounterMetricFamily(
                "aws_ork_mirror_repaired",
                "objects of the S3 mirror found overwritten in the "
                "bucket (their metadata claiming the local file, S3 reporting another body) "
                "and uploaded again",
            )
            repaired.add_metric([], stats.mirror.repaired)
            yield repaired
        yield from _gauges(stats)


def _gauges(stats: Stats) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "aws_ork_oldest_message_age_seconds",
        "age (from SentTimestamp) of the oldest message in the latest receive, when it "
        "was received; 0 after an empty receive",
        value=stats.queue.oldest_message_age,
    )
    yield GaugeMetricFamily(
        "aws_ork_last_receive_age_seconds",
        "seconds since a receive last completed",
        value=time.monotonic() - stats.queue.last_receive,
    )
    if stats.mirror is not None:
        yield from _mirror_gauges(stats.mirror)


def _mirror_gauges(mirror: MirrorStats) -> Iterator[GaugeMetricFamily]:
    yield GaugeMetricFamily(
        "aws_ork_mirror_pending_changes",
        "key changes not yet confirmed by S3",
        value=mirror.pending,
    )
    yield GaugeMetricFamily(
        "aws_ork_mirror_behind_seconds",
        "age of the oldest change not yet in S3; 0 when caught up",
        value=mirror.behind_seconds,
    )
    yield GaugeMetricFamily(
        "aws_ork_mirror_failures", "consecutive failed S3 mirror runs", value=mirror.failures
    )
    if mirror.last_success is not None:
        yield GaugeMetricFamily(
            "aws_ork_mirror_last_success_age_seconds",
            "seconds since the last successful S3 mirror run",
            value=max(0.0, time.time() - mirror.last_success),
        )


class MetricsServer:
    """``/metrics`` and ``/healthz`` on one address, served by one asyncio loop in a daemon
    thread.

    Anyone who reaches the address may connect, so nothing a client does may exhaust the
    daemon (the descriptors every ``open()`` of the daemon needs, its threads, its CPU):

    - at most ``max_connections`` are open at once; a newcomer beyond closes the connection
      open longest (so slow clients cannot hold the server: a request sent whole is read
      and answered in the loop's next turns, before that many newer ones arrive);
    - each connection has ``request_seconds`` for its whole life (request read and answer
      sent), not per byte, and ``request_bytes`` for its request line and headers;
    - one thread serves them all (no thread per connection), and when ``accept()`` fails
      with EMFILE/ENFILE asyncio stops accepting for a second (never a busy loop).
    """

    def __init__(
        self,
        address: tuple[str, int],
        collector: Collector,
        healthy: Callable[[], str | None],
        *,
        max_connections: int = defaults.METRICS_MAX_CONNECTIONS,
        request_seconds: float = defaults.METRICS_REQUEST_SECONDS,
        request_bytes: int = defaults.METRICS_REQUEST_BYTES,
    ) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self.registry = registry
        self.healthy = healthy
        self.max_connections = max_connections
        self.request_seconds = request_seconds
        self.request_bytes = request_bytes
        #: binds now: an address in use is a start-up failure (OSError), not a silent gap.
        #: The event loop itself is made in the thread (after a -d fork, never before).
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.create_server(address, family=family, backlog=max_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        #: open connections, oldest first (the first to go when the table is full)
        self._open: dict[asyncio.StreamWriter, None] = {}
        self._last_warning = -math.inf
        self._thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        log.info("metrics on http://%s:%d/metrics, health on /healthz", *self.address)

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if self._thread.is_alive() and loop is not None and stopped is not None:
            try:
                loop.call_soon_threadsafe(stopped.set)
            except RuntimeError:  # the loop has closed meanwhile
                pass
            self._thread.join(10)
        self._sock.close()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            reason = self.healthy()
            if reason is None:
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", f"{reason}\n".encode()
        return 404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"

    # --- the loop's thread ---

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except Exception:  # the metrics must never take the daemon down
            log.exception("metrics server stopped")
        finally:
            self._ready.set()
            for writer in list(self._open):
                writer.transport.abort()
            loop.run_until_complete(asyncio.sleep(0))  # let the aborts close their sockets
            loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        # limit: a line longer than the request may be is refused by readline() itself
        server = await asyncio.start_server(
            self._connection,
            sock=self._sock,
            limit=self.request_bytes,
            backlog=self.max_connections,
        )
        self._ready.set()
        async with server:
            await self._stopped.wait()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors, the out-of-descriptors accept() among them: one WARNING a
        minute at most (asyncio already waits a second before it accepts again)."""
        now = time.monotonic()
        if now - self._last_warning < defaults.METRICS_ACCEPT_WARNING_SECONDS:
            return
        self._last_warning = now
        exc = context.get("exception")
        log.warning(
            "metrics: %s%s", context.get("message", "error"), f": {exc}" if exc is not None else ""
        )

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = None
        while len(self._open) > self.max_connections:  # the oldest makes room
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.transport.abort()
        answered = False
        try:
            async with asyncio.timeout(self.request_seconds):
                request = await self._request(reader)
                if request is not None:
                    status, ctype, body = self._answer(request)
                    writer.write(_response(status, ctype, body))
                    await writer.drain()
                    answered = True
                    log.debug(
                        "metrics: %s %s %d", _peer(writer), clean(request, _LOG_LINE_LIMIT), status
                    )
        except TimeoutError:
            log.debug(
                "metrics: %s: no whole request within %.0f s, closed",
                _peer(writer),
                self.request_seconds,
            )
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            # a reset, a closed peer, a line over the limit (ValueError from readline)
            log.debug("metrics: %s: %s, closed", _peer(writer), type(exc).__name__)
        finally:
            self._open.pop(writer, None)
            if answered:
                writer.close()  # the answer is sent: a normal close
            else:
                writer.transport.abort()

    async def _request(self, reader: asyncio.StreamReader) -> str | None:
        """The request line, its headers read and ignored; None for a request over the size
        limit or cut short."""
        left = self.request_bytes
        first = await reader.readline()
        left -= len(first)
        while True:
            line = await reader.readline()
            left -= len(line)
            if left < 0 or not line:
                return None
            if line in (b"\r\n", b"\n"):
                return first.decode("latin-1").rstrip("\r\n")

    def _answer(self, request: str) -> tuple[int, str, bytes]:
        parts = request.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain; charset=utf-8", b"bad request\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain; charset=utf-8", b"only GET\n"
        try:
            return self.respond(target.split("?", 1)[0])
        except Exception:  # a bug in a scrape must not look like a healthy daemon
            log.exception("metrics request %s failed", clean(target, 100))
            return 500, "text/plain; charset=utf-8", b"internal error\n"


def _response(status: int, ctype: str, body: bytes) -> bytes:
    """One HTTP/1.0 answer; the connection closes after it."""
    head = (
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nServer: aws_ork\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"
