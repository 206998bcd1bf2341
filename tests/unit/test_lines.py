"""Lines end at \\n, \\r\\n and \\r only: the separators `str.splitlines` also breaks at stay inside their line."""

from __future__ import annotations

from openmaas.lines import split_lines

INSIDE = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei"


def test_only_newlines_end_a_line() -> None:
    text = f"{INSIDE}\r\nsecond\rthird\n\nfifth\n"
    assert split_lines(text) == [INSIDE, "second", "third", "", "fifth"]
    assert split_lines("") == [] and split_lines("no end") == ["no end"]
