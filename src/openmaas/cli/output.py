"""What the commands print: the consoles, `--json`, and tables whose id columns are never cut."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, ensure_ascii=False))


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    whole: Sequence[str] = ("id",),
    title: str | None = None,
) -> Table:
    """A table whose `whole` columns (the ids and names a user types next) are never wrapped or cut, however
    narrow the terminal: each is as wide as its longest cell (Rich shrinks every column of a table that does
    not fit, so a minimum width is what keeps them). Every other column folds onto more lines instead."""
    cells = [[str(cell) for cell in row] for row in rows]
    grid = Table(title=title)
    for index, name in enumerate(columns):
        if name in whole:
            width = max([len(name)] + [len(row[index]) for row in cells])
            grid.add_column(name, no_wrap=True, min_width=width)
        else:
            grid.add_column(name, overflow="fold")
    for row in cells:
        grid.add_row(*(Text(cell) for cell in row))  # a cell is data, never Rich markup
    return grid


def when(seconds: float | None) -> str:
    """A unix time as UTC, to the second."""
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def compact(data: dict[str, Any], *, digits: int = 4) -> str:
    """`key=value` pairs for a table cell, numbers rounded."""
    parts = []
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:.{digits}g}"
        elif isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={value}")
    return " ".join(parts)
