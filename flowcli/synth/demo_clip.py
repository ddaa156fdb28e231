"""A small sample video (textured shapes over a moving background) for demos.

``python -m flowcli.synth.demo_clip out.mp4 [--frames 24] [--size 320x256] [--seed 0] [--overwrite]``
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np

from ..atomic import atomic_path, check_writable
from ..errors import FlowcliError
from .clips import Clip, ClipParams, generate_clip

__all__ = ["demo_params", "make_demo_video"]


def demo_params(num_frames: int = 24, size: tuple[int, int] = (320, 256)) -> ClipParams:
    """Gentle settings for a watchable demo: few larger objects, moderate steady motion."""
    w, h = size
    return ClipParams(
        height=h, width=w, num_frames=num_frames, num_layers=(3, 5),
        min_object_size=0.2, max_object_size=0.5, thin_prob=0.0, center_range=(0.2, 0.8),
        max_speed=0.012 * w, speed_exponent=0.7,
        max_rotation=2.0, max_scale_rate=0.01, max_perspective_rate=0.005, max_accel=0.0,
        jitter=0.03, jitter_px=0.02,
        background_speed=0.4, background_rotation=0.2, background_scale_rate=0.003,
        background_perspective_rate=0.0, static_background_prob=0.0,
        photometric=True, brightness_jitter=0.005, contrast_jitter=0.005, gamma_jitter=0.005,
        color_jitter=0.002, bias_jitter=0.3, layer_brightness_jitter=0.003, max_noise_std=1.0,
        blur_prob=0.0,
        texture_kinds=("noise", "stripes", "checker", "shapes", "mix"),
    )


def make_demo_video(path, num_frames: int = 24, size: tuple[int, int] = (320, 256), seed: int = 0,
                    fps: int = 12, params: ClipParams | None = None, overwrite: bool = True) -> Clip:
    """Render a demo clip and write it to ``path`` as H.264 (mpeg4 fallback) mp4.

    ``size`` is (width, height); both are rounded down to even numbers (yuv420p).
    Returns the ``Clip`` (frames, exact GT flows, masks) that was written.
    The file appears only when complete (temp file + rename). ``overwrite``
    is True by default because tests and benchmarks regenerate clips in place;
    the user-facing commands (``make demo``, this module's ``main``) pass False,
    so an existing file is refused (OutputExistsError) before any work.
    """
    import imageio.v3 as iio

    w, h = (int(size[0]) // 2) * 2, (int(size[1]) // 2) * 2
    if num_frames < 2 or w < 16 or h < 16:
        raise ValueError("need num_frames >= 2 and size >= 16x16")
    path = check_writable(path, overwrite)
    p = demo_params(num_frames, (w, h)) if params is None else replace(params, height=h, width=w, num_frames=num_frames)
    clip = generate_clip(seed, p)
    frames = np.stack(clip.frames)
    err = None
    with atomic_path(path, overwrite) as tmp:
        for codec in ("libx264", "mpeg4"):
            try:
                iio.imwrite(tmp, frames, plugin="pyav", codec=codec, fps=fps, out_pixel_format="yuv420p")
                break
            except Exception as e:  # codec missing in this PyAV build: try the next one
                err = e
        else:
            raise RuntimeError(f"could not encode {path}: {err}")
    return clip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="320x256", help="WxH")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=int, default=12)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing file")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.lower().split("x"))
    try:
        make_demo_video(a.path, a.frames, (w, h), a.seed, a.fps, overwrite=a.overwrite)
    except FlowcliError as exc:
        sys.exit(f"{ap.prog}: error: {exc}")
    print(a.path)


if __name__ == "__main__":
    main()
