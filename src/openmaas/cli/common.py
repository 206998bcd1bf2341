"""What every command shares: the --url, --api-key and --json options, the client, and calm errors.

`CalmGroup` turns the ordinary failures (the server unreachable, an error answer, a local file that cannot
be read) into one line on stderr that says what is wrong and what to do, and a non-zero exit, instead of a
traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from openmaas.cli.output import err
from openmaas.sdk import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Client,
    RateLimitError,
)

UrlOption = Annotated[str | None, typer.Option("--url", envvar="OPENMAAS_URL", help="Server URL.")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="OPENMAAS_API_KEY", help="API key.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer (for scripts).")]

API_ERROR_EXIT = 1
LOCAL_ERROR_EXIT = 2


def client(url: str | None, api_key: str | None) -> Client:
    return Client(url, api_key)


def status_hint(error: APIStatusError) -> str:
    """What to do about an error answer, where the message alone does not say."""
    if error.status_code == 401:
        return "set OPENMAAS_API_KEY (or --api-key) to a valid key; the admin key is in the data directory's admin.key"
    if error.status_code == 403:
        return "use a key with the scope this needs (openmaas keys create TENANT --scope ...)"
    if isinstance(error, RateLimitError):
        wait = error.retry_after
        return f"retry in {wait:g} s" if wait is not None else "retry later"
    if error.status_code >= 500:
        return f"retry later, or see the server's log (request id {error.request_id})"
    return ""


def one_line(message: str, limit: int = 300) -> str:
    """A message as one line (a proxy's error page is HTML over many), cut at `limit` characters."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(error: BaseException) -> tuple[str, int] | None:
    """The one line for an ordinary failure and its exit status; None for anything else (a bug: traceback)."""
    if isinstance(error, APITimeoutError):
        return f"{error.message}; retry, or check the server's load", API_ERROR_EXIT
    if isinstance(error, APIConnectionError):
        return (
            f"{error.message}; start it with `openmaas serve`, or point --url (OPENMAAS_URL) at it",
            API_ERROR_EXIT,
        )
    if isinstance(error, APIStatusError):
        line = f"{error.status_code} ({error.code or error.type or 'error'}): {one_line(error.message)}"
        hint = status_hint(error)
        return (f"{line}; {hint}" if hint else line), API_ERROR_EXIT
    if isinstance(error, APIError):  # a stream that failed after it began
        return f"{error.code or error.type or 'error'}: {one_line(error.message)}", API_ERROR_EXIT
    if isinstance(error, FileNotFoundError):
        return f"no such file: {error.filename}; check the path (it is read on this machine)", LOCAL_ERROR_EXIT
    if isinstance(error, IsADirectoryError):
        return f"{error.filename} is a directory; give a file", LOCAL_ERROR_EXIT
    if isinstance(error, PermissionError):
        return f"cannot read {error.filename}: permission denied", LOCAL_ERROR_EXIT
    return None


class CalmGroup(TyperGroup):
    """The root command group: ordinary failures of any command below it end in one line, not a traceback."""

    def invoke(self, ctx: Any) -> Any:  # Typer's own (vendored) click Context, which it does not export
        try:
            return super().invoke(ctx)
        except (APIError, OSError) as error:
            described = describe(error)
            if described is None:
                raise
            line, code = described
            err.print(Text.assemble(("error", "bold red"), " ", line), soft_wrap=True, highlight=False)
            raise typer.Exit(code) from None
