"""Typer commands: serve, datasets, train, jobs, models and predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from openmaas.cli.watch import watch_job
from openmaas.sdk import APIError, Client

app = typer.Typer(help="OpenMaaS: datasets → training jobs → models → predictions.", no_args_is_help=True)
datasets_app = typer.Typer(help="Upload and inspect datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and cancel training jobs.", no_args_is_help=True)
models_app = typer.Typer(help="Browse the model registry.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
tenants_app = typer.Typer(help="Tenants (admin key).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant (admin key).", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)

UrlOption = Annotated[str | None, typer.Option("--url", envvar="OPENMAAS_URL", help="Server URL.")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="OPENMAAS_API_KEY", help="API key.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


def _client(url: str | None, api_key: str | None) -> Client:
    return Client(url, api_key)


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False))


def _run(call: Any) -> Any:
    try:
        return call()
    except APIError as error:
        err.print(f"[red]error {error.status}[/red] ({error.code or error.type}): {error.message}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="OPENMAAS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="OPENMAAS_PORT")] = 8000,
    data_dir: Annotated[Path | None, typer.Option(help="Defaults to $OPENMAAS_DATA_DIR or ./data.")] = None,
    log_level: str = "info",
) -> None:
    """Start the server (embedded default: SQLite and local files under the data directory)."""
    import uvicorn
    from pydantic import ValidationError

    from openmaas.api.app import create_app
    from openmaas.api.connections import ConnectionLimits, protocol_class
    from openmaas.config import Settings

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"host": host, "port": port}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # a clear line per setting, not a traceback
        for problem in error.errors():
            setting = "OPENMAAS_" + "_".join(str(part) for part in problem["loc"]).upper()
            message = problem["msg"].removeprefix("Value error, ")
            err.print(f"[red]invalid setting {setting}[/red]: {message}", soft_wrap=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_class(
            ConnectionLimits(
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                header_timeout_s=settings.header_timeout_s,
                body_timeout_s=settings.body_timeout_s,
            )
        ),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_level=log_level,
        access_log=False,
    )


@datasets_app.command("upload")
def datasets_upload(
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
    dataset = _run(
        lambda: _client(url, api_key).upload_dataset(
            path, name=name, text_column=text_column, label_column=label_column, kind=kind
        )
    )
    if quiet:
        print(dataset["id"])
        return
    if as_json:
        _print_json(dataset)
        return
    console.print(f"[green]dataset {dataset['id']}[/green] '{dataset['name']}': {dataset['rows']} rows")
    for label, count in dataset["labels"].items():
        console.print(f"  {label}: {count}")
    if documents := dataset["report"].get("documents"):
        console.print(f"  {documents['text']} texts, {documents['chat']} chats")
    for reason, info in dataset["report"]["dropped"].items():
        console.print(f"  dropped {info['count']} ({reason}), e.g. lines {info['lines']}")


@datasets_app.command("list")
def datasets_list(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    items = _run(lambda: _client(url, api_key).list_datasets())
    if as_json:
        _print_json(items)
        return
    table = Table("id", "name", "kind", "rows", "labels")
    for d in items:
        table.add_row(d["id"], d["name"], d.get("kind", "classification"), str(d["rows"]), ", ".join(d["labels"]))
    console.print(table)


@datasets_app.command("show")
def datasets_show(dataset_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    _print_json(_run(lambda: _client(url, api_key).get_dataset(dataset_id)))


@datasets_app.command("delete")
def datasets_delete(dataset_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    _print_json(_run(lambda: _client(url, api_key).delete_dataset(dataset_id)))


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset id.")],
    model: Annotated[str, typer.Option(help="Registry name for the trained model.")],
    recipe: str = "bow-mlp",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Hyperparameter KEY=VALUE.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job with a progress bar.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Start a training job."""
    hyperparameters: dict[str, Any] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        try:
            hyperparameters[key] = json.loads(value)
        except json.JSONDecodeError:
            hyperparameters[key] = value
    client = _client(url, api_key)
    job = _run(lambda: client.create_job(dataset, model, recipe=recipe, hyperparameters=hyperparameters))
    console.print(f"job [bold]{job['id']}[/bold] queued: {recipe} on {dataset} → model '{model}'")
    if watch:
        final = _run(lambda: watch_job(client, job["id"], console))
        if final["status"] != "succeeded":
            raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    items = _run(lambda: _client(url, api_key).list_jobs())
    if as_json:
        _print_json(items)
        return
    table = Table("id", "status", "recipe", "model", "version", "reason")
    for j in items:
        table.add_row(j["id"], j["status"], j["recipe"], j["model"], str(j["model_version"] or ""), j["reason"] or "")
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    _print_json(_run(lambda: _client(url, api_key).get_job(job_id)))


