"""``make demo``: generate a small sample clip, run ``flowcli estimate`` on it, and score it.

The clip is rendered by this project's own generator (textured shapes moving
over a moving background), so its exact ground-truth flow is known and the
demo can print the shipped weights' end-point error on it. Nothing from
../shared is used. Outputs go to ``demo_out/`` (or the folder given): the
clip ``sample.mp4`` and the folder ``flow/``. Like flowcli, the demo replaces
nothing: if either exists it stops with a one-line error (remove them, or give
another folder). The clip is written atomically (temp file + rename).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "demo_out")
    video, flow_dir = out / "sample.mp4", out / "flow"
    for path in (video, flow_dir):
        if path.exists():
            print(f"flowcli: error: {path}: already exists (the demo replaces nothing; remove it "
                  f"or give another folder: python -m flowcli.demo FOLDER)", file=sys.stderr)
            return 1
    from .synth import make_demo_video
    clip = make_demo_video(video, num_frames=12, size=(320, 256), seed=7, overwrite=False)
    print(f"sample clip: {video} (12 frames, 320x256, generated with exact ground truth)")
    cmd = [sys.executable, "-m", "flowcli", "estimate", str(video), "-o", str(flow_dir), "--format", "flo",
           "--format", "png", "--video"]
    print("$ flowcli " + " ".join(cmd[3:]))
    code = subprocess.call(cmd)
    if code != 0:
        return code
    from .flowio import read_flow
    epes = []
    for i, (gt, valid) in enumerate(zip(clip.flows, clip.valid)):
        pred = read_flow(flow_dir / f"{i:06d}.flo")
        epes.append(float(np.linalg.norm(pred - gt, axis=-1)[valid].mean()))
    zero = float(np.mean([np.linalg.norm(gt, axis=-1)[v].mean() for gt, v in zip(clip.flows, clip.valid)]))
    print(f"mean end-point error on the sample: {np.mean(epes):.2f} px (zero flow would score {zero:.2f} px)")
    print(f"outputs: {flow_dir}/000000.flo ..., colour images in {flow_dir}/color/, video {flow_dir}/flow.mp4")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
