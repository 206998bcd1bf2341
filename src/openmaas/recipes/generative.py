"""Causal language models for serving: checks a Hugging Face directory, loads it (with a LoRA adapter from
`adapter/` on top when there is one) and exposes the two forward passes generation needs: prefill and decode.
Several named LoRA adapters may share one loaded base: each row of a decoding batch names its adapter (peft's
mixed-adapter batches), and a lock keeps adapters from being added or removed during a forward pass.

Never `trust_remote_code`, never pickled weights: safetensors only."""

from __future__ import annotations

import inspect
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.recipes.chat import render_chat

ADAPTER_DIRECTORY = "adapter"
BASE_ROW = "__base__"  # peft's name for a row of a mixed batch that runs without an adapter
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class NotACausalLM(ValueError):
    """The directory cannot be served as a causal language model; the message says what to change."""


def is_causal_lm(architectures: Sequence[str]) -> bool:
    """Whether transformers' AutoModelForCausalLM builds one of these classes (`LlamaForCausalLM`, but also
    `GPT2LMHeadModel` and other historic names)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    known = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return any(str(name) in known or str(name).endswith("ForCausalLM") for name in architectures)


def inspect_causal_lm(directory: Path) -> dict[str, Any]:
    """The directory's config.json, after checking it is a loadable, safe causal-LM directory."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise NotACausalLM(f"{directory} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotACausalLM(f"config.json is not valid JSON: {error}") from None
    architectures = config.get("architectures") or []
    if not is_causal_lm(architectures):
        raise NotACausalLM(f"config.json names {architectures or 'no architectures'}, not a causal LM")
    if "auto_map" in config:
        raise NotACausalLM("the model needs its own Python code (auto_map in config.json); remote code never runs")
    if not any(directory.glob("*.safetensors")):
        pickled = sorted(path.name for path in directory.iterdir() if path.suffix in PICKLED_SUFFIXES)
        hint = (
            f" ({', '.join(pickled)} are pickled and never loaded: convert them with "
            "`model.save_pretrained(dir, safe_serialization=True)`)"
            if pickled
            else ""
        )
        raise NotACausalLM(f"no *.safetensors weights in {directory}{hint}")
    if not (directory / "tokenizer.json").is_file():
        raise NotACausalLM("no tokenizer.json (a fast tokenizer) in the directory")
    return dict(config)


@dataclass
class DecodeBatch:
    """Sequences decoded together: one KV cache with a row each, left-padded to a common length, and the
    attention mask that hides the padding."""

    cache: Any
    mask: Any
    adapters: list[str] | None = None  # each row's LoRA adapter, on a base that holds several

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])


