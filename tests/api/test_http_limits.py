"""Limits before work, seen over raw sockets: slow heads and stalled bodies are closed with a 408 within their
timeout, too many or too large headers are a 431, a body over its route's limit a 413 before it is read, a body
without a key a 401 before it is read, and past the connection cap a 503."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ADMIN_KEY, Server

TIMEOUT_S = 2.0
JSON_LIMIT = 1024 * 1024
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "OPENMAAS_HEADER_TIMEOUT_S": str(TIMEOUT_S),
        "OPENMAAS_BODY_TIMEOUT_S": str(TIMEOUT_S),
        "OPENMAAS_MAX_JSON_BODY_BYTES": str(JSON_LIMIT),
        "OPENMAAS_MAX_UPLOAD_BYTES": str(2 * JSON_LIMIT),
        "OPENMAAS_MAX_HEADERS": "40",
        "OPENMAAS_MAX_HEADER_BYTES": "8192",
        "OPENMAAS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    server = Server(tmp_path_factory.mktemp("limited"), env).start()
    yield server
    server.stop()


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends before it closes the connection, which it must do within `within` s."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the connection was still open after {within}s: {received[:200]!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: test", *lines, "", ""]).encode()


AUTH = f"Authorization: Bearer {ADMIN_KEY}"


def test_a_head_sent_a_byte_at_a_time_is_closed_with_a_408_within_the_timeout(limited: Server) -> None:
    head = _head("GET", "/healthz")
    with _connect(limited) as sock:
        started = time.monotonic()
        sock.settimeout(0.4)
        answer = b""
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer or time.monotonic() - started > 3 * TIMEOUT_S:
                break
        answer += _until_closed(sock, TIMEOUT_S)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < TIMEOUT_S + 1.5
    with _connect(limited) as idle:  # a connection that never sends a byte is closed too
        started = time.monotonic()
        assert _until_closed(idle, TIMEOUT_S + 1.5).startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("path", ["/v1/models/no-such-model/predict", "/v1/jobs"])
def test_a_body_that_stops_arriving_is_a_408_within_the_timeout(limited: Server, path: str) -> None:
    with _connect(limited) as sock:
        sock.sendall(_head("POST", path, AUTH, "Content-Type: application/json", "Content-Length: 1000"))
        sock.sendall(b'{"inputs": ["hi"')  # 16 of the 1000 bytes, then nothing
        started = time.monotonic()
        answer = _until_closed(sock, TIMEOUT_S + 2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started >= TIMEOUT_S * 0.9


@pytest.mark.parametrize("path", ["/v1/models/no-such-model/predict", "/v1/embeddings", "/v1/datasets"])
def test_a_declared_body_over_the_limit_is_a_413_at_once(limited: Server, path: str) -> None:
    with _connect(limited) as sock:
        sock.sendall(_head("POST", path, AUTH, "Content-Type: application/json", "Content-Length: 2000000000"))
        sock.sendall(b'{"inputs": ["hi"')
        answer = _until_closed(sock, 1.5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b'"code":"payload_too_large"' in answer and b"connection: close" in answer.lower()


def test_an_upload_keeps_its_own_larger_limit(limited: Server) -> None:
    with limited.http() as http:
        body = b"text,label\n" + b"a fine text,yes\nanother one,no\n" * (int(1.5 * JSON_LIMIT) // 32)
        response = http.post("/v1/datasets", files={"file": ("big.csv", body)})
    assert response.status_code == 201, response.text


def test_a_chunked_body_over_the_limit_is_a_413(limited: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b" " * 65536  # 4 MB in all, past the 1 MB limit

    with limited.http() as http:
        response = http.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text


@pytest.mark.parametrize("path", ["/v1/models/no-such-model/predict", "/v1/embeddings", "/v1/datasets"])
def test_a_large_body_without_a_key_is_a_401_before_it_is_read(limited: Server, path: str) -> None:
    total = 200 * 1024 * 1024
    chunk = b"x" * 65536
    sent = 0
    with _connect(limited) as sock:
        sock.sendall(_head("POST", path, "Content-Type: application/json", f"Content-Length: {total}"))
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _until_closed(sock, 5)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:300]
    assert sent < 16 * 1024 * 1024, f"{sent} bytes were sent before the answer"


def test_too_many_or_too_large_headers_are_a_431(limited: Server) -> None:
    many = [f"X-Extra-{i}: {i}" for i in range(60)]
    for lines in (many, ["X-Big: " + "a" * 20000], ["X-Big: " + "a" * 200_000]):
        with _connect(limited) as sock:
            sock.sendall(_head("GET", "/healthz", *lines))
            answer = _until_closed(sock, 2)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert httpx.get(f"{limited.url}/healthz", headers={"X-Fine": "a" * 1000}).status_code == 200


def test_past_the_connection_cap_a_request_is_a_503(limited: Server) -> None:
    held = [_connect(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        with _connect(limited) as sock:
            sock.sendall(_head("GET", "/healthz"))
            sock.settimeout(2)
            assert sock.recv(65536).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{limited.url}/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/v1/models/no-such-model/predict", "/v1/jobs"])
def test_a_client_that_leaves_mid_body_is_no_error_in_the_log(limited: Server, path: str) -> None:
    with _connect(limited) as sock:
        sock.sendall(_head("POST", path, AUTH, "Content-Type: application/json", "Content-Length: 1000"))
        sock.sendall(b'{"inputs": ["hi"')
        time.sleep(0.3)  # the route is reading the body when the client goes
    time.sleep(0.5)
    log = limited.log()
    assert "unhandled error" not in log and "Traceback" not in log and "Exception in ASGI" not in log, log
