"""Tests for flowcli.datasets and flowcli.evaluate.

Metrics are checked on hand-made arrays with answers worked out by hand; the
dataset layouts on the real shared data and on small generated folders; the
runner with OpenCV DIS/Farneback against the shared GT (DIS-medium on
Middlebury is a known figure, 0.27 px) and with a small random-weight
MemFlowNet at reduced size (only the mechanics: row count, finite numbers,
memory carried within a sequence and reset between sequences).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flowcli.datasets import EvalPair, EvalSequence, find_sequences
from flowcli.errors import InputError
from flowcli.evaluate import EvalReport, PairRow, evaluate, flow_metrics, format_table
from flowcli.flowio import read_flow, write_flo, write_kitti_png

NAN = np.nan


# ------------------------------------------------------------------ metrics on hand-made arrays


def _flow(rows):
    return np.array(rows, dtype=np.float32)


GT = _flow([[(3, 4), (0, 0), (NAN, NAN)],
            [(1, 0), (0, 10), (6, 8)]])


def test_metrics_known_answers_with_nan_gt():
    m = flow_metrics(np.zeros_like(GT), GT)
    # EPEs on the 5 finite-GT pixels: 5, 0, 1, 10, 10
    assert m["count"] == 5
    assert m["epe"] == pytest.approx(26 / 5)
    assert m["px1"] == pytest.approx(1 / 5)  # only the 0
    assert m["px3"] == pytest.approx(2 / 5)  # 0 and 1
    assert m["px5"] == pytest.approx(2 / 5)  # 5 is not < 5
    assert m["fl_all"] == pytest.approx(3 / 5)  # 5, 10, 10 (each > 3 px and > 5 % of |gt|)
    assert m["epe_sum"] == pytest.approx(26)
    assert m["px1_sum"] == 1 and m["px3_sum"] == 2 and m["px5_sum"] == 2 and m["fl_all_sum"] == 3
    # Sintel speed bands by GT speed: 5, 0, 1 are below 10 px; the two 10 px vectors are in [10, 40)
    assert m["s0_10"] == pytest.approx(2.0) and m["s0_10_count"] == 3 and m["s0_10_sum"] == pytest.approx(6)
    assert m["s10_40"] == pytest.approx(10.0) and m["s10_40_count"] == 2
    assert math.isnan(m["s40"]) and m["s40_count"] == 0


def test_metrics_with_mask():
    mask = np.array([[True, True, True], [True, False, False]])  # drop the two 10 px errors
    m = flow_metrics(np.zeros_like(GT), GT, mask)
    assert m["count"] == 3  # (0,2) is NaN GT, so 5, 0, 1 remain
    assert m["epe"] == pytest.approx(2.0)
    assert m["px1"] == pytest.approx(1 / 3)
    assert m["px3"] == pytest.approx(2 / 3)
    assert m["fl_all"] == pytest.approx(1 / 3)


def test_fl_all_needs_both_3px_and_5_percent():
    gt = _flow([[(100, 0), (100, 0), (0, 0), (0, 2.5), (40, 0)]])
    pred = _flow([[(104, 0),   # EPE 4 > 3 but < 5 % of 100: not an outlier
                   (106, 0),   # EPE 6 > 3 and > 5: outlier
                   (2.9, 0),   # EPE 2.9 <= 3 even though |gt| = 0: not an outlier
                   (0, 6.5),   # EPE 4 > 3 and > 0.125: outlier
                   (43, 0)]])  # EPE 3 is not > 3: not an outlier
    m = flow_metrics(pred, gt)
    assert m["fl_all_sum"] == 2
    assert m["fl_all"] == pytest.approx(2 / 5)


def test_metrics_empty_and_bad_inputs():
    m = flow_metrics(np.zeros_like(GT), GT, np.zeros((2, 3), bool))
    assert m["count"] == 0 and math.isnan(m["epe"]) and math.isnan(m["fl_all"])
    pred = np.zeros_like(GT)
    pred[0, 0] = NAN  # a non-finite prediction where GT is known is not hidden
    assert math.isnan(flow_metrics(pred, GT)["epe"])
    with pytest.raises(ValueError):
        flow_metrics(np.zeros((2, 2, 2), np.float32), GT)
    with pytest.raises(ValueError):
        flow_metrics(np.zeros_like(GT), GT, np.ones((3, 2), bool))


def _row(name, epe_values):
    gt = np.ones((1, len(epe_values), 2), np.float32) * np.array([0, 100], np.float32)
    pred = gt.copy()
    pred[0, :, 0] = epe_values
    return PairRow(name, 0, "f.png", 0.5, {"all": flow_metrics(pred, gt)})


def test_summary_mean_over_pairs_and_per_pixel():
    rep = EvalReport("m", "chairs", "/x", None, False, 2, [_row("a", [1.0]), _row("b", [3.0, 3.0, 3.0])])
    s = rep.summary()
    assert s["pairs"] == 2 and s["all"]["count"] == 4
    assert s["all"]["epe"] == pytest.approx((1 + 3) / 2)      # each pair counts once
    assert s["all"]["epe_px"] == pytest.approx((1 + 9) / 4)   # each pixel counts once
    assert s["all"]["px3"] == pytest.approx((1 + 0) / 2)
    assert s["all"]["px3_px"] == pytest.approx(1 / 4)
    assert s["all"]["s40"] == pytest.approx(2.0) and s["all"]["s40_px"] == pytest.approx(2.5)  # |gt| = 100
    assert math.isnan(s["all"]["s0_10"]) and s["all"]["s0_10_count"] == 0  # no pair has a slow pixel
    assert s["seconds"] == pytest.approx(1.0) and s["seconds_per_pair"] == pytest.approx(0.5)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert [p["sequence"] for p in d["pairs"]] == ["a", "b"]
    assert d["summary"]["all"]["epe"] == pytest.approx(2.0)
    table = format_table(rep)
    assert "mean over pairs" in table and "per pixel" in table and "2.000" in table and "2.500" in table
    empty = EvalReport("m", "chairs", "/x", None, False, 0, [])
    json.dumps(empty.to_dict(), allow_nan=False)
    assert "0 pairs" in format_table(empty)


# ------------------------------------------------------------------ layouts on the shared data


def _by_name(seqs):
    return {s.name: s for s in seqs}


def test_find_sintel(shared_data):
    seqs = _by_name(find_sequences(shared_data / "sintel", "sintel"))
    assert set(seqs) == {"sintel/clean/alley_1", "sintel/final/alley_1", "sintel/final/ambush_4",
                         "sintel/final/temple_3"}
    assert [len(seqs[n].pairs) for n in sorted(seqs)] == [1, 1, 2, 1]
    amb = seqs["sintel/final/ambush_4"]
    assert [p.name for p in amb.frame_paths] == [f"frame_{i:04d}.png" for i in range(3, 9)]
    assert [p.index for p in amb.pairs] == [1, 3]  # 4->5 and 6->7
    assert [p.flow_path.name for p in amb.pairs] == ["frame_0004.flo", "frame_0006.flo"]
    for p in amb.pairs:
        assert amb.frame_paths[p.index].stem == p.flow_path.stem
        assert p.occ_path.parent.name == "ambush_4" and p.occ_path.parent.parent.name == "occlusions"
        assert p.invalid_path.parent.parent.name == "invalid"
    alley = seqs["sintel/clean/alley_1"]
    assert len(alley.frame_paths) == 4 and alley.pairs[0].index == 1
    assert alley.pairs[0].flow_path == seqs["sintel/final/alley_1"].pairs[0].flow_path
    # the training folder itself is accepted as root
    assert len(find_sequences(shared_data / "sintel" / "training", "sintel")) == 4


def test_find_kitti(shared_data):
    seqs = find_sequences(shared_data / "kitti2012", "kitti")
    assert [s.name for s in seqs] == ["kitti/000045"]
    s = seqs[0]
    assert [p.parent.name for p in s.frame_paths] == ["colored_0", "colored_0"]
    assert [p.name for p in s.frame_paths] == ["000045_10.png", "000045_11.png"]
    assert len(s.pairs) == 1 and s.pairs[0].index == 0
    assert s.pairs[0].flow_path.parent.name == "flow_noc" and s.pairs[0].noc_flow_path == s.pairs[0].flow_path


def test_find_middlebury(shared_data):
    seqs = find_sequences(shared_data / "middlebury", "middlebury")
    assert [s.name for s in seqs] == ["middlebury/Dimetrodon", "middlebury/Grove2", "middlebury/RubberWhale",
                                      "middlebury/Venus"]  # Beanbags, MiniCooper: no GT
    for s in seqs:
        assert [p.name for p in s.frame_paths] == ["frame10.png", "frame11.png"]
        assert len(s.pairs) == 1 and s.pairs[0].index == 0 and s.pairs[0].flow_path.name == "flow10.flo"


def test_find_chairs(shared_data):
    seqs = find_sequences(shared_data / "flyingchairs", "chairs")
    assert [s.name for s in seqs] == ["chairs/0000000", "chairs/0000001", "chairs/0000002"]
    for s in seqs:
        assert [p.name[-8:] for p in s.frame_paths] == ["img0.ppm", "img1.ppm"]
        assert s.pairs[0].flow_path.name.endswith("-gt.flo")


@pytest.mark.parametrize("layout", ["sintel", "kitti", "middlebury", "chairs"])
def test_wrong_layout_is_input_error(tmp_path, layout):
    (tmp_path / "some_folder").mkdir()
    cv2.imwrite(str(tmp_path / "some_folder" / "frame_0001.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError) as err:
        find_sequences(tmp_path, layout)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and "expected" in msg


def test_shared_root_under_wrong_layout(shared_data):
    with pytest.raises(InputError, match="not a Sintel"):
        find_sequences(shared_data / "middlebury", "sintel")
    with pytest.raises(InputError, match="not a Middlebury"):
        find_sequences(shared_data / "kitti2012", "middlebury")
    with pytest.raises(InputError, match="no such dataset folder"):
        find_sequences(shared_data / "does-not-exist", "kitti")
    with pytest.raises(InputError, match="unknown dataset layout"):
        find_sequences(shared_data, "hd1k")


# ------------------------------------------------------------------ layouts on generated folders

H, W = 48, 64


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (H // 4, W // 4, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(img, (W + 16, H + 16), interpolation=cv2.INTER_CUBIC), (3, 3), 0)


def _shifted_pair(dx: int, dy: int):
    """Two frames where frame 2 is frame 1 moved by (dx, dy): the flow 1 -> 2 is (dx, dy) everywhere."""
    big = _texture()
    f1 = big[8:8 + H, 8:8 + W]
    f2 = big[8 - dy:8 - dy + H, 8 - dx:8 - dx + W]
    return np.ascontiguousarray(f1), np.ascontiguousarray(f2)


def _const_flow(dx, dy):
    return np.broadcast_to(np.array([dx, dy], np.float32), (H, W, 2)).copy()


def _img(path: Path, img: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def test_sintel_gap_splits_sequence(tmp_path):
    t = tmp_path / "training"
    for n in (1, 2, 3, 5, 6):
        _img(t / "final" / "s" / f"frame_{n:04d}.png", np.zeros((H, W, 3), np.uint8))
    for n in (2, 3, 5):  # 3->4: frame 4 is missing, so that GT cannot be used
        (t / "flow" / "s").mkdir(parents=True, exist_ok=True)
        write_flo(t / "flow" / "s" / f"frame_{n:04d}.flo", _const_flow(1, 0))
    seqs = find_sequences(tmp_path, "sintel")
    assert [s.name for s in seqs] == ["sintel/final/s", "sintel/final/s@5"]
    assert [p.name for p in seqs[0].frame_paths] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    assert [p.index for p in seqs[0].pairs] == [1]
    assert [p.name for p in seqs[1].frame_paths] == ["frame_0005.png", "frame_0006.png"]
    assert [p.index for p in seqs[1].pairs] == [0]
    assert seqs[0].pairs[0].occ_path is None and seqs[0].pairs[0].invalid_path is None


def test_middlebury_many_frames(tmp_path):
    for n in range(7, 15):
        _img(tmp_path / "other-data" / "Seq" / f"frame{n:02d}.png", np.zeros((H, W, 3), np.uint8))
    (tmp_path / "other-gt-flow" / "Seq").mkdir(parents=True)
    write_flo(tmp_path / "other-gt-flow" / "Seq" / "flow10.flo", _const_flow(0, 0))
    (s,) = find_sequences(tmp_path, "middlebury")
    assert [p.name for p in s.frame_paths] == [f"frame{n:02d}.png" for n in range(7, 15)]
    assert [p.index for p in s.pairs] == [3] and s.frame_paths[3].name == "frame10.png"


def test_chairs_official_naming_and_duplicates(tmp_path):
    for sub in ("a", "b"):
        for name in ("00001_img1.ppm", "00001_img2.ppm"):
            _img(tmp_path / "data" / sub / name, np.zeros((H, W, 3), np.uint8))
        write_flo(tmp_path / "data" / sub / "00001_flow.flo", _const_flow(0, 0))
    _img(tmp_path / "data" / "a" / "00002_img1.ppm", np.zeros((H, W, 3), np.uint8))  # no partner: ignored
    seqs = find_sequences(tmp_path, "chairs")
    assert [s.name for s in seqs] == ["chairs/data/a/00001", "chairs/data/b/00001"]  # same id twice: paths
    assert [p.name for p in seqs[0].frame_paths] == ["00001_img1.ppm", "00001_img2.ppm"]


def test_synthetic_shift_dis_and_kitti_occ_noc(tmp_path):
    """A known integer shift through the whole runner: right orientation gives near-zero EPE.

    KITTI layout with both flow_occ and flow_noc: "all" uses flow_occ, "noc" uses flow_noc.
    """
    f1, f2 = _shifted_pair(3, -2)
    t = tmp_path / "training"
    _img(t / "image_2" / "000007_10.png", cv2.cvtColor(f1, cv2.COLOR_RGB2BGR))
    _img(t / "image_2" / "000007_11.png", cv2.cvtColor(f2, cv2.COLOR_RGB2BGR))
    occ = _const_flow(3, -2)
    noc = occ.copy()
    noc[:, :W // 2] = NAN
    (t / "flow_occ").mkdir()
    (t / "flow_noc").mkdir()
    write_kitti_png(t / "flow_occ" / "000007_10.png", occ)
    write_kitti_png(t / "flow_noc" / "000007_10.png", noc)
    (s,) = find_sequences(tmp_path, "kitti")
    assert s.pairs[0].flow_path.parent.name == "flow_occ" and s.pairs[0].noc_flow_path.parent.name == "flow_noc"
    rep = evaluate("dis", tmp_path, "kitti")
    (row,) = rep.rows
    assert row.metrics["all"]["count"] == H * W
    assert row.metrics["noc"]["count"] == H * (W - W // 2)
    assert row.metrics["all"]["epe"] < 0.5
    assert row.metrics["noc"]["epe"] < 0.5
    # the same frames scored against the negated or u/v-swapped GT are far off: orientation is checked
    for wrong in (-occ, occ[:, :, ::-1]):
        write_kitti_png(t / "flow_occ" / "000007_10.png", wrong, overwrite=True)
        assert evaluate("dis", tmp_path, "kitti").rows[0].metrics["all"]["epe"] > 3


# ------------------------------------------------------------------ classical baselines on shared GT


def test_dis_middlebury_ballpark(shared_data):
    rep = evaluate("dis", shared_data / "middlebury", "middlebury")
    assert rep.method == "dis" and rep.sequences == 4 and len(rep.rows) == 4
    s = rep.summary()
    assert set(rep.regions) == {"all"}  # no occlusion masks in Middlebury
    assert s["all"]["epe"] < 0.6, format_table(rep)  # OpenCV's DIS-medium figure: 0.27
    for row in rep.rows:
        assert row.metrics["all"]["epe"] < 1.0
        assert row.seconds > 0
    # unknown GT pixels (|u| > 1e9 in the .flo) are not counted
    gt = read_flow(shared_data / "middlebury" / "other-gt-flow" / "RubberWhale" / "flow10.flo")
    rw = next(r for r in rep.rows if r.sequence == "middlebury/RubberWhale")
    assert rw.metrics["all"]["count"] == int(np.isfinite(gt).all(axis=2).sum()) < gt.shape[0] * gt.shape[1]


def test_dis_kitti_fl_all_sanity(shared_data):
    rep = evaluate("dis", shared_data / "kitti2012", "kitti")
    (row,) = rep.rows
    assert list(row.metrics) == ["noc"]  # only flow_noc in the shared data: no "all" figure is claimed
    m = row.metrics["noc"]
    gt = read_flow(shared_data / "kitti2012" / "training" / "flow_noc" / "000045_10.png")
    valid = np.isfinite(gt).all(axis=2)
    assert m["count"] == int(valid.sum())
    assert 0.15 < m["count"] / valid.size < 0.3  # "22 % of pixels valid"
    # an outlier has EPE > 3, so Fl-all can't exceed the share of pixels with EPE >= 3
    assert 0 < m["fl_all"] <= 1 - m["px3"] + 1e-12
    assert m["epe"] < 2.0 and m["fl_all"] < 0.2, format_table(rep)


def test_dis_sintel_masks(shared_data):
    seqs = [s for s in find_sequences(shared_data / "sintel", "sintel") if s.name == "sintel/clean/alley_1"]
    rep = evaluate("dis", shared_data / "sintel", "sintel", sequences=seqs)
    (row,) = rep.rows
    tr = shared_data / "sintel" / "training"
    invalid = cv2.imread(str(tr / "invalid" / "alley_1" / "frame_0002.png"), cv2.IMREAD_GRAYSCALE) > 127
    occluded = cv2.imread(str(tr / "occlusions" / "alley_1" / "frame_0002.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert invalid.any() and occluded.any()
    assert row.metrics["all"]["count"] == invalid.size - invalid.sum()
    assert row.metrics["noc"]["count"] == (~invalid & ~occluded).sum()
    assert row.metrics["all"]["epe"] < 1.0 and row.metrics["noc"]["epe"] <= row.metrics["all"]["epe"]
    assert row.index == 1 and row.frame == "frame_0002.png"


def test_farneback_and_progress(shared_data):
    calls = []

    def progress(iterable, total=None, desc=None, unit=None):
        calls.append((total, desc, unit))
        yield from iterable

    rep = evaluate("farneback", shared_data / "middlebury", "middlebury", progress=progress)
    assert calls == [(4, "eval middlebury", "pair")]
    assert len(rep.rows) == 4 and rep.summary()["all"]["epe"] < 1.5
    with pytest.raises(InputError, match="unknown method"):
        evaluate("tvl1", shared_data / "middlebury", "middlebury")


# ------------------------------------------------------------------ MemFlow path (small random model)


@pytest.fixture(scope="module")
def tiny_model():
    """A random CPU_SMALL model. Its memory-readout gate (gamma) starts at 0 as in the official
    init, which would make the memory invisible; it is set to 1 so carrying memory matters.
    One torch thread: with a training run on the other core, 2 threads are ~50x slower."""
    from flowcli.model import CPU_SMALL, MemFlowNet
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MemFlowNet(CPU_SMALL).eval()
    with torch.no_grad():
        model.update_block.aggregator.gamma.fill_(1.0)
    yield model
    torch.set_num_threads(threads)


def _ambush(shared_data) -> EvalSequence:
    return next(s for s in find_sequences(shared_data / "sintel", "sintel") if s.name == "sintel/final/ambush_4")


def test_memflow_sequence(shared_data, tiny_model):
    seq = _ambush(shared_data)
    rep = evaluate(tiny_model, shared_data / "sintel", "sintel", iters=2, max_side=96, sequences=[seq, seq])
    assert rep.method == "memflow" and rep.iters == 2
    assert [(r.sequence, r.index) for r in rep.rows] == [(seq.name, 1), (seq.name, 3)] * 2
    for r in rep.rows:
        for region in ("all", "noc"):
            m = r.metrics[region]
            assert m["count"] > 0 and all(math.isfinite(m[k]) for k in ("epe", "px1", "px3", "px5", "fl_all"))
        assert r.seconds > 0
    # reset between sequences: the second run of the same sequence gives exactly the same numbers
    for a, b in zip(rep.rows[:2], rep.rows[2:]):
        assert a.metrics == b.metrics
    # memory is carried within a sequence: pair 6->7 seen after frames 3-6 differs from the bare pair.
    # (A random model predicts near-zero flow, so the difference is small, but it is exact arithmetic:
    # everything else about the two computations is identical.)
    p = seq.pairs[1]
    bare = EvalSequence(seq.name, seq.frame_paths[3:5], [EvalPair(0, p.flow_path, p.occ_path, p.invalid_path)])
    alone = evaluate(tiny_model, shared_data / "sintel", "sintel", iters=2, max_side=96, sequences=[bare])
    assert alone.rows[0].metrics["all"]["count"] == rep.rows[1].metrics["all"]["count"]
    assert alone.rows[0].metrics["all"]["epe_sum"] != rep.rows[1].metrics["all"]["epe_sum"]
    json.dumps(rep.to_dict(), allow_nan=False)


def test_frames_read_in_order(shared_data, tiny_model, monkeypatch):
    """MemFlow sees every frame from the scene start up to the last GT pair; DIS only the GT pairs' frames."""
    import flowcli.evaluate as ev
    read = []
    real = ev.read_image_rgb
    monkeypatch.setattr(ev, "read_image_rgb", lambda path: (read.append(Path(path).name), real(path))[1])
    seq = _ambush(shared_data)  # frames 3-8, GT 4->5 and 6->7
    evaluate(tiny_model, shared_data / "sintel", "sintel", iters=1, max_side=48, sequences=[seq])
    assert read == [f"frame_{i:04d}.png" for i in range(3, 8)]
    read.clear()
    evaluate("dis", shared_data / "sintel", "sintel", sequences=[seq])
    assert read == [f"frame_{i:04d}.png" for i in range(4, 8)]


