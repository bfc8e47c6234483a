"""Events on the Salt master's event bus after each decision about an instance, for Salt's reactor.

aws_ork decides whether an instance's key is accepted; what a site does next (highstate the new
minion, tell a chat channel, make a Kubernetes bootstrap token) is the site's own business.
One event per decision, tagged ``aws_ork/<kind>/<minion id>``, lets a Salt shop do it with its
own reactor instead of a hook of ours. Kinds (:class:`Kind`): ``launch`` (pre-authorised, or
waiting for its key), ``accepted``, ``terminate`` (key deleted, or there was none) and
``rejected`` (a check or the key stage refused the launch).

Firing is best effort and bounded: the message's decision is already made and the key store
already changed when the event is fired, so a Salt event bus that is down must neither fail
nor delay the message. Salt's own ``fire_event`` waits up to a second to connect when no master
runs; here the connection gets :data:`CONNECT_TIMEOUT_MS`, and after a failure no connection is
tried for :data:`RETRY_SECONDS` (the events meanwhile are dropped: with the master down, its
reactor is down too). The failure is logged as a WARNING at most once per
:data:`WARN_EVERY_SECONDS`, otherwise at DEBUG.

Values that came from a message or from EC2 (the group name, tags) are bounded and escaped like
log values before they go into the event: a reactor sls renders them into YAML.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from aws_ork import __version__
from aws_ork.events.fields import clean
from aws_ork.keys.manager import Outcome
from aws_ork.keys.naming import is_minion_id

log = logging.getLogger(__name__)

#: Tag prefix of every event; a reactor maps ``aws_ork/accepted/*`` and so on.
TAG_PREFIX = "aws_ork"
#: Connecting to the master's event socket: a local socket answers in microseconds, so a
#: quarter second only ever elapses when the master is down (Salt's default is 1 s).
CONNECT_TIMEOUT_MS = 250
#: After a failure, events are dropped without trying for this long: a down master costs a
#: decision at most one connection timeout per this period.
RETRY_SECONDS = 10.0
#: A bus that stays down is reported as a WARNING this often; DEBUG in between.
WARN_EVERY_SECONDS = 600.0
#: Auto Scaling group names are at most 255 characters; anything longer is not one.
GROUP_LIMIT = 255
#: EC2 allows 50 tags per instance, keys of 128 and values of 256 characters.
TAGS_LIMIT = 50
TAG_KEY_LIMIT = 128
TAG_VALUE_LIMIT = 256
#: A decision's reason is already escaped for the log; it is cut to this length.
REASON_LIMIT = 500
#: Launches remembered for the ``accepted`` event that follows them (group, facts, message):
#: one entry per instance waiting for its key.
CONTEXT_LIMIT = 10_000


#: Every event carries these (None when not known), and ``version`` (and Salt's ``_stamp``).
DATA_KEYS = ("instance_id", "minion_id", "group", "facts", "outcome", "reason", "message_id",
             "source", "event")
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
    return {"state": clean(str(facts.get("state")), 32),
            "launch_time": clean(launch_time, 40) if isinstance(launch_time, str) else None,
            "private_dns_name": clean(dns, 255) if isinstance(dns, str) else None,
            "tags": {clean(str(key), TAG_KEY_LIMIT): clean(str(value), TAG_VALUE_LIMIT)
                     for key, value in items}}


def _master_event(opts: Mapping[str, Any]) -> Any:
    import salt.utils.event

    return salt.utils.event.get_master_event(dict(opts), opts["sock_dir"], listen=False)


class SaltEvents:
    """Fires ``aws_ork/<kind>/<minion id>`` events on the master's event bus (one connection,
    opened on the first event, shared by the loop and the key binding arrivals thread).

    ``connect`` makes Salt's event object from the master's opts (tests pass another);
    ``clock`` is monotonic seconds."""

    def __init__(self, opts: Mapping[str, Any], *,
                 connect: Callable[[Mapping[str, Any]], Any] = _master_event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._opts = opts
        self._connect = connect
        self._clock = clock
        self._lock = threading.Lock()  # Salt's event object is not thread-safe
        self._event: Any = None
        self._down_until = 0.0  # no connection is tried before this (after a failure)
        self._warned_at: float | None = None  # last WARNING about a bus that is down
        self._context: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.fired = 0
        self.dropped = 0

    def fire(self, kind: Kind, minion_id: str, data: Mapping[str, Any]) -> bool:
        """Fire one event; True if Salt took it. Never raises, never waits longer than one
        connection timeout. ``data`` is completed with the minion id and aws_ork's version.

        A ``launch`` is remembered, so the ``accepted`` event that follows it (from the key
        binding arrivals thread, or from Salt through our autosign stub) carries the same
        group, EC2 facts and message id."""
        if not is_minion_id(minion_id):  # the tag's last part: never anything else
            return False
        tag = f"{TAG_PREFIX}/{kind.value}/{minion_id}"
        payload = self._payload(kind, minion_id, data)
        with self._lock:
            now = self._clock()
            if now < self._down_until:
                self.dropped += 1
                log.debug("Salt event %s dropped: the master's event bus is down", tag)
                return False
            try:
                if self._event is None:
                    self._event = self._connect(self._opts)
                if not self._event.fire_event(payload, tag, timeout=CONNECT_TIMEOUT_MS):
                    raise ConnectionError("cannot connect to the master's event socket")
            except Exception as exc:  # anything from Salt's transport: best effort
                self._failed(now, tag, exc)
                return False
            self.fired += 1
            if self._warned_at is not None:
                log.info("Salt event bus reachable again; firing aws_ork events")
                self._warned_at = None
            return True

    def _payload(self, kind: Kind, minion_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """The event data; remembers a launch's context and adds it to its acceptance."""
        payload: dict[str, Any] = dict.fromkeys(DATA_KEYS)
        payload.update(instance_id=minion_id, minion_id=minion_id)
        if kind is Kind.ACCEPTED:
            payload.update(self._context.pop(minion_id, {}))
        payload.update({name: value for name, value in data.items() if value is not None})
        if isinstance(payload["group"], str):
            payload["group"] = clean(payload["group"], GROUP_LIMIT)
        if isinstance(payload.get("reason"), str):
            payload["reason"] = payload["reason"][:REASON_LIMIT]
        if isinstance(data.get("facts"), Mapping):
            payload["facts"] = bounded_facts(data["facts"])
        payload["version"] = __version__
        if kind is Kind.LAUNCH:
            self._context[minion_id] = {name: payload[name] for name in CONTEXT_KEYS}
            self._context.move_to_end(minion_id)
            while len(self._context) > CONTEXT_LIMIT:
                self._context.popitem(last=False)
        elif kind is not Kind.ACCEPTED:
            self._context.pop(minion_id, None)
        return payload

    def _failed(self, now: float, tag: str, exc: Exception) -> None:
        self.dropped += 1
        self._down_until = now + RETRY_SECONDS
        self._close()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("cannot fire Salt event %s (%s: %s): the master's event bus is down? "
                        "aws_ork events are dropped until it is back (reactors miss them)",
                        tag, type(exc).__name__, exc)
        else:
            log.debug("Salt event %s dropped: %s", tag, exc)

    def _close(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            try:
                event.destroy()
            except Exception:  # a half-broken connection: nothing more to do with it
                log.debug("closing the Salt event connection failed", exc_info=True)

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: the master's (re-read) config may move its sock_dir: reconnect on the next
        event."""
        with self._lock:
            self._close()
            self._opts = opts
            self._down_until = 0.0

    def close(self) -> None:
        """Close the connection (at exit: Salt warns about an unclosed one)."""
        with self._lock:
            self._close()
