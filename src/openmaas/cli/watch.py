"""Following a job (a native one, or the one behind a fine-tune): its progress events as a Rich progress bar with the
live loss, or as JSON lines."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openmaas.sdk import Client


def describe_epoch(data: dict[str, Any]) -> str:
    parts = [f"loss {data['train_loss']:.4f}"]
    if "val_loss" in data:
        parts.append(f"val_loss {data['val_loss']:.4f}")
        parts.append(f"val_acc {data['val_accuracy']:.3f}")
    return "  ".join(parts)


def describe_step(data: dict[str, Any]) -> str:
    """A language model's rate is in tokens per second, a classifier's in samples per second."""
    if "tokens_per_second" in data:
        rate = f"{data['tokens_per_second']:,.0f} tokens/s"
    else:
        rate = f"{data.get('samples_per_second', 0):,.0f} samples/s"
    return f"step {data['step']}  loss {data['loss']:.4f}  {rate}"


def follow_epochs(
    client: Client, job_id: str, console: Console, status: str, epochs: int, *, details: bool = True
) -> None:
    """A bar of the job's epochs with the live loss, from its progress events, until it ends. With `details`, a
    resumed job is named so and its notes, retries and interruptions are printed above the bar."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
    ) as progress:
        bar = progress.add_task(status, total=epochs, metrics="")  # running: a base model may be loading
        for event in client.stream_job_events(job_id):
            kind, data = event["type"], event["data"]
            if kind in ("started", "resumed"):
                progress.update(bar, description="resumed" if details and kind == "resumed" else "training")
                if details and (note := data.get("note")):
                    progress.console.print(f"[yellow]note:[/yellow] {note}")
            elif kind == "epoch":
                progress.update(bar, completed=data["epoch"], metrics=describe_epoch(data))
            elif kind == "step":
                progress.update(bar, metrics=describe_step(data))
            elif kind in ("retrying", "interrupted"):
                if details:
                    progress.console.print(f"[yellow]{kind}:[/yellow] {data.get('reason')}")
            elif kind in ("succeeded", "failed", "cancelled"):
                progress.update(bar, description=kind)


def watch_job(client: Client, job_id: str, console: Console) -> dict[str, Any]:
    job = client.get_job(job_id)
    follow_epochs(client, job_id, console, job["status"], int(job["hyperparameters"].get("epochs", 1)))
    final = client.get_job(job_id)
    if final["status"] == "succeeded":
        console.print(
            f"[green]succeeded[/green]: model {final['model']}:{final['model_version']} "
            f"({final['metrics'].get('stopped_reason')})"
        )
    else:
        console.print(f"[red]{final['status']}[/red]: {final['reason']}")
    return final


def print_events(client: Client, job_id: str) -> dict[str, Any]:
    """Each event as one JSON line as it comes (for scripts), then the job as it ended."""
    for event in client.stream_job_events(job_id):
        print(json.dumps(event, ensure_ascii=False), flush=True)
    return client.get_job(job_id)
