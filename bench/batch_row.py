"""Batch row of ``make bench`` (issue #7): frames/s over short generated videos, 1 and 2 local workers.

The videos come from this project's own generator; the model is the shipped default (or a random
CPU_SMALL model when none is shipped). With 1 worker it uses all threads; with 2 workers each
uses half, so the comparison is at equal total CPU.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def measure_batch(threads: int, quick: bool) -> list[dict]:
    import torch

    from flowcli.batch import run_batch
    from flowcli.model import CPU_SMALL, MemFlowNet
    from flowcli.synth import make_demo_video
    from flowcli.weights import default_name, save_safetensors
    n_videos, n_frames, size, iters = (4, 3, (96, 64), 1) if quick else (20, 8, (320, 256), 6)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flowcli-bench-batch-") as tmp:
        tmp = Path(tmp)
        for i in range(n_videos):
            make_demo_video(tmp / "videos" / f"clip{i:02d}.mp4", num_frames=n_frames, size=size, seed=i)
        weights = default_name()
        if weights is None:
            torch.manual_seed(0)
            weights = str(save_safetensors(tmp / "small.safetensors", MemFlowNet(CPU_SMALL), iters=iters))
        for workers in (1, 2):
            summary = run_batch([str(tmp / "videos")], tmp / f"out{workers}", workers=workers, weights=weights,
                                iters=iters, threads=max(1, threads // workers), quiet=True)
            rows.append({"workers": workers, "videos": n_videos, "frames": summary.frames,
                         "seconds": summary.seconds, "frames_per_second": summary.frames_per_second,
                         "failed": len(summary.failures), "size": f"{size[0]}x{size[1]}", "iters": iters,
                         "weights": weights if weights == default_name() else "random CPU_SMALL"})
    return rows
