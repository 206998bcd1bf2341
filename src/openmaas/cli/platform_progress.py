"""OpenAI fine-tunes and batches in the terminal: a fine-tune's pre-flight data report, and Rich
progress bars that follow a fine-tune (its epochs, with the live loss) or a batch (its requests) until it ends."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from openmaas.cli.output import when
from openmaas.cli.watch import follow_epochs
from openmaas.sdk import Client

BATCH_ENDED = ("completed", "failed", "cancelled", "expired")
FINE_TUNE_ENDED = ("succeeded", "failed", "cancelled")
POLL_S = 0.5


def data_report(client: Client, job_id: str) -> dict[str, Any] | None:
    """The data report event's figures, if the job has one (a job whose files were unusable has none)."""
    for event in client.fine_tuning_events(job_id):
        if event["type"] == "message" and event["message"].startswith("Data report") and event.get("data"):
            return dict(event["data"])
    return None


def report_rows(report: dict[str, Any]) -> list[list[Any]]:
    tokens = report.get("tokens_per_example") or {}
    rows: list[list[Any]] = [
        ["examples", report.get("rows")],
        [
            f"tokens per example ({report.get('tokenizer')})",
            f"{tokens.get('min')} / {tokens.get('median')} / {tokens.get('max')} (min / median / max)",
        ],
        ["exact duplicates dropped", report.get("exact_duplicates_dropped")],
        ["near duplicates", report.get("near_duplicates")],
        [
            f"over the context of {report.get('context')}",
            f"{report.get('over_context')} ({report.get('over_context_handling')})",
        ],
    ]
    if report.get("label_balance") is not None:
        balance = ", ".join(f"{label} {count}" for label, count in report["label_balance"].items())
        rows += [["label balance", balance], ["conflicting labels", report.get("conflicting_labels")]]
    if report.get("validation_rows") is not None:
        rows.append(["validation examples", report["validation_rows"]])
    rows.append(["tokens to train on", f"{report.get('estimated_trained_tokens')} ({report.get('n_epochs')} epochs)"])
    if report.get("estimated_seconds") is not None:
        speed = report["speed"]
        rows.append(
            [
                "estimated duration",
                f"{report['estimated_seconds']:.0f} s at {speed['tokens_per_second']} tokens/s "
                f"(measured on {speed['from_jobs']} finished jobs)",
            ]
        )
    else:
        rows.append(["estimated duration", report.get("estimate_note") or "unknown"])
    return rows


def print_fine_tune(client: Client, job: dict[str, Any], console: Console) -> None:
    """The job's line, its error, its data report, and when it should finish or what it trained on."""
    line = f"fine-tuning job {job['id']}: {job['status']} ({job['model']})"
    if job.get("fine_tuned_model"):
        line += f" → {job['fine_tuned_model']}"
    console.print(line, markup=False, soft_wrap=True)
    if error := job.get("error"):
        console.print(
            f"  error {error['code']} ({error.get('param')}): {error['message']}", markup=False, soft_wrap=True
        )
    if report := data_report(client, job["id"]):
        console.print("  data report:", markup=False)
        for name, value in report_rows(report):
            console.print(f"    {name}: {value}", markup=False, soft_wrap=True)
    if job.get("estimated_finish"):
        console.print(f"  estimated finish: {when(job['estimated_finish'])}", markup=False)
    if job.get("trained_tokens") is not None:
        console.print(f"  trained tokens: {job['trained_tokens']}", markup=False)


def watch_fine_tune(client: Client, job_id: str, console: Console) -> dict[str, Any]:
    """A bar of the job's epochs with the live loss, from its progress events, until it ends."""
    job = client.get_fine_tuning_job(job_id)
    if job["status"] not in FINE_TUNE_ENDED:
        epochs = int(job["hyperparameters"]["n_epochs"])
        follow_epochs(client, job_id, console, job["status"], epochs, details=False)
    return client.get_fine_tuning_job(job_id)


def _batch_done(batch: dict[str, Any]) -> int:
    counts = batch["request_counts"]
    return int(counts["completed"]) + int(counts["failed"])


def watch_batch(client: Client, batch_id: str, console: Console, poll_s: float = POLL_S) -> dict[str, Any]:
    """A bar of the batch's answered requests (failed ones too), polled until the batch ends."""
    batch = client.get_batch(batch_id)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]}"),
        console=console,
    ) as progress:
        bar = progress.add_task(batch["status"], total=batch["request_counts"]["total"] or None, failed="")
        while True:
            failed = batch["request_counts"]["failed"]
            progress.update(
                bar,
                description=batch["status"],
                completed=_batch_done(batch),
                failed=f"{failed} failed" if failed else "",
            )
            if batch["status"] in BATCH_ENDED:
                break
            time.sleep(poll_s)
            batch = client.get_batch(batch_id)
    return batch
