"""The served /openapi.json tells the truth: the error answers of every route, typed request bodies, the
bearer key; and the router's answers match it (405 with every allowed method, JSON's own types in bodies)."""

from __future__ import annotations

from typing import Any, get_args

import httpx
import jsonschema
import pytest

from openmaas.protocol.openai import Role
from openmaas.recipes.chat import ROLES


@pytest.fixture(scope="module")
def schema(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/openapi.json").json())


def _body_validator(schema: dict[str, Any], path: str) -> jsonschema.Draft202012Validator:
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**body, "components": schema["components"]})


def test_every_v1_route_documents_its_errors_with_openais_body_and_the_bearer_key(schema: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An OpenMaaS API key (`om-...`).",
    }
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # ours are 400s with OpenAI's body
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("400", "401", "403", "429"):
                assert responses[status]["content"]["application/json"]["schema"] == error, (method, path, status)
            if "{" in path:
                assert "404" in responses, (method, path)
            assert operation["security"] == [{"bearerAuth": []}]
            for status, answer in responses.items():
                if status.startswith("4") or status.startswith("5"):
                    assert answer["content"]["application/json"]["schema"] == error, (method, path, status)
            checked += 1
    assert checked >= 30


def test_inference_bodies_are_typed_so_a_client_can_build_a_valid_one(schema: dict[str, Any]) -> None:
    chat = _body_validator(schema, "/v1/chat/completions")
    hello = [{"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "text", "text": "be brief"}]}]
    assert chat.is_valid({"model": "m", "messages": hello})
    for messages in ([], [{"role": "wizard", "content": "hi"}], [{"role": "user"}], [{"role": "user", "content": 3}]):
        assert not chat.is_valid({"model": "m", "messages": messages}), messages
    completion = _body_validator(schema, "/v1/completions")
    assert completion.is_valid({"model": "m", "prompt": "hi"}) and completion.is_valid({"model": "m", "prompt": ["hi"]})
    assert not completion.is_valid({"model": "m", "prompt": ["a", "b"]}) and not completion.is_valid({"model": "m"})
    embeddings = _body_validator(schema, "/v1/embeddings")
    assert embeddings.is_valid({"model": "m", "input": "hi"}) and embeddings.is_valid({"model": "m", "input": ["a"]})
    for bad in ("", [], [""], [[101, 102]], ["x"] * 2049):
        assert not embeddings.is_valid({"model": "m", "input": bad}), bad
    predict = _body_validator(schema, "/v1/models/{ref}/predict")
    assert predict.is_valid({"inputs": ["hi", ""]})
    for bad in ([], "hi", [3], ["x"] * 2049):
        assert not predict.is_valid({"inputs": bad}), bad


def test_the_documented_roles_are_the_ones_the_service_accepts() -> None:
    assert get_args(Role) == ROLES


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/v1/datasets", {"GET", "POST"}),
        ("PUT", "/v1/models/some-model", {"GET", "PATCH", "DELETE"}),
        ("GET", "/v1/models/some-model/predict", {"POST"}),
        ("GET", "/v1/models/owner/some-model/predict", {"POST"}),
        ("DELETE", "/v1/models/some-model/predict", {"POST"}),
        ("GET", "/v1/models/import", {"POST"}),
        ("GET", "/v1/models/some-model/load", {"POST"}),
        ("GET", "/v1/models/some-model/aliases/prod", {"PUT", "DELETE"}),
    ],
)
def test_a_405_names_every_method_of_the_path(http: httpx.Client, method: str, path: str, allowed: set[str]) -> None:
    response = http.request(method, path)
    assert response.status_code == 405, response.text
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


def test_a_model_path_still_reaches_the_registry(http: httpx.Client) -> None:
    for path in ("/v1/models/no-such-model", "/v1/models/someone/no-such-model", "/v1/models/importer"):
        response = http.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found", path
    assert http.get("/v1/models/all-minilm-l6-v2").json()["id"] == "all-minilm-l6-v2"


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("PATCH", "/v1/models/no-such-model", {"public": 0}, "public"),
        ("POST", "/v1/models/no-such-model/load", {"max_wait_ms": False}, "max_wait_ms"),
        ("POST", "/v1/jobs", {"dataset": "ds_x", "model": "m", "priority": "1"}, "priority"),
        ("POST", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "truncate": "no"}, "truncate"),
    ],
)
def test_bodies_take_jsons_own_types(
    http: httpx.Client, method: str, path: str, body: dict[str, Any], param: str
) -> None:
    response = http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_whole_number_written_with_a_fraction_is_an_integer(http: httpx.Client) -> None:
    # JSON Schema's integers include 2.0; a strict model must not refuse it.
    response = http.put("/v1/models/no-such-model/aliases/prod", json={"version": 2.0})
    assert response.status_code == 404, response.text  # past the body's checks, to the registry
