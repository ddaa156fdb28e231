"""Procedurally generated training clips with exact ground-truth optical flow.

``generate_clip(seed, ClipParams(...))`` renders a layered scene (moving
background + random textured foreground shapes, each with a temporally
coherent homography trajectory) and returns a ``Clip`` with frames, forward
flows, validity and occlusion masks. ``SynthClipDataset`` wraps it for torch
``DataLoader`` training; ``make_demo_video`` writes a sample mp4.
"""
from .clips import Clip, ClipParams, Layer, Photometric, generate_clip, render_layers

__all__ = [
    "Clip",
    "ClipParams",
    "Layer",
    "Photometric",
    "generate_clip",
    "render_layers",
    "SynthClipDataset",
    "make_demo_video",
]


def __getattr__(name):  # lazy: keep `import flowcli.synth` free of torch / av imports
    if name == "SynthClipDataset":
        from .dataset import SynthClipDataset

        return SynthClipDataset
    if name == "make_demo_video":
        from .demo_clip import make_demo_video

        return make_demo_video
    raise AttributeError(name)
