"""oneDNN fused convolutions for CPU inference (conv + GELU, conv + residual add).

The update block is a chain of ``gelu(x + conv(x))`` steps; done as separate
ops, the adds and GELUs cost as much memory traffic as the convolutions. oneDNN
can apply them as post-ops of the convolution. This uses the same internal op
that ``torch.compile`` (inductor) emits for these fusions, so it needs no
compile step. It is used only where it is known to work (CPU, no autograd,
channels-last, float32/bfloat16) and switched off for good if the op is
missing or fails its self-check; results equal the unfused ops within float
rounding (checked by the conformance tests, which run this path).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_STATE = {"ok": None}


def _op():
    return torch.ops.mkldnn._convolution_pointwise


def _self_check() -> bool:
    try:
        x = torch.randn(1, 8, 5, 6).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(8, 8, 1, 1), torch.randn(8)
        y = _op()(x, w, b, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none")
        z = _op().binary(x, x, w, b, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], "")
        ok_y = torch.allclose(y, F.gelu(F.conv2d(x, w, b)), atol=1e-5)
        ok_z = torch.allclose(z, F.conv2d(x, w, b) + x, atol=1e-5)
        return bool(ok_y and ok_z)
    except Exception:
        return False


def usable(x: torch.Tensor) -> bool:
    """Fusion applies to this activation (and the op works in this torch build)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if _STATE["ok"] is None:
        _STATE["ok"] = torch.backends.mkldnn.is_available() and _self_check()
    return _STATE["ok"]


def conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """gelu(conv(x)) (exact erf GELU) in one oneDNN call."""
    return _op()(x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                 conv.groups, "gelu", [], "none")


def conv_add(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(x) + other in one oneDNN call."""
    return _op().binary(x, other, conv.weight, conv.bias, list(conv.padding), list(conv.stride),
                        list(conv.dilation), conv.groups, "add", 1.0, None, [], "")
