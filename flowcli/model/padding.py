"""Padding to a multiple of 8, identical to the official InputPadder ('sintel' mode).

One addition: sides below 16 px are padded up to 16, because the instance norm
of the feature encoder needs more than one pixel at 1/8 resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class InputPadder:
    """Replicate-pad (H, W) up to multiples of 8: left/top get the floor half."""

    def __init__(self, height: int, width: int, multiple: int = 8, min_side: int = 16):
        pad_h = max((-height) % multiple, min_side - height)
        pad_w = max((-width) % multiple, min_side - width)
        self.size = (height, width)
        self.lrtb = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

    @property
    def padded_size(self) -> tuple[int, int]:
        l, r, t, b = self.lrtb
        return self.size[0] + t + b, self.size[1] + l + r

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        if not any(self.lrtb):
            return x
        return F.pad(x, list(self.lrtb), mode="replicate")

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        l, r, t, b = self.lrtb
        hh, ww = x.shape[-2:]
        return x[..., t:hh - b, l:ww - r]
