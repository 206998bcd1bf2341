"""Bounds that keep one request's or one file's cost within limits: a predict request's decoded images, and a
batch input file's bad or surplus lines."""

from __future__ import annotations

import json

import pytest

from openmaas.errors import PayloadTooLarge
from openmaas.services.batches import MAX_ERRORS, MAX_LINES, parse_lines
from openmaas.services.inference import IMAGES_PER_REQUEST_AT_THE_LIMIT, decode_images
from tests.image_archives import solid


def test_a_predict_requests_images_decode_to_a_bounded_number_of_pixels() -> None:
    image = solid(100, 100, 1)
    assert len(decode_images([image] * IMAGES_PER_REQUEST_AT_THE_LIMIT, max_pixels=10_000)) == 4
    with pytest.raises(PayloadTooLarge) as refused:
        decode_images([image] * (IMAGES_PER_REQUEST_AT_THE_LIMIT + 1), max_pixels=10_000)
    assert refused.value.param == f"inputs.{IMAGES_PER_REQUEST_AT_THE_LIMIT}"


def test_a_file_of_bad_lines_stops_at_the_errors_it_reports() -> None:
    requests, errors = parse_lines(b"x\n" * 100_000, "/v1/embeddings")
    assert requests == [] and len(errors) == MAX_ERRORS and errors[-1]["line"] == MAX_ERRORS


def test_a_file_of_too_many_requests_is_refused_at_the_first_line_past_the_bound() -> None:
    line = {"method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    text = "".join(json.dumps({**line, "custom_id": f"r{i}"}) + "\n" for i in range(MAX_LINES + 10))
    requests, errors = parse_lines(text.encode(), "/v1/embeddings")
    assert [e["code"] for e in errors] == ["too_many_requests"] and errors[0]["line"] == MAX_LINES + 1
    assert len(requests) == MAX_LINES + 1
