"""Random object masks (alpha mattes) for foreground layers.

``random_mask(rng, h, w)`` returns a float32 ``(h, w)`` alpha in 0..1 whose
support stays ``MARGIN`` pixels inside the array, so bilinear sampling of the
layer's texture never reaches the array border where alpha is non-zero. Edges
are anti-aliased by a slight Gaussian blur of a binary mask (about a 1-2 px
ramp), which the renderer keeps: the flow/label of a pixel follows the layer
whose alpha is >= 0.5 there.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .textures import fractal_noise

__all__ = ["MASK_KINDS", "MARGIN", "random_mask"]

MARGIN = 4  # zero-alpha border kept inside every mask array (pixels)


def _ellipse(rng, m, h, w):
    cx, cy = w / 2, h / 2
    cv2.ellipse(m, (int(cx * 16), int(cy * 16)), (int((w / 2 - MARGIN) * 16), int((h / 2 - MARGIN) * 16)),
                0, 0, 360, 255, -1, cv2.LINE_8, shift=4)


def _polygon(rng, m, h, w):
    k = int(rng.integers(3, 14))
    ang = np.sort(rng.uniform(0, 2 * math.pi, k))
    if rng.random() < 0.5:  # star-shaped / concave
        rad = rng.uniform(0.35, 1.0, k)
    else:
        rad = rng.uniform(0.85, 1.0, k)
    pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)
    pts = pts / (np.abs(pts).max(axis=0) + 1e-6)  # fill the box
    pts = (pts * 0.5 + 0.5) * np.array([w - 2 * MARGIN - 1, h - 2 * MARGIN - 1]) + MARGIN
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)


def _blob(rng, m, h, w):
    n = fractal_noise(rng, h, w, alpha=rng.uniform(1.0, 2.0), min_cell=max(2.0, min(h, w) / 16),
                      max_cell=max(h, w) * 0.5)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((x - w / 2) / (w / 2 - MARGIN)) ** 2 + ((y - h / 2) / (h / 2 - MARGIN)) ** 2)
    field = n * 0.6 + 1.6 * (1 - r)  # smooth noise biased towards the centre
    m[...] = np.where(field > 0.6, 255, 0).astype(np.uint8)


def _ellipses(rng, m, h, w):
    for _ in range(int(rng.integers(2, 6))):
        ax = (max(1, int(rng.uniform(0.15, 0.5) * (w - 2 * MARGIN))), max(1, int(rng.uniform(0.15, 0.5) * (h - 2 * MARGIN))))
        c = (int(rng.uniform(MARGIN + ax[0], max(MARGIN + ax[0] + 1, w - MARGIN - ax[0]))),
             int(rng.uniform(MARGIN + ax[1], max(MARGIN + ax[1] + 1, h - MARGIN - ax[1]))))
        cv2.ellipse(m, c, ax, 0, 0, 360, 255, -1, cv2.LINE_8)


def _rect(rng, m, h, w):
    cv2.rectangle(m, (MARGIN, MARGIN), (w - MARGIN - 1, h - MARGIN - 1), 255, -1)


_KINDS = {"ellipse": _ellipse, "polygon": _polygon, "blob": _blob, "ellipses": _ellipses, "rect": _rect}
_WEIGHTS = {"ellipse": 1.0, "polygon": 2.0, "blob": 2.0, "ellipses": 1.0, "rect": 0.6}
MASK_KINDS: tuple[str, ...] = tuple(_KINDS)


def random_mask(rng: np.random.Generator, h: int, w: int, kind: str | None = None,
                hole_prob: float = 0.15) -> np.ndarray:
    """A random shape filling roughly the ``(h, w)`` box, float32 alpha in 0..1.

    With probability ``hole_prob`` an elliptical hole is cut out (objects with
    holes create occlusions inside their own outline).
    """
    h, w = int(h), int(w)
    m = np.zeros((h, w), np.uint8)
    if kind is None:
        p = np.array([_WEIGHTS[k] for k in MASK_KINDS])
        kind = MASK_KINDS[int(rng.choice(len(MASK_KINDS), p=p / p.sum()))]
    _KINDS[kind](rng, m, h, w)
    if rng.random() < hole_prob and min(h, w) > 24:
        ax = (max(2, int(w * rng.uniform(0.08, 0.25))), max(2, int(h * rng.uniform(0.08, 0.25))))
        c = (int(w * rng.uniform(0.35, 0.65)), int(h * rng.uniform(0.35, 0.65)))
        cv2.ellipse(m, c, ax, rng.uniform(0, 180), 0, 360, 0, -1, cv2.LINE_8)
    if not m.any():  # degenerate draw (tiny box): fall back to a full rectangle
        _rect(rng, m, h, w)
    alpha = m.astype(np.float32) * np.float32(1 / 255)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.6)
    # keep the border exactly zero
    alpha[:MARGIN // 2] = 0
    alpha[-(MARGIN // 2):] = 0
    alpha[:, :MARGIN // 2] = 0
    alpha[:, -(MARGIN // 2):] = 0
    return alpha
