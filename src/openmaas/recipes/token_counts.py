"""Token counts of training rows as each recipe's own tokenizer sees them, and the context it cuts them at.

bow-mlp reads the terms of its featurizer (lowercased words, CJK characters and bigrams) with no limit; the
transformer classifier reads the encoder's fast tokenizer (special tokens included) and truncates at its
max_length; lora reads the base model's tokenizer over the chat template, as training does (EOS included), and
cuts a longer document into windows of context_length tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.recipes.featurizers import terms
from openmaas.recipes.foundation import foundation_directory

# The names of a model's files that are weights: a tokenizer never needs them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".gguf", ".pt", ".pth", ".h5", ".msgpack")


@dataclass(frozen=True)
class TokenCounter:
    """`count(row)` → tokens of one row; `context` is where the recipe cuts (None: nowhere); `cut` says how."""

    count: Callable[[dict[str, Any]], int]
    context: int | None
    tokenizer: str
    cut: str  # "truncated" (the rest is not seen) or "windowed" (split into windows, all trained on)


def _text(row: dict[str, Any]) -> str:
    return str(row.get("text", ""))


def bow_counter() -> TokenCounter:
    return TokenCounter(lambda row: len(terms(_text(row))), None, "bow-mlp terms", "truncated")


def encoder_counter(base_model: str, max_length: int | None) -> TokenCounter:
    from tokenizers import Tokenizer

    from openmaas.recipes.encoders import read_max_length

    directory = foundation_directory(base_model)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    context = max_length or read_max_length(directory)
    return TokenCounter(
        lambda row: len(tokenizer.encode(_text(row)).ids), context, f"{base_model} tokenizer", "truncated"
    )


def causal_counter(tokenizer_directory: Path, name: str, context_length: int) -> TokenCounter:
    """`tokenizer_directory` holds the base model's tokenizer files (its weights are not needed)."""
    from transformers import AutoTokenizer

    from openmaas.recipes.causal_training import tokenize_document

    tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_directory), local_files_only=True)

    def count(row: dict[str, Any]) -> int:
        return len(tokenize_document(tokenizer, row["messages"] if "messages" in row else _text(row)))

    return TokenCounter(count, context_length, f"{name} tokenizer", "windowed")
