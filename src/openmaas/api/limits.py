"""Checks made before a request's body is read: the caller's key (401 before a byte of the body is taken) and
the body's size for its route (413 for a declared Content-Length over the limit at once; a chunked body is
counted as it arrives). `BodyGate` does them; `BodyGateMiddleware` applies it to every route, and `api.direct`
to the routes it answers itself.

FastAPI reads and parses a body before it solves a route's dependencies, so without this a 200 MB body is read
whole before its missing key answers 401. Routes outside /v1 (health, metrics, docs) need no key. A refusal
here leaves the body unread, so its answer closes the connection.

For a request that is fine (a declared length, a key verified in the last seconds) the checks are a scan of
the headers and a dictionary lookup: nothing waits. A key not yet verified is looked up in a thread, which the
route's own check then finds in AuthService's cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.api.errors import rendered
from openmaas.errors import OpenMaaSError, PayloadTooLarge
from openmaas.services.auth import AuthService

CLOSE = "close"


@dataclass
class Pending:
    """What `BodyGate.admit` has left to do for a request."""

    authorization: str | None  # a key to verify (not in the cache), else None
    declared: int | None  # the declared Content-Length, None for a chunked body
    limit: int
    path: str  # whose protocol's error body a refusal takes


class BodyGate:
    def __init__(self, default_bytes: int, routes: Mapping[str, int]) -> None:
        self.default_bytes = default_bytes
        self.routes = dict(routes)  # path → the body limit of its POST (uploads), where not the default
        self.auth: AuthService | None = None  # set once the services are built (the app's lifespan)

    def screen(self, scope: Scope) -> Pending | None:
        """None: the request may go on as it is. Raises the refusal it can tell without waiting; else returns
        what `admit` must still do."""
        length = authorization = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"authorization":
                authorization = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if (length is None or length == b"0") and not chunked:
            return None  # no body: the route's own checks come first
        path = scope["path"]
        limit = self.routes.get(path, self.default_bytes) if scope["method"] == "POST" else self.default_bytes
        try:
            declared = int(length) if length is not None and not chunked else None
            verify = None
            if path.startswith(("/v1/", "/v2/")) and self.auth is not None:
                header = authorization.decode("latin-1") if authorization is not None else None
                if self.auth.cached(header) is None:  # raises for a missing or malformed Authorization
                    verify = header
            if verify is None:
                _check_declared(declared, limit)
                if declared is not None:
                    return None
        except OpenMaaSError as error:
            raise _closing(error) from None
        except ValueError:
            return None  # a malformed Content-Length: the server refuses it before us
        return Pending(verify, declared, limit, path)

    async def admit(self, pending: Pending, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """Verify the key and check the size; the receive and send for the request (counting a chunked body)."""
        try:
            if pending.authorization is not None:
                assert self.auth is not None
                await asyncio.to_thread(self.auth.authenticate, pending.authorization)
            _check_declared(pending.declared, pending.limit)
        except OpenMaaSError as error:
            raise _closing(error) from None
        if pending.declared is not None:
            return receive, send
        counted = _CountedBody(pending.limit, receive, send, pending.path)
        return counted.receive, counted.send


def _check_declared(declared: int | None, limit: int) -> None:
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes, over this route's limit of {limit} bytes")


def _closing(error: OpenMaaSError) -> OpenMaaSError:
    error.headers["connection"] = CLOSE  # the body stays unread: the connection cannot carry another request
    return error


class _CountedBody:
    """A body of no declared length, refused (413) once it grows past the limit. The refusal is raised from
    `receive`; whatever the app answers to it (FastAPI makes a failed read a 400) is replaced by the 413."""

    def __init__(self, limit: int, receive: Receive, send: Send, path: str) -> None:
        self.limit = limit
        self.path = path
        self.received = 0
        self.over = False
        self._receive = receive
        self._send = send

    def _refusal(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over this route's limit of {self.limit} bytes")

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.over = True
                raise self._refusal()
        return message

    async def send(self, message: Message) -> None:
        if not self.over:
            await self._send(message)
        elif message["type"] == "http.response.start":
            response = rendered(_closing(self._refusal()), self.path)
            await self._send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
            await self._send({"type": "http.response.body", "body": response.body})


class BodyGateMiddleware:
    def __init__(self, app: ASGIApp, gate: BodyGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                pending = self.gate.screen(scope)
                if pending is not None:
                    receive, send = await self.gate.admit(pending, receive, send)
            except OpenMaaSError as error:
                await rendered(error, scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)
