"""A tenant may mark its own model public: others read, serve and embed with it as `owner/name`, never change it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import Client
from tests.conftest import DATASETS, Server
from tests.e2e.test_cli import openmaas
from tests.e2e.test_import import tiny_bert


def _tenant_client(server: Server, admin: httpx.Client, name: str) -> tuple[str, httpx.Client]:
    created = admin.post("/v1/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    key = admin.post(f"/v1/tenants/{created.json()['id']}/keys", json={"scopes": ["read", "train", "infer"]})
    return str(key.json()["key"]), server.http(key.json()["key"])


def _train(server: Server, key: str, path: Path, model: str) -> None:
    with Client(server.url, key) as client:
        dataset = client.upload_dataset(path, name=model)
        job = client.wait_for_job(client.create_job(dataset["id"], model, hyperparameters={"epochs": 1})["id"])
        assert job["status"] == "succeeded", job


@pytest.fixture(scope="module")
def tenants(server: Server, http: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An owner and a reader, each with a model named `spam`; the reader's has labels of its own."""
    suffix = secrets.token_hex(3)
    owner_name, reader_name = f"owner-{suffix}", f"reader-{suffix}"
    owner_key, owner = _tenant_client(server, http, owner_name)
    reader_key, reader = _tenant_client(server, http, reader_name)
    lines = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8").splitlines()[:301]
    directory = tmp_path_factory.mktemp("public")
    (directory / "owner.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    renamed = {"ham": "legit", "spam": "junk"}
    relabelled = [lines[0]] + [f"{text},{renamed[label]}" for text, _, label in (x.rpartition(",") for x in lines[1:])]
    (directory / "reader.csv").write_text("\n".join(relabelled) + "\n", encoding="utf-8")
    _train(server, owner_key, directory / "owner.csv", "spam")
    _train(server, reader_key, directory / "reader.csv", "spam")
    yield {
        "owner_name": owner_name,
        "reader_name": reader_name,
        "owner": owner,
        "reader": reader,
        "shared": f"{owner_name}/spam",
    }
    owner.close()
    reader.close()


def _labels(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return set(response.json()["predictions"][0]["scores"])


def test_a_public_model_is_read_and_served_by_others_until_it_turns_private(
    tenants: dict[str, Any], http: httpx.Client
) -> None:
    owner, reader, shared = tenants["owner"], tenants["reader"], tenants["shared"]
    assert reader.get(f"/v1/models/{shared}").status_code == 404
    assert reader.post(f"/v1/models/{shared}/predict", json={"inputs": ["win a prize"]}).status_code == 404

    marked = owner.patch("/v1/models/spam", json={"public": True})
    assert marked.status_code == 200 and marked.json()["public"] is True and marked.json()["id"] == "spam"

    seen = reader.get(f"/v1/models/{shared}").json()
    assert seen["id"] == shared and seen["owned_by"] == tenants["owner_name"] and seen["public"] is True
    assert [v["version"] for v in seen["versions"]] == [1]
    listed = {m["id"]: m for m in reader.get("/v1/models").json()["data"]}
    assert listed[shared]["public"] is True and listed["spam"]["owned_by"].startswith("reader-")
    for ref in (shared, f"{shared}:1", f"{shared}:latest"):
        assert _labels(reader.post(f"/v1/models/{ref}/predict", json={"inputs": ["win a prize"]})) == {"ham", "spam"}
    # A bare name is still the reader's own model, whatever others publish.
    assert _labels(reader.post("/v1/models/spam/predict", json={"inputs": ["win a prize"]})) == {"legit", "junk"}
    assert reader.get(f"/v1/models/{shared}/artifact").status_code == 200

    audit = http.get("/v1/audit").json()["data"]
    assert any(e["action"] == "model.update" and e["target"] == "spam" and e["details"]["public"] for e in audit)

    assert owner.patch("/v1/models/spam", json={"public": False}).json()["public"] is False
    assert reader.get(f"/v1/models/{shared}").status_code == 404
    assert reader.post(f"/v1/models/{shared}/predict", json={"inputs": ["win a prize"]}).status_code == 404
    assert shared not in [m["id"] for m in reader.get("/v1/models").json()["data"]]


def _inference_by_model(client: httpx.Client, since: float) -> dict[str, tuple[int, int]]:
    """The caller's inference usage since `since`: model → (records, items)."""
    rows = client.get("/v1/usage", params={"group_by": "model", "start": since}).json()["data"]
    return {r["model"]: (r["records"], r["items"]) for r in rows if r["kind"] == "inference"}


def test_usage_and_answers_name_another_tenants_model_as_owner_slash_name(tenants: dict[str, Any]) -> None:
    owner, reader, shared = tenants["owner"], tenants["reader"], tenants["shared"]
    since = time.time()
    assert owner.patch("/v1/models/spam", json={"public": True}).status_code == 200
    try:
        theirs = [
            reader.post(f"/v1/models/{ref}/predict", json={"inputs": ["win a prize"]})
            for ref in (shared, f"{shared}:1", f"{shared}:latest")
        ]
        # The reader's own `spam`, bare and qualified with its own name: one model, written bare.
        mine = [
            reader.post(f"/v1/models/{ref}/predict", json={"inputs": ["win a prize", "see you at noon"]})
            for ref in ("spam", f"{tenants['reader_name']}/spam:1")
        ]
        owners = owner.post("/v1/models/spam/predict", json={"inputs": ["win a prize"]})
    finally:
        owner.patch("/v1/models/spam", json={"public": False})
    assert all(r.status_code == 200 for r in [*theirs, *mine, owners]), [r.text for r in [*theirs, *mine, owners]]
    assert [r.json()["model"] for r in theirs] == [shared] * 3
    assert [r.json()["model"] for r in mine] == ["spam", "spam"] and owners.json()["model"] == "spam"
    assert _inference_by_model(reader, since) == {shared: (3, 3), "spam": (2, 4)}
    assert _inference_by_model(owner, since) == {"spam": (1, 1)}


def test_other_tenants_cannot_change_a_public_model(tenants: dict[str, Any]) -> None:
    owner, reader, shared = tenants["owner"], tenants["reader"], tenants["shared"]
    assert owner.patch("/v1/models/spam", json={"public": True}).status_code == 200
    try:
        attempts = [
            reader.patch(f"/v1/models/{shared}", json={"public": False}),
            reader.put(f"/v1/models/{shared}/aliases/production", json={"version": 1}),
            reader.delete(f"/v1/models/{shared}/aliases/production"),
            reader.delete(f"/v1/models/{shared}/versions/1"),
            reader.delete(f"/v1/models/{shared}"),
        ]
        assert [a.status_code for a in attempts] == [404] * len(attempts), [a.text for a in attempts]
        trained_into = reader.post("/v1/jobs", json={"dataset": "ds_any", "model": shared})
        assert trained_into.status_code in (400, 404), trained_into.text
        model = owner.get("/v1/models/spam").json()
        assert model["public"] is True and model["aliases"] == {} and [v["version"] for v in model["versions"]] == [1]
    finally:
        owner.patch("/v1/models/spam", json={"public": False})


def test_marking_needs_the_train_scope_and_a_boolean(
    server: Server, http: httpx.Client, tenants: dict[str, Any]
) -> None:
    assert tenants["owner"].patch("/v1/models/spam", json={"public": "yes please"}).status_code in (400, 422)
    assert tenants["owner"].patch("/v1/models/spam", json={}).status_code in (400, 422)
    assert tenants["owner"].patch("/v1/models/no-such-model", json={"public": True}).status_code == 404
    assert tenants["owner"].patch("/v1/models/all-minilm-l6-v2", json={"public": True}).status_code == 404
    tenant_id = next(t["id"] for t in http.get("/v1/tenants").json()["data"] if t["name"] == tenants["owner_name"])
    infer_key = http.post(f"/v1/tenants/{tenant_id}/keys", json={"scopes": ["infer", "read"]}).json()["key"]
    with server.http(infer_key) as infer_only:
        refused = infer_only.patch("/v1/models/spam", json={"public": True})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_scope"


def test_embeddings_by_owner_qualified_name_in_the_json_body_marked_from_the_cli(
    server: Server, client: Client, tenants: dict[str, Any], tmp_path: Path
) -> None:
    name = f"tiny-{secrets.token_hex(3)}"
    client.import_model(tiny_bert(tmp_path / "tiny-bert"), name)  # the admin's tenant is `default`
    body = {"model": f"default/{name}", "input": ["hello world"]}
    assert tenants["reader"].post("/v1/embeddings", json=body).status_code == 404
    assert f"other tenants use it as default/{name}" in openmaas(server, "models", "public", name)
    since = time.time()
    embedded = tenants["reader"].post("/v1/embeddings", json=body)
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 32
    assert embedded.json()["model"] == f"default/{name}"
    assert _inference_by_model(tenants["reader"], since) == {f"default/{name}": (1, 1)}
    assert client.update_model(name, public=False)["public"] is False
    assert tenants["reader"].post("/v1/embeddings", json=body).status_code == 404
