"""Events on the Salt master's event bus after each decision about an instance, for Salt's reactor.

aws_ork decides whether an instance's key is accepted; what a site does next (highstate the new
minion, tell a chat channel, make a Kubernetes bootstrap token) is the site's own business.
One event per decision, tagged ``aws_ork/<kind>/<minion id>``, lets a Salt shop do it with its
own reactor instead of a hook of ours. Kinds (:class:`Kind`): ``launch`` (pre-authorised, or
waiting for its key), ``accepted``, ``terminate`` (key deleted, or there was none) and
``rejected`` (a check or the key stage refused the launch).

Firing is best effort and bounded, and off the caller's thread: the message's decision is
already made and the key store already changed when the event is fired, so a Salt event bus
that is down, slow or hung must neither fail nor delay the message. :meth:`SaltEvents.fire`
builds the event and queues it; one worker thread owns the connection to the master's event
socket and fires the events in the order they were queued. (Salt 3008's ``fire_event`` starts
a thread per event inside Salt, whatever the calling thread: its publisher is a SyncWrapper
nested in another; that cost, about a millisecond per event, now falls on the worker.) The
queue holds at most :data:`QUEUE_LIMIT` events; beyond, events are dropped. Salt's own
``fire_event`` waits up to a second to connect when no master runs; here the connection gets
:data:`CONNECT_TIMEOUT_MS`, and after a failure no connection is tried for
:data:`RETRY_SECONDS` (the events meanwhile are dropped: with the master down, its reactor is
down too). A bus that is down, and a queue that is full, are each logged as a WARNING at most
once per :data:`WARN_EVERY_SECONDS`, otherwise at DEBUG. At stop, :meth:`SaltEvents.close`
gives the queued events at most :data:`CLOSE_SECONDS` to be fired; the rest are dropped.

What a reactor may trust: any accepted minion can put any tag on the master's bus with data
of its choosing, so an event's data is only two strings: ``signed``, a canonical JSON text
(:func:`canonical`) of the event's content (its own ``tag``, ``kind``, a wall-clock ``time``
and a random ``nonce`` included), and ``hmac``, its HMAC-SHA256 under the master side's
secret (:mod:`aws_ork.keys.eventkey`), in the form Salt's Jinja ``hmac`` filter checks. A
recipe checks the HMAC, parses ``signed``, checks its ``tag`` against the event's and, to
refuse a replayed copy, its ``time``. Every text value is bounded and reduced to
:data:`aws_ork.events.fields.SAFE_CHARACTERS` (no shell or template metacharacter); the
rest are typed (ids checked, ``time`` an int, ``facts`` a fixed shape).
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aws_ork import __version__
from aws_ork.base.ids import is_minion_id
from aws_ork.base.text import safe
from aws_ork.defaults import REACTOR_CLOSE_SECONDS as CLOSE_SECONDS
from aws_ork.defaults import REACTOR_CONNECT_TIMEOUT_MS as CONNECT_TIMEOUT_MS
from aws_ork.defaults import REACTOR_CONTEXT_LIMIT as CONTEXT_LIMIT
from aws_ork.defaults import REACTOR_QUEUE_LIMIT as QUEUE_LIMIT
from aws_ork.defaults import REACTOR_REASON_LIMIT as REASON_LIMIT
from aws_ork.defaults import REACTOR_RETRY_SECONDS as RETRY_SECONDS
from aws_ork.defaults import REACTOR_TEXT_LIMIT as TEXT_LIMIT
from aws_ork.defaults import REACTOR_WARN_EVERY_SECONDS as WARN_EVERY_SECONDS
from aws_ork.keys.eventkey import EventKey
from aws_ork.keys.result import Outcome

log = logging.getLogger(__name__)

#: Tag prefix of every event; a reactor maps ``aws_ork/accepted/*`` and so on.
TAG_PREFIX = "aws_ork"
#: Auto Scaling group names are at most 255 characters; anything longer is not one.
GROUP_LIMIT = 255
#: EC2 allows 50 tags per instance, keys of 128 and values of 256 characters.
TAGS_LIMIT = 50
TAG_KEY_LIMIT = 128
TAG_VALUE_LIMIT = 256


#: Every event's ``signed`` content carries these (None when not known), and ``tag``,
#: ``kind``, ``time``, ``nonce`` and ``version``.
DATA_KEYS = (
    "instance_id",
    "minion_id",
    "group",
    "facts",
    "outcome",
    "reason",
    "message_id",
    "source",
    "event",
)
#: The length of the random nonce, in hex characters.
NONCE_HEX = 32
#: What a ``launch`` event hands on to the ``accepted`` event that follows it.
CONTEXT_KEYS = ("group", "facts", "message_id", "event")


class Kind(enum.Enum):
    """The second part of the tag."""

    LAUNCH = "launch"
    ACCEPTED = "accepted"
    TERMINATE = "terminate"
    REJECTED = "rejected"


#: launch outcomes -> the event kind (an outcome not listed fires nothing)
LAUNCH_KINDS: Mapping[Outcome, Kind] = {
    Outcome.ACCEPTED: Kind.ACCEPTED,
    Outcome.ALREADY_ACCEPTED: Kind.ACCEPTED,
    Outcome.PREAUTHORISED: Kind.LAUNCH,
    Outcome.NOT_PENDING: Kind.LAUNCH,
    Outcome.BOUND_NOT_YET: Kind.LAUNCH,
    Outcome.REFUSED: Kind.REJECTED,
    Outcome.REMOVED: Kind.REJECTED,
    Outcome.OTHER_KEY_ACCEPTED: Kind.REJECTED,
    Outcome.KEY_TWICE: Kind.REJECTED,
}
#: terminate outcomes -> the event kind
TERMINATE_KINDS: Mapping[Outcome, Kind] = {
    Outcome.DELETED: Kind.TERMINATE,
    Outcome.ABSENT: Kind.TERMINATE,
    Outcome.PREAUTH_WITHDRAWN: Kind.TERMINATE,
}


def kind_of(outcome: Outcome, *, terminate: bool) -> Kind | None:
    """The event a key outcome fires; None for one that fires nothing (an invalid id)."""
    return (TERMINATE_KINDS if terminate else LAUNCH_KINDS).get(outcome)


def bounded_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What EC2 said about an instance (:attr:`aws_ork.checks.Verdict.facts`), bounded for an
    event: its state, its LaunchTime (ISO 8601), its private DNS name and at most EC2's own
    limits of tags, escaped
    (an instance may set its own tags)."""
    tags = facts.get("tags")
    items = sorted(tags.items())[:TAGS_LIMIT] if isinstance(tags, Mapping) else []
    launch_time = facts.get("launch_time")
    dns = facts.get("private_dns_name")
    return {
        "state": safe(str(facts.get("state")), 32),
        "launch_time": safe(launch_time, 40) if isinstance(launch_time, str) else None,
        "private_dns_name": safe(dns, 255) if isinstance(dns, str) else None,
        "tags": {
            safe(str(key), TAG_KEY_LIMIT): safe(str(value), TAG_VALUE_LIMIT) for key, value in items
        },
    }


