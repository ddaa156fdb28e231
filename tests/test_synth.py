"""Tests for the synthetic clip generator (flowcli.synth).

Kept light: small frame sizes, few clips; the whole file runs in a few seconds
on a 2-core CPU.
"""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from flowcli.synth import Clip, ClipParams, Layer, generate_clip, render_layers
from flowcli.synth.motion import apply_h, pose_matrix, translate

SMALL = dict(height=96, width=128)


def _boundary(lab: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels within r px of a change of topmost layer (anti-aliased mixing zone)."""
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.dilate(lab, k) != cv2.erode(lab, k)


def _warp_errors(clip: Clip, t: int) -> tuple[float, float, float]:
    """(mean |I_t - warp(I_{t+1}, flow)|, same with zero flow, fraction used) on clean pixels."""
    f = clip.flows[t]
    H, W = f.shape[:2]
    gy, gx = np.mgrid[0:H, 0:W].astype(np.float32)
    mx, my = gx + f[..., 0], gy + f[..., 1]
    nxt = clip.frames[t + 1].astype(np.float32)
    cur = clip.frames[t].astype(np.float32)
    warped = cv2.remap(nxt, mx, my, cv2.INTER_LINEAR)
    near_edge_next = cv2.remap(_boundary(clip.labels[t + 1]).astype(np.uint8), mx, my, cv2.INTER_NEAREST) > 0
    m = clip.valid[t] & ~clip.occluded[t] & ~_boundary(clip.labels[t]) & ~near_edge_next
    err = np.abs(warped - cur).mean(axis=2)[m]
    zero = np.abs(nxt - cur).mean(axis=2)[m]
    return float(err.mean()), float(zero.mean()), float(m.mean())


def _bg_layer(rng, h, w, poses):
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    tex = (tex - tex.mean()) * 4 + 128
    return Layer(texture=np.clip(tex, 0, 255), alpha=None, poses=poses)


# ---------------------------------------------------------------- structure


def test_shapes_dtypes_and_labels():
    p = ClipParams(num_frames=4, **SMALL)
    c = generate_clip(0, p)
    assert len(c.frames) == 4 and len(c.flows) == len(c.valid) == len(c.occluded) == 3
    assert len(c.labels) == 4
    for fr in c.frames:
        assert fr.shape == (96, 128, 3) and fr.dtype == np.uint8
    for f, v, o in zip(c.flows, c.valid, c.occluded):
        assert f.shape == (96, 128, 2) and f.dtype == np.float32
        assert v.shape == o.shape == (96, 128) and v.dtype == o.dtype == np.bool_
        assert np.isfinite(f).all()
        assert (o | v).all(), "out-of-frame pixels must be marked occluded"
    assert c.labels[0].dtype == np.uint8


def test_deterministic_by_seed_and_seeds_differ():
    p = ClipParams(**SMALL)
    a, b, c = generate_clip(5, p), generate_clip(5, p), generate_clip(6, p)
    for x, y in zip(a.frames + a.flows + a.valid + a.occluded, b.frames + b.flows + b.valid + b.occluded):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.frames[0], c.frames[0])
    assert not np.array_equal(a.flows[0], c.flows[0])


def test_params_rejected():
    with pytest.raises(ValueError):
        generate_clip(0, ClipParams(num_frames=1, **SMALL))


# ------------------------------------------------------------ exact GT cases


@pytest.mark.parametrize("dx,dy", [(3.0, -2.0), (-7.25, 1.625), (0.3, 0.0)])
def test_single_layer_translation_exact(dx, dy):
    H, W, T = 48, 64, 3
    rng = np.random.default_rng(1)
    poses = [translate(-20 + t * dx, -15 + t * dy) for t in range(T)]
    clip = render_layers([_bg_layer(rng, 100, 120, poses)], H, W)
    gy, gx = np.mgrid[0:H, 0:W]
    for t in range(T - 1):
        f = clip.flows[t]
        np.testing.assert_allclose(f[..., 0], dx, atol=1e-4)
        np.testing.assert_allclose(f[..., 1], dy, atol=1e-4)
        inside = (gx + dx >= 0) & (gx + dx <= W - 1) & (gy + dy >= 0) & (gy + dy <= H - 1)
        np.testing.assert_array_equal(clip.valid[t], inside)
        np.testing.assert_array_equal(clip.occluded[t], ~inside)
    if float(dx).is_integer() and float(dy).is_integer():
        # integer shift: frame t+1 is frame t moved by exactly (dx, dy) pixels
        ix, iy = int(dx), int(dy)
        a = clip.frames[0][max(0, -iy):H - max(0, iy), max(0, -ix):W - max(0, ix)]
        b = clip.frames[1][max(0, iy):H - max(0, -iy), max(0, ix):W - max(0, -ix)]
        np.testing.assert_array_equal(a, b)


def test_foreground_over_static_background_flow_and_occlusion():
    H, W = 40, 60
    rng = np.random.default_rng(2)
    bg = _bg_layer(rng, H + 10, W + 10, [translate(-5, -5)] * 3)
    alpha = np.zeros((20, 20), np.float32)
    alpha[4:16, 4:16] = 1.0
    fg_tex = np.full((20, 20, 3), 200, np.float32)
    fg = Layer(texture=fg_tex, alpha=alpha, poses=[translate(10 + 6 * t, 8 + 2 * t) for t in range(3)])
    clip = render_layers([bg, fg], H, W)
    lab = clip.labels[0]
    # the square's pixels: image x in 14..25, y in 12..23 at t=0
    assert (lab[12:24, 14:26] == 1).all() and lab.sum() == 144
    f = clip.flows[0]
    np.testing.assert_allclose(f[lab == 1], np.tile([6.0, 2.0], ((lab == 1).sum(), 1)), atol=1e-5)
    np.testing.assert_allclose(f[lab == 0], 0.0, atol=1e-6)
    # background pixels covered by the square at t+1 are occluded, others are not
    cover_next = clip.labels[1] == 1
    np.testing.assert_array_equal(clip.occluded[0][lab == 0], cover_next[lab == 0])
    assert not clip.occluded[0][lab == 1].any()  # the square stays inside the frame and on top


def test_rotation_scale_perspective_pose_flow_is_analytic():
    H, W = 64, 64
    rng = np.random.default_rng(3)
    c = (31.5, 31.5)
    poses = [pose_matrix(c[0], c[1], 0.05 * t, 0.03 * t, 0.001 * t, -0.0005 * t) @ translate(-50, -50) for t in range(2)]
    clip = render_layers([_bg_layer(rng, 101, 101, poses)], H, W)
    gy, gx = np.mgrid[0:H, 0:W].astype(np.float64)
    rel = poses[1] @ np.linalg.inv(poses[0])
    xn, yn = apply_h(rel, gx, gy)
    np.testing.assert_allclose(clip.flows[0][..., 0], xn - gx, atol=1e-4)
    np.testing.assert_allclose(clip.flows[0][..., 1], yn - gy, atol=1e-4)
    # sanity of the model: a rotation of 0.05 rad about the centre moves a corner by ~r*0.05
    assert abs(np.hypot(*clip.flows[0][0, 0]) - math.hypot(31.5, 31.5) * math.hypot(math.exp(0.03) - 1, 0.05)) < 2.5


# ------------------------------------------------- GT vs rendered images


def test_gt_flow_warps_next_frame_onto_current():
    p = ClipParams(height=128, width=160, num_frames=3, photometric=False)
    errs, zeros = [], []
    for seed in range(6):
        clip = generate_clip(seed, p)
        for t in range(2):
            e, z, frac = _warp_errors(clip, t)
            assert frac > 0.3
            errs.append(e)
            zeros.append(z)
            # each pair: warping with the GT flow is far better than not warping
            assert e < 0.25 * z + 0.5, (seed, t, e, z)
    # Residual is bilinear re-interpolation of sharp/fine textures only (~0.55 grey
    # levels here); a 0.3 px flow offset roughly doubles both numbers.
    assert np.mean(errs) < 1.0, errs
    assert np.mean(np.array(errs) / np.array(zeros)) < 0.09


def test_gt_flow_warp_is_near_exact_on_smooth_textures_with_strong_geometry():
    # Smooth textures leave only interpolation error; strong rotation/zoom/perspective
    # exercise the full homography path (any convention slip would show up here).
    p = ClipParams(height=96, width=128, num_frames=3, photometric=False, texture_kinds=("noise", "gradient"),
                   max_rotation=15.0, max_scale_rate=0.15, max_perspective=0.3, max_perspective_rate=0.1,
                   background_rotation=5.0, background_scale_rate=0.08)
    errs = []
    for seed in range(4):
        clip = generate_clip(100 + seed, p)
        for t in range(2):
            e, z, _ = _warp_errors(clip, t)
            errs.append(e)
            assert e < 0.1 * z + 0.5, (seed, t, e, z)
    assert np.mean(errs) < 0.6, errs


def test_photometric_effects_change_pixels_not_geometry():
    base = ClipParams(photometric=False, **SMALL)
    photo = ClipParams(photometric=True, max_noise_std=3.0, **SMALL)
    a, b = generate_clip(11, base), generate_clip(11, photo)
    # same random draw for geometry (photometric draws come last)
    for fa, fb in zip(a.flows, b.flows):
        np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(a.frames[1], b.frames[1])
    diff = np.abs(a.frames[1].astype(np.float32) - b.frames[1]).mean()
    assert 0.1 < diff < 40


# ------------------------------------------------------- motion statistics


def test_flow_magnitudes_span_subpixel_to_large():
    p = ClipParams(height=96, width=128, photometric=False)
    mags = []
    for seed in range(16):
        c = generate_clip(seed, p)
        f = c.flows[0]
        mags.append(np.hypot(f[..., 0], f[..., 1])[c.valid[0]])
    m = np.concatenate(mags)
    assert (m < 1.0).mean() > 0.03, "too few sub-pixel motions"
    assert (m > p.speed / 4).mean() > 0.03, "too few large motions"
    assert m.max() > p.speed / 2
    assert m.max() < 3 * p.speed


def test_default_max_speed_scales_with_width():
    assert ClipParams(width=1024).speed >= 100
    assert ClipParams(width=320).speed == pytest.approx(40)
    assert ClipParams(width=320, max_speed=7).speed == 7


def _coherence(params: ClipParams, seeds) -> float:
    """Median over pairs of: median |flow_{t+1}(p + flow_t(p)) - flow_t(p)| / (median |flow_t| + 0.5 px).

    I.e. how much a tracked point's velocity changes from one frame pair to the
    next, relative to typical speed (0 = perfectly constant motion).
    """
    ratios = []
    for seed in seeds:
        c = generate_clip(seed, params)
        H, W = c.labels[0].shape
        gy, gx = np.mgrid[0:H, 0:W]
        for t in range(len(c.flows) - 1):
            f0, f1 = c.flows[t], c.flows[t + 1]
            m = c.valid[t] & ~c.occluded[t]
            xi = np.clip(np.rint(gx + f0[..., 0]), 0, W - 1).astype(int)
            yi = np.clip(np.rint(gy + f0[..., 1]), 0, H - 1).astype(int)
            d = np.hypot(*(f1[yi, xi] - f0).transpose(2, 0, 1))[m]
            mag = np.hypot(f0[..., 0], f0[..., 1])[m]
            ratios.append(np.median(d) / (np.median(mag) + 0.5))
    return float(np.median(ratios))


def test_motion_is_temporally_coherent():
    p = ClipParams(height=96, width=128, num_frames=5, photometric=False)
    seeds = range(200, 204)
    default = _coherence(p, seeds)
    smooth = _coherence(ClipParams(height=96, width=128, num_frames=5, photometric=False,
                                   jitter=0.0, jitter_px=0.0, max_accel=0.0), seeds)
    shaky = _coherence(ClipParams(height=96, width=128, num_frames=5, photometric=False, jitter=0.5), seeds)
    assert smooth < 0.05, smooth    # constant rates: only rotation/zoom curvature remains
    assert default < 0.2, default   # near-constant velocity plus small jitter
    assert shaky > 2 * default, (shaky, default)  # the metric does see incoherent motion


# ----------------------------------------------------------------- dataset


def test_dataset_with_dataloader_worker():
    import torch
    from torch.utils.data import DataLoader

    from flowcli.synth import SynthClipDataset

    p = ClipParams(height=48, width=64, num_frames=3, num_layers=(1, 3))
    ds = SynthClipDataset(length=4, base_seed=7, params=p)
    assert len(ds) == 4
    item = ds[1]
    assert item["frames"].shape == (3, 3, 48, 64) and item["frames"].dtype == torch.float32
    assert item["flows"].shape == (2, 2, 48, 64) and item["flows"].dtype == torch.float32
    assert item["valid"].shape == (2, 48, 64) and item["valid"].dtype == torch.float32
    assert 0 <= item["frames"].min() and item["frames"].max() <= 255
    with pytest.raises(IndexError):
        ds[4]
    dl = DataLoader(ds, batch_size=2, num_workers=1, shuffle=False)
    batches = list(dl)
    assert len(batches) == 2
    assert batches[0]["frames"].shape == (2, 3, 3, 48, 64)
    # generated in the worker == generated here (determinism per (base_seed, index))
    torch.testing.assert_close(batches[0]["frames"][1], item["frames"], rtol=0, atol=0)
    torch.testing.assert_close(batches[0]["flows"][1], item["flows"], rtol=0, atol=0)
    # another base seed gives other data
    other = SynthClipDataset(length=4, base_seed=8, params=p)[1]
    assert not torch.equal(other["frames"], item["frames"])


# ------------------------------------------------------------- speed, demo


def test_generation_speed_reported(capsys):
    p = ClipParams()  # 256x320, 3 frames
    generate_clip(0, p)  # warm-up
    n = 4
    t0 = time.perf_counter()
    for s in range(1, n + 1):
        generate_clip(s, p)
    ms = (time.perf_counter() - t0) / (n * p.num_frames) * 1000
    with capsys.disabled():
        print(f"\n[synth] {ms:.1f} ms/frame at {p.height}x{p.width} ({p.num_frames}-frame clips)")
    assert ms < 500  # loose sanity bound; target is well under 50 on an idle core


def test_demo_video_roundtrip(tmp_path):
    import imageio.v3 as iio

    from flowcli.synth import make_demo_video

    path = tmp_path / "demo.mp4"
    clip = make_demo_video(path, num_frames=6, size=(64, 48), seed=1)
    assert path.stat().st_size > 0
    frames = iio.imread(path, plugin="pyav")
    assert frames.shape == (6, 48, 64, 3)
    assert len(clip.flows) == 5
    # lossy codec, but content must match roughly
    assert np.abs(frames[2].astype(np.float32) - clip.frames[2]).mean() < 12
