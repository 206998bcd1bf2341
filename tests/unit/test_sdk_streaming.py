"""The SDK's event reader: a line ends at `\\n`, `\\r\\n` or `\\r` only, however the stream is cut into chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import EventSource

from openmaas import APIError, delta_text
from openmaas.sdk.streaming import generation_chunk, job_event

INSIDE = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei"


def events_of(text: str, size: int) -> Iterator[dict | None]:
    chunks = [text[i : i + size].encode() for i in range(0, len(text), size)]
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    for sse in EventSource(response).iter_sse():
        yield job_event(sse)


def test_job_events_keep_unicode_line_separators_inside_their_data() -> None:
    first = json.dumps({"id": 1, "type": "started", "data": {"labels": [INSIDE]}}, ensure_ascii=False)
    second = json.dumps({"id": 2, "type": "succeeded", "data": {}})
    text = f": keep-alive\r\n\r\nid: 1\r\nevent: started\r\ndata: {first}\r\n\r\nid: 2\rdata: {second}\n\n"
    for size in range(1, len(text) + 1, 7):
        events = [e for e in events_of(text, size) if e is not None]
        assert [e["id"] for e in events] == [1, 2], size
        assert events[0]["data"]["labels"] == [INSIDE]


def test_a_generation_stream_ends_at_done_and_raises_an_error_event() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    failure = {"error": {"message": "the model failed", "type": "server_error", "param": None, "code": "x"}}
    text = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\ndata: {json.dumps(failure)}\n\n"
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())
    decoded = [generation_chunk(sse) for sse in list(EventSource(response).iter_sse())[:2]]
    assert decoded[0] is not None and delta_text(decoded[0]) == "Hi" and decoded[1] is None
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())
    last = list(EventSource(response).iter_sse())[-1]
    with pytest.raises(APIError) as caught:
        generation_chunk(last)
    assert caught.value.message == "the model failed" and caught.value.code == "x"
