"""Key/value memory of past motion, with the official eviction policy.

Keys are context keys of past frames, values are their motion values. After
each write, if the store holds ``max_frames`` frames it keeps only the newest
``min_frames`` (official: 2/1, i.e. exactly one past frame is remembered).
Memory use is therefore bounded whatever the video length.
"""
from __future__ import annotations

import torch


class KeyValueMemory:
    def __init__(self, max_frames: int = 2, min_frames: int = 1):
        if not 1 <= min_frames < max_frames:
            raise ValueError("need 1 <= min_frames < max_frames")
        self.max_frames = max_frames
        self.min_frames = min_frames
        self.reset()

    def reset(self) -> None:
        self.keys: torch.Tensor | None = None    # (B, N, C) tokens
        self.values: torch.Tensor | None = None  # (B, N, Cv) tokens
        self.frame_tokens = 0                    # h*w of one frame, fixed at the first write

    @property
    def num_frames(self) -> int:
        return 0 if self.keys is None else self.keys.shape[1] // self.frame_tokens

    def add(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """key (B, h*w, C), value (B, h*w, Cv) tokens of one frame."""
        if self.keys is None:
            self.frame_tokens = key.shape[1]
            self.keys, self.values = key, value
        else:
            if key.shape[1] != self.frame_tokens:
                raise ValueError("memory written with a different resolution; reset it between clips")
            self.keys = torch.cat([self.keys, key], dim=1)
            self.values = torch.cat([self.values, value], dim=1)
        if self.keys.shape[1] >= self.max_frames * self.frame_tokens:
            keep = self.min_frames * self.frame_tokens
            self.keys = self.keys[:, -keep:]
            self.values = self.values[:, -keep:]

    def with_current(self, key: torch.Tensor, value: torch.Tensor | None = None):
        """Stored keys (and values) followed by the current frame's."""
        if self.keys is None:
            return key, value
        keys = torch.cat([self.keys, key], dim=1)
        values = None if value is None else torch.cat([self.values, value], dim=1)
        return keys, values
