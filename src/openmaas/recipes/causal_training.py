"""Causal language-model training shared by `causal-lm` and `lora`: documents → token windows → batches → loss.

Each document is tokenized on its own (a chat rendered with the tokenizer's chat template first) and ends with
the EOS token, so the model learns where a document stops. A document longer than the context is cut into
windows overlapping by one token, so that every token but a document's first is predicted exactly once and no
window sees another document. Windows are padded to the longest in their batch; padding is never a target.
The loss is the mean cross-entropy over target tokens (every token of a chat, not only the assistant's), and
the loop's `count` is the number of target tokens, so its accuracy is next-token accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional

from openmaas.domain.jobs import JobFailure
from openmaas.recipes.base import Document, StepResult
from openmaas.recipes.chat import render_chat

IGNORE = -100  # the label of a padding position


def tokenize_document(tokenizer: Any, document: Document) -> list[int]:
    if isinstance(document, str):
        ids = list(tokenizer(document)["input_ids"])
    else:
        # The template writes the chat's special tokens itself: adding them again would double them.
        text = render_chat(tokenizer, document, add_generation_prompt=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids.append(tokenizer.eos_token_id)
    return ids


def windows(tokenizer: Any, documents: Sequence[Document], context_length: int) -> list[list[int]]:
    out: list[list[int]] = []
    stride = context_length - 1
    for document in documents:
        ids = tokenize_document(tokenizer, document)
        for start in range(0, max(len(ids) - 1, 1), stride):
            window = ids[start : start + context_length]
            if len(window) >= 2:  # one token alone has nothing to predict
                out.append(window)
    return out


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), right-padded: causal attention never looks at what comes after."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        values = torch.tensor(row, dtype=torch.long)
        input_ids[i, : len(row)] = values
        labels[i, : len(row)] = values
        mask[i, : len(row)] = 1
    return input_ids, mask, labels


class CausalLmTraining:
    """The part of a TrainingPlan both recipes share; a subclass sets `model`, `optimizer` and `tokenizer`."""

    model: Any
    optimizer: Any
    tokenizer: Any
    batch_size: int
    device: str
    train: list[list[int]]
    validation: list[list[int]]

    def encode(self, train: Sequence[Document], validation: Sequence[Document], context_length: int) -> None:
        self.train = windows(self.tokenizer, train, context_length)
        self.validation = windows(self.tokenizer, validation, context_length)
        if not self.train:
            raise JobFailure("the training documents hold no tokens to learn from")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    @property
    def train_tokens(self) -> int:
        return sum(len(window) - 1 for window in self.train)

    def train_batches(self, generator: torch.Generator, skip: int = 0) -> Iterator[Any]:
        order = torch.randperm(len(self.train), generator=generator).tolist()
        for start in range(skip * self.batch_size, len(order), self.batch_size):
            yield pad_batch([self.train[i] for i in order[start : start + self.batch_size]], self.pad_id)

    def eval_batches(self) -> Iterator[Any]:
        for start in range(0, len(self.validation), self.batch_size):
            yield pad_batch(self.validation[start : start + self.batch_size], self.pad_id)

    def step(self, batch: Any) -> StepResult:
        input_ids, mask, labels = batch
        targets = labels[:, 1:]
        keep = targets != IGNORE
        count = int(keep.sum())  # on the CPU, before the batch moves: no device sync
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
        logits = logits[:, :-1][keep.to(self.device)].float()
        wanted = targets[keep].to(self.device)
        loss = functional.cross_entropy(logits, wanted)
        return StepResult(loss=loss, correct=(logits.argmax(dim=-1) == wanted).sum(), count=count)
