"""Progress a user can watch: `step` events come every few seconds of wall time, not only every N steps, and a
language model's rate is named for what it counts, tokens."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Server
from tests.e2e.test_generative_training import GPT, SENTENCES, upload_text
from tests.e2e.test_job_lifecycle import small_dataset

EVERY_S = 0.2


def test_step_events_come_every_few_seconds_even_when_log_every_steps_never_fires(
    start_server: type[Server], tmp_path: Path
) -> None:
    server = start_server(OPENMAAS_PROGRESS_EVERY_S=str(EVERY_S))
    with server.client() as client:
        # One step per row and no step-count events: only the clock can send progress. Enough steps that even a
        # fast, idle machine (about 1,400 steps/s measured) trains for several seconds, several clock periods.
        dataset = small_dataset(client, tmp_path, "slow", rows=3000)
        job = client.create_job(dataset, "slow", hyperparameters={"epochs": 3, "batch_size": 1, "log_every_steps": 0})
        assert client.wait_for_job(job["id"], timeout=300)["status"] == "succeeded"
        events = client.job_events(job["id"])
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) >= 2, [e["type"] for e in events]
    gaps = [later["created_at"] - earlier["created_at"] for earlier, later in zip(steps, steps[1:], strict=False)]
    assert min(gaps) >= EVERY_S - 0.05, gaps
    assert all(s["data"]["samples_per_second"] > 0 and "tokens_per_second" not in s["data"] for s in steps)


def test_a_language_models_rate_is_tokens_per_second(server: Server, tmp_path: Path) -> None:
    with server.client() as client:
        dataset = upload_text(client, tmp_path / "notes.txt", SENTENCES * 4)
        hyperparameters = {**GPT, "epochs": 2, "log_every_steps": 1}
        job = client.create_job(dataset, "rate-gpt", recipe="causal-lm", hyperparameters=hyperparameters)
        final = client.wait_for_job(job["id"], timeout=300)
        events = client.job_events(job["id"])
    assert final["status"] == "succeeded", final
    assert final["metrics"]["tokens_per_second"] > 0 and "samples_per_second" not in final["metrics"]
    progress = [e["data"] for e in events if e["type"] in ("step", "epoch")]
    assert progress and all("tokens_per_second" in d and "samples_per_second" not in d for d in progress)
