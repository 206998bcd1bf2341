"""The one exception root of OpenMaaS and the single table that maps error kinds to HTTP status."""

from __future__ import annotations


class OpenMaaSError(Exception):
    """A failure the caller can act on. `kind` picks the HTTP status and OpenAI error type."""

    kind = "invalid_request"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}


class InvalidRequest(OpenMaaSError):
    kind = "invalid_request"


class Unauthenticated(OpenMaaSError):
    kind = "unauthenticated"
    default_code = "invalid_api_key"


class PermissionDenied(OpenMaaSError):
    kind = "permission_denied"


class NotFound(OpenMaaSError):
    kind = "not_found"


class Conflict(OpenMaaSError):
    kind = "conflict"


class PayloadTooLarge(OpenMaaSError):
    kind = "too_large"
    default_code = "payload_too_large"


class Unprocessable(OpenMaaSError):
    kind = "unprocessable"


class RateLimited(OpenMaaSError):
    kind = "rate_limited"


class Unavailable(OpenMaaSError):
    kind = "unavailable"


# kind -> (HTTP status, OpenAI error "type")
ERROR_TABLE: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "unauthenticated": (401, "authentication_error"),
    "permission_denied": (403, "permission_error"),
    "not_found": (404, "invalid_request_error"),
    "conflict": (409, "invalid_request_error"),
    "too_large": (413, "invalid_request_error"),
    "unprocessable": (422, "invalid_request_error"),
    "rate_limited": (429, "rate_limit_error"),
    "unavailable": (503, "server_error"),
}


def status_and_type(error: OpenMaaSError) -> tuple[int, str]:
    return ERROR_TABLE[error.kind]
