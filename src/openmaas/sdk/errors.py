"""The SDK's exceptions, shaped like the `openai` client's: one root, connection errors, and one class per status."""

from __future__ import annotations

from typing import Any

import httpx


class OpenMaaSError(Exception):
    """Every error the SDK raises."""


class APIError(OpenMaaSError):
    """The request failed: the server answered with an error, or could not be reached.

    `type`, `param` and `code` are the fields of the error body (`None` when there is none)."""

    message: str
    type: str | None
    param: str | None
    code: str | None
    body: Any

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.body = body


class APIConnectionError(APIError):
    """No answer: the server is down, the address is wrong, or the connection broke."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the OpenMaaS server at {url}: {reason}", code="connection_error")
        self.url = url


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


class APIStatusError(APIError):
    """An answer with a 4xx or 5xx status; the subclasses name the common ones."""

    def __init__(self, response: httpx.Response, body: Any) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, str):  # the KServe v2 routes answer {"error": "..."}
            error = {"message": error}
        if not isinstance(error, dict):
            error = {"message": response.text or response.reason_phrase}
        super().__init__(
            str(error.get("message") or response.reason_phrase),
            type=error.get("type"),
            param=error.get("param"),
            code=error.get("code"),
            body=body,
        )
        self.response = response
        self.status_code = response.status_code
        self.request_id: str | None = response.headers.get("x-request-id")

    @property
    def status(self) -> int:
        """The same as `status_code` (the name this SDK used first)."""
        return self.status_code

    def __str__(self) -> str:
        return f"{self.status_code} {self.type or 'error'}: {self.message}"


class BadRequestError(APIStatusError):
    """400."""


class AuthenticationError(APIStatusError):
    """401: no key, or a wrong, expired or revoked one."""


class PermissionDeniedError(APIStatusError):
    """403: the key lacks the scope."""


class NotFoundError(APIStatusError):
    """404 (also: another tenant's resource)."""


class ConflictError(APIStatusError):
    """409: already exists, or in the wrong state."""


class RequestTooLargeError(APIStatusError):
    """413."""


class UnprocessableEntityError(APIStatusError):
    """422: well-formed but unusable."""


class RateLimitError(APIStatusError):
    """429: a rate limit or a full queue; `retry_after` is the seconds the server asks to wait."""

    @property
    def retry_after(self) -> float | None:
        value = self.response.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class InternalServerError(APIStatusError):
    """5xx: overloaded, not ready, or a bug of the server."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error answer whose body has been read."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code >= 500:
        return InternalServerError(response, body)
    return _BY_STATUS.get(response.status_code, APIStatusError)(response, body)


def connection_error(error: httpx.TransportError, base_url: str) -> APIConnectionError:
    if isinstance(error, httpx.TimeoutException):
        return APITimeoutError(base_url, "no answer in time")
    reason = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError) and "refused" in reason.lower():
        reason = "connection refused"
    return APIConnectionError(base_url, reason)
