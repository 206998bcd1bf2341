"""/v1/files through the official `openai` client: upload, list (paged both ways), retrieve, content, delete;
every answer checked strictly against `openai.types`; tenant scoping, scopes and the storage quota."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject

from tests.api.test_tenancy import Tenant
from tests.conftest import ADMIN_KEY, Server

CHATS = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
    ).encode()
    + b"\n"
    for i in range(3)
)


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


def strict(file: FileObject) -> FileObject:
    return FileObject.model_validate(file.model_dump(mode="json", exclude_unset=True), strict=True)


def test_a_file_goes_up_lists_reads_back_and_is_deleted(oai: openai.OpenAI) -> None:
    created = strict(oai.files.create(file=("chats.jsonl", CHATS), purpose="fine-tune"))
    assert (created.object, created.filename, created.purpose, created.bytes) == (
        "file",
        "chats.jsonl",
        "fine-tune",
        len(CHATS),
    )
    assert created.status == "processed"
    assert strict(oai.files.retrieve(created.id)) == created
    assert oai.files.content(created.id).read() == CHATS
    assert created.id in [f.id for f in oai.files.list(purpose="fine-tune")]
    assert created.id not in [f.id for f in oai.files.list(purpose="batch")]
    deleted = FileDeleted.model_validate(oai.files.delete(created.id).model_dump(mode="json"), strict=True)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.files.content(created.id)


def test_lists_page_with_has_more_and_after_in_either_order(oai: openai.OpenAI, http: httpx.Client) -> None:
    ids = [oai.files.create(file=(f"b{i}.jsonl", b'{"x": %d}\n' % i), purpose="batch").id for i in range(5)]
    newest_first = [f.id for f in oai.files.list(purpose="batch", limit=2)]  # the client follows every page
    assert [i for i in newest_first if i in ids] == ids[::-1]
    page = http.get("/v1/files", params={"purpose": "batch", "limit": 2, "order": "asc", "after": ids[0]}).json()
    assert [f["id"] for f in page["data"]] == ids[1:3] and page["has_more"] is True
    last = http.get("/v1/files", params={"purpose": "batch", "order": "asc", "after": ids[3]}).json()
    assert [f["id"] for f in last["data"]] == ids[4:] and last["has_more"] is False
    for item in page["data"]:
        FileObject.model_validate(item, strict=True)


def test_bad_uploads_are_refused_with_openais_error_body(http: httpx.Client) -> None:
    for form, files, param in (
        ({"purpose": "assistants"}, {"file": ("a.jsonl", b"{}\n")}, "purpose"),
        ({"purpose": "batch"}, {"file": ("a.jsonl", b"")}, "file"),
        ({}, {"file": ("a.jsonl", b"{}\n")}, "purpose"),
    ):
        response = http.post("/v1/files", data=form, files=files)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    assert http.get("/v1/files", params={"order": "sideways"}).status_code == 400


def test_files_belong_to_their_tenant_and_count_against_its_storage(server: Server, http: httpx.Client) -> None:
    tenant = Tenant(server, http, "files-tenant", storage_bytes=100)
    with tenant.http(tenant.key(["read", "infer"])) as client:
        mine = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a.jsonl", b"x" * 60)})
        assert mine.status_code == 200, mine.text
        over = client.post("/v1/files", data={"purpose": "batch"}, files={"file": ("b.jsonl", b"y" * 60)})
        assert over.status_code == 413 and over.json()["error"]["code"] == "storage_quota_exceeded"
        no_scope = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("c.jsonl", b"{}")})
        assert no_scope.status_code == 403
        assert client.delete(f"/v1/files/{mine.json()['id']}").status_code == 403  # deleting needs `train`
        theirs = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("d.jsonl", b"{}\n")}).json()
        assert client.get(f"/v1/files/{theirs['id']}").status_code == 404
        assert client.get(f"/v1/files/{theirs['id']}/content").status_code == 404
        assert theirs["id"] not in [f["id"] for f in client.get("/v1/files").json()["data"]]
