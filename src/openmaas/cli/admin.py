"""`openmaas tenants ...`, `keys ...`, `usage` and `audit`: tenants, their keys and limits, what was used."""

from __future__ import annotations

import datetime
import json
from typing import Annotated

import typer

from openmaas.cli.common import JsonOption, KeyOption, UrlOption, client
from openmaas.cli.output import compact, console, print_json, table, when

tenants_app = typer.Typer(help="Tenants (admin key).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant (admin key).", no_args_is_help=True)

LimitOption = Annotated[
    list[str] | None,
    typer.Option("--limit", help="requests_per_minute=N, tokens_per_minute=N, concurrent_jobs=N, storage_bytes=N"),
]
TimeOption = typer.Option(
    formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"], help="A UTC date, or date and time."
)


def limits_of(items: list[str] | None) -> dict[str, int]:
    limits = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise typer.BadParameter(f"expected NAME=INTEGER, got {item!r}", param_hint="--limit")
        limits[name] = int(value)
    return limits


@tenants_app.command("create")
def tenants_create(
    name: str,
    limit: LimitOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the tenant id.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant, with its limits."""
    tenant = client(url, api_key).create_tenant(name, limits_of(limit))
    if quiet:
        print(tenant["id"])
    elif as_json:
        print_json(tenant)
    else:
        console.print(f"tenant {tenant['id']} '{tenant['name']}' {compact(tenant['limits'])}", markup=False)


@tenants_app.command("list")
def tenants_list(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    items = client(url, api_key).list_tenants()
    if as_json:
        print_json(items)
        return
    rows = [[t["id"], t["name"], compact(t["limits"]), "yes" if t["disabled"] else ""] for t in items]
    console.print(table(["id", "name", "limits", "disabled"], rows, whole=("id", "name")))


@tenants_app.command("update")
def tenants_update(
    tenant_id: str,
    limit: LimitOption = None,
    disable: Annotated[bool | None, typer.Option("--disable/--enable")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a tenant's limits, or disable (enable) it."""
    limits = limits_of(limit) if limit else None
    tenant = client(url, api_key).update_tenant(tenant_id, limits=limits, disabled=disable)
    if as_json:
        print_json(tenant)
    else:
        state = "disabled" if tenant["disabled"] else "enabled"
        console.print(f"tenant {tenant['id']} '{tenant['name']}' {state} {compact(tenant['limits'])}", markup=False)


@keys_app.command("create")
def keys_create(
    tenant_id: str,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="admin, train, infer or read")] = None,
    limit: LimitOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is printed once (the last line)."""
    scopes = scope or ["read", "train", "infer"]
    key = client(url, api_key).create_key(tenant_id, scopes, limits=limits_of(limit))
    if as_json:
        print_json(key)
        return
    console.print(f"key {key['id']} ({', '.join(key['scopes'])}): shown only now\n", markup=False)
    print(key["key"])


@keys_app.command("list")
def keys_list(tenant_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    items = client(url, api_key).list_keys(tenant_id)
    if as_json:
        print_json(items)
        return
    rows = [
        [k["id"], k["prefix"], ", ".join(k["scopes"]), compact(k["limits"]), "yes" if k["revoked"] else ""]
        for k in items
    ]
    console.print(table(["id", "prefix", "scopes", "limits", "revoked"], rows, whole=("id", "prefix")))


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    key = client(url, api_key).revoke_key(key_id)
    if as_json:
        print_json(key)
    else:
        console.print(f"key {key['id']} revoked")


def unix(moment: datetime.datetime | None) -> float | None:
    return None if moment is None else moment.replace(tzinfo=datetime.UTC).timestamp()


def usage(
    group_by: Annotated[str | None, typer.Option(help="model, key, day, tenant or protocol")] = None,
    start: Annotated[datetime.datetime | None, TimeOption] = None,
    end: Annotated[datetime.datetime | None, TimeOption] = None,
    all_tenants: Annotated[bool, typer.Option("--all-tenants", help="Every tenant's (admin key).")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Usage of your tenant (or every tenant's, with an admin key), from --start until --end."""
    rows = client(url, api_key).usage(group_by=group_by, start=unix(start), end=unix(end), all_tenants=all_tenants)
    if as_json:
        print_json(rows)
        return
    group = [group_by] if group_by else []
    counts = ["records", "tokens", "completion_tokens"]  # and `items`, in --json: the rest fits 80 columns
    cells = [
        [*(r.get(g) or "" for g in group), r["kind"], *(r[c] for c in counts), f"{r['seconds']:.3f}"] for r in rows
    ]
    headers = [*group, "kind", *(c.replace("_", " ") for c in counts), "seconds"]  # spaces: a header may wrap
    console.print(table(headers, cells, whole=tuple(group)))


def audit(
    limit: Annotated[int, typer.Option(help="The newest N entries.")] = 100,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """The audit log: who created, changed or deleted what (admin key)."""
    entries = client(url, api_key).audit_log(limit=limit)
    if as_json:
        print_json(entries)
        return
    rows = [
        [
            e["id"],
            when(e["created_at"]),
            e["tenant_id"],
            e["key_id"] or "",
            e["action"],
            e["target"],
            json.dumps(e["details"], ensure_ascii=False) if e["details"] else "",
        ]
        for e in entries
    ]
    columns = ["id", "time", "tenant", "key", "action", "target", "details"]
    console.print(table(columns, rows, whole=("id", "action", "target")))
