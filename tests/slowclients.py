"""A slowloris flood for tests: many loopback clients that each send a request one byte every
few seconds and never finish it, reconnecting (after a pause) whenever the server closes them.

Bounded: a fixed number of sockets, loopback only, and it runs until stopped (the test stops
it in a ``finally``)."""

from __future__ import annotations

import selectors
import socket
import threading
import time

#: what a slow client dribbles: a request whose headers never end
_DRIBBLE = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000


class SlowFlood:
    def __init__(
        self,
        port: int,
        clients: int,
        byte_every: float = 2.0,
        reconnect_after: float = 2.0,
        connects_per_tick: int = 5,
    ) -> None:
        self.port = port
        self.clients = clients
        self.byte_every = byte_every
        self.reconnect_after = reconnect_after
        #: new connections per 50 ms at most (100/s): a burst would overflow the server's
        #: listen backlog, and the kernel's SYN retries would spread the flood over minutes
        self.connects_per_tick = connects_per_tick
        self.connects = 0  # connections made (the first round included)
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-flood", daemon=True)

    def __enter__(self) -> SlowFlood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _connect(self, sel: selectors.DefaultSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        # [socket, bytes sent, next send time]
        sel.register(sock, selectors.EVENT_READ, [sock, 0, time.monotonic()])
        self.connects += 1

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        waiting = [0.0] * self.clients  # connect times of clients not connected
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for key, _ in sel.select(timeout=0.05):  # the server closed it (or sent)
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        gone = sock.recv(4096) == b""
                    except OSError:
                        gone = True
                    if gone:
                        sel.unregister(sock)
                        sock.close()
                        self.closed_by_server += 1
                        waiting.append(now + self.reconnect_after)
                for key in list(sel.get_map().values()):
                    state = key.data
                    if state[2] <= now:
                        try:
                            state[0].send(_DRIBBLE[state[1] : state[1] + 1])
                            state[1] += 1
                        except BlockingIOError:
                            pass  # still connecting
                        except OSError:
                            pass  # reset: its read event above reconnects it
                        state[2] = now + self.byte_every
                waiting.sort()
                due = [t for t in waiting if t <= now][: self.connects_per_tick]
                del waiting[: len(due)]
                for _ in due:
                    self._connect(sel)
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            sel.close()
