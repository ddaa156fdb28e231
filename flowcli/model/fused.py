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

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

_STATE = {"ok": None, "pack": None}


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


def _packing_check() -> bool:
    """Packed weights (see :func:`packed`) give the same result as plain ones in this torch build."""
    try:
        x = torch.randn(1, 8, 5, 6).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(8, 8, 3, 3), torch.randn(8)
        w_packed = torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, list(x.shape))
        y = _op()(x, w, b, [1, 1], [1, 1], [1, 1], 1, "none", [], "")
        return bool(torch.equal(y, _op()(x, w_packed, b, [1, 1], [1, 1], [1, 1], 1, "none", [], "")))
    except Exception:
        return False


def usable(x: torch.Tensor) -> bool:
    """Fusion applies to this activation (inference: no autograd; and the op works in this torch build)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if torch.is_grad_enabled():  # the fused ops have no backward: neither x nor the weights would get gradients
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if _STATE["ok"] is None:
        _STATE["ok"] = torch.backends.mkldnn.is_available() and _self_check()
    return _STATE["ok"]


@contextlib.contextmanager
def plain_ops():
    """Inside this block every module takes its plain PyTorch path (no fused oneDNN op): the same
    mathematics, op by op, e.g. for torch's FlopCounterMode, which has no formula for fused ops."""
    saved = _STATE["ok"]
    _STATE["ok"] = False
    try:
        yield
    finally:
        _STATE["ok"] = saved


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in place: no new activation-sized buffer on the inference path.

    On a 4-D channels-last tensor, ``gelu_`` takes a slow path in this torch build: measured at
    512x28x40, 1 thread, 1.46 ms against 0.17 ms for the same data in NCHW. The NHWC permutation
    of such a tensor is a plain contiguous view of the same memory, and there it is fast.
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        torch._C._nn.gelu_(x.permute(0, 2, 3, 1))
        return x
    return torch._C._nn.gelu_(x)


PACKED_PER_CONV = 2  # packed weights kept per conv: full and half-size input (the coarse-to-fine guide)
PACK_MAX_PIXELS = 250_000  # frames (run size) above this: no packed weights for the model (limit_packing)


def limit_packing(model: nn.Module, run_hw: tuple[int, int]) -> None:
    """Streaming engines call this with their frames' run size (h, w). Above ``PACK_MAX_PIXELS`` the
    model's convs stop packing, for good (any stream on a shared model may be the large one).

    Packing pays where a frame's convolutions are short (224x320 fp32: 0.68-0.73 -> 0.61-0.65 s per
    frame); at 436x1024 it was within noise (4.44-4.68 s against 4.46-4.52) and its copy of the
    weights raised peak RSS by 17-30 MB (1.01-1.02 GB against 0.98-1.00; the goal there is 1.0).
    """
    if run_hw[0] * run_hw[1] > PACK_MAX_PIXELS:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.__dict__["_no_packing"] = True
                module.__dict__.pop("_packed_weights", None)


class _PackedWeights(list):
    """A conv's packed weights, [(weight, its storage, key, packed)] newest first. Not copied: a deepcopy or
    pickle of the module starts empty (oneDNN's opaque tensors can be neither)."""

    def __deepcopy__(self, memo):
        return _PackedWeights()

    def __reduce__(self):
        return _PackedWeights, ()


