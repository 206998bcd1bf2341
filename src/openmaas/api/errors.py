"""Renders every failure as OpenAI's error body (KServe v2's `{"error": "..."}` on /v2), with the status from the
one table in openmaas.errors, and documents those answers for the routes (`error_responses`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from openmaas.api.bodies import invalid_json_message
from openmaas.api.disconnect import ClientDisconnected
from openmaas.api.responses import FastJSONResponse
from openmaas.errors import OpenMaaSError, status_and_type
from openmaas.protocol.kserve_v2 import ErrorResponse as V2ErrorBody
from openmaas.protocol.openai import ErrorBody

log = logging.getLogger(__name__)

_MEANINGS = {
    400: "Malformed request: a parameter or the body is invalid (`param` names it)",
    401: "Missing, malformed, unknown, revoked or expired API key",
    403: "The key lacks the scope this route needs, or its tenant is disabled",
    404: "No such resource, or another tenant's",
    409: "Conflict with the resource's state (already exists, in use, finished)",
    413: "Over a size limit or the tenant's storage quota",
    422: "Well-formed but not valid (an unknown recipe or hyperparameter, a bad model directory)",
    429: "Rate limited, or the model's queue is full: retry after `Retry-After` seconds",
    503: "The model could not be loaded, is being prepared, or did not answer in time: retry later",
}
# What every authenticated route may answer: a bad parameter, the key, its scope, its requests per minute.
AUTHENTICATED = (400, 401, 403, 429)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a router or route: each status with OpenAI's error body and what it means here."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}


def v2_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`error_responses` for the /v2 routes, whose error body is KServe v2's."""
    return {status: {"model": V2ErrorBody, "description": _MEANINGS[status]} for status in statuses}


def is_v2(path: str) -> bool:
    """A path of the KServe v2 surface, whose errors are `{"error": "..."}` (its clients read that shape)."""
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    status: int,
    type_: str,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    path: str = "",
) -> FastJSONResponse:
    if is_v2(path):
        return FastJSONResponse({"error": message}, status_code=status, headers=headers)
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return FastJSONResponse(body, status_code=status, headers=headers)


def rendered(error: OpenMaaSError, path: str = "") -> FastJSONResponse:
    """`error`'s response for a request to `path`."""
    status, type_ = status_and_type(error)
    return error_response(status, type_, error.message, error.param, error.code, error.headers, path)


async def _ours(request: Request, error: Exception) -> FastJSONResponse:
    assert isinstance(error, OpenMaaSError)
    return rendered(error, request.url.path)


async def _validation(request: Request, error: Exception) -> FastJSONResponse:
    path = request.url.path
    assert isinstance(error, RequestValidationError)
    first: dict[str, Any] = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":  # FastAPI's: loc is ("body", position), ctx the decoder's reason
        reason = str(first.get("ctx", {}).get("error", "invalid JSON"))
        position = first.get("loc", ("body", 0))[-1]
        message = invalid_json_message(reason, position)
        return error_response(400, "invalid_request_error", message, None, "invalid_json", path=path)
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(400, "invalid_request_error", message, param, first.get("type"), path=path)


_HTTP_CODES = {404: "unknown_url", 405: "method_not_allowed"}


class AllowedMethods:
    """Every method of every route whose path matches a request's, for a 405's `Allow`: Starlette's router
    names only the first such route's methods."""

    def __init__(self, routes: Sequence[BaseRoute] | None) -> None:
        self.routes = routes  # None: the app's own list, as it is when a request comes

    def of(self, request: Request) -> str:
        methods: set[str] = set()
        for route in self.routes if self.routes is not None else request.app.routes:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods.update(getattr(route, "methods", None) or ())
        return ", ".join(sorted(methods))


def _http_handler(allowed: AllowedMethods) -> Callable[[Request, Exception], Awaitable[FastJSONResponse]]:
    async def _http(request: Request, error: Exception) -> FastJSONResponse:
        assert isinstance(error, StarletteHTTPException)
        headers = dict(error.headers or {})
        if error.status_code == 404:
            message = f"unknown URL: {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
            headers["Allow"] = allowed.of(request)
        else:
            message = str(error.detail)
        type_ = "server_error" if error.status_code >= 500 else "invalid_request_error"
        code = _HTTP_CODES.get(error.status_code)
        return error_response(error.status_code, type_, message, None, code, headers, request.url.path)

    return _http


async def _unexpected(request: Request, error: Exception) -> FastJSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "server_error", "internal server error", None, "internal_error", path=request.url.path)


async def _gone(request: Request, _error: Exception) -> Response:
    # Nobody is listening; 499 (nginx's "client closed request") only shows in metrics and logs. A client
    # that leaves is no failure of ours: a debug line, not an error.
    log.debug("client left before the answer to %s %s", request.method, request.url.path)
    return Response(status_code=499)


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute] | None = None) -> None:
    """`routes`: all of the app's, each one itself (FastAPI may keep an included router as one entry, whose
    routes a 405's `Allow` would miss); by default the app's list."""
    app.add_exception_handler(ClientDisconnected, _gone)  # while the work ran
    app.add_exception_handler(ClientDisconnect, _gone)  # Starlette's: while the body was read
    app.add_exception_handler(OpenMaaSError, _ours)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http_handler(AllowedMethods(routes)))
    app.add_exception_handler(Exception, _unexpected)
