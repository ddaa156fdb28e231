"""Motion encoder and update block (SKFlow-style, MemFlow variant).

``get_motion_and_value`` turns (flow, correlation) into motion features and the
memory value; ``forward`` refines the recurrent state from context, local motion
and memory-aggregated global motion. Names match the official
``update_block.*`` keys.
"""
from __future__ import annotations

import torch
from torch import nn

from . import fused
from .config import ModelConfig
from .pcblock import PCBlock


class MotionEncoder(nn.Module):
    """(flow (B,2,h,w), corr (B,corr_planes,h,w)) -> motion (B, motion_dim, h, w); last 2 channels = flow."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.motion_kernels
        self.convc1 = PCBlock(cfg.corr_planes, cfg.corr_hidden, k)
        self.convc2 = PCBlock(cfg.corr_hidden, cfg.corr_out, k)
        self.convf1 = nn.Conv2d(2, cfg.flow_hidden, 1)
        self.convf2 = PCBlock(cfg.flow_hidden, cfg.flow_out, k)
        self.conv = PCBlock(cfg.corr_out + cfg.flow_out, cfg.motion_dim - 2, k)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = self.convc2(self.convc1(corr, gelu=True))
        flo = self.convf2(self.convf1(flow))
        out = self.conv(torch.cat([cor, flo], dim=1))
        return torch.cat([out, same_layout(flow, out)], dim=1)


def same_layout(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory format of ``like``. Flows arrive NCHW; concatenated as they are with
    NHWC features, the result is NCHW and every block behind it leaves the fast NHWC kernels
    (measured at 224x320, 1 thread: 1.68 -> 1.60 s per frame for the estimator)."""
    nhwc = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last)
    return x.contiguous(memory_format=torch.channels_last if nhwc else torch.contiguous_format)


class Aggregator(nn.Module):
    """Holds the memory value projection and the learnt weight of the memory read-out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.to_v = nn.Conv2d(cfg.motion_dim, cfg.motion_dim, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))


class UpdateBlock(nn.Module):
    """Estimator: net <- gru(cat[net, inp, motion, global]); predictor: net <- gru_new(cat[inp, global, fwd_flow])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.encoder = MotionEncoder(cfg)
        if cfg.predict:
            self.gru_new = PCBlock(cfg.context_dim + cfg.motion_dim + 2, cfg.hidden_dim, cfg.update_kernels)
        else:
            self.gru = PCBlock(cfg.hidden_dim + cfg.context_dim + 2 * cfg.motion_dim, cfg.hidden_dim,
                               cfg.update_kernels)
        self.flow_head = PCBlock(cfg.hidden_dim, 2, cfg.motion_kernels)
        self.mask = nn.Sequential(
            nn.Conv2d(cfg.hidden_dim, cfg.mask_hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cfg.mask_hidden, 64 * 9, 1),
        )
        self.aggregator = Aggregator(cfg)

    def get_motion_and_value(self, flow: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.encoder(flow, corr)
        return motion, fused.conv(motion, self.aggregator.to_v)

    def forward(self, net, inp, motion, motion_global, need_mask: bool = True):
        """Returns (net, upsampling mask (B,576,h,w) or None, delta flow (B,2,h,w)).

        The mask only matters for the iteration whose flow is upsampled, so
        inference skips it on the others (``need_mask=False``).
        """
        net = self.gru(torch.cat([net, inp, motion, motion_global], dim=1))
        return net, self.upsampling_mask(net) if need_mask else None, self.flow_head(net)

    def predict(self, inp, motion_global, forward_flow):
        """MemFlowNet-P single pass. Returns (upsampling mask, delta flow)."""
        parts = [inp, same_layout(motion_global, inp), same_layout(forward_flow, inp)]
        net = self.gru_new(torch.cat(parts, dim=1))
        return self.upsampling_mask(net), self.flow_head(net)

    def upsampling_mask(self, net: torch.Tensor) -> torch.Tensor:
        """(B,576,h,w) convex-upsampling weights; x0.25 in place: no second 576-channel map."""
        hidden = fused.conv(net, self.mask[0], relu=True)
        return fused.conv(hidden, self.mask[2]).mul_(0.25)
