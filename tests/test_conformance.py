"""The proof that this is the official model: golden vectors from the official code.

../shared/conformance holds random-weight checkpoints saved by the official code,
input frames, and the official outputs (see its README). Tolerances: 2e-4 px on
low-res flow, 1e-3 px on full-res flow (float32 CPU).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowcli.engine import StreamOptions, iter_flows
from flowcli.model import forward_interpolate
from flowcli.sources import open_source
from flowcli.weights import load_weights

LOW_TOL, UP_TOL = 2e-4, 1e-3


@pytest.fixture(scope="module")
def est(conformance_dir):
    return load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel")


@pytest.fixture(scope="module")
def vectors(conformance_dir):
    return dict(np.load(conformance_dir / "est_vectors_seed0.npz"))


def _run_model(model, x, iters, flow_inits=None):
    """Step through the clip as the official inference core does; returns (low, up) per pair."""
    memory = model.new_memory()
    fmaps = [model.encode_features(x[i:i + 1]) for i in range(len(x))]
    lows, ups = [], []
    with torch.no_grad():
        for ti in range(len(x) - 1):
            ctx = model.encode_context(x[ti:ti + 1])
            init = None if flow_inits is None or ti == 0 else torch.from_numpy(flow_inits[ti:ti + 1])
            e = model.estimate(ctx, fmaps[ti], fmaps[ti + 1], memory, iters, flow_init=init)
            memory.add(ctx.key, e.value)
            lows.append(e.flow_low[0].numpy())
            ups.append(e.flow_up[0].numpy())
    return np.stack(lows), np.stack(ups)


def test_checkpoint_keys_and_params(est):
    assert sum(p.numel() for p in est.model.parameters()) == 6273149
    assert len(est.model.state_dict()) == 245


@pytest.mark.parametrize("ws", [0, 1])
def test_model_matches_official(est, vectors, ws):
    x = torch.from_numpy(vectors["input_preprocessed"])
    inits = vectors[f"ws{ws}_flow_init"] if ws else None
    low, up = _run_model(est.model, x, 4, inits)
    assert np.abs(low - vectors[f"ws{ws}_flow_low"]).max() <= LOW_TOL
    assert np.abs(up - vectors[f"ws{ws}_flow_up_padded"]).max() <= UP_TOL


def test_intermediates_match(est, conformance_dir, vectors):
    """Context and features of the first pair: where a mismatch would start."""
    dbg = np.load(conformance_dir / "est_debug_seed0.npz")
    x = torch.from_numpy(vectors["input_preprocessed"])
    with torch.no_grad():
        ctx = est.model.encode_context(x[:1])
        fmap = est.model.encode_features(x[:2])
    h, w = ctx.size
    assert np.abs(ctx.net[0].numpy() - dbg["ws0_ctx_net"][0]).max() < 1e-5
    assert np.abs(ctx.inp[0].numpy() - dbg["ws0_ctx_inp"][0]).max() < 1e-5
    q = ctx.query[0].T.reshape(-1, h, w).numpy()
    assert np.abs(q - dbg["ws0_ctx_query"][0]).max() < 1e-4
    assert np.abs(fmap.numpy() - dbg["ws0_fmaps"][0]).max() < 1e-4


def test_forward_interpolate_matches_official(vectors):
    for ti in range(1, 4):
        ours = forward_interpolate(torch.from_numpy(vectors["ws1_flow_low"][ti - 1])).numpy()
        assert np.array_equal(ours, vectors["ws1_flow_init"][ti])


@pytest.mark.parametrize("ws", [0, 1])
def test_streaming_engine_matches_official(est, conformance_dir, vectors, ws):
    """The user path: PNG frames from disk through the frame source and the stream engine."""
    with open_source(str(conformance_dir)) as src:
        flows = list(iter_flows(est.model, src, StreamOptions(iters=4, warm_start=bool(ws))))
    assert [i for i, _ in flows] == [0, 1, 2, 3]
    up = np.stack([f.transpose(2, 0, 1) for _, f in flows])
    assert np.abs(up - vectors[f"ws{ws}_flow_up"]).max() <= UP_TOL


def test_prediction_matches_official(conformance_dir):
    pred = load_weights(str(conformance_dir / "memflow_pred_seed0.pth"), preset="sintel", kind="predict")
    model = pred.model
    v = np.load(conformance_dir / "pred_vectors_seed0.npz")
    x = torch.from_numpy(v["input_preprocessed"])
    memory = model.new_memory()
    prev = torch.zeros(1, 2, 16, 20)
    with torch.no_grad():
        fmaps = [model.encode_features(x[i:i + 1]) for i in range(len(x))]
        for ti in range(len(x) - 1):
            ctx = model.encode_context(x[ti:ti + 1])
            low, up = model.predict(ctx, memory, prev)
            assert np.abs(low[0].numpy() - v["pred_flow_low"][ti]).max() <= LOW_TOL
            assert np.abs(up[0].numpy() - v["pred_flow_up_padded"][ti]).max() <= UP_TOL
            flow = F.interpolate(torch.from_numpy(v["gt_flows"][ti:ti + 1]), size=(16, 20), mode="bilinear",
                                 align_corners=True) / 8
            if ti < len(x) - 2:
                memory.add(ctx.key, model.motion_value(model.correlation(fmaps[ti], fmaps[ti + 1]), flow))
            prev = forward_interpolate(flow[0])[None]


def test_bf16_path_stays_close_to_fp32(est, conformance_dir):
    """The bf16 fast path: mean end-point difference to fp32 <= 0.05 px on the conformance clip."""
    def run(precision):
        with open_source(str(conformance_dir)) as src:
            return np.stack([f for _, f in iter_flows(est.model, src, StreamOptions(iters=4, precision=precision))])
    fp32, bf16 = run("fp32"), run("bf16")
    diff = np.linalg.norm(fp32 - bf16, axis=-1)
    assert np.isfinite(bf16).all()
    assert diff.mean() <= 0.05, diff.mean()
