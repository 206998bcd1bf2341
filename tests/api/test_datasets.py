"""Dataset uploads over real HTTP: what is accepted, how it is cleaned, and every refusal with a real bad file."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import DATASETS, Server


def upload(http: httpx.Client, name: str, content: bytes, **form: str) -> httpx.Response:
    return http.post("/v1/datasets", files={"file": (name, content)}, data={"name": "t", **form})


def assert_error(response: httpx.Response, status: int, *needles: str, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for needle in needles:
        assert needle in error["message"], error["message"]
    if code:
        assert error["code"] == code
    return error


def test_csv_upload_is_cleaned_and_reported(http: httpx.Client) -> None:
    content = b"text,label\n  hello  ,a\n,b\nhello,a\nbye,b\n"
    response = upload(http, "small.csv", content)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 2 and body["labels"] == {"a": 1, "b": 1}
    assert body["report"]["dropped"] == {
        "duplicate": {"count": 1, "lines": [4]},
        "empty_text": {"count": 1, "lines": [3]},
    }
    assert len(body["sha256"]) == 64
    assert http.get(f"/v1/datasets/{body['id']}").json()["sha256"] == body["sha256"]


def test_the_same_content_hashes_the_same(http: httpx.Client) -> None:
    first = upload(http, "a.csv", b"text,label\nx,1\ny,0\n").json()
    second = upload(http, "b.tsv", b"text\tlabel\nx\t1\ny\t0\n").json()
    assert first["id"] != second["id"] and first["sha256"] == second["sha256"]


def test_jsonl_and_custom_columns(http: httpx.Client) -> None:
    content = b'{"sentence": "good", "y": 1}\n\n{"sentence": "bad", "y": 0}\n'
    response = upload(http, "d.jsonl", content, text_column="sentence", label_column="y")
    assert response.status_code == 201, response.text
    assert response.json()["labels"] == {"0": 1, "1": 1}


def test_real_dataset_upload_matches_its_readme(http: httpx.Client) -> None:
    path = DATASETS / "sms_spam" / "sms_spam.csv"
    response = http.post("/v1/datasets", files={"file": (path.name, path.read_bytes())}, data={"name": "sms"})
    body = response.json()
    assert body["report"]["input_rows"] == 5574
    assert body["report"]["dropped"]["duplicate"]["count"] == 414  # the README's repeated texts
    assert body["rows"] == 5160


def test_not_utf8_is_refused_with_its_line(http: httpx.Client) -> None:
    content = "text,label\nfine,a\ncafé au lait,b\n".encode("latin-1")
    assert_error(upload(http, "x.csv", content), 400, "UTF-8", "line 3", code="invalid_encoding")


def test_unknown_format_is_refused(http: httpx.Client) -> None:
    assert_error(upload(http, "x.xlsx", b"PK\x03\x04"), 400, ".csv, .tsv or .jsonl", code="unsupported_format")


def test_missing_column_is_refused_and_named(http: httpx.Client) -> None:
    error = assert_error(upload(http, "x.csv", b"body,label\nhi,a\n"), 422, "'text'", "'body'", code="missing_column")
    assert error["param"] == "text_column"


def test_missing_key_in_jsonl_is_refused_with_its_line(http: httpx.Client) -> None:
    content = b'{"text": "a", "label": 1}\n{"text": "b"}\n'
    assert_error(upload(http, "x.jsonl", content), 422, "line 2", "'label'", code="missing_column")


def test_invalid_json_line_is_refused_with_its_line(http: httpx.Client) -> None:
    content = b'{"text": "a", "label": 1}\n{"text": "b", label: 0}\n'
    assert_error(upload(http, "x.jsonl", content), 400, "line 2", "invalid JSON", code="malformed_file")


def test_ragged_csv_row_is_refused_with_its_line(http: httpx.Client) -> None:
    content = b"text,label\nok,a\ntoo,many,fields\n"
    assert_error(upload(http, "x.csv", content), 400, "line 3", "expected 2 fields", code="malformed_file")


def test_non_string_text_is_refused(http: httpx.Client) -> None:
    content = b'{"text": 42, "label": 1}\n'
    assert_error(upload(http, "x.jsonl", content), 400, "line 1", "string", code="invalid_text")


def test_one_class_is_refused(http: httpx.Client) -> None:
    content = b"text,label\na,spam\nb,spam\n"
    assert_error(upload(http, "x.csv", content), 422, "at least 2 classes", code="too_few_classes")


def test_header_only_is_refused(http: httpx.Client) -> None:
    assert_error(upload(http, "x.csv", b"text,label\n"), 422, "no usable rows", code="no_rows")


def test_all_rows_empty_is_refused(http: httpx.Client) -> None:
    assert_error(upload(http, "x.csv", b"text,label\n  ,a\n,b\n"), 422, "no usable rows", "empty_text")


def test_empty_file_is_refused(http: httpx.Client) -> None:
    assert_error(upload(http, "x.csv", b""), 422, "empty", code="empty_file")


def test_missing_file_field_is_refused(http: httpx.Client) -> None:
    response = http.post("/v1/datasets", data={"name": "x"})
    assert_error(response, 400, "file")


def test_unknown_dataset_is_404(http: httpx.Client) -> None:
    assert_error(http.get("/v1/datasets/ds_nope"), 404, "ds_nope", code="dataset_not_found")
    assert_error(http.delete("/v1/datasets/ds_nope"), 404)


def test_deleted_dataset_is_gone(http: httpx.Client) -> None:
    created = upload(http, "x.csv", b"text,label\nunique-for-delete,a\nother,b\n").json()
    assert http.delete(f"/v1/datasets/{created['id']}").json() == {
        "id": created["id"],
        "object": "dataset",
        "deleted": True,
    }
    assert http.get(f"/v1/datasets/{created['id']}").status_code == 404
    assert created["id"] not in [d["id"] for d in http.get("/v1/datasets").json()["data"]]


@pytest.fixture
def small_limit_server(start_server: type[Server]) -> Server:
    return start_server(OPENMAAS_MAX_UPLOAD_BYTES="1000")


def test_file_over_the_size_limit_is_refused(small_limit_server: Server, tmp_path: Path) -> None:
    with small_limit_server.http() as http:
        big = b"text,label\n" + b"".join(f"row {i},{i % 2}\n".encode() for i in range(500))
        assert_error(upload(http, "big.csv", big), 413, "1000 bytes", code="payload_too_large")
        assert upload(http, "ok.csv", b"text,label\na,1\nb,0\n").status_code == 201
