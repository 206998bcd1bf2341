"""Lines of a text file or stream: only `\\n`, `\\r\\n` and `\\r` end a line.

`str.splitlines` also breaks at U+2028, U+2029, U+0085, `\\v`, `\\f` and `\\x1c`-`\\x1e`, which real text
(scraped pages, text decoded from Windows-1252) carries inside its strings, and which JSON (JSONL) and
Server-Sent Events leave unescaped inside a line. Every reader of stored or uploaded lines uses these two
functions instead, so such a character stays part of its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_LINE_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """`text` cut at its line ends, without them; like `splitlines`, a last line end starts no empty line."""
    if not text:
        return []
    lines = _LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def iter_lines(chunks: Iterable[str]) -> Iterator[str]:
    """The lines of a text arriving in chunks (a streamed response), each yielded once its end has arrived."""
    pending = ""
    for chunk in chunks:
        pending += chunk
        # A `\r` at the end may be the first half of `\r\n`: it waits for the next chunk.
        held = pending.endswith("\r")
        lines = _LINE_END.split(pending[:-1] if held else pending)
        pending = lines.pop() + ("\r" if held else "")
        yield from lines
    yield from split_lines(pending)
