"""Key binding, fast: act within a second of the bound key being presented.

A launch under key binding usually arrives before the instance's minion has presented its
key; its message is retried with backoff (2, 4, 8 ... s), so the key would be accepted only
at the next retry. While such launches wait, a thread of its own looks at the two files Salt
writes when a minion presents a key under that id (``minions_pre/<id>``, and
``minions_denied/<id>`` when another key was pending or accepted first): two ``stat`` calls
per waiting launch every :data:`~aws_ork.defaults.ARRIVAL_POLL_SECONDS`, none when nothing
waits. When one changes, the key stage is asked again at once (deleting an impostor's key,
accepting the bound one). The minion's first ``test.ping`` then waits only for its own
retry (``acceptance_wait_time``, which the instance-side script sets low).

The files are not enough: Salt keeps one pending and one denied key per id, and throws every
later key away, so two impostors presenting their keys fast hold both and the genuine key is
never on disk (issue 18). Salt fires a ``salt/auth`` event for every attempt, kept or not,
with the key presented (``pub``; the master's ``auth_events``, on by default). While launches
wait, this thread also reads those events from the master's event bus, and hands the key of
an attempt under a waiting id to the key stage, which accepts it when it is the bound key.

An accepted id is guarded a while longer (:data:`~aws_ork.defaults.BOUND_GUARD_SECONDS`).
Salt's ``_auth_impl`` fetches the id's key, and when there is none at all (an operator deleted
the impostor's pending key, say) it stores the presented key as pending a few awaits later;
the file driver's ``store`` deletes every other state of the id first, the accepted key
included. An attempt that looked before our accept and stores after it wipes the genuine
key. So while guarded, an id whose accepted file vanished while a pending one appeared is
handed back to the key stage, which accepts the bound key again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from aws_ork import defaults
from aws_ork.base.saltkeys import ACCEPTED, DENIED, PENDING, KeyLocation

log = logging.getLogger(__name__)

#: (mtime_ns or None) of minions_pre/<id> and minions_denied/<id>
Stamp = tuple[int | None, int | None]
#: asked when the files of a waiting id change, or a key is presented under it:
#: (minion id, fingerprint, the presented public key or None) -> finished?
OnArrival = Callable[[str, str, "str | None"], bool]
#: asked when a guarded id lost its accepted key to a pending one: (minion id, fingerprint,
#: the bound public key that was accepted)
OnLost = Callable[[str, str, str], None]
#: the tag of Salt's authentication events
AUTH_TAG = "salt/auth"
#: never the stamp of a file: the first look after :meth:`KeyArrivals.wait_for` always asks
UNSEEN: Stamp = (-1, -1)


class KeyArrivals:
    """Launches waiting for their bound key, and the thread that watches for it."""

    def __init__(
        self,
        location: KeyLocation,
        opts: Mapping[str, Any] | None = None,
        *,
        interval: float = defaults.ARRIVAL_POLL_SECONDS,
        keep_seconds: float = defaults.ARRIVAL_WAIT_SECONDS,
        guard_seconds: float = defaults.BOUND_GUARD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location
        self.opts = dict(opts) if opts is not None else None  # None: the files only
        self.interval = interval
        self.keep_seconds = keep_seconds
        self.guard_seconds = guard_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: dict[str, tuple[str, float, Stamp]] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._on_arrival: OnArrival | None = None
        self._on_lost: OnLost | None = None
        #: accepted ids still watched: minion id -> (fingerprint, public key, until)
        self._guarded: dict[str, tuple[str, str, float]] = {}
        self._bus: Any = None  # the master's event bus, while launches wait (this thread)
        self._bus_failed = False  # said once

    def start(self, on_arrival: OnArrival, on_lost: OnLost | None = None) -> None:
        if self.opts is not None and self.opts.get("auth_events") is not True:
            log.warning(
                "key binding: the master's auth_events is off: Salt fires no salt/auth "
                "event, and impostors presenting keys fast can keep the genuine key "
                "out of the key files (set auth_events: True on the master)"
            )
        self._on_arrival = on_arrival
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._run, name="key-arrivals", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: look where the (re-read) master config keeps keys (and its event bus)."""
        self.location = KeyLocation.from_opts(opts)
        self.opts = dict(opts)

    def wait_for(self, minion_id: str, fingerprint: str) -> None:
        """Watch for this id's key. The key stage is asked once more at the first look: a
        key presented between its last look and the event bus being read is not missed."""
        with self._cond:
            self._waiting[minion_id] = (fingerprint, self._clock(), UNSEEN)
            self._cond.notify_all()

    def guard(self, minion_id: str, fingerprint: str, pub: str) -> None:
        """The bound key ``pub`` was just accepted under this id: for guard_seconds, put it
        back should a racing Salt store replace it with a pending key."""
        with self._cond:
            self._guarded[minion_id] = (fingerprint, pub, self._clock() + self.guard_seconds)
            self._cond.notify_all()

    def waiting(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._waiting)

    def _stamp(self, minion_id: str) -> Stamp:
        def mtime(state: str) -> int | None:
            try:
                return os.stat(self.location.path(state, minion_id)).st_mtime_ns
            except OSError:
                return None

        return mtime(PENDING), mtime(DENIED)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._waiting:
                        self._close_bus()
                    while not self._stopping and not self._waiting and not self._guarded:
                        self._cond.wait()
                    if self._stopping:
                        return
                    waiting = dict(self._waiting)
                    guarded = dict(self._guarded)
                for minion_id, (fingerprint, since, last) in waiting.items():
                    self._look(minion_id, fingerprint, since, last)
                for minion_id, entry in guarded.items():
                    self._check_guarded(minion_id, entry)
                if waiting and self._listen(self.interval):
                    continue
                with self._cond:
                    if self._cond.wait_for(lambda: self._stopping, self.interval):
                        return
        finally:
            self._close_bus()

    def _listen(self, seconds: float) -> bool:
        """Read ``salt/auth`` events for up to ``seconds``; hand each attempt under a waiting
        id to the key stage. False when there is no event bus to read."""
        bus = self._open_bus()
        if bus is None:
            return False
        deadline = self._clock() + seconds
        while not self._stopping:
            left = deadline - self._clock()
            if left <= 0:
                break
            try:
                event = bus.get_event(wait=left, tag=AUTH_TAG, full=True)
            except Exception as exc:  # the bus went away (master restart): files only
                self._bus_lost(exc)
                return True
            if event is None:
                continue
            data = event.get("data") if isinstance(event, dict) else None
            if (
                not isinstance(data, dict)
                or not isinstance(data.get("id"), str)
                or not isinstance(data.get("pub"), str)
            ):
                continue
            with self._cond:
                entry = self._waiting.get(data["id"])
            if entry is not None:
                self._ask(data["id"], entry[0], entry[1], data["pub"])
        return True

    def _open_bus(self) -> Any:
        if self._bus is not None or self.opts is None or self._bus_failed:
            return self._bus
        try:
            bus = listen_to_master(self.opts)
        except Exception as exc:
            self._bus_lost(exc)
            return None
        self._bus = bus
        return bus

    def _bus_lost(self, exc: BaseException) -> None:
        log.warning(
            "key binding: cannot read salt/auth events from the master's event bus "
            "(%s); watching the key files only, which impostors presenting keys fast "
            "can keep the genuine key out of",
            exc,
        )
        self._close_bus()
        self._bus_failed = True

    def _close_bus(self) -> None:
        bus, self._bus = self._bus, None
        self._bus_failed = False
        close_bus(bus)

    def _look(self, minion_id: str, fingerprint: str, since: float, last: Stamp) -> None:
        if self._clock() - since > self.keep_seconds:
            self._forget(minion_id, since)  # the message's own retries go on without us
            return
        stamp = self._stamp(minion_id)
        if stamp == last or (stamp == (None, None) and last != UNSEEN):
            return
        with self._cond:
            if minion_id in self._waiting:
                self._waiting[minion_id] = (fingerprint, since, stamp)
        self._ask(minion_id, fingerprint, since, None)

    def _check_guarded(self, minion_id: str, entry: tuple[str, str, float]) -> None:
        fingerprint, pub, until = entry
        if self._clock() > until:
            with self._cond:
                if self._guarded.get(minion_id) == entry:
                    del self._guarded[minion_id]
            return
        if (
            self._on_lost is None
            or self.location.path(ACCEPTED, minion_id).exists()
            or not self.location.path(PENDING, minion_id).exists()
        ):
            return
        try:
            self._on_lost(minion_id, fingerprint, pub)
        except Exception:  # the next look asks again
            log.error("%s: putting the bound key back failed", minion_id, exc_info=True)

    def _ask(self, minion_id: str, fingerprint: str, since: float, presented: str | None) -> None:
        assert self._on_arrival is not None
        try:
            finished = self._on_arrival(minion_id, fingerprint, presented)
        except Exception:  # the message path retries; this thread must go on
            log.error("%s: handling the presented key failed", minion_id, exc_info=True)
            return
        if finished:
            self._forget(minion_id, since)
            return
        with self._cond:  # what the key stage just changed is no news either
            if minion_id in self._waiting:
                self._waiting[minion_id] = (fingerprint, since, self._stamp(minion_id))

    def _forget(self, minion_id: str, since: float) -> None:
        with self._cond:
            entry = self._waiting.get(minion_id)
            if entry is not None and entry[1] == since:
                del self._waiting[minion_id]


def listen_to_master(opts: Mapping[str, Any]) -> Any:
    """A listening connection to the master's event bus (Salt's ``MasterEvent``); raises
    when the master's publisher cannot be reached."""
    import salt.utils.event

    bus = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
    if not bus.connect_pub(timeout=1):
        bus.destroy()
        raise OSError("cannot connect to the master's event publisher")
    return bus


def close_bus(bus: Any) -> None:
    """Close a connection of :func:`listen_to_master` (None: nothing to close)."""
    if bus is None:
        return
    try:
        bus.destroy()
    except Exception:  # closing a broken connection
        log.debug("closing the event bus failed", exc_info=True)
