"""Export archives: a classifier version as one zip that predicts elsewhere, without OpenMaaS.

The archive holds the weights (safetensors for bow-mlp, the served ONNX graph for a transformer classifier),
the featurizer's vocabulary or the tokenizer, the label names, the preprocessing as JSON, a model card
(README.md), a requirements.txt and a short `predict.py` that reproduces the server's predictions from these
files with numpy and safetensors, or onnxruntime and tokenizers. Nothing in it is pickled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from openmaas.domain.entities import ModelVersion, Principal
from openmaas.errors import InvalidRequest
from openmaas.recipes.featurizers import CJK_RUN, TOKEN
from openmaas.recipes.foundation import FOUNDATION_MODELS
from openmaas.services.inference import InferenceService
from openmaas.services.registry import RegistryService
from openmaas.storage.artifacts import ArtifactStore

RECIPES = ("bow-mlp", "transformer-classifier")
REQUIREMENTS = {
    "bow-mlp": ["numpy>=1.26", "safetensors>=0.4"],
    "transformer-classifier": ["numpy>=1.26", "onnxruntime>=1.18", "tokenizers>=0.19"],
}
SCRIPTS = {"bow-mlp": "bow_mlp.py", "transformer-classifier": "onnx_classifier.py"}


@dataclass
class Contents:
    """What goes into an archive: large files copied from disk (a graph), and the rest from memory."""

    files: dict[str, Path] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


class ExportService:
    def __init__(
        self, registry: RegistryService, inference: InferenceService, artifacts: ArtifactStore, cache_dir: Path
    ) -> None:
        self.registry = registry
        self.inference = inference
        self.artifacts = artifacts
        self.cache_dir = cache_dir

    async def archive(self, principal: Principal, ref: str) -> tuple[ModelVersion, Path]:
        """The version's archive, made once and kept in the cache directory."""
        version = await asyncio.to_thread(self.registry.resolve, principal, ref)  # the database: off the loop
        if version.task != "text-classification" or version.recipe not in RECIPES:
            raise InvalidRequest(
                f"{version.model}:{version.version} is a {version.task} model ({version.recipe}): an archive "
                f"that predicts on its own is made for classifiers ({', '.join(RECIPES)}); download its weights "
                "with format=safetensors",
                param="format",
                code="archive_unavailable",
            )
        target = self.cache_dir / f"{_identity(version)}.zip"
        if target.is_file():
            return version, target
        onnx_graph = await self._served_graph(version) if version.recipe == "transformer-classifier" else None
        await asyncio.to_thread(self._write, version, onnx_graph, target)
        return version, target

    async def _served_graph(self, version: ModelVersion) -> Path:
        path = (await self.inference.acquire(version)).onnx_path
        if path is None:
            raise InvalidRequest(
                f"{version.model}:{version.version} is not served with ONNX Runtime ({version.runtime}), so it has "
                "no graph to export",
                param="format",
                code="archive_unavailable",
            )
        return Path(path)

    def _write(self, version: ModelVersion, onnx_graph: Path | None, target: Path) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir, prefix=".archive-") as scratch:
            if onnx_graph is not None:
                contents = self._transformer(version, onnx_graph, Path(scratch))
            else:
                contents = self._bow_mlp(version)
            contents.texts["labels.json"] = json.dumps(list(version.labels), ensure_ascii=False, indent=1)
            script = resources.files("openmaas.services.export_scripts").joinpath(SCRIPTS[version.recipe])
            contents.texts["predict.py"] = script.read_text(encoding="utf-8")
            contents.texts["requirements.txt"] = "\n".join(REQUIREMENTS[version.recipe]) + "\n"
            contents.texts["README.md"] = model_card(
                version, sorted([*contents.files, *contents.data, *contents.texts])
            )
            staged = Path(scratch) / "archive.zip"
            _zip(contents, f"{version.model}-{version.version}", version.created_at, staged)
            os.replace(staged, target)  # whole or not at all: a concurrent download reads one or the other

    def _bow_mlp(self, version: ModelVersion) -> Contents:
        featurizer = json.loads(self.artifacts.read_bytes(version.files["featurizer.json"]))
        preprocessing = {
            "featurizer": "bag-of-words counts of the terms of `vocabulary` (others are ignored)",
            "vocabulary": "vocabulary.json",
            "lowercase": featurizer["lowercase"],
            "token_pattern": TOKEN.pattern,
            "cjk_pattern": CJK_RUN.pattern,
            "cjk": "a token matching cjk_pattern gives its characters and its character bigrams",
            "output": "one sigmoid unit (probability of the second label)"
            if len(version.labels) == 2
            else "softmax over the labels",
        }
        return Contents(
            data={"model.safetensors": self.artifacts.read_bytes(version.files["model.safetensors"])},
            texts={
                "vocabulary.json": json.dumps(featurizer["vocabulary"], ensure_ascii=False),
                "preprocessing.json": json.dumps(preprocessing, ensure_ascii=False, indent=1),
            },
        )

    def _transformer(self, version: ModelVersion, graph: Path, scratch: Path) -> Contents:
        from openmaas.recipes.encoders import single_file  # here: it imports torch, which an idle server has not

        config = json.loads(self.artifacts.read_bytes(version.files["config.json"]))
        from tokenizers import Tokenizer

        tokenizer_json = self.artifacts.read_bytes(version.files["encoder/tokenizer.json"])
        # The padding the server's TextTokenizer sets up: the tokenizer's own pad token, else id 0.
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        pad_id = int(tokenizer.padding["pad_id"]) if tokenizer.padding else 0
        pad_token = tokenizer.id_to_token(pad_id) or "[PAD]"
        preprocessing = {
            "tokenizer": "tokenizer.json",
            "max_length": int(config["max_length"]),
            "truncation": "longer texts keep their first max_length tokens",
            "pad_id": pad_id,
            "pad_token": pad_token,
            "padding": "right, to the longest text of a batch, with attention_mask 0",
            "inputs": "input_ids, attention_mask (and token_type_ids when the graph takes them), int64",
            "output": "probabilities: softmax of the head over mean-pooled, L2-normalised token embeddings",
            "runtime": version.runtime,
        }
        return Contents(
            files={"model.onnx": single_file(graph, scratch / "model.onnx")},
            data={"tokenizer.json": tokenizer_json},
            texts={"preprocessing.json": json.dumps(preprocessing, ensure_ascii=False, indent=1)},
        )


