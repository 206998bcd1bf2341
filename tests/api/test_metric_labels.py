"""Metric labels come only from the registry: made-up model names never become Prometheus series."""

from __future__ import annotations

import secrets

import httpx

from tests.conftest import Server


def _series(http: httpx.Client) -> set[str]:
    lines = http.get("/metrics").text.splitlines()
    return {line.rsplit(" ", 1)[0] for line in lines if line.startswith("openmaas_") and "{" in line}


def test_unknown_model_names_create_no_series_and_known_ones_are_labelled(server: Server, http: httpx.Client) -> None:
    def made_up(round_: int) -> None:
        name = f"nope-{secrets.token_hex(6)}"
        if round_ % 3 == 0:
            response = http.post(f"/v1/models/{name}/predict", json={"inputs": ["hi"]})
        elif round_ % 3 == 1:
            response = http.post("/v1/embeddings", json={"model": name, "input": "hi"})
        else:
            chat = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            response = http.post("/v1/chat/completions", json=chat)
        assert response.status_code == 404, response.text

    for round_ in range(3):  # every route and status once, so the series they need exist
        made_up(round_)
    http.get("/metrics")  # and the scrape's own
    before = _series(http)
    for round_ in range(300):
        made_up(round_)
    after = _series(http)
    assert after == before, sorted(after - before)[:5]

    ok = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"})
    assert ok.status_code == 200, ok.text
    labelled = 'openmaas_requests_total{method="POST",model="all-minilm-l6-v2",route="/v1/embeddings",status="200"}'
    assert labelled in http.get("/metrics").text
