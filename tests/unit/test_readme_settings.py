"""The README's configuration section is the settings class, written for people: the same variables with the
same defaults, and the options `openmaas serve` really takes, so the two cannot drift apart."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from openmaas.cli.main import serve
from openmaas.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def configuration_section() -> str:
    text = README.read_text()
    start = text.index("## Configuration\n")
    return text[start : text.index("\n## ", start + 1)]


def readme_table() -> dict[str, str]:
    """variable -> its default cell, for every row of the configuration table."""
    rows = {}
    for line in configuration_section().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and (match := re.fullmatch(r"`(OPENMAAS_[A-Z0-9_]+)`", cells[0])):
            assert match.group(1) not in rows, f"{match.group(1)} is listed twice"
            rows[match.group(1)] = cells[1]
    return rows


def same_default(cell: str, default: Any) -> bool:
    """A plain value (a number, a string, a list, a boolean) must read the same in the README; a computed or
    absent default (None, a path) is described in words there."""
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if default is None or default is PydanticUndefined or isinstance(default, Path):
        return True
    if literal is None:
        return False
    value = literal.group(1)
    if isinstance(default, bool):
        return value == str(default).lower()
    if isinstance(default, int | float):
        return float(value) == float(default)
    if isinstance(default, list):
        return value == "[" + ", ".join(f'"{item}"' for item in default) + "]"
    return value == str(default)


def test_every_setting_is_in_the_readme_table_with_its_default() -> None:
    table = readme_table()
    settings = {f"OPENMAAS_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert sorted(set(settings) - set(table)) == [], "settings missing from the README's configuration table"
    assert sorted(set(table) - set(settings)) == [], "README rows that are no setting of config.py"
    wrong = {
        variable: (table[variable], field.default)
        for variable, field in settings.items()
        if not same_default(table[variable], field.default)
    }
    assert wrong == {}, "README defaults that differ from config.py's"


def test_the_readme_names_exactly_the_options_of_openmaas_serve() -> None:
    sentence = configuration_section().split("takes", 1)[1].split(";", 1)[0]
    written = set(re.findall(r"`(--[a-z-]+)`", sentence))
    actual = {"--" + name.replace("_", "-") for name in inspect.signature(serve).parameters}
    assert written == actual
