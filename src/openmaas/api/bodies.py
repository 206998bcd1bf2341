"""Request bodies: the one JSON decoder (orjson) for every route, and the route class that makes FastAPI's body
models use it.

orjson refuses what Python's `json` lets through and no later step can handle: a string holding a lone UTF-16
surrogate (`"\\ud800"`, which no tokenizer or encoder takes), `NaN` and `Infinity`, and numbers too large for a
double. Refused at the door, such a body is its own caller's 400, before it can join a batch with other
callers' inputs. The direct routes decode with `decode_json` (api/deps.py `json_body`); every other route is a
`JSONRoute`, whose requests decode with it too (`Request.json` is the hook FastAPI reads a body through).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from openmaas.errors import InvalidRequest

_SURROGATES = "strings must be Unicode text: an escaped surrogate (\\ud800 to \\udfff) must be half of a pair"


def invalid_json_message(reason: str, position: object) -> str:
    """What a 400 for an undecodable body says: the decoder's reason, where, and for surrogates what is wrong."""
    message = f"the request body is not valid JSON: {reason} at position {position}"
    return f"{message} ({_SURROGATES})" if "surrogate" in reason else message


def decode_json(raw: bytes) -> Any:
    """A body's JSON; InvalidRequest (400 `invalid_json`) when it is not JSON of Unicode text."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(invalid_json_message(error.msg, error.pos), code="invalid_json") from None


class JSONRequest(Request):
    async def json(self) -> Any:
        # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI turns it into its `json_invalid` error,
        # which api/errors.py renders with invalid_json_message.
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """An APIRoute whose body model is read from JSON decoded by orjson. Every router's `route_class`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def decoded(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return decoded

