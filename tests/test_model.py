"""Model behaviour that the golden vectors do not cover."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flowcli.engine import FlowStream, StreamOptions, iter_flows, resize_flow, run_size
from flowcli.errors import CheckpointError
from flowcli.model import CPU_SMALL, OFFICIAL, InputPadder, KeyValueMemory, MemFlowNet
from flowcli.model.checkpoint import load_into, read_state_dict
from flowcli.weights import load_weights, model_from_safetensors, save_safetensors


def test_padder_matches_official_rule():
    p = InputPadder(436, 1024)
    assert p.lrtb == (0, 0, 2, 2) and p.padded_size == (440, 1024)
    p = InputPadder(375, 1242)
    assert p.lrtb == (3, 3, 0, 1)
    x = torch.arange(375 * 1242, dtype=torch.float32).view(1, 1, 375, 1242)
    assert torch.equal(p.unpad(p.pad(x)), x)


def test_memory_keeps_one_past_frame():
    mem = KeyValueMemory(2, 1)
    for i in range(5):
        mem.add(torch.full((1, 6, 4), float(i)), torch.full((1, 6, 3), float(i)))
        assert mem.num_frames == 1
        assert float(mem.keys[0, 0, 0]) == i
    keys, values = mem.with_current(torch.zeros(1, 6, 4), torch.zeros(1, 6, 3))
    assert keys.shape == (1, 12, 4) and values.shape == (1, 12, 3)


@pytest.mark.parametrize("hw", [(40, 56), (64, 72), (8, 8), (100, 130)])
def test_small_inputs_give_finite_flow(hw):
    """The official code returns NaN when a padded side is < 128 px; we must not."""
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL)
    frames = [np.random.RandomState(i).randint(0, 255, (*hw, 3), dtype=np.uint8) for i in range(3)]
    flows = list(iter_flows(model, frames, StreamOptions(iters=2)))
    assert len(flows) == 2
    for _, f in flows:
        assert f.shape == (*hw, 2) and np.isfinite(f).all()


def test_small_input_translation_is_recovered_by_correlation_level():
    """Zero-padding semantics on 1-pixel pyramid levels: sampling off the level gives 0, not the pixel."""
    from flowcli.model.corr import CorrPyramid
    f1 = torch.randn(1, 8, 8, 8)
    pyr = CorrPyramid(f1, f1, levels=4, radius=1)
    assert pyr.pyramid[-1].shape[-2:] == (1, 1)
    coords = torch.zeros(1, 2, 8, 8)
    out = pyr(coords)
    last = out[:, -9:]  # level 3, offsets -1..1 around (0,0): only the centre is inside
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(last[0, :, 0, 0]) == 1


@pytest.mark.parametrize("hw", [(7, 13), (8, 1), (20, 30)])
def test_pyramid_levels_equal_pooling_the_volume(hw):
    """Levels built from pooled fmap2 equal the official rule (pool the level-0 volume), odd sides too."""
    from flowcli.model.corr import CorrPyramid, _pool_keep_one
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 16, *hw), torch.randn(2, 16, *hw)
    pyr = CorrPyramid(f1, f2.contiguous(memory_format=torch.channels_last), levels=4, radius=2)
    level = torch.einsum("bdp,bdq->bpq", f1.flatten(2), f2.flatten(2)).reshape(-1, 1, *hw) / 4.0
    for got in pyr.pyramid:
        assert got.shape == level.shape
        torch.testing.assert_close(got, level, atol=1e-5, rtol=1e-5)
        level = _pool_keep_one(level)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_encoder_inference_fast_path_equals_module_path(norm):
    """Folded batch norms (with non-trivial running stats) and in-place instance norms give the same
    features as the plain modules (NCHW input takes the plain path)."""
    from flowcli.model.encoder import BasicEncoder
    torch.manual_seed(0)
    enc = BasicEncoder(96, norm, (32, 48, 64)).eval()
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        plain = enc(x)
        fast_enc = enc.to(memory_format=torch.channels_last)
        fast = fast_enc(x.contiguous(memory_format=torch.channels_last))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("band_bytes", [1, 3 * 8 * 4 * 7, 2**20])
def test_in_place_instance_norm_equals_the_built_in_for_any_band_of_rows(band_bytes, monkeypatch):
    """normalize_ sums squared deviations a band of rows at a time: one row, bands of 7 rows that
    leave a partial last band (H=23), and one band; all equal F.instance_norm (+ ReLU), in place."""
    from flowcli.model import encoder
    monkeypatch.setattr(encoder, "SQUARE_BAND_BYTES", band_bytes)
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 23, 3) * 3 + 5).contiguous(memory_format=torch.channels_last)
    expected = torch.relu(torch.nn.functional.instance_norm(x, eps=1e-5))
    y = x.clone()
    out = encoder.InstanceNorm(8).normalize_(y, relu=True)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_bfloat16_channels_last_instance_norm_matches_the_float32_norm(grad):
    """The bf16 NHWC path (inference: a float32 copy normalised in place; training: out of place)
    gives the float32 instance norm rounded to bf16, keeps NHWC, and leaves its input alone."""
    from flowcli.model import encoder
    torch.manual_seed(0)
    x = (torch.randn(1, 8, 19, 5) * 3 + 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    expected = torch.nn.functional.instance_norm(x.float(), eps=1e-5).to(torch.bfloat16)
    with torch.set_grad_enabled(grad):
        out = encoder.InstanceNorm(8)(x)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.float(), expected.float(), atol=0.02, rtol=0.01)
    assert torch.equal(x, before)


def test_run_size_and_resize_flow():
    assert run_size(436, 1024, max_side=512) == (218, 512)
    assert run_size(100, 200, scale=0.5) == (50, 100)
    assert run_size(100, 200, max_side=1000) == (100, 200)
    flow = np.ones((50, 100, 2), np.float32)
    big = resize_flow(flow, 100, 200)
    assert big.shape == (100, 200, 2) and np.allclose(big, 2.0)


def test_max_side_returns_input_size():
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL)
    frames = [np.random.RandomState(i).randint(0, 255, (120, 200, 3), dtype=np.uint8) for i in range(2)]
    (_, flow), = iter_flows(model, frames, StreamOptions(iters=1, max_side=64))
    assert flow.shape == (120, 200, 2)


def test_frame_size_change_is_an_error():
    model = MemFlowNet(CPU_SMALL)
    s = FlowStream(model, StreamOptions(iters=1))
    s.push(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="size changed"):
        s.push(np.zeros((64, 72, 3), np.uint8))


def test_loader_accepts_wrapper_and_module_prefix(tmp_path, conformance_dir):
    state = read_state_dict(conformance_dir / "memflow_est_seed0.pth")
    wrapped = {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "steps": torch.tensor(3)}
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    w = load_weights(str(path), preset="sintel")
    for k, v in w.model.state_dict().items():
        assert torch.equal(v, state[k])


def test_loader_lists_missing_unexpected_and_misshaped(tmp_path, conformance_dir):
    state = read_state_dict(conformance_dir / "memflow_est_seed0.pth")
    state.pop("update_block.aggregator.gamma")
    state["extra.weight"] = torch.zeros(1)
    state["att.to_qk.weight"] = torch.zeros(3, 3, 1, 1)
    model = MemFlowNet(OFFICIAL)
    with pytest.raises(CheckpointError) as err:
        load_into(model, state, "bad.pth")
    msg = str(err.value)
    assert "missing: update_block.aggregator.gamma" in msg
    assert "unexpected: extra.weight" in msg
    assert "mis-shaped: att.to_qk.weight (3, 3, 1, 1)" in msg


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/flowcli_pwned",))


def test_crafted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"x": _RunsCode()}}, fh)
    marker = "/tmp/flowcli_pwned"
    import os
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(path)
    assert not os.path.exists(marker)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="no such"):
        read_state_dict(tmp_path / "missing.pth")


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(1)
    model = MemFlowNet(CPU_SMALL)
    path = save_safetensors(tmp_path / "m.safetensors", model, iters=7, extra={"step": 12})
    loaded, meta = model_from_safetensors(path)
    assert meta["iters"] == "7" and meta["step"] == "12"
    assert loaded.cfg == CPU_SMALL
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_derived_inference_weights_follow_in_place_weight_changes():
    """Folded weights are cached per module, and a changed weight (as load_state_dict does) is seen."""
    from flowcli.model import fused
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    first, _ = fused.with_identity(conv)
    assert fused.with_identity(conv)[0] is first
    with torch.no_grad():
        conv.weight.mul_(2)
    second, _ = fused.with_identity(conv)
    torch.testing.assert_close(second[:, 0, 1, 1], conv.weight[:, 0, 1, 1] + 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_gelu_on_channels_last_is_gelu_in_place(dtype):
    """fused.gelu_ takes the NHWC view of a channels-last tensor (the 4-D op is slow there): same
    values as F.gelu, same storage, layout kept; NCHW and other shapes go straight through."""
    from flowcli.model import fused
    x = torch.randn(1, 6, 5, 7).to(dtype)
    for t in (x.contiguous(memory_format=torch.channels_last), x.clone(), x[0].clone()):
        ref = torch.nn.functional.gelu(t.float()).to(dtype)
        ptr, strides = t.data_ptr(), t.stride()
        out = fused.gelu_(t)
        assert out is t and t.data_ptr() == ptr and t.stride() == strides
        torch.testing.assert_close(t, ref, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=0)


def test_workspace_reuses_a_buffer_only_while_shape_dtype_and_device_match():
    from flowcli.model.workspace import Workspace, empty
    ws, like = Workspace(), torch.zeros(1)
    a = ws.empty("corr0", (2, 3), like)
    assert ws.empty("corr0", (2, 3), like) is a
    assert ws.empty("corr0", (3, 2), like) is not a
    assert ws.empty("corr0", (3, 2), like.double()).dtype == torch.float64
    assert empty(None, "x", (4,), like).shape == (4,)


def test_estimate_with_a_workspace_equals_without_over_several_pairs():
    """Buffers reused from pair to pair (the streaming engine's way) give the same flows."""
    from flowcli.model.workspace import Workspace
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL).eval()
    frames = torch.rand(4, 1, 3, 64, 96) * 2 - 1
    results = []
    for ws in (None, Workspace()):
        memory, flows = model.new_memory(), []
        with torch.no_grad():
            fmaps = [model.encode_features(f) for f in frames]
            for t in range(3):
                ctx = model.encode_context(frames[t])
                est = model.estimate(ctx, fmaps[t], fmaps[t + 1], memory, 3, workspace=ws)
                memory.add(ctx.key, est.value)
                flows.append(est.flow_up)
        results.append(torch.stack(flows))
    assert torch.equal(results[0], results[1])


