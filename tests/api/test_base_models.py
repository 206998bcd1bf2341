"""A recipe's base model must be of the kind it builds on: refused with a 422 when the job is created."""

from __future__ import annotations

import httpx


def test_a_chat_model_under_a_classifier_is_a_422_at_creation(http: httpx.Client) -> None:
    dataset = http.post(
        "/v1/datasets",
        files={"file": ("kinds.csv", b"text,label\ngood day,a\nbad day,b\n")},
        data={"name": "kinds"},
    ).json()["id"]
    body = {
        "dataset": dataset,
        "model": "wrong-base",
        "recipe": "transformer-classifier",
        "hyperparameters": {"base_model": "smollm2-135m-instruct"},
    }
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "wrong_base_model_task" and error["param"] == "hyperparameters.base_model"
    assert "text-generation" in error["message"] and "embeddings" in error["message"]
    assert not [j for j in http.get("/v1/jobs").json()["data"] if j["model"] == "wrong-base"]


def test_a_job_cannot_train_a_model_named_after_a_route_word(http: httpx.Client) -> None:
    body = {"dataset": "ds_missing", "model": "predict", "recipe": "bow-mlp"}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_model_name"
    assert "route words" in response.json()["error"]["message"]
