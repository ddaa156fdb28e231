"""The variational refinement (flowcli.refine): precision gain, wiring into the engine, resume, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.datasets import find_sequences
from flowcli.engine import FlowStream, StreamOptions
from flowcli.evaluate import evaluate
from flowcli.refine import FlowRefiner
from flowcli.synth.textures import random_texture
from flowcli.weights import load_weights

H, W = 160, 224


@pytest.fixture(scope="module")
def shipped():
    return load_weights(None)


def shifted_pair(d: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame and the same frame moved by the sub-pixel ``d`` = (dx, dy): the flow is ``d``."""
    tex = random_texture(np.random.default_rng(seed), H, W, kinds=("noise",)).astype(np.uint8)
    moved = cv2.warpAffine(tex, np.float32([[1, 0, d[0]], [0, 1, d[1]]]), (W, H), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)  # moved(x) = tex(x - d)
    return tex, moved


def epe(flow: np.ndarray, d: tuple[float, float]) -> float:
    return float(np.hypot(flow[..., 0] - d[0], flow[..., 1] - d[1])[12:-12, 12:-12].mean())


def test_refinement_recovers_a_subpixel_motion_from_an_imprecise_start():
    d = (1.4, -0.6)
    a, b = shifted_pair(d)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    start = np.empty((H, W, 2), np.float32)  # 0.5-0.9 px off, smoothly varying (as the network's errors are)
    start[..., 0] = d[0] + 0.6 * np.cos(xx / 40)
    start[..., 1] = d[1] - 0.5 + 0.2 * np.sin(yy / 30)
    refiner = FlowRefiner()
    refiner.prime(a)
    refined = refiner.refine(b, start)
    assert epe(start, d) > 0.5
    assert epe(refined, d) < 0.2 * epe(start, d), (epe(start, d), epe(refined, d))
    assert refined.dtype == np.float32 and refined.shape == start.shape


