"""torchvision.transforms (its classes live in .transforms, as in torchvision)."""

from . import transforms as transforms
from .transforms import *  # noqa: F403
