"""Recipe `lora`: fine-tunes a causal LM from the registry with a LoRA adapter (peft); only the adapter trains.

The base is the exact version the job service pinned (`pinned_base`), laid out as a directory by the worker.
Weights load from safetensors only and `trust_remote_code` is never set, so no code or pickle from a model
directory runs. Export, unmerged (default): the base's files unchanged at the directory's root (the content-
addressed artifact store keeps one copy of them) plus `adapter/adapter_config.json` and
`adapter/adapter_model.safetensors`. Merged (`merge: true`): a standalone Hugging Face directory with the
adapter folded into the weights, saved in the base's dtype.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from openmaas.domain.jobs import JobFailure
from openmaas.recipes.base import CommonHyperparameters, Document, ExportInfo, PinnedBase
from openmaas.recipes.causal_training import CausalLmTraining

ADAPTER_DIR = "adapter"
# What save_pretrained writes for a merged model; every other file of the base (tokenizer, chat template) is copied.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


class Hyperparameters(CommonHyperparameters):
    base_model: str = Field(
        "smollm2-135m-instruct",
        description="The text-generation model to fine-tune: 'name', 'name:VERSION' or 'name:ALIAS'.",
    )
    r: int = Field(8, ge=1, le=1024, description="Rank of the adapter's matrices.")
    alpha: int = Field(16, ge=1, le=65_536, description="Scale of the adapter's update (alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Names of the layers to adapt; default: peft's choice for the architecture, else every linear "
        "layer but the output head.",
    )
    merge: bool = Field(False, description="Export a standalone model with the adapter merged into its weights.")
    context_length: int = Field(256, ge=8, le=32_768, description="Most tokens of a training window.")
    batch_size: int = Field(4, ge=1, le=65_536)
    epochs: int = Field(3, ge=1, le=100_000)
    learning_rate: float = Field(2e-4, gt=0, le=10)
    pinned_base: PinnedBase | None = Field(
        None, description="Set by the server when the job is created: the exact version base_model resolved to."
    )


def load_base(directory: Path, device: str) -> tuple[Any, Any]:
    """The base model (float32, for training on any device) and its tokenizer, from safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if any(directory.glob("*.bin")) and not any(directory.glob("*.safetensors")):
        raise JobFailure("the base model has only pickled weights (.bin); they are never loaded")
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise JobFailure("the base model's tokenizer has no EOS token: a document's end cannot be marked")
    model: Any = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, local_files_only=True, use_safetensors=True, trust_remote_code=False
    )
    return model.to(device), tokenizer


def default_target_modules(model: Any) -> str | None:
    """None lets peft pick for an architecture it knows; otherwise every linear layer but the output head."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return None if model.config.model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING else "all-linear"


class LoraPlan(CausalLmTraining):
    def __init__(
        self,
        train: Sequence[Document],
        validation: Sequence[Document],
        hp: Hyperparameters,
        device: str,
        base: Path,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        self.hp = hp
        self.device = device
        self.batch_size = hp.batch_size
        self.base = base
        model, self.tokenizer = load_base(base, device)
        self.base_dtype = _config_dtype(base)
        self.encode(train, validation, hp.context_length)
        config = LoraConfig(
            r=hp.r,
            lora_alpha=hp.alpha,
            lora_dropout=hp.dropout,
            target_modules=hp.target_modules or default_target_modules(model),
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, config)
        self.trainable = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(self.trainable.values(), lr=hp.learning_rate)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return dict(self.trainable)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.trainable):
            raise JobFailure("the checkpoint's adapter does not fit this base model and configuration")
        with torch.no_grad():
            for name, tensor in state.items():
                self.trainable[name].copy_(tensor)

    def export(self, directory: Path) -> ExportInfo:
        pin = self.hp.pinned_base
        if self.hp.merge:
            merged = self.model.merge_and_unload()  # the plan is finished: its model may change in place
            merged.to(dtype=self.base_dtype).save_pretrained(directory)
            _copy_tree(self.base, directory, skip=lambda p: p.suffix == ".safetensors" or p.name in MODEL_FILES)
            count = sum(p.numel() for p in merged.parameters())
        else:
            _copy_tree(self.base, directory, skip=lambda p: False)
            adapter = directory / ADAPTER_DIR
            # peft records where the base came from; the scratch directory it was loaded from means nothing later.
            lineage = f"{pin.model}:{pin.version}" if pin else None
            self.model.peft_config["default"].base_model_name_or_path = lineage
            self.model.save_pretrained(adapter)
            (adapter / "README.md").unlink(missing_ok=True)  # peft's model-card template, not ours to publish
            count = sum(p.numel() for p in self.model.parameters())
        return ExportInfo(task="text-generation", runtime="torch", parameter_count=count)


def _config_dtype(directory: Path) -> torch.dtype:
    config = json.loads((directory / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _copy_tree(source: Path, target: Path, skip: Any) -> None:
    # Copies, not hard links: the source files are links to the artifact store's blobs, and a link in the
    # export would let a writer there change a blob in place.
    for path in sorted(source.rglob("*")):
        if path.is_file() and not skip(path):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


class LoraRecipe:
    name = "lora"
    dataset_kind: Literal["text"] = "text"
    hyperparameters = Hyperparameters
    base_task: str | None = "text-generation"

    def plan(
        self,
        train: Sequence[Document],
        validation: Sequence[Document],
        hp: Any,
        device: str,
        base: Path | None,
    ) -> LoraPlan:
        if base is None:
            raise ValueError("the lora recipe needs its base model's directory")
        return LoraPlan(train, validation, hp, device, base)

    def load(self, directory: Path, device: str, runtime: str = "torch") -> Any:
        from openmaas.recipes.generative import load_causal_lm

        return load_causal_lm(directory, device)


RECIPE = LoraRecipe()
