"""The hot routes' short way through the server: `DirectRoute`, whose endpoint gets the Request and its path
parameters as they are, and `DirectRoutes`, which answers such a route's requests before the middleware stack.

FastAPI's own handler solves dependencies, reads and validates the body and checks the response on every
request, which costs about 0.1 ms (a sixth of a small model's whole request). The inference routes do their
few checks themselves (`deps.authorize`, `deps.json_body`) and return a finished Response; their signature
and `openapi_extra` still document them. `get_route_handler` is FastAPI's hook for custom route classes.

Between the server and a route, Starlette and FastAPI put a dozen layers (server errors, telemetry, body
limits, our request ids and metrics, exception handlers, an exit stack, the router, the route's own
wrappers), each of which wraps the call and most of which wrap `send` as well. For a model as small as
bow-mlp they cost more than its forward pass, so the app hands a request that fully matches a direct route
to `DirectRoutes.answer`, which does what those layers would do for it: the app's exception handlers turn
failures into responses (looked up by class as Starlette does, `Exception` included, which answers 500),
the body gate checks the key and the body's size first (api/limits.py), the response gets its request id
and rate-limit headers, and the request is counted in the metrics. (One
difference: a 500 here carries its request id too; through the stack, Starlette's server-error middleware,
outside ours, sends it without.) Every other request, and a direct route's path with the wrong method (405),
takes the usual way; so does every request once a middleware is added after the direct routes were set up,
since they would skip it (`OpenMaaSApp.add_middleware`).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import HTTPExceptionHandler, Receive, Scope, Send

from openmaas.api.limits import BodyGate
from openmaas.api.metrics import RequestSeries
from openmaas.api.middleware import RequestIds


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request=request, **request.path_params)
            return response

        return handler


class DirectRoutes:
    """Matches requests to the direct routes and answers them as the middleware stack would (see above)."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        handlers: Mapping[Any, Any],
        ids: RequestIds,
        series: RequestSeries,
        gate: BodyGate,
    ) -> None:
        self.routes = [route for route in routes if isinstance(route, DirectRoute)]
        self.handlers = handlers  # the app's own: exception class (or status code) → handler
        self.ids = ids
        self.series = series
        self.gate = gate

    def match(self, scope: Scope) -> DirectRoute | None:
        """The direct route that fully matches an HTTP request, its path parameters now in `scope`."""
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope.update(child_scope)
                return route
        return None

    async def answer(self, route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        model = self.series.start()
        try:
            request_id = self.ids.of(scope)
            request = Request(scope, receive, send)
            try:
                pending = self.gate.screen(scope)  # the key and the body's size, before the body is read
                if pending is not None:
                    receive, send = await self.gate.admit(pending, receive, send)
                    request = Request(scope, receive, send)
                response: Response = await route.endpoint(request=request, **scope["path_params"])
            except Exception as error:
                response = await self._render(request, error)
            status = response.status_code
            response.raw_headers.extend(self.ids.response_headers(scope, request_id))
            await response(scope, receive, send)
        finally:
            self.series.observe(scope, status, time.perf_counter() - started, model)

    async def _render(self, request: Request, error: Exception) -> Response:
        """The app's handler's response to `error`; the `Exception` handler's (a 500) if that handler fails."""
        handler = self._handler_for(error)
        try:
            return await _respond(handler, request, error)
        except Exception as failure:
            last_resort = self.handlers.get(Exception)
            if last_resort is None or last_resort is handler:
                raise
            return await _respond(last_resort, request, failure)

    def _handler_for(self, error: Exception) -> HTTPExceptionHandler:
        for kind in type(error).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                return handler
        raise error


async def _respond(handler: HTTPExceptionHandler, request: Request, error: Exception) -> Response:
    handled = handler(request, error)
    response = await handled if inspect.isawaitable(handled) else handled
    if not isinstance(response, Response):
        raise TypeError(f"the handler for {type(error).__name__} returned {type(response).__name__}")
    return response
