"""Request ids: every response carries x-request-id (the client's, or a new one) and the headers a handler
left in `request.state.response_headers` (rate-limit status). `RequestIds` makes them; the middleware applies
them to every route, and `api.direct` to the routes it answers itself."""

from __future__ import annotations

import itertools
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestIds:
    def __init__(self) -> None:
        # A new id is this server's random prefix and a counter: unique without a system call per request
        # (secrets.token_hex took ~20% of the event loop's time per prediction under load).
        self._prefix = secrets.token_hex(6)
        self._count = itertools.count(1)

    def of(self, scope: Scope) -> bytes:
        """The client's x-request-id if it sent a usable one, else a new id."""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 128:
                return bytes(value)
        return f"{self._prefix}{next(self._count):08x}".encode()

    @staticmethod
    def response_headers(scope: Scope, request_id: bytes) -> list[tuple[bytes, bytes]]:
        extra = scope.get("state", {}).get("response_headers", {})
        return [(b"x-request-id", request_id), *((name.encode(), value.encode()) for name, value in extra.items())]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, ids: RequestIds) -> None:
        self.app = app
        self.ids = ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.ids.of(scope)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.ids.response_headers(scope, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)
