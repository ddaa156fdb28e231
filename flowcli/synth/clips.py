"""Layered synthetic clips with exact ground-truth forward flow.

Scene model (AutoFlow / FlyingChairs style): a moving background plus N
foreground layers, drawn back to front. Every layer has a texture (and, for
foreground layers, an alpha mask) in its own canonical pixel coordinates and a
per-frame homography ``P_t`` mapping canonical -> image coordinates (see
``motion.py``; pixel ``(x, y)`` has its centre at the point ``(x, y)``).

Rendering is backward mapping: image pixel ``p`` samples the layer at
``P_t^{-1} p`` bilinearly (``cv2.warpPerspective`` with ``WARP_INVERSE_MAP``),
restricted to the bounding box of the layer's footprint. A pixel belongs to
the topmost layer whose alpha there is >= 0.5 (``Clip.labels``).

Ground truth for the pair ``(t, t+1)`` at pixel ``p`` owned by layer ``L``::

    p' = P^L_{t+1} (P^L_t)^{-1} p        (homogeneous divide)
    flow  = p' - p                        exact, also where p' leaves the frame
    valid = p' inside [0, W-1] x [0, H-1]
    occluded = not valid, or labels_{t+1}[round(p')] != L

Photometric effects (global per-frame gamma/contrast/colour gain/bias, per
layer brightness drift, sensor noise, occasional slight blur) never move
content, so the geometry of the flow stays exact; they only break brightness
constancy slightly, as real cameras do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .motion import LayerMotion, apply_h, sample_motion, translate
from .shapes import MARGIN, random_mask
from .textures import TEXTURE_KINDS, random_texture

__all__ = ["Clip", "ClipParams", "Layer", "Photometric", "generate_clip", "render_layers"]


@dataclass
class Clip:
    """A rendered clip. ``T = len(frames)``; pair ``t`` is frames ``t -> t+1``."""

    frames: list[np.ndarray]    # T x (H, W, 3) uint8 RGB
    flows: list[np.ndarray]     # T-1 x (H, W, 2) float32, forward flow t -> t+1, (u=x, v=y)
    valid: list[np.ndarray]     # T-1 x (H, W) bool: p + flow(p) lies inside frame t+1
    occluded: list[np.ndarray]  # T-1 x (H, W) bool: hidden by another layer at t+1, or out of frame
    labels: list[np.ndarray] = field(default_factory=list)  # T x (H, W) uint8 topmost layer (0 = background)


@dataclass
class ClipParams:
    """Generator knobs. Lengths are pixels at the given size unless noted.

    Geometry
      height, width, num_frames: clip size. Defaults 256x320 x3 frames: a
        training crop size that a 2-core CPU can render and train on; 3 frames is
        the minimum that carries motion history for MemFlow.
      num_layers: (min, max) foreground layers, drawn uniformly. 2..8 gives
        plenty of occlusion without hiding the background completely.
      min_object_size, max_object_size: object diameter as a fraction of
        min(height, width), drawn log-uniformly (10%..100%: from small fast
        things to large close-ups; with 2..8 layers the foreground covers
        ~28% of a frame on average, 6%..49% for 10th..90th percentile).
      thin_prob: probability of an elongated object (aspect 3..8): thin
        structures are a known weakness of flow networks.
      center_range: object centres at mid-clip are uniform in this range of
        fractions of width/height (it starts half its path earlier); the
        default lets objects sit partly outside and enter/leave the frame.
    Motion (per foreground layer; constant rate + jitter, see motion.py)
      max_speed: max translation in px/frame. None -> 0.125 * width (40 px at
        320 wide, 128 px at 1024 wide). Speeds are max_speed * U**speed_exponent,
        a heavy-tailed draw: with 2.5, ~23% of layers move < 1 px/frame
        (at 320 wide), the median is ~7 px, ~24% exceed max_speed/2.
      max_rotation: max angular speed, degrees/frame (drawn ~U**2, signed).
      max_scale_rate: max |d log scale| per frame (0.05 = 5%/frame zoom).
      max_perspective: max initial perspective distortion, as the relative
        depth change across the layer's half-extent (0.15 = 15%).
      max_perspective_rate: max change of that per frame.
      jitter: per-frame velocity noise std relative to the layer's speed (plus
        jitter_px absolute) - motion is smooth but not perfectly constant.
      max_accel: max relative speed change per frame (v_t = v (1+a)^t).
    Background (camera-like homography; same model, its own bounds)
      background_speed: background max speed as a fraction of max_speed.
      background_rotation, background_scale_rate, background_perspective(_rate):
        camera rotation (deg/frame), zoom and perspective bounds.
      static_background_prob: probability of a fixed camera (common in video).
    Photometric (set photometric=False to switch all off; geometry unaffected)
      brightness_jitter: std of per-frame log-gain random walk (global).
      contrast_jitter, gamma_jitter: std of per-frame log-contrast / log-gamma.
      color_jitter: std of per-frame per-channel log-gain.
      bias_jitter: std of per-frame additive offset (grey levels).
      layer_brightness_jitter: std of per-frame log-gain walk of each layer.
      max_noise_std: per clip, Gaussian noise std ~ U(0, max_noise_std) grey levels.
      blur_prob, max_blur_sigma: per-frame probability of a Gaussian blur with
        sigma ~ U(0.3, max_blur_sigma).
    Textures
      texture_kinds: subset of textures.TEXTURE_KINDS to draw from.
    """

    height: int = 256
    width: int = 320
    num_frames: int = 3
    num_layers: tuple[int, int] = (2, 8)
    min_object_size: float = 0.1
    max_object_size: float = 1.0
    thin_prob: float = 0.1
    center_range: tuple[float, float] = (-0.1, 1.1)
    max_speed: float | None = None
    speed_exponent: float = 2.5
    max_rotation: float = 5.0
    max_scale_rate: float = 0.05
    max_perspective: float = 0.15
    max_perspective_rate: float = 0.03
    jitter: float = 0.05
    jitter_px: float = 0.05
    max_accel: float = 0.03
    background_speed: float = 0.5
    background_rotation: float = 1.5
    background_scale_rate: float = 0.02
    background_perspective: float = 0.1
    background_perspective_rate: float = 0.01
    static_background_prob: float = 0.1
    photometric: bool = True
    brightness_jitter: float = 0.03
    contrast_jitter: float = 0.03
    gamma_jitter: float = 0.04
    color_jitter: float = 0.01
    bias_jitter: float = 2.0
    layer_brightness_jitter: float = 0.02
    max_noise_std: float = 3.0
    blur_prob: float = 0.1
    max_blur_sigma: float = 1.0
    texture_kinds: tuple[str, ...] = TEXTURE_KINDS

    @property
    def speed(self) -> float:
        """The resolved max foreground speed in px/frame."""
        return float(self.max_speed) if self.max_speed is not None else 0.125 * self.width


@dataclass
class Layer:
    """One layer to render: canonical texture (+ alpha) and per-frame poses.

    ``texture``: (h, w, 3) float32 0..255. ``alpha``: (h, w) float32 0..1, zero
    on a border of >= 2 px; ``None`` means opaque everywhere with the texture
    extended by mirror reflection (a background). ``poses``: T float64 3x3
    homographies, canonical array coords -> image coords. ``gains``: optional
    (T,) brightness factor per frame.
    """

    texture: np.ndarray
    alpha: np.ndarray | None
    poses: list[np.ndarray]
    gains: np.ndarray | None = None

    def __post_init__(self):
        tex = np.asarray(self.texture, np.float32)
        if self.alpha is not None:
            tex = np.concatenate([tex, np.asarray(self.alpha, np.float32)[..., None]], axis=2)
        self._src = np.ascontiguousarray(tex)


@dataclass
class Photometric:
    """Per-frame photometric perturbations (all arrays have length T)."""

    gamma: np.ndarray        # (T,)
    contrast: np.ndarray     # (T,)
    gain: np.ndarray         # (T, 3)
    bias: np.ndarray         # (T,) grey levels
    blur_sigma: np.ndarray   # (T,) 0 = no blur
    noise_std: float

    @staticmethod
    def identity(num_frames: int) -> "Photometric":
        return Photometric(np.ones(num_frames), np.ones(num_frames), np.ones((num_frames, 3)),
                           np.zeros(num_frames), np.zeros(num_frames), 0.0)

    @staticmethod
    def sample(rng: np.random.Generator, num_frames: int, p: ClipParams) -> "Photometric":
        t = num_frames

        def walk(std, shape=(t,)):
            steps = rng.normal(0.0, std, shape)
            steps[0] = 0.0
            return np.cumsum(steps, axis=0)

        return Photometric(
            gamma=np.exp(walk(p.gamma_jitter)),
            contrast=np.exp(walk(p.contrast_jitter)),
            gain=np.exp(walk(p.brightness_jitter)[:, None] + walk(p.color_jitter, (t, 3))),
            bias=walk(p.bias_jitter),
            blur_sigma=np.where(rng.random(t) < p.blur_prob, rng.uniform(0.3, max(0.3, p.max_blur_sigma), t), 0.0),
            noise_std=float(rng.uniform(0.0, p.max_noise_std)),
        )

    def lut(self, t: int) -> np.ndarray | None:
        """(1, 256, 3) uint8 lookup table of the tone change of frame ``t``, or None if identity."""
        if (self.gamma[t] == 1.0 and self.contrast[t] == 1.0 and self.bias[t] == 0.0
                and np.all(self.gain[t] == 1.0)):
            return None
        v = (np.arange(256, dtype=np.float64) / 255.0) ** self.gamma[t] * 255.0
        v = (v - 127.5) * self.contrast[t] + 127.5
        v = v[:, None] * self.gain[t][None, :] + self.bias[t]
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)[None]

    def apply(self, img: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
        """float32 (H,W,3) 0..255 -> uint8, for frame ``t``.

        Tone changes go through a per-channel 256-entry LUT on the quantised
        frame; sensor noise comes from OpenCV's RNG seeded from ``rng`` (several
        times faster than numpy's Gaussian sampler, still deterministic).
        """
        x = cv2.convertScaleAbs(img)  # round + saturate to uint8 (img >= 0)
        lut = self.lut(t)
        if lut is not None:
            x = cv2.LUT(x, lut)
        if self.blur_sigma[t] > 0:
            x = cv2.GaussianBlur(x, (0, 0), float(self.blur_sigma[t]))
        if self.noise_std > 0:
            noise = np.empty(x.shape, np.float32)
            cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
            cv2.randn(noise, 0.0, float(self.noise_std))
            x = cv2.add(x, noise, dtype=cv2.CV_8U)
        return x


# --------------------------------------------------------------------- render


def _footprint(pose: np.ndarray, th: int, tw: int, height: int, width: int):
    """Integer box (x0, y0, x1, y1) in the image covering the layer's canonical array, or None."""
    cx = np.array([-1.0, tw, tw, -1.0])
    cy = np.array([-1.0, -1.0, th, th])
    w = pose[2, 0] * cx + pose[2, 1] * cy + pose[2, 2]
    if np.any(w <= 1e-6):  # degenerate (should not happen with clamped perspective)
        return 0, 0, width, height
    x, y = apply_h(pose, cx, cy)
    x0 = max(0, int(math.floor(x.min())) - 1)
    y0 = max(0, int(math.floor(y.min())) - 1)
    x1 = min(width, int(math.ceil(x.max())) + 2)
    y1 = min(height, int(math.ceil(y.max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def render_layers(
    layers: list[Layer],
    height: int,
    width: int,
    photometric: Photometric | None = None,
    rng: np.random.Generator | None = None,
) -> Clip:
    """Render ``layers`` (back to front) into a clip with exact GT flow.

    All layers must have the same number of poses T >= 1. ``rng`` drives the
    sensor noise only (default: seeded 0).
    """
    if not layers:
        raise ValueError("render_layers needs at least one layer")
    T = len(layers[0].poses)
    if any(len(ly.poses) != T for ly in layers):
        raise ValueError("all layers need the same number of poses")
    if len(layers) > 255:
        raise ValueError("at most 255 layers")
    rng = rng if rng is not None else np.random.default_rng(0)
    H, W = int(height), int(width)
    frames, labels, rois = [], [], []
    for t in range(T):
        img = np.zeros((H, W, 3), np.float32)
        lab = np.zeros((H, W), np.uint8)
        roi_t = []
        for li, ly in enumerate(layers):
            src = ly._src
            th, tw = src.shape[:2]
            pose = ly.poses[t]
            box = (0, 0, W, H) if ly.alpha is None else _footprint(pose, th, tw, H, W)
            roi_t.append(box)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            m = np.linalg.inv(pose) @ translate(x0, y0)
            border = cv2.BORDER_REFLECT_101 if ly.alpha is None else cv2.BORDER_CONSTANT
            warped = cv2.warpPerspective(src, m, (x1 - x0, y1 - y0),
                                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                         borderMode=border, borderValue=0)
            gain = np.float32(1.0 if ly.gains is None else ly.gains[t])
            rgb = warped[..., :3]
            if gain != 1.0:
                rgb = rgb * gain
            sub = img[y0:y1, x0:x1]
            if ly.alpha is None:
                sub[...] = rgb
                lab[y0:y1, x0:x1] = li
            else:
                a = warped[..., 3]
                sub += a[..., None] * (rgb - sub)
                np.copyto(lab[y0:y1, x0:x1], li, where=a >= 0.5, casting="unsafe")
        pm = photometric
        frames.append(pm.apply(img, t, rng) if pm is not None else cv2.convertScaleAbs(img))
        labels.append(lab)
        rois.append(roi_t)

    flows, valids, occs = [], [], []
    xs_all = np.arange(W, dtype=np.float64)[None, :]
    ys_all = np.arange(H, dtype=np.float64)[:, None]
    gx = np.broadcast_to(np.arange(W, dtype=np.float32)[None, :], (H, W))
    gy = np.broadcast_to(np.arange(H, dtype=np.float32)[:, None], (H, W))
    for t in range(T - 1):
        flow = np.zeros((H, W, 2), np.float32)
        lab = labels[t]
        for li, ly in enumerate(layers):
            box = rois[t][li]
            if box is None:
                continue
            x0, y0, x1, y1 = box
            sel = lab[y0:y1, x0:x1] == li
            if not sel.any():
                continue
            rel = ly.poses[t + 1] @ np.linalg.inv(ly.poses[t])
            x, y = xs_all[:, x0:x1], ys_all[y0:y1]
            xn, yn = apply_h(rel, x, y)  # broadcasts to the (y1-y0, x1-x0) box
            np.copyto(flow[y0:y1, x0:x1, 0], xn - x, where=sel, casting="same_kind")
            np.copyto(flow[y0:y1, x0:x1, 1], yn - y, where=sel, casting="same_kind")
        xn = gx + flow[..., 0]
        yn = gy + flow[..., 1]
        valid = (xn >= 0) & (xn <= W - 1) & (yn >= 0) & (yn <= H - 1)
        # topmost layer at the (rounded) target position in frame t+1
        lab_next = cv2.remap(labels[t + 1], xn, yn, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        occ = ~valid | (lab_next != lab)
        flows.append(flow)
        valids.append(valid)
        occs.append(occ)
    return Clip(frames=frames, flows=flows, valid=valids, occluded=occs, labels=labels)


# ------------------------------------------------------------------- generate


def _background(rng: np.random.Generator, p: ClipParams) -> Layer:
    H, W, T = p.height, p.width, p.num_frames
    radius = 0.5 * math.hypot(W, H)
    static = rng.random() < p.static_background_prob
    mot: LayerMotion = sample_motion(
        rng, center=np.array([(W - 1) / 2, (H - 1) / 2]), radius=radius,
        max_speed=0.0 if static else p.speed * p.background_speed, speed_exponent=p.speed_exponent,
        max_rotation_deg=0.0 if static else p.background_rotation,
        max_scale_rate=0.0 if static else p.background_scale_rate,
        max_perspective=p.background_perspective,
        max_perspective_rate=0.0 if static else p.background_perspective_rate,
        jitter=0.0 if static else p.jitter, jitter_px=0.0 if static else p.jitter_px,
        max_accel=0.0 if static else p.max_accel,
        init_scale_range=(math.log(0.9), math.log(1.15)), init_rotation=False,
    )
    mot.theta = rng.uniform(-0.3, 0.3)
    poses = mot.matrices(T, rng)
    # canonical region seen by the frame over the whole clip
    fx = np.array([-1.0, W, W, -1.0])
    fy = np.array([-1.0, -1.0, H, H])
    pts = [apply_h(np.linalg.inv(a), fx, fy) for a in poses]
    xs = np.concatenate([q[0] for q in pts])
    ys = np.concatenate([q[1] for q in pts])
    cap_w, cap_h = 3 * W, 3 * H
    tw = int(min(cap_w, math.ceil(xs.max() - xs.min()) + 4))
    th = int(min(cap_h, math.ceil(ys.max() - ys.min()) + 4))
    ox = 0.5 * (xs.max() + xs.min()) - 0.5 * (tw - 1)  # centred coord of array pixel (0, 0)
    oy = 0.5 * (ys.max() + ys.min()) - 0.5 * (th - 1)
    tex = random_texture(rng, th, tw, kinds=p.texture_kinds)
    return Layer(texture=tex, alpha=None, poses=[a @ translate(ox, oy) for a in poses])


def _object(rng: np.random.Generator, p: ClipParams) -> Layer:
    H, W, T = p.height, p.width, p.num_frames
    base = min(H, W)
    d = math.exp(rng.uniform(math.log(p.min_object_size * base), math.log(max(p.min_object_size, p.max_object_size) * base)))
    thin = rng.random() < p.thin_prob
    aspect = rng.uniform(3.0, 8.0) if thin else math.exp(rng.uniform(-math.log(2.0), math.log(2.0)))
    ow = int(min(1.5 * max(H, W), max(6.0, d * math.sqrt(aspect)))) + 2 * MARGIN
    oh = int(min(1.5 * max(H, W), max(4.0, d / math.sqrt(aspect)))) + 2 * MARGIN
    kind = rng.choice(["rect", "ellipse", "polygon"]) if thin else None
    alpha = random_mask(rng, oh, ow, kind=kind)
    tex = random_texture(rng, oh, ow, kinds=p.texture_kinds)
    center = np.array([rng.uniform(*p.center_range) * W, rng.uniform(*p.center_range) * H])
    mot = sample_motion(
        rng, center=center, radius=0.5 * math.hypot(ow, oh), max_speed=p.speed,
        speed_exponent=p.speed_exponent, max_rotation_deg=p.max_rotation, max_scale_rate=p.max_scale_rate,
        max_perspective=p.max_perspective, max_perspective_rate=p.max_perspective_rate,
        jitter=p.jitter, jitter_px=p.jitter_px, max_accel=p.max_accel,
        init_scale_range=(math.log(0.8), math.log(1.25)),
    )
    # center_range describes where the object is mid-clip, so long clips do not
    # lose their fast objects after a few frames
    mot.center = mot.center - mot.velocity * (T - 1) / 2
    c = translate(-(ow - 1) / 2, -(oh - 1) / 2)
    return Layer(texture=tex, alpha=alpha, poses=[a @ c for a in mot.matrices(T, rng)])


def generate_clip(seed: int, params: ClipParams | None = None) -> Clip:
    """Generate a random clip, deterministic in ``(seed, params)``."""
    p = params if params is not None else ClipParams()
    if p.num_frames < 2:
        raise ValueError("num_frames must be >= 2")
    rng = np.random.default_rng(seed)
    lo, hi = p.num_layers
    n = int(rng.integers(lo, hi + 1))
    layers = [_background(rng, p)] + [_object(rng, p) for _ in range(n)]
    if p.photometric:
        for ly in layers:
            steps = rng.normal(0.0, p.layer_brightness_jitter, p.num_frames)
            steps[0] = 0.0
            ly.gains = np.exp(np.cumsum(steps))
        photo = Photometric.sample(rng, p.num_frames, p)
    else:
        photo = None
    return render_layers(layers, p.height, p.width, photo, rng)
