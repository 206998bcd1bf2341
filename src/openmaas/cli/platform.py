"""`openmaas files ...`, `openmaas fine-tune ...` and `openmaas batches ...`: OpenAI's files, fine-tuning jobs
and batches from the command line (the same routes the `openai` client uses)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import console, print_json, table, when
from openmaas.cli.platform_progress import BATCH_ENDED, print_fine_tune, watch_batch, watch_fine_tune

files_app = typer.Typer(help="Upload and read OpenAI files (fine-tune and batch inputs, batch outputs).")
fine_tune_app = typer.Typer(help="OpenAI fine-tuning jobs: the model picks the recipe.", no_args_is_help=True)
batches_app = typer.Typer(help="OpenAI batches: a file of requests answered in the background.", no_args_is_help=True)
files_app.info.no_args_is_help = True


def _show(data: Any, as_json: bool, line: str) -> None:
    if as_json:
        print_json(data)
    else:
        console.print(line, markup=False, soft_wrap=True)


@files_app.command("upload")
def upload_file(
    path: Path,
    purpose: Annotated[str, typer.Option(help="fine-tune or batch")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a JSONL file: training rows (fine-tune) or requests (batch)."""
    file = client(url, api_key).upload_file(path, purpose)
    _show(file, as_json, f"file {file['id']} ({file['purpose']}): {file['bytes']} bytes")


@files_app.command("list")
def list_files(
    purpose: Annotated[str | None, typer.Option()] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your tenant's files, newest first."""
    items = client(url, api_key).list_files(purpose=purpose)
    if as_json:
        print_json(items)
        return
    rows = [[f["id"], f["purpose"], f["filename"], f["bytes"], when(f["created_at"])] for f in items]
    console.print(table(["id", "purpose", "filename", "bytes", "created"], rows, whole=("id",)))


@files_app.command("content")
def file_content(file_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Print a file's text (a batch's output, a fine-tune's results CSV)."""
    text = client(url, api_key).file_content(file_id).decode("utf-8", errors="replace")
    if as_json:
        print_json({"id": file_id, "content": text})
    else:
        typer.echo(text, nl=False)


@files_app.command("delete")
def delete_file(file_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Delete a file."""
    deleted = client(url, api_key).delete_file(file_id)
    _show(deleted, as_json, f"file {deleted['id']} deleted")


def _job_line(job: dict[str, Any]) -> str:
    line = f"fine-tuning job {job['id']}: {job['status']} ({job['model']})"
    if job.get("fine_tuned_model"):
        line += f" → {job['fine_tuned_model']}"
    if job.get("error"):
        line += f": {job['error']['message']}"
    return line


WaitOption = Annotated[bool, typer.Option("--wait", help="Follow it with a progress bar until it ends.")]


@fine_tune_app.command("create")
def create_fine_tune(
    model: str,
    training_file: str,
    validation_file: Annotated[str | None, typer.Option(help="Validate on this file instead of a split.")] = None,
    n_epochs: Annotated[int | None, typer.Option()] = None,
    suffix: Annotated[str | None, typer.Option()] = None,
    wait: WaitOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune MODEL (bow-mlp, the shipped encoder, or a causal LM) on an uploaded fine-tune file: its files
    are validated first (the data report, or the line that makes a file unusable)."""
    hyperparameters = {"n_epochs": n_epochs} if n_epochs is not None else None
    sdk = client(url, api_key)
    job = sdk.create_fine_tuning_job(
        model, training_file, validation_file=validation_file, hyperparameters=hyperparameters, suffix=suffix
    )
    if as_json and not wait:
        print_json(job)
        return
    if not as_json:
        print_fine_tune(sdk, job, console)
    if wait:
        job = watch_fine_tune(sdk, job["id"], console)
        if as_json:
            print_json(job)
        else:
            console.print(_job_line(job), markup=False, soft_wrap=True)
    if job["status"] == "failed":
        raise typer.Exit(1)


@fine_tune_app.command("watch")
def watch_fine_tune_command(
    job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Follow a fine-tuning job with a progress bar of its epochs until it ends."""
    sdk = client(url, api_key)
    job = watch_fine_tune(sdk, job_id, console)
    _show(job, as_json, _job_line(job))


@fine_tune_app.command("list")
def list_fine_tunes(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Your tenant's fine-tuning jobs, newest first."""
    items = client(url, api_key).list_fine_tuning_jobs()
    if as_json:
        print_json(items)
        return
    rows = [[j["id"], j["status"], j["model"], j.get("fine_tuned_model") or "", when(j["created_at"])] for j in items]
    console.print(table(["id", "status", "model", "fine-tuned model", "created"], rows, whole=("id",)))


@fine_tune_app.command("show")
def show_fine_tune(job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A fine-tuning job, then its events (the data report first)."""
    sdk = client(url, api_key)
    job = sdk.get_fine_tuning_job(job_id)
    if as_json:
        print_json(job)
        return
    print_fine_tune(sdk, job, console)
    for event in sdk.fine_tuning_events(job_id):
        console.print(f"  {when(event['created_at'])}  {event['message']}", markup=False, soft_wrap=True)


@fine_tune_app.command("cancel")
def cancel_fine_tune(
    job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Cancel a fine-tuning job."""
    job = client(url, api_key).cancel_fine_tuning_job(job_id)
    _show(job, as_json, _job_line(job))


def _batch_line(batch: dict[str, Any]) -> str:
    counts = batch["request_counts"]
    done = f"{counts['completed']} done, {counts['failed']} failed of {counts['total']}"
    line = f"batch {batch['id']}: {batch['status']}, {done}"
    for error in (batch.get("errors") or {}).get("data", []):
        line += f"\n  line {error['line']}: {error['message']}"
    return line


@batches_app.command("create")
def create_batch(
    input_file: str,
    endpoint: str,
    wait: WaitOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer an uploaded batch file's requests to ENDPOINT (e.g. /v1/embeddings) in the background."""
    sdk = client(url, api_key)
    batch = sdk.create_batch(input_file, endpoint)
    if wait and batch["status"] not in BATCH_ENDED:
        batch = watch_batch(sdk, batch["id"], console)
    _show(batch, as_json, _batch_line(batch))


@batches_app.command("watch")
def watch_batch_command(
    batch_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Follow a batch with a progress bar of its requests until it ends."""
    batch = watch_batch(client(url, api_key), batch_id, console)
    _show(batch, as_json, _batch_line(batch))


@batches_app.command("list")
def list_batches(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Your tenant's batches, newest first."""
    items = client(url, api_key).list_batches()
    if as_json:
        print_json(items)
        return
    rows = [
        [b["id"], b["status"], b["endpoint"], json.dumps(b["request_counts"]), when(b["created_at"])] for b in items
    ]
    console.print(table(["id", "status", "endpoint", "requests", "created"], rows, whole=("id",)))


@batches_app.command("show")
def show_batch(batch_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A batch: status, request counts, output and error files."""
    batch = client(url, api_key).get_batch(batch_id)
    line = _batch_line(batch)
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            line += f"\n  {key.removesuffix('_id').replace('_', ' ')}: {batch[key]}"
    _show(batch, as_json, line)


@batches_app.command("cancel")
def cancel_batch(batch_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Cancel a batch: it stops after its current request and writes what was answered."""
    batch = client(url, api_key).cancel_batch(batch_id)
    _show(batch, as_json, _batch_line(batch))
