"""Training: loss, schedule, the from-scratch init, short real runs of both trainers and resume."""
from __future__ import annotations

import json

import pytest
import torch
import numpy as np
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.model import CPU_SMALL, MemFlowNet
from flowcli.train import TrainConfig, init_for_training, lr_at, sequence_loss, train
from flowcli.train_predict import CPU_SMALL_P, PredictTrainConfig, new_model, past_flow_low, train_predict
from flowcli.weights import model_from_safetensors


@pytest.fixture(autouse=True)
def two_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_sequence_loss_known_answer():
    gt = torch.zeros(1, 2, 2, 2)
    preds = [torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 2, 2), 1.0)]
    valid = torch.ones(1, 2, 2)
    valid[0, 0, 0] = 0  # ignored pixel
    loss, m = sequence_loss(preds, gt, valid, gamma=0.5)
    assert loss.item() == pytest.approx(0.5 * 4 + 1.0 * 2)  # L1 over u+v, weights 0.5, 1
    assert m["epe"] == pytest.approx(2 ** 0.5)


def test_one_cycle_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, total_steps=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) < lr_at(20, cfg)
    assert lr_at(110, cfg) == pytest.approx(2e-5)


def _update_sensitivity(model: MemFlowNet) -> tuple[float, float]:
    """(|delta|, change of delta when the correlation features change) through the update block."""
    torch.manual_seed(0)
    ub = model.update_block.eval()
    c = model.cfg
    h, w = 6, 8
    flow = torch.randn(1, 2, h, w)
    corr = torch.randn(1, c.corr_planes, h, w) * 2
    net, inp = torch.tanh(torch.randn(1, c.hidden_dim, h, w)), torch.relu(torch.randn(1, c.context_dim, h, w))
    with torch.no_grad():
        deltas = []
        for cr in (corr, corr * 1.2):
            motion, _ = ub.get_motion_and_value(flow, cr)
            deltas.append(ub(net, inp, motion, motion, need_mask=False)[2])
        # sensitivity of the features entering the flow head
        feats = []
        for cr in (corr, corr * 1.2):
            motion, _ = ub.get_motion_and_value(flow, cr)
            feats.append(ub.gru(torch.cat([net, inp, motion, motion], dim=1)))
    return float(deltas[0].abs().max()), float((feats[0] - feats[1]).abs().mean() / feats[0].abs().mean())


def test_init_for_training_starts_at_zero_flow_and_keeps_the_correlation_signal():
    torch.manual_seed(0)
    default = MemFlowNet(CPU_SMALL)
    _, sens_default = _update_sensitivity(default)
    model = init_for_training(MemFlowNet(CPU_SMALL))
    delta, sens = _update_sensitivity(model)
    assert delta == 0.0                 # the flow head's last layer starts at zero
    assert sens > 10 * sens_default     # a change in the correlation reaches the update's output
    assert sens > 0.02


def test_train_runs_resumes_and_saves_loadable_weights(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), total_steps=10, max_steps=2, batch_size=2, height=64, width=96,
                      iters=2, workers=0, save_every=1, eval_every=2, eval_clips=1, warmup_steps=2)
    path = train(cfg)
    model, meta = model_from_safetensors(path)
    assert int(meta["step"]) == 2 and model.cfg == CPU_SMALL
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and "eval_epe" in log[-1] and log[0]["motion_aux"] > 0
    path = train(cfg, resume=str(path))  # continues the schedule from the file alone
    assert int(model_from_safetensors(path)[1]["step"]) == 4


