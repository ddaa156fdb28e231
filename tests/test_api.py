"""The documented Python API (README)."""
import numpy as np
import torch

import flowcli
from flowcli.model import CPU_SMALL, MemFlowNet


def test_estimate_flows_on_arrays_and_folder(conformance_dir):
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL)
    frames = [np.random.RandomState(i).randint(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    out = list(flowcli.estimate_flows(frames, model, iters=1))
    assert [i for i, _ in out] == [0, 1] and out[0][1].shape == (48, 64, 2)
    out = list(flowcli.estimate_flows(conformance_dir, model, iters=1, start=1, step=2))
    assert [i for i, _ in out] == [1]


def test_load_model_with_official_checkpoint(conformance_dir):
    model = flowcli.load_model(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel")
    assert model.cfg.train_avg_length == 6624.0


def test_read_write_color(tmp_path):
    flow = np.random.RandomState(0).randn(8, 9, 2).astype(np.float32)
    flowcli.write_flow(tmp_path / "a.flo", flow)
    assert np.array_equal(flowcli.read_flow(tmp_path / "a.flo"), flow)
    assert flowcli.flow_to_color(flow).shape == (8, 9, 3)


def test_estimate_flows_uses_the_weights_defaults_like_the_cli():
    from flowcli.engine import FlowStream, StreamOptions
    from flowcli.synth.textures import random_texture

    model = flowcli.load_model()
    assert model.flowcli_defaults == {"iters": 8, "coarse": True, "refine": True, "tta": False}  # the file's
    # 256x320 (the smallest size with a coarse pass) moving 40 px: the coarse start is taken
    tex = random_texture(np.random.default_rng(0), 256, 360, kinds=("noise",)).astype(np.uint8)
    frames = [np.ascontiguousarray(tex[:, 40 - 40 * t:360 - 40 * t]) for t in range(2)]

    def by_stream(**options):
        stream = FlowStream(model, StreamOptions(**options))
        return [f for f in (stream.push(im) for im in frames) if f is not None][0]

    got = [flow for _, flow in flowcli.estimate_flows(frames, model)][0]
    np.testing.assert_allclose(got, by_stream(iters=8, coarse=True, refine=True), atol=1e-5)
    for off, options in (({"refine": False}, dict(iters=8, coarse=True)),
                         ({"coarse_to_fine": False}, dict(iters=8, refine=True))):
        other = [flow for _, flow in flowcli.estimate_flows(frames, model, **off)][0]
        np.testing.assert_allclose(other, by_stream(**options), atol=1e-5)
        assert np.abs(other - got).max() > 1e-2, off  # each default was on, and is off when asked


def test_estimate_flows_selects_frames_of_an_iterable_as_of_a_path(conformance_dir, tmp_path):
    """start/end/step were silently ignored for an iterable of frames; a bytes path was looked up as
    the literal text "b'...'"."""
    import os

    import pytest

    from flowcli.errors import InputError
    from flowcli.sources import read_image_rgb
    model = MemFlowNet(CPU_SMALL).eval()
    frames = [read_image_rgb(p) for p in sorted(conformance_dir.glob("frame_*.png"))]
    for sel in ({"step": 2}, {"start": 1, "end": 4}, {"start": 1, "step": 3}):
        from_path = list(flowcli.estimate_flows(conformance_dir, model, iters=1, **sel))
        from_list = list(flowcli.estimate_flows(iter(frames), model, iters=1, **sel))
        assert [i for i, _ in from_list] == [i for i, _ in from_path] and from_path, sel
        for (_, a), (_, b) in zip(from_list, from_path):
            assert np.array_equal(a, b)
    assert [i for i, _ in flowcli.estimate_flows(frames, model, iters=1, step=2)] == [0, 2]
    with pytest.raises(InputError, match="step"):
        list(flowcli.estimate_flows(frames, model, iters=1, step=0))
    as_bytes = list(flowcli.estimate_flows(os.fsencode(str(conformance_dir)), model, iters=1, end=2))
    assert [i for i, _ in as_bytes] == [0]
    # Frame objects (e.g. from flowcli.sources.open_source) keep their own indices
    from flowcli.sources import Frame
    numbered = [Frame(10 + i, f) for i, f in enumerate(frames)]
    assert [i for i, _ in flowcli.estimate_flows(numbered, model, iters=1)] == [10, 11, 12, 13]
    assert [i for i, _ in flowcli.estimate_flows(numbered, model, iters=1, start=11, step=2)] == [11]