def test_memflow_loaded_weights(shared_data, tiny_model):
    from flowcli.weights import LoadedWeights
    lw = LoadedWeights(tiny_model, "tiny-random", "", "", 1, None)
    seqs = find_sequences(shared_data / "middlebury", "middlebury")[:1]
    rep = evaluate(lw, shared_data / "middlebury", "middlebury", max_side=64, sequences=seqs, warm_start=True)
    assert rep.method == "tiny-random" and rep.iters == 1 and rep.warm_start
    assert len(rep.rows) == 1 and math.isfinite(rep.summary()["all"]["epe"])
    assert "tiny-random on middlebury" in format_table(rep)
    with pytest.raises(ValueError, match="iters"):
        evaluate(tiny_model, shared_data / "middlebury", "middlebury", sequences=seqs)


def test_speed_bands_average_only_over_pairs_with_such_pixels():
    slow = np.zeros((1, 2, 2), np.float32)
    slow[0, :, 0] = 1.0                                    # |gt| = 1 px, both pixels in s0-10
    pred = slow.copy()
    pred[0, :, 1] = [2.0, 4.0]                             # EPE 2 and 4
    rows = [_row("fast", [1.0]), PairRow("slow", 0, "f.png", 0.5, {"all": flow_metrics(pred, slow)})]
    s = EvalReport("m", "chairs", "/x", None, False, 2, rows).summary()["all"]
    assert s["s0_10"] == pytest.approx(3.0) and s["s0_10_count"] == 2   # the fast pair does not count as 0
    assert s["s40"] == pytest.approx(1.0) and s["s40_count"] == 1
    assert math.isnan(s["s10_40"]) and s["s10_40_count"] == 0


