"""JSON schemas lowered to compact grammars for the OpenVINO engine: which schemas are lowered, and that each
lowered grammar compiles in OpenVINO's xgrammar and makes SmolLM2 write JSON that validates, with no whitespace
but the one space after "," and ":"."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from openmaas.recipes.foundation import foundation_gguf
from openmaas.runtime.constraints import grammar_for
from openmaas.runtime.json_grammar import lower_schema

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 8},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
            },
            "required": ["name", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}
OPTIONAL = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "note": {"type": ["string", "null"], "maxLength": 12},
        "kind": {"enum": ["cat", "dog", 3]},
    },
    "required": ["kind"],
}
NUMBERS = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3}
CHOICE = {"anyOf": [{"type": "boolean"}, {"const": {"a": [1, "two"]}}]}
LOWERED = {"tree": TREE, "optional": OPTIONAL, "numbers": NUMBERS, "choice": CHOICE, "object": {"type": "object"}}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^a+$"},
        {"type": "integer", "minimum": 3},
        {"type": "string", "format": "date"},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"$ref": "#/components/schemas/x"},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    ],
)
def test_a_schema_with_a_keyword_the_grammar_would_not_enforce_is_left_to_the_library(schema: dict) -> None:
    assert lower_schema(schema) is None


def test_the_lowered_grammar_writes_properties_in_order_and_makes_optional_ones_skippable() -> None:
    grammar = lower_schema(OPTIONAL)
    assert grammar is not None and grammar.startswith("root ::= ")
    # "kind" is required: its pair may open the object (no comma) or follow another (a comma)
    assert '"\\"kind\\"" ": " ("\\"cat\\"" | "\\"dog\\"" | "3")' in grammar
    assert '", " "\\"kind\\""' in grammar
    assert lower_schema({"type": "array", "maxItems": 0}).startswith('root ::= "[]"\n')  # type: ignore[union-attr]


def only_compact_whitespace(text: str) -> bool:
    """Outside its strings, the text's only whitespace is one space after each "," and ":"."""
    outside = re.sub(r'"(\\.|[^"\\])*"?', '""', text)
    return not re.search(r"\s", outside.replace(", ", ",").replace(": ", ":"))


@pytest.fixture(scope="module")
def smollm2() -> Any:
    from openmaas.runtime.openvino_engine import load_openvino_model

    return load_openvino_model(foundation_gguf("smollm2-135m-instruct"), threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LOWERED))
def test_each_lowered_grammar_compiles_and_smollm2_writes_json_that_validates(smollm2: Any, name: str) -> None:
    import openvino_genai

    from openmaas.runtime.openvino_engine import structured_output

    schema = LOWERED[name]
    output = grammar_for({"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    assert output is not None and lower_schema(output.schema) is not None
    smollm2.check_output(output)  # compiles on the probe pipeline, or raises UnsupportedFormat
    config = openvino_genai.GenerationConfig()
    config.max_new_tokens = 60
    config.do_sample = False
    config.structured_output_config = structured_output(output)
    prompt = smollm2.render_chat([{"role": "user", "content": f"Answer as JSON: {name}"}])
    [result] = smollm2.pipeline.generate([prompt], [config])
    text = result.m_generation_ids[0]
    assert only_compact_whitespace(text), text
    if len(smollm2.encode(text, chat=True)) >= config.max_new_tokens:
        return  # cut by max_new_tokens (a long free string): no end to validate
    jsonschema.validate(json.loads(text), schema)
