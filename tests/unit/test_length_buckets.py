"""Chunks of similar length, and passes planned over token counts, run on the caller and helper threads and come back
in the caller's order."""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from openmaas.recipes.encoders import Batch, data_file, in_length_buckets, in_token_groups, plan_token_groups
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


def test_token_groups_share_equal_counts_pad_near_ones_and_keep_far_ones_apart() -> None:
    counts = [3, 5, 3, 2, 5, 3, 3, 4, 2, 3, 3, 3, 3, 3, 40, 41, 90]
    plan = plan_token_groups(counts, limit=4, overhead=8)
    assert sorted(row for rows in plan for row in rows) == list(range(len(counts)))  # each input once
    assert max(len(rows) for rows in plan) <= 4
    by_length = [sorted(counts[row] for row in rows) for rows in plan]
    assert [90] in by_length  # 49 tokens of padding a row cost more than a pass of its own
    assert [40, 41] in by_length  # one token of padding is cheaper than a second pass
    assert all(max(group) - min(group) <= 2 for group in by_length)
    costs = [len(group) * max(group) for group in by_length]
    assert costs[0] == max(costs)  # the costliest pass goes first


def test_without_pass_overhead_no_input_is_padded() -> None:
    counts = [7, 3, 7, 5, 3, 7]
    plan = plan_token_groups(counts, limit=8, overhead=0)
    assert all(len({counts[row] for row in rows}) == 1 for rows in plan)


def test_token_groups_are_cut_to_their_longest_input_and_keep_the_order() -> None:
    counts = [3, 5, 3, 2, 5, 3, 3, 4, 2, 3, 3, 3, 3, 3]
    width = max(counts) + 6
    ids = np.array([[i * 10 + 1] * n + [0] * (width - n) for i, n in enumerate(counts)])
    mask = np.array([[1] * n + [0] * (width - n) for n in counts])
    seen: list[list[int]] = []

    def run(group: Batch) -> np.ndarray:
        assert group.arrays["input_ids"].shape[1] == max(group.token_counts)  # no column of padding only
        assert group.arrays["attention_mask"].sum(axis=1).tolist() == group.token_counts
        seen.append(group.token_counts)
        return group.arrays["input_ids"][:, :1]

    parts: list[tuple[list[int], list[int]]] = []
    batch = Batch({"input_ids": ids, "attention_mask": mask}, counts)
    out = in_token_groups(
        batch, run, limit=4, on_part=lambda rows, part: parts.append((list(rows), part[:, 0].tolist()))
    )
    assert out[:, 0].tolist() == [i * 10 + 1 for i in range(len(counts))]
    assert sorted(n for group in seen for n in group) == sorted(counts)
    assert 1 < len(seen) < len(counts)
    # each pass is handed over as it ends: every input once, its own row beside its position
    assert len(parts) == len(seen)
    assert sorted(row for rows, _ in parts for row in rows) == list(range(len(counts)))
    assert all(values == [row * 10 + 1 for row in rows] for rows, values in parts)


def test_a_batch_cuts_a_pass_per_core_alone_and_fewer_while_another_batch_runs() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: every batch plans for one core")
    ids = np.ones((2, 5), dtype=np.int64)
    batch = Batch({"input_ids": ids, "attention_mask": ids}, [5, 5])
    passes: list[int] = []

    def record(group: Batch) -> np.ndarray:
        passes.append(len(group.token_counts))
        return group.arrays["input_ids"][:, :1]

    in_token_groups(batch, record)
    assert sorted(passes) == [1, 1]  # alone: one input per core

    inside, release = threading.Event(), threading.Event()

    def hold(group: Batch) -> np.ndarray:
        inside.set()
        release.wait(10)
        return group.arrays["input_ids"][:, :1]

    other = threading.Thread(target=in_token_groups, args=(Batch({"input_ids": ids[:1]}, [5]), hold))
    other.start()
    try:
        assert inside.wait(10)
        passes.clear()
        in_token_groups(batch, record)
        assert passes == [2]  # half the cores: the equal inputs share one pass
    finally:
        release.set()
        other.join()


def test_a_lone_input_goes_to_the_every_core_runner_only_while_no_other_batch_runs() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: a lone input never has more than one")
    lone = Batch({"input_ids": np.ones((1, 4), dtype=np.int64)}, [4])
    used: list[str] = []

    def run(group: Batch) -> np.ndarray:
        used.append("run")
        return group.arrays["input_ids"][:, :1]

    def alone(group: Batch) -> np.ndarray:
        used.append("alone")
        return group.arrays["input_ids"][:, :1]

    in_token_groups(lone, run, alone=alone)
    assert used == ["alone"]

    inside, release = threading.Event(), threading.Event()

    def hold(group: Batch) -> np.ndarray:
        inside.set()
        release.wait(10)
        return group.arrays["input_ids"][:, :1]

    other = threading.Thread(target=in_token_groups, args=(lone, hold))
    other.start()
    try:
        assert inside.wait(10)
        used.clear()
        in_token_groups(lone, run, alone=alone)
        assert used == ["run"]  # the cores are shared: one thread for this pass
    finally:
        release.set()
        other.join()


def test_a_batch_in_token_groups_gives_the_numbers_of_one_text_at_a_time(tmp_path: Path) -> None:
    directory = tmp_path / "minilm"
    shutil.copytree(foundation_directory("all-minilm-l6-v2"), directory)
    model = EmbeddingInference(directory, "cpu", "onnx")
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][:64]
    together, tokens = model.embed(texts)
    assert len(set(tokens)) < len(tokens)  # some texts share a token count, so some groups hold several
    alone = np.concatenate([model.embed([text])[0] for text in texts])  # lone texts: the every-core session
    assert np.abs(together - alone).max() < 1e-5
    graph = directory / "openmaas-embeddings.onnx"
    assert graph.stat().st_size < 1e6 and data_file(graph).stat().st_size > 80e6  # the weights, mapped
    made = data_file(graph).stat().st_mtime_ns
    again = EmbeddingInference(directory, "cpu", "onnx")  # a later load maps the same file
    assert data_file(graph).stat().st_mtime_ns == made
    assert np.abs(again.embed(texts[:8])[0] - together[:8]).max() < 1e-5

    # A cache from before the data files held the weights inside the graph, and a mapped copy beside it; and a
    # crash while moving them out left a data file the graph does not use yet
    import onnx

    onnx.save_model(onnx.load(str(graph)), str(graph))
    data_file(graph).write_bytes(b"written before a crash")
    legacy = directory / "openmaas-embeddings.external.onnx"
    legacy.write_bytes(b"an earlier release's copy")
    data_file(legacy).write_bytes(b"its weights")
    upgraded = EmbeddingInference(directory, "cpu", "onnx")
    assert graph.stat().st_size < 1e6 and data_file(graph).stat().st_size > 80e6
    assert not legacy.exists() and not data_file(legacy).exists()
    assert np.abs(upgraded.embed(texts[:8])[0] - together[:8]).max() < 1e-5
