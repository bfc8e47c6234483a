"""Key binding: impostors made visible. Salt denies a key presented under an accepted id.

Once the key an instance published is accepted, Salt itself keeps every other key out: an
authentication under that id with another key is denied (stored in the denied keys) and the
accepted key never replaced (outside ``open_mode``). Salt says so only at DEBUG; the operator
must hear that someone else holds a key for one of the fleet's ids. This thread reads the
master's ``salt/auth`` events (``auth_events``, on by default) and hands every denied attempt's
id to the key stage, which judges from the key store alone (an event on the master's bus may
come from any accepted minion and proves nothing): one ``SECURITY:`` line per impostor key,
counted, and the key removed from the denied keys so that it cannot stall anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from aws_ork.base.ids import is_minion_id
from aws_ork.keys.arrivals import AUTH_TAG, close_bus, listen_to_master

log = logging.getLogger(__name__)

#: (minion id) -> None: Salt denied a key under this id (the key stage looks)
OnDenied = Callable[[str], object]
#: seconds between attempts to reach the master's event bus
REOPEN_SECONDS = 5.0


class DeniedWatcher:
    """Reads ``salt/auth`` events for denied attempts (see the module docstring)."""

    def __init__(self, opts: Mapping[str, Any], *, wait: float = 1.0) -> None:
        self.opts = dict(opts)
        self.wait = wait
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_denied: OnDenied | None = None
        self._bus: Any = None
        self._failed = False  # said once until the bus is back

    def start(self, on_denied: OnDenied) -> None:
        self._on_denied = on_denied
        self._thread = threading.Thread(target=self._run, name="key-denied", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reload(self, opts: Mapping[str, Any]) -> None:
        """SIGHUP: the (re-read) master config's event bus, from the next event on."""
        self.opts = dict(opts)
        self._close()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                bus = self._open()
                if bus is None:
                    self._stopping.wait(REOPEN_SECONDS)
                    continue
                try:
                    event = bus.get_event(wait=self.wait, tag=AUTH_TAG, full=True)
                except Exception as exc:  # the bus went away (a master restart)
                    self._lost(exc)
                    continue
                minion_id = denied_id(event)
                if minion_id is not None:
                    self._handle(minion_id)
        finally:
            self._close()

    def _handle(self, minion_id: str) -> None:
        assert self._on_denied is not None
        try:
            self._on_denied(minion_id)
        except Exception:  # the next denied attempt asks again; this thread goes on
            log.error("%s: looking at a denied key failed", minion_id, exc_info=True)

    def _open(self) -> Any:
        if self._bus is not None:
            return self._bus
        try:
            bus = listen_to_master(self.opts)
        except Exception as exc:
            self._lost(exc)
            return None
        if self._failed:
            log.info("key binding: reading the master's salt/auth events again")
        self._failed = False
        self._bus = bus
        return bus

    def _lost(self, exc: BaseException) -> None:
        if not self._failed:
            log.warning(
                "key binding: cannot read salt/auth events from the master's event bus (%s); "
                "keys Salt denies under bound ids are not reported until it is back",
                exc,
            )
        self._failed = True
        self._close()

    def _close(self) -> None:
        bus, self._bus = self._bus, None
        close_bus(bus)


def denied_id(event: Any) -> str | None:
    """The minion id of a denied authentication event, or None (anything else, or not an
    id aws_ork would touch)."""
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or data.get("act") != "denied":
        return None
    minion_id = data.get("id")
    return minion_id if isinstance(minion_id, str) and is_minion_id(minion_id) else None
