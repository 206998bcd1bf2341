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
    tokens = report.data["tokens_per_example"]
    assert 1 <= tokens["min"] <= tokens["median"] <= tokens["max"] and report.data["tokenizer"] == "bow-mlp terms"
    assert report.data["estimated_trained_tokens"] == 2 * report.data["tokens_per_epoch"]  # two epochs
    assert job.trained_tokens is not None  # both epochs ran, on the rows the split kept for training
    assert abs(job.trained_tokens - report.data["estimated_trained_tokens"]) <= 0.05 * job.trained_tokens
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all("train_loss" in (e.data or {}) for e in metrics)
    assert len({e.id for e in events}) == len(events)
    (results,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(oai.files.content(results).text)))
    assert rows and {"step", "train_loss", "valid_loss"} <= set(rows[0])
    checkpoints = list(oai.fine_tuning.jobs.checkpoints.list(job.id))
    assert len(checkpoints) == 2  # one per epoch
    for checkpoint in checkpoints:
        FineTuningJobCheckpoint.model_validate(checkpoint.model_dump(mode="json", exclude_unset=True), strict=True)
        assert checkpoint.fine_tuning_job_id == job.id and checkpoint.step_number > 0
        # Each checkpoint is a model predict accepts: the earlier one its own version, the last the final model.
        assert checkpoint.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        answer = http.post(f"/v1/models/{checkpoint.fine_tuned_model_checkpoint}/predict", json={"inputs": ["hi"]})
        assert answer.status_code == 200, answer.text
    early, last = sorted(checkpoints, key=lambda c: c.step_number)
    versions = [
        http.post(f"/v1/models/{c.fine_tuned_model_checkpoint}/predict", json={"inputs": ["hi"]}).json()["version"]
        for c in (early, last)
    ]
    final = http.post(f"/v1/models/{job.fine_tuned_model}/predict", json={"inputs": ["hi"]}).json()["version"]
    assert versions[0] != versions[1] == final
    missing = http.post(f"/v1/models/{job.fine_tuned_model}:ckpt-step-999999/predict", json={"inputs": ["hi"]})
    assert missing.status_code == 404
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
    assert report.data["tokenizer"] == "tiny-ft tokenizer" and report.data["tokens_per_example"]["min"] > 5
    for checkpoint in oai.fine_tuning.jobs.checkpoints.list(job.id):  # a checkpoint chats too
        answer = oai.chat.completions.create(
            model=checkpoint.fine_tuned_model_checkpoint, messages=[{"role": "user", "content": "sky?"}], max_tokens=2
        )
        assert answer.choices[0].message.role == "assistant"
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


def test_unusable_files_fail_the_job_while_validating_and_bad_requests_are_refused(
    oai: openai.OpenAI, http: httpx.Client, spam_file: str
) -> None:
    jobs_before = len(http.get("/v1/jobs", params={"limit": 1000}).json()["data"])
    bad = oai.files.create(file=("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": \n'), purpose="fine-tune")
    failed = strict(oai.fine_tuning.jobs.create(model="bow-mlp", training_file=bad.id))
    assert failed.status == "failed" and failed.error is not None and failed.finished_at is not None
    assert (failed.error.param, failed.error.code) == ("training_file", "malformed_file")
    assert "line 2" in failed.error.message and bad.id in failed.error.message
    assert strict(oai.fine_tuning.jobs.retrieve(failed.id)).status == "failed"
    (event,) = oai.fine_tuning.jobs.list_events(failed.id)
    FineTuningJobEvent.model_validate(event.model_dump(mode="json", exclude_unset=True), strict=True)
    assert event.level == "error" and "line 2" in event.message
    assert list(oai.fine_tuning.jobs.checkpoints.list(failed.id)) == []
    with pytest.raises(openai.ConflictError):
        oai.fine_tuning.jobs.cancel(failed.id)
    one_label = oai.files.create(
        file=("one.jsonl", jsonl([{"text": f"t {i}", "label": "a"} for i in range(5)])), purpose="fine-tune"
    )
    single = strict(oai.fine_tuning.jobs.create(model="bow-mlp", training_file=one_label.id))
    assert single.status == "failed" and single.error and single.error.code == "too_few_classes"
    bad_validation = strict(
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file=spam_file, validation_file=bad.id)
    )
    assert bad_validation.status == "failed" and bad_validation.error
    assert bad_validation.error.param == "validation_file" and "line 2" in bad_validation.error.message
    # No training job was made for any of them: no compute was spent.
    assert len(http.get("/v1/jobs", params={"limit": 1000}).json()["data"]) == jobs_before
    batch_file = oai.files.create(file=("b.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file=batch_file.id)
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="no-such-model", training_file=spam_file)
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.create(model="bow-mlp", training_file="file_nope")
    with pytest.raises(openai.NotFoundError):
        oai.fine_tuning.jobs.retrieve("job_nope")


def test_a_validation_file_is_the_validation_split_and_the_second_job_gets_an_estimate(
    oai: openai.OpenAI, http: httpx.Client
) -> None:
    rows = spam_rows(260)
    train = oai.files.create(file=("train.jsonl", jsonl(rows[:200])), purpose="fine-tune").id
    valid = oai.files.create(file=("valid.jsonl", jsonl(rows[200:])), purpose="fine-tune").id
    first = wait(
        oai,
        oai.fine_tuning.jobs.create(
            model="bow-mlp", training_file=train, validation_file=valid, hyperparameters={"n_epochs": 2}
        ).id,
    )
    assert first.status == "succeeded" and first.validation_file == valid
    native = http.get(f"/v1/jobs/{first.id}").json()
    report = next(e for e in oai.fine_tuning.jobs.list_events(first.id) if e.message.startswith("Data report"))
    assert report.data is not None and report.data["validation_rows"] == native["metrics"]["validation_rows"]
    assert native["metrics"]["train_rows"] == report.data["rows"]  # every training row trains
    metrics = [e.data for e in oai.fine_tuning.jobs.list_events(first.id) if e.type == "metrics" and e.data]
    assert any("valid_loss" in m for m in metrics)
    # This recipe now has a measured speed: the next job's report and `estimated_finish` come from it.
    second = strict(oai.fine_tuning.jobs.create(model="bow-mlp", training_file=train, hyperparameters={"n_epochs": 3}))
    assert second.status in ("queued", "running", "succeeded")
    report = next(e for e in oai.fine_tuning.jobs.list_events(second.id) if e.message.startswith("Data report"))
    assert report.data is not None and report.data["speed"]["tokens_per_second"] > 0
    assert report.data["estimated_seconds"] > 0 and "tokens/s" in report.message
    if second.status != "succeeded":
        assert second.estimated_finish is not None and second.estimated_finish >= second.created_at
    done = wait(oai, second.id)
    assert done.estimated_finish is None and done.trained_tokens is not None
    # A tenth of the file is held out (no validation file this time): the estimate is within a few percent.
    assert abs(done.trained_tokens - 3 * report.data["tokens_per_epoch"]) <= 0.05 * done.trained_tokens
