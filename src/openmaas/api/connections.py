"""HTTP/1.1 connections with limits uvicorn's httptools protocol lacks: the size and number of a request's
headers (431) and read timeouts, for a request's head (408 once it takes longer than `header_timeout_s` from
its first byte, or from the connection's opening) and for its body (408 once it pauses longer than
`body_timeout_s`, like nginx's client_body_timeout). Without them one connection sending a header a byte at a
time, or declaring a body it never sends, holds its socket and memory forever.

These answers are written by the connection itself, as uvicorn writes its own 400s: the request never reached
the app. A request that arrives whole, in one read, arms no timer: the checks are counts and flags.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_HEAD, _BODY, _DONE = 0, 1, 2  # what a connection waits for: a request's head, its body, or nothing


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float


def _error_body(message: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})


def _reply(status: int, message: str, code: str) -> bytes:
    body = _error_body(message, code)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_HEADERS_TOO_LARGE = (431, "the request's headers are too large", "headers_too_large")


async def _refuse_headers(_scope: Any, _receive: Any, send: Any) -> None:
    status, message, code = _HEADERS_TOO_LARGE
    body = _error_body(message, code)
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `limits` is set by `protocol_class`."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting = _HEAD
        self._head_bytes = 0  # of the head being read, in reads after the one it began in
        self._began = False  # whether the current read began a message
        self._read = 0  # bytes in the current read
        self._last_read = 0.0  # when the body last made progress
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s)  # a connection that never sends a byte is a stalled head too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._began, self._read = False, len(data)
        super().data_received(data)
        if self.transport.is_closing():  # uvicorn refused the request (a 400)
            return
        if self._waiting == _HEAD:
            if not self._began:  # the read that began a head may hold the end of the one before: not counted
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._close_with(*_HEADERS_TOO_LARGE)
                    return
            if self._timer is None:
                self._arm(self.limits.header_timeout_s)
        elif self._waiting == _BODY:
            self._last_read = self.loop.time()
            if self._timer is None:
                self._arm(self.limits.body_timeout_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._waiting, self._head_bytes, self._began = _HEAD, 0, True

    def on_headers_complete(self) -> None:
        self._waiting = _BODY
        self._disarm()
        limits = self.limits
        if len(self.headers) > limits.max_headers or (
            self._head_bytes + self._read > limits.max_header_bytes  # only then can the head be too large
            and len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > limits.max_header_bytes
        ):
            # The request gets a cycle that answers 431 and closes: uvicorn's own way of refusing one.
            app, self.app = self.app, _refuse_headers
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._waiting = _DONE
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._waiting == _HEAD:
            log.info("closed a connection whose request head took over %gs", self.limits.header_timeout_s)
            self._close_with(408, "the request's head took too long to arrive", "request_timeout")
        elif self._waiting == _BODY:
            now, limit = self.loop.time(), self.limits.body_timeout_s
            if self.flow.read_paused:  # the app is not reading yet: the client is not the one stalling
                self._last_read = now
            if now - self._last_read < limit:
                self._timer = self.loop.call_later(self._last_read + limit - now, self._expire)
                return
            log.info("closed a connection whose request body paused for over %gs", limit)
            self._close_with(408, "the request's body stopped arriving", "request_timeout")

    def _close_with(self, status: int, message: str, code: str) -> None:
        self._disarm()
        cycle = self.cycle
        if self._waiting == _BODY:  # the cycle is this request's
            answered = cycle.response_started
            if not cycle.response_complete:
                cycle.disconnected = True  # the app, waiting for this body, gets a disconnect and answers no one
                cycle.message_event.set()
        else:  # a head: the cycle, if any, is the request before, whose answer nothing may overtake
            answered = cycle is not None and not cycle.response_complete
        if not answered:
            self.transport.write(_reply(status, message, code))
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these limits."""
    return type("OpenMaaSHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
