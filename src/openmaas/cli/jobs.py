"""`openmaas train` and `openmaas jobs ...`: start, list, show, follow and cancel training jobs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import compact, console, print_json, table, when
from openmaas.cli.watch import print_events, watch_job
from openmaas.sdk import Client

app = typer.Typer(help="Inspect, follow and cancel training jobs.", no_args_is_help=True)


def hyperparameters(items: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return values


def follow(sdk: Client, job_id: str, as_json: bool) -> None:
    """Follow the job to its end; exit 1 unless it succeeded."""
    final = print_events(sdk, job_id) if as_json else watch_job(sdk, job_id, console)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


def train(
    dataset: Annotated[str, typer.Option(help="Dataset id.")],
    model: Annotated[str, typer.Option(help="Registry name for the trained model.")],
    recipe: str = "bow-mlp",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Hyperparameter KEY=VALUE.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job with a progress bar.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the job as JSON (with --watch: then each event, one per line).")
    ] = False,
) -> None:
    """Start a training job."""
    sdk = client(url, api_key)
    job = sdk.create_job(dataset, model, recipe=recipe, hyperparameters=hyperparameters(param))
    if as_json:
        print(json.dumps(job, ensure_ascii=False), flush=True)
    else:
        console.print(f"job [bold]{job['id']}[/bold] queued: {recipe} on {dataset} → model '{model}'", soft_wrap=True)
    if watch:
        follow(sdk, job["id"], as_json)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your tenant's jobs, newest first."""
    items = client(url, api_key).list_jobs(status=status)
    if as_json:
        print_json(items)
        return
    rows = [[j["id"], j["status"], j["recipe"], j["model"], j["model_version"] or "", j["reason"] or ""] for j in items]
    columns = ["id", "status", "recipe", "model", "version", "reason"]
    console.print(table(columns, rows, whole=("id", "status", "model")))


@app.command("show")
def show(job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A job: its state, hyperparameters and final metrics."""
    job = client(url, api_key).get_job(job_id)
    if as_json:
        print_json(job)
        return
    console.print(f"job [bold]{job['id']}[/bold]: {job['status']}", soft_wrap=True)
    fields = {
        "model": f"{job['model']}:{job['model_version']}" if job["model_version"] else job["model"],
        "dataset": job["dataset"],
        "recipe": job["recipe"],
        "reason": job["reason"] or "",
        "attempts": job["attempts"],
        "created": when(job["created_at"]),
        "started": when(job["started_at"]),
        "finished": when(job["finished_at"]),
        "hyperparameters": compact(job["hyperparameters"]),
        "metrics": compact({k: v for k, v in job["metrics"].items() if k != "history"}),
    }
    console.print(table(["field", "value"], [[k, v] for k, v in fields.items() if v != ""], whole=("field",)))


@app.command("events")
def events(
    job_id: str,
    after: Annotated[int, typer.Option(help="Only the events after this id.")] = 0,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's progress events so far."""
    items = client(url, api_key).job_events(job_id, after=after)
    if as_json:
        print_json(items)
        return
    rows = [[e["id"], when(e["created_at"]), e["type"], compact(e["data"])] for e in items]
    console.print(table(["id", "time", "type", "data"], rows, whole=("id", "time", "type")))


@app.command("watch")
def watch(
    job_id: str,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line.")] = False,
) -> None:
    """Follow a job to its end with a progress bar (exit 1 unless it succeeds)."""
    follow(client(url, api_key), job_id, as_json)


@app.command("cancel")
def cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Cancel a job: a queued one at once, a running one at its next step."""
    job = client(url, api_key).cancel_job(job_id)
    if as_json:
        print_json(job)
    elif job["status"] == "cancelled":
        console.print(f"job {job['id']}: cancelled")
    else:  # still running until its next step: the cancel is on its way
        console.print(f"job {job['id']}: cancelling (it stops at its next step; `openmaas jobs show {job['id']}`)")


@app.command("checkpoints")
def checkpoints(job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A job's checkpoints, with their step and metrics."""
    items = client(url, api_key).job_checkpoints(job_id)
    if as_json:
        print_json(items)
        return
    rows = [[c["name"], c["step"], c["epoch"], when(c["created_at"]), compact(c["metrics"])] for c in items]
    console.print(table(["name", "step", "epoch", "created", "metrics"], rows, whole=("name",)))
