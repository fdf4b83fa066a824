"""ASGI middleware that bounds what one request may cost the server before the app sees it.

BodyLimit answers 413 for request bodies over a limit, without reading them. A declared
Content-Length over the limit is refused before the app runs (a client that sent
``Expect: 100-continue`` never sends the body). A body without a length (chunked) is counted
as it streams: past the limit the app is told the client left, whatever it answers is
replaced by the 413, and the connection is closed so the rest of the body is never read.
A body that arrives too slowly (a byte a second holds a connection open for as long as the
client likes) gets a 408 the same way: after ``grace_s`` seconds of waiting for it, it must
have arrived at ``min_rate`` bytes a second on average. Only the time spent waiting for the
client counts, not the time the app takes to consume what it got.

HeaderLimit answers 431 for a request whose target and headers together are over a limit.
"""
from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable, MutableMapping, Optional, Tuple

Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, object], Receive, Send], Awaitable[None]]

_DISCONNECT: Message = {"type": "http.disconnect"}


class BodyLimit:
    """Wraps ``app``; bodies over ``max_bytes`` get 413, bodies slower than ``min_rate`` bytes/s
    (after the first ``grace_s`` seconds) get 408, both with ``{"detail": ...}``.

    Usage: ``app.add_middleware(BodyLimit, max_bytes=10 * 1024 * 1024)``
    """

    def __init__(self, app: ASGIApp, max_bytes: int, grace_s: float = 30.0, min_rate: float = 64 * 1024) -> None:
        self.app, self.max_bytes, self.grace_s, self.min_rate = app, max_bytes, grace_s, min_rate

    async def __call__(self, scope: MutableMapping[str, object], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, 413, f"request body of {declared} bytes is over the upload limit of "
                                     f"{self.max_bytes} bytes")
            return
        guard = _BodyGuard(self, receive)
        forwarded = False

        async def guarded_send(message: Message) -> None:
            nonlocal forwarded
            if guard.refusal is not None and not forwarded:
                return  # the app's answer to a body it never fully saw; the refusal replaces it
            forwarded = True
            await send(message)

        try:
            await self.app(scope, guard.receive, guarded_send)
        except Exception:
            if guard.refusal is None or forwarded:
                raise
        if guard.refusal is not None and not forwarded:
            await _refuse(send, *guard.refusal)


class _BodyGuard:
    """One request's ``receive``, counting the body and timing it against the limits."""

    def __init__(self, limit: BodyLimit, receive: Receive) -> None:
        self.limit, self._receive = limit, receive
        self.received, self.complete, self.waited = 0, False, 0.0
        self.refusal: Optional[Tuple[int, str]] = None

    async def receive(self) -> Message:
        if self.refusal is not None:
            return _DISCONNECT
        if self.complete:  # the app waits for a disconnect: no deadline for that
            return await self._receive()
        limit, clock = self.limit, asyncio.get_running_loop().time
        # The client may keep us waiting grace_s, plus one second for every min_rate bytes it sent.
        left = limit.grace_s + self.received / limit.min_rate - self.waited
        start = clock()
        try:
            message = await asyncio.wait_for(self._receive(), max(left, 0.0))
        except asyncio.TimeoutError:
            self.refusal = (408, f"request body too slow: {self.received} bytes in {self.waited + left:.0f} s "
                                 f"(after {limit.grace_s:g} s it must arrive at {limit.min_rate:.0f} bytes/s)")
            return _DISCONNECT
        finally:
            self.waited += clock() - start
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))  # type: ignore[arg-type]
            self.complete = not message.get("more_body", False)
            if self.received > limit.max_bytes:
                self.refusal = (413, f"request body of more than {limit.max_bytes} bytes is over the upload "
                                     f"limit of {limit.max_bytes} bytes")
                return _DISCONNECT
        return message


class HeaderLimit:
    """Wraps ``app``; a request whose target (path and query) and headers add up to more than
    ``max_bytes`` gets 431 and ``{"detail": ...}``. uvicorn's HTTP parser already refuses a
    head that arrives in pieces over 16 KiB, but takes a larger one that arrives at once.

    Usage: ``app.add_middleware(HeaderLimit, max_bytes=16 * 1024)``
    """

    def __init__(self, app: ASGIApp, max_bytes: int = 16 * 1024) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, object], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")  # type: ignore[arg-type]
            size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))  # type: ignore[misc]
            if size > self.max_bytes:
                await _refuse(send, 431, f"request target and headers of {size} bytes are over the limit of "
                                         f"{self.max_bytes} bytes")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    """Answers ``status`` and closes the connection (the rest of the request is never read)."""
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: MutableMapping[str, object]) -> Optional[int]:
    for name, value in scope.get("headers", ()):  # type: ignore[union-attr]
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
