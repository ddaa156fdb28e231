"""Temporally coherent per-layer motion as a sequence of 3x3 homographies.

A layer's pose at frame ``t`` is the homography, applied to coordinates centred
on the layer (canonical units = pixels at scale 1)::

    A_t = Translate(c_t) @ Rotate(theta_t) @ Scale(exp(s_t)) @ Perspective(p_t)

with ``Perspective(p) = [[1,0,0],[0,1,0],[p_x,p_y,1]]``. Between consecutive
frames each parameter moves by a constant rate plus small Gaussian jitter
(near-constant velocity, as in real video, which MemFlow's motion memory
exploits)::

    c_{t+1}     = c_t + v * (1 + a)**t + jitter
    theta_{t+1} = theta_t + omega + jitter
    s_{t+1}     = s_t + ds + jitter
    p_{t+1}     = p_t + dp + jitter        (norm clamped)

Pixel convention everywhere: pixel ``(x, y)`` has its centre at the point
``(x, y)`` (OpenCV's convention for warps and remap).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LayerMotion", "translate", "pose_matrix", "apply_h", "sample_speed", "sample_motion"]


def translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def pose_matrix(cx: float, cy: float, theta: float, log_scale: float, px: float, py: float) -> np.ndarray:
    """``Translate(c) @ Rotate(theta) @ Scale(exp(log_scale)) @ Perspective(p)`` (float64 3x3)."""
    k = math.exp(log_scale)
    ca, sa = math.cos(theta) * k, math.sin(theta) * k
    rs = np.array([[ca, -sa, cx], [sa, ca, cy], [0.0, 0.0, 1.0]])
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [px, py, 1.0]])
    return rs @ persp


def apply_h(m: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply homography ``m`` to points (arrays ``x``, ``y``) with the homogeneous divide."""
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    xo = (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w
    yo = (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w
    return xo, yo


def sample_speed(rng: np.random.Generator, max_speed: float, exponent: float) -> float:
    """Heavy-tailed speed in ``[0, max_speed]``: ``max_speed * U**exponent``.

    ``P(speed < s) = (s / max_speed)**(1/exponent)``, a density falling off as
    ``speed**(1/exponent - 1)``. With exponent 2.5 and max_speed 40: 23% of
    draws are below 1 px, 9% below 0.1 px, the median is 7 px and 24% exceed
    20 px; with max_speed 128 (1024 px wide) 9% exceed 100 px/frame.
    """
    return float(max_speed * rng.random() ** exponent)


def _signed(rng: np.random.Generator, maxval: float, power: float = 2.0) -> float:
    """Symmetric value in ``[-maxval, maxval]`` concentrated near 0."""
    return float(maxval * rng.random() ** power * (1 if rng.random() < 0.5 else -1))


@dataclass
class LayerMotion:
    """Motion of one layer: initial pose plus per-frame rates (see module doc).

    ``radius`` is the layer's half-extent in canonical pixels; perspective
    coefficients are clamped so that ``|p| * radius <= max_persp``, which keeps
    the homogeneous denominator in ``[1 - max_persp, 1 + max_persp]`` over the
    layer (no fold-over).
    """

    center: np.ndarray          # (2,) image position of the layer centre at frame 0
    velocity: np.ndarray        # (2,) px/frame
    theta: float = 0.0          # rad
    omega: float = 0.0          # rad/frame
    log_scale: float = 0.0
    dlog_scale: float = 0.0     # per frame
    persp: np.ndarray | None = None   # (2,) initial perspective coefficients (1/px)
    dpersp: np.ndarray | None = None  # (2,) per frame
    accel: float = 0.0          # relative speed change per frame (v_t = v * (1+accel)**t)
    jitter_rel: float = 0.0     # per-frame velocity jitter std, relative to |v|
    jitter_px: float = 0.0      # per-frame velocity jitter std, absolute px
    jitter_rot: float = 0.0     # rad
    jitter_scale: float = 0.0   # log-scale units
    radius: float = 1.0
    max_persp: float = 0.3
    min_log_scale: float = math.log(0.25)
    max_log_scale: float = math.log(4.0)

    def matrices(self, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Poses ``A_0 .. A_{T-1}`` (float64 3x3), drawing the jitter from ``rng``."""
        c = np.asarray(self.center, np.float64).copy()
        v = np.asarray(self.velocity, np.float64)
        th, s = float(self.theta), float(self.log_scale)
        p = np.zeros(2) if self.persp is None else np.asarray(self.persp, np.float64).copy()
        dp = np.zeros(2) if self.dpersp is None else np.asarray(self.dpersp, np.float64)
        pmax = self.max_persp / max(self.radius, 1.0)
        out = []
        speed = float(np.hypot(*v))
        for t in range(num_frames):
            n = float(np.hypot(*p))
            if n > pmax:
                p = p * (pmax / n)
            out.append(pose_matrix(c[0], c[1], th, s, p[0], p[1]))
            jit = self.jitter_rel * speed + self.jitter_px
            c = c + v * (1.0 + self.accel) ** t + rng.normal(0.0, 1.0, 2) * jit
            th += self.omega + rng.normal() * self.jitter_rot
            s = min(max(s + self.dlog_scale + rng.normal() * self.jitter_scale, self.min_log_scale), self.max_log_scale)
            p = p + dp
        return out


def sample_motion(
    rng: np.random.Generator,
    center: np.ndarray,
    radius: float,
    max_speed: float,
    speed_exponent: float,
    max_rotation_deg: float,
    max_scale_rate: float,
    max_perspective: float,
    max_perspective_rate: float,
    jitter: float,
    jitter_px: float,
    max_accel: float,
    init_scale_range: tuple[float, float] = (0.0, 0.0),
    init_rotation: bool = True,
) -> LayerMotion:
    """Draw a random layer motion with the given bounds (see ``ClipParams`` for meanings)."""
    speed = sample_speed(rng, max_speed, speed_exponent)
    ang = rng.uniform(0, 2 * math.pi)
    vel = np.array([math.cos(ang), math.sin(ang)]) * speed
    r = max(radius, 1.0)
    pdir = rng.uniform(0, 2 * math.pi)
    p0 = np.array([math.cos(pdir), math.sin(pdir)]) * rng.uniform(0, max_perspective) * rng.random() / r
    dpdir = rng.uniform(0, 2 * math.pi)
    dp = np.array([math.cos(dpdir), math.sin(dpdir)]) * _signed(rng, max_perspective_rate) / r
    return LayerMotion(
        center=np.asarray(center, np.float64),
        velocity=vel,
        theta=rng.uniform(0, 2 * math.pi) if init_rotation else 0.0,
        omega=math.radians(_signed(rng, max_rotation_deg)),
        log_scale=rng.uniform(*init_scale_range),
        dlog_scale=_signed(rng, max_scale_rate),
        persp=p0,
        dpersp=dp,
        accel=rng.uniform(-max_accel, max_accel),
        jitter_rel=jitter,
        jitter_px=jitter_px,
        jitter_rot=math.radians(max_rotation_deg) * jitter * 0.5,
        jitter_scale=max_scale_rate * jitter * 0.5,
        radius=r,
        max_persp=max(max_perspective, 1e-9) * 1.5,
    )
