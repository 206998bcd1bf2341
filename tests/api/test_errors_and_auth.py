"""Auth on every /v1 route, and one OpenAI-style error body for every kind of wrong request."""

from __future__ import annotations

import os
import stat

import httpx

from tests.conftest import Server


def test_healthz_needs_no_key(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_every_v1_route_needs_a_key(server: Server, http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    checked = 0
    with server.http(api_key=None) as anonymous, server.http(api_key="om-wrong-key") as wrong:
        for path, operations in schema["paths"].items():
            if not path.startswith("/v1"):
                continue
            concrete = path.replace("{", "").replace("}", "")
            for method in operations:
                for session in (anonymous, wrong):
                    response = session.request(method.upper(), concrete)
                    assert response.status_code == 401, (method, path, response.text)
                    assert response.json()["error"]["type"] == "authentication_error"
                checked += 1
    assert checked >= 10


def test_malformed_authorization_header(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Basic abc"})
    assert response.status_code == 401 and "Bearer" in response.json()["error"]["message"]


def test_unknown_route_and_method_get_openai_errors(http: httpx.Client) -> None:
    response = http.get("/v1/does-not-exist")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
    response = http.patch("/v1/datasets")
    assert response.status_code == 405 and response.json()["error"]["type"] == "invalid_request_error"


def test_invalid_json_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_request_id_is_echoed_or_created(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    created = [http.get("/healthz").headers["x-request-id"] for _ in range(3)]
    assert len(set(created)) == 3 and all(len(id_) == 20 and int(id_, 16) >= 0 for id_ in created)


def test_predictions_answer_like_every_other_route(http: httpx.Client) -> None:
    # Predictions are answered before the middleware stack (api/direct.py); a client must not see the difference.
    missing = http.post("/v1/models/no-such-model/predict", json={"inputs": ["hi"]}, headers={"x-request-id": "p-1"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "p-1"
    assert missing.json()["error"]["type"] == "invalid_request_error" and missing.json()["error"]["param"] == "model"
    bad = http.post("/v1/models/no-such-model/predict", json={"text": "hi"})
    assert (
        bad.status_code == 400 and bad.json()["error"]["param"] == "inputs" and len(bad.headers["x-request-id"]) == 20
    )
    wrong_method = http.put("/v1/models/no-such-model/predict")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    metrics = http.get("/metrics").text
    counted = (
        # a name the registry does not know is no label (tests/api/test_metric_labels.py)
        'openmaas_requests_total{method="POST",model="",route="/v1/models/{ref}/predict",status="404"}'
    )
    assert counted in metrics  # shared server: other tests count 404s here too
    assert 'route="/v1/models/{ref}/predict",status="400"' in metrics


def test_generated_admin_key_is_written_once_with_mode_0600(start_server: type[Server]) -> None:
    server = start_server(OPENMAAS_ADMIN_KEY="")
    key_file = server.data_dir / "admin.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = key_file.read_text().strip()
    assert key in server.log()  # printed once at first start
    with server.http(api_key=key) as http:
        assert http.get("/v1/models").status_code == 200
    server.stop()
    server.start()
    assert key_file.read_text().strip() == key
    assert server.log().count(key) == 1  # not printed again
    with server.http(api_key=key) as http:
        assert http.get("/v1/datasets").status_code == 200
