"""The language-model recipes resume from a mid-epoch checkpoint to the same weights as a run that never stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from openmaas.recipes import get_recipe
from openmaas.recipes.base import Document
from openmaas.storage.artifacts.local import LocalArtifactStore
from openmaas.training import loop
from openmaas.training.checkpoints import CheckpointStore, LoopState

DOCUMENTS: list[Document] = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with a single step",
    [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi, how can I help?"}],
    "all that glitters is not gold",
    "actions speak louder than words",
]
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16, "context_length": 16, "vocab_size": 300}


def run(recipe: str, hp: Any, base: Path | None, checkpoints: CheckpointStore | None, resume_at: int | None) -> Any:
    """Train from scratch, or from the checkpoint at step `resume_at`; returns the plan, trained."""
    impl = get_recipe(recipe)
    assert impl.dataset_kind == "text"
    loop.seed_everything(hp.seed)
    plan = impl.plan(DOCUMENTS, DOCUMENTS[:2], hp, "cpu", base)
    resume = None
    if resume_at is not None:
        assert checkpoints is not None
        resume = checkpoints.load("job", f"step-{resume_at:09d}")

    def save(state: LoopState, epoch_generator: torch.Tensor) -> None:
        if checkpoints is not None and resume_at is None:
            checkpoints.save("job", state, plan.trainable_state(), plan.optimizer.state_dict(), epoch_generator)

    loop.run(plan, hp, emit=lambda *_: None, should_stop=lambda: False, save_checkpoint=save, resume=resume)
    return plan


def assert_same_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    hp = get_recipe("causal-lm").hyperparameters(epochs=2, batch_size=2, log_every_steps=0, **TINY)
    directory = tmp_path_factory.mktemp("base")
    run("causal-lm", hp, None, None, None).export(directory)
    return directory


@pytest.mark.parametrize("recipe", ["causal-lm", "lora"])
def test_a_resumed_run_ends_with_the_weights_of_a_run_that_never_stopped(
    recipe: str, tiny_base: Path, tmp_path: Path
) -> None:
    options: dict[str, Any] = {"epochs": 2, "batch_size": 2, "checkpoint_every_steps": 1, "log_every_steps": 0}
    if recipe == "causal-lm":
        options.update(TINY, dropout=0.1)
    else:
        options.update(context_length=16, r=2, dropout=0.1, learning_rate=1e-2)  # dropout: the RNG must resume too
    hp = get_recipe(recipe).hyperparameters(**options)
    base = tiny_base if recipe == "lora" else None
    checkpoints = CheckpointStore(LocalArtifactStore(tmp_path), keep=100)
    straight = run(recipe, hp, base, checkpoints, None).trainable_state()
    # Step 4 is mid-epoch (the documents make 13 windows, 7 batches), so the resumed run skips the batches done.
    resumed = run(recipe, hp, base, checkpoints, 4).trainable_state()
    assert_same_state(straight, resumed)
    if recipe == "lora":
        assert all("lora_" in name for name in straight)  # only the adapter trains
