"""A synthetic stand-in for the parts of torchvision that Lightning projects touch (no downloads here).

MNIST/CIFAR10/ImageFolder give deterministic fake images whose label is visible in the image (so a model
can learn); transforms and utils cover ToTensor/Normalize/Compose/Resize/crops/flips and make_grid/
save_image; models.resnet* build small untrained ResNets (weights are never downloaded).
"""

from . import datasets, models, transforms, utils

__version__ = "0.0+synthetic"
__all__ = ["datasets", "models", "transforms", "utils"]
