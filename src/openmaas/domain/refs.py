"""Model names and references: `name`, `name:3` or `name:alias`, optionally qualified as `owner/name…`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas.domain.ids import DB_INT_MAX

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
DEFAULT_ALIAS = "production"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None
    owner: str | None = None  # a tenant's name: `owner/name` reaches another tenant's public model

    def __str__(self) -> str:
        base = f"{self.owner}/{self.name}" if self.owner is not None else self.name
        if self.version is not None:
            return f"{base}:{self.version}"
        if self.alias is not None:
            return f"{base}:{self.alias}"
        return base


# The words of the routes under /v1/models/{name}/…: a model or tenant named so could never be read by its path.
ROUTE_WORDS = ("import", "predict", "embed", "load", "unload", "artifact")


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name)) and name not in ROUTE_WORDS


def is_valid_alias(alias: str) -> bool:
    return bool(ALIAS_PATTERN.match(alias)) and alias != "latest"


def parse_ref(text: str) -> ModelRef | None:
    """Parse a reference; None when it is malformed (the caller names the problem)."""
    qualified, sep, tail = text.partition(":")
    owner: str | None
    owner, slash, name = qualified.rpartition("/")
    if not slash:
        owner = None
    elif not is_valid_name(owner):  # tenant names follow the rules of model names
        return None
    if not is_valid_name(name) or (sep and not tail):
        return None
    if not sep:
        return ModelRef(name, owner=owner)
    if tail.isascii() and tail.isdigit():  # str.isdigit alone also takes '²' and other scripts' digits
        return ModelRef(name, version=int(tail), owner=owner) if 0 < int(tail) <= DB_INT_MAX else None
    if tail == "latest":
        return ModelRef(name, owner=owner)  # resolved as "newest version" by the registry
    return ModelRef(name, alias=tail, owner=owner) if is_valid_alias(tail) else None


FINE_TUNED_PREFIX = "ft:"
CHECKPOINT_PREFIX = "ckpt-step-"  # `{fine-tuned model}:ckpt-step-{N}` names the checkpoint of step N


def fine_tuned_model_id(base: str, tenant: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's name of a fine-tuned model, `ft:{base}:{tenant}:{suffix}:{job}`; the job id is its last part."""
    return f"{FINE_TUNED_PREFIX}{base}:{tenant}:{suffix or ''}:{job_id}"
