"""make_grid and save_image (writes a .pt of the grid instead of a PNG)."""

from __future__ import annotations

from typing import Any

import torch


def make_grid(tensor: torch.Tensor, nrow: int = 8, **kwargs: Any) -> torch.Tensor:
    if tensor.dim() == 3:
        tensor = tensor[:, None]
    return torch.cat(list(tensor), dim=-1)


def save_image(tensor: torch.Tensor, fp: Any, **kwargs: Any) -> None:
    torch.save(make_grid(tensor.detach().cpu()), str(fp) + ".pt")
