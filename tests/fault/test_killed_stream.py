"""`openmaas serve --workers 2`: an API process SIGKILLed while it streams a chat ends the streams it was serving,
and only those: a stream and the calls on the other process complete, and that process keeps answering.

Which process serves a connection is read from the kernel: the worker whose socket's peer is the client's port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from openmaas.sdk import delta_text
from tests.conftest import ADMIN_KEY, REDIS, Server, redis_reachable
from tests.fault.test_serve_workers import until, wait_until_workers
from tests.tiny_llm import build_tiny_causal_lm

MODEL = "slow-llm"
HELLO = [{"role": "user", "content": "Hello there"}]
LONG = 3000  # tokens: seconds of streaming on two shared cores, long enough to kill its process mid-way


def long_context_llm(directory: Path) -> Path:
    """The tiny LLM with a context long enough for a long stream (rotary positions: no weights depend on it)."""
    build_tiny_causal_lm(directory, seed=4)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["max_position_embeddings"] = 4096
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return directory


def worker_of(client: httpx.Client, response: httpx.Response, workers: list[psutil.Process]) -> psutil.Process:
    """The API process holding the other end of this response's connection."""
    port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    [owner] = [
        worker
        for worker in workers
        if any(c.raddr and c.raddr.port == port for c in worker.net_connections(kind="tcp"))
    ]
    return owner


@dataclass
class Stream:
    """A streamed chat on a connection of its own, read to its end by a thread."""

    client: httpx.Client
    response: httpx.Response
    worker: psutil.Process
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # `data: [DONE]` arrived
    error: Exception | None = None
    thread: threading.Thread | None = None

    def read(self, lines: Iterator[str]) -> None:
        try:
            for line in lines:
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    self.chunks.append(json.loads(line[6:]))
        except httpx.HTTPError as error:
            self.error = error

    def text(self) -> str:
        return "".join(delta_text(chunk) for chunk in self.chunks if chunk["choices"])


def open_stream(server: Server, workers: list[psutil.Process], stack: ExitStack, max_tokens: int) -> Stream:
    client = stack.enter_context(server.http())  # a client, so a connection, of its own
    body = {"model": MODEL, "messages": HELLO, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    response = stack.enter_context(client.stream("POST", "/v1/chat/completions", json=body))
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    stream = Stream(client, response, worker_of(client, response, workers))
    stream.thread = threading.Thread(target=stream.read, args=(lines,), daemon=True)
    stream.thread.start()
    return stream


def test_an_api_process_killed_mid_stream_ends_that_stream_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable")
    server = Server(
        tmp_path_factory.mktemp("killed-stream"),
        {"OPENMAAS_REDIS_URL": REDIS, "OPENMAAS_FOUNDATION_MODELS": "[]"},
        args=("--workers", "2"),
    )
    try:
        server.start(timeout=120)
        workers = wait_until_workers(server, 2)
        with server.client() as client:
            client.import_model(long_context_llm(tmp_path_factory.mktemp("llm") / "model"), MODEL)
        with ExitStack() as stack:
            # Short streams until each process has loaded the model, so that the long ones start at once.
            warmed: set[int] = set()
            for _ in range(40):
                warm = open_stream(server, workers, stack, max_tokens=2)
                assert warm.thread is not None
                warm.thread.join(60)
                assert warm.done, warm.error
                warmed.add(warm.worker.pid)
                if len(warmed) == 2:
                    break
            assert len(warmed) == 2, "the kernel never handed a connection to the second process"
            # A long stream on each process, and a keep-alive connection to each for short calls.
            streams: dict[int, Stream] = {}
            for _ in range(40):
                stream = open_stream(server, workers, stack, max_tokens=LONG)
                if stream.worker.pid in streams:
                    stream.response.close()  # leaves: its generation stops
                    continue
                streams[stream.worker.pid] = stream
                if len(streams) == 2:
                    break
            assert len(streams) == 2
            until(lambda: all(len(stream.chunks) >= 3 for stream in streams.values()), timeout=60)
            survivor_calls = stack.enter_context(server.http())
            ping = survivor_calls.get("/v1/models")
            assert ping.status_code == 200
            survivor = worker_of(survivor_calls, ping, workers)  # whose stream and calls must go on
            [victim] = [worker for worker in workers if worker.pid != survivor.pid]
            # The calls on the surviving process's connection, while the other process dies.
            answered: list[int] = []
            stop = threading.Event()

            def call() -> None:
                body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "temperature": 0}
                while not stop.is_set():
                    answered.append(survivor_calls.post("/v1/chat/completions", json=body).status_code)

            caller = threading.Thread(target=call)
            caller.start()
            try:
                until(lambda: len(answered) >= 2)
                assert not streams[victim.pid].done and not streams[survivor.pid].done, "too short to kill mid-way"
                victim.kill()  # SIGKILL, mid-stream
                victim.wait(30)
                cut = streams[victim.pid]
                assert cut.thread is not None
                cut.thread.join(30)
                count = len(answered)
                until(lambda: len(answered) >= count + 3)
            finally:
                stop.set()
                caller.join(60)
            survived = streams[survivor.pid]
            assert survived.thread is not None
            survived.thread.join(120)
        # What the user of the killed process's stream saw: some tokens, then the connection cut, no [DONE].
        assert cut.text() and not cut.done
        assert isinstance(cut.error, httpx.RemoteProtocolError), cut.error
        # The other stream: whole, to its end and its usage.
        assert survived.done and survived.error is None
        assert survived.chunks[-1]["usage"]["completion_tokens"] == LONG, survived.chunks[-1]
        assert [chunk["choices"][0]["finish_reason"] for chunk in survived.chunks if chunk["choices"]][-1] == "length"
        assert answered and set(answered) == {200}, answered  # every call on the surviving process
        assert survivor.is_running() and survivor.status() != psutil.STATUS_ZOMBIE
        for _ in range(4):  # new connections, whichever process the kernel hands them to, are answered
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as fresh:
                body = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "temperature": 0}
                assert fresh.post("/v1/chat/completions", json=body, timeout=60).status_code == 200
    finally:
        server.stop()
