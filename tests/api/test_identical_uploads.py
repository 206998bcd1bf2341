"""What the README says of identical uploads: each upload is a dataset with its own id, and their shared
content is stored once, under its sha256, until the last dataset that holds it is deleted."""

from __future__ import annotations

import httpx

from tests.api.test_datasets import upload
from tests.conftest import Server


def test_identical_uploads_get_two_ids_and_share_one_stored_copy(server: Server, http: httpx.Client) -> None:
    content = b"text,label\nthe same file twice,a\nuploaded by one tenant,b\n"
    first, second = (upload(http, "same.csv", content).json() for _ in range(2))
    assert first["id"] != second["id"]
    assert first["sha256"] == second["sha256"] and first["rows"] == second["rows"] == 2
    stored = list((server.data_dir / "artifacts").rglob(first["sha256"]))
    assert len(stored) == 1  # one copy on disk for both datasets
    assert http.delete(f"/v1/datasets/{first['id']}").status_code == 200
    assert stored[0].is_file()  # still held by the second dataset
    assert http.get(f"/v1/datasets/{second['id']}").json()["sha256"] == first["sha256"]
    assert http.delete(f"/v1/datasets/{second['id']}").status_code == 200
    assert not stored[0].exists()