def test_correlation_lookup_matches_the_official_sampling_rule():
    """The folded grid map equals the official lookup (level pixel c / 2**l + delta, normalised
    2x / (W-1) - 1, align_corners=True) on every level of a volume; a level of side 1 (official: 0/0)
    reads that pixel's value at integer x, interpolates in x, and is zero outside."""
    import torch.nn.functional as F
    from flowcli.model.corr import CorrPyramid
    torch.manual_seed(0)
    fmap1, fmap2 = torch.randn(1, 8, 8, 16), torch.randn(1, 8, 8, 16)   # levels 8x16, 4x8, 2x4, 1x2
    pyr = CorrPyramid(fmap1, fmap2, levels=4, radius=2)
    coords = torch.rand(1, 2, 8, 16) * torch.tensor([16.0, 8.0]).view(1, 2, 1, 1) - 2
    got = pyr(coords)
    centre = coords.permute(0, 2, 3, 1).reshape(-1, 1, 1, 2)
    offs = torch.arange(-2, 3, dtype=torch.float32)
    dx, dy = torch.meshgrid(offs, offs, indexing="ij")
    delta = torch.stack([dx, dy], dim=-1).view(1, 5, 5, 2)
    for level in range(3):
        corr = pyr.pyramid[level]
        hh, ww = corr.shape[-2:]
        x, y = (centre / 2**level + delta).split(1, dim=-1)
        grid = torch.cat([2 * x / (ww - 1) - 1, 2 * y / (hh - 1) - 1], dim=-1)
        ref = F.grid_sample(corr, grid, align_corners=True).view(1, 8, 16, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(got[:, 25 * level:25 * (level + 1)], ref, atol=1e-5, rtol=1e-5)
    top = pyr.pyramid[3]                                   # (128, 1, 1, 2)
    integer = torch.zeros(1, 2, 8, 16)                     # every query at level-0 pixel (0, 0)
    out = pyr(integer)[0, 75:].reshape(5, 5, 8, 16)        # [x offset, y offset, query]
    q = top.view(8, 16, 2)
    torch.testing.assert_close(out[2, 2], q[..., 0])      # (0, 0): the first pixel
    torch.testing.assert_close(out[3, 2], q[..., 1])      # x + 1: the second
    assert out[4].abs().max() == 0 and out[2, 3].abs().max() == 0  # outside the 1x2 level
    half = pyr(torch.full((1, 2, 8, 16), 4.0) * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))[0, 75:]
    torch.testing.assert_close(half.reshape(5, 5, 8, 16)[2, 2], q.mean(-1))  # x = 0.5 at level 3


