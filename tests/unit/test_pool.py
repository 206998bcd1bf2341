"""The model pool around a generation queue whose decoding thread stops: the version is dropped at once, the next
acquire loads it afresh, and readiness (`stopped()`) says so in between."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from openmaas.domain.entities import ModelVersion
from openmaas.recipes.generative import CausalLM, load_causal_lm
from openmaas.runtime.batching import BatchQueueClosed
from openmaas.runtime.generation import GenerationDone, GenerationQueue, SamplingParams
from openmaas.runtime.pool import ModelPool
from openmaas.runtime.predictors import GenerativePredictor
from openmaas.storage.artifacts.local import LocalArtifactStore
from tests.tiny_llm import build_tiny_causal_lm


class DiesOnOneToken:
    """The tiny LM, except that a one-token prompt raises what no guard catches (a BaseException)."""

    def __init__(self, model: CausalLM) -> None:
        self.inner = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prefill(self, ids: list[int]) -> Any:
        if len(ids) == 1:
            raise SystemExit("the decoding thread ends")
        return self.inner.prefill(ids)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> CausalLM:
    return load_causal_lm(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m"), "cpu")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end is the point
def test_a_model_whose_decoding_thread_stopped_is_reloaded_on_the_next_request(model: CausalLM, tmp_path: Path) -> None:
    loads: list[GenerativePredictor] = []

    def loader(version: ModelVersion, directory: Path, device: str) -> GenerativePredictor:
        loads.append(GenerativePredictor(version, DiesOnOneToken(model)))  # type: ignore[arg-type]
        return loads[-1]

    version = ModelVersion(
        "chat", 1, "tenant", "text-generation", "import", "torch", (), {}, {}, None, None, None, 0, "0" * 64, {}, 0.0
    )
    pool = ModelPool(
        LocalArtifactStore(tmp_path / "artifacts"), tmp_path / "cache", device="cpu", memory_budget_bytes=10**9,
        loader=loader,
    )

    async def run() -> None:
        first = await pool.acquire(version)
        assert isinstance(first.queue, GenerationQueue)
        started = time.monotonic()
        doomed = first.queue.submit([0], SamplingParams(max_tokens=4))
        with pytest.raises(BatchQueueClosed):
            await doomed.next(10)
        assert time.monotonic() - started < 5  # failed at once, not at the request timeout
        for _ in range(100):  # dropped by the queue's own thread as it ends
            if pool.get(version) is None:
                break
            await asyncio.sleep(0.02)
        assert pool.get(version) is None and pool.stopped() == []
        second = await pool.acquire(version)
        assert second is not first and len(loads) == 2
        assert isinstance(second.queue, GenerationQueue) and second.queue.alive
        generation = second.queue.submit(model.encode("Users upload", chat=False), SamplingParams(max_tokens=3))
        while not isinstance(event := await generation.next(10), GenerationDone):
            assert event is not None
        await pool.close()

    asyncio.run(run())
