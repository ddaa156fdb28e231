"""Variational refinement of the network's flow: a classical finishing pass (not MemFlow's).

Why: the small CPU-trained model finds the right motion but places it imprecisely (about 0.7 px
off on Sintel alley_1 and Middlebury, where classical variational methods reach 0.2 px). The
network is a good start for a variational energy, which is precise but only finds motions near
its start: FlowNet's "+v" variants (Dosovitskiy et al., ICCV 2015) combined the two the same way.

What: OpenCV's ``VariationalRefinement`` (the refinement DIS uses; the energy of DeepFlow:
brightness and gradient constancy, smoothness) minimised from the network's flow, at
``levels`` scales (1/4, 1/2, 1 by default). Each coarser pass corrects the flow's low-frequency
part; the full-size pass the detail. Grayscale, full input size, stateless apart from the
previous frame.

Measured (shipped weights, 8 iterations, coarse-to-fine on; see weights/MODEL_CARD.md): EPE on
Sintel alley_1 0.75 -> 0.28, Middlebury 0.70 -> 0.23, KITTI #45 2.89 -> 1.88, at about 0.2 s
per 436x1024 pair on this machine (`make bench`). The number of levels was chosen on held-out
synthetic clips (3 beat 1, 2, 4 and 5 there).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["FlowRefiner", "LEVELS", "ITERATIONS"]

LEVELS = 3          # scales 1/4, 1/2, 1
ITERATIONS = 20     # fixed-point and SOR iterations per scale (OpenCV's default: 5 and 5)
MIN_SIDE = 32       # no pass at a scale where the frame's shorter side would be below this


def _pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Grayscale ``image`` at scales 1, 1/2, ... (up to ``levels`` of them; area-averaged).

    Coarser scales whose shorter side would be below MIN_SIDE are left out: :meth:`FlowRefiner.refine`
    makes no pass there, and on frames a few px wide they would have a zero side (cv2.resize fails).
    Scale 1 is always there (the size check and the previous frame need it).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    return [gray] + [cv2.resize(gray, (width // 2 ** k, height // 2 ** k), interpolation=cv2.INTER_AREA)
                     for k in range(1, levels) if min(width, height) // 2 ** k >= MIN_SIDE]


class FlowRefiner:
    """Refine each pair's flow (previous frame -> this frame) with a variational energy.

    Feed it the same frames as the flow stream: :meth:`prime` for a first (or resumed) frame,
    :meth:`refine` with each next frame and the network's flow to it.
    """

    def __init__(self, levels: int = LEVELS, iterations: int = ITERATIONS):
        if levels < 1 or iterations < 1:
            raise ValueError("refinement needs at least one level and one iteration")
        self.levels, self.iterations = levels, iterations
        self._solver = cv2.VariationalRefinement_create()
        self._solver.setFixedPointIterations(iterations)
        self._solver.setSorIterations(iterations)
        self.reset()

    def reset(self) -> None:
        self._prev: list[np.ndarray] | None = None  # the previous frame's pyramid (each frame's is made once)

    def prime(self, image: np.ndarray) -> None:
        self._prev = _pyramid(image, self.levels)

    def refine(self, image: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """(H,W,2) flow previous frame -> ``image`` (H,W,3 uint8 RGB) -> the refined (H,W,2) float32."""
        prev = self._prev
        if prev is None:
            raise RuntimeError("FlowRefiner.refine before prime: no previous frame")
        cur = _pyramid(image, self.levels)
        if flow.shape != prev[0].shape + (2,) or cur[0].shape != prev[0].shape:
            raise ValueError(f"flow {flow.shape} and frames {prev[0].shape}, {cur[0].shape} differ in size")
        self._prev = cur
        height, width = prev[0].shape
        flow = np.array(flow, dtype=np.float32, order="C")  # a copy: the solver works in place
        for level in reversed(range(len(prev))):  # the scales _pyramid kept for this size
            scale = 2 ** level
            h, w = prev[level].shape
            if min(h, w) < MIN_SIDE:
                continue
            if scale == 1:
                self._solver.calc(prev[0], cur[0], flow)
                continue
            small = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale
            start = small.copy()
            self._solver.calc(prev[level], cur[level], small)
            flow += cv2.resize((small - start) * scale, (width, height), interpolation=cv2.INTER_LINEAR)
        return flow
