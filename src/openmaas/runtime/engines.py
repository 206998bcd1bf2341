"""The engine interface for causal LMs: what serving needs of a loaded text-generation model (its prompt side,
`TextModel`) and of what decodes for it (`GenerationEngine`: submit a prompt with sampling parameters, read an
async stream of text pieces that ends with a finish reason and token usage, cancel), and the engines there are.

Two engines implement it: `torch` (runtime/generation.py's GenerationQueue over a transformers model: our trained
GPTs, LoRA versions, any safetensors causal LM) and `openvino` (runtime/openvino_engine.py: OpenVINO GenAI's
continuous-batching pipeline reading a GGUF file as it is). A version's `runtime` names its engine; the place
that chooses is `runtime.predictors.load_predictor`. A CUDA engine (vLLM's AsyncLLMEngine, which streams
RequestOutputs per request id and aborts by id) fits the same two protocols."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from openmaas.runtime.batching import BatchStats
from openmaas.runtime.generation import Generation, SamplingParams

TORCH = "torch"
OPENVINO = "openvino"
ENGINES = (TORCH, OPENVINO)


class TextModel(Protocol):
    """A loaded causal LM's prompt side: chats rendered with its template, text turned into its token ids."""

    max_context: int
    memory_bytes: int

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str: ...

    def encode(self, text: str, *, chat: bool) -> list[int]: ...


@runtime_checkable
class GenerationEngine(Protocol):
    """Decodes the generations submitted to it, several at once. `submit` queues one (raising QueueFull when the
    queue is full, BatchQueueClosed once closed) and returns its handle: iterate `Generation.next()` for
    TextDelta pieces and one last GenerationDone (finish reason, prompt and completion tokens), or a
    GenerationFailed that concerns this generation only; `Generation.cancel()` stops it within one token."""

    name: str
    max_batch_size: int

    @property
    def depth(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Generation: ...

    async def close(self) -> None: ...


class EngineFactory(Protocol):
    """How a loaded predictor starts the engine that serves it (the pool calls it once per load)."""

    def __call__(
        self,
        *,
        max_queue_size: int,
        max_batch_size: int,
        name: str,
        stats: BatchStats | None,
        on_stopped: Callable[[], None] | None,
    ) -> GenerationEngine: ...
