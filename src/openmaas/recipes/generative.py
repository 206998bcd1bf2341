"""Causal language models for serving: checks a Hugging Face directory, loads it (with a LoRA adapter from
`adapter/` on top when there is one) and exposes the two forward passes generation needs: prefill and decode.

Never `trust_remote_code`, never pickled weights: safetensors only."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.recipes.chat import render_chat

ADAPTER_DIRECTORY = "adapter"
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class NotACausalLM(ValueError):
    """The directory cannot be served as a causal language model; the message says what to change."""


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
    if not any(str(name).endswith("ForCausalLM") for name in architectures):
        raise NotACausalLM(f"config.json names {architectures or 'no architectures'}, not a *ForCausalLM model")
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

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def encode(self, text: str, *, chat: bool) -> list[int]:
        # A rendered chat already holds every special token the template wants; a raw prompt gets the
        # tokenizer's usual ones (a BOS token for Llama-style models), as vLLM does.
        ids: list[int] = self.tokenizer(text, add_special_tokens=not chat)["input_ids"]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    def prefill(self, ids: Sequence[int]) -> tuple[Any, Any]:
        """The prompt's forward pass: (logits for the next token, the KV cache)."""
        import torch

        output = self.model(input_ids=torch.tensor([list(ids)], device=self.device), use_cache=True)
        return output.logits[0, -1], output[self.cache_argument]

    def step(self, token: int, cache: Any) -> tuple[Any, Any]:
        """One decoding step on the KV cache: (logits for the next token, the grown cache)."""
        import torch

        tokens = torch.tensor([[token]], device=self.device)
        output = self.model(input_ids=tokens, use_cache=True, **{self.cache_argument: cache})
        return output.logits[0, -1], output[self.cache_argument]


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


def load_causal_lm(directory: Path, device: str) -> CausalLM:
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

        model = PeftModel.from_pretrained(model, adapter, is_trainable=False)
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
