"""Small untrained ResNet-like backbones under torchvision's names (pretrained weights cannot be fetched)."""

from __future__ import annotations

from typing import Any

from torch import nn


class _ResNet(nn.Module):
    def __init__(self, num_classes: int = 1000, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=4, padding=3)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Any) -> Any:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(weights: Any = None, **kwargs: Any) -> nn.Module:
    return _ResNet(**kwargs)


resnet34 = resnet50 = resnet101 = resnet152 = resnet18


def get_model(name: str, weights: Any = None, **kwargs: Any) -> nn.Module:
    return _ResNet(**kwargs)


def __getattr__(name: str) -> Any:
    """Any other model builder or weights enum (e.g. vgg16, VGG16_Weights, which torchmetrics imports)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return get_model
