"""ONNX Runtime gives the same numbers as PyTorch for the shipped encoder and for a classifier on it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import torch

from openmaas.recipes.encoders import (
    ClassifierHead,
    EncoderClassifier,
    OnnxRunner,
    SentenceEncoder,
    TextTokenizer,
    accepts_token_types,
    export_onnx,
    load_encoder,
)
from openmaas.recipes.foundation import foundation_directory
from openmaas.recipes.sentence_embedding import EmbeddingInference
from tests.conftest import DATASETS


def real_sentences() -> list[str]:
    with (DATASETS / "sms_spam" / "sms_spam.csv").open(encoding="utf-8") as handle:
        english = [row["text"] for row in csv.DictReader(handle)][:20]
    with (DATASETS / "sib200_zh" / "sib200_zho_Hans_test.csv").open(encoding="utf-8") as handle:
        chinese = [row["text"] for row in csv.DictReader(handle)][:6]
    return english + chinese


def test_embedding_onnx_matches_torch(tmp_path: Path) -> None:
    directory = tmp_path / "minilm"
    shutil.copytree(foundation_directory("all-minilm-l6-v2"), directory)
    texts = real_sentences()
    onnx_vectors, onnx_tokens = EmbeddingInference(directory, "cpu", "onnx").embed(texts)
    torch_vectors, torch_tokens = EmbeddingInference(directory, "cpu", "torch").embed(texts)
    assert onnx_tokens == torch_tokens
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-4


def test_classifier_onnx_matches_torch(tmp_path: Path) -> None:
    directory = foundation_directory("all-minilm-l6-v2")
    encoder = load_encoder(directory)
    uses = accepts_token_types(encoder)
    torch.manual_seed(0)
    model = EncoderClassifier(SentenceEncoder(encoder, uses), ClassifierHead(384, 3), probabilities=True).eval()
    export_onnx(
        EncoderClassifier(SentenceEncoder(load_encoder(directory), uses), model.head, True),
        uses,
        "probabilities",
        tmp_path / "c.onnx",
    )
    batch = TextTokenizer(directory, 256, uses)(real_sentences())
    with torch.inference_mode():
        expected = model(**batch.tensors("cpu")).numpy()
    actual = OnnxRunner(tmp_path / "c.onnx")(batch)
    assert actual.shape == (26, 3)
    assert np.abs(actual - expected).max() < 1e-4
