"""Procedural textures for synthetic flow clips.

Every generator takes a ``numpy.random.Generator`` and an output size and
returns a float32 ``(h, w, 3)`` RGB image with values in 0..255. Nothing here
loops over pixels in Python: noise is built from a few random grids upsampled
with ``cv2.resize`` (one per octave), patterns from vectorised trig on a
coordinate grid, shapes with ``cv2`` drawing calls.

The variety matters more than realism (AutoFlow, Sun et al. 2021): multi-scale
fractal noise with random spectral slope, stripes, checkers, gradients, random
coloured shapes, flat low-texture regions, and blends of these, with random
palettes and contrast, so a network cannot key on one texture statistic.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "TEXTURE_KINDS",
    "random_texture",
    "fractal_noise",
    "random_color",
]


def random_color(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (float32, 0..255), biased away from pure grey."""
    if rng.random() < 0.2:  # grey-ish
        g = rng.uniform(0, 255)
        return np.float32(g) + rng.normal(0, 8, 3).astype(np.float32)
    return rng.uniform(0, 255, 3).astype(np.float32)


def fractal_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    alpha: float = 1.0,
    min_cell: float = 2.0,
    max_cell: float | None = None,
    channels: int = 1,
) -> np.ndarray:
    """Multi-octave value noise, float32 ``(h, w)`` (or ``(h, w, channels)``), zero mean, unit std.

    Octave ``k`` is a random grid with cells of ``c = max_cell / 2**k`` pixels,
    upsampled bicubically, with amplitude ``c**alpha``: ``alpha = 1`` gives an
    amplitude spectrum close to 1/f (natural-image like), larger values are
    smoother, smaller values rougher. ``min_cell`` bounds the finest detail.
    """
    if max_cell is None:
        max_cell = max(h, w) / 2.0
    max_cell = max(max_cell, min_cell)
    out = np.zeros((h, w, channels), np.float32)
    c = max_cell
    while c >= min_cell * 0.999:
        gh = max(2, int(math.ceil(h / c)) + 1)
        gw = max(2, int(math.ceil(w / c)) + 1)
        grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
        up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        if up.ndim == 2:
            up = up[:, :, None]
        out += up * np.float32(c**alpha)
        c /= 2.0
    sub = out[::3, ::3]  # statistics from a subsample: same result to ~1%, 9x cheaper
    out -= sub.mean(axis=(0, 1), keepdims=True)
    out *= 1.0 / (sub.std(axis=(0, 1), keepdims=True) + 1e-6)
    return out[:, :, 0] if channels == 1 else out


def _unit(x: np.ndarray) -> np.ndarray:
    """Map a zero-mean unit-std field to roughly 0..1 (soft clip)."""
    return np.clip(0.5 + 0.22 * x, 0.0, 1.0)


