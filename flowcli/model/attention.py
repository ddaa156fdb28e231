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

from . import fused
from .config import ModelConfig
from .workspace import Workspace, empty


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
        query, key = fused.conv(inp, self.to_qk).chunk(2, dim=1)
        return query, key


def attention_scale(dim: int, num_keys: int, train_avg_length: float) -> float:
    """C^-0.5 * ln(N)/ln(train_avg_length): the official length-aware softmax scale."""
    return dim ** -0.5 * math.log(num_keys) / math.log(train_avg_length)


class MemoryReader:
    """Memory read-out for one frame pair, with everything fixed across iterations hoisted.

    Within a pair the query, all keys and the stored values are fixed; only the
    current frame's value changes per iteration. So the softmax is computed once,
    the stored frames' contribution ``A_mem @ V_mem`` once, and each iteration
    costs one matmul ``A_cur @ V_cur`` (the official code recomputes the whole
    attention every iteration). Same mathematics as :func:`memory_readout`.
    When the ``L x L`` current-frame attention would exceed ``budget_bytes`` it
    falls back to fused attention per iteration (no large matrix is kept).
    """

    def __init__(self, query: torch.Tensor, keys: torch.Tensor, past_values: torch.Tensor | None,
                 train_avg_length: float, budget_bytes: int = 768 * 2**20, chunk: int = 128,
                 workspace: Workspace | None = None):
        self.query, self.keys, self.past_values = query, keys, past_values
        self.train_avg_length = train_avg_length
        b, n_q, _ = query.shape
        n_keys = keys.shape[1]
        n_past = 0 if past_values is None else past_values.shape[1]
        n_cur = n_keys - n_past
        self.hoisted = b * n_q * n_cur * query.element_size() <= budget_bytes
        if not self.hoisted:
            return
        scale = attention_scale(query.shape[-1], n_keys, train_avg_length)
        self.attn_cur = empty(workspace, "attn_cur", (b, n_q, n_cur), query)
        self.base = None if n_past == 0 else query.new_empty(b, n_q, past_values.shape[-1])
        keys_t = keys.transpose(1, 2).contiguous()  # (B, C, N) once: a transposed operand made every
        # chunk's product come out strided, and the scale and softmax over it were ~10x slower in bf16
        for s in range(0, n_q, chunk):  # row chunks bound the temporary (rows x all keys) matrix
            attn = torch.softmax(torch.matmul(query[:, s:s + chunk], keys_t).mul_(scale), dim=-1)
            if n_past:
                self.base[:, s:s + chunk] = torch.matmul(attn[..., :n_past], past_values)
            self.attn_cur[:, s:s + chunk] = attn[..., n_past:]

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        """value (B, L, Cv): the current frame's value tokens -> read-out (B, L, Cv)."""
        if not self.hoisted:
            values = value if self.past_values is None else torch.cat([self.past_values, value], dim=1)
            return memory_readout(self.query, self.keys, values, self.train_avg_length)
        out = torch.matmul(self.attn_cur, value)
        return out if self.base is None else out.add_(self.base)


def memory_readout(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                   train_avg_length: float) -> torch.Tensor:
    """Softmax attention of every query position over all key positions.

    query (B, L, C) tokens, keys (B, N, C), values (B, N, Cv) -> (B, L, Cv).
    Scale = C^-0.5 * ln(N)/ln(train_avg_length): the official length-aware
    scale that keeps attention entropy stable when N differs from training.
    """
    scale = attention_scale(query.shape[-1], keys.shape[1], train_avg_length)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), keys.unsqueeze(1), values.unsqueeze(1), scale=scale)
    return out.squeeze(1)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h*w, C); a view (no copy) for channels-last input."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def from_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) -> (B, C, h, w); a channels-last view (no copy) of contiguous tokens."""
    return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
