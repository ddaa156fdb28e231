"""flowcli eval --predict: the constant-velocity baseline, scoring only pairs with a GT predecessor,
synthetic clips exported as a Sintel-layout dataset, and the CLI on the real Sintel frames."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.datasets import find_sequences
from flowcli.evaluate_predict import constant_velocity, evaluate_predict, scored_pairs
from flowcli.model import CPU_SMALL, MemFlowNet
from flowcli.synth import ClipParams
from flowcli.synth.export import export_clips
from flowcli.weights import save_safetensors


@pytest.fixture(scope="module")
def p_weights(tmp_path_factory):
    """A random-init small MemFlow-P saved the way shipped weights are (safetensors + config)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "p.safetensors"
    save_safetensors(path, MemFlowNet(CPU_SMALL.replace(predict=True, train_avg_length=384.0)).eval(), iters=1)
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    export_clips(root, 2, ClipParams(height=64, width=96, num_frames=4))
    return root


def test_constant_velocity_moves_a_square_with_its_own_motion():
    flow = np.zeros((40, 50, 2), np.float32)
    flow[10:20, 10:20] = (5.0, 2.0)  # a square moving right/down over a static background
    pred = constant_velocity(flow)
    # where the square lands on its own old place, only its own moved vectors arrive
    assert np.allclose(pred[12:20, 15:20], (5.0, 2.0))
    assert np.allclose(pred[30:, :], 0.0)
    assert pred.dtype == np.float32 and pred.shape == flow.shape
    # a global translation stays that translation everywhere (the entering border takes the nearest vector)
    assert np.allclose(constant_velocity(np.full((30, 40, 2), (3.0, -1.5), np.float32)), (3.0, -1.5))
    # unknown vectors are dropped; all unknown -> zero prediction
    flow[0, 0] = np.nan
    assert np.isfinite(constant_velocity(flow)).all()
    assert not constant_velocity(np.full((4, 4, 2), np.nan, np.float32)).any()


def test_export_is_a_sintel_dataset_with_exact_gt(synth_root):
    seqs = find_sequences(synth_root, "sintel")
    assert [s.name for s in seqs] == ["sintel/clean/clip_0000", "sintel/clean/clip_0001"]
    assert [len(s.frame_paths) for s in seqs] == [4, 4]
    assert all(s.pairs[0].occ_path is not None for s in seqs)
    assert scored_pairs(seqs[0]) == [1, 2]


def test_evaluate_predict_scores_pairs_with_a_gt_predecessor(synth_root, p_weights):
    from flowcli.weights import load_weights
    res = evaluate_predict(load_weights(str(p_weights), kind="predict"), synth_root, "sintel")
    assert len(res.predicted.rows) == len(res.baseline.rows) == 4
    assert [(r.sequence[-4:], r.index) for r in res.baseline.rows] == [("0000", 1), ("0000", 2),
                                                                       ("0001", 1), ("0001", 2)]
    b = res.baseline.summary()["all"]["epe"]
    p = res.predicted.summary()["all"]["epe"]
    assert np.isfinite(b) and np.isfinite(p)
    assert res.improvement("all") == pytest.approx(1 - p / b)


def test_cli_eval_predict_json_and_errors(synth_root, p_weights, tmp_path):
    r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--predict",
                                 "--weights", str(p_weights), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["baseline"]["method"] == "constant-velocity"
    assert out["predicted"]["summary"]["pairs"] == 4
    assert set(out["improvement"]) == {"all", "noc"}
    # an estimation model is refused, in one line
    est = tmp_path / "est.safetensors"
    save_safetensors(est, MemFlowNet(CPU_SMALL), iters=2)
    r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--predict", "--weights", str(est)])
    assert r.exit_code != 0 and "MemFlow-P" in r.output
    r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--predict", "--method", "dis"])
    assert r.exit_code == 2


