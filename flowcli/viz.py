"""Optical-flow visualisation: Middlebury colour wheel, arrows, legend, panels.

Pure numpy + OpenCV (no torch). All images are ``uint8`` RGB, shape ``(H, W, 3)``;
flows are ``(H, W, 2)`` float arrays ``(u, v)`` in pixels, ``v`` pointing down.

Colour coding
    :func:`flow_to_color` is the colour wheel of Baker et al. (ICCV 2007) and gives
    the same image as ``flow_vis.flow_to_color(flow, convert_to_bgr=False)``
    (Tom Runia's reference port of the Middlebury C++/Matlab code): hue is the
    direction, saturation the magnitude relative to a normalisation radius; white is
    no motion. Vectors longer than the radius keep their fully saturated hue and are
    darkened to 75 % (flow_vis's "out of range" rule).

Unknown pixels
    A pixel is unknown when ``u`` or ``v`` is NaN/inf or has ``|u|`` or ``|v|`` >
    1e9 (the Middlebury ``.flo`` convention, which :mod:`flowcli.flowio` applies
    to every file format, so ``read_flow`` and viz agree). Unknown pixels are
    drawn black, are left out of every normalisation, get no arrow, and an
    all-unknown flow renders as an all-black image (no warning, no crash).

Normalisation (three ways)
    * per frame (default): divide by the frame's largest known vector length
      + 1e-5, exactly as flow_vis does;
    * fixed: ``flow_to_color(flow, max_flow=F)`` divides by ``F``;
    * per sequence: feed every flow to a :class:`SequenceScale` first (a cheap
      streaming pass that keeps only a running maximum), then render every frame
      with ``max_flow=scale.max_flow`` so a video does not flicker. For a single
      frame this gives exactly the per-frame image.

Note: flow_vis's own ``clip_flow`` argument clips *components* to ``[0, clip]``
(negative motion becomes 0), which is not a normalisation; ``max_flow`` here is
not that.
"""
from __future__ import annotations

import math
from typing import Iterable

import cv2
import numpy as np

from . import flowio
from .flowio import UNKNOWN_THRESHOLD  # noqa: F401 - part of this module's API (__all__)

__all__ = [
    "UNKNOWN_THRESHOLD",
    "EPSILON",
    "make_colorwheel",
    "unknown_mask",
    "max_magnitude",
    "SequenceScale",
    "flow_to_color",
    "colorwheel_legend",
    "paste_legend",
    "draw_arrows",
    "side_by_side",
    "render",
]

#: Added to the per-frame / per-sequence maximum, as in flow_vis.
EPSILON = 1e-5


def make_colorwheel() -> np.ndarray:
    """The 55-entry Middlebury colour wheel, float64 ``(55, 3)`` RGB in 0..255.

    Segments red-yellow, yellow-green, green-cyan, cyan-blue, blue-magenta,
    magenta-red of 15, 6, 4, 11, 13, 6 colours; identical to
    ``flow_vis.make_colorwheel()`` (Scharstein's C++ / Sun's Matlab code).
    """
    # (segment length, channel that ramps, ramp goes up?, channel held at 255)
    segments = ((15, 1, True, 0), (6, 0, False, 1), (4, 2, True, 1),
                (11, 1, False, 2), (13, 0, True, 2), (6, 2, False, 0))
    blocks = []
    for n, ramp_ch, up, full_ch in segments:
        ramp = np.floor(255 * np.arange(n) / n)
        block = np.zeros((n, 3))
        block[:, full_ch] = 255
        block[:, ramp_ch] = ramp if up else 255 - ramp
        blocks.append(block)
    return np.concatenate(blocks, axis=0)


_COLORWHEEL = make_colorwheel()
_COLORWHEEL.setflags(write=False)


def _check_flow(flow) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {flow.shape}")
    if not np.issubdtype(flow.dtype, np.floating) and not np.issubdtype(flow.dtype, np.integer):
        raise ValueError(f"flow must be numeric, got dtype {flow.dtype}")
    return flow


def unknown_mask(flow) -> np.ndarray:
    """Boolean ``(H, W)``: True where the flow is unknown (NaN/inf or a component beyond +-1e9), by
    :func:`flowcli.flowio.unknown_mask`, the rule every flow file format is read and written with."""
    return flowio.unknown_mask(_check_flow(flow))


