"""Wrong job and prediction requests: each gets a 4xx with a message that names the problem."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server


@pytest.fixture(scope="module")
def dataset_id(http: httpx.Client) -> str:
    body = b"text,label\nhello there,a\ngood bye,b\nhello again,a\n"
    return str(http.post("/v1/datasets", files={"file": ("d.csv", body)}, data={"name": "d"}).json()["id"])


@pytest.fixture(scope="module")
def trained(http: httpx.Client, server: Server, dataset_id: str) -> str:
    job = http.post("/v1/jobs", json={"dataset": dataset_id, "model": "bad-requests"}).json()
    with server.client() as client:
        assert client.wait_for_job(job["id"], timeout=120)["status"] == "succeeded"
    return "bad-requests"


@pytest.mark.parametrize(
    ("body", "status", "param", "needle"),
    [
        ({"model": "m"}, 400, "dataset", "dataset"),
        ({"dataset": "DS", "model": "bad name!"}, 400, "model", "invalid model name"),
        ({"dataset": "DS", "model": "m", "recipe": "nope"}, 422, "recipe", "unknown recipe 'nope'"),
        (
            {"dataset": "DS", "model": "m", "hyperparameters": {"epochz": 3}},
            422,
            "hyperparameters.epochz",
            "unknown hyperparameter",
        ),
        (
            {"dataset": "DS", "model": "m", "hyperparameters": {"epochs": 0}},
            422,
            "hyperparameters.epochs",
            "greater than or equal to 1",
        ),
        (
            {"dataset": "DS", "model": "m", "hyperparameters": {"learning_rate": "fast"}},
            422,
            "hyperparameters.learning_rate",
            "valid number",
        ),
        ({"dataset": "ds_missing", "model": "m"}, 404, "dataset", "ds_missing"),
        ({"dataset": "DS", "model": "m", "extra": 1}, 400, "extra", "Extra inputs"),
    ],
)
def test_bad_job_requests(
    http: httpx.Client, dataset_id: str, body: dict, status: int, param: str, needle: str
) -> None:
    if body.get("dataset") == "DS":
        body = {**body, "dataset": dataset_id}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({}, "inputs", "inputs"),
        ([], "inputs", "inputs"),
        ({"inputs": []}, "inputs", "non-empty"),
        ({"inputs": "just a string"}, "inputs", "list"),
        ({"inputs": ["ok", 3]}, "inputs.1", "must be a string"),
        ({"inputs": [None]}, "inputs.0", "must be a string"),
    ],
)
def test_bad_predict_requests(http: httpx.Client, trained: str, body: object, param: str, needle: str) -> None:
    response = http.post(f"/v1/models/{trained}/predict", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error


def test_too_many_inputs(http: httpx.Client, trained: str) -> None:
    response = http.post(f"/v1/models/{trained}/predict", json={"inputs": ["x"] * 5000})
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_inputs"


def test_empty_and_odd_texts_still_get_predictions(http: httpx.Client, trained: str) -> None:
    inputs = ["", "   ", "🙂", "unknown words only", "x" * 10_000]
    predictions = http.post(f"/v1/models/{trained}/predict", json={"inputs": inputs}).json()["predictions"]
    assert len(predictions) == 5
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-5 for p in predictions)


@pytest.mark.parametrize(
    ("ref", "status"), [("nope", 404), ("bad-requests:99", 404), ("bad-requests:staging", 404), ("x:0", 400)]
)
def test_bad_model_references(http: httpx.Client, trained: str, ref: str, status: int) -> None:
    response = http.post(f"/v1/models/{ref}/predict", json={"inputs": ["hi"]})
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == "model"


def test_bad_alias_requests(http: httpx.Client, trained: str) -> None:
    assert http.put(f"/v1/models/{trained}/aliases/prod", json={"version": 99}).status_code == 404
    assert http.put(f"/v1/models/{trained}/aliases/latest", json={"version": 1}).status_code == 400
    assert http.put(f"/v1/models/{trained}/aliases/prod", json={"version": "one"}).status_code == 400
    assert http.put("/v1/models/nope/aliases/prod", json={"version": 1}).status_code == 404
    assert http.delete(f"/v1/models/{trained}/aliases/nope").status_code == 404


def test_deleting_a_dataset_in_use_is_a_conflict(http: httpx.Client, dataset_id: str, server: Server) -> None:
    job = http.post("/v1/jobs", json={"dataset": dataset_id, "model": "busy", "hyperparameters": {"epochs": 100_000}})
    response = http.delete(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "dataset_in_use"
    http.post(f"/v1/jobs/{job.json()['id']}/cancel")
    with server.client() as client:
        client.wait_for_job(job.json()["id"], timeout=30)
