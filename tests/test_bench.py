"""Smoke test of the benchmark (bench/run.py --quick) and of its official-like baseline.

The numbers of a --quick run are meaningless; this checks that every section runs,
that the baseline computes the same flows as the engine, and that the JSON is complete.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.official_like import OfficialLikePredictStream, OfficialLikeStream  # noqa: E402


def test_official_like_matches_official_golden_vectors(conformance_dir):
    """The baseline reproduces the official code's outputs (so it is a faithful stand-in)."""
    from flowcli.sources import read_image_rgb
    from flowcli.weights import load_weights

    model = load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel").model
    vec = np.load(conformance_dir / "est_vectors_seed0.npz")
    stream = OfficialLikeStream(model, iters=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; more threads only spin when the cores are busy
    try:
        flows = [stream.push(read_image_rgb(p)) for p in sorted(conformance_dir.glob("frame_00*.png"))][1:]
    finally:
        torch.set_num_threads(threads)
    ref = vec["ws0_flow_up_padded"].transpose(0, 2, 3, 1)  # 128x160: no padding
    assert np.abs(np.stack(flows) - ref).max() < 1e-3


def test_official_like_predict_matches_official_golden_vectors(conformance_dir):
    """The MemFlow-P baseline loop reproduces the official prediction outputs (use_gt=True)."""
    from flowcli.weights import load_weights

    model = load_weights(str(conformance_dir / "memflow_pred_seed0.pth"), preset="sintel", kind="predict").model
    vec = np.load(conformance_dir / "pred_vectors_seed0.npz")
    stream = OfficialLikePredictStream(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flows = [stream.push(vec["frames_uint8"][t],
                             torch.from_numpy(vec["memory_flow_low"][t - 1])[None] if t else None)
                 for t in range(len(vec["pred_flow_up"]))]
    finally:
        torch.set_num_threads(threads)
    ref = vec["pred_flow_up"].transpose(0, 2, 3, 1)
    assert np.abs(np.stack(flows) - ref).max() < 1e-3


def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--threads", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    text = run.stdout
    for title in ("Baseline check", "Estimation: s/frame", "Memory flatness", "bf16 vs fp32", "Roofline",
                  "Coarse-to-fine start", "End-to-end `flowcli estimate`"):
        assert title in text, text
    assert "machine:" in text and "torch" in text

    res = json.loads(out.read_text())
    assert res["check"]["max_abs_diff"] < 1e-3, res["check"]  # baseline == engine at 128x160
    speed = {(r["impl"], r["precision"]): r for r in res["speed"]}
    for prec in res["precisions"]:
        r = speed[("flowcli", prec)]
        assert "error" not in r, r
        if "unsupported" not in r:
            assert r["median_s"] > 0 and r["peak_rss_gb"] > 0.05
            assert len(r["times_s"]) == 2
    base = speed[("official_like", "fp32")]
    assert base["median_s"] > 0 and base["peak_rss_gb"] > 0.05
    assert speed[("flowcli", "fp32")]["speedup_vs_baseline"] > 0
    assert res["flat"]["rss_end_gb"] > 0
    pred = {(r["impl"], r["precision"], r["tta"]): r for r in res["predict"]}
    assert pred[("official_like", "fp32", False)]["median_s"] > 0
    assert pred[("flowcli", "fp32", False)]["speedup_vs_baseline"] > 0
    assert "MemFlow-P prediction loop" in text
    roof = res["roofline"]
    assert roof["gemm_gflops"] > 1
    assert [r["what"] for r in roof["rows"]] == ["estimate", "P step"]
    for r in roof["rows"]:  # the encoders alone are ~5.5 GFLOP at 128x160: fused ops left uncounted give ~0
        assert r["gflop"] > 5 and r["attained_gflops"] > 0, r
    assert res["e2e"]["pure_model_s"] > 0 and res["e2e"]["ratio_wall"] > 0
    # three settings measured, ratios to the first (timings in a smoke run are noise: no ordering asserted)
    assert res["coarse"]["ratio"] > 0 and res["coarse"]["refined_ratio"] > 0
    assert res["coarse"]["refined"]["median_s"] > 0
    if "bf16" in res["precisions"] and "datasets" in res["precision"]:
        conf = res["precision"]["datasets"][0]
        assert conf["diff"]["bf16"]["mean_epe"] >= 0
