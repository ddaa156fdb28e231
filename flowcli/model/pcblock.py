"""PCBlock: the SKFlow "large-kernel" block used for the whole MemFlow update path.

    x = gelu(x + ffn1(x)); for each depthwise conv: x = gelu(x + dw(x));
    x = gelu(x + pw(x)); out = ffn2(x)

Widths follow the official ``int(1.5 * C)`` hidden size so checkpoints load.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _ffn(c_in: int, c_out: int) -> nn.Sequential:
    hidden = int(1.5 * c_in)
    return nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.GELU(), nn.Conv2d(hidden, c_out, 1))


class PCBlock(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H, W) with square 'same' depthwise kernels ``kernels``."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...]):
        super().__init__()
        self.conv_list = nn.ModuleList(
            nn.Conv2d(c_in, c_in, k, padding=k // 2, groups=c_in) for k in kernels
        )
        self.ffn1 = _ffn(c_in, c_in)
        self.pw = nn.Conv2d(c_in, c_in, 1)
        self.ffn2 = _ffn(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(x + self.ffn1(x))
        for conv in self.conv_list:
            x = F.gelu(x + conv(x))
        x = F.gelu(x + self.pw(x))
        return self.ffn2(x)
