"""Coarse-to-fine start for large motions: a half-size pass tells the full-size pass where to begin.

The network refines flow from where it starts. Trained on motions of at most 64 px (at 192x256), it
misses larger ones at full resolution, which classical coarse-to-fine methods still find. At half
size those motions are half as long. So a second stream, with its own memory, estimates the flow at
half the run size with half the iterations; when that flow is large (90th percentile of its speed at
least ``GATE_PX`` at the run size), the full-size pass starts from it instead of from zero. Frames
with small motion are left alone: there the full-size pass from zero was the more accurate one. So
are small frames (half size below ``MIN_COARSE_SIDE``): there the half-size pass is too coarse to
help (300 pairs of held-out 160x224 clips: 2.065 px EPE from zero, 2.120 with the coarse start).

Measured (EPE, from zero -> coarse-to-fine, 8 iterations): with the session-8 flowcli-small,
temple_3 50.7 -> 32.7, KITTI #45 noc 4.89 -> 2.89, ambush_4 58.7 -> 61.2 (slow pixels next to its fast
body start from the coarse flow's smeared motion); alley_1, Middlebury and Chairs unchanged (the gate
keeps them off). With the session-7 file, 20 held-out synthetic clips at 436x1024 (motions up to
128 px): 11.5 -> 8.5. Starting every frame from the coarse flow (no gate) made small motions worse (alley_1
0.78 -> 0.94). Cost (`make bench`, section "coarse", quiet machine, 2 threads): 1.17x per pair at
436x1024, 1.18x at 320x640 (a quarter of the pixels and half the iterations, but the encoders and
fixed per-pair work do not shrink as much); 1.0x below 256 px, where it does not run.

This is an inference option of this project, not part of the official MemFlow: the official
checkpoints run without it (their conformance is unaffected); flowcli's own weights record whether
it is their default (``coarse_to_fine`` in the safetensors metadata).
"""
from __future__ import annotations

import numpy as np
import torch

COARSE_FACTOR = 0.5    # the coarse pass runs at this fraction of the full pass's run size
MIN_COARSE_SIDE = 128  # ... if that leaves both sides at least this long (the network trained on 192x256)
GATE_QUANTILE = 0.9    # ... and guides it when this quantile of its speed ...
GATE_PX = 16.0         # ... is at least this many pixels at the full pass's run size


def coarse_iters(iters: int) -> int:
    return max(1, iters // 2)


class CoarseGuide:
    """The coarse stream beside a :class:`~flowcli.engine.FlowStream`; gives the full pass's start flow."""

    def __init__(self, model, options, device: torch.device):
        from .engine import StreamOptions  # (engine imports this module: its names are imported at call time)
        self.model, self.device = model, device
        self.options = StreamOptions(iters=coarse_iters(options.iters), precision=options.precision)
        self.stream = None  # made at the first frame: its scale depends on the frame size
        self._pending_state: dict[str, torch.Tensor] | None = None  # a resume state given before that
        self.too_small = False  # frames whose half size is below MIN_COARSE_SIDE get no coarse pass

    def _stream(self, image: np.ndarray, run_hw: tuple[int, int]):
        """The coarse FlowStream, made at the first frame; None if the frames are too small for one."""
        if self.stream is None and not self.too_small:
            if min(run_hw) * COARSE_FACTOR < MIN_COARSE_SIDE:
                self.too_small = True
                return None
            from dataclasses import replace

            from .engine import FlowStream
            scale = COARSE_FACTOR * run_hw[1] / image.shape[1]
            self.stream = FlowStream(self.model, replace(self.options, scale=scale), self.device)
            if self._pending_state is not None:
                self.stream.load_state(self._pending_state)
                self._pending_state = None
        return self.stream

    def reset(self) -> None:
        """Forget the stream: the next frames may have another size (and so another coarse scale)."""
        self.stream, self.too_small, self._pending_state = None, False, None

    def prime(self, image: np.ndarray, run_hw: tuple[int, int]) -> None:
        stream = self._stream(image, run_hw)
        if stream is not None:
            stream.prime(image)

    def push(self, image: np.ndarray, run_hw: tuple[int, int]) -> np.ndarray | None:
        """The coarse flow previous -> this frame at the input size (None: first frame, or frames too small)."""
        stream = self._stream(image, run_hw)
        return None if stream is None else stream.push(image)

    def start(self, image: np.ndarray, geometry) -> torch.Tensor | None:
        """Run the coarse pass on ``image``; the full pass's start flow for this pair, or None (from zero)."""
        return self.start_flow(self.push(image, geometry.run_hw), geometry)

    @staticmethod
    def start_flow(coarse_flow: np.ndarray | None, geometry) -> torch.Tensor | None:
        """(1,2,h,w) start on the full pass's 1/8 grid, or None (start from zero) if the motion is small."""
        if coarse_flow is None:
            return None
        from .engine import flow_to_low
        low = flow_to_low(coarse_flow, geometry.run_hw, geometry.padder)
        speed = torch.linalg.vector_norm(low[0], dim=0).flatten() * 8  # run-size pixels
        if float(torch.quantile(speed, GATE_QUANTILE)) < GATE_PX:
            return None
        return low

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.stream is None else self.stream.state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.stream is not None:
            self.stream.load_state(state)
        else:
            self._pending_state = state if state else None
