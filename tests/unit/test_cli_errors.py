"""What the CLI says about an error answer that is not ours: one line, whatever the body."""

from __future__ import annotations

import httpx

from openmaas.cli.common import describe
from openmaas.sdk.errors import status_error


def test_a_proxys_html_error_page_is_one_line_with_what_to_do() -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n" + "<p>upstream down</p>\n" * 200 + "</html>"
    response = httpx.Response(502, text=page, headers={"x-request-id": "req-1"})
    described = describe(status_error(response))
    assert described is not None
    line, code = described
    assert "\n" not in line and len(line) < 450 and code == 1
    assert line.startswith("502 (error): <html>") and "retry later" in line and "req-1" in line


def test_a_rate_limit_says_when_to_retry() -> None:
    body = {
        "error": {"message": "too many requests", "type": "rate_limit_error", "param": None, "code": "rate_limited"}
    }
    described = describe(status_error(httpx.Response(429, json=body, headers={"retry-after": "3"})))
    assert described == ("429 (rate_limited): too many requests; retry in 3 s", 1)
