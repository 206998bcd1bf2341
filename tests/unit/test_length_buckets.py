"""Chunks of similar length run on the caller and helper threads, and come back in the caller's order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from openmaas.recipes.encoders import in_length_buckets


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