def _identity(version: ModelVersion) -> str:
    """The same weights may be two versions (one seed, one dataset): the card names the version, so it is keyed."""
    key = [version.tenant_id, version.model, version.version, version.artifact_sha256, version.runtime]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _zip(contents: Contents, folder: str, created_at: float, path: Path) -> None:
    stamp = time.gmtime(max(created_at, 315532800))[:6]  # zip dates start in 1980
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in sorted(contents.files.items()):
            # Weights are float bytes that deflate barely shrinks: stored as they are.
            info = zipfile.ZipInfo(f"{folder}/{name}", stamp)
            info.compress_type = zipfile.ZIP_STORED
            with source.open("rb") as reader, archive.open(info, "w", force_zip64=True) as writer:
                while chunk := reader.read(1 << 20):
                    writer.write(chunk)
        small = {**contents.data, **{name: text.encode("utf-8") for name, text in contents.texts.items()}}
        for name, data in sorted(small.items()):
            info = zipfile.ZipInfo(f"{folder}/{name}", stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


def model_card(version: ModelVersion, files: list[str]) -> str:
    """README.md of the archive: what the model is, how it was trained, and how to run it."""
    metrics = {k: v for k, v in version.metrics.items() if k != "history" and not isinstance(v, dict | list)}
    hyperparameters = {k: v for k, v in version.hyperparameters.items() if v is not None}
    lines = [
        f"# {version.model}, version {version.version}",
        "",
        f"A text classifier trained with OpenMaaS (recipe `{version.recipe}`), exported with everything needed to "
        "predict without OpenMaaS.",
        "",
        f"- Labels: {', '.join(f'`{label}`' for label in version.labels)}",
        f"- Created: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(version.created_at))}",
        f"- Trained on dataset `{version.dataset_id}` (sha256 `{version.dataset_sha256}`) by job `{version.job_id}`",
        f"- Parameters: {version.parameter_count:,}; served with `{version.runtime}`",
        f"- Weights' manifest sha256 in the registry: `{version.artifact_sha256}`",
    ]
    base = FOUNDATION_MODELS.get(str(version.hyperparameters.get("base_model")))
    if version.recipe == "transformer-classifier" and base is not None:
        lines.append(f"- Base encoder: {base.description}; its license applies to the encoder's weights")
    lines += ["", "## Run it", "", "```bash", "pip install -r requirements.txt"]
    lines += ['python predict.py "a text to classify" "another one"   # or one text a line on stdin', "```", ""]
    lines += [
        'It prints one JSON object a text, `{"label", "score", "scores"}`, as the server\'s '
        "`POST /v1/models/{ref}/predict` does. From Python: `from predict import Classifier; "
        "Classifier().predict([...])`.",
    ]
    if version.runtime == "onnx-int8":
        lines += [
            "",
            "The graph's linear layers are int8 and quantize their inputs per forward pass: a text's scores move "
            "slightly (up to about 0.1) with the texts batched with it, here as on the server.",
        ]
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {value} |" for key, value in metrics.items()]
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(hyperparameters, indent=1), "```"]
    lines += ["", "## Files", ""] + [f"- `{name}`" for name in files]
    return "\n".join(lines) + "\n"
