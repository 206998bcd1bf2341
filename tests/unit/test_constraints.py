"""runtime/constraints.py: response_format checks name the part they refuse, and a constraint keeps a random
model's greedy decoding inside the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from openmaas.recipes.generative import load_causal_lm
from openmaas.runtime.constraints import TokenConstraint, UnsupportedFormat, grammar_for, token_table
from tests.tiny_llm import build_tiny_causal_lm


def test_free_text_needs_no_grammar() -> None:
    assert grammar_for(None) is None
    assert grammar_for({"type": "text"}) is None


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ("json", "response_format"),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object", "not": {"oddity": 1}}, "bogus": 1},
            },
            "response_format.json_schema.bogus",
        ),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "response_format.json_schema.schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}, "response_format.json_schema.strict"),
    ],
)
def test_what_cannot_be_honoured_names_its_part(response_format: object, param: str) -> None:
    with pytest.raises(UnsupportedFormat) as refused:
        grammar_for(response_format)
    assert refused.value.param == param


def test_greedy_decoding_of_a_random_model_stays_in_the_schema(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        },
        "required": ["ok", "tags"],
        "additionalProperties": False,
    }
    output = grammar_for({"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    assert output is not None
    model = load_causal_lm(build_tiny_causal_lm(tmp_path / "m"), "cpu")
    constraint = TokenConstraint(
        output, token_table(model.tokenizer, model.vocab_size), model.vocab_size, model.eos_token_ids
    )
    ids = model.encode("Users", chat=False)
    produced: list[int] = []
    with torch.inference_mode():
        while not constraint.done and len(produced) < 80:
            logits, _ = model.prefill(ids + produced)
            token = int(torch.argmax(constraint.mask(logits)))
            if token in model.eos_token_ids:
                break
            constraint.accept(token)
            produced.append(token)
    jsonschema.validate(json.loads(model.decode(produced)), schema)
