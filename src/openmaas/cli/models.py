"""`openmaas models ...`: the registry (list, show, import, aliases, sharing, delete) and loading for serving."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import console, print_json, table

app = typer.Typer(help="Browse and manage the model registry.", no_args_is_help=True)

# The metric a version's table shows, the first a version has.
HEADLINE_METRICS = ("val_accuracy", "val_loss", "train_loss")


@app.command("list")
def list_(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """The models you can use: yours, the shipped ones and other tenants' public ones."""
    items = client(url, api_key).list_models()
    if as_json:
        print_json(items)
        return
    rows = []
    for m in items:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.get("aliases", {}).items())
        rows.append([m["id"], m.get("task") or "", m.get("latest_version") or "", aliases, m["owned_by"]])
    console.print(table(["name", "task", "latest", "aliases", "owner"], rows, whole=("name",)))


def headline(versions: list[dict[str, Any]]) -> str | None:
    """The metric the versions' table shows: the first of HEADLINE_METRICS that a version has."""
    for name in HEADLINE_METRICS:
        if any(isinstance(v["metrics"].get(name), int | float) for v in versions):
            return name
    return None


@app.command("show")
def show(name: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """A model and every version of it: recipe, main metric and the job that trained it (--json: everything)."""
    model = client(url, api_key).get_model(name)
    if as_json:
        print_json(model)
        return
    shared = "public" if model.get("public") else "private"
    console.print(
        f"model [bold]{model['id']}[/bold] ({model.get('task') or 'no versions'}; owner {model['owned_by']}, {shared})",
        soft_wrap=True,
    )
    versions = model.get("versions") or []
    metric = headline(versions)
    rows = []
    for v in versions:
        value = v["metrics"].get(metric) if metric else None
        score = f"{value:.4f}" if isinstance(value, int | float) else ""
        rows.append([v["version"], ", ".join(v["aliases"]), v["recipe"], score, v["job_id"] or ""])
    # Parameters, runtime, lineage and times are in --json: five columns fit 80 with the job id whole.
    columns = ["version", "aliases", "recipe", metric or "metric", "job"]
    console.print(table(columns, rows, whole=("version", metric or "metric", "job")))


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A Hugging Face directory or a .gguf file on the server's disk.")],
    name: Annotated[str, typer.Option(help="Registry name.")],
    runtime: Annotated[
        str | None, typer.Option(help="An encoder's runtime: onnx (default) or onnx-int8 (int8 weights, faster).")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a local Hugging Face model directory (config.json, *.safetensors, and tokenizer.json, or an image
    classifier's preprocessor_config.json) or a GGUF file."""
    version = client(url, api_key).import_model(path, name, runtime=runtime)
    if as_json:
        print_json(version)
        return
    console.print(
        f"[green]imported[/green] {name}:{version['version']} ({version['task']}, "
        f"{version['parameter_count']:,} parameters)"
    )


@app.command("alias")
def alias(
    name: str, alias: str, version: int, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Point ALIAS (e.g. production) of model NAME at VERSION."""
    model = client(url, api_key).set_alias(name, alias, version)
    if as_json:
        print_json(model)
    else:
        console.print(f"{name}:{alias} → {model['aliases'][alias]}", markup=False)


@app.command("unalias")
def unalias(
    name: str, alias: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Remove ALIAS from model NAME (its version stays)."""
    model = client(url, api_key).delete_alias(name, alias)
    if as_json:
        print_json(model)
    else:
        console.print(f"{name}:{alias} removed", markup=False)


@app.command("delete")
def delete(
    name: str,
    version: Annotated[int | None, typer.Option(help="Delete only this version (its number is never reused).")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete model NAME with every version, or one version of it."""
    sdk = client(url, api_key)
    deleted = sdk.delete_model(name) if version is None else sdk.delete_version(name, version)
    if as_json:
        print_json(deleted)
    else:
        console.print(f"{deleted['object']} {deleted['id']} deleted", markup=False)


@app.command("public")
def public(name: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Let every tenant read, serve and build on your model NAME, as OWNER/NAME (OWNER: your tenant's name)."""
    model = client(url, api_key).update_model(name, public=True)
    if as_json:
        print_json(model)
    else:
        console.print(f"{name} is public: other tenants use it as {model['owned_by']}/{name}", markup=False)


@app.command("private")
def private(name: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """Stop sharing your model NAME: other tenants get 404 again."""
    model = client(url, api_key).update_model(name, public=False)
    if as_json:
        print_json(model)
    else:
        console.print(f"{name} is private", markup=False)


@app.command("load")
def load(
    ref: Annotated[str, typer.Argument(help="name, name:VERSION or name:ALIAS")],
    max_batch_size: Annotated[int | None, typer.Option(help="Inputs run together (default: the server's).")] = None,
    max_wait_ms: Annotated[float | None, typer.Option(help="How long a batch waits to fill.")] = None,
    max_queue_size: Annotated[int | None, typer.Option(help="Inputs waiting before 429.")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Ray Serve replicas (cluster mode); a served model is re-scaled in place.")
    ] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Autoscaling: the fewest replicas (0: to zero).")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscaling: the most replicas.")] = None,
    target_ongoing_requests: Annotated[
        float | None, typer.Option(help="Autoscaling: requests in flight per replica it aims at.")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a model version for serving now, with its batch settings and, on a cluster, its replicas (a fixed
    --replicas, or autoscaling between --min-replicas and --max-replicas) (admin key)."""
    autoscaling = autoscaling_of(min_replicas, max_replicas, target_ongoing_requests)
    loaded = client(url, api_key).load_model(
        ref,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue_size=max_queue_size,
        replicas=replicas,
        autoscaling=autoscaling,
    )
    if as_json:
        print_json(loaded)
        return
    scaling = loaded.get("autoscaling")
    copies = (
        f"{scaling['min_replicas']}..{scaling['max_replicas']} replicas"
        if scaling
        else f"{loaded.get('replicas', 1)} replica{'s' * (loaded.get('replicas') != 1)}"
    )
    console.print(
        f"loaded {loaded['model']}:{loaded['version']} in {loaded['load_seconds']:.2f} s "
        f"({loaded['memory_bytes'] / 2**20:,.1f} MiB; batches of up to {loaded['max_batch_size']}, "
        f"waiting {loaded['max_wait_ms']:g} ms, queue {loaded['max_queue_size']}; {copies})",
        markup=False,
    )


def autoscaling_of(
    min_replicas: int | None, max_replicas: int | None, target_ongoing_requests: float | None
) -> dict[str, float] | None:
    """The autoscaling object of the options, if any is given (the server's defaults are Ray Serve's)."""
    given: dict[str, float | None] = {"min_replicas": min_replicas, "max_replicas": max_replicas}
    given["target_ongoing_requests"] = target_ongoing_requests
    found = {name: value for name, value in given.items() if value is not None}
    return found or None


@app.command("unload")
def unload(
    ref: Annotated[str, typer.Argument(help="name, name:VERSION or name:ALIAS")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Unload a model version (admin key); the next request loads it again."""
    unloaded = client(url, api_key).unload_model(ref)
    if as_json:
        print_json(unloaded)
    else:
        console.print(f"unloaded {unloaded['id']}", markup=False)