def canonical(content: Mapping[str, Any]) -> str:
    """The one text that is signed and carried: sorted keys, no spaces, ASCII only (what
    Jinja's ``hmac`` filter encodes is then exactly what was signed)."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def _master_event(opts: Mapping[str, Any]) -> Any:
    import salt.utils.event

    return salt.utils.event.get_master_event(dict(opts), opts["sock_dir"], listen=False)


@dataclass(frozen=True, eq=False)
class _Target:
    """The master's opts an event is fired with: a new one at each reload (compared by
    identity), so that the worker reconnects for the events queued after the reload."""

    opts: Mapping[str, Any]


@dataclass(frozen=True)
class _Queued:
    tag: str
    payload: dict[str, Any]
    target: _Target


class SaltEvents:
    """Fires ``aws_ork/<kind>/<minion id>`` events on the master's event bus: :meth:`fire`
    queues them (from the loop and from the key binding arrivals thread), one worker thread
    fires them in order over one connection, opened on the first event.

    ``key`` signs each event (:mod:`aws_ork.keys.eventkey`). ``connect`` makes Salt's event
    object from the master's opts (tests pass another); it and the object are only ever used
    in the worker thread. ``clock`` is monotonic seconds, ``wall`` the time put in events.
    """

    def __init__(
        self,
        opts: Mapping[str, Any],
        *,
        key: EventKey,
        connect: Callable[[Mapping[str, Any]], Any] = _master_event,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._key = key
        self._wall = wall
        self._connect = connect
        self._clock = clock
        self._queue_limit = queue_limit
        # guards what callers and the worker share: the queue, the launch contexts, the
        # counters and the flags below (never held while Salt is called)
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Queued] = deque()
        self._target = _Target(opts)
        self._context: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._worker: threading.Thread | None = None
        self._busy = False  # the worker is firing an event it took off the queue
        self._closing = False  # close() was called: no more events are queued
        self._abandoned = False  # close() gave up waiting for a worker stuck in Salt
        self._full_warned_at: float | None = None  # last WARNING about a full queue
        # the worker's own, never touched by another thread
        self._event: Any = None
        self._event_target: _Target | None = None  # what self._event was connected with
        self._down_until = 0.0  # no connection is tried before this (after a failure)
        self._warned_at: float | None = None  # last WARNING about a bus that is down
        #: events Salt took, and events dropped (bus down, queue full, or left at stop)
        self.fired = 0
        self.dropped = 0

    def fire(self, kind: Kind, minion_id: str, data: Mapping[str, Any]) -> bool:
        """Queue one event for the worker thread; True if it was queued (not that Salt took
        it: see :attr:`fired`). Never raises, never waits for Salt. ``data`` is completed
        with the minion id and aws_ork's version, made safe, and signed.

        A ``launch`` is remembered, so the ``accepted`` event that follows it (from the key
        binding arrivals thread, or from Salt through our autosign stub) carries the same
        group, EC2 facts and message id."""
        if not is_minion_id(minion_id):  # the tag's last part: never anything else
            return False
        tag = f"{TAG_PREFIX}/{kind.value}/{minion_id}"
        with self._cond:  # one order for the contexts and the queue
            payload = self._signed(tag, kind, self._payload(kind, minion_id, data))
            if self._closing:
                self.dropped += 1
                log.debug("Salt event %s dropped: aws_ork is stopping", tag)
                return False
            if len(self._queue) >= self._queue_limit:
                self.dropped += 1
                self._full(tag)
                return False
            self._queue.append(_Queued(tag, payload, self._target))
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="aws_ork-salt-events", daemon=True
                )  # never holds up an exit
                self._worker.start()
            self._cond.notify_all()
            return True

    def _payload(self, kind: Kind, minion_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """The event's content; remembers a launch's context and adds it to its acceptance.
        Only a terminate forgets a launch's context: a ``rejected`` (whatever caused it)
        leaves the genuine launch's context to its ``accepted``."""
        payload: dict[str, Any] = dict.fromkeys(DATA_KEYS)
        payload.update(instance_id=minion_id, minion_id=minion_id)
        if kind is Kind.ACCEPTED:
            payload.update(self._context.pop(minion_id, {}))
        payload.update(
            {name: value for name, value in data.items() if value is not None and name in DATA_KEYS}
        )
        for name in DATA_KEYS:
            value = payload[name]
            if name == "facts":
                payload[name] = bounded_facts(value) if isinstance(value, Mapping) else None
            elif name in ("instance_id", "minion_id"):
                payload[name] = value if isinstance(value, str) and is_minion_id(value) else None
            elif isinstance(value, str):
                limit = {"group": GROUP_LIMIT, "reason": REASON_LIMIT}.get(name, TEXT_LIMIT)
                payload[name] = safe(value, limit)
            else:
                payload[name] = None
        payload["minion_id"] = minion_id
        payload["version"] = __version__
        if kind is Kind.LAUNCH:
            self._context[minion_id] = {name: payload[name] for name in CONTEXT_KEYS}
            self._context.move_to_end(minion_id)
            while len(self._context) > CONTEXT_LIMIT:
                self._context.popitem(last=False)
        elif kind is Kind.TERMINATE:
            self._context.pop(minion_id, None)
        return payload

    def _signed(self, tag: str, kind: Kind, content: dict[str, Any]) -> dict[str, Any]:
        """The event data: the canonical text of the content (with its tag, kind, time and
        a nonce) and its HMAC. Nothing else: a recipe has only what it can verify."""
        content = dict(
            content,
            tag=tag,
            kind=kind.value,
            time=int(self._wall()),
            nonce=secrets.token_hex(NONCE_HEX // 2),
        )
        text = canonical(content)
        return {"signed": text, "hmac": self._key.sign(text)}

    def _full(self, tag: str) -> None:
        """An event dropped for want of room in the queue (under the lock)."""
        now = self._clock()
        if self._full_warned_at is None or now - self._full_warned_at >= WARN_EVERY_SECONDS:
            self._full_warned_at = now
            log.warning(
                "Salt event %s dropped: %d aws_ork events already wait to be fired "
                "(the master's event bus is slow or hangs?); events are dropped while "
                "the queue is full (reactors miss them)",
                tag,
                len(self._queue),
            )
        else:
            log.debug("Salt event %s dropped: the event queue is full", tag)

    # --- the worker thread ---

    def _work(self) -> None:
        """Fire the queued events in order until close() and the queue is empty (or close()
        gave up on this thread); then close the connection."""
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:  # closing (close() empties it when it gives up)
                    break
                item = self._queue.popleft()
                self._busy = True
            try:
                fired = self._deliver(item)
            except Exception:  # a bug of ours: the thread must live on
                log.exception("Salt event %s dropped", item.tag)
                fired = False
            with self._cond:
                self._busy = False
                if self._abandoned:  # close() counted it as dropped already
                    break
                if fired:
                    self.fired += 1
                else:
                    self.dropped += 1
                self._cond.notify_all()
        self._close()

    def _deliver(self, item: _Queued) -> bool:
        """Fire one event; True if Salt took it. Waits at most one connection timeout for a
        new connection (and, like Salt, as long as the socket takes a message)."""
        now = self._clock()
        if item.target is not self._event_target:  # the first event, or the first after a
            self._close()  # reload: a new connection, at once
            self._event_target = item.target
            self._down_until = 0.0
        if now < self._down_until:
            log.debug("Salt event %s dropped: the master's event bus is down", item.tag)
            return False
        try:
            if self._event is None:
                self._event = self._connect(item.target.opts)
            if not self._event.fire_event(item.payload, item.tag, timeout=CONNECT_TIMEOUT_MS):
                raise ConnectionError("cannot connect to the master's event socket")
        except Exception as exc:  # anything from Salt's transport: best effort
            self._failed(now, item.tag, exc)
            return False
        if self._warned_at is not None:
            log.info("Salt event bus reachable again; firing aws_ork events")
            self._warned_at = None
        return True

    def _failed(self, now: float, tag: str, exc: Exception) -> None:
        self._down_until = now + RETRY_SECONDS
        self._close()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "cannot fire Salt event %s (%s: %s): the master's event bus is down? "
                "aws_ork events are dropped until it is back (reactors miss them)",
                tag,
                type(exc).__name__,
                exc,
            )
        else:
            log.debug("Salt event %s dropped: %s", tag, exc)

    def _close(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            try:
                event.destroy()
            except Exception:  # a half-broken connection: nothing more to do with it
                log.debug("closing the Salt event connection failed", exc_info=True)

    # --- the daemon's own thread ---

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: the master's (re-read) config may move its sock_dir: the events queued
        from now on are fired over a new connection (tried at once, even after a failure);
        those queued before still go the old way."""
        with self._cond:
            self._target = _Target(opts)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """At stop: fire what is queued, waiting at most ``timeout`` seconds in all, then
        close the connection (Salt warns about an unclosed one). Events still queued then,
        and the one a hung bus holds up, are dropped (counted, and one WARNING); so are
        events fired after this."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            worker = self._worker
        if worker is None:
            return
        worker.join(timeout)
        if not worker.is_alive():
            return  # it fired (or dropped) everything, and closed the connection
        with self._cond:
            if self._abandoned:
                return
            self._abandoned = True
            left = len(self._queue) + int(self._busy)
            self._queue.clear()
            self.dropped += left
        log.warning(
            "%d aws_ork Salt events dropped at stop: not fired within %.1f s (the "
            "master's event bus hangs?)",
            left,
            timeout,
        )
