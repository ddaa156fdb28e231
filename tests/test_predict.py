"""MemFlow-P streaming prediction: conformance (stream and CLI), estimator mode, resume, frames, errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.engine import FlowStream, StreamOptions
from flowcli.flowio import read_flow, write_flow
from flowcli.model import InputPadder
from flowcli.predict import PredictStream, flow_to_low, mirror, read_prior_flow, warp_forward
from flowcli.sources import open_source
from flowcli.weights import load_weights

LOW_TOL = 2e-4
UP_TOL = 1e-3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pred_vectors(conformance_dir):
    return dict(np.load(conformance_dir / "pred_vectors_seed0.npz"))


@pytest.fixture(scope="module")
def est_vectors(conformance_dir):
    return dict(np.load(conformance_dir / "est_vectors_seed0.npz"))


@pytest.fixture(scope="module")
def p_model(conformance_dir):
    return load_weights(str(conformance_dir / "memflow_pred_seed0.pth"), preset="sintel", kind="predict").model


@pytest.fixture(scope="module")
def est_model(conformance_dir):
    return load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel").model


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory, pred_vectors):
    """The official run's "ground-truth" flows as .flo files named like estimate's output."""
    d = tmp_path_factory.mktemp("prior")
    for i, f in enumerate(pred_vectors["gt_flows"]):
        write_flow(d / f"{i:06d}.flo", f.transpose(1, 2, 0))
    return d


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _p_args(conformance_dir, out, *extra):
    return ["predict-next", str(conformance_dir), "--weights", str(conformance_dir / "memflow_pred_seed0.pth"),
            "--preset", "sintel", "--format", "flo", "-o", str(out), "--quiet", *extra]


def _est_args(conformance_dir):
    return ["--estimate-weights", str(conformance_dir / "memflow_est_seed0.pth"), "--estimate-preset", "sintel",
            "--iters", "4"]


def _read(out: Path, i: int) -> np.ndarray:
    return read_flow(out / f"{i:06d}.flo").transpose(2, 0, 1)


# -- conformance -----------------------------------------------------------------------------------------

def test_stream_with_prior_flow_files_matches_official(conformance_dir, pred_vectors, p_model, prior_dir):
    stream = PredictStream(p_model)
    steps = []
    with open_source(str(conformance_dir)) as src:
        prev = None
        for frame in src:
            past = read_prior_flow(prior_dir, prev.index, frame.index, frame.image.shape[:2]) if prev else None
            steps.append(stream.push(frame.image, past_flow=past))
            prev = frame
    assert len(steps) == 5 and steps[0].first and not any(s.first for s in steps[1:])
    for t in range(4):  # the official loop predicts from frames 0..3
        assert np.abs(steps[t].flow_low[0].numpy() - pred_vectors["pred_flow_low"][t]).max() <= LOW_TOL
        assert np.abs(steps[t].flow.transpose(2, 0, 1) - pred_vectors["pred_flow_up"][t]).max() <= UP_TOL
    # the memory holds exactly the last pair, keyed by the pair's first frame
    assert stream.memory.num_frames == 1
    # the last frame is predicted too (into the unknown), from the stored pair 3 -> 4
    assert steps[4].flow.shape == (128, 160, 2) and np.isfinite(steps[4].flow).all()
    assert not np.allclose(steps[4].flow, steps[3].flow)


@pytest.mark.parametrize("with_estimator", [False, True])
def test_bf16_prediction_stays_close_to_fp32(conformance_dir, p_model, est_model, prior_dir, with_estimator):
    """--precision bf16 runs MemFlow-P (and its estimator) in bfloat16: same predictions within
    0.05 px mean end-point difference on the conformance clip; the fp32 stream is the conformant one."""
    def run(precision):
        opts = StreamOptions(iters=4, precision=precision)
        stream = PredictStream(p_model, opts, estimator=est_model if with_estimator else None)
        out = []
        with open_source(str(conformance_dir)) as src:
            prev = None
            for frame in src:
                past = None
                if prev is not None and not with_estimator:
                    past = read_prior_flow(prior_dir, prev.index, frame.index, frame.image.shape[:2])
                step = stream.push(frame.image, past_flow=past)
                assert step.flow.dtype == np.float32 and step.flow_low.dtype == torch.float32
                out.append(step.flow)
                prev = frame
        return stream, np.stack(out)
    s32, fp32 = run("fp32")
    s16, bf16 = run("bf16")
    assert s16.model.motion_prompt.dtype == torch.bfloat16 and s32.model.motion_prompt.dtype == torch.float32
    diff = np.linalg.norm(fp32 - bf16, axis=-1)
    assert np.isfinite(bf16).all() and 0 < diff.mean() <= 0.05, diff.mean()


def _mirror_flow(flow: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(flow[:, ::-1])
    out[..., 0] *= -1
    return out


def test_mirror_flips_width_and_negates_horizontal_flow():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4).contiguous(memory_format=torch.channels_last)
    m = mirror(x, flow=True)
    assert torch.equal(m[0, 0], -x[0, 0].flip(-1)) and torch.equal(m[0, 1], x[0, 1].flip(-1))
    assert m.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(mirror(m, flow=True), x) and torch.equal(mirror(x)[0, 0], x[0, 0].flip(-1))


def test_tta_is_the_mean_of_the_plain_and_the_mirrored_videos_predictions(conformance_dir, p_model, prior_dir):
    """--tta: the prediction for the video and the mirror image of the prediction for its mirrored video
    (mirrored frames and past flows), averaged; each frame's, over a whole stream with memory. (128x160
    needs no padding; with uneven padding the mirrored view is of the padded frames, see PredictorView.)"""
    frames, pasts = [], [None]
    with open_source(str(conformance_dir)) as src:
        for frame in src:
            frames.append(frame.image)
    for t in range(1, len(frames)):
        pasts.append(read_prior_flow(prior_dir, t - 1, t, frames[0].shape[:2]))

    def run(tta: bool, mirrored: bool) -> list[np.ndarray]:
        stream = PredictStream(p_model, StreamOptions(tta=tta))
        out = []
        for image, past in zip(frames, pasts):
            if mirrored:
                image, past = np.ascontiguousarray(image[:, ::-1]), None if past is None else _mirror_flow(past)
            flow = stream.push(image, past_flow=past).flow
            out.append(_mirror_flow(flow) if mirrored else flow)
        return out

    plain, mirrored, tta = run(False, False), run(False, True), run(True, False)
    for t in range(len(frames)):
        assert np.abs(tta[t] - 0.5 * (plain[t] + mirrored[t])).max() <= 1e-4
    gap = np.mean([np.linalg.norm(plain[t] - mirrored[t], axis=-1).mean() for t in range(len(frames))])
    assert gap > 1e-2  # the mirrored view is a different prediction (else the test shows nothing)


def test_prior_flow_to_low_res_is_official_resize():
    flow = np.zeros((100, 124, 2), np.float32)
    flow[..., 0], flow[..., 1] = 4.0, -2.0
    padder = InputPadder(100, 124)
    low = flow_to_low(flow, (100, 124), padder)
    assert low.shape == (1, 2, 13, 16)
    assert torch.allclose(low[0, 0], torch.tensor(0.5)) and torch.allclose(low[0, 1], torch.tensor(-0.25))
    half = flow_to_low(flow, (50, 62), InputPadder(50, 62))  # --max-side: vectors scale with the run size
    assert half.shape == (1, 2, 7, 8) and torch.allclose(half[0, 0], torch.tensor(0.25))
    ramp = np.zeros((128, 160, 2), np.float32)
    ramp[..., 0] = np.arange(160, dtype=np.float32)[None]
    low = flow_to_low(ramp, (128, 160), InputPadder(128, 160))[0, 0]
    assert abs(float(low[0, 0])) < 1e-6 and abs(float(low[0, -1]) - 159 / 8) < 1e-5  # align_corners=True


def test_cli_prior_flows_matches_official_and_resumes(tmp_path, conformance_dir, pred_vectors, prior_dir):
    out = tmp_path / "o"
    res = _run(_p_args(conformance_dir, out, "--prior-flows", str(prior_dir)))
    assert res.exit_code == 0, res.output
    # t = 0 is not written by default; t = 1..4, 000004 being the flow to a frame that does not exist
    assert sorted(p.name for p in out.glob("*.flo")) == [f"{i:06d}.flo" for i in range(1, 5)]
    for t in range(1, 4):
        assert np.abs(_read(out, t) - pred_vectors["pred_flow_up"][t]).max() <= UP_TOL
    assert np.isfinite(_read(out, 4)).all()
    record = json.loads((out / "flowcli.json").read_text())
    assert record["command"] == "predict-next" and record["past_flows"] == "prior-flows"
    assert record["weights"]["preset"] == "sintel" and record["predictions"] == 4

    # rerun with --include-first: only 000000 is new; nothing existing is rewritten
    before = {t: (out / f"{t:06d}.flo").stat().st_mtime_ns for t in range(1, 5)}
    res = _run(_p_args(conformance_dir, out, "--prior-flows", str(prior_dir), "--include-first", "--json"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["written"] == 1 and summary["skipped"] == 4
    assert np.abs(_read(out, 0) - pred_vectors["pred_flow_up"][0]).max() <= UP_TOL
    assert {t: (out / f"{t:06d}.flo").stat().st_mtime_ns for t in range(1, 5)} == before

    # a lost file in the middle is recomputed exactly from frame t-1 and its prior flow
    (out / "000002.flo").unlink()
    assert _run(_p_args(conformance_dir, out, "--prior-flows", str(prior_dir))).exit_code == 0
    assert np.abs(_read(out, 2) - pred_vectors["pred_flow_up"][2]).max() <= UP_TOL


# -- estimator mode (official use_gt=False) --------------------------------------------------------------

def _collect(stream, frames, past_lows=None):
    out = []
    for t, img in enumerate(frames):
        kw = {} if past_lows is None or t == 0 else {"past_flow_low": past_lows[t - 1]}
        out.append(stream.push(img, **kw))
    return out


def test_estimator_mode_is_the_estimators_flow_low_in_memory(pred_vectors, p_model, est_model):
    frames = list(pred_vectors["frames_uint8"])
    opts = StreamOptions(iters=4)
    est = FlowStream(est_model, opts)
    lows = []
    for img in frames:
        if est.push(img) is not None:
            lows.append(est.prev_flow_low.clone())
    reference = _collect(PredictStream(p_model, opts), frames, lows)

    joint = PredictStream(p_model, opts, estimator=est_model)
    assert joint.shared_fnet  # the conformance checkpoints were built from the same seed
    steps = _collect(joint, frames)
    separate = PredictStream(p_model, opts, estimator=est_model)
    separate.shared_fnet = False  # the P model runs its own fnet: same numbers
    steps_sep = _collect(separate, frames)
    for a, b, c in zip(reference, steps, steps_sep):
        assert np.abs(a.flow - b.flow).max() <= 1e-5 and np.abs(a.flow - c.flow).max() <= 1e-5
    assert steps[0].past_flow is None and all(s.past_flow is not None for s in steps[1:])


def test_cli_estimator_mode_with_estimate_and_frames(tmp_path, conformance_dir, est_vectors):
    out = tmp_path / "o"
    res = _run(_p_args(conformance_dir, out, *_est_args(conformance_dir), "--with-estimate", "--frames",
                       "--json"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["past_flows"] == "estimator" and summary["iters"] == 4 and summary["shared_features"]
    assert summary["estimate_weights"]["sha256"].startswith("1ccc4bb00347")
    assert sorted(p.name for p in out.glob("*.flo")) == [f"{i:06d}.flo" for i in range(1, 5)]
    for t in range(1, 5):
        flow = read_flow(out / f"{t:06d}.flo")
        assert flow.shape == (128, 160, 2) and np.isfinite(flow).all()
    # the estimated flows of the same pass are the official estimation outputs (no warm start)
    assert sorted(p.name for p in (out / "estimate").glob("*.flo")) == [f"{i:06d}.flo" for i in range(4)]
    est = np.stack([_read(out / "estimate", i) for i in range(4)])
    assert np.abs(est - est_vectors["ws0_flow_up"]).max() <= UP_TOL
    import imageio.v3 as iio
    pngs = sorted(p.name for p in (out / "frames").glob("*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(1, 5)]
    assert iio.imread(out / "frames" / "000001.png").shape == (128, 160, 3)


def test_cli_estimator_mode_resume_equals_full_run(tmp_path, conformance_dir):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run(_p_args(conformance_dir, full, *_est_args(conformance_dir), "--warm-start")).exit_code == 0
    assert _run(_p_args(conformance_dir, part, *_est_args(conformance_dir), "--warm-start", "--end", "3")
                ).exit_code == 0
    assert sorted(p.name for p in part.glob("*.flo")) == ["000001.flo", "000002.flo"]
    res = _run(_p_args(conformance_dir, part, *_est_args(conformance_dir), "--warm-start", "--json"))
    summary = json.loads(res.output)
    assert summary["resumed_from_state"] and summary["written"] == 2 and summary["recomputed"] == 0
    for t in range(1, 5):
        assert np.abs(_read(part, t) - _read(full, t)).max() <= 1e-5
    # other settings in the same folder are refused
    args = _p_args(conformance_dir, part, *_est_args(conformance_dir))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "other settings" in res.output


def test_cli_overwrite_with_a_shorter_run_removes_the_replaced_runs_other_outputs(tmp_path, conformance_dir):
    out = tmp_path / "o"
    est = _est_args(conformance_dir)
    assert _run(_p_args(conformance_dir, out, *est, "--with-estimate", "--frames")).exit_code == 0
    assert sorted(p.name for p in out.glob("*.flo")) == [f"{i:06d}.flo" for i in range(1, 5)]
    assert len(list((out / "estimate").glob("*.flo"))) == 4 and len(list((out / "frames").glob("*.png"))) == 4
    res = _run(_p_args(conformance_dir, out, *est, "--end", "3", "--overwrite", "--json"))
    summary = json.loads(res.output)
    assert sorted(p.name for p in out.glob("*.flo")) == ["000001.flo", "000002.flo"]
    assert not list((out / "estimate").glob("*.flo")) and not list((out / "frames").glob("*.png"))
    assert summary["removed"] == 2 + 4 + 4


def test_resumed_overwrite_rewrites_the_replaced_runs_files(tmp_path, conformance_dir, p_model, prior_dir):
    """Prior-flows mode skips any frame whose outputs exist; not while an --overwrite is unfinished:
    a file the replaced run left is rewritten by the resumed run, and the rest is removed at the end."""
    from flowcli.predict import PredictJob, run_predict
    halved = tmp_path / "halved"
    halved.mkdir()
    for f in sorted(prior_dir.glob("*.flo")):
        write_flow(halved / f.name, 0.5 * read_flow(f))
    out = tmp_path / "o"
    assert _run(_p_args(conformance_dir, out, "--prior-flows", str(prior_dir))).exit_code == 0
    old = {t: (out / f"{t:06d}.flo").read_bytes() for t in range(1, 5)}
    info = {"sha256": "p"}

    def stop(i):
        if i == 1:
            raise KeyboardInterrupt

    job = PredictJob(out_dir=out, prior_flows=halved, overwrite=True)
    with pytest.raises(KeyboardInterrupt), open_source(str(conformance_dir), end=4) as src:
        run_predict(p_model, job, src, weights_info=info, on_frame=stop)
    assert (out / "000004.flo").read_bytes() == old[4]  # interrupted: nothing lost
    job = PredictJob(out_dir=out, prior_flows=halved)     # resumed without --overwrite
    with open_source(str(conformance_dir), end=4) as src:
        report = run_predict(p_model, job, src, weights_info=info)
    assert report.removed == 1 and not (out / "000004.flo").exists()
    fresh = tmp_path / "fresh"
    with open_source(str(conformance_dir), end=4) as src:
        run_predict(p_model, PredictJob(out_dir=fresh, prior_flows=halved), src, weights_info=info)
    for t in (2, 3):
        assert (out / f"{t:06d}.flo").read_bytes() != old[t]
        assert np.array_equal(read_flow(out / f"{t:06d}.flo"), read_flow(fresh / f"{t:06d}.flo"))


# -- predicted frames -------------------------------------------------------------------------------------

def test_warp_forward_moves_a_square_over_a_static_background():
    rng = np.random.RandomState(0)
    bg = rng.randint(0, 255, (64, 96, 3), dtype=np.uint8)
    square = rng.randint(0, 255, (16, 16, 3), dtype=np.uint8)
    f0, f1 = bg.copy(), bg.copy()
    f0[20:36, 30:46] = square
    f1[20:36, 36:52] = square
    flow = np.zeros((64, 96, 2), np.float32)
    flow[20:36, 30:46, 0] = 6
    pred = warp_forward(f0, flow)
    assert pred.shape == f0.shape and pred.dtype == np.uint8
    assert np.array_equal(pred[20:36, 36:52], square)  # the moving square is in front where it lands
    assert np.array_equal(pred[:, 60:], bg[:, 60:])
    assert np.abs(pred.astype(int) - f1).mean() < 0.3 * np.abs(f0.astype(int) - f1).mean()


def test_warp_forward_one_pixel_moving_far_unlike_the_rest_leaves_the_frame_alone():
    """The softmax weights were shifted by the frame's largest deviation: one pixel moving 380 px unlike
    the rest made every other weight exp(-760) = 0, and the whole predicted frame came out black."""
    rng = np.random.RandomState(1)
    image = rng.randint(0, 255, (64, 96, 3), dtype=np.uint8)
    for far in (380.0, 1e6):
        flow = np.zeros((64, 96, 2), np.float32)
        flow[0, 0, 0] = far
        pred = warp_forward(image, flow)
        assert np.array_equal(pred[4:, 4:], image[4:, 4:]), far  # away from the inpainted hole at (0, 0)
    # a far pixel landing inside the frame wins where it lands and nowhere else
    flow = np.zeros((64, 96, 2), np.float32)
    flow[30, 2, 0] = 90.0                                   # (2, 30) -> (92, 30), over a still pixel
    pred = warp_forward(image, flow)
    assert np.array_equal(pred[30, 92], image[30, 2])
    keep = np.ones((64, 96), bool)
    keep[26:35, 0:7] = False                                # the hole it leaves (inpainted)
    keep[30, 92] = False
    assert np.array_equal(pred[keep], image[keep])


# -- errors -----------------------------------------------------------------------------------------------

def test_missing_prior_flow_is_a_one_line_error(tmp_path, conformance_dir, prior_dir):
    partial = tmp_path / "prior"
    partial.mkdir()
    for i in (0, 1, 3):
        (partial / f"{i:06d}.flo").write_bytes((prior_dir / f"{i:06d}.flo").read_bytes())
    res = CliRunner().invoke(cli, _p_args(conformance_dir, tmp_path / "o", "--prior-flows", str(partial)))
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowcli: error:") and "000002.flo" in lines[0]
    assert "Traceback" not in res.output


def test_cli_tta_is_recorded_and_a_run_without_it_is_other_settings(tmp_path, conformance_dir, prior_dir):
    out = tmp_path / "tta"
    res = _run(_p_args(conformance_dir, out, "--prior-flows", str(prior_dir), "--tta", "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tta"] is True and json.loads((out / "flowcli.json").read_text())["tta"] is True
    res = CliRunner().invoke(cli, _p_args(conformance_dir, out, "--prior-flows", str(prior_dir)))
    assert res.exit_code == 1 and "other settings" in res.output  # not resumed as if it were the same run
    res = CliRunner().invoke(cli, ["batch", str(conformance_dir), "-o", str(tmp_path / "b"), "--tta"])
    assert res.exit_code == 2 and "--tta/--no-tta is for --mode predict-next" in res.output


def test_wrong_model_kind_and_usage_errors(tmp_path, conformance_dir, prior_dir, monkeypatch):
    est_as_p = ["predict-next", str(conformance_dir), "-o", str(tmp_path / "a"), "--prior-flows", str(prior_dir),
                "--weights", str(conformance_dir / "memflow_est_seed0.pth"), "--preset", "sintel"]
    res = CliRunner().invoke(cli, est_as_p)
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, _p_args(conformance_dir, tmp_path / "b", "--prior-flows", str(prior_dir),
                                          "--with-estimate"))
    assert res.exit_code == 2 and "--with-estimate" in res.output
    monkeypatch.setenv("FLOWCLI_WEIGHTS_DIR", str(tmp_path / "empty"))
    res = CliRunner().invoke(cli, ["predict-next", str(conformance_dir), "-o", str(tmp_path / "c")])
    assert res.exit_code == 1 and "--weights" in res.output and "MemFlow-P" in res.output


def test_shipped_prediction_weights_are_the_default(tmp_path, shared_data):
    """predict-next without --weights uses the shipped MemFlow-P and the shipped estimator (real clip)."""
    from flowcli.weights import default_name
    assert default_name("predict") == "flowcli-small-p"
    p = load_weights(None, kind="predict")
    assert p.model.cfg.predict and p.iters == 1
    out = tmp_path / "pred"
    r = _run(["predict-next", str(shared_data / "videos" / "cat.mp4"), "-o", str(out), "--end", "3",
              "--max-side", "128", "--iters", "2", "--json", "--quiet"])
    rec = json.loads(r.output)
    assert rec["weights"]["name"] == "flowcli-small-p" and rec["estimate_weights"]["name"] == "flowcli-small"
    flows = sorted(out.glob("*.flo"))
    assert [f.name for f in flows] == ["000001.flo", "000002.flo"]
    assert np.isfinite(read_flow(flows[0])).all()


def test_api_misuse_gets_clear_errors():
    """A MemFlow-P model in FlowStream / estimate_flows failed inside the model ('UpdateBlock' object has
    no attribute 'gru'); a 2-D or list past flow, or a past_flow_low of the wrong grid, gave misleading
    messages or raw RuntimeError/AttributeError; load_model could not load prediction weights."""
    import flowcli
    p_model = flowcli.load_model(kind="predict")
    assert p_model.cfg.predict
    frames = [np.zeros((64, 80, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="needs an estimation model"):
        list(flowcli.estimate_flows(frames, p_model))
    with pytest.raises(ValueError, match="needs an estimation model"):
        FlowStream(p_model)
    stream = PredictStream(p_model)
    stream.push(frames[0])
    for kwargs, needle in (({"past_flow": np.zeros((64, 80))}, r"\(64, 80, 2\) array .* shape \(64, 80\)"),
                           ({"past_flow": [[0.0]]}, r"\(64, 80, 2\) array .* got list"),
                           ({"past_flow_low": torch.zeros(1, 2, 3, 3)}, r"shape \(1, 2, 8, 10\)")):
        with pytest.raises(ValueError, match=needle):
            stream.push(frames[1], **kwargs)
    with pytest.raises(ValueError, match="uint8 RGB numpy arrays, got list"):
        stream.push([[0]])
    assert stream.push(frames[1], past_flow=np.zeros((64, 80, 2), np.float32)).flow.shape == (64, 80, 2)


def test_weights_of_the_other_kind_by_name_say_so():
    from flowcli.errors import CheckpointError
    from flowcli.weights import default_name, load_weights
    with pytest.raises(CheckpointError, match="is a MemFlow-P prediction model.*needs an estimation model"):
        load_weights(default_name("predict"))
    with pytest.raises(CheckpointError, match="is an estimation model.*needs a MemFlow-P"):
        load_weights(default_name("estimate"), kind="predict")
    with pytest.raises(CheckpointError, match="is an estimation model.*needs a MemFlow-P"):
        load_weights("MemFlowNet_things", kind="predict")
    with pytest.raises(CheckpointError, match=r"known names: [^,]*$"):  # only the P names, not the estimators'
        load_weights("nope", kind="predict")
