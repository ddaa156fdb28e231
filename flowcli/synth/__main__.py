"""Benchmark / preview the synthetic clip generator.

    python -m flowcli.synth bench [--size 256x320] [--size 384x512] [--clips 20] [--frames 3]
    python -m flowcli.synth preview out.png [--seeds 0,1,2,3] [--size 256x320] [--frames 3]
    python -m flowcli.synth export OUTDIR [--clips 20] [--size 256x320] [--frames 4] [--seed 10000000]

``bench`` prints the generation time per frame (the whole clip: textures,
rendering, flow, occlusion, photometric) for each size. ``preview`` writes a
PNG grid: one row per seed with the frames, the colour-coded GT flows and the
occlusion mask of the first pair. ``export`` writes held-out clips as a
Sintel-layout dataset for ``flowcli eval OUTDIR --layout sintel [--predict]``.
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from .clips import ClipParams, generate_clip


def _size(s: str) -> tuple[int, int]:
    h, w = (int(v) for v in s.lower().split("x"))
    return h, w


def bench(sizes, clips: int = 20, frames: int = 3) -> dict[tuple[int, int], float]:
    """Mean milliseconds per frame for each (height, width)."""
    out = {}
    for h, w in sizes:
        p = ClipParams(height=h, width=w, num_frames=frames)
        generate_clip(0, p)  # warm-up
        t0 = time.perf_counter()
        for s in range(1, clips + 1):
            generate_clip(s, p)
        out[(h, w)] = (time.perf_counter() - t0) / (clips * frames) * 1000
    return out


def _flow_rgb(flow: np.ndarray, max_flow: float) -> np.ndarray:
    try:
        from ..viz import flow_to_color

        return flow_to_color(flow, max_flow=max_flow)
    except Exception:  # fallback: HSV wheel (hue = direction, value = magnitude)
        mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
        hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
        hsv[..., 0] = (ang * (90 / np.pi)).astype(np.uint8)
        hsv[..., 1] = 255
        hsv[..., 2] = np.clip(mag / max(max_flow, 1e-6) * 255, 0, 255).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def preview(path: str, seeds, size=(256, 320), frames: int = 3) -> None:
    rows = []
    p = ClipParams(height=size[0], width=size[1], num_frames=frames)
    for s in seeds:
        c = generate_clip(s, p)
        mx = max(float(np.hypot(f[..., 0], f[..., 1]).max()) for f in c.flows)
        flows = [_flow_rgb(f, mx) for f in c.flows]
        occ = np.repeat((c.occluded[0] * 255).astype(np.uint8)[..., None], 3, axis=2)
        rows.append(np.concatenate(c.frames + flows + [occ], axis=1))
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m flowcli.synth", description="synthetic clip generator tools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="ms per generated frame")
    b.add_argument("--size", action="append", type=_size, help="HxW (repeatable); default 256x320 and 384x512")
    b.add_argument("--clips", type=int, default=20)
    b.add_argument("--frames", type=int, default=3)
    b.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    v = sub.add_parser("preview", help="PNG grid of frames, flows and occlusion")
    v.add_argument("path")
    v.add_argument("--seeds", default="0,1,2,3")
    v.add_argument("--size", type=_size, default=(256, 320))
    v.add_argument("--frames", type=int, default=3)
    e = sub.add_parser("export", help="write clips as a Sintel-layout dataset (for flowcli eval)")
    e.add_argument("path")
    e.add_argument("--clips", type=int, default=20)
    e.add_argument("--size", type=_size, default=(256, 320))
    e.add_argument("--frames", type=int, default=4)
    e.add_argument("--seed", type=int, default=None, help="first seed (default: the held-out 10000000)")
    a = ap.parse_args(argv)
    if a.cmd == "export":
        from .export import HELD_OUT_SEED, export_clips
        p = ClipParams(height=a.size[0], width=a.size[1], num_frames=a.frames)
        print(export_clips(a.path, a.clips, p, HELD_OUT_SEED if a.seed is None else a.seed))
        return
    if a.cmd == "bench":
        if a.threads is not None:
            cv2.setNumThreads(a.threads)
        for (h, w), ms in bench(a.size or [(256, 320), (384, 512)], a.clips, a.frames).items():
            print(f"{h}x{w}: {ms:.1f} ms/frame ({a.frames}-frame clips, {a.clips} clips)")
    else:
        preview(a.path, [int(s) for s in a.seeds.split(",")], a.size, a.frames)
        print(a.path)


if __name__ == "__main__":
    main()
