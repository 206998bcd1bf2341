"""Direct routes answered before the middleware stack fail the way every route does: the app's own handlers."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaas.api.app import OpenMaaSApp
from openmaas.api.direct import DirectRoute, DirectRoutes
from openmaas.api.disconnect import ClientDisconnected
from openmaas.api.errors import install_error_handlers
from openmaas.api.limits import BodyGate
from openmaas.api.metrics import Metrics, RequestSeries
from openmaas.api.middleware import RequestIds
from openmaas.errors import InvalidRequest


class Unrenderable(Exception):
    pass


def make_app() -> tuple[OpenMaaSApp, Metrics]:
    app, metrics = OpenMaaSApp(), Metrics()
    router = APIRouter(route_class=DirectRoute)

    @router.post("/things/{name}/act")
    async def act(name: str, request: Request) -> Response:
        if name == "bug":
            raise RuntimeError("a bug")
        if name == "bad":
            raise InvalidRequest("bad thing", param="name")
        if name == "gone":
            raise ClientDisconnected
        if name == "odd":
            raise Unrenderable
        return Response(name.encode())

    async def failing_handler(request: Request, error: Exception) -> Response:
        raise RuntimeError("the handler itself fails")

    app.include_router(router)
    install_error_handlers(app)
    app.add_exception_handler(Unrenderable, failing_handler)
    gate = BodyGate(1024, {})
    app.direct = DirectRoutes(router.routes, app.exception_handlers, RequestIds(), RequestSeries(metrics), gate)
    return app, metrics


async def test_failures_get_the_apps_error_bodies_ids_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    app, metrics = make_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        ok = await client.post("/things/fine/act", headers={"x-request-id": "r-1"})
        assert ok.status_code == 200 and ok.text == "fine" and ok.headers["x-request-id"] == "r-1"
        bad = await client.post("/things/bad/act")
        assert bad.status_code == 400 and bad.json()["error"] == {
            "message": "bad thing",
            "type": "invalid_request_error",
            "param": "name",
            "code": None,
        }
        bug = await client.post("/things/bug/act")
        assert bug.status_code == 500 and bug.json()["error"]["code"] == "internal_error"
        assert bug.headers["x-request-id"] and "a bug" not in bug.text
        assert "unhandled error on POST /things/bug/act" in caplog.text
        odd = await client.post("/things/odd/act")  # its handler fails: the Exception handler answers
        assert odd.status_code == 500 and odd.json()["error"]["code"] == "internal_error"
        assert (await client.post("/things/gone/act")).status_code == 499
        wrong_method = await client.get("/things/fine/act")  # a partial match: the router answers
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    counts = {
        sample.labels["status"]: sample.value
        for sample in metrics.requests.collect()[0].samples
        if sample.name.endswith("_total") and sample.labels["route"] == "/things/{name}/act"
    }
    assert counts == {"200": 1, "400": 1, "500": 2, "499": 1}


class Stamp:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_a_middleware_added_later_is_not_skipped() -> None:
    app, _ = make_app()
    app.add_middleware(Stamp)  # the direct routes could not do what it does: they step aside
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
        response = await client.post("/things/fine/act")
    assert response.text == "fine" and response.headers["x-stamp"] == "1"
