"""Structured output: turns an OpenAI `response_format` into a grammar (checked before any shared work, so an
unsupported schema is the caller's 400), and a grammar into a per-sequence token constraint that masks the
logits of one row of a decoding batch and follows the tokens that row takes.

Constrained decoding is llguidance's (Microsoft's Rust library behind Guidance, one abi3 wheel with no
dependencies): its JSON-schema compiler, and a matcher per sequence that computes the allowed-token bitmask
from the tokenizer's vocabulary. Engines that run their own grammars reuse `grammar_for` for the checks and
the 400, and take the JSON schema it normalised."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

# Compact JSON as models write it, and no free whitespace: a model that would pad forever cannot, and the text
# ends where the value closes (then only an end-of-sequence token is allowed).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# What `{"type": "json_object"}` asks for: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
FORMAT_TYPES = ("text", "json_object", "json_schema")


class UnsupportedFormat(ValueError):
    """The response_format cannot be honoured; `param` names the part (`response_format.json_schema.schema`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class OutputFormat:
    """A checked response_format: the JSON schema the text must satisfy and the llguidance grammar for it."""

    schema: dict[str, Any]
    grammar: str
    name: str | None = None


def _fail(message: str, param: str) -> UnsupportedFormat:
    return UnsupportedFormat(message, param)


def grammar_for(response_format: Any) -> OutputFormat | None:
    """The grammar a response_format asks for; None for free text. Raises UnsupportedFormat naming the part."""
    import llguidance

    param = "response_format"
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise _fail("response_format must be an object with a type", param)
    kind = response_format.get("type")
    if kind not in FORMAT_TYPES:
        raise _fail(f"response_format.type must be one of {', '.join(FORMAT_TYPES)}, not {kind!r}", f"{param}.type")
    extra = sorted(set(response_format) - {"type", "json_schema"})
    if extra or (kind != "json_schema" and "json_schema" in response_format):
        field = extra[0] if extra else "json_schema"
        raise _fail(f"response_format of type {kind!r} takes no {field!r}", f"{param}.{field}")
    if kind == "text":
        return None
    name = None
    where = f"{param}.json_schema"
    if kind == "json_object":
        schema = ANY_OBJECT
    else:
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise _fail("response_format.json_schema must be an object with name and schema", f"{param}.json_schema")
        unknown = sorted(set(spec) - {"name", "schema", "strict", "description"})
        if unknown:
            raise _fail(f"response_format.json_schema: {unknown[0]!r} is not supported", f"{where}.{unknown[0]}")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise _fail("response_format.json_schema.name must be a non-empty string", f"{param}.json_schema.name")
        if "strict" in spec and not isinstance(spec["strict"], bool | None):
            raise _fail("response_format.json_schema.strict must be a boolean", f"{param}.json_schema.strict")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise _fail("response_format.json_schema.schema must be a JSON Schema object", f"{where}.schema")
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)  # type: ignore[arg-type]
        error = llguidance.LLMatcher.validate_grammar(grammar)
    except ValueError as failure:
        error = str(failure)
    if error:
        raise _fail(f"response_format.json_schema.schema is not supported: {error}", f"{where}.schema")
    return OutputFormat(schema, grammar, name)


_tokenizers: WeakKeyDictionary[Any, Any] = WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def token_table(hf_tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (every token's bytes), built once per tokenizer: it
    takes about a second for a 50k vocabulary, so a caller builds it off the event loop and off the batch."""
    import llguidance.hf

    with _tokenizers_lock:
        table = _tokenizers.get(hf_tokenizer)
        if table is None or table[0] != vocab_size:
            table = (vocab_size, llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size))
            _tokenizers[hf_tokenizer] = table
    return table[1]


class TokenConstraint:
    """One sequence's grammar state. `mask` forbids, in that row's logits, every token the grammar cannot take
    next; `accept` follows the token sampled. Ends (`done`) when the grammar has nothing left to take."""

    def __init__(self, output: OutputFormat, table: Any, vocab_size: int, eos_token_ids: frozenset[int]) -> None:
        import llguidance

        self.output = output
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.matcher = llguidance.LLMatcher(table, output.grammar, log_level=0)
        if self.matcher.is_error():
            raise UnsupportedFormat(self.matcher.get_error(), "response_format")

    @property
    def done(self) -> bool:
        return bool(self.matcher.is_stopped())

    def mask(self, logits: Any) -> Any:
        """The row's logits with what the grammar forbids at -inf (a new tensor; the batch's stays as it was)."""
        import numpy as np
        import torch

        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = torch.from_numpy(bits[: logits.shape[-1]].astype(bool))
        if len(allowed) < logits.shape[-1]:  # rows of the output layer past the tokenizer's vocabulary
            allowed = torch.cat([allowed, torch.zeros(logits.shape[-1] - len(allowed), dtype=torch.bool)])
        if self.matcher.is_accepting():  # the value is whole: any of the model's end tokens ends it
            for token in self.eos_token_ids:
                if token < len(allowed):
                    allowed[token] = True
        return logits.masked_fill(~allowed.to(logits.device), float("-inf"))

    def accept(self, token: int) -> None:
        if token in self.eos_token_ids:
            return
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self.matcher.get_error()}")


def row_constraint(model: Any, output: OutputFormat | None) -> tuple[TokenConstraint | None, Any]:
    """A causal LM's token table (built once per tokenizer) and a new sequence's grammar state; slow the first
    time, so callers run it off the event loop."""
    table = token_table(model.tokenizer, model.vocab_size)
    if output is None:
        return None, table
    return TokenConstraint(output, table, model.vocab_size, model.eos_token_ids), table
