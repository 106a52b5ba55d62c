"""Server-sent events framing, incremental and linear in the bytes received (the hot path).

Follows the WHATWG "event stream" interpretation: lines end in LF, CRLF or CR (a CRLF may be
split across reads); a leading UTF-8 BOM is dropped; ``:`` lines are comments (heartbeats such
as ``: ping``); ``data:`` lines of one event are joined with LF; ``event:`` names the event;
one space after the colon is removed; a blank line dispatches the event (none when it carried no
data); an incomplete event at the end of the stream is discarded. ``id:`` and ``retry:`` are
ignored (a benchmark never reconnects). One non-standard field is understood: llama-server
writes errors as ``error: {...}`` lines, so an ``error:`` field makes an ``error`` event.

Each read is scanned once: only the new bytes are searched, an incomplete line is kept as
pieces and joined once when its end arrives. One event (its data lines plus any incomplete
line) may not exceed ``max_event_bytes``: beyond it ``SseError`` is raised, and the caller ends
the request with that error and closes the connection.
"""

from __future__ import annotations

DEFAULT_MAX_EVENT_BYTES = 16 << 20  # 16 MiB: far above any engine's event, far below trouble
BOM = b"\xef\xbb\xbf"
ERROR_EVENT = b"error"

# (event name or None for the default "message" type, data)
Event = tuple[bytes | None, bytes]


class SseError(Exception):
    """The stream is not usable as server-sent events (an event over the size cap)."""


class SseParser:
    __slots__ = ("_bom", "_cr", "_data", "_dlen", "_event", "_pieces", "_plen", "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._bom: bytes | None = b""  # bytes seen while a BOM is still possible; None: settled
        self._cr = False  # the previous read ended with CR: an LF starting this one belongs to it
        self._pieces: list[bytes] = []  # the incomplete last line, as received
        self._plen = 0
        self._data: list[bytes] = []  # data lines of the event being built
        self._dlen = 0
        self._event: bytes | None = None

    def single(self, chunk: bytes) -> bytes | None:
        """The data of ``chunk`` when it is exactly one whole ``data:`` event and nothing is
        pending (the common case: one event per read; two scans of the read), else None, and
        then ``feed_general`` takes the read. The hot path calls this first."""
        if (chunk[:5] == b"data:" and chunk.find(b"\n") == len(chunk) - 2
                and self._whole_events(chunk)):
            return chunk[6:-2] if chunk[5:6] == b" " else chunk[5:-2]
        return None

    def _whole_events(self, chunk: bytes) -> bool:
        """Nothing pending (BOM settled, no partial line, data, event name or CR) and ``chunk``
        is LF-only whole events within the cap: the fast paths may split it directly."""
        return (chunk[-2:] == b"\n\n" and self._bom is None and not self._pieces
                and not self._data and not self._cr and self._event is None
                and b"\r" not in chunk and len(chunk) <= self.max_event_bytes)

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk`` (body bytes in arrival order)."""
        data = self.single(chunk)
        if data is not None:
            return [(None, data)]
        return self.feed_general(chunk)

    def feed_general(self, chunk: bytes) -> list[Event]:
        """``feed`` for a read that ``single`` did not take."""
        if self._whole_events(chunk):
            # several whole `data: ...` events in one read (a busy client): split once
            out: list[Event] = []
            for ev in chunk[:-2].split(b"\n\n"):
                if ev[:5] != b"data:" or b"\n" in ev:
                    break  # anything else: the general path below, from the read's start
                out.append((None, ev[6:] if ev[5:6] == b" " else ev[5:]))
            else:
                return out
        if self._bom is not None:
            head = self._bom + chunk
            if len(head) < len(BOM) and BOM.startswith(head):
                self._bom = head  # not yet known whether this is a BOM
                return []
            self._bom = None
            chunk = head[len(BOM):] if head.startswith(BOM) else head
        if not chunk:
            return []
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            self._keep_partial(chunk)
            return []
        if self._pieces:
            self._pieces.append(chunk[:end])
            text = b"".join(self._pieces)
            self._pieces = []
            self._plen = 0
        else:
            text = chunk[:end]
        out: list[Event] = []
        for line in text.split(b"\n"):
            if not line:  # blank line: dispatch
                if self._data:
                    out.append((self._event, b"\n".join(self._data)))
                    self._data = []
                    self._dlen = 0
                self._event = None
                continue
            if line[:5] == b"data:":
                value = line[5:]
                self._add_data(value[1:] if value[:1] == b" " else value)
                continue
            if line[:1] == b":":
                continue  # a comment, e.g. a heartbeat
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":  # `data` with no colon: an empty data line
                self._add_data(value)
            elif name == b"event":
                self._event = value or None
            elif name == ERROR_EVENT:
                self._event = ERROR_EVENT
                self._add_data(value)
        if end + 1 < len(chunk):
            self._keep_partial(chunk[end + 1:])
        return out

    def _add_data(self, value: bytes) -> None:
        self._data.append(value)
        self._dlen += len(value) + 1
        if self._dlen > self.max_event_bytes:
            self._too_big()

    def _keep_partial(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._plen += len(piece)
        if self._plen + self._dlen > self.max_event_bytes:
            self._too_big()

    def _too_big(self) -> None:
        self._pieces, self._data, self._plen, self._dlen = [], [], 0, 0
        raise SseError(f"stream event larger than {self.max_event_bytes} bytes (the cap on "
                       f"one event); connection closed")
