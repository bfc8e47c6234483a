"""sd_notify without a dependency: tell systemd (Type=notify) when we are ready or stopping,
and feed its watchdog (WatchdogSec=) so a hung loop gets the daemon restarted."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


class Watchdog:
    """``WATCHDOG=1`` as proof that the polling loop still goes round.

    The loop calls :meth:`ping` at the start of every cycle, for every message it handles and
    while it backs off from an unreachable queue (the loop is alive then, only SQS is not). A
    ping sends a datagram only if a quarter of the watchdog period has passed since the last
    one, so a busy loop does not flood systemd. Between calls the loop waits on purpose at most
    half the period (:meth:`longest_wait` caps the long poll, :attr:`interval` slices a
    backoff); an AWS call that is slow to fail can take longer, so the unit's WatchdogSec is
    sized for the slowest one (data/aws_ork.service).

    Disabled (every method a no-op) when systemd set no watchdog, or set it for another
    process (``$WATCHDOG_PID``, as sd_watchdog_enabled(3) reads it).
    """

    def __init__(
        self,
        period: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[str], bool] = notify,
    ) -> None:
        self.period = period if period and period > 0 else None
        #: the most a caller should sleep between pings (infinite when disabled)
        self.interval = self.period / 4 if self.period else math.inf
        self._clock = clock
        self._send = send
        self._last: float | None = None

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, pid: int | None = None
    ) -> Watchdog:
        """The watchdog systemd asked for in $WATCHDOG_USEC (microseconds), if it is ours."""
        env = os.environ if environ is None else environ
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return cls(None)
        owner = env.get("WATCHDOG_PID")
        if owner:
            try:
                if int(owner) != (os.getpid() if pid is None else pid):
                    return cls(None)
            except ValueError:
                return cls(None)
        return cls(usec / 1_000_000)

    @property
    def enabled(self) -> bool:
        return self.period is not None

    def longest_wait(self, wait: int) -> int:
        """The SQS long poll for one cycle, in whole seconds: at most half the period."""
        if self.period is None:
            return wait
        return max(1, min(wait, int(self.period / 2)))

    def ping(self) -> bool:
        """Tell systemd we are alive, unless we did so less than :attr:`interval` ago.

        True when a datagram was sent."""
        if self.period is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return self._send("WATCHDOG=1")
