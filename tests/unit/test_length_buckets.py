"""Chunks of similar length, and groups of equal token counts, run on the caller and helper threads and come back
in the caller's order."""

from __future__ import annotations

import csv
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from openmaas.recipes.encoders import Batch, in_length_buckets, in_token_groups
from openmaas.recipes.foundation import foundation_directory
from openmaas.recipes.sentence_embedding import EmbeddingInference
from tests.conftest import DATASETS


def lengths(chunk: list[str]) -> np.ndarray:
    time.sleep(0.001 * len(chunk[0]) % 3)  # chunks finish out of order
    return np.array([[len(text), threading.get_ident()] for text in chunk])


@pytest.mark.parametrize("size", [1, 3, 8])
def test_results_come_back_in_input_order(size: int) -> None:
    texts = ["x" * ((i * 7) % 23) for i in range(41)]
    out = in_length_buckets(texts, lengths, size)
    assert out[:, 0].tolist() == [len(text) for text in texts]


def test_a_failing_chunk_raises_in_the_caller() -> None:
    def fails_on_long(chunk: list[str]) -> np.ndarray:
        if len(chunk[0]) > 10:
            raise ValueError("too long")
        return np.zeros((len(chunk), 1))

    with pytest.raises(ValueError, match="too long"):
        in_length_buckets(["a" * i for i in range(20)], fails_on_long, 1)


def test_concurrent_callers_each_get_their_own_results() -> None:
    results: dict[int, list[int]] = {}

    def call(k: int) -> None:
        texts = ["y" * (k + i % 5) for i in range(30)]
        results[k] = in_length_buckets(texts, lengths, 1)[:, 0].tolist()

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {k: [k + i % 5 for i in range(30)] for k in range(3)}


def test_token_groups_hold_inputs_of_one_length_without_padding_and_keep_the_order() -> None:
    counts = [3, 5, 3, 2, 5, 3, 3, 4, 2, 3, 3, 3, 3, 3]
    width = max(counts)
    ids = np.array([[i * 10 + 1] * n + [0] * (width - n) for i, n in enumerate(counts)])
    mask = np.array([[1] * n + [0] * (width - n) for n in counts])
    seen: list[tuple[int, ...]] = []

    def run(group: Batch) -> np.ndarray:
        assert group.arrays["attention_mask"].all()  # no padding left in a group
        assert len(set(group.token_counts)) == 1 and len(group.token_counts) <= 4
        seen.append(tuple(group.token_counts))
        return group.arrays["input_ids"][:, :1]

    out = in_token_groups(Batch({"input_ids": ids, "attention_mask": mask}, counts), run, limit=4)
    assert out[:, 0].tolist() == [i * 10 + 1 for i in range(len(counts))]
    assert sorted(seen) == [(2, 2), (3,), (3, 3, 3, 3), (3, 3, 3, 3), (4,), (5, 5)]


def test_a_batch_in_token_groups_gives_the_numbers_of_one_text_at_a_time(tmp_path: Path) -> None:
    directory = tmp_path / "minilm"
    shutil.copytree(foundation_directory("all-minilm-l6-v2"), directory)
    model = EmbeddingInference(directory, "cpu", "onnx")
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:64]
    together, tokens = model.embed(texts)
    assert len(set(tokens)) < len(tokens)  # some texts share a token count, so some groups hold several
    alone = np.concatenate([model.embed([text])[0] for text in texts])
    assert np.abs(together - alone).max() < 1e-5
