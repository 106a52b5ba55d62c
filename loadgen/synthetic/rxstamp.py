"""Serve connections on raw sockets so every read carries the kernel's receive stamp.

asyncio's and uvloop's transports read with ``recv()``, which drops the ancillary data in which
Linux hands over a ``SO_TIMESTAMPING`` receive stamp. So on Linux the synthetic server accepts and
reads itself (``loop.add_reader`` + ``recvmsg``) and writes with ``send``, keeping what the kernel
did not take until the socket is writable again (``loop.add_writer``). The protocol objects
(``http.Connection``) see the same calls an asyncio transport would make, plus the stamp of each
read through ``data_received_at``.

The stamps are software RX stamps (``SOF_TIMESTAMPING_RX_SOFTWARE``), taken when the packet
reached the host's network stack, on CLOCK_REALTIME. They are converted to CLOCK_MONOTONIC with an
offset measured once when the server starts (a step of the wall clock during a run would shift
them; NTP slewing moves it by far less than a microsecond per second). The option is set on the
listening socket, so accepted sockets inherit it and a request that arrives before the accept is
stamped too. For TCP, a read that drains several segments carries the stamp of the last one: when
the protocol is between requests (``between_messages``) the transport reads the next request's
first byte alone, so its stamp is the first segment's, not that of a segment the sender could only
send once this server had read the earlier ones (TCP's receive window: a long prompt's body does
not fit in a fresh connection's window, and a busy server reads late).
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

SO_TIMESTAMPING = 37  # asm-generic value (x86-64, arm64); SCM_TIMESTAMPING has the same number
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
_ANCBUF = socket.CMSG_SPACE(48)  # struct scm_timestamping: three 64-bit struct timespec
_READ_SIZE = 256 * 1024
_monotonic_ns = time.monotonic_ns


def supported() -> bool:
    """Linux on an architecture whose SO_TIMESTAMPING number is the generic one."""
    return sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64", "arm64")


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME − CLOCK_MONOTONIC, from the tightest of a few bracketed readings."""
    best: tuple[int, int] | None = None
    for _ in range(7):
        m1 = _monotonic_ns()
        r = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m2 = _monotonic_ns()
        if best is None or m2 - m1 < best[0]:
            best = (m2 - m1, r - (m1 + m2) // 2)
    assert best is not None
    return best[1]


class StampedTransport:
    """The part of ``asyncio.Transport`` that ``http.Connection`` uses, on a raw socket."""

    __slots__ = (
        "_buf",
        "_closing",
        "_fd",
        "_loop",
        "_lost",
        "_offset",
        "_peer",
        "_protocol",
        "_sock",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: Any,
                 offset_ns: int) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._offset = offset_ns
        self._buf = bytearray()
        self._closing = False
        self._lost = False
        self._peer = sock.getpeername()
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._on_readable)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "peername":
            return self._peer
        return default

    def is_closing(self) -> bool:
        return self._closing or self._lost

    # -- reading ----------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            size = 1 if self._protocol.between_messages else _READ_SIZE
            data, anc, _flags, _addr = self._sock.recvmsg(size, _ANCBUF)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shutdown(exc)
            return
        read_ns = _monotonic_ns()
        if not data:  # EOF: what an asyncio transport does for a protocol without eof_received
            self.close()
            return
        stamp = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING and len(payload) >= 16:
                sec, nsec = struct.unpack_from("qq", payload)
                stamp = sec * 1_000_000_000 + nsec - self._offset
        if stamp:
            self._protocol.data_received_at(data, stamp, "kernel")
        else:
            self._protocol.data_received_at(data, read_ns, "read")

    # -- writing ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._lost or self._closing:
            return
        if self._buf:
            self._buf += data
            return
        try:
            n = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._shutdown(exc)
            return
        if n < len(data):
            self._buf += data[n:]
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            n = self._sock.send(self._buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shutdown(exc)
            return
        del self._buf[:n]
        if not self._buf:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._shutdown(None)

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading; close once what was written has been sent."""
        if self._lost or self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._buf:
            self._shutdown(None)

    def abort(self) -> None:
        self._shutdown(None)

    def _shutdown(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._loop.remove_reader(self._fd)
        if self._buf:
            self._loop.remove_writer(self._fd)
            self._buf.clear()
        self._sock.close()
        self._protocol.connection_lost(exc)


class StampedServer:
    """Accepts on one listening socket (``sockets`` and ``close()`` as asyncio's Server)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 factory: Callable[[], Any]) -> None:
        self._loop = loop
        self._factory = factory
        self._offset = realtime_offset_ns()
        self.sockets = [sock]
        loop.add_reader(sock.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        lsock = self.sockets[0]
        for _ in range(256):  # a burst of connects: take what is queued, then yield
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. EMFILE: leave it queued, try at the next wake-up
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            StampedTransport(self._loop, sock, self._factory(), self._offset)

    def close(self) -> None:
        lsock = self.sockets[0]
        if lsock.fileno() >= 0:
            self._loop.remove_reader(lsock.fileno())
            lsock.close()


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket with software RX stamping on (inherited by accepted
    sockets). Raises OSError when the kernel refuses the option."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING,
                        SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