def test_cli_network_options_with_a_classical_method_are_usage_errors(tmp_path):
    """--method dis/farneback run at full size with their own settings: network options would be ignored."""
    from click.testing import CliRunner

    from flowcli.cli import cli
    for extra in (["--max-side", "16"], ["--no-refine"], ["--iters", "3"], ["--warm-start"],
                  ["--no-coarse-to-fine"]):
        r = CliRunner().invoke(cli, ["eval", str(tmp_path), "--layout", "sintel", "--method", "dis", *extra])
        assert r.exit_code == 2 and "only apply to --method memflow" in r.output, (extra, r.output)


def test_cli_eval_records_max_side_in_json_and_table(shared_data, one_thread):
    """--max-side changes the numbers (the network runs smaller), so a report must say it was given."""
    from click.testing import CliRunner

    from flowcli.cli import cli
    args = ["eval", str(shared_data / "middlebury"), "--layout", "middlebury", "--iters", "1", "--no-refine", "-q"]
    r = CliRunner().invoke(cli, args + ["--max-side", "64", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_side"] == 64
    r = CliRunner().invoke(cli, args + ["--max-side", "64"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].endswith(", max side 64"), r.stdout
    full = EvalReport("m", "middlebury", "/x", 1, False, 1)  # not given: null, and nothing in the header
    assert full.to_dict()["max_side"] is None and "max side" not in format_table(full)
