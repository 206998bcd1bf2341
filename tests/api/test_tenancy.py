"""Many users on one server: tenants, scoped keys, isolation on every route, limits, usage and audit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from tests.conftest import DATASETS, Server


class Tenant:
    def __init__(self, server: Server, admin: httpx.Client, name: str, **limits: int) -> None:
        created = admin.post("/v1/tenants", json={"name": name, "limits": limits})
        assert created.status_code == 201, created.text
        self.id = created.json()["id"]
        self.server = server
        self.admin = admin

    def key(self, scopes: list[str], **limits: int) -> str:
        response = self.admin.post(f"/v1/tenants/{self.id}/keys", json={"scopes": scopes, "limits": limits})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    def http(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("tenancy"), {"OPENMAAS_RATE_LIMIT_WINDOW_S": "4"}).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


@pytest.fixture(scope="module")
def first(server: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tenant A with a dataset, a finished job, a model with an alias, a file."""
    tenant = Tenant(server, admin, "tenant-a")
    key = tenant.key(["read", "train", "infer"])
    path = tmp_path_factory.mktemp("a") / "a.csv"
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()[:301]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Client(server.url, key) as client:
        dataset = client.upload_dataset(path, name="a-data")
        job = client.wait_for_job(client.create_job(dataset["id"], "a-model", hyperparameters={"epochs": 1})["id"])
        client.set_alias("a-model", "production", 1)
        keys = admin.get(f"/v1/tenants/{tenant.id}/keys").json()["data"]
    with tenant.http(key) as http:
        file = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a.jsonl", b'{"a": 1}\n')}).json()
        rows = b'{"text": "good", "label": "a"}\n{"text": "bad", "label": "b"}\n' * 5
        ft_file = http.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("f.jsonl", rows)}).json()
        fine_tune = http.post("/v1/fine_tuning/jobs", json={"model": "bow-mlp", "training_file": ft_file["id"]})
        assert fine_tune.status_code == 200, fine_tune.text
        batch = http.post(
            "/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
        )
        assert batch.status_code == 200, batch.text
    return {
        "batch": batch.json()["id"],
        "file": file["id"],
        "ft_file": ft_file["id"],
        "fine_tune": fine_tune.json()["id"],
        "tenant": tenant,
        "key": key,
        "dataset": dataset["id"],
        "job": job["id"],
        "model": "a-model",
        "key_id": keys[0]["id"],
    }


def test_keys_are_shown_once_and_listed_by_prefix(admin: httpx.Client, first: dict[str, Any]) -> None:
    listed = admin.get(f"/v1/tenants/{first['tenant'].id}/keys").json()["data"]
    assert len(listed) == 1 and listed[0]["key"] is None
    # the prefix is a random label, no part of the key (tests/unit/test_api_keys.py)
    assert listed[0]["prefix"] not in first["key"] and listed[0]["scopes"] == ["read", "train", "infer"]
    assert first["tenant"].id in [t["id"] for t in admin.get("/v1/tenants").json()["data"]]


def _concrete(path: str, a: dict[str, Any]) -> str:
    values = {
        "dataset_id": a["dataset"],
        "job_id": a["job"],
        "name": a["model"],
        "ref": a["model"],
        "alias": "production",
        "version": "1",
        "tenant_id": a["tenant"].id,
        "key_id": a["key_id"],
        "file_id": a["file"],
        "fine_tuning_job_id": a["fine_tune"],
        "batch_id": a["batch"],
    }
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"the isolation walk does not know a parameter of {path}: add it"
    return path


