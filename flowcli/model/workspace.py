"""Large per-pair buffers, kept from one frame pair to the next by a stream.

Each pair needs the same few large tensors: the correlation volume (0.26 GB at
436x1024) and the current frame's attention (0.2 GB). Allocated fresh, every
pair pays for mapping and zero-filling their pages (~40 ms for the 0.2 GB
correlation level alone, measured at 2 threads: matmul 120 ms into a new tensor,
81 ms into a kept one). A stream keeps them in a :class:`Workspace` instead.

The tensors of one pair are overwritten by the next, so only the streaming
engines use a workspace, each its own, and nothing of a pair's correlation or
attention outlives the pair. Training never uses one (autograd keeps tensors).
"""
from __future__ import annotations

import torch


class Workspace:
    """Named buffers reused while their shape, dtype and device stay the same."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def empty(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device (the same one as last time)."""
        shape = tuple(shape)
        buf = self._buffers.get(name)
        if buf is None or tuple(buf.shape) != shape or buf.dtype != like.dtype or buf.device != like.device:
            self._buffers.pop(name, None)  # free the old one before making the new
            buf = like.new_empty(shape)
            self._buffers[name] = buf
        return buf


def empty(workspace: Workspace | None, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """``workspace.empty(...)``, or a new tensor without a workspace."""
    return like.new_empty(shape) if workspace is None else workspace.empty(name, shape, like)
