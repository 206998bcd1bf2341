"""`openmaas datasets ...`: upload, list, show and delete datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import console, print_json, table, when

app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)


def print_dataset(dataset: dict[str, Any]) -> None:
    console.print(f"[green]dataset {dataset['id']}[/green] '{dataset['name']}': {dataset['rows']} rows", soft_wrap=True)
    for label, count in dataset["labels"].items():
        console.print(f"  {label}: {count}", markup=False)
    if documents := dataset["report"].get("documents"):
        console.print(f"  {documents['text']} texts, {documents['chat']} chats")
    for reason, info in dataset["report"]["dropped"].items():
        console.print(f"  dropped {info['count']} ({reason}), e.g. lines {info['lines']}", markup=False)


@app.command("upload")
def upload(
    path: Path,
    name: Annotated[str | None, typer.Option()] = None,
    text_column: str = "text",
    label_column: str = "label",
    kind: Annotated[
        str,
        typer.Option(help="classification: labelled texts (CSV, TSV, JSONL); text: documents (TXT, JSONL)."),
    ] = "classification",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the dataset id.")] = False,
) -> None:
    """Upload a CSV, TSV or JSONL file of labeled texts, or (--kind text) a TXT or JSONL file of documents."""
    dataset = client(url, api_key).upload_dataset(
        path, name=name, text_column=text_column, label_column=label_column, kind=kind
    )
    if quiet:
        print(dataset["id"])
    elif as_json:
        print_json(dataset)
    else:
        print_dataset(dataset)


@app.command("list")
def list_(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Your tenant's datasets."""
    items = client(url, api_key).list_datasets()
    if as_json:
        print_json(items)
        return
    rows = [
        [d["id"], d["name"], d.get("kind", "classification"), d["rows"], ", ".join(d["labels"]), when(d["created_at"])]
        for d in items
    ]
    console.print(table(["id", "name", "kind", "rows", "labels", "created"], rows, whole=("id", "name")))


@app.command("show")
def show(dataset_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A dataset: rows, label distribution, what cleaning dropped and why."""
    dataset = client(url, api_key).get_dataset(dataset_id)
    if as_json:
        print_json(dataset)
    else:
        print_dataset(dataset)


@app.command("delete")
def delete(dataset_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Delete a dataset (refused while a job uses it)."""
    deleted = client(url, api_key).delete_dataset(dataset_id)
    if as_json:
        print_json(deleted)
    else:
        console.print(f"dataset {deleted['id']} deleted")
