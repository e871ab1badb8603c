"""Six hand-written architectures of different families, for the latency-accuracy benchmark and its tests.

Each builder takes `scale` (channel widths multiplied by it, rounded to multiples of 8) and
`num_classes`; at `scale=1` the widths are those of the published networks. No torchvision or
timm needed; the layer structure follows the papers:
- `resnet18`: basic blocks 2-2-2-2 (He et al. 2016), stride on the first 3x3 conv of a stage;
- `resnet50`: bottlenecks 3-4-6-3 (from `torch_models`);
- `mobilenet_v2`: inverted residuals with ReLU6 and linear bottlenecks (Sandler et al. 2018);
- `vgg11`: a plain conv-BN-ReLU chain with max pooling, global pooling and one classifier;
- `efficientnet_b0`: MBConv blocks with squeeze-and-excitation and SiLU (Tan & Le 2019),
  no stochastic depth;
- `vit_tiny`: a timm-layout ViT (from `vit_models`): embed 192, 3 heads, 12 blocks, MLP 768.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from torch_models import BasicBlock, Bottleneck, InvertedResidual, ResNet
from vit_models import TimmStyleViT


def _w(channels: float, scale: float) -> int:
    return max(8, int(round(channels * scale / 8)) * 8)


def resnet18(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    stages, c_in = [], _w(64, scale)
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        c_out = _w(width, scale)
        stages.append([BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)])
        c_in = c_out
    return ResNet(stages, stem_width=_w(64, scale), num_classes=num_classes, stem_stride=2)


def resnet50(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    stages, c_in = [], _w(64, scale)
    for width, depth, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        blocks = []
        for i in range(depth):
            blocks.append(Bottleneck(c_in, _w(width, scale), stride if i == 0 else 1))
            c_in = _w(width, scale) * Bottleneck.expansion
        stages.append(blocks)
    return ResNet(stages, stem_width=_w(64, scale), num_classes=num_classes, stem_stride=2)


class MobileNetV2(nn.Module):
    """(expand, channels, repeats, stride) as in the paper; 1280-wide last conv (scaled)."""

    CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1))

    def __init__(self, scale: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        c_in = _w(32, scale)
        layers: list[nn.Module] = [nn.Conv2d(3, c_in, 3, 2, 1, bias=False), nn.BatchNorm2d(c_in), nn.ReLU6(inplace=True)]
        for expand, channels, repeats, stride in self.CONFIG:
            c_out = _w(channels, scale)
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        last = _w(1280, max(scale, 1.0))
        layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def mobilenet_v2(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return MobileNetV2(scale, num_classes)


class VGG(nn.Module):
    """VGG-11 layout with BatchNorm: conv-BN-ReLU, max pooling between stages, global average pool, fc."""

    LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, scale: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in self.LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = _w(item, scale)
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def vgg11(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return VGG(scale, num_classes)


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(silu(reduce(mean(x))))): channel attention with 1x1 convs."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Expand 1x1 (unless expand == 1), depthwise kxk, squeeze-excite (block input / 4), project 1x1;
    x + f(x) when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.SiLU(inplace=True), SqueezeExcite(hidden, max(1, c_in // 4)),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNet(nn.Module):
    """EfficientNet-B0: (expand, channels, repeats, stride, kernel) per stage, 1280-wide head."""

    CONFIG = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
              (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))

    def __init__(self, scale: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        c_in = _w(32, scale)
        layers: list[nn.Module] = [nn.Conv2d(3, c_in, 3, 2, 1, bias=False), nn.BatchNorm2d(c_in), nn.SiLU(inplace=True)]
        for expand, channels, repeats, stride, kernel in self.CONFIG:
            c_out = _w(channels, scale)
            for i in range(repeats):
                layers.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        last = _w(1280, max(scale, 1.0))
        layers += [nn.Conv2d(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.SiLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def efficientnet_b0(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    return EfficientNet(scale, num_classes)


def vit_tiny(scale: float = 1.0, num_classes: int = 1000, image_size: int = 224) -> nn.Module:
    """Patch 16 at 224 px and above, else patch 8 (64 px: 64 patches and a class token)."""
    heads = 3
    dim = max(heads * 8, int(round(192 * scale / (heads * 8))) * heads * 8)
    patch = 16 if image_size >= 224 else 8
    return TimmStyleViT(image_size=image_size, patch=patch, dim=dim, depth=12, num_heads=heads, mlp_hidden=4 * dim,
                        num_classes=num_classes)


def settle_batchnorm(model: nn.Module, inputs: list[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to those of `inputs` (as training would), then eval mode.

    A randomly initialised network in eval mode keeps BatchNorm's initial statistics (mean 0,
    variance 1), which do not normalise anything: activations grow or vanish with depth, ReLU6 and
    sigmoid saturate, and most Taylor scores become exactly 0. Settled statistics give the
    activations a trained network has, without training."""
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in batchnorms:
        m.reset_running_stats()
        m.momentum = None            # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for x in inputs:
            model(x)
    return model.eval()


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "vgg11": vgg11,
    "efficientnet_b0": efficientnet_b0, "vit_tiny": vit_tiny}