# A valid 1×1 PNG: an image body for the image routes.
ONE_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def _body(path: str, method: str, a: dict[str, Any]) -> dict[str, Any] | None:
    """A valid body for every route that takes one, naming the first tenant's resources where it can."""
    bodies = {
        ("post", "/v1/jobs"): {"dataset": a["dataset"], "model": "stolen"},
        ("post", "/v1/models/{ref}/predict"): {"inputs": ["hello"]},
        ("post", "/v1/models/{ref}/embed"): {"inputs": [{"image": ONE_PIXEL_PNG}]},
        ("post", "/v1/embeddings"): {"model": a["model"], "input": "hello"},
        ("post", "/v1/chat/completions"): {"model": a["model"], "messages": [{"role": "user", "content": "hello"}]},
        ("post", "/v1/completions"): {"model": a["model"], "prompt": "hello"},
        ("put", "/v1/models/{name}/aliases/{alias}"): {"version": 1},
        ("patch", "/v1/models/{name}"): {"public": True},
        ("post", "/v1/models/{ref}/load"): {"max_batch_size": 4},
        ("post", "/v1/tenants"): {"name": "evil"},
        ("patch", "/v1/tenants/{tenant_id}"): {"disabled": True},
        ("post", "/v1/tenants/{tenant_id}/keys"): {"scopes": ["admin"]},
        ("post", "/v1/models/import"): {"path": "/tmp", "name": "x"},
        ("post", "/v1/fine_tuning/jobs"): {"model": "bow-mlp", "training_file": a["ft_file"]},
        ("post", "/v1/batches"): {"input_file_id": a["file"], "endpoint": "/v1/embeddings", "completion_window": "24h"},
    }
    return bodies.get((method, path))


def _intrude(intruder: httpx.Client, method: str, path: str, a: dict[str, Any]) -> httpx.Response:
    url = _concrete(path, a)
    if (method, path) == ("post", "/v1/datasets"):  # multipart: an upload of the intruder's own
        return intruder.post(url, files={"file": ("b.csv", b"text,label\nmine,1\nalso mine,0\n")})
    if (method, path) == ("post", "/v1/files"):
        return intruder.post(url, data={"purpose": "batch"}, files={"file": ("b.jsonl", b'{"b": 1}\n')})
    return intruder.request(method.upper(), url, json=_body(path, method, a))


def test_a_second_tenant_can_touch_nothing_of_the_first_on_any_route(
    server: Server, admin: httpx.Client, first: dict[str, Any]
) -> None:
    other = Tenant(server, admin, "tenant-b")
    secrets = [first["dataset"], first["job"], first["model"], first["key_id"], first["file"], first["fine_tune"]]
    secrets.append(first["batch"])
    schema = admin.get("/openapi.json").json()
    walked = 0
    with other.http(other.key(["read", "train", "infer"])) as intruder:
        # The model is private: neither its bare name nor the owner-qualified one (as for a public model) reaches it.
        for model in (first["model"], f"tenant-a/{first['model']}"):
            target = {**first, "model": model}
            for path, operations in schema["paths"].items():
                if not path.startswith("/v1"):
                    continue
                for method, operation in operations.items():
                    multipart = {("post", "/v1/datasets"), ("post", "/v1/files")}
                    known = _body(path, method, target) is not None or (method, path) in multipart
                    assert known or "requestBody" not in operation, f"the walk has no body for {method} {path}: add one"
                    response = _intrude(intruder, method, path, target)
                    walked += 1
                    if response.status_code < 300:  # the intruder's own lists and uploads
                        leaked = [s for s in secrets if s in response.text]
                        assert not leaked, (method, path, leaked)
                    elif response.status_code == 403:  # only for the admin's routes: every other scope it has
                        assert "'admin' scope" in response.json()["error"]["message"], (method, path, response.text)
                    else:  # the first tenant's resource does not exist for it, whatever the route
                        assert response.status_code == 404, (method, path, response.status_code, response.text)
    assert walked >= 50
    with Client(server.url, first["key"]) as owner:
        assert owner.get_dataset(first["dataset"])["id"] == first["dataset"]
        assert owner.get_job(first["job"])["status"] == "succeeded"
        model = owner.get_model(first["model"])
        assert [v["version"] for v in model["versions"]] == [1] and model["aliases"] == {"production": 1}
        assert model["public"] is False
        assert owner.predict(first["model"], ["hello"])["version"] == 1
    assert admin.get(f"/v1/tenants/{first['tenant'].id}").json()["disabled"] is False


