"""Every integer a client sends is bounded before it reaches the database: too large or negative is a 4xx
with OpenAI's error body, never a 500 (SQLite and Postgres both overflow at 2**63)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

HUGE = [2**53, 2**63, 2**64 + 1, 10**30]  # 2**53: just past DB_INT_MAX, the bound every route states
NEGATIVE = [-1, -(2**63) - 1]
BAD = [*HUGE, *NEGATIVE]


@pytest.fixture(scope="module")
def job_id(http: httpx.Client) -> str:
    dataset = http.post(
        "/v1/datasets",
        files={"file": ("bounds.csv", b"text,label\nfirst text,a\nsecond text,b\n")},
        data={"name": "bounds"},
    ).json()["id"]
    job = http.post("/v1/jobs", json={"dataset": dataset, "model": "bounds", "hyperparameters": {"epochs": 1}})
    assert job.status_code == 201, job.text
    return str(job.json()["id"])


def assert_refused(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in (statuses or (400, 422)), (response.request.url, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("value", BAD)
def test_query_path_and_header_integers_out_of_range_are_refused(http: httpx.Client, job_id: str, value: int) -> None:
    events = f"/v1/jobs/{job_id}/events"
    assert_refused(http.get(events, params={"after": value}))
    assert_refused(http.get(events, params={"after": value, "stream": "true"}))
    assert_refused(http.get(events, headers={"Last-Event-ID": str(value)}))
    assert_refused(http.get(events, params={"stream": "true"}, headers={"Last-Event-ID": str(value)}))
    for path in (events, "/v1/jobs", "/v1/datasets", "/v1/audit"):
        assert_refused(http.get(path, params={"limit": value}))
    assert_refused(http.delete(f"/v1/models/bounds/versions/{value}"))
    assert_refused(http.put("/v1/models/bounds/aliases/best", json={"version": value}))
    for ref in (f"bounds:{value}", f"all-minilm-l6-v2:{value}"):
        assert_refused(http.get(f"/v1/models/{ref}"), 400, 404, 422)
        assert_refused(http.post(f"/v1/models/{ref}/predict", json={"inputs": ["x"]}), 400, 404, 422)
        assert_refused(http.post(f"/v1/models/{ref}/load"), 400, 404, 422)
        assert_refused(http.post(f"/v1/models/{ref}/unload"), 400, 404, 422)
        assert_refused(http.get(f"/v1/models/{ref}/artifact"), 400, 404, 422)
    assert http.get("/healthz").status_code == 200


def test_a_malformed_last_event_id_is_a_400(http: httpx.Client, job_id: str) -> None:
    for value in ("²", "١٢", "12a", "-3"):
        assert_refused(http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": value.encode()}))


@pytest.mark.parametrize("value", BAD)
def test_body_integers_out_of_range_are_refused(http: httpx.Client, job_id: str, value: int) -> None:
    dataset = http.get(f"/v1/jobs/{job_id}").json()["dataset"]
    for name in ("epochs", "batch_size", "seed", "max_steps", "early_stopping_patience", "checkpoint_every_steps",
                 "log_every_steps", "max_features", "hidden_units"):  # fmt: skip
        body: dict[str, Any] = {"dataset": dataset, "model": "bounds-hp", "hyperparameters": {name: value}}
        assert_refused(http.post("/v1/jobs", json=body))
    if value not in range(-100, 101):
        assert_refused(http.post("/v1/jobs", json={"dataset": dataset, "model": "bounds-hp", "priority": value}))
    for limit in ("requests_per_minute", "tokens_per_minute", "concurrent_jobs", "storage_bytes"):
        assert_refused(http.post("/v1/tenants", json={"name": "bounds-tenant", "limits": {limit: value}}))
    assert_refused(http.post("/v1/models/all-minilm-l6-v2/load", json={"max_batch_size": value}))
    assert http.get("/healthz").status_code == 200
