"""The generation queue on a real (tiny, random) causal LM: continuous batching gives each generation exactly
the tokens it gets alone, stop strings cut the text, and a failure ends the stream instead of hanging it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from openmaas.recipes.generative import CausalLM, load_causal_lm
from openmaas.runtime.batching import BatchQueueClosed
from openmaas.runtime.generation import (
    Generation,
    GenerationDone,
    GenerationFailed,
    GenerationQueue,
    SamplingParams,
    StopMatcher,
    TextDelta,
    sample,
)
from tests.tiny_llm import build_tiny_causal_lm

PROMPTS = ["Users upload", "OpenMaaS turns data into models and models into", "模型", "train models, and call"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> CausalLM:
    return load_causal_lm(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "m"), "cpu")


async def generate_all(
    model: CausalLM, batch_size: int, params: list[SamplingParams]
) -> list[tuple[list[str], GenerationDone]]:
    queue = GenerationQueue(model, max_queue_size=16, max_batch_size=batch_size, name="tiny")
    generations = [queue.submit(model.encode(p, chat=False), s) for p, s in zip(PROMPTS, params, strict=True)]

    async def read(generation):  # type: ignore[no-untyped-def]
        pieces = []
        while True:
            event = await generation.next(30)
            if isinstance(event, GenerationDone):
                return pieces, event
            assert isinstance(event, TextDelta)
            pieces.append(event.text)

    try:
        return list(await asyncio.gather(*(read(g) for g in generations)))
    finally:
        await queue.close()


def test_batched_generations_equal_generations_alone(model: CausalLM) -> None:
    # Different prompt lengths and budgets: rows join, pad and leave the batch at different steps.
    params = [SamplingParams(max_tokens=n, temperature=0) for n in (30, 5, 40, 12)]
    alone = asyncio.run(generate_all(model, 1, params))
    together = asyncio.run(generate_all(model, 4, params))
    for (pieces_alone, done_alone), (pieces_together, done_together) in zip(alone, together, strict=True):
        assert "".join(pieces_together) == "".join(pieces_alone)
        assert done_together == done_alone
    assert [done.completion_tokens for _, done in alone] == [30, 5, 40, 12]


def test_seeded_sampling_is_the_same_alone_and_batched(model: CausalLM) -> None:
    params = [SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=i) for i in range(4)]
    alone = asyncio.run(generate_all(model, 1, params))
    together = asyncio.run(generate_all(model, 4, params))
    assert ["".join(p) for p, _ in alone] == ["".join(p) for p, _ in together]


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_it() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("hello E") == ("hello ", False)  # "E" may start "END"
    assert matcher.feed("hello EN") == ("", False)
    assert matcher.feed("hello ENX") == ("ENX", False)  # it did not
    assert matcher.feed("hello ENX and END more") == (" and ", True)
    assert StopMatcher([]).feed("abc\ufffd") == ("abc", False)  # half a character waits for the rest


class Broken:
    """A model whose decoding step fails: the stream must end with the failure."""

    def __init__(self, model: CausalLM) -> None:
        self.inner = model
        self.eos_token_ids = model.eos_token_ids
        self.max_context = model.max_context

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def step(self, tokens, batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("out of memory")


def test_a_failing_model_ends_every_stream_with_the_error(model: CausalLM) -> None:
    async def run() -> list[BaseException]:
        queue = GenerationQueue(Broken(model), max_queue_size=4, max_batch_size=2, name="broken")
        generations = [queue.submit(model.encode(p, chat=False), SamplingParams(max_tokens=10)) for p in PROMPTS[:2]]
        errors = []
        for generation in generations:
            with pytest.raises(GenerationFailed) as raised:
                while True:
                    assert not isinstance(await generation.next(10), GenerationDone)
            errors.append(raised.value)
        await queue.close()
        return errors

    errors = asyncio.run(run())
    assert all("out of memory" in str(error) for error in errors)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-8, 0.5, 2.0])
def test_every_temperature_above_zero_samples_a_token(temperature: float) -> None:
    import torch

    logits = torch.tensor([3.0, 1.0, -2.0, 3.0 - 1e-6, float("-inf")])
    generator = torch.Generator().manual_seed(0)
    for top_p in (1.0, 0.5):
        token = sample(logits, SamplingParams(max_tokens=1, temperature=temperature, top_p=top_p), generator)
        assert 0 <= token < 4
        if temperature < 1e-6:
            assert token == 0  # the limit is greedy


class FatalPrefill(Broken):
    """A failure no guard catches (a BaseException): the worker thread itself ends, once `gate` is set."""

    gate = threading.Event()

    def step(self, tokens, batch):  # type: ignore[no-untyped-def]
        return self.inner.step(tokens, batch)

    def prefill(self, ids):  # type: ignore[no-untyped-def]
        if len(ids) == 1:
            self.gate.wait(5)
            raise SystemExit("the decoding thread ends")
        return self.inner.prefill(ids)


async def read_all(generation: Generation, timeout: float = 10) -> tuple[str, GenerationDone]:
    pieces = []
    while not isinstance(event := await generation.next(timeout), GenerationDone):
        assert isinstance(event, TextDelta), event
        pieces.append(event.text)
    return "".join(pieces), event


def test_a_seed_the_sampler_refuses_fails_that_generation_and_the_others_go_on(model: CausalLM) -> None:
    async def run() -> None:
        queue = GenerationQueue(model, max_queue_size=8, max_batch_size=4, name="tiny")
        ids = model.encode(PROMPTS[0], chat=False)
        good = queue.submit(ids, SamplingParams(max_tokens=20, seed=1))
        bad = queue.submit(ids, SamplingParams(max_tokens=20, seed=2**64))  # past what manual_seed takes
        hot = queue.submit(ids, SamplingParams(max_tokens=20, temperature=1e-300))
        with pytest.raises(GenerationFailed):
            await bad.next(10)
        assert (await read_all(good))[1].completion_tokens == 20
        assert (await read_all(hot))[1].completion_tokens == 20
        started = time.monotonic()
        later = queue.submit(ids, SamplingParams(max_tokens=5, seed=3))
        assert (await read_all(later))[1].completion_tokens == 5
        assert time.monotonic() - started < 5 and queue.alive
        await queue.close()

    asyncio.run(run())


class FailsOnce(Broken):
    """Decoding fails once, for the first row to reach its third token: a failure of one row in a batch step."""

    def __init__(self, model: CausalLM) -> None:
        super().__init__(model)
        self.armed = True

    def step(self, tokens, batch):  # type: ignore[no-untyped-def]
        return self.inner.step(tokens, batch)

    def decode(self, ids):  # type: ignore[no-untyped-def]
        if self.armed and len(ids) == 3:
            self.armed = False
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return self.inner.decode(ids)


def test_one_rows_failure_in_a_batch_step_ends_that_row_only(model: CausalLM) -> None:
    async def run(queue_model: CausalLM | FailsOnce, prompts: list[str]) -> list[object]:
        queue = GenerationQueue(queue_model, max_queue_size=8, max_batch_size=4, name="tiny")  # type: ignore[arg-type]
        params = SamplingParams(max_tokens=12, temperature=0)
        generations = [queue.submit(model.encode(p, chat=False), params) for p in prompts]
        try:
            return list(await asyncio.gather(*(read_all(g) for g in generations), return_exceptions=True))
        finally:
            await queue.close()

    alone = asyncio.run(run(model, PROMPTS[1:2]))
    victim, other = asyncio.run(run(FailsOnce(model), PROMPTS[:2]))
    assert isinstance(victim, GenerationFailed) and "UnicodeDecodeError" in str(victim)
    assert other == alone[0]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's end is the point
def test_a_stopped_decoding_thread_fails_its_generations_at_once_and_tells_its_owner(model: CausalLM) -> None:
    stopped = threading.Event()
    fatal = FatalPrefill(model)

    async def run() -> None:
        queue = GenerationQueue(fatal, max_queue_size=8, max_batch_size=1, name="fatal", on_stopped=stopped.set)
        started = time.monotonic()
        running = queue.submit([model.start_token_id], SamplingParams(max_tokens=5))
        waiting = queue.submit(model.encode(PROMPTS[0], chat=False), SamplingParams(max_tokens=5))
        fatal.gate.set()
        for generation in (running, waiting):
            with pytest.raises(BatchQueueClosed):
                await generation.next(10)
        assert time.monotonic() - started < 5
        assert stopped.wait(5) and not queue.alive
        with pytest.raises(BatchQueueClosed):
            queue.submit([1, 2], SamplingParams(max_tokens=5))
        await queue.close()

    asyncio.run(run())


def test_an_empty_prompt_starts_from_the_models_start_token(model: CausalLM) -> None:
    assert model.encode("", chat=False) == [model.start_token_id]
    assert model.start_token_id == model.tokenizer.eos_token_id  # the tiny model has no BOS token, as GPT-2