def test_plain_ops_switches_fusion_off_only_inside_the_block():
    from flowcli.model import fused
    x = torch.randn(1, 8, 4, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert fused.usable(x)
        with fused.plain_ops():
            assert not fused.usable(x)
        assert fused.usable(x)
    assert not fused.usable(x)  # autograd recording: never fused


def _nhwc(*shape):
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def test_packed_weights_give_the_same_convolution_and_are_made_once_per_weight_and_input_shape():
    """fused.packed: oneDNN's layout of a weight, bit-identical results, cached per (weight, shape)."""
    from flowcli.model import fused
    conv = torch.nn.Conv2d(16, 24, 3, padding=1)
    x, x_half = _nhwc(1, 16, 12, 20), _nhwc(1, 16, 6, 10)
    with torch.no_grad():
        assert torch.equal(fused.conv(x, conv), fused._op()(x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1,
                                                            "none", [], ""))
        torch.testing.assert_close(fused.conv(x, conv, relu=True), torch.relu(conv(x)))
        first = fused.packed(conv, conv.weight, x)
        assert fused.packed(conv, conv.weight, x) is first
        assert fused.packed(conv, conv.weight, x_half) is not first           # another input size: its own
        assert fused.packed(conv, conv.weight, x) is first                    # both kept (c2f: full + half)
        conv.weight.mul_(2)                                                   # as load_state_dict does
        assert fused.packed(conv, conv.weight, x) is not first
        torch.testing.assert_close(fused.conv(x, conv), conv(x))
        for _ in range(20):  # new storage, same Parameter and version; freed addresses get reused
            conv.weight.data = torch.randn_like(conv.weight)
            torch.testing.assert_close(fused.conv(x, conv), conv(x))
        conv.weight.data = conv.weight.data.to(torch.bfloat16).to(torch.float32)  # rounded, maybe same address
        torch.testing.assert_close(fused.conv(x, conv), conv(x))
    assert len(conv._packed_weights) <= fused.PACKED_PER_CONV


def test_fused_path_is_not_taken_while_autograd_records():
    """The fused ops have no backward: with grad enabled, even for an input that needs none, the
    module path runs, so the weights still get gradients (e.g. a frozen encoder in training)."""
    from flowcli.model import fused
    conv = torch.nn.Conv2d(8, 8, 1)
    x = _nhwc(1, 8, 4, 5)
    fused.conv(x, conv, relu=True).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_a_model_with_packed_weights_can_be_copied_and_reloaded():
    """After inference the modules hold oneDNN-packed weights: deepcopy/pickle start without them
    (the bf16 engine deep-copies the model), and loading other weights is seen by the next frame."""
    import copy
    torch.manual_seed(0)
    model, other = MemFlowNet(CPU_SMALL).eval(), MemFlowNet(CPU_SMALL).eval()
    frames = [np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8) for i in range(2)]

    def flow_of(m):
        stream = FlowStream(m, StreamOptions(iters=2))
        stream.push(frames[0])
        return stream.push(frames[1])

    before = flow_of(model)
    assert any(getattr(m, "_packed_weights", None) for m in model.modules())
    clone = copy.deepcopy(model)
    assert not any(getattr(m, "_packed_weights", None) for m in clone.modules())
    np.testing.assert_array_equal(flow_of(clone), before)
    pickle.loads(pickle.dumps(model))
    model.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(flow_of(model), flow_of(copy.deepcopy(other)))
    assert not np.array_equal(flow_of(model), before)


def test_large_frames_switch_weight_packing_off_for_the_model(monkeypatch):
    """Above PACK_MAX_PIXELS (run size) a stream's model keeps no packed copies (peak RSS at 436x1024),
    for good; small frames keep them."""
    from flowcli.model import fused
    frames = [np.random.default_rng(i).integers(0, 255, (64, 96, 3), dtype=np.uint8) for i in range(2)]
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    for limit, packs in ((64 * 96, True), (64 * 96 - 1, False), (64 * 96, False)):
        monkeypatch.setattr(fused, "PACK_MAX_PIXELS", limit)
        stream = FlowStream(model, StreamOptions(iters=1))
        for frame in frames:
            stream.push(frame)
        assert any(getattr(m, "_packed_weights", None) for m in convs) == packs
