"""The coarse-to-fine start (flowcli.coarse): the gate, the gain on large motion, resume, the CLI default."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.coarse import GATE_PX, CoarseGuide
from flowcli.engine import FlowStream, Geometry, StreamOptions, flow_to_low
from flowcli.model import InputPadder
from flowcli.synth.textures import random_texture
from flowcli.weights import load_weights

H, W = 256, 384  # the smallest height that gets a coarse pass (half of it: MIN_COARSE_SIDE)


@pytest.fixture(scope="module")
def shipped():
    return load_weights(None)


def translating(d: tuple[int, int], n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` frames of one texture moving by ``d`` = (dx, dy) px per frame: the flow is ``d`` everywhere."""
    pad = (n - 1) * max(d)
    tex = random_texture(np.random.default_rng(seed), H + pad, W + pad, kinds=("noise",))
    return [np.ascontiguousarray(tex[pad - t * d[1]:pad - t * d[1] + H, pad - t * d[0]:pad - t * d[0] + W])
            .astype(np.uint8) for t in range(n)]


def epe(flow: np.ndarray, d: tuple[int, int]) -> float:
    return float(np.hypot(flow[..., 0] - d[0], flow[..., 1] - d[1])[16:-16, 16:-16].mean())


def run(model, frames, coarse: bool) -> list[np.ndarray]:
    stream = FlowStream(model, StreamOptions(iters=8, coarse=coarse))
    return [f for f in (stream.push(im) for im in frames) if f is not None]


def test_gate_starts_from_the_coarse_flow_only_for_large_motion():
    geometry = Geometry((H, W), (H, W), InputPadder(H, W))
    slow = np.zeros((H, W, 2), np.float32)
    slow[..., 0] = GATE_PX - 1
    assert CoarseGuide.start_flow(slow, geometry) is None
    assert CoarseGuide.start_flow(None, geometry) is None
    fast = slow.copy()
    fast[: H // 2, :, 0] = GATE_PX + 1   # half the pixels fast: the 90th percentile is fast
    start = CoarseGuide.start_flow(fast, geometry)
    assert start is not None and start.shape == (1, 2, H // 8, W // 8)
    torch.testing.assert_close(start, flow_to_low(fast, (H, W), geometry.padder))


def test_large_motion_is_found_with_the_coarse_start_and_small_motion_is_unchanged(shipped):
    far = (120, 40)  # beyond the 64 px the shipped model trained on (measured: 136 px EPE -> 9.9)
    plain, c2f = (epe(run(shipped.model, translating(far), c)[-1], far) for c in (False, True))
    assert plain > 40 and c2f < 0.25 * plain, (plain, c2f)
    near = (4, 2)  # below the gate: the same computation as without the option
    a, b = (run(shipped.model, translating(near), c)[-1] for c in (False, True))
    np.testing.assert_array_equal(a, b)


def test_small_frames_get_no_coarse_pass(shipped):
    small = [im[:200, :300] for im in translating((30, 10))]  # half of 200 is below MIN_COARSE_SIDE
    stream = FlowStream(shipped.model, StreamOptions(iters=2, coarse=True))
    for im in small:
        stream.push(im)
    assert stream.guide.too_small and stream.guide.stream is None and stream.state().keys() == {
        "pairs_done", "keys", "values", "frame_tokens", "prev_flow_low"}
    stream.reset()  # another sequence may be larger
    for im in translating((30, 10)):
        stream.push(im)
    assert not stream.guide.too_small and "coarse.keys" in stream.state()


def test_resume_state_carries_the_coarse_stream(shipped):
    d = (40, 16)
    frames = translating(d, n=5, seed=1)
    whole = run(shipped.model, frames, True)
    first = FlowStream(shipped.model, StreamOptions(iters=8, coarse=True))
    for im in frames[:3]:
        first.push(im)
    state = first.state()
    assert any(k.startswith("coarse.") for k in state) and "coarse.keys" in state
    resumed = FlowStream(shipped.model, StreamOptions(iters=8, coarse=True))
    resumed.load_state(state)
    resumed.prime(frames[2])
    rest = [resumed.push(im) for im in frames[3:]]
    for got, want in zip(rest, whole[2:]):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_cli_default_follows_the_weights_and_flags_override(tmp_path, shipped):
    assert shipped.coarse  # the shipped estimator records it as its default
    folder = tmp_path / "in"
    folder.mkdir()
    import cv2
    for i, im in enumerate(translating((3, 1), n=2)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), im[..., ::-1])
    for flag, expected in (([], True), (["--no-coarse-to-fine"], False)):
        out = tmp_path / f"out{expected}"
        res = CliRunner().invoke(cli, ["estimate", str(folder), "-o", str(out), "--json", "--quiet", *flag])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["coarse_to_fine"] is expected
    res = CliRunner().invoke(cli, ["predict-next", str(folder), "-o", str(tmp_path / "p"), "--prior-flows",
                                    str(tmp_path), "--coarse-to-fine"])
    assert res.exit_code == 2 and "--coarse-to-fine" in res.output
