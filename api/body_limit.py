"""An ASGI middleware that answers 413 for request bodies over a limit, without reading them.

A declared Content-Length over the limit is refused before the app runs (a client that sent
``Expect: 100-continue`` never sends the body). A body without a length (chunked) is counted
as it streams: past the limit the app is told the client left, whatever it answers is
replaced by the 413, and the connection is closed so the rest of the body is never read.
"""
from __future__ import annotations

import json
from typing import Awaitable, Callable, MutableMapping, Optional

Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, object], Receive, Send], Awaitable[None]]


class BodyLimit:
    """Wraps ``app``; bodies over ``max_bytes`` get 413 and ``{"detail": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, object], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"request body of {declared} bytes")
            return

        received = 0
        over = False
        forwarded = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))  # type: ignore[arg-type]
                if received > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal forwarded
            if over and not forwarded:
                return  # the app's answer to a body it never fully saw; the 413 replaces it
            forwarded = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over or forwarded:
                raise
        if over and not forwarded:
            await self._refuse(send, f"request body of more than {self.max_bytes} bytes")

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps({"detail": f"{what} is over the upload limit of {self.max_bytes} bytes"}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
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