@dataclass
class CausalLM:
    """A loaded causal LM and its tokenizer, in evaluation mode."""

    model: Any
    tokenizer: Any
    eos_token_ids: frozenset[int]
    max_context: int
    memory_bytes: int
    device: str
    labels: tuple[str, ...] = ()
    cache_argument: str = "past_key_values"  # renamed `cache` in transformers 5.x
    # Held for each forward pass and while adapters are added or removed (they change the model's modules).
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def encode(self, text: str, *, chat: bool) -> list[int]:
        # A rendered chat already holds every special token the template wants; a raw prompt gets the
        # tokenizer's usual ones (a BOS token for Llama-style models), as vLLM does.
        ids: list[int] = self.tokenizer(text, add_special_tokens=not chat)["input_ids"]
        return ids or [self.start_token_id]

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer: the length of a logits row (at least the tokenizer's vocabulary)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def start_token_id(self) -> int:
        """What a prompt of no tokens (OpenAI accepts `""`) starts from: the BOS token, or the EOS token where
        there is none (GPT-2 style: documents were separated by it in training)."""
        tokenizer = self.tokenizer
        for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
            if isinstance(candidate, int):
                return candidate
        return min(self.eos_token_ids) if self.eos_token_ids else 0

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    def prefill(self, ids: Sequence[int], adapter: str | None = None) -> tuple[Any, Any]:
        """The prompt's forward pass (through LoRA `adapter` of a shared base): (next-token logits, KV cache)."""
        import torch

        named = {"adapter_names": [adapter]} if adapter is not None else {}
        with self.lock:
            output = self.model(input_ids=torch.tensor([list(ids)], device=self.device), use_cache=True, **named)
        return output.logits[0, -1], output[self.cache_argument]

    def step(self, tokens: Sequence[int], batch: DecodeBatch) -> Any:
        """One decoding step for every row of the batch: the next-token logits, one row each. The batch's
        cache grows by one position."""
        import torch

        ones = torch.ones((len(tokens), 1), dtype=batch.mask.dtype, device=self.device)
        mask = torch.cat([batch.mask, ones], dim=1)
        # Each row's position is its own count of real tokens: rows are left-padded to a common length.
        positions = (batch.mask.sum(dim=1, keepdim=True)).to(torch.long)
        named = {"adapter_names": list(batch.adapters)} if batch.adapters is not None else {}
        with self.lock:
            output = self.model(
                input_ids=torch.tensor([[t] for t in tokens], device=self.device),
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self.cache_argument: batch.cache},
                **named,
            )
        batch.cache, batch.mask = output[self.cache_argument], mask
        return output.logits[:, -1]

    def start_batch(self, cache: Any, length: int, adapter: str | None = None) -> DecodeBatch:
        """A one-row batch from a prefilled prompt's cache."""
        import torch

        mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        return DecodeBatch(cache, mask, [adapter] if adapter is not None else None)

    def join(self, batch: DecodeBatch | None, other: DecodeBatch) -> DecodeBatch:
        """Rows of both batches in one, the shorter side left-padded (masked out) to the longer's length."""
        if batch is None:
            return other
        import torch
        from transformers import DynamicCache

        length = max(batch.mask.shape[1], other.mask.shape[1])

        def pad(tensor: Any, dim: int) -> Any:
            missing = length - tensor.shape[dim]
            if not missing:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

        layers = [
            (
                torch.cat([pad(a.keys, 2), pad(b.keys, 2)]),
                torch.cat([pad(a.values, 2), pad(b.values, 2)]),
            )
            for a, b in zip(batch.cache.layers, other.cache.layers, strict=True)
        ]
        adapters = None
        if batch.adapters is not None or other.adapters is not None:
            adapters = (batch.adapters or [BASE_ROW] * batch.rows) + (other.adapters or [BASE_ROW] * other.rows)
        return DecodeBatch(DynamicCache(layers), torch.cat([pad(batch.mask, 1), pad(other.mask, 1)]), adapters)

    def keep_rows(self, batch: DecodeBatch, rows: Sequence[int]) -> DecodeBatch:
        """Only `rows` of the batch, and none of the padding columns no remaining row needs."""
        import torch
        from transformers import DynamicCache

        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        mask = batch.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        layers = [
            (layer.keys.index_select(0, index)[:, :, start:], layer.values.index_select(0, index)[:, :, start:])
            for layer in batch.cache.layers
        ]
        adapters = [batch.adapters[row] for row in rows] if batch.adapters is not None else None
        return DecodeBatch(DynamicCache(layers), mask[:, start:], adapters)


def _eos_ids(tokenizer: Any, *configs: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, *(getattr(config, "eos_token_id", None) for config in configs)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def quiet_transformers() -> None:
    """Offline, and no progress bars or advisories in the server's log."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_causal_lm(directory: Path, device: str, adapter_name: str = "default") -> CausalLM:
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = inspect_causal_lm(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    adapter = directory / ADAPTER_DIRECTORY
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name, is_trainable=False)
    model.eval().to(device)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    max_context = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
    memory = sum(p.numel() * p.element_size() for p in model.parameters())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_argument = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    generation_config = getattr(model, "generation_config", None)
    return CausalLM(
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=_eos_ids(tokenizer, model.config, generation_config),
        max_context=max_context,
        memory_bytes=int(memory),
        device=device,
        cache_argument=cache_argument,
    )