def test_train_predict_runs_and_resumes(tmp_path):
    cfg = PredictTrainConfig(out_dir=str(tmp_path / "p"), total_steps=10, max_steps=2, batch_size=2, height=64,
                             width=96, workers=0, save_every=1, eval_every=2, eval_clips=1, warmup_steps=2)
    path = train_predict(cfg)
    model, meta = model_from_safetensors(path)
    assert model.cfg == CPU_SMALL_P and model.cfg.predict and int(meta["step"]) == 2
    last = [json.loads(line) for line in (tmp_path / "p" / "log.jsonl").read_text().splitlines()][-1]
    assert last["eval_epe"] > 0 and last["eval_baseline_epe"] > 0
    assert int(model_from_safetensors(train_predict(cfg, resume=str(path)))[1]["step"]) == 4


def test_predictor_loss_weighs_occluded_pixels_but_not_the_epe():
    from flowcli.train_predict import l1_epe
    gt = torch.zeros(1, 2, 2, 2)
    pred = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]]])   # errors 1, 0, 0, 3
    valid = torch.ones(1, 2, 2)
    occluded = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])
    loss, epe = l1_epe(pred, gt, valid)
    assert loss.item() == pytest.approx(1.0) and epe == pytest.approx(1.0)
    loss, epe = l1_epe(pred, gt, valid, 1 + 2 * occluded)                         # weight 3 where hidden
    assert loss.item() == pytest.approx((1 + 3 * 3) / 4) and epe == pytest.approx(1.0)
    valid[0, 1, 1] = 0                                                           # invalid stays out
    assert l1_epe(pred, gt, valid, 1 + 2 * occluded)[0].item() == pytest.approx(1 / 3)


def test_train_predict_with_occluded_weight_runs(tmp_path):
    cfg = PredictTrainConfig(out_dir=str(tmp_path / "p"), total_steps=4, max_steps=1, batch_size=2, height=64,
                             width=96, workers=0, save_every=1, eval_every=5, eval_clips=1, warmup_steps=1,
                             occluded_weight=3.0)
    assert int(model_from_safetensors(train_predict(cfg))[1]["step"]) == 1
    saved = json.loads((tmp_path / "p" / "train_config.json").read_text())
    assert saved["occluded_weight"] == 3.0


def test_predictor_training_mixes_gt_corrupted_and_estimated_past_flows():
    """choose_past: estimated samples carry the shipped estimator's flow 0 -> 1, the others GT or corrupted GT."""
    from flowcli.synth import ClipParams, generate_clip
    from flowcli.train_predict import PastEstimator, choose_past
    clips = [generate_clip(10_000_000 + i, ClipParams(height=64, width=96, num_frames=3)) for i in range(4)]
    frames = torch.stack([torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() for f in c.frames])
                          for c in clips])
    gt = past_flow_low(torch.stack([torch.from_numpy(c.flows[0]).permute(2, 0, 1) for c in clips]))
    estimator = PastEstimator(None, iters=2)
    expected = estimator(frames)
    assert expected.shape == gt.shape and not torch.allclose(expected, gt)
    cfg = PredictTrainConfig(estimated_past=1.0, noisy_past=0.0)
    torch.testing.assert_close(choose_past(gt, frames, cfg, torch.Generator().manual_seed(0), estimator), expected)
    cfg = PredictTrainConfig(estimated_past=0.0, noisy_past=0.0)
    assert torch.equal(choose_past(gt, frames, cfg, torch.Generator().manual_seed(0), None), gt)
    cfg = PredictTrainConfig(estimated_past=0.5, noisy_past=0.5)
    mixed = choose_past(gt, frames, cfg, torch.Generator().manual_seed(3), estimator)
    kinds = ["est" if torch.allclose(m, e) else "gt" if torch.equal(m, g) else "noisy"
             for m, e, g in zip(mixed, expected, gt)]
    assert "gt" not in kinds and set(kinds) <= {"est", "noisy"}


