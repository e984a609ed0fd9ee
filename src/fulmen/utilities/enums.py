"""Enums of string values that compare equal to plain strings (`GradClipAlgorithmType.NORM == "norm"`)."""

from __future__ import annotations

from fulmen.states import LightningEnum

__all__ = ["GradClipAlgorithmType", "LightningEnum"]


class GradClipAlgorithmType(LightningEnum):
    """How `gradient_clip_algorithm` clips: by `"value"` or by the total `"norm"`."""

    VALUE = "value"
    NORM = "norm"
