"""Recipe `causal-lm`: a small GPT-2-style model, with its own byte-level BPE tokenizer, trained from scratch.

The tokenizer is trained on the training split (plain texts and rendered chats) with the `tokenizers`
library; its training is deterministic, so a resumed job rebuilds the same vocabulary (and checks it).
The export is a plain Hugging Face causal-LM directory: `config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json` (EOS token, and the fallback chat template of recipes/chat.py), `generation_config.json`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from openmaas.domain.jobs import JobFailure
from openmaas.recipes.base import CommonHyperparameters, Document, ExportInfo
from openmaas.recipes.causal_training import CausalLmTraining
from openmaas.recipes.chat import FALLBACK_CHAT_TEMPLATE, render_chat

EOS = "<|endoftext|>"
TOKENIZER_KEY = "openmaas.tokenizer_sha256"  # kept with the weights in a checkpoint: see load_trainable_state


class Hyperparameters(CommonHyperparameters):
    vocab_size: int = Field(
        1024, ge=257, le=65_536, description="Most tokens in the BPE vocabulary (256 bytes + EOS + merges)."
    )
    n_layer: int = Field(2, ge=1, le=48, description="Transformer blocks.")
    n_head: int = Field(2, ge=1, le=64, description="Attention heads; n_embd must be a multiple of it.")
    n_embd: int = Field(64, ge=8, le=8192, description="Width of the model.")
    context_length: int = Field(128, ge=8, le=8192, description="Most tokens the model sees at once.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on embeddings, attention and residuals.")
    batch_size: int = Field(16, ge=1, le=65_536)
    learning_rate: float = Field(3e-3, gt=0, le=10)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Hyperparameters:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        return self


def _wrap(tokenizer: Any, context_length: int) -> Any:
    """A `tokenizers.Tokenizer` as a transformers tokenizer: what renders chats, encodes, and is saved."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=EOS,
        chat_template=FALLBACK_CHAT_TEMPLATE,
        model_max_length=context_length,
    )


def train_tokenizer(documents: Sequence[Document], vocab_size: int, context_length: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Chats are rendered with the template before the vocabulary is learned, so its role markers become tokens.
    # Rendering needs only the template and the EOS token's text, which the untrained tokenizer already has.
    renderer = _wrap(tokenizer.from_str(tokenizer.to_str()), context_length)
    texts = (d if isinstance(d, str) else render_chat(renderer, d, add_generation_prompt=False) for d in documents)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer, context_length)


def _tokenizer_digest(tokenizer: Any) -> torch.Tensor:
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).digest()
    return torch.tensor(list(digest), dtype=torch.uint8)


class CausalLmPlan(CausalLmTraining):
    def __init__(
        self, train: Sequence[Document], validation: Sequence[Document], hp: Hyperparameters, device: str
    ) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        self.hp = hp
        self.device = device
        self.batch_size = hp.batch_size
        self.tokenizer = train_tokenizer(train, hp.vocab_size, hp.context_length)
        self.encode(train, validation, hp.context_length)
        eos_id = self.tokenizer.eos_token_id
        config = GPT2Config(
            vocab_size=len(self.tokenizer),
            n_positions=hp.context_length,
            n_embd=hp.n_embd,
            n_layer=hp.n_layer,
            n_head=hp.n_head,
            resid_pdrop=hp.dropout,
            embd_pdrop=hp.dropout,
            attn_pdrop=hp.dropout,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        model: Any = GPT2LMHeadModel(config)
        self.model = model.to(device)
        self.model.generation_config.pad_token_id = eos_id
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=hp.learning_rate)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        # named_parameters lists the output layer's weight once: it is the input embedding's (tied).
        state = dict(self.model.named_parameters())
        state[TOKENIZER_KEY] = _tokenizer_digest(self.tokenizer)
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        saved = state.pop(TOKENIZER_KEY, None)
        if saved is not None and not torch.equal(saved, _tokenizer_digest(self.tokenizer)):
            raise JobFailure("the tokenizer trained again differs from the checkpoint's: cannot resume")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        trained = {name for name, _ in self.model.named_parameters()}
        if unexpected or trained & set(missing):
            raise RuntimeError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")

    def export(self, directory: Path) -> ExportInfo:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        count = sum(p.numel() for p in self.model.parameters())
        return ExportInfo(task="text-generation", runtime="torch", parameter_count=count)


class CausalLmRecipe:
    name = "causal-lm"
    dataset_kind: Literal["text"] = "text"
    hyperparameters = Hyperparameters
    base_task: str | None = None

    def plan(
        self,
        train: Sequence[Document],
        validation: Sequence[Document],
        hp: Any,
        device: str,
        base: Path | None,
    ) -> CausalLmPlan:
        return CausalLmPlan(train, validation, hp, device)

    def load(self, directory: Path, device: str, runtime: str = "torch") -> Any:
        from openmaas.recipes.generative import load_causal_lm

        return load_causal_lm(directory, device)


RECIPE = CausalLmRecipe()
