"""A killed server loses no metered call and counts none twice: usage goes through a local journal first."""

from __future__ import annotations

import time

from tests.conftest import Server

EMBED = {"model": "all-minilm-l6-v2", "input": ["first text", "second text", "third"]}


def inference_usage(server: Server) -> tuple[int, int]:
    with server.http() as http:
        rows = http.get("/v1/usage").json()["data"]
    row = next((r for r in rows if r["kind"] == "inference"), None)
    return (row["records"], row["items"]) if row else (0, 0)


def test_calls_answered_before_a_sigkill_are_counted_after_the_restart(start_server: type[Server]) -> None:
    server = start_server(OPENMAAS_USAGE_DRAIN_S="3600")  # nothing reaches the database before the kill
    with server.http() as http:
        for _ in range(5):
            assert http.post("/v1/embeddings", json=EMBED).status_code == 200
    server.kill()
    server.start()
    assert inference_usage(server) == (5, 15)


def test_a_crash_between_the_commit_and_the_journal_cleanup_counts_each_call_once(
    start_server: type[Server],
) -> None:
    server = start_server(OPENMAAS_USAGE_DRAIN_S="0.05", OPENMAAS_FAILPOINT="usage_after_commit")
    with server.http() as http:
        assert http.post("/v1/embeddings", json=EMBED).status_code == 200
    assert server.process is not None
    deadline = time.monotonic() + 30
    while server.process.poll() is None and time.monotonic() < deadline:  # killed by the failpoint after its drain
        time.sleep(0.05)
    assert server.process.poll() is not None
    del server.env["OPENMAAS_FAILPOINT"]
    server.start()
    assert inference_usage(server) == (1, 3)
    with server.http() as http:
        assert http.post("/v1/embeddings", json=EMBED).status_code == 200
    assert inference_usage(server) == (2, 6)