def test_refinement_needs_the_previous_frame_and_matching_sizes():
    a, b = shifted_pair((1, 0))
    refiner = FlowRefiner()
    with pytest.raises(RuntimeError, match="before prime"):
        refiner.refine(b, np.zeros((H, W, 2), np.float32))
    refiner.prime(a)
    with pytest.raises(ValueError, match="differ in size"):
        refiner.refine(b, np.zeros((H // 2, W // 2, 2), np.float32))
    with pytest.raises(ValueError):
        FlowRefiner(levels=0)


def test_engine_refines_each_output_and_a_resumed_stream_matches(shipped):
    frames = [shifted_pair((1.5 * t, 0.5 * t), seed=3)[1] for t in range(4)]
    plain = FlowStream(shipped.model, StreamOptions(iters=2))
    refined = FlowStream(shipped.model, StreamOptions(iters=2, refine=True))
    by_hand = FlowRefiner()
    by_hand.prime(frames[0])
    plain.push(frames[0])
    refined.push(frames[0])
    whole = []
    for im in frames[1:]:
        want = by_hand.refine(im, plain.push(im))
        got = refined.push(im)
        np.testing.assert_array_equal(got, want)
        whole.append(got)
    resumed = FlowStream(shipped.model, StreamOptions(iters=2, refine=True))
    first = FlowStream(shipped.model, StreamOptions(iters=2, refine=True))
    for im in frames[:2]:
        first.push(im)
    resumed.load_state(first.state())
    resumed.prime(frames[1])  # a resumed run primes with the last frame it had: the refiner needs it too
    for im, want in zip(frames[2:], whole[1:]):
        np.testing.assert_allclose(resumed.push(im), want, atol=1e-4)


def test_refinement_makes_real_small_motion_several_times_more_precise(shared_data, shipped):
    """Middlebury (real frames, motions of a few px): measured 0.70 -> 0.23 px over the 4 pairs."""
    root = shared_data / "middlebury"
    seqs = find_sequences(root, "middlebury")[:2]
    plain, refined = (evaluate(shipped, root, "middlebury", sequences=seqs, refine=r).summary()["all"]["epe"]
                      for r in (False, True))
    assert refined < 0.6 * plain, (plain, refined)


def test_cli_default_follows_the_weights_and_misuse_is_refused(tmp_path, shipped):
    assert shipped.refine  # the shipped estimator records it as its default
    folder = tmp_path / "in"
    folder.mkdir()
    for i, t in enumerate((0, 1)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), shifted_pair((2.0 * t, 1.0 * t))[1][..., ::-1])
    for flag, expected in (([], True), (["--no-refine"], False)):
        out = tmp_path / f"out{expected}"
        res = CliRunner().invoke(cli, ["estimate", str(folder), "-o", str(out), "--json", "--quiet", *flag])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["refine"] is expected
    # a finished run with other settings is not resumed silently: the fingerprint holds --refine
    res = CliRunner().invoke(cli, ["estimate", str(folder), "-o", str(tmp_path / "outTrue"), "--no-refine"])
    assert res.exit_code == 1 and "other settings" in res.output, res.output
    for args in (["predict-next", str(folder), "-o", str(tmp_path / "p"), "--refine"],
                 ["predict-next", str(folder), "-o", str(tmp_path / "p"), "--prior-flows", str(tmp_path),
                  "--no-refine"],
                 ["batch", str(folder), "-o", str(tmp_path / "b"), "--mode", "predict-next", "--refine"],
                 ["batch", str(folder), "-o", str(tmp_path / "b"), "--mode", "predict-next", "--prior-flows",
                  str(tmp_path), "--no-refine"],
                 ["eval", str(folder), "--layout", "middlebury", "--method", "dis", "--refine"]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2 and "--refine" in res.output, (args, res.output)


def test_refiner_leaves_frames_smaller_than_its_scales_alone():
    """No pass below MIN_SIDE px: a 3x3 frame's flow comes back as it went in (no cv2.resize to 0 px)."""
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (3, 3, 3), dtype=np.uint8) for _ in range(2))
    flow = rng.normal(size=(3, 3, 2)).astype(np.float32)
    refiner = FlowRefiner()
    refiner.prime(a)
    np.testing.assert_array_equal(refiner.refine(b, flow), flow)


@pytest.mark.parametrize("width, height", [(3, 3), (2, 40), (7, 5)])
def test_cli_estimate_of_frames_a_few_px_wide(tmp_path, width, height):
    """Frames with a side below 4 px crashed in the refinement's pyramid with an OpenCV error."""
    from flowcli.flowio import read_flow

    rng = np.random.default_rng(width * height)
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["estimate", str(folder), "-o", str(out), "--json", "--quiet", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["refine"] is True  # the shipped weights' default: the path that crashed
    for i in range(2):
        flow = read_flow(out / f"{i:06d}.flo")
        assert flow.shape == (height, width, 2) and np.isfinite(flow).all()


def test_cli_estimate_of_tiny_raw_stdin_frames(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (3, 3, 3, 3), dtype=np.uint8)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["estimate", "-", "--size", "3x3", "-o", str(out), "--quiet", "--threads", "1"],
                             input=frames.tobytes())
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.flo")) == ["000000.flo", "000001.flo"]


def test_interrupted_refined_run_resumes_exactly(tmp_path, shipped):
    """The pipeline's resume path (state + prime with the last frame) gives the refiner its previous frame."""
    from flowcli.pipeline import EstimateJob, run_estimate
    from flowcli.sources import open_source

    folder = tmp_path / "in"
    folder.mkdir()
    for t in range(4):
        cv2.imwrite(str(folder / f"{t:03d}.png"), shifted_pair((1.5 * t, 0.5 * t), seed=5)[1][..., ::-1])
    info = {"sha256": shipped.sha256}
    outputs = {}
    for name, interrupt in (("whole", False), ("resumed", True)):
        job = EstimateJob(out_dir=tmp_path / name, formats=("npy",), options=StreamOptions(iters=2, refine=True))

        def stop_after_one(i):
            if interrupt and i == 0:
                raise KeyboardInterrupt

        if interrupt:
            with pytest.raises(KeyboardInterrupt), open_source(str(folder)) as src:
                run_estimate(shipped.model, job, src, weights_info=info, on_pair=stop_after_one)
        with open_source(str(folder)) as src:
            report = run_estimate(shipped.model, job, src, weights_info=info)
        assert report.resumed_from_state == interrupt
        outputs[name] = [np.load(tmp_path / name / f"{i:06d}.npy") for i in range(3)]
    for a, b in zip(outputs["whole"], outputs["resumed"]):
        np.testing.assert_allclose(a, b, atol=1e-4)
