"""uvicorn's h11 protocol with a deadline for each request's head (request line and headers).

uvicorn 0.17 (Debian's) waits for a request's headers as long as the client likes, so a
client trickling a byte a second holds a connection open for ever (slowloris); its
keep-alive timeout stops only once the first byte arrives. Here every head must be whole
within ``timeout_s`` of the connection opening or of the previous response: a client that
has started one gets a 408 and the connection is closed; an idle one is closed quietly,
as keep-alive would. A request being served is never cut: the deadline covers the head
only (BodyLimit bounds slow bodies).

uvicorn's command line takes no protocol class, so the deadline holds under ``tlcore serve``
(``--header-timeout``) or ``uvicorn.run(app, http=header_deadline(10))``; under plain
``uvicorn api.app:app`` put a proxy with a header timeout in front.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Optional, Type

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tlcore.api")

_BODY = json.dumps({"detail": "request headers too slow"}).encode()
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class HeaderDeadline(H11Protocol):
    """H11Protocol whose request heads must arrive within ``timeout_s`` seconds.

    Usage: ``uvicorn.run(app, http=header_deadline(10.0))``
    """

    timeout_s = 10.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a whole head arrived: its request is served, whatever it takes
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before the base class handles a pipelined head, which disarms
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        started, _ = self.conn.trailing_data
        if started:
            log.info("%s: request headers not whole after %.0f s: 408", self.client, self.timeout_s)
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def header_deadline(timeout_s: float) -> Type[HeaderDeadline]:
    """The protocol class for uvicorn with heads due within ``timeout_s`` seconds.

    Usage: ``uvicorn.run(app, http=header_deadline(10.0))``
    """
    if not timeout_s > 0:
        raise ValueError(f"header timeout must be > 0 seconds, got {timeout_s}")
    return type("HeaderDeadline", (HeaderDeadline,), {"timeout_s": float(timeout_s)})
