"""Lines of a text file or stream: only `\\n`, `\\r\\n` and `\\r` end a line.

`str.splitlines` also breaks at U+2028, U+2029, U+0085, `\\v`, `\\f` and `\\x1c`-`\\x1e`, which real text
(scraped pages, text decoded from Windows-1252) carries inside its strings, and which JSON (JSONL) and
Server-Sent Events leave unescaped inside a line. Every reader of stored or uploaded lines uses this function
instead, so such a character stays part of its line (the SDK reads events with `httpx-sse`, which does the same).
"""

from __future__ import annotations

import re

_LINE_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """`text` cut at its line ends, without them; like `splitlines`, a last line end starts no empty line."""
    if not text:
        return []
    lines = _LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines
