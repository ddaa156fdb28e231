"""MemFlowNet: the estimator (MemFlow) and the predictor (MemFlow-P) in one module.

The network is used step by step by the streaming engine (``flowcli.engine``):

* ``encode_features(img)``: (B,3,H,W) -> (B,feature_dim,H/8,W/8); each frame once.
* ``encode_context(img)``: recurrent state, context and attention query/key.
* ``estimate(ctx, fmap1, fmap2, memory, iters)``: recurrent refinement of the
  flow from the first to the second frame, reading the key/value memory.
* ``predict(ctx, memory, forward_flow)``: MemFlow-P, flow to the *next* frame
  from the current frame's context and the memory of past motion only.

Images are normalised to [-1, 1] and padded to a multiple of 8 by the caller.
Parameter names and shapes match the official checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MemoryAttention, MemoryReader, from_tokens, memory_readout, to_tokens
from .config import ModelConfig
from .corr import CorrPyramid
from .encoder import BasicEncoder
from .memory import KeyValueMemory
from .update import UpdateBlock
from .workspace import Workspace


@dataclass
class Context:
    """Per-frame context. net/inp (B,C,h,w); query/key as tokens (B,h*w,C)."""

    net: torch.Tensor | None
    inp: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    size: tuple[int, int]


@dataclass
class Estimate:
    flow_low: torch.Tensor            # (B,2,h,w) in 1/8-resolution pixels
    flow_up: torch.Tensor             # (B,2,8h,8w) in full-resolution pixels
    value: torch.Tensor               # (B,h*w,Cv) memory value of the last iteration (official: pre-update flow)
    predictions: list[torch.Tensor] = field(default_factory=list)  # upsampled flow after every iteration (training)
    motions: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (flow in, motion features)
    #   per iteration (training): what the motion encoder saw and produced, for deep supervision


def coords_grid(b: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(B,2,h,w) pixel coordinates, channel 0 = x, channel 1 = y."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys]).unsqueeze(0).expand(b, -1, -1, -1)


def upsample_convex(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RAFT convex upsampling: (B,2,h,w) + mask (B,576,h,w) -> (B,2,8h,8w), vectors x8.

    Each fine pixel is a softmax-weighted mix of its coarse pixel's 3x3 neighbourhood. The nine
    weighted terms are accumulated one by one in the mask's NHWC order, instead of as one
    (B,2,9,8,8,h,w) product summed over the 9: measured 1.15 -> 0.65 ms at 28x40 and
    11.8 -> 4.8 ms at 55x128 (2 threads), same result within float rounding.
    """
    b, _, h, w = flow.shape
    weights = torch.softmax(mask.permute(0, 2, 3, 1).reshape(b, h * w, 9, 64), dim=2)    # (B,hw,9,64)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(b, 2, 9, h * w, 1)          # (B,2,9,hw,1)
    up = weights[:, None, :, 0] * neighbours[:, :, 0]                                   # (B,2,hw,64)
    for k in range(1, 9):
        up.addcmul_(weights[:, None, :, k], neighbours[:, :, k])
    return up.view(b, 2, h, w, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, 2, 8 * h, 8 * w)


class MemFlowNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.predict:
            self.motion_prompt = nn.Parameter(torch.zeros(1, cfg.motion_dim, 1, 1))
            cnet_out = cfg.context_dim
        else:
            cnet_out = cfg.hidden_dim + cfg.context_dim
        self.cnet = BasicEncoder(cnet_out, "batch", cfg.encoder_widths)
        self.fnet = BasicEncoder(cfg.feature_dim, "instance", cfg.encoder_widths)
        self.update_block = UpdateBlock(cfg)
        self.att = MemoryAttention(cfg)

    # -- encoders ---------------------------------------------------------
    def encode_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.fnet(image)

    def encode_context(self, image: torch.Tensor) -> Context:
        out = self.cnet(image)
        if self.cfg.predict:
            net, inp = None, torch.relu(out)
        else:
            net, inp = torch.split(out, [self.cfg.hidden_dim, self.cfg.context_dim], dim=1)
            net, inp = torch.tanh(net), torch.relu(inp)
        query, key = self.att.query_key(inp)
        return Context(net, inp, to_tokens(query), to_tokens(key), tuple(inp.shape[-2:]))

    def new_memory(self) -> KeyValueMemory:
        return KeyValueMemory(self.cfg.memory_max_frames, self.cfg.memory_min_frames)

    def correlation(self, fmap1: torch.Tensor, fmap2: torch.Tensor, workspace: Workspace | None = None
                    ) -> CorrPyramid:
        return CorrPyramid(fmap1, fmap2, self.cfg.corr_levels, self.cfg.corr_radius, workspace)

    # -- estimation ----------------------------------------------------------
    def estimate(self, ctx: Context, fmap1: torch.Tensor, fmap2: torch.Tensor,
                 memory: KeyValueMemory | None, iters: int, flow_init: torch.Tensor | None = None,
                 all_predictions: bool = False, workspace: Workspace | None = None) -> Estimate:
        """Refine flow fmap1 -> fmap2 for ``iters`` iterations. The memory is read, not written.
        ``workspace``: keep the large per-pair buffers for the next pair (streaming engines)."""
        if iters < 1:
            raise ValueError("iters must be >= 1")
        h, w = ctx.size
        b = fmap1.shape[0]
        dt = ctx.inp.dtype  # the update block's dtype (bfloat16 in the bf16 fast path)
        corr_fn = self.correlation(fmap1, fmap2, workspace)
        coords0 = coords_grid(b, h, w, fmap1.device, torch.float32)
        coords1 = coords0 if flow_init is None else coords0 + flow_init
        keys, _ = memory.with_current(ctx.key) if memory is not None else (ctx.key, None)
        past_values = memory.values if memory is not None else None
        read = MemoryReader(ctx.query, keys, past_values, self.cfg.train_avg_length, workspace=workspace)
        ub = self.update_block
        net, predictions, motions = ctx.net, [], []
        for it in range(iters):
            coords1 = coords1.detach()
            corr = corr_fn(coords1).to(dt)
            flow = coords1 - coords0
            motion, value = ub.get_motion_and_value(flow.to(dt), corr)
            if all_predictions:
                motions.append((flow, motion))
            value = to_tokens(value)
            readout = from_tokens(read(value), h, w)
            need_mask = all_predictions or it == iters - 1
            net, mask, delta = ub(net, ctx.inp, motion, motion + ub.aggregator.gamma * readout, need_mask)
            coords1 = coords1 + delta.float()
            if all_predictions:
                predictions.append(upsample_convex(coords1 - coords0, mask.float()))
        flow_low = coords1 - coords0
        del corr_fn, read  # without a workspace, the pair's largest buffers go before the upsampling's temporaries
        flow_up = predictions[-1] if predictions else upsample_convex(flow_low, mask.float())
        return Estimate(flow_low, flow_up, value, predictions, motions)

    # -- prediction (MemFlow-P) -------------------------------------------------
    def motion_value(self, corr_fn: CorrPyramid, flow: torch.Tensor) -> torch.Tensor:
        """Memory value of a pair whose flow is known: motion features at coords0 + flow."""
        b, _, h, w = flow.shape
        dt = self.motion_prompt.dtype if self.cfg.predict else self.fnet.conv1.weight.dtype
        coords = coords_grid(b, h, w, flow.device, torch.float32) + flow.float()
        _, value = self.update_block.get_motion_and_value(flow.to(dt), corr_fn(coords).to(dt))
        return to_tokens(value)

    def predict(self, ctx: Context, memory: KeyValueMemory, forward_flow: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow from this frame to the next, before the next exists. Returns (low, up)."""
        h, w = ctx.size
        b = ctx.inp.shape[0]
        glob = self.motion_prompt.expand(b, -1, h, w)
        if memory.keys is not None:
            readout = memory_readout(ctx.query, memory.keys, memory.values, self.cfg.train_avg_length)
            glob = glob + self.update_block.aggregator.gamma * from_tokens(readout, h, w)
        mask, delta = self.update_block.predict(ctx.inp, glob, forward_flow.to(ctx.inp.dtype))
        flow_low = delta.float() + forward_flow.float()  # flow stays float32 in the bf16 path
        return flow_low, upsample_convex(flow_low, mask.float())
