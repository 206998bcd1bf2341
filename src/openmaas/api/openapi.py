"""The served `/openapi.json`: FastAPI's document, made to say what this server really does.

FastAPI documents a 422 with its own validation body on every route with parameters; ours answer a 400 with
OpenAI's error body (api/errors.py), and the routes that do answer 422 declare it themselves. The key is read
by `deps.get_principal` from a header left out of the schema, so the bearer scheme is declared here, on every
`/v1` route and every `/v2` route but the server's metadata and health. The limit on the number of texts is
the server's own setting, not the default in protocol/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from openmaas.config import Settings

BEARER = "bearerAuth"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema with its `$defs` written in place, for a route's `openapi_extra`: a `#/$defs/...`
    reference inside an operation resolves against the whole document, where ReDoc and others find nothing."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def install_openapi(app: FastAPI, settings: Settings) -> None:
    app.openapi = _document(app, settings)  # type: ignore[method-assign]


def _document(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _drop_fastapi_validation_errors(schema)
            _declare_bearer_keys(schema)
            _state_input_limits(schema, settings.max_predict_inputs)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, operation) for path, item in schema.get("paths", {}).items() for operation in item.values()]


def _drop_fastapi_validation_errors(schema: dict[str, Any]) -> None:
    ref = "#/components/schemas/HTTPValidationError"
    for _, operation in _operations(schema):
        answer = operation.get("responses", {}).get("422", {})
        if answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref") == ref:
            del operation["responses"]["422"]
    components = schema.get("components", {}).get("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        components.pop(name, None)


def _declare_bearer_keys(schema: dict[str, Any]) -> None:
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[BEARER] = {"type": "http", "scheme": "bearer", "description": "An OpenMaaS API key (`om-...`)."}
    for path, operation in _operations(schema):
        if path.startswith("/v1/") or (path.startswith("/v2/") and not path.startswith("/v2/health/")):
            operation["security"] = [{BEARER: []}]


def _state_input_limits(schema: dict[str, Any], limit: int) -> None:
    """`max_predict_inputs` as the `maxItems` of the predict route's `inputs` and of embeddings' `input`."""
    predict = schema["paths"]["/v1/models/{ref}/predict"]["post"]["requestBody"]["content"]["application/json"]
    predict["schema"]["properties"]["inputs"]["maxItems"] = limit
    for branch in schema["components"]["schemas"]["EmbeddingRequest"]["properties"]["input"]["anyOf"]:
        if branch.get("type") == "array":
            branch["maxItems"] = limit