def _known_uv(flow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 u, v with unknown pixels set to 0, and the unknown mask."""
    flow = _check_flow(flow)
    unknown = unknown_mask(flow)
    u = flow[..., 0].astype(np.float64)
    v = flow[..., 1].astype(np.float64)
    if unknown.any():
        u[unknown] = 0.0
        v[unknown] = 0.0
    return u, v, unknown


def max_magnitude(flow) -> float:
    """Largest vector length ``sqrt(u^2 + v^2)`` over known pixels; 0.0 if none is known."""
    u, v, unknown = _known_uv(flow)
    if u.size == 0:
        return 0.0
    return float(np.sqrt(np.max(u * u + v * v)))


class SequenceScale:
    """One normalisation radius for a whole sequence (no flicker in videos).

    Feed flows one at a time (a first streaming pass; only a running maximum is
    kept), then render each frame with ``flow_to_color(flow, max_flow=s.max_flow)``::

        scale = SequenceScale()
        for flow in flows():          # pass 1
            scale.update(flow)
        for flow in flows():          # pass 2
            img = flow_to_color(flow, max_flow=scale.max_flow)

    ``max_flow`` is the largest known vector length seen + 1e-5 (as flow_vis
    normalises a single frame), so it is always > 0 and a one-frame sequence
    renders exactly like per-frame normalisation.
    """

    def __init__(self) -> None:
        self.max_magnitude = 0.0
        self.count = 0

    def update(self, flow) -> float:
        """Account for one flow; returns that flow's own max magnitude."""
        m = max_magnitude(flow)
        self.max_magnitude = max(self.max_magnitude, m)
        self.count += 1
        return m

    def update_many(self, flows: Iterable) -> "SequenceScale":
        for flow in flows:
            self.update(flow)
        return self

    @property
    def max_flow(self) -> float:
        """The radius to pass as ``max_flow`` (largest magnitude + 1e-5)."""
        return self.max_magnitude + EPSILON

    def __repr__(self) -> str:
        return f"SequenceScale(max_magnitude={self.max_magnitude:.4g}, count={self.count})"


def _uv_to_colors(u: np.ndarray, v: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """flow_vis.flow_uv_to_colors of float64 ``(u, v) / radius`` (RGB).

    Only the length is divided by ``radius``; the angle comes from ``(u, v)`` as
    given. So a tiny radius (``max_flow=1e-300``) overflows just the length, to
    inf, which is drawn out of range, instead of turning both components into
    inf and losing the direction.
    """
    ncols = _COLORWHEEL.shape[0]
    with np.errstate(over="ignore"):
        rad = np.hypot(u, v) / radius
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int32)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = (fk - k0)[..., None]
    col0 = _COLORWHEEL[k0] / 255.0
    col1 = _COLORWHEEL[k1] / 255.0
    col = (1 - f) * col0 + f * col1
    inside = (rad <= 1)[..., None]
    # np.where computes both sides: min(rad, 1) keeps inf * 0 (a NaN warning) out of the unused one.
    col = np.where(inside, 1 - np.minimum(rad, 1)[..., None] * (1 - col), col * 0.75)
    return np.floor(255 * col).astype(np.uint8)


def flow_to_color(flow, max_flow: float | None = None) -> np.ndarray:
    """Colour-code a flow field with the Middlebury wheel; returns uint8 RGB ``(H, W, 3)``.

    ``max_flow=None`` normalises by this frame's largest known vector length
    + 1e-5 (flow_vis's rule); a number normalises by that radius instead (longer
    vectors are drawn saturated and darkened, as flow_vis does out of range).
    Unknown pixels are black and do not take part in the normalisation.
    """
    u, v, unknown = _known_uv(flow)
    if max_flow is None:
        rad_max = float(np.sqrt(np.max(u * u + v * v))) if u.size else 0.0
        radius = rad_max + EPSILON
    else:
        radius = float(max_flow)
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"max_flow must be a positive number, got {max_flow!r}")
    img = _uv_to_colors(u, v, radius)
    img[unknown] = 0
    return img


# --------------------------------------------------------------------------- legend

