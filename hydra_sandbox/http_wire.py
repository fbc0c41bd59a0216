"""HTTP/1.1 messages on asyncio streams, parsed by llhttp (``httptools``, the parser of Node.js and
uvicorn) in its strict mode: smuggling shapes (Content-Length with Transfer-Encoding, duplicate
lengths, bare LF, folded or malformed headers, control characters in the target) are errors.

:class:`Peer` turns one connection into a sequence of events: a :class:`Head` (request or response
line and headers), body bytes (de-chunked), :data:`END`, or ``None`` when the other side closed between
messages. Writing is left to the caller with :func:`head_bytes` and :func:`chunk`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from http import HTTPStatus

import httptools

__all__ = ["END", "Head", "Peer", "WireError", "chunk", "head_bytes", "reason"]

LAST_CHUNK = b"0\r\n\r\n"


class WireError(Exception):
    """The peer broke HTTP/1.1 (``status`` is the answer it deserves) or closed mid-message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _End:
    def __repr__(self) -> str:
        return "END"


END = _End()
"""The end of the current message's body."""


class Head:
    """A request or response line with its headers (names in lower case, in order)."""

    __slots__ = ("chunked", "headers", "keep_alive", "length", "method", "reason", "status", "target", "version")

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.length: int | None = None
        self.chunked = False

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]

    def first(self, name: bytes) -> bytes:
        for key, value in self.headers:
            if key == name:
                return value
        return b""


Event = Head | bytes | _End | None


class _Callbacks:
    """llhttp's callbacks, queuing events (several messages may arrive in one read)."""

    def __init__(self, response: bool) -> None:
        self.response = response
        self.events: collections.deque[Head | bytes | _End] = collections.deque()
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser = (
            httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)
        )
        self.head = Head()
        self.state = "idle"  # between messages; "head" while its headers come; "body" after them
        self.until_close = False  # a response body that ends when the connection does

    def on_message_begin(self) -> None:
        self.head = Head()
        self.state = "head"

    def on_url(self, url: bytes) -> None:
        self.head.target += url

    def on_status(self, status: bytes) -> None:
        self.head.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        head, parser = self.head, self.parser
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        if isinstance(parser, httptools.HttpResponseParser):
            head.status = parser.get_status_code()
        else:
            head.method = parser.get_method().decode("ascii", "replace")
        length = head.first(b"content-length")
        head.length = int(length) if length else None
        head.chunked = b"chunked" in head.first(b"transfer-encoding").lower()
        no_body = 100 <= head.status < 200 or head.status in (204, 304)
        self.until_close = self.response and head.length is None and not head.chunked and not no_body
        self.state = "body"
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        self.events.append(bytes(body))

    def on_message_complete(self) -> None:
        self.until_close = False
        self.state = "idle"
        self.events.append(END)


class Peer:
    """One HTTP/1.1 connection, read as events (see the module documentation)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, response: bool, max_head: int
    ) -> None:
        self.reader, self.writer = reader, writer
        self.max_head = max_head
        self._in = _Callbacks(response)
        self._head_bytes = 0
        self._upgraded = False
        self.after_upgrade = b""  # bytes that followed a CONNECT or Upgrade head in the same read
        self.idle_since = 0.0

    async def next(self, timeout_s: float) -> Event:
        """The next event; waiting (for a whole head, or the next body bytes) at most ``timeout_s``."""
        events = self._in.events
        if not events:
            async with asyncio.timeout(timeout_s):
                while not events:
                    data = await self.reader.read(65536)
                    if not data:
                        return self._eof()
                    self._feed(data)
        return events.popleft()

    def _feed(self, data: bytes) -> None:
        if self._upgraded:
            raise WireError(400, "data after a CONNECT or Upgrade request")
        try:
            self._in.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True  # CONNECT or Upgrade: its head is queued; the caller refuses or tunnels it
            parsed = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.after_upgrade += data[parsed:]
        except httptools.HttpParserError as exc:
            raise WireError(400, f"malformed HTTP/1.1 ({exc})") from None
        # Bytes read while a head is unfinished (a pipelined read may count a little of the previous
        # body): llhttp would otherwise buffer one endless header value without limit.
        self._head_bytes = self._head_bytes + len(data) if self._in.state == "head" else 0
        if self._head_bytes > self.max_head:
            raise WireError(431, f"message head larger than {self.max_head} bytes")

    def _eof(self) -> Event:
        if self._in.until_close:
            self._in.until_close = False
            self._in.events.append(END)
            return self._in.events.popleft()
        if self._in.state != "idle":
            raise WireError(400, "the connection closed in the middle of a message")
        return None

    @property
    def ready(self) -> bool:
        """An event is already parsed: :meth:`next` will not wait."""
        return bool(self._in.events)

    @property
    def usable(self) -> bool:
        """Still fit for another message (nothing pending, the other side has not closed)."""
        return not (self._in.events or self._upgraded or self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return "Error"


def head_bytes(first_line: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A message head; header names and values come from the parser or from validated configuration."""
    return first_line.encode("latin-1") + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
