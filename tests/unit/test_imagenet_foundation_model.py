"""The foundation image model's directory (recipes/imagenet.py) served by the real predictor behind a real batch
queue: unique ImageNet labels, and predictions and embeddings of concurrent callers sharing one batch, each kind
stacked into one forward pass, with the results each would get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from openmaas.domain.entities import ModelVersion
from openmaas.domain.results import Classification
from openmaas.recipes.imagenet import imagenet_labels, write_pretrained_classifier
from openmaas.runtime.batching import BatchQueue, BatchStats
from openmaas.runtime.predictors import ClassifierPredictor, ImageToEmbed, load_predictor

skimage_data = pytest.importorskip("skimage.data")


def test_the_imagenet_labels_are_unique_and_in_the_logits_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert (labels[281], labels[285], labels[967]) == ("tabby", "Egyptian cat", "espresso")
    assert (labels[134], labels[517]) == ("crane (n02012849)", "crane (n03126707)")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> ClassifierPredictor:
    directory = tmp_path_factory.mktemp("efficientnet") / "model"
    write_pretrained_classifier(directory)
    version = ModelVersion(
        "efficientnet-lite0", 1, "system", "image-classification", "image-classifier", "torch",
        tuple(imagenet_labels()), {}, {}, None, None, None, 0, "sha", {}, 0.0,
    )  # fmt: skip
    loaded = load_predictor(version, directory, "cpu")
    assert isinstance(loaded, ClassifierPredictor) and loaded.embeds_images
    return loaded


async def test_predictions_and_embeddings_share_a_batch_and_match_their_lone_results(
    predictor: ClassifierPredictor,
) -> None:
    coffee, chelsea = skimage_data.coffee(), skimage_data.chelsea()
    alone_probabilities = predictor.run_batch([coffee])[0]
    alone_vector = predictor.run_batch([ImageToEmbed(chelsea)])[0]

    sizes: list[int] = []
    stats = BatchStats(on_batch=[lambda size, _: sizes.append(size)])
    queue = BatchQueue(predictor.run_batch, max_batch_size=8, max_wait_ms=200, max_queue_size=16, stats=stats)
    try:
        classified, embedded = await asyncio.gather(
            queue.submit([coffee, chelsea]), queue.submit([ImageToEmbed(chelsea), ImageToEmbed(coffee)])
        )
    finally:
        await queue.close()
    assert sizes == [4]
    best = Classification(predictor.labels, np.stack(classified)).best_labels()
    assert best[0] == "espresso" and best[1] in {"tabby", "tiger cat", "Egyptian cat"}
    assert np.allclose(classified[0], alone_probabilities, atol=1e-5)
    assert embedded[0].shape == (1280,) and np.allclose(embedded[0], alone_vector, atol=1e-5)
    assert np.allclose(np.linalg.norm(np.stack(embedded), axis=1), 1.0, atol=1e-5)