def packed(conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight`` (the conv's own or one derived from it) in oneDNN's blocked layout for inputs
    shaped like ``x``, made once and cached on ``conv``.

    Given a plain weight, every oneDNN convolution first reorders it into that layout, on every
    call: at 224x320 (fp32, 2 threads) 590 reorders, 33 ms of a 0.69 s frame, and the convolution
    behind each ran slower too (a 512->768 1x1 conv: 3.33 -> 2.63 ms with the weight packed once).
    Results are bit-identical. An entry is reused only for the same tensor object, storage, in-place
    version and input shape; it keeps its storage alive, so a new storage (``param.data = ...``,
    ``.to()``) cannot take the old address and be mistaken for it. A module's own weight that is an
    inference tensor (built under ``inference_mode``) has no version counter and is not cached.
    """
    if _STATE["pack"] is None:
        _STATE["pack"] = _packing_check()
    if not _STATE["pack"] or conv.__dict__.get("_no_packing"):
        return weight
    if weight.is_inference():
        if weight is conv.weight:
            return weight
        version = -1  # a derived weight made under inference_mode: a new tensor whenever its sources change
    else:
        version = weight._version
    shape = tuple(x.shape)
    key = (weight.data_ptr(), version, weight.dtype, shape)
    cache = conv.__dict__.setdefault("_packed_weights", _PackedWeights())
    for i, (source, _storage, source_key, weight_packed) in enumerate(cache):
        if source is weight and source_key == key:
            if i:
                cache.insert(0, cache.pop(i))
            return weight_packed
    weight_packed = torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(shape))
    cache.insert(0, (weight, weight.detach(), key, weight_packed))
    del cache[PACKED_PER_CONV:]
    return weight_packed


def _call(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
          post: str) -> torch.Tensor:
    """One oneDNN convolution of ``x`` with ``conv``'s geometry and a packed ``weight``, then ``post``."""
    return _op()(x, packed(conv, weight, x), bias, list(conv.padding), list(conv.stride), list(conv.dilation),
                 conv.groups, post, [], "none" if post == "gelu" else "")


def conv(x: torch.Tensor, module: nn.Conv2d, relu: bool = False) -> torch.Tensor:
    """module(x) [then ReLU], with the packed weight in one call on the fast path (see :func:`packed`)."""
    if not usable(x):
        y = module(x)
        return y.relu_() if relu else y
    return _call(x, module, module.weight, module.bias, "relu" if relu else "none")


def conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """gelu(conv(x)) (exact erf GELU) in one oneDNN call."""
    return _call(x, conv, conv.weight, conv.bias, "gelu")


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: bool) -> torch.Tensor:
    """[relu](bn(conv(x))) for an eval-mode BatchNorm, as one oneDNN call.

    Eval-mode batch norm is a per-channel affine map, so it is folded into the conv's weights
    and bias (computed in float64, cached until any of the tensors changes).
    """
    weight, bias = _bn_folded(conv, bn)
    return _call(x, conv, weight, bias, "relu" if relu else "none")


def derived(module: nn.Module, name: str, sources: list[torch.Tensor], make):
    """``make()``, computed once and cached on ``module`` as ``name`` until any of ``sources``
    changes (identity, storage, in-place version, dtype or device): weights derived for inference are made
    once, not per frame or per iteration, and a load_state_dict or .to() invalidates them."""
    key = tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device) for t in sources)
    cached = getattr(module, name, None)
    if cached is None or cached[0] != key:  # (the sources' storages are kept: an address is not reused)
        cached = (key, make(), [t.detach() for t in sources])
        setattr(module, name, cached)
    return cached[1]


def _bn_folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    def make():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
        dt = conv.weight.dtype
        return weight.to(dt).contiguous(memory_format=torch.channels_last), bias.to(dt)
    sources = [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    return derived(conv, "_bn_fold", sources + ([conv.bias] if conv.bias is not None else []), make)


def residual_conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """gelu(x + conv(x)) in one oneDNN call, for a square 'same' conv with as many outputs as inputs.

    The residual is folded into the weights (identity added to the kernel's centre tap), so the add
    and the GELU become post-ops of one convolution instead of two more passes over the tensor.
    oneDNN cannot fuse a GELU after its binary add, hence the fold. The folded kernel is made once
    per weight version and cached on the module.
    """
    if x.dtype != torch.float32:
        raise TypeError("the identity fold is exact only in float32")
    weight, bias = with_identity(conv)
    return _call(x, conv, weight, bias, "gelu")


def with_identity(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (weight + identity, bias) of ``conv``, cached (a 1x1 depthwise conv's is its (1 + w, b))."""
    def make():
        w = conv.weight.detach().float().clone()
        kh, kw = w.shape[-2] // 2, w.shape[-1] // 2
        if conv.groups == 1:  # pointwise C->C: W + I
            w[:, :, kh, kw] += torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
        else:                 # depthwise: centre tap + 1
            w[:, 0, kh, kw] += 1
        return w.contiguous(memory_format=torch.channels_last), conv.bias.detach().float()
    return derived(conv, "_identity_fold", [conv.weight, conv.bias], make)


def conv_add(x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(x) + other in one oneDNN call."""
    return _op().binary(x, other, packed(conv, conv.weight, x), conv.bias, list(conv.padding), list(conv.stride),
                        list(conv.dilation), conv.groups, "add", 1.0, None, [], "")