def test_scopes_limit_what_a_key_may_do(server: Server, admin: httpx.Client, first: dict[str, Any]) -> None:
    tenant = first["tenant"]
    with tenant.http(tenant.key(["infer"])) as infer_only, tenant.http(tenant.key(["read"])) as read_only:
        assert infer_only.post(f"/v1/models/{first['model']}/predict", json={"inputs": ["hi"]}).status_code == 200
        refused = infer_only.post("/v1/jobs", json={"dataset": first["dataset"], "model": "nope"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"
        assert infer_only.post(f"/v1/tenants/{tenant.id}/keys", json={"scopes": ["read"]}).status_code == 403
        assert infer_only.get("/v1/datasets").status_code == 403
        assert read_only.get("/v1/datasets").status_code == 200
        upload = read_only.post("/v1/datasets", files={"file": ("x.csv", b"text,label\na,1\nb,0\n")})
        assert upload.status_code == 403
        assert read_only.delete(f"/v1/datasets/{first['dataset']}").status_code == 403


def _wait_for_fresh_window(window: float = 4.0) -> None:
    if window - time.time() % window < 1.5:
        time.sleep(window - time.time() % window + 0.05)


def test_request_limit_is_exact_with_openai_headers_and_retry_after(first: dict[str, Any]) -> None:
    tenant = first["tenant"]
    with tenant.http(tenant.key(["read"], requests_per_minute=5)) as limited:
        _wait_for_fresh_window()
        remaining = []
        for _ in range(5):
            response = limited.get("/v1/datasets")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit-requests"] == "5"
            remaining.append(int(response.headers["x-ratelimit-remaining-requests"]))
            assert response.headers["x-ratelimit-reset-requests"].endswith("s")
        assert remaining == [4, 3, 2, 1, 0]
        refused = limited.get("/v1/datasets")
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 4
        time.sleep(wait)
        assert limited.get("/v1/datasets").status_code == 200


def test_predictions_carry_the_limit_headers_and_are_refused_past_the_limit(first: dict[str, Any]) -> None:
    # Predictions are answered before the middleware stack (api/direct.py): the headers must come all the same.
    tenant = first["tenant"]
    url = f"/v1/models/{first['model']}/predict"
    with tenant.http(tenant.key(["infer"], requests_per_minute=3, tokens_per_minute=4)) as limited:
        _wait_for_fresh_window()
        ok = limited.post(url, json={"inputs": ["hi", "there", "you"]}, headers={"x-request-id": "rid-7"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "rid-7"
        assert ok.headers["x-ratelimit-remaining-requests"] == "2"
        assert ok.headers["x-ratelimit-remaining-tokens"] == "1"  # a classifier's tokens are its inputs
        missing = limited.post("/v1/models/no-such-model/predict", json={"inputs": ["hi"]})
        assert missing.status_code == 404 and missing.headers["x-ratelimit-remaining-requests"] == "1"
        limited.post(url, json={"inputs": ["hi"]})
        refused = limited.post(url, json={"inputs": ["hi"]})
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0" and int(refused.headers["retry-after"]) >= 1


def test_token_limit_counts_embedding_tokens(first: dict[str, Any]) -> None:
    tenant = first["tenant"]
    with tenant.http(tenant.key(["infer"], tokens_per_minute=10)) as limited:
        _wait_for_fresh_window()
        ok = limited.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "one two three four five six"})
        assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 8
        assert ok.headers["x-ratelimit-remaining-tokens"] == "2"
        limited.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "seven eight"})
        refused = limited.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "nine"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_tokens"


def test_revoked_keys_and_disabled_tenants_stop_at_once(server: Server, admin: httpx.Client) -> None:
    tenant = Tenant(server, admin, "short-lived")
    key = tenant.key(["read"])
    with tenant.http(key) as client:
        assert client.get("/v1/datasets").status_code == 200
        key_id = admin.get(f"/v1/tenants/{tenant.id}/keys").json()["data"][0]["id"]
        assert admin.delete(f"/v1/keys/{key_id}").json()["revoked"] is True
        assert client.get("/v1/datasets").status_code == 401
    with tenant.http(tenant.key(["read"])) as client:
        assert client.get("/v1/datasets").status_code == 200
        admin.patch(f"/v1/tenants/{tenant.id}", json={"disabled": True})
        response = client.get("/v1/datasets")
        assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_disabled"


