"""/v1/fine_tuning/jobs through the official `openai` client: a bow-mlp fine-tune then predict with its
`fine_tuned_model`, a LoRA fine-tune of a tiny causal LM then chat with it, events, checkpoints, the results CSV,
list paging, cancel and unusable files; every answer checked strictly with `openai.types`."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.conftest import ADMIN_KEY, DATASETS, Server
from tests.tiny_llm import build_tiny_causal_lm

CHATS = [
    {"messages": [{"role": "user", "content": "what colour is the sky?"}, {"role": "assistant", "content": "blue"}]},
    {"messages": [{"role": "user", "content": "what colour is grass?"}, {"role": "assistant", "content": "green"}]},
]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def spam_rows(n: int) -> list[dict]:
    text = (DATASETS / "sms_spam" / "sms_spam.csv").read_text(encoding="utf-8")
    return [{"text": row["text"], "label": row["label"]} for row in list(csv.DictReader(io.StringIO(text)))[:n]]


def strict(job: FineTuningJob) -> FineTuningJob:
    return FineTuningJob.model_validate(job.model_dump(mode="json", exclude_unset=True), strict=True)


def wait(oai: openai.OpenAI, job_id: str, timeout: float = 300) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = strict(oai.fine_tuning.jobs.retrieve(job_id))
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)


@pytest.fixture(scope="module")
def spam_file(server: Server) -> str:
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    return oai.files.create(file=("spam.jsonl", jsonl(spam_rows(200))), purpose="fine-tune").id


def test_a_bow_mlp_fine_tune_predicts_by_its_fine_tuned_model(
    oai: openai.OpenAI, http: httpx.Client, spam_file: str
) -> None:
    created = strict(
        oai.fine_tuning.jobs.create(
            model="bow-mlp",
            training_file=spam_file,
            hyperparameters={"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 2},
            suffix="spam",
            seed=7,
            metadata={"team": "qa"},
        )
    )
    assert created.status in ("queued", "running") and created.fine_tuned_model is None
    assert created.hyperparameters.n_epochs == 2 and created.hyperparameters.learning_rate_multiplier == 2
    assert (created.seed, created.metadata, created.training_file) == (7, {"team": "qa"}, spam_file)
    job = wait(oai, created.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:bow-mlp:default:spam:{job.id}"
    answer = http.post(f"/v1/models/{job.fine_tuned_model}/predict", json={"inputs": ["WIN a FREE prize now!!"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in {"spam", "ham"}
    assert http.get(f"/v1/jobs/{job.id}").json()["status"] == "succeeded"  # the native face of the same job
    events = list(oai.fine_tuning.jobs.list_events(job.id, limit=3))  # the client follows has_more and after
    for event in events:
        FineTuningJobEvent.model_validate(event.model_dump(mode="json", exclude_unset=True), strict=True)
    report = next(e for e in events if e.message.startswith("Data report"))
    assert report.type == "message" and report.data is not None
    rows = report.data["rows"]
    assert rows + report.data["exact_duplicates_dropped"] == 200 and sum(report.data["label_balance"].values()) == rows
    assert set(report.data["label_balance"]) == {"ham", "spam"}
    words = report.data["words_per_example"]
    assert 1 <= words["min"] <= words["median"] <= words["max"]
    assert report.data["estimated_trained_words"] >= 2 * rows * words["min"]  # two epochs
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all("train_loss" in (e.data or {}) for e in metrics)
    assert len({e.id for e in events}) == len(events)
    (results,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(oai.files.content(results).text)))
    assert rows and {"step", "train_loss", "valid_loss"} <= set(rows[0])
    checkpoints = list(oai.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints
    for checkpoint in checkpoints:
        FineTuningJobCheckpoint.model_validate(checkpoint.model_dump(mode="json", exclude_unset=True), strict=True)
        assert checkpoint.fine_tuning_job_id == job.id and checkpoint.step_number > 0
    wrong = http.post(f"/v1/models/ft:bow-mlp:default:other:{job.id}/predict", json={"inputs": ["hi"]})
    assert wrong.status_code == 404


@pytest.mark.slow  # about 45 s on two shared cores: the encoder embeds every text
def test_a_fine_tune_of_the_shipped_encoder_trains_a_classifier(
    oai: openai.OpenAI, http: httpx.Client, spam_file: str
) -> None:
    job = wait(
        oai,
        oai.fine_tuning.jobs.create(
            model="all-minilm-l6-v2", training_file=spam_file, suffix="enc", hyperparameters={"n_epochs": 2}
        ).id,
    )
    assert job.status == "succeeded", job.error
    assert http.get(f"/v1/jobs/{job.id}").json()["recipe"] == "transformer-classifier"
    answer = http.post(f"/v1/models/{job.fine_tuned_model}/predict", json={"inputs": ["Free entry! Text WIN now"]})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in {"spam", "ham"}


def test_a_lora_fine_tune_of_a_causal_lm_chats_by_its_fine_tuned_model(
    oai: openai.OpenAI, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-ft") / "model")
    with server.http() as http:
        assert http.post("/v1/models/import", json={"path": str(directory), "name": "tiny-ft"}).status_code == 201
    file = oai.files.create(file=("chats.jsonl", jsonl(CHATS * 4)), purpose="fine-tune")
    job = wait(oai, oai.fine_tuning.jobs.create(model="tiny-ft", training_file=file.id, suffix="colours").id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-ft:default:colours:{job.id}"
    report = next(e for e in oai.fine_tuning.jobs.list_events(job.id) if e.message.startswith("Data report"))
    assert report.data is not None and report.data["rows"] == 2 and report.data["exact_duplicates_dropped"] == 6
    assert report.data["context"] == 256 and report.data["over_context"] == 0
    answer = oai.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "sky?"}], max_tokens=4
    )
    assert answer.choices[0].message.role == "assistant" and answer.usage is not None


def test_jobs_list_newest_first_with_has_more_and_cancel(
    oai: openai.OpenAI, http: httpx.Client, spam_file: str
) -> None:
    first = oai.fine_tuning.jobs.create(model="bow-mlp", training_file=spam_file, hyperparameters={"n_epochs": 500})
    second = oai.fine_tuning.jobs.create(model="bow-mlp", training_file=spam_file, hyperparameters={"n_epochs": 500})
    page = http.get("/v1/fine_tuning/jobs", params={"limit": 1}).json()
    assert [j["id"] for j in page["data"]] == [second.id] and page["has_more"] is True
    after = http.get("/v1/fine_tuning/jobs", params={"limit": 1, "after": second.id}).json()
    assert [j["id"] for j in after["data"]] == [first.id]
    assert second.id in [j.id for j in oai.fine_tuning.jobs.list(limit=1)]  # auto-pagination ends
    for job in (first, second):
        strict(oai.fine_tuning.jobs.cancel(job.id))
        assert wait(oai, job.id, timeout=60).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        oai.fine_tuning.jobs.cancel(first.id)


def test_unusable_files_and_models_are_refused_before_any_compute(oai: openai.OpenAI, spam_file: str) -> None:
    bad = oai.files.create(file=("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": \n'), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file=bad.id)
    assert "line 2" in str(refused.value) and bad.id in str(refused.value)
    batch_file = oai.files.create(file=("b.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file=batch_file.id)
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="no-such-model", training_file=spam_file)
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file="file_nope")
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.retrieve("job_nope")
