"""GGUF metadata: the shipped SmolLM2 file read without loading a tensor; files that are not whole GGUF files
refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.recipes.foundation import foundation_gguf
from openmaas.recipes.gguf import InvalidGguf, read_gguf


def test_the_shipped_gguf_names_its_architecture_context_and_template() -> None:
    info = read_gguf(foundation_gguf("smollm2-135m-instruct"))
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert 130_000_000 < info.parameter_count < 140_000_000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"hello, world", "does not start with 'GGUF'"),
        (b"GGUF\x03\x00\x00\x00", "truncated or corrupt"),
        (None, "truncated"),  # the real file cut after its header and some tensors
    ],
)
def test_files_that_are_not_whole_ggufs_are_refused(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(
        content if content is not None else foundation_gguf("smollm2-135m-instruct").read_bytes()[:20_000_000]
    )
    with pytest.raises(InvalidGguf, match=reason):
        read_gguf(path)