def test_untrained_predictor_is_the_forward_warped_past_flow():
    """With the zero-initialised flow head, the P model's low-res output is exactly its forward flow."""
    from flowcli.model import forward_interpolate
    from flowcli.train_predict import predict_forward
    model = new_model(PredictTrainConfig()).eval()
    frames = torch.rand(1, 3, 3, 64, 96) * 255
    past = torch.zeros(1, 2, 64, 96)
    past[:, 0] = 8.0  # 1 px on the 1/8 grid
    low = past_flow_low(past)
    assert torch.allclose(low[:, 0], torch.ones_like(low[:, 0])) and not low[:, 1].any()
    with torch.no_grad():
        up = predict_forward(model, frames, low)
    inner = up[..., 8:-8, 8:-8]  # convex upsampling pads with zeros at the border, as official
    assert torch.allclose(inner[:, 0], torch.full_like(inner[:, 0], 8.0), atol=1e-4)
    assert torch.allclose(inner[:, 1], torch.zeros_like(inner[:, 1]), atol=1e-4)
    assert torch.equal(forward_interpolate(low[0]), low[0])


def test_cli_train_predict(tmp_path):
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train", "--predict", "-o", str(out), "--steps", "5", "--max-steps", "1",
                                 "--size", "96x64", "--batch-size", "2", "--eval-every", "1", "--quiet",
                                 "--estimated-past", "0.5", "--occluded-weight", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "latest.safetensors").is_file()
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["estimated_past"] == 0.5 and saved["occluded_weight"] == 2.0
    for option in (["--estimated-past", "0.3"], ["--occluded-weight", "2"]):
        r = CliRunner().invoke(cli, ["train", "-o", str(out), *option])
        assert r.exit_code == 2 and "--predict" in r.output
    r = CliRunner().invoke(cli, ["train", "--predict", "-o", str(out), "--init", str(out / "latest.safetensors")])
    assert r.exit_code == 2 and "--resume" in r.output


