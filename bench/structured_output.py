"""What structured output and logprobs cost the torch generation path, in one run: SmolLM2-135M-Instruct's
generation queue (continuous batching, 4 sequences decoded together) at temperature 0, plain, with a JSON-schema
response format on every sequence (runtime/constraints.py: an llguidance mask per row per step) and with
logprobs (top 5), as tokens/s and the ratio to plain.

    .venv/bin/python bench/structured_output.py [--model-dir ~/.cache/openmaas/foundation/smollm2-135m-instruct]
        [--max-tokens 48] [--sequences 4]

The model directory is the converted foundation model the server caches on its first start.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from openmaas.recipes.generative import load_causal_lm
from openmaas.runtime.constraints import TokenConstraint, grammar_for, token_table
from openmaas.runtime.generation import GenerationDone, GenerationQueue, SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
            },
        }
    },
    "required": ["people"],
}
ASKS = ["List some people with ages.", "Who lives next door?", "Name your friends.", "Describe a family."]


async def run(queue: GenerationQueue, model, prompts, max_tokens: int, mode: str) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    table = token_table(model.tokenizer, model.vocab_size)
    output = grammar_for({"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}})
    assert output is not None
    params = SamplingParams(max_tokens, temperature=0, logprobs=5 if mode == "logprobs" else None)
    started = time.perf_counter()
    generations = []
    for ids in prompts:
        constraint = TokenConstraint(output, table, model.vocab_size, model.eos_token_ids) if mode == "json" else None
        generations.append(queue.submit(ids, params, constraint, table))
    tokens = 0
    for generation in generations:
        while not isinstance(event := await generation.next(), GenerationDone):
            pass
        tokens += event.completion_tokens
    return tokens, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model-dir", type=Path, default=Path.home() / ".cache/openmaas/foundation/smollm2-135m-instruct"
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--sequences", type=int, default=4)
    args = parser.parse_args()
    model = load_causal_lm(args.model_dir, "cpu")
    prompts = [
        model.encode(model.render_chat([{"role": "user", "content": ASKS[i % len(ASKS)]}]), chat=True)
        for i in range(args.sequences)
    ]
    queue = GenerationQueue(model, max_queue_size=64, max_batch_size=args.sequences, name="bench")
    for mode in ("plain", "json", "logprobs"):  # warm-up: the token table and first-call costs of each batch size
        await run(queue, model, prompts, 8, mode)
    rates: dict[str, list[float]] = {}
    for mode in ("plain", "json", "logprobs", "plain"):  # plain twice: before and after, for the machine's drift
        tokens, seconds = await run(queue, model, prompts, args.max_tokens, mode)
        rates.setdefault(mode, []).append(tokens / seconds)
        print(f"{mode:9s} {tokens:4d} tokens in {seconds:6.2f} s: {tokens / seconds:6.1f} tokens/s")
    await queue.close()
    plain = sum(rates["plain"]) / 2
    print(
        f"json_schema / plain: {rates['json'][0] / plain:.2f}x; logprobs / plain: {rates['logprobs'][0] / plain:.2f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
