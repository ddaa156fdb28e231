"""BasicEncoder (RAFT): image -> 1/8-resolution feature map.

Used twice: the feature encoder (instance norm, no parameters in the norms) and
the context encoder (batch norm). Module names match the official checkpoints,
including the stride-2 residual blocks' ``downsample = Sequential(conv, norm3)``
which shares ``norm3`` (so its keys appear twice in the state_dict).
"""
from __future__ import annotations

import torch
from torch import nn

from . import fused


SQUARE_BAND_BYTES = 2**20  # InstanceNorm.normalize_: size of one band of squared deviations


class InstanceNorm(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (affine=False: no parameters, no state_dict keys) that keeps NHWC.

    PyTorch's instance norm returns NCHW for a channels-last input, so every conv after it
    converted the layout back: those copies and the norm were ~45% of the feature encoder's
    time at 436x1024. For NHWC input this computes the same statistics in place of it:
    mean, then the mean of squared deviations (two passes, as numerically safe as the
    built-in), in float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        if not torch.is_grad_enabled() and x.dtype != torch.float32:
            # bf16 inference: one float32 copy normalised in place instead of the four full-size
            # passes below (feature encoder at 436x1024: 0.356 -> 0.287 s; bf16 peak RSS -40 MB).
            return self.normalize_(x.float()).to(x.dtype)
        xf = x.float()
        dev = xf - xf.mean((2, 3), keepdim=True)
        var = dev.square().mean((2, 3), keepdim=True)
        inv = torch.rsqrt(var + self.eps)
        out = dev * inv if dev.requires_grad else dev.mul_(inv)  # autograd needs dev for square()
        return out.to(x.dtype)

    def normalize_(self, y: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """The same normalisation (then ReLU) in place on ``y``, a float32 NHWC temporary at inference:
        no new tensor of y's size, which at 1/2 resolution is 29 MB per call at 436x1024.

        The squared deviations are summed a band of rows at a time (~1 MB each: a band of an NHWC
        map is one contiguous block), so no y-sized temporary exists either; the built-in
        no-temporary reductions (``var``, ``vector_norm``) were 4x slower over H and W of NHWC."""
        b, c, h, w = y.shape
        y.sub_(y.mean((2, 3), keepdim=True))
        rows = max(1, SQUARE_BAND_BYTES // (c * w * y.element_size()))
        sq = torch.zeros(b, c, 1, 1, dtype=y.dtype, device=y.device)
        for top in range(0, h, rows):
            sq.add_(y[:, :, top:top + rows].square().sum((2, 3), keepdim=True))
        y.mul_(torch.rsqrt(sq.div_(h * w).add_(self.eps)))
        return y.relu_() if relu else y


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return InstanceNorm(channels)
    raise ValueError(f"unknown norm {kind!r}")


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = _norm(norm, c_out)
        self.norm2 = _norm(norm, c_out)
        self.downsample = None
        if stride != 1:
            self.norm3 = _norm(norm, c_out)
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = _inference_path(self.norm1, x)
        if fast == "batch":
            return self._forward_folded(x)
        if fast == "instance":
            return self._forward_in_place(x)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with eval-mode batch norms folded into the convolutions (same maths)."""
        y = fused.conv_bn(x, self.conv1, self.norm1, relu=True)
        y = fused.conv_bn(y, self.conv2, self.norm2, relu=True)
        if self.downsample is not None:
            x = fused.conv_bn(x, self.downsample[0], self.norm3, relu=False)
        return y.add_(x).relu_()

    def _forward_in_place(self, x: torch.Tensor) -> torch.Tensor:
        """Inference with instance norms: normalise, ReLU and add in place on the conv outputs."""
        y = self.norm1.normalize_(fused.conv(x, self.conv1), relu=True)
        y = self.norm2.normalize_(fused.conv(y, self.conv2), relu=True)
        if self.downsample is not None:
            x = self.norm3.normalize_(fused.conv(x, self.downsample[0]))
        return y.add_(x).relu_()


class BasicEncoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, out_dim, H/8, W/8)."""

    def __init__(self, out_dim: int, norm: str, widths: tuple[int, int, int] = (64, 96, 128)):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(3, w1, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, w1)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(ResidualBlock(w1, w1, norm, 1), ResidualBlock(w1, w1, norm, 1))
        self.layer2 = nn.Sequential(ResidualBlock(w1, w2, norm, 2), ResidualBlock(w2, w2, norm, 1))
        self.layer3 = nn.Sequential(ResidualBlock(w2, w3, norm, 2), ResidualBlock(w3, w3, norm, 1))
        self.conv2 = nn.Conv2d(w3, out_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = _inference_path(self.norm1, x)
        if fast == "batch":
            x = fused.conv_bn(x, self.conv1, self.norm1, relu=True)
        elif fast == "instance":
            x = self.norm1.normalize_(fused.conv(x, self.conv1), relu=True)
        else:
            x = self.relu1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return fused.conv(x, self.conv2)


def _inference_path(norm: nn.Module, x: torch.Tensor) -> str | None:
    """Which inference fast path applies on the fused CPU path (no autograd, NHWC): "batch" (eval
    batch norms folded into the convs), "instance" (float32 instance norms in place), or None."""
    if torch.is_grad_enabled() or not fused.usable(x):  # (the input image never requires grad)
        return None
    if isinstance(norm, nn.BatchNorm2d) and not norm.training:
        return "batch"
    if isinstance(norm, InstanceNorm) and x.dtype == torch.float32:
        return "instance"
    return None
