"""Torch dataset of synthetic clips, generated on the fly.

Item ``i`` is ``generate_clip(seed_for(base_seed, i), params)``, so the data
is fully determined by ``(base_seed, index, params)``: it does not depend on
worker count, batch order or which process renders it. It is a map-style
dataset, so ``DataLoader(shuffle=True, num_workers=k)`` works as usual and the
rendering runs inside the worker processes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .clips import ClipParams, generate_clip

__all__ = ["SynthClipDataset", "seed_for", "clip_to_tensors"]


def seed_for(base_seed: int, index: int) -> int:
    """A well-mixed 63-bit clip seed from ``(base_seed, index)`` (SeedSequence hashing)."""
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFFFFFFFFFF, int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def clip_to_tensors(clip) -> dict[str, torch.Tensor]:
    """``Clip`` -> dict of float32 tensors (see ``SynthClipDataset``)."""
    frames = torch.from_numpy(np.stack(clip.frames)).permute(0, 3, 1, 2).float().contiguous()
    flows = torch.from_numpy(np.stack(clip.flows)).permute(0, 3, 1, 2).contiguous()
    valid = torch.from_numpy(np.stack(clip.valid)).float()
    occluded = torch.from_numpy(np.stack(clip.occluded)).float()
    return {"frames": frames, "flows": flows, "valid": valid, "occluded": occluded}


_THREADS_SET = False


def _limit_worker_threads() -> None:
    """Inside a DataLoader worker use one OpenCV thread (the CPU is shared with training)."""
    global _THREADS_SET
    if _THREADS_SET:
        return
    if torch.utils.data.get_worker_info() is not None:
        import cv2

        cv2.setNumThreads(1)
    _THREADS_SET = True


class SynthClipDataset(Dataset):
    """On-the-fly synthetic clips as tensors.

    Each item is a dict:
      ``frames``   (T, 3, H, W) float32, RGB 0..255
      ``flows``    (T-1, 2, H, W) float32, forward flow t -> t+1 (x, y)
      ``valid``    (T-1, H, W) float32 1/0: flow target lands inside the next frame
      ``occluded`` (T-1, H, W) float32 1/0: point hidden (or out of frame) at t+1
    ``length`` is nominal (clips are generated, not stored): use a large value
    for training and a small one with another ``base_seed`` for validation.
    """

    def __init__(self, length: int = 100_000, base_seed: int = 0, params: ClipParams | None = None):
        if length < 1:
            raise ValueError("length must be >= 1")
        self.length = int(length)
        self.base_seed = int(base_seed)
        self.params = params if params is not None else ClipParams()

    def __len__(self) -> int:
        return self.length

    def seed(self, index: int) -> int:
        return seed_for(self.base_seed, index)

    def clip(self, index: int):
        """The raw ``Clip`` for ``index`` (numpy arrays, includes layer labels)."""
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        return generate_clip(self.seed(index), self.params)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        _limit_worker_threads()
        return clip_to_tensors(self.clip(int(index)))
