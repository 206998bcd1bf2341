"""A JSON Schema lowered to a compact EBNF grammar for the OpenVINO engine's xgrammar: the same JSON the schema
allows, written as the torch engine writes it (`", "` and `": "`, no other whitespace).

Why not the library's own `json_schema`: its grammar lets whitespace run free between every token, and a small
model decoding greedily fills it (SmolLM2 asked for two cities answered `{\\n\\n"cities"\\n\\n:\\n\\n[...` until
max_tokens, never closing the object). `lower_schema` covers what OpenAI's strict structured outputs take
(objects, arrays with item bounds, strings with length bounds, numbers, integers, booleans, null, enum, const,
anyOf, type lists, `$ref` into `$defs`) and answers None for any other keyword (pattern, format, minimum, ...):
the caller then hands the schema to the library as it is, whitespace and all, rather than half-enforce it."""

from __future__ import annotations

import json
from typing import Any

# Keywords that only describe (or that the lowering below enforces); any other keyword means "not lowered".
DESCRIPTIVE = {"title", "description", "examples", "default", "$schema", "$id", "$comment", "strict", "name"}
HANDLED = {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems", "enum", "const"}
HANDLED |= {"anyOf", "$ref", "$defs", "definitions", "minLength", "maxLength"}

BASE_RULES = r"""value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" (string ": " value (", " string ": " value)*)? "}"
array ::= "[" (value (", " value)*)? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
integer ::= "-"? ("0" | [1-9] [0-9]*)
number ::= integer ("." [0-9]+)? ([eE] [+-]? [0-9]+)?
boolean ::= "true" | "false"
null ::= "null"
"""


class NotLowered(Exception):
    """The schema uses something the compact grammar does not enforce."""


def literal(text: str) -> str:
    """An EBNF string literal matching `text` exactly."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


class Lowering:
    """Rules named r0, r1, ... for the schema's parts; `$defs` get a rule each, so recursion works."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.rules: list[str] = []
        self.defs: dict[str, str] = {}

    def rule(self, body: str) -> str:
        name = f"r{len(self.rules)}"
        self.rules.append(f"{name} ::= {body}")
        return name

    def reference(self, ref: str) -> str:
        prefix = next((p for p in ("#/$defs/", "#/definitions/") if ref.startswith(p)), None)
        if prefix is None:
            raise NotLowered(ref)
        if ref not in self.defs:
            found = self.root.get(prefix[2:-1], {}).get(ref[len(prefix) :])
            if not isinstance(found, dict):
                raise NotLowered(ref)
            self.defs[ref] = name = f"r{len(self.rules)}"
            self.rules.append("")  # its place, filled once its body is lowered (it may refer to itself)
            self.rules[int(name[1:])] = f"{name} ::= {self.schema(found)}"
        return self.defs[ref]

    def schema(self, schema: Any) -> str:
        """An EBNF expression for the JSON values the schema allows."""
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict) or set(schema) - DESCRIPTIVE - HANDLED:
            raise NotLowered(str(schema)[:80])
        if "$ref" in schema:
            if set(schema) - DESCRIPTIVE - {"$ref", "$defs", "definitions"}:
                raise NotLowered("$ref beside other keywords")
            return self.reference(schema["$ref"])
        if "const" in schema:
            return literal(compact(schema["const"]))
        if "enum" in schema:
            return "(" + " | ".join(literal(compact(v)) for v in schema["enum"]) + ")"
        if "anyOf" in schema:
            return "(" + " | ".join(self.schema(part) for part in schema["anyOf"]) + ")"
        kinds = schema.get("type")
        if kinds is None:
            return "value"
        if isinstance(kinds, list):
            return "(" + " | ".join(self.typed(kind, schema) for kind in kinds) + ")"
        return self.typed(kinds, schema)

    def typed(self, kind: str, schema: dict[str, Any]) -> str:
        if kind in ("number", "integer", "boolean", "null"):
            return kind
        if kind == "string":
            return self.string(schema)
        if kind == "array":
            return self.array(schema)
        if kind == "object":
            return self.object(schema)
        raise NotLowered(f"type {kind}")

    def string(self, schema: dict[str, Any]) -> str:
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if low == 0 and high is None:
            return "string"
        return self.rule(f'"\\"" char{{{low},{"" if high is None else int(high)}}} "\\""')

    def array(self, schema: dict[str, Any]) -> str:
        item = self.schema(schema.get("items", True))
        low, high = int(schema.get("minItems", 0)), schema.get("maxItems")
        if high is not None and int(high) < low:
            raise NotLowered("maxItems below minItems")
        if high == 0:
            return '"[]"'
        rest = f'("," " " {item}){{{max(low - 1, 0)},{"" if high is None else int(high) - 1}}}'
        items = f"{item} {rest}"
        return self.rule(f'"[" {items} "]"' if low > 0 else f'"[" ({items})? "]"')

    def object(self, schema: dict[str, Any]) -> str:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        if required - set(properties):
            raise NotLowered("a required property without a schema")
        if not properties:
            extra = schema.get("additionalProperties", True)
            if extra is True or extra == {}:
                return "object"
            if extra is False:
                return '"{}"'
            raise NotLowered("additionalProperties with a schema")
        # The properties in the schema's order, each optional one skippable: `tail(i, first)` is the text from
        # the i-th property on, with a comma before the first one written unless none came before.
        names = list(properties)
        pairs = [f"{literal(compact(n))} {literal(': ')} {self.schema(properties[n])}" for n in names]
        tails: dict[tuple[int, bool], str] = {}
        for index in range(len(names), -1, -1):
            for first in (True, False):
                if index == len(names):
                    tails[index, first] = '""'
                    continue
                pair = pairs[index] if first else f'", " {pairs[index]}'
                taken = f"{pair} {tails[index + 1, False]}"
                body = taken if names[index] in required else f"{taken} | {tails[index + 1, first]}"
                tails[index, first] = self.rule(body)
        return self.rule(f'"{{" {tails[0, True]} "}}"')


def lower_schema(schema: dict[str, Any]) -> str | None:
    """The compact grammar (root rule `root`) for a JSON Schema, or None where it uses a keyword not lowered."""
    lowering = Lowering(schema)
    try:
        root = lowering.schema({k: v for k, v in schema.items() if k not in ("$defs", "definitions")})
    except (NotLowered, TypeError, ValueError):
        return None
    return "\n".join([f"root ::= {root}", *lowering.rules, BASE_RULES])
