"""Memory attention: query/key projection and the scaled read-out.

The official ``att`` module also carries relative-position tables (RelPosEmb)
that are never used at inference; they are declared (when the config asks for
them) only so official checkpoints load with strict key checking.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class RelPosEmb(nn.Module):
    """Unused at inference; present for checkpoint compatibility."""

    def __init__(self, max_pos: int, dim: int):
        super().__init__()
        self.rel_height = nn.Embedding(2 * max_pos - 1, dim)
        self.rel_width = nn.Embedding(2 * max_pos - 1, dim)
        deltas = torch.arange(max_pos).view(1, -1) - torch.arange(max_pos).view(-1, 1)
        self.register_buffer("rel_ind", deltas + max_pos - 1)


class MemoryAttention(nn.Module):
    """to_qk: context (B,C,h,w) -> query, key (B,C,h,w) each."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dim = cfg.context_dim
        self.to_qk = nn.Conv2d(cfg.context_dim, 2 * cfg.context_dim, 1, bias=False)
        if cfg.pos_emb_size:
            self.pos_emb = RelPosEmb(cfg.pos_emb_size, cfg.context_dim)

    def query_key(self, inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query, key = self.to_qk(inp).chunk(2, dim=1)
        return query, key


def memory_readout(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                   train_avg_length: float) -> torch.Tensor:
    """Softmax attention of every query position over all key positions.

    query (B, L, C) tokens, keys (B, N, C), values (B, N, Cv) -> (B, L, Cv).
    Scale = C^-0.5 * ln(N)/ln(train_avg_length): the official length-aware
    scale that keeps attention entropy stable when N differs from training.
    """
    n = keys.shape[1]
    scale = query.shape[-1] ** -0.5 * math.log(n) / math.log(train_avg_length)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1), scale=scale)
    return out.squeeze(1)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