def _palette_map(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    """Colour a scalar field in 0..1 through a random 2..5 stop colour ramp."""
    n = int(rng.integers(2, 6))
    stops = np.sort(rng.uniform(0, 1, n))
    stops[0], stops[-1] = 0.0, 1.0
    cols = np.stack([random_color(rng) for _ in range(n)])
    xs = np.linspace(0, 1, 256)
    lut = np.stack([np.interp(xs, stops, cols[:, k]) for k in range(3)], axis=1).astype(np.float32)
    idx = np.clip(s * 255.0 + 0.5, 0, 255).astype(np.int32)
    # Interpolate between LUT entries so smooth fields stay smooth (no 8-bit banding).
    frac = (s * 255.0 - (idx - 0.5)).clip(0, 1)[..., None].astype(np.float32)
    lo = lut[np.clip(idx - 1, 0, 255)]
    hi = lut[idx]
    return lo + (hi - lo) * frac


def _coords(h: int, w: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotated pixel coordinates (u along ``angle``, v across), float32."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    return x * ca + y * sa, -x * sa + y * ca


def _two_colour(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    c0, c1 = random_color(rng), random_color(rng)
    return c0 + s[..., None] * (c1 - c0)


# ----------------------------------------------------------------- generators


def tex_noise(rng, h, w):
    """Fractal noise with random spectral slope, coloured by a random ramp or per channel."""
    alpha = rng.uniform(0.3, 1.6)
    min_cell = rng.choice([2.0, 2.5, 3.0, 6.0])
    max_cell = max(h, w) * rng.uniform(0.1, 0.8)
    if rng.random() < 0.6:
        s = _unit(fractal_noise(rng, h, w, alpha, min_cell, max_cell))
        return _palette_map(rng, s)
    n = fractal_noise(rng, h, w, alpha, min_cell, max_cell, channels=3)
    mix = rng.normal(0, 1, (3, 3)).astype(np.float32) + np.eye(3, dtype=np.float32) * 1.5
    n = n @ mix.T
    n /= n.std(axis=(0, 1), keepdims=True) + 1e-6
    mean = random_color(rng)
    amp = rng.uniform(15, 70)
    return mean + amp * n


def tex_stripes(rng, h, w):
    """Sinusoidal or square-ish stripes, optionally warped by smooth noise."""
    u, _ = _coords(h, w, rng.uniform(0, math.pi))
    lam = math.exp(rng.uniform(math.log(5.0), math.log(60.0)))
    phase = 2 * math.pi * u / lam + rng.uniform(0, 2 * math.pi)
    if rng.random() < 0.5:
        phase = phase + rng.uniform(1, 6) * fractal_noise(rng, h, w, 1.5, 8.0)
    s = np.sin(phase)
    sharp = rng.uniform(0.5, 6.0)
    s = 0.5 + 0.5 * np.tanh(sharp * s) / math.tanh(sharp)
    return _two_colour(rng, s.astype(np.float32))


def tex_checker(rng, h, w):
    """Rotated checkerboard (or grid of dots) with anti-aliased edges."""
    ang = rng.uniform(0, math.pi / 2)
    u, v = _coords(h, w, ang)
    cu = math.exp(rng.uniform(math.log(3.5), math.log(40.0)))
    cv_ = cu * math.exp(rng.uniform(-0.4, 0.4))
    su = np.sin(math.pi * u / cu + rng.uniform(0, 6.3))
    sv = np.sin(math.pi * v / cv_ + rng.uniform(0, 6.3))
    if rng.random() < 0.3:  # dots
        s = np.clip(2.5 * (su * sv) - 0.8, 0, 1)
    else:
        k = rng.uniform(3, 12)
        s = 0.5 + 0.5 * np.tanh(k * su * sv)
    return _two_colour(rng, s.astype(np.float32))


def tex_gradient(rng, h, w):
    """Linear or radial colour gradient with a little noise (low texture)."""
    if rng.random() < 0.5:
        u, _ = _coords(h, w, rng.uniform(0, 2 * math.pi))
        s = (u - u.min()) / (np.ptp(u) + 1e-6)
    else:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(-0.2, 1.2) * w, rng.uniform(-0.2, 1.2) * h
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        s = r / (r.max() + 1e-6)
    s = s ** np.float32(rng.uniform(0.5, 2.0))
    img = _two_colour(rng, s.astype(np.float32))
    return img + rng.uniform(0, 6) * fractal_noise(rng, h, w, 0.8, 2.0, channels=1)[..., None]


def tex_flat(rng, h, w):
    """Nearly uniform colour with faint noise: hard, textureless regions."""
    c = random_color(rng)
    amp = rng.uniform(0.5, 6.0)
    return c + amp * fractal_noise(rng, h, w, rng.uniform(0.5, 1.5), 2.0, channels=1)[..., None]


def tex_shapes(rng, h, w):
    """Random coloured ellipses, polygons and lines drawn over a base texture."""
    base = random_texture(rng, h, w, kinds=("noise", "gradient", "flat"), depth=1)
    canvas = np.clip(base, 0, 255).astype(np.uint8)
    n = int(rng.integers(5, 60))
    scale = max(h, w)
    for _ in range(n):
        col = tuple(int(c) for c in np.clip(random_color(rng), 0, 255))
        kind = rng.integers(0, 3)
        cx, cy = int(rng.uniform(0, w)), int(rng.uniform(0, h))
        size = math.exp(rng.uniform(math.log(2.0), math.log(max(3.0, scale * 0.3))))
        if kind == 0:
            axes = (max(1, int(size)), max(1, int(size * rng.uniform(0.2, 1.0))))
            cv2.ellipse(canvas, (cx, cy), axes, rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == 1:
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = size * rng.uniform(0.3, 1.0, k)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
            cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], col, cv2.LINE_AA, shift=4)
        else:
            a = rng.uniform(0, 2 * math.pi)
            p1 = (int(cx - size * math.cos(a)), int(cy - size * math.sin(a)))
            p2 = (int(cx + size * math.cos(a)), int(cy + size * math.sin(a)))
            cv2.line(canvas, p1, p2, col, int(rng.integers(1, 6)), cv2.LINE_AA)
    return canvas.astype(np.float32)


def tex_mix(rng, h, w):
    """Two textures blended through a soft noise mask, or one modulating the other."""
    a = random_texture(rng, h, w, depth=1)
    b = random_texture(rng, h, w, depth=1)
    if rng.random() < 0.6:
        m = fractal_noise(rng, h, w, rng.uniform(0.8, 2.0), 2.0, max(h, w) * rng.uniform(0.1, 0.5))
        m = np.clip(0.5 + m * rng.uniform(0.5, 4.0), 0, 1)[..., None]
        return a * (1 - m) + b * m
    lum = b.mean(axis=2, keepdims=True) / 255.0
    return a * (0.4 + 0.9 * lum)


_GENERATORS = {
    "noise": tex_noise,
    "stripes": tex_stripes,
    "checker": tex_checker,
    "gradient": tex_gradient,
    "flat": tex_flat,
    "shapes": tex_shapes,
    "mix": tex_mix,
}
# Sampling weights: noise-like natural textures dominate, regular patterns and
# low-texture surfaces appear often enough to teach the aperture problem.
_WEIGHTS = {"noise": 3.0, "stripes": 1.0, "checker": 1.0, "gradient": 0.7, "flat": 0.5, "shapes": 1.5, "mix": 1.5}
TEXTURE_KINDS: tuple[str, ...] = tuple(_GENERATORS)
_SHARP_KINDS = ("stripes", "checker", "shapes", "mix")


def random_texture(
    rng: np.random.Generator,
    h: int,
    w: int,
    kinds: tuple[str, ...] | None = None,
    depth: int = 0,
    contrast: bool = True,
) -> np.ndarray:
    """A random texture of one of ``kinds`` (default: all), float32 ``(h, w, 3)`` in 0..255.

    ``depth`` guards recursion (mixes of mixes); ``contrast`` applies a random
    contrast scaling around the mean and a mild random blur.
    """
    h, w = int(h), int(w)
    kinds = tuple(kinds) if kinds else TEXTURE_KINDS
    if depth > 0:
        kinds = tuple(k for k in kinds if k not in ("mix", "shapes")) or ("noise",)
    p = np.array([_WEIGHTS.get(k, 1.0) for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    img = _GENERATORS[kind](rng, h, w).astype(np.float32, copy=False)
    if contrast and depth == 0:
        if rng.random() < 0.5:
            mean = img.mean(axis=(0, 1), keepdims=True)
            img = mean + (img - mean) * np.float32(math.exp(rng.uniform(-0.7, 0.3)))
        # Camera-like band limit: hard-edged patterns are blurred by at least
        # sigma 0.5 px so nothing sits right at the Nyquist limit (it would alias
        # differently in every frame and break brightness constancy).
        if kind in _SHARP_KINDS or rng.random() < 0.3:
            sigma = rng.uniform(0.5, 1.2)
            img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img, 0, 255).astype(np.float32, copy=False)
