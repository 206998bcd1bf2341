"""The generation queue on a real (tiny, random) causal LM: continuous batching gives each generation exactly
the tokens it gets alone, stop strings cut the text, and a failure ends the stream instead of hanging it."""

from __future__ import annotations

import asyncio

import pytest

from openmaas.recipes.generative import CausalLM, load_causal_lm
from openmaas.runtime.generation import (
    GenerationDone,
    GenerationFailed,
    GenerationQueue,
    SamplingParams,
    StopMatcher,
    TextDelta,
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
