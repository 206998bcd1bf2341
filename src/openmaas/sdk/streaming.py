"""Decoding the server's Server-Sent Events (read by `httpx-sse`): generation chunks and job events."""

from __future__ import annotations

import json
from typing import Any

from httpx_sse import ServerSentEvent

from openmaas.sdk.errors import APIError

DONE = "[DONE]"
FINAL_JOB_EVENTS = frozenset({"succeeded", "failed", "cancelled"})  # the event that ends a job's stream
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})  # the job statuses it ends in


def generation_chunk(event: ServerSentEvent) -> dict[str, Any] | None:
    """A chunk of a chat or completion stream; None at `[DONE]`. A failure after the first byte arrives as
    an `{"error": ...}` event and is raised."""
    if event.data == DONE:
        return None
    chunk: dict[str, Any] = json.loads(event.data)
    if isinstance(error := chunk.get("error"), dict):
        raise APIError(
            str(error.get("message", "the stream failed")),
            type=error.get("type"),
            param=error.get("param"),
            code=error.get("code"),
            body=chunk,
        )
    return chunk


def job_event(event: ServerSentEvent) -> dict[str, Any] | None:
    """A job's progress event; None for anything else (the stream's comments never reach here)."""
    if not event.data:
        return None
    decoded: dict[str, Any] = json.loads(event.data)
    return decoded


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a chunk adds: a chat chunk's `delta.content`, or a completion chunk's `text`."""
    parts = []
    for choice in chunk.get("choices") or []:
        if "delta" in choice:
            parts.append(choice["delta"].get("content") or "")
        else:
            parts.append(choice.get("text") or "")
    return "".join(parts)
