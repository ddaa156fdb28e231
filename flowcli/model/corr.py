"""All-pairs correlation pyramid with windowed bilinear lookup (RAFT's CorrBlock).

Built once per frame pair; looked up once per refinement iteration.
Channel order of the lookup matches the official code: level-major, and inside
a level index ``i*(2r+1) + j`` samples x-offset ``i-r`` and y-offset ``j-r``.

Unlike the official code, a pyramid level of side 1 does not divide by zero
(the official sampler returns NaN when a padded side is below 128 px): such a
level is sampled with exact pixel coordinates, and levels never shrink to 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _pool_keep_one(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling that keeps a side of 1 at 1 instead of shrinking it to 0."""
    kh = 2 if x.shape[-2] > 1 else 1
    kw = 2 if x.shape[-1] > 1 else 1
    return F.avg_pool2d(x, (kh, kw), stride=(kh, kw))


class CorrPyramid:
    """Correlation of fmap1 (B,D,h,w) against every position of fmap2 (B,D,h,w), pooled 4x."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 4):
        b, d, h, w = fmap1.shape
        self.radius = radius
        fmap1, fmap2 = fmap1.float(), fmap2.float()  # correlation stays float32 in the bf16 path
        corr = torch.matmul(fmap1.reshape(b, d, h * w).transpose(1, 2), fmap2.reshape(b, d, h * w))
        corr = corr.div_(math.sqrt(d)).reshape(b * h * w, 1, h, w)  # in place: the volume is the big one
        self.pyramid = [corr]
        for _ in range(levels - 1):
            corr = _pool_keep_one(corr)
            self.pyramid.append(corr)
        r = radius
        offs = torch.arange(-r, r + 1, dtype=fmap1.dtype, device=fmap1.device)
        # delta[i, j] = (x = offs[i], y = offs[j]): the RAFT meshgrid(dy, dx) quirk.
        dx, dy = torch.meshgrid(offs, offs, indexing="ij")
        self.delta = torch.stack([dx, dy], dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (B,2,h,w) in level-0 pixels -> (B, levels*(2r+1)^2, h, w), channels-last in memory."""
        b, _, h, w = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.pyramid):
            pts = centre / 2**level + self.delta
            out.append(_sample(corr, pts).view(b, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2)


def _sample(img: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear sample img (N,1,H,W) at pixel coords pts (N,a,b,2), zeros outside."""
    hh, ww = img.shape[-2:]
    x, y = pts.split(1, dim=-1)
    if hh > 1 and ww > 1:  # official normalisation (align_corners=True)
        grid = torch.cat([2 * x / (ww - 1) - 1, 2 * y / (hh - 1) - 1], dim=-1)
        return F.grid_sample(img, grid, align_corners=True)
    grid = torch.cat([(2 * x + 1) / ww - 1, (2 * y + 1) / hh - 1], dim=-1)
    return F.grid_sample(img, grid, align_corners=False)