def test_cli_train_motion_range(tmp_path):
    """--max-speed / --speed-exponent set the synthetic motion distribution, and the data follow it."""
    from flowcli.train import _clip_params
    from flowcli.synth import generate_clip
    out = tmp_path / "fast"
    r = CliRunner().invoke(cli, ["train", "-o", str(out), "--steps", "3", "--max-steps", "1", "--size", "96x64",
                                 "--batch-size", "1", "--iters", "1", "--eval-every", "5", "--quiet",
                                 "--max-speed", "40", "--speed-exponent", "1"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["max_speed"] == 40 and saved["speed_exponent"] == 1
    slow = TrainConfig(height=64, width=96, max_speed=2.0)
    fast = TrainConfig(height=64, width=96, max_speed=40.0, speed_exponent=1.0)
    peak = {name: max(float(np.abs(generate_clip(s, _clip_params(c)).flows[0]).max()) for s in range(6))
            for name, c in (("slow", slow), ("fast", fast))}
    assert peak["slow"] < 10 < peak["fast"]
    r = CliRunner().invoke(cli, ["train", "--predict", "-o", str(out), "--max-speed", "40"])
    assert r.exit_code == 2 and "--predict" in r.output


def test_motion_probe_loss_reads_the_remaining_flow_on_the_low_res_grid():
    from flowcli.train import MotionProbe
    probe = MotionProbe(4)
    torch.nn.init.zeros_(probe.conv.weight)
    torch.nn.init.zeros_(probe.conv.bias)
    gt = torch.zeros(1, 2, 16, 24)
    gt[:, 0] = 8.0                      # 1 px to the right on the 1/8 grid
    valid = torch.ones(1, 16, 24)
    motion = torch.zeros(1, 4, 2, 3)
    at_zero = torch.zeros(1, 2, 2, 3)
    at_gt = torch.zeros(1, 2, 2, 3)
    at_gt[:, 0] = 1.0
    assert probe.loss([(at_zero, motion)], gt, valid).item() == pytest.approx(1.0)
    assert probe.loss([(at_gt, motion)], gt, valid).item() == pytest.approx(0.0)
    valid[:, :8] = 0                    # low-res cells with any invalid pixel are ignored
    assert probe.loss([(at_zero, motion)], gt, valid).item() == pytest.approx(1.0)


def test_ship_weights_records_default_iterations(tmp_path, monkeypatch):
    """tools/ship_weights.py --iters N: the shipped file and manifest carry N, the weights are
    unchanged, the sha256 in the manifest is the file's, and load_weights() picks it up."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flowcli.model import CPU_SMALL, MemFlowNet
    from flowcli.weights import load_weights, save_safetensors
    repo = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL)
    src = save_safetensors(tmp_path / "latest.safetensors", model, iters=12, extra={"step": 7})
    shipped = tmp_path / "weights"
    shipped.mkdir()
    env = dict(os.environ, FLOWCLI_WEIGHTS_DIR=str(shipped), PYTHONPATH=str(repo))
    subprocess.run([sys.executable, str(repo / "tools" / "ship_weights.py"), str(src), "mini", "--iters", "8",
                    "--default"], env=env, check=True, capture_output=True)
    entry = json.loads((shipped / "manifest.json").read_text())["models"][0]
    assert (entry["name"], entry["iters"], entry["train_step"], entry["default"]) == ("mini", 8, 7, True)
    monkeypatch.setenv("FLOWCLI_WEIGHTS_DIR", str(shipped))
    loaded = load_weights()  # the default: sha256 checked against the manifest
    assert loaded.name == "mini" and loaded.iters == 8
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


TINY_RUN = ["--steps", "10", "--max-steps", "1", "--size", "32x32", "--batch-size", "1", "--frames", "2",
            "--iters", "1", "--eval-every", "100", "--threads", "1", "--quiet"]


def _cli_train(out, *extra):
    """`flowcli train` in this process: for runs that stop before training (errors)."""
    return CliRunner().invoke(cli, ["train", "-o", str(out), *TINY_RUN, *extra])


def _train_process(out, *extra):
    """A one-step training run on tiny crops in its own process, as `flowcli train` runs."""
    import subprocess
    import sys
    from pathlib import Path
    flowcli = Path(sys.executable).parent / "flowcli"
    proc = subprocess.run([str(flowcli), "train", "-o", str(out), *TINY_RUN, *extra], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr


def _one_line_error(r, needle: str) -> str:
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowcli: error: ") and needle in lines[0], r.stderr
    assert "internal error" not in r.stderr
    return lines[0]


def test_cli_train_into_a_folder_holding_a_run_needs_resume_of_it_or_overwrite(tmp_path):
    """A second `train -o RUN` that does not continue RUN would replace its trained weights, rewrite its
    train_config.json and mix a second run into log.jsonl: refused without --overwrite, saying how to
    continue."""
    from flowcli.errors import OutputExistsError
    out = tmp_path / "run"
    _train_process(out)
    files = {name: (out / name).read_bytes() for name in ("latest.safetensors", "train_config.json", "log.jsonl")}
    for extra in ([], ["--max-steps", "2"], ["--predict"]):
        msg = _one_line_error(_cli_train(out, *extra), "already holds a training run (latest.safetensors, step 1)")
        assert f"--resume {out / 'latest.safetensors'}" in msg and "another output folder" in msg
        assert {name: (out / name).read_bytes() for name in files} == files
    with pytest.raises(OutputExistsError, match="already holds a training run"):  # the library refuses it too
        train(TrainConfig(out_dir=str(out)))
    with pytest.raises(OutputExistsError, match="already holds a training run"):
        train_predict(PredictTrainConfig(out_dir=str(out)))
    _train_process(out, "--resume", str(out / "latest.safetensors"))      # continuing it works
    assert int(model_from_safetensors(out / "latest.safetensors")[1]["step"]) == 2
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    # other start weights into it (--init, even of its own file, or --resume of another file) replace the
    # run: refused without --overwrite, and nothing is touched
    other = tmp_path / "other.safetensors"
    other.write_bytes((out / "latest.safetensors").read_bytes())
    files = {name: (out / name).read_bytes() for name in files}
    for extra in (["--init", str(out / "latest.safetensors")], ["--init", str(other)], ["--resume", str(other)]):
        msg = _one_line_error(_cli_train(out, *extra), "already holds a training run (latest.safetensors, step 2)")
        assert "--overwrite" in msg
        assert {name: (out / name).read_bytes() for name in files} == files
    with pytest.raises(OutputExistsError, match="already holds a training run"):
        train(TrainConfig(out_dir=str(out)), init=str(other))
    import subprocess
    import sys
    # a replacing run stopped before its first save leaves no old weights beside its new config and log
    script = ("import sys\nfrom flowcli.train import TrainConfig, train\n"
              "def stop(rec):\n    raise KeyboardInterrupt\n"
              "cfg = TrainConfig(out_dir=sys.argv[1], total_steps=10, batch_size=1, height=32, width=32,\n"
              "                  clip_frames=2, iters=1, eval_every=100, threads=1)\n"
              "try:\n    train(cfg, overwrite=True, progress=stop)\nexcept KeyboardInterrupt:\n    print('stopped')\n")
    stopped = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=600)
    assert "stopped" in stopped.stdout, stopped.stderr
    assert not (out / "latest.safetensors").exists()
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]
    _train_process(out, "--init", str(other), "--overwrite")                # asked: a fresh schedule from it
    assert int(model_from_safetensors(out / "latest.safetensors")[1]["step"]) == 1
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_cli_train_bad_lr_and_weights_of_the_wrong_kind_fail_before_anything_is_written(tmp_path):
    from flowcli.errors import CheckpointError
    from flowcli.weights import save_safetensors
    out = tmp_path / "run"
    for lr in ("nan", "inf", "-1", "0"):
        r = _cli_train(out, "--lr", lr)
        assert r.exit_code == 2 and "--lr" in r.output and "Traceback" not in r.output, (lr, r.output)
        assert not out.exists()
    est = save_safetensors(tmp_path / "est.safetensors", MemFlowNet(CPU_SMALL), iters=2)
    pred = save_safetensors(tmp_path / "p.safetensors", MemFlowNet(CPU_SMALL_P), iters=1)
    for extra, needle in ((["--resume", str(pred)], "train it with --predict"),
                          (["--init", str(pred)], "train it with --predict"),
                          (["--predict", "--resume", str(est)], "train it without --predict")):
        msg = _one_line_error(_cli_train(out, *extra), needle)
        assert msg.startswith(f"flowcli: error: {extra[-1]}: is ")
        assert not out.exists()
    with pytest.raises(CheckpointError, match="MemFlow-P"):
        train(TrainConfig(out_dir=str(out)), resume=str(pred))
    with pytest.raises(ValueError, match="lr"):
        train_predict(PredictTrainConfig(out_dir=str(out), lr=float("nan")))
    assert not out.exists()


def test_training_after_the_caller_used_opencv_threads_does_not_hang(tmp_path):
    """A DataLoader worker forked from a process whose OpenCV thread pool had run (a caller's cv2 call,
    an earlier run's evaluation) waited for good in its first cv2 call: a second training run in one
    Python session could hang. Run in a subprocess, with a timeout, since the old code hangs."""
    import subprocess
    import sys
    script = (
        "import sys, cv2, numpy as np\n"
        "from flowcli.train_predict import PredictTrainConfig, train_predict\n"
        "cv2.setNumThreads(2)\n"
        "for _ in range(3):\n"
        "    cv2.GaussianBlur(np.zeros((2000, 2000, 3), np.float32), (31, 31), 5)\n"
        "train_predict(PredictTrainConfig(out_dir=sys.argv[1], total_steps=1, batch_size=1, height=32, width=32,\n"
        "                                 threads=1, eval_every=1000))\n"
        "assert cv2.getNumThreads() == 2\n"
        "print('trained')\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0 and "trained" in proc.stdout, proc.stderr[-2000:]