def colorwheel_legend(size: int = 64) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 RGB picture of the colour wheel.

    The colour at offset ``(dx, dy)`` from the centre is the colour of a flow
    vector pointing that way (image axes, y down); the rim is the normalisation
    radius. Outside the disc the image is white; a thin dark ring marks the rim.
    Use :func:`paste_legend` to put it in a corner of an image (disc only).
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"legend size must be >= 8 pixels, got {size}")
    c = (size - 1) / 2.0
    r = size / 2.0 - 1.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = (xx - c) / r, (yy - c) / r
    img = _uv_to_colors(dx, dy)
    dist = np.sqrt(dx * dx + dy * dy)
    img[dist > 1] = 255
    ring = (dist * r > r - 0.5) & (dist * r <= r + 1.0)
    img[ring] = 40
    return img


def _legend_mask(size: int) -> np.ndarray:
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return np.hypot(xx - c, yy - c) <= size / 2.0 - 0.5 + 1e-9


_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def paste_legend(image: np.ndarray, legend: np.ndarray | None = None, corner: str = "top-right",
                 margin: int | None = None, size: int | None = None) -> np.ndarray:
    """Return a copy of ``image`` with a colour-wheel legend (disc only) in a corner.

    ``legend`` defaults to :func:`colorwheel_legend` of ``size`` pixels (by default
    a fifth of the image's shorter side, clamped to 24..128). Images too small to
    hold a legend are returned unchanged (as a copy).
    """
    if corner not in _CORNERS:
        raise ValueError(f"corner must be one of {', '.join(_CORNERS)}, got {corner!r}")
    out = _as_rgb(image).copy()
    h, w = out.shape[:2]
    if legend is None:
        if size is None:
            size = int(np.clip(min(h, w) // 5, 24, 128))
        legend = colorwheel_legend(size)
    lh, lw = legend.shape[:2]
    if margin is None:
        margin = max(2, min(h, w) // 64)
    if lh + 2 * margin > h or lw + 2 * margin > w:
        return out
    y0 = margin if corner.startswith("top") else h - margin - lh
    x0 = margin if corner.endswith("left") else w - margin - lw
    mask = _legend_mask(lh) if lh == lw else np.ones((lh, lw), bool)
    region = out[y0:y0 + lh, x0:x0 + lw]
    region[mask] = _as_rgb(legend)[mask]
    return out


# --------------------------------------------------------------------------- arrows

def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if image.shape[2] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    return image


def draw_arrows(image: np.ndarray, flow, step: int = 16, scale: float | None = 1.0,
                color: tuple[int, int, int] | None = None, thickness: int = 1,
                max_flow: float | None = None, min_length: float = 3.0) -> np.ndarray:
    """Return a copy of ``image`` with one flow arrow every ``step`` pixels.

    Arrows start at the centre of each ``step x step`` cell and end at
    ``start + scale * (u, v)``: ``scale=1.0`` draws the true displacement,
    ``scale=None`` scales so that the longest vector (or ``max_flow`` if given,
    so a sequence keeps one arrow scale) spans one grid step. Unknown pixels and
    arrows shorter than ``min_length`` pixels get no arrow; arrows longer than
    ``2 * (H + W)`` pixels end off the image anyway and are cut to that length
    (same direction), as cv2 needs int32 end points. ``color=None`` colours
    each arrow with its colour-wheel colour (normalised like ``flow_to_color``
    with the same ``max_flow``, so the legend applies) over a dark outline;
    otherwise every arrow has the given RGB colour. ``image`` and ``flow`` must
    have the same height and width.
    """
    out = np.ascontiguousarray(_as_rgb(image).copy())
    flow = _check_flow(flow)
    if out.shape[:2] != flow.shape[:2]:
        raise ValueError(f"image is {out.shape[1]}x{out.shape[0]} but flow is "
                         f"{flow.shape[1]}x{flow.shape[0]}")
    step = int(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    h, w = flow.shape[:2]
    ys = np.arange(step // 2, h, step)
    xs = np.arange(step // 2, w, step)
    if ys.size == 0 or xs.size == 0:
        return out
    grid = flow[np.ix_(ys, xs)]
    known = ~unknown_mask(grid)
    if not known.any():
        return out
    if scale is None:
        reference = float(max_flow) if max_flow is not None else max_magnitude(flow)
        scale = step / reference if reference > 0 else 1.0
    if color is None:
        colors = flow_to_color(flow, max_flow=max_flow)[np.ix_(ys, xs)]
    thick = max(1, int(thickness))
    # An arrow this long leaves the image wherever it starts, so longer ones are cut to this length
    # (same direction, same visible part): cv2 needs int32 end points, and scale * flow can be 1e20 or inf.
    max_length = 2.0 * (h + w)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            if not known[iy, ix]:
                continue
            u, v = float(grid[iy, ix, 0]), float(grid[iy, ix, 1])
            norm = math.hypot(u, v)
            length = norm * abs(scale)  # inf if scale is huge; no error
            if not length > 0 or length < min_length:  # (also a zero vector or scale 0)
                continue
            length = min(length, max_length)
            factor = math.copysign(length / norm, scale)
            start = (int(x), int(y))
            end = (int(round(x + factor * u)), int(round(y + factor * v)))
            tip = min(0.5, (3.0 + 2.0 * thick) / length)
            if color is None:
                c = tuple(int(k) for k in colors[iy, ix])
                cv2.arrowedLine(out, start, end, (16, 16, 16), thick + 2, cv2.LINE_AA, tipLength=tip)
            else:
                c = tuple(int(k) for k in color)
            cv2.arrowedLine(out, start, end, c, thick, cv2.LINE_AA, tipLength=tip)
    return out


# --------------------------------------------------------------------------- panels

def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Put two images next to each other; ``right`` is resized to ``left``'s height
    (keeping its aspect ratio) when the heights differ."""
    left = _as_rgb(left)
    right = _as_rgb(right)
    hl, hr = left.shape[0], right.shape[0]
    if hl != hr:
        new_w = max(1, int(round(right.shape[1] * hl / hr)))
        interp = cv2.INTER_AREA if hr > hl else cv2.INTER_LINEAR
        right = cv2.resize(right, (new_w, hl), interpolation=interp)
    return np.concatenate([left, right], axis=1)


_side_by_side = side_by_side  # ``render`` has a keyword argument with the same name


def render(flow, *, max_flow: float | None = None, source: np.ndarray | None = None,
           arrows: bool = False, legend: bool = False, side_by_side: bool = False,
           arrow_step: int = 16, arrow_scale: float | None = None) -> np.ndarray:
    """Render one flow as a uint8 RGB image.

    * default: the colour-coded flow, of the flow's own size;
    * ``arrows``: arrows every ``arrow_step`` pixels, drawn in colour-wheel
      colours over ``source`` (the first frame of the pair) if given, else in
      black over the colour image; ``arrow_scale`` as ``scale`` in
      :func:`draw_arrows` (default ``None``: the longest arrow spans one step);
    * ``side_by_side`` (needs ``source``): ``source`` (with arrows if asked) on the
      left, the colour image on the right;
    * ``legend``: a colour-wheel legend in the top-right corner of the panel that
      shows flow colours (the colour image, or the arrow overlay).

    ``source`` is resized to the flow's size when they differ (arrows are in
    flow pixels). ``max_flow`` as in :func:`flow_to_color`.
    """
    flow = _check_flow(flow)
    h, w = flow.shape[:2]
    if side_by_side and source is None:
        raise ValueError("side_by_side needs a source image")
    if source is not None:
        source = _as_rgb(source)
        if source.shape[:2] != (h, w):
            interp = cv2.INTER_AREA if source.shape[0] > h else cv2.INTER_LINEAR
            source = cv2.resize(source, (w, h), interpolation=interp)
    color = flow_to_color(flow, max_flow=max_flow)
    if side_by_side:
        left = (draw_arrows(source, flow, step=arrow_step, scale=arrow_scale, max_flow=max_flow)
                if arrows else source)
        right = paste_legend(color) if legend else color
        return _side_by_side(left, right)
    if arrows:
        if source is not None:
            out = draw_arrows(source, flow, step=arrow_step, scale=arrow_scale, max_flow=max_flow)
        else:
            out = draw_arrows(color, flow, step=arrow_step, scale=arrow_scale, max_flow=max_flow,
                              color=(0, 0, 0))
    else:
        out = color
    return paste_legend(out) if legend else out
