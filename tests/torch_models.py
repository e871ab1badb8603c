"""Small hand-written CNNs for the torch adapter tests (no torchvision needed).

ResNet with basic and bottleneck blocks (identity and projection shortcuts), a
MobileNet-V2-style net (inverted residuals, depthwise convs), and a VGG-style chain.
`resnet50()` is a full-size ResNet-50 for the latency benchmark.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x)))))); a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), residual add, ReLU."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, stages of residual blocks, global average pool, fc."""

    def __init__(self, stages: list[list[nn.Module]], stem_width: int, num_classes: int, stem_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 3 if stem_stride == 1 else 7, stem_stride, 1 if stem_stride == 1 else 3,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_stride > 1 else nn.Identity()
        self.layers = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        last = stages[-1][-1]
        out_width = last.bn3.num_features if isinstance(last, Bottleneck) else last.bn2.num_features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(out_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def small_resnet(num_classes: int = 10) -> ResNet:
    """Two basic-block stages then one bottleneck stage; identity and projection shortcuts."""
    return ResNet([[BasicBlock(16, 16), BasicBlock(16, 16)],
                   [BasicBlock(16, 32, stride=2), BasicBlock(32, 32)],
                   [Bottleneck(32, 16, stride=2), Bottleneck(64, 16)]], stem_width=16, num_classes=num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (torchvision layout: 3-4-6-3 bottlenecks, stride on the 3x3 conv)."""
    stages, c_in = [], 64
    for width, depth, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        blocks = []
        for i in range(depth):
            blocks.append(Bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = width * Bottleneck.expansion
        stages.append(blocks)
    return ResNet(stages, stem_width=64, num_classes=num_classes, stem_stride=2)


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: 1x1 expand, 3x3 depthwise, 1x1 project; x + f(x) when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Like(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        config = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2)]  # expand, c_out, repeats, first stride
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(inplace=True)]
        c_in = 16
        for expand, c_out, repeats, stride in config:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        layers += [nn.Conv2d(c_in, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean((2, 3)))


class VGGLike(nn.Module):
    """A plain chain: conv-bn-relu stages with max pooling, global pool, two fc layers (the first has a bias)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        widths = [(3, 16), (16, 32), "M", (32, 32), (32, 48), "M"]
        layers: list[nn.Module] = []
        for w in widths:
            if w == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(w[0], w[1], 3, padding=1), nn.BatchNorm2d(w[1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(48, 40), nn.ReLU(inplace=True),
                                        nn.Linear(40, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
