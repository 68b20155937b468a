"""The HTTP/1.1 protocol `berth serve` runs: uvicorn's httptools protocol with the two limits
it lacks. A request head (request line and headers) larger than `max_head_bytes` is answered
431 and the connection closed (httptools would buffer a 64 MB header whole), and a head not
complete `head_timeout` seconds after the connection opened or its last response went out is
answered 408 and closed (a client trickling a header would hold the connection for ever).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.config import get_settings


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 32 * 1024
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def limited(cls, *, max_head_bytes: int, head_timeout: float) -> type[HttpToolsProtocol]:
        """The protocol class for uvicorn's `http=`, under these limits."""
        return type(
            cls.__name__,
            (cls,),
            {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Fed in pieces while a head is being read, so that the head alone is counted: the
        # parser reports it complete (on_headers_complete) within the piece that ends it.
        while data and self._in_head:
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(431, b"Request Header Fields Too Large")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    # The parser's callbacks say where the bytes are: a head between a message's end (or the
    # connection's start) and on_headers_complete, pipelined requests included.
    def on_message_begin(self) -> None:
        # Not a reset of the count: the parser reports a message's beginning while it reads
        # the first piece of that message's head, which data_received has counted already.
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # The next request's head is on the clock.
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # A response still going out (a stream) is no slow head: its end re-arms the clock.
        busy = self.cycle is not None and not self.cycle.response_complete
        if self._in_head and not busy and not self.transport.is_closing():
            self._refuse(408, b"Request Timeout")

    def _refuse(self, status: int, reason: bytes) -> None:
        self._cancel_head_timer()
        body = reason + b"\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()


class SettingsLimitedHttpToolsProtocol(LimitedHttpToolsProtocol):
    """The limits of this process's settings (BERTH_MAX_HEADER_BYTES, BERTH_HEADER_TIMEOUT_SECONDS).

    For `berth serve --workers N`: uvicorn's worker processes are spawned and import their
    protocol by name, so a class made by `limited()` (which has no importable name) cannot
    reach them; this one reads the limits in the process it runs in.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.max_head_bytes = settings.max_header_bytes
        self.head_timeout = settings.header_timeout_seconds
