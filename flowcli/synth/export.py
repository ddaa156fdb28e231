"""Write generated clips as a Sintel-layout dataset, so ``flowcli eval`` can score them.

    training/clean/clip_NNNN/frame_0001.png ...        frames (RGB)
    training/flow/clip_NNNN/frame_0001.flo ...         GT flow frame_k -> frame_k+1
    training/occlusions/clip_NNNN/frame_0001.png ...   255 = occluded or leaving the frame

Clip i uses seed ``base_seed + i``. Training draws its seeds from
:func:`~flowcli.synth.dataset.seed_for` (a hash of base seed and index), and
``flowcli.train`` evaluates on seeds from 10,000,000 up, so exports from that
base are held out from training in the same way.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..atomic import write_bytes_atomic
from ..flowio import write_flow
from .clips import ClipParams, generate_clip

HELD_OUT_SEED = 10_000_000


def export_clips(root: str | Path, clips: int, params: ClipParams, base_seed: int = HELD_OUT_SEED) -> Path:
    """Generate ``clips`` clips into ``root`` (Sintel layout). Returns ``root / "training"``."""
    base = Path(root) / "training"
    for i in range(clips):
        clip = generate_clip(base_seed + i, params)
        name = f"clip_{i:04d}"
        for sub in ("clean", "flow", "occlusions"):
            (base / sub / name).mkdir(parents=True, exist_ok=True)
        for k, frame in enumerate(clip.frames, start=1):
            _write_png(base / "clean" / name / f"frame_{k:04d}.png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        for k, (flow, occ) in enumerate(zip(clip.flows, clip.occluded), start=1):
            write_flow(base / "flow" / name / f"frame_{k:04d}.flo", flow, overwrite=True)
            _write_png(base / "occlusions" / name / f"frame_{k:04d}.png", occ.astype(np.uint8) * 255)
    return base


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    write_bytes_atomic(path, data.tobytes(), overwrite=True)
