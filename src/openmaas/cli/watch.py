"""Renders a job's progress events as a Rich progress bar with the live loss."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from openmaas.sdk import Client


def _describe(event: dict[str, Any]) -> str:
    data = event["data"]
    parts = [f"loss {data['train_loss']:.4f}"]
    if "val_loss" in data:
        parts.append(f"val_loss {data['val_loss']:.4f}")
        parts.append(f"val_acc {data['val_accuracy']:.3f}")
    return "  ".join(parts)


def watch_job(client: Client, job_id: str, console: Console) -> dict[str, Any]:
    job = client.get_job(job_id)
    total = int(job["hyperparameters"].get("epochs", 1))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
    ) as progress:
        bar = progress.add_task("queued", total=total, metrics="")
        for event in client.stream_job_events(job_id):
            kind = event["type"]
            if kind in ("started", "resumed"):
                progress.update(bar, description="training" if kind == "started" else "resumed")
                if note := event["data"].get("note"):
                    progress.console.print(f"[yellow]note:[/yellow] {note}")
            elif kind == "epoch":
                progress.update(bar, completed=event["data"]["epoch"], metrics=_describe(event))
            elif kind == "step":
                data = event["data"]
                progress.update(
                    bar,
                    metrics=f"step {data['step']}  loss {data['loss']:.4f}  "
                    f"{data['samples_per_second']:,.0f} samples/s",
                )
            elif kind in ("retrying", "interrupted"):
                progress.console.print(f"[yellow]{kind}:[/yellow] {event['data'].get('reason')}")
            elif kind in ("succeeded", "failed", "cancelled"):
                progress.update(bar, description=kind)
    final = client.get_job(job_id)
    if final["status"] == "succeeded":
        console.print(
            f"[green]succeeded[/green]: model {final['model']}:{final['model_version']} "
            f"({final['metrics'].get('stopped_reason')})"
        )
    else:
        console.print(f"[red]{final['status']}[/red]: {final['reason']}")
    return final
