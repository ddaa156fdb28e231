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
    from flowcli.weights import load_weights

    shipped = load_weights(None)
    model = flowcli.load_model()
    assert model.flowcli_defaults == {"iters": shipped.iters, "coarse_to_fine": shipped.coarse,
                                      "refine": shipped.refine}
    frames = [np.random.RandomState(i).randint(0, 255, (64, 96, 3), dtype=np.uint8) for i in range(2)]
    stream = FlowStream(shipped.model, StreamOptions(iters=shipped.iters, coarse=shipped.coarse,
                                                     refine=shipped.refine))
    want = [f for f in (stream.push(im) for im in frames) if f is not None]
    got = [flow for _, flow in flowcli.estimate_flows(frames, model)]
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    plain = [flow for _, flow in flowcli.estimate_flows(frames, model, refine=False)]
    assert np.abs(plain[0] - got[0]).max() > 1e-3  # the refinement was on by default, and off when asked
