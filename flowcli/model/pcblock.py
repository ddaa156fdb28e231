"""PCBlock: the SKFlow "large-kernel" block used for the whole MemFlow update path.

    x = gelu(x + ffn1(x)); for each depthwise conv: x = gelu(x + dw(x));
    x = gelu(x + pw(x)); out = ffn2(x)

Widths follow the official ``int(1.5 * C)`` hidden size so checkpoints load.
A 1x1 depthwise conv is just a per-channel scale and bias, so it is computed as
one (the conv kernel for it is slow on CPU); the weights stay conv-shaped.
Larger depthwise kernels run in float32 even in the bfloat16 path: oneDNN's
bf16 channels-last depthwise kernel was pathologically slow here (minutes per
call at 55x64), while float32 channels-last is fast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fused


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

    def forward(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """``gelu=True`` returns gelu(block(x)), fused into the last convolution on the fast path."""
        if fused.usable(x):
            return self._forward_fused(x, gelu)
        x = F.gelu(x + self.ffn1(x))
        x = self._depthwise(x)
        x = F.gelu(x + self.pw(x))
        x = self.ffn2(x)
        return F.gelu(x) if gelu else x

    def _forward_fused(self, x: torch.Tensor, gelu: bool) -> torch.Tensor:
        """Same as forward, with GELUs and residual adds done as oneDNN conv post-ops."""
        x = fused.gelu_(fused.conv_add(fused.conv_gelu(x, self.ffn1[0]), x, self.ffn1[2]))
        x = self._depthwise(x, fold=True)
        if x.dtype == torch.float32:
            x = fused.residual_conv_gelu(x, self.pw)
        else:  # bfloat16 weights cannot hold W + I exactly
            x = fused.gelu_(fused.conv_add(x, x, self.pw))
        x = fused.conv_gelu(x, self.ffn2[0])
        return fused.conv_gelu(x, self.ffn2[2]) if gelu else fused.conv(x, self.ffn2[2])

    def _depthwise(self, x: torch.Tensor, fold: bool = False) -> torch.Tensor:
        """x <- gelu(x + dw(x)) per kernel. ``fold`` (fast path): one fused float32 call per kernel
        (see fused.residual_conv_gelu); a bfloat16 input is converted for it and back."""
        for conv in self.conv_list:
            if conv.kernel_size == (1, 1) and fold and x.dtype == torch.float32:  # gelu((1 + w) x + b), in place
                scale, bias = fused.with_identity(conv)  # x + (w x + b) = (1 + w) x + b
                x = fused.gelu_(torch.addcmul(bias.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1)))
                continue
            if conv.kernel_size == (1, 1):
                y = torch.addcmul(conv.bias.view(1, -1, 1, 1), x, conv.weight.view(1, -1, 1, 1))
            elif fold:
                x = fused.residual_conv_gelu(x.float(), conv).to(x.dtype)
                continue
            elif x.dtype == torch.bfloat16 and x.device.type == "cpu":
                weight, bias = _float_weights(conv)
                y = F.conv2d(x.float(), weight, bias, padding=conv.padding, groups=conv.groups).to(x.dtype)
            else:
                y = conv(x)
            x = F.gelu(x + y)
        return x


def _float_weights(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 copies of a depthwise conv's weights for the bf16 path, made once at inference
    (not per iteration); recomputed while training, where the weights change every step."""
    if torch.is_grad_enabled():
        return conv.weight.float(), conv.bias.float()
    return fused.derived(conv, "_fp32_cache", [conv.weight, conv.bias],
                         lambda: (conv.weight.detach().float(), conv.bias.detach().float()))