def test_eval_predict_on_sintel_with_estimated_past_flows(shared_data, p_weights):
    """Shared Sintel has no two adjacent GT flows: --past-flow gt says so in one line; with the
    estimator's past flows every GT pair after a scene's first frame is scored (ambush_4 4->5, 6->7)."""
    sintel = str(shared_data / "sintel")
    r = CliRunner().invoke(cli, ["eval", sintel, "--layout", "sintel", "--predict", "--weights", str(p_weights)])
    assert r.exit_code == 1 and "--past-flow estimate" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["eval", sintel, "--layout", "sintel", "--predict", "--weights", str(p_weights),
                                 "--past-flow", "estimate", "--max-side", "256", "--iters", "2", "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows = {(p["sequence"], p["pair"]) for p in out["baseline"]["pairs"]}
    assert {("sintel/final/ambush_4", 1), ("sintel/final/ambush_4", 3)} <= rows
    assert out["past_flow"] == "estimate"
    assert all(p["all"]["epe"] is not None for p in out["predicted"]["pairs"])


def test_weights_metadata_turns_tta_on_by_default_and_the_flag_overrides_it(synth_root, tmp_path):
    """A prediction model saved with ``tta: true`` predicts with mirrored-view averaging unless told not
    to; eval --predict --no-tta equals the same weights saved without the flag; --tta needs --predict."""
    from flowcli.weights import load_weights
    torch.manual_seed(1)
    model = MemFlowNet(CPU_SMALL.replace(predict=True, train_avg_length=384.0)).eval()
    plain, with_tta = tmp_path / "plain.safetensors", tmp_path / "tta.safetensors"
    save_safetensors(plain, model, iters=1)
    save_safetensors(with_tta, model, iters=1, extra={"tta": "true"})
    assert load_weights(str(with_tta), kind="predict").tta and not load_weights(str(plain), kind="predict").tta

    def epe(weights, *flags):
        r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--predict", "--weights",
                                     str(weights), "--json", "--quiet", *flags])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["predicted"]["summary"]["all"]["epe"]

    assert epe(with_tta, "--no-tta") == epe(plain)
    assert epe(with_tta) == epe(plain, "--tta") != epe(plain)
    r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--tta"])
    assert r.exit_code == 2 and "--tta" in r.output


def test_cli_eval_predict_with_an_exact_baseline_prints_no_nan_percentage(tmp_path, p_weights):
    """No motion anywhere: the constant-velocity baseline is exact (EPE 0), so there is no percentage;
    the line used to say "nan% higher"."""
    from flowcli.flowio import write_flow
    base = export_clips(tmp_path / "static", 1, ClipParams(height=64, width=96, num_frames=3))
    for flo in (base / "flow").rglob("*.flo"):
        write_flow(flo, np.zeros((64, 96, 2), np.float32), overwrite=True)
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "static"), "--layout", "sintel", "--predict",
                                 "--weights", str(p_weights), "--quiet"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("all: "))
    assert "constant velocity 0.000" in line and "nan" not in line.lower()
    assert line.endswith("no percentage (the baseline is exact)") or line.endswith("the same (both exact)")
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "static"), "--layout", "sintel", "--predict",
                                 "--weights", str(p_weights), "--quiet", "--json"])
    assert json.loads(r.stdout)["improvement"]["all"] is None


def test_eval_predict_estimate_preset_and_the_estimators_settings_are_recorded(synth_root, p_weights,
                                                                                 conformance_dir, one_thread):
    """--past-flow estimate: an official estimation .pth runs with --estimate-preset (--preset is the P
    weights'); --json records the estimator and the iterations / coarse-to-fine it ran with, and --max-side."""
    from flowcli.weights import load_weights
    pth = str(conformance_dir / "memflow_est_seed0.pth")
    base = ["eval", str(synth_root), "--layout", "sintel", "--predict", "--weights", str(p_weights),
            "--past-flow", "estimate", "--max-side", "64", "-q"]
    r = CliRunner().invoke(cli, base + ["--estimate-weights", pth, "--estimate-preset", "sintel", "--iters", "1",
                                        "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["estimator"]["preset"] == "sintel" and out["estimator"]["path"] == pth
    assert out["estimator"]["iters"] == 1 and out["estimator"]["coarse_to_fine"] is False
    assert out["predicted"]["max_side"] == 64

    # the shipped estimator with its own defaults: recorded as run, not "iters": null, "coarse_to_fine": false
    shipped = load_weights(None, kind="estimate")
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == (f"past flows: {shipped.name} (iters {shipped.iters}"
                                        f"{', coarse-to-fine' if shipped.coarse else ''})"), r.stdout
    assert "max side 64" in r.stdout.splitlines()[2]

    for extra, message in ((["--estimate-preset", "sintel"], "--estimate-preset is for official .pth"),
                           (["--estimate-weights", pth, "--estimate-preset", "nope"], "unknown estimate preset")):
        r = CliRunner().invoke(cli, base + extra)
        assert r.exit_code == 2 and message in r.output, (extra, r.output)
    r = CliRunner().invoke(cli, base[:7] + ["--estimate-weights", pth, "--estimate-preset", "sintel"])
    assert r.exit_code == 2 and "apply to --past-flow estimate only" in r.output, r.output
    r = CliRunner().invoke(cli, ["eval", str(synth_root), "--layout", "sintel", "--estimate-preset", "sintel"])
    assert r.exit_code == 2 and "only apply with --predict" in r.output, r.output