@jobs_app.command("events")
def jobs_events(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    _print_json(_run(lambda: _client(url, api_key).job_events(job_id)))


@jobs_app.command("watch")
def jobs_watch(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    final = _run(lambda: watch_job(_client(url, api_key), job_id, console))
    if final["status"] != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    job = _run(lambda: _client(url, api_key).cancel_job(job_id))
    console.print(f"job {job['id']}: {job['status']}")


@models_app.command("list")
def models_list(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    items = _run(lambda: _client(url, api_key).list_models())
    if as_json:
        _print_json(items)
        return
    table = Table("name", "latest", "aliases", "owner")
    for m in items:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.get("aliases", {}).items())
        table.add_row(m["id"], str(m.get("latest_version") or ""), aliases, m["owned_by"])
    console.print(table)


@models_app.command("show")
def models_show(name: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    _print_json(_run(lambda: _client(url, api_key).get_model(name)))


@models_app.command("import")
def models_import(
    path: Annotated[Path, typer.Argument(help="A Hugging Face directory on the server's disk.")],
    name: Annotated[str, typer.Option(help="Registry name.")],
    runtime: Annotated[
        str | None, typer.Option(help="An encoder's runtime: onnx (default) or onnx-int8 (int8 weights, faster).")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Register a local Hugging Face model directory (config.json, tokenizer.json, *.safetensors)."""
    version = _run(lambda: _client(url, api_key).import_model(path, name, runtime=runtime))
    console.print(
        f"[green]imported[/green] {name}:{version['version']} ({version['task']}, "
        f"{version['parameter_count']:,} parameters)"
    )


@models_app.command("alias")
def models_alias(name: str, alias: str, version: int, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Point ALIAS (e.g. production) of model NAME at VERSION."""
    model = _run(lambda: _client(url, api_key).set_alias(name, alias, version))
    console.print(f"{name}:{alias} → {model['aliases'][alias]}")


@models_app.command("public")
def models_public(name: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Let every tenant read, serve and build on your model NAME, as OWNER/NAME (OWNER: your tenant's name)."""
    model = _run(lambda: _client(url, api_key).update_model(name, public=True))
    console.print(f"{name} is public: other tenants use it as {model['owned_by']}/{name}")


@models_app.command("private")
def models_private(name: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Stop sharing your model NAME: other tenants get 404 again."""
    _run(lambda: _client(url, api_key).update_model(name, public=False))
    console.print(f"{name} is private")


def _limits(items: list[str] | None) -> dict[str, int]:
    limits = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise typer.BadParameter(f"expected NAME=INTEGER, got {item!r}", param_hint="--limit")
        limits[name] = int(value)
    return limits


LimitOption = Annotated[
    list[str] | None,
    typer.Option("--limit", help="requests_per_minute=N, tokens_per_minute=N, concurrent_jobs=N, storage_bytes=N"),
]


@tenants_app.command("create")
def tenants_create(
    name: str,
    limit: LimitOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the tenant id.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    tenant = _run(lambda: _client(url, api_key).create_tenant(name, _limits(limit)))
    if quiet:
        print(tenant["id"])
    else:
        _print_json(tenant)


@tenants_app.command("list")
def tenants_list(url: UrlOption = None, api_key: KeyOption = None) -> None:
    table = Table("id", "name", "limits", "disabled")
    for t in _run(lambda: _client(url, api_key).list_tenants()):
        table.add_row(t["id"], t["name"], json.dumps(t["limits"]), str(t["disabled"]))
    console.print(table)


@tenants_app.command("update")
def tenants_update(
    tenant_id: str,
    limit: LimitOption = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    limits = _limits(limit) if limit else None
    _print_json(_run(lambda: _client(url, api_key).update_tenant(tenant_id, limits=limits, disabled=disable)))


@keys_app.command("create")
def keys_create(
    tenant_id: str,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="admin, train, infer or read")] = None,
    limit: LimitOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Create a key; its secret is printed once."""
    scopes = scope or ["read", "train", "infer"]
    key = _run(lambda: _client(url, api_key).create_key(tenant_id, scopes, limits=_limits(limit)))
    console.print(f"key {key['id']} ({', '.join(key['scopes'])}): shown only now\n")
    print(key["key"])


@keys_app.command("list")
def keys_list(tenant_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    table = Table("id", "prefix", "scopes", "limits", "revoked")
    for k in _run(lambda: _client(url, api_key).list_keys(tenant_id)):
        table.add_row(k["id"], k["prefix"], ", ".join(k["scopes"]), json.dumps(k["limits"]), str(k["revoked"]))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    key = _run(lambda: _client(url, api_key).revoke_key(key_id))
    console.print(f"key {key['id']} revoked")


@app.command()
def usage(
    group_by: Annotated[str | None, typer.Option(help="model, key, day, tenant or protocol")] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Usage of your tenant (or every tenant's, with an admin key)."""
    _print_json(_run(lambda: _client(url, api_key).usage(group_by=group_by, all_tenants=all_tenants)))


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="name, name:VERSION or name:ALIAS")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Classify texts with a registered model."""
    result = _run(lambda: _client(url, api_key).predict(model, texts))
    if as_json:
        _print_json(result)
        return
    table = Table("text", "label", "score", title=f"{result['model']}:{result['version']}")
    for text, p in zip(texts, result["predictions"], strict=True):
        table.add_row(text, p["label"], f"{p['score']:.3f}")
    console.print(table)