def test_storage_quota_is_a_413(server: Server, admin: httpx.Client) -> None:
    tenant = Tenant(server, admin, "small-storage", storage_bytes=200)
    with tenant.http(tenant.key(["train"])) as client:
        ok = client.post("/v1/datasets", files={"file": ("a.csv", b"text,label\nfirst,1\nsecond,0\n")})
        assert ok.status_code == 201
        big = b"text,label\n" + b"".join(f"row number {i},{i % 2}\n".encode() for i in range(20))
        refused = client.post("/v1/datasets", files={"file": ("b.csv", big)})
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "storage_quota_exceeded"


def test_bad_tenant_and_key_requests(admin: httpx.Client, first: dict[str, Any]) -> None:
    assert admin.post("/v1/tenants", json={"name": "tenant-a"}).status_code == 409
    assert admin.post("/v1/tenants", json={"name": "team a/b"}).json()["error"]["code"] == "invalid_tenant_name"
    assert admin.post("/v1/tenants", json={"name": "x", "limits": {"requests_per_hour": 1}}).status_code == 400
    assert admin.post("/v1/tenants", json={"name": "y", "limits": {"requests_per_minute": -1}}).status_code == 400
    tenant = first["tenant"].id
    assert admin.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["root"]}).status_code == 400
    assert admin.post(f"/v1/tenants/{tenant}/keys", json={"scopes": ["read"], "expires_at": 1}).status_code == 400
    assert admin.post("/v1/tenants/tn_nope/keys", json={"scopes": ["read"]}).status_code == 404
    assert admin.delete("/v1/keys/key_nope").status_code == 404
    assert admin.patch(f"/v1/tenants/{tenant}", json={}).status_code == 400


def test_usage_totals_match_the_calls_and_survive_sigkill(server: Server, first: dict[str, Any]) -> None:
    tenant = first["tenant"]
    key = tenant.key(["read", "infer"])

    async def calls() -> None:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as client:
            await asyncio.gather(
                *(
                    client.post(f"/v1/models/{first['model']}/predict", json={"inputs": ["a", "b", "c"]})
                    for _ in range(20)
                ),
                *(
                    client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["hello world"]})
                    for _ in range(7)
                ),
            )

    asyncio.run(calls())
    with tenant.http(key) as client:
        key_id = next(
            k["key"]
            for k in client.get("/v1/usage", params={"group_by": "key"}).json()["data"]
            if k["kind"] == "inference" and k["records"] == 27
        )
    expected = {"records": 27, "items": 20 * 3 + 7, "tokens": 7 * 4}

    def totals() -> dict[str, int]:
        with tenant.http(key) as client:
            rows = client.get("/v1/usage", params={"group_by": "key"}).json()["data"]
        row = next(r for r in rows if r.get("key") == key_id and r["kind"] == "inference")
        return {name: row[name] for name in expected}

    assert totals() == expected
    server.kill()
    server.start()
    assert totals() == expected
    with tenant.http(key) as client:
        by_model = client.get("/v1/usage", params={"group_by": "model"}).json()["data"]
        assert any(r["kind"] == "training" and r["model"] == first["model"] and r["seconds"] > 0 for r in by_model)


def test_admin_sees_usage_of_every_tenant_and_the_audit_log(admin: httpx.Client, first: dict[str, Any]) -> None:
    rows = admin.get("/v1/usage", params={"tenant": "all", "group_by": "tenant"}).json()["data"]
    assert first["tenant"].id in {r["tenant"] for r in rows}
    with first["tenant"].http(first["key"]) as client:
        assert client.get("/v1/usage", params={"tenant": "all"}).status_code == 403
        assert client.get("/v1/audit").status_code == 403
    actions = [(e["action"], e["target"]) for e in admin.get("/v1/audit").json()["data"]]
    assert ("tenant.create", first["tenant"].id) in actions
    assert any(action == "key.create" for action, _ in actions)
    assert any(action == "key.revoke" for action, _ in actions)


def test_model_deletions_are_audited(
    server: Server, admin: httpx.Client, first: dict[str, Any], tmp_path: Path
) -> None:
    with Client(server.url, first["key"]) as client:
        job = client.create_job(first["dataset"], "to-delete", hyperparameters={"epochs": 1})
        client.wait_for_job(job["id"])
        client.delete_version("to-delete", 1)
    entries = admin.get("/v1/audit").json()["data"]
    assert any(e["action"] == "model.version.delete" and e["target"] == "to-delete:1" for e in entries)
