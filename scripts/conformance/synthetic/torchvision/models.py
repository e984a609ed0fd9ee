"""Small untrained ResNet-like backbones under torchvision's names (pretrained weights cannot be fetched)."""

from __future__ import annotations

from typing import Any

from torch import nn


class _ResNet(nn.Module):
    """Narrow inside; the pooled features are widened (a 1x1 conv) to the real model's feature size, which
    code that replaces the head (e.g. `nn.Linear(2048, ...)` after resnet50's children) relies on."""

    def __init__(self, num_classes: int = 1000, width: int = 16, features: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=4, padding=3)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.widen = nn.Conv2d(width, features, 1)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: Any) -> Any:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.widen(self.avgpool(x)).flatten(1))


# the feature size of torchvision's ResNets: 512 for the basic-block ones, 2048 for the bottleneck ones
_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def get_model(name: str, weights: Any = None, **kwargs: Any) -> nn.Module:
    return _ResNet(features=_FEATURES.get(name, 512), **kwargs)


def resnet18(weights: Any = None, **kwargs: Any) -> nn.Module:
    return get_model("resnet18", **kwargs)


def resnet34(weights: Any = None, **kwargs: Any) -> nn.Module:
    return get_model("resnet34", **kwargs)


def resnet50(weights: Any = None, **kwargs: Any) -> nn.Module:
    return get_model("resnet50", **kwargs)


def resnet101(weights: Any = None, **kwargs: Any) -> nn.Module:
    return get_model("resnet101", **kwargs)


def resnet152(weights: Any = None, **kwargs: Any) -> nn.Module:
    return get_model("resnet152", **kwargs)


def __getattr__(name: str) -> Any:
    """Any other model builder or weights enum (e.g. vgg16, VGG16_Weights, which torchmetrics imports)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return get_model
