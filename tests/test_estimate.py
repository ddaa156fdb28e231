"""`flowcli estimate` end to end: conformance through the CLI, resume, outputs, errors, memory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.engine import FlowStream, StreamOptions
from flowcli.flowio import read_flow
from flowcli.model import CPU_SMALL, MemFlowNet
from flowcli.pipeline import EstimateJob, run_estimate
from flowcli.sources import open_source
from flowcli.weights import save_safetensors

UP_TOL = 1e-3
BIN = Path(sys.executable).parent / "flowcli"


def _run(args, **kw):
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kw)


def _conf_args(conformance_dir, out, *extra):
    return ["estimate", str(conformance_dir), "--weights", str(conformance_dir / "memflow_est_seed0.pth"),
            "--preset", "sintel", "--iters", "4", "--format", "flo", "-o", str(out), "--quiet", *extra]


def _flows(out: Path, n: int) -> np.ndarray:
    return np.stack([read_flow(out / f"{i:06d}.flo").transpose(2, 0, 1) for i in range(n)])


@pytest.fixture(scope="module")
def vectors(conformance_dir):
    return dict(np.load(conformance_dir / "est_vectors_seed0.npz"))


@pytest.mark.parametrize("ws", [0, 1])
def test_cli_reproduces_official_outputs(tmp_path, conformance_dir, vectors, ws):
    extra = ["--warm-start"] if ws else []
    res = _run(_conf_args(conformance_dir, tmp_path / "o", *extra))
    assert res.exit_code == 0, res.output
    assert np.abs(_flows(tmp_path / "o", 4) - vectors[f"ws{ws}_flow_up"]).max() <= UP_TOL
    record = __import__("json").loads((tmp_path / "o" / "flowcli.json").read_text())
    assert record["weights"]["sha256"].startswith("1ccc4bb00347")
    assert record["iters"] == 4 and record["warm_start"] == bool(ws)


def test_resume_after_partial_run_equals_full_run(tmp_path, conformance_dir, vectors):
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out, "--warm-start", "--end", "3")).exit_code == 0
    assert sorted(p.name for p in out.glob("*.flo")) == ["000000.flo", "000001.flo"]
    before = (out / "000000.flo").stat().st_mtime_ns
    res = _run(_conf_args(conformance_dir, out, "--warm-start", "--json"))
    assert res.exit_code == 0, res.output
    summary = __import__("json").loads(res.output)
    assert summary["skipped"] == 2 and summary["written"] == 2 and summary["resumed_from_state"]
    assert (out / "000000.flo").stat().st_mtime_ns == before  # not rewritten
    assert np.abs(_flows(out, 4) - vectors["ws1_flow_up"]).max() <= UP_TOL


def test_interrupted_run_resumes_exactly(tmp_path, conformance_dir, vectors):
    from flowcli.weights import load_weights
    loaded = load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel")
    job = EstimateJob(out_dir=tmp_path / "o", options=StreamOptions(iters=4, warm_start=True))
    info = {"sha256": loaded.sha256}

    def stop_after_two(i):
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), open_source(str(conformance_dir)) as src:
        run_estimate(loaded.model, job, src, weights_info=info, on_pair=stop_after_two)
    assert len(list((tmp_path / "o").glob("*.flo"))) == 2
    assert not list((tmp_path / "o").glob(".*.tmp*"))
    with open_source(str(conformance_dir)) as src:
        report = run_estimate(loaded.model, job, src, weights_info=info)
    assert report.resumed_from_state and report.skipped == 2 and report.recomputed == 0
    assert np.abs(_flows(tmp_path / "o", 4) - vectors["ws1_flow_up"]).max() <= UP_TOL


def test_resume_without_state_recomputes_earlier_pairs(tmp_path, conformance_dir, vectors):
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out, "--warm-start")).exit_code == 0
    for name in ("000002.flo", "000003.flo"):
        (out / name).unlink()
    res = _run(_conf_args(conformance_dir, out, "--warm-start", "--json"))
    summary = __import__("json").loads(res.output)
    assert summary["recomputed"] == 2 and summary["written"] == 2 and not summary["resumed_from_state"]
    assert np.abs(_flows(out, 4) - vectors["ws1_flow_up"]).max() <= UP_TOL


def test_rerun_with_other_settings_is_refused_unless_overwrite(tmp_path, conformance_dir):
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out)).exit_code == 0
    args = _conf_args(conformance_dir, out)
    args[args.index("--iters") + 1] = "3"
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "other settings" in res.output
    assert CliRunner().invoke(cli, args + ["--overwrite"]).exit_code == 0


def test_overwrite_with_a_shorter_run_removes_the_replaced_runs_other_outputs(tmp_path, conformance_dir, vectors):
    """--overwrite leaves the folder holding the new run only: yesterday's 000003.flo (other settings)
    must not sit next to today's --end 3 outputs. Files that are not outputs stay."""
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out, "--format", "png")).exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert len(list(out.glob("*.flo"))) == 4 and len(list((out / "color").glob("*.png"))) == 4
    res = _run(_conf_args(conformance_dir, out, "--warm-start", "--end", "3", "--overwrite", "--json"))
    summary = __import__("json").loads(res.output)
    assert sorted(p.name for p in out.glob("*.flo")) == ["000000.flo", "000001.flo"]
    assert not list((out / "color").glob("*.png"))  # not asked for this time: the earlier run's
    assert summary["removed"] == 6 and (out / "notes.txt").read_text() == "mine"
    assert np.abs(_flows(out, 2) - vectors["ws1_flow_up"][:2]).max() <= UP_TOL
    # the clean-up is done: a plain rerun resumes this run and extends it, removing nothing
    res = _run(_conf_args(conformance_dir, out, "--warm-start", "--json"))
    summary = __import__("json").loads(res.output)
    assert summary["removed"] == 0 and summary["written"] == 2 and summary["resumed_from_state"]


def test_interrupted_overwrite_keeps_the_old_outputs_and_its_resume_cleans_up(tmp_path, conformance_dir):
    from flowcli.weights import load_weights
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out)).exit_code == 0
    old = (out / "000003.flo").read_bytes()
    loaded = load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel")
    job = EstimateJob(out_dir=out, options=StreamOptions(iters=3), overwrite=True)
    info = {"sha256": loaded.sha256}

    def stop(i):
        if i == 0:
            raise KeyboardInterrupt

    old_1 = (out / "000001.flo").read_bytes()
    with pytest.raises(KeyboardInterrupt), open_source(str(conformance_dir), end=3) as src:
        run_estimate(loaded.model, job, src, weights_info=info, on_pair=stop)
    assert (out / "000003.flo").read_bytes() == old  # an interrupted run loses nothing
    job = EstimateJob(out_dir=out, options=StreamOptions(iters=3))  # resume, without --overwrite
    with open_source(str(conformance_dir), end=3) as src:
        report = run_estimate(loaded.model, job, src, weights_info=info)
    assert report.resumed_from_state and report.removed == 2
    assert sorted(p.name for p in out.glob("*.flo")) == ["000000.flo", "000001.flo"]
    # pair 1 existed from the replaced run (4 iterations): the resumed run rewrote it with its own
    fresh = EstimateJob(out_dir=tmp_path / "fresh", options=StreamOptions(iters=3))
    with open_source(str(conformance_dir), end=3) as src:
        run_estimate(loaded.model, fresh, src, weights_info=info)
    assert (out / "000001.flo").read_bytes() != old_1
    assert np.array_equal(read_flow(out / "000001.flo"), read_flow(tmp_path / "fresh" / "000001.flo"))


def test_overwrite_removes_only_what_the_replaced_run_wrote(tmp_path, conformance_dir):
    """Files of the replaced run's names only: a KITTI-named PNG the earlier (flo) run did not write
    stays, and a state from a flowcli that did not record its outputs gets no clean-up at all."""
    from flowcli.pipeline import STATE_FILE
    out = tmp_path / "o"
    assert _run(_conf_args(conformance_dir, out)).exit_code == 0
    (out / "000003.png").write_bytes(b"not flowcli's")   # e.g. `flowcli viz out/ -o out/`
    res = _run(_conf_args(conformance_dir, out, "--end", "3", "--overwrite", "--json"))
    assert __import__("json").loads(res.output)["removed"] == 2
    assert (out / "000003.png").read_bytes() == b"not flowcli's"
    # an old-style state (no record of its outputs): nothing is known to be that run's
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    assert _run(_conf_args(conformance_dir, out, "--overwrite")).exit_code == 0
    with safe_open(str(out / STATE_FILE), "pt") as fh:
        meta = {k: v for k, v in fh.metadata().items() if k != "outputs"}
    save_file(load_file(str(out / STATE_FILE)), str(out / STATE_FILE), metadata=meta)
    res = _run(_conf_args(conformance_dir, out, "--end", "3", "--overwrite", "--json"))
    assert __import__("json").loads(res.output)["removed"] == 0 and (out / "000003.flo").exists()


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    save_safetensors(path, MemFlowNet(CPU_SMALL), iters=2)
    return path


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "demo.mp4"
    from flowcli.synth import make_demo_video
    make_demo_video(path, num_frames=6, size=(96, 64))
    return path


def test_all_formats_and_video_from_a_real_video(tmp_path, small_weights, demo_video):
    import imageio.v3 as iio
    out = tmp_path / "o"
    res = _run(["estimate", str(demo_video), "-o", str(out), "--weights", str(small_weights), "--quiet",
                "--format", "flo", "--format", "kitti", "--format", "npy", "--format", "png", "--video"])
    assert res.exit_code == 0, res.output
    for i in range(5):
        flo = read_flow(out / f"{i:06d}.flo")
        assert flo.shape == (64, 96, 2) and np.isfinite(flo).all()
        assert np.allclose(read_flow(out / f"{i:06d}.npy"), flo)
        assert np.abs(read_flow(out / f"{i:06d}.png") - flo).max() <= 1 / 64
        assert iio.imread(out / "color" / f"{i:06d}.png").shape == (64, 96, 3)
    frames = list(iio.imiter(out / "flow.mp4", plugin="pyav"))
    assert len(frames) == 5 and frames[0].shape[:2] == (64, 96)


def test_stdin_raw_frames_in_a_real_subprocess(tmp_path, small_weights):
    frames = np.random.RandomState(0).randint(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    out = tmp_path / "o"
    proc = subprocess.run([str(BIN), "estimate", "-", "--size", "48x32", "-o", str(out), "--weights",
                           str(small_weights), "--json"], input=frames.tobytes(), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.flo")) == ["000000.flo", "000001.flo"]
    bad = subprocess.run([str(BIN), "estimate", "-", "--size", "50x32", "-o", str(tmp_path / "b"), "--weights",
                          str(small_weights)], input=frames.tobytes(), capture_output=True, timeout=300)
    assert bad.returncode == 1
    assert len(bad.stderr.decode().strip().splitlines()) == 1 and "divide" in bad.stderr.decode()


@pytest.mark.parametrize("args, needle", [
    (["estimate", "/no/such/video.mp4", "-o", "OUT"], "no such"),
    (["estimate", "-", "-o", "OUT"], "--size"),
])
def test_bad_input_one_line_error(tmp_path, args, needle, small_weights):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in args] + ["--weights", str(small_weights)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code in (1, 2) and needle in res.output
    assert "Traceback" not in res.output


def test_no_default_weights_message(tmp_path, monkeypatch, conformance_dir):
    monkeypatch.setenv("FLOWCLI_WEIGHTS_DIR", str(tmp_path / "empty"))
    res = CliRunner().invoke(cli, ["estimate", str(conformance_dir), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and "--weights" in res.output


def test_damaged_video_runs_with_a_warning_and_counts_it(tmp_path, small_weights):
    """Concealed decoder errors: the run completes (exit 0), warns on stderr, reports damaged_frames."""
    from flowcli.synth import make_demo_video
    from tests.test_sources import DAMAGE_AT, damage_packet
    from flowcli.sources import open_source
    clean = tmp_path / "clip.mp4"
    make_demo_video(clean, num_frames=24, size=(96, 64))
    for k, where in enumerate(DAMAGE_AT):  # a damage the decoder reports (not all are: see test_sources)
        bad = damage_packet(clean, tmp_path / f"bad{k}.mp4", where * 0.5)  # within --end 14
        with open_source(str(bad), end=14) as src:
            if sum(1 for _ in src) and src.damage.frames:
                break
    else:
        pytest.fail("no detectable damage")
    res = CliRunner().invoke(cli, ["estimate", str(bad), "--weights", str(small_weights), "-o", str(tmp_path / "o"),
                                   "--json", "--end", "14", "--quiet"])  # a warning about the data, even so
    assert res.exit_code == 0, res.output
    record = __import__("json").loads(res.stdout)
    assert record["damaged_frames"] >= 1
    assert "warning: " in res.stderr and "damaged data" in res.stderr
    res = CliRunner().invoke(cli, ["estimate", str(clean), "--weights", str(small_weights), "-o", str(tmp_path / "c"),
                                   "--json", "--end", "14"])
    assert __import__("json").loads(res.stdout)["damaged_frames"] == 0 and "warning" not in res.stderr


def test_not_a_video_is_an_error_and_leaves_no_outputs(tmp_path, small_weights):
    bad = tmp_path / "x.mp4"
    bad.write_text("not a video")
    res = CliRunner().invoke(cli, ["estimate", str(bad), "-o", str(tmp_path / "o"), "--weights", str(small_weights)])
    assert res.exit_code == 1 and "x.mp4" in res.output
    assert not list((tmp_path / "o").glob("*.flo")) if (tmp_path / "o").exists() else True


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_stays_flat_over_300_frames():
    torch.manual_seed(0)
    stream = FlowStream(MemFlowNet(CPU_SMALL), StreamOptions(iters=1))
    rng = np.random.RandomState(0)
    base = rng.randint(0, 255, (64, 80, 3), dtype=np.uint8)
    rss = []
    for i in range(300):
        stream.push(np.roll(base, i, axis=1))
        assert stream.memory.num_frames <= 1
        if i in (50, 299):
            rss.append(_rss_mb())
    assert rss[1] - rss[0] < 25, rss


def test_prefetch_keeps_order_bounds_lookahead_and_forwards_errors():
    from flowcli.pipeline import prefetch
    produced = []

    def gen():
        for i in range(10):
            produced.append(i)
            if i == 7:
                raise ValueError("decode error at frame 7")
            yield i

    got = []
    with pytest.raises(ValueError, match="frame 7"):
        for item in prefetch(gen(), depth=2):
            got.append(item)
            assert len(produced) - len(got) <= 3  # bounded look-ahead: memory does not grow
    assert got == list(range(7))


def test_ordered_writer_runs_in_order_and_raises():
    from flowcli.pipeline import OrderedWriter
    results = []
    w = OrderedWriter(results.append, depth=1)
    for i in range(5):
        w.submit(lambda i=i: i)
    w.close()
    assert results == [0, 1, 2, 3, 4]
    w = OrderedWriter(results.append)

    def boom():
        raise OSError(28, "No space left on device")

    w.submit(boom)
    with pytest.raises(OSError):
        w.close()


def test_rerun_of_finished_video_run_and_other_spelling_of_input(tmp_path, small_weights, demo_video, monkeypatch):
    import json
    out = tmp_path / "o"
    args = ["estimate", str(demo_video), "-o", str(out), "--weights", str(small_weights), "--quiet", "--json"]
    first = json.loads(_run(args + ["--video"]).output)
    assert first["written"] == 1 and first["skipped"] == 0  # --video alone: only flow.mp4
    again = _run(args + ["--video"])
    assert again.exit_code == 0, again.output  # finished: nothing to do, not an error
    assert _run(args + ["--format", "flo", "--video"]).exit_code == 0
    monkeypatch.chdir(demo_video.parent)  # same input, spelled relative: still resumes
    res = _run(["estimate", demo_video.name, "-o", str(out), "--weights", str(small_weights), "--quiet", "--json",
                "--format", "flo"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["skipped"] == summary["pairs"] == 5 and summary["seconds_per_pair"] is None
    assert oct((out / "000000.flo").stat().st_mode & 0o777) != "0o600"
    assert oct((out / ".flowcli-resume.safetensors").stat().st_mode & 0o777) != "0o600"


def test_preset_with_safetensors_weights_is_a_usage_error(tmp_path, small_weights, conformance_dir):
    res = CliRunner().invoke(cli, ["estimate", str(conformance_dir), "-o", str(tmp_path / "o"),
                                   "--weights", str(small_weights), "--preset", "sintel"])
    assert res.exit_code == 2 and "--preset" in res.output


def test_one_frame_video_leaves_no_empty_folder_and_debug_after_command(tmp_path, small_weights):
    from flowcli.cli import main
    one = tmp_path / "one"
    one.mkdir()
    import cv2
    cv2.imwrite(str(one / "f0.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(one / "f1.png"), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "o"
    code = main(["estimate", str(one), "-o", str(out), "--weights", str(small_weights), "--end", "1", "--quiet"])
    assert code == 1 and not out.exists()
    code = main(["estimate", str(one), "-o", str(out), "--weights", str(small_weights), "--quiet", "--debug"])
    assert code == 0 and (out / "000000.flo").exists()


def test_huge_stdin_frame_size_is_refused_before_reading(tmp_path, small_weights):
    """`--size 100000x100000` with a few bytes on stdin used to fail allocating a 30 GB frame buffer
    (internal error: MemoryError)."""
    import io

    from flowcli.errors import InputError
    from flowcli.sources import MAX_FRAME_PIXELS, open_source
    out = tmp_path / "o"
    res = CliRunner().invoke(cli, ["estimate", "-", "--size", "100000x100000", "-o", str(out), "--weights",
                                   str(small_weights)], input=b"\0" * 100)
    assert res.exit_code == 2 and "--size" in res.stderr and f"at most {MAX_FRAME_PIXELS}" in res.stderr
    assert "Traceback" not in res.output and not out.exists()
    with pytest.raises(InputError, match="pixels"):
        open_source("-", size=(100000, 100000), stdin=io.BytesIO(b"\0" * 100))
    with open_source("-", size=(16384, 16384), stdin=io.BytesIO(b"\0" * 100)) as src:  # the largest allowed
        with pytest.raises(InputError, match="partial frame"):
            list(src)


def test_preset_with_shipped_weights_or_an_unknown_preset_is_a_usage_error(tmp_path, demo_video, conformance_dir):
    """A shipped name carries its own settings like a .safetensors path (--preset was silently ignored);
    an unknown preset was a CheckpointError (exit 1) after the weights were found."""
    from flowcli.weights import default_name
    shipped = default_name("estimate")
    if shipped is None:
        pytest.skip("no shipped weights in this install")
    pth = str(conformance_dir / "memflow_est_seed0.pth")
    out = str(tmp_path / "o")
    for args, needle in (
            (["estimate", str(demo_video), "-o", out, "--weights", shipped, "--preset", "sintel"], shipped),
            (["estimate", str(demo_video), "-o", out, "--preset", "sintel"], "--weights PATH.pth"),
            (["eval", str(tmp_path), "--layout", "sintel", "--weights", shipped, "--preset", "sintel"], shipped),
            (["predict-next", str(demo_video), "-o", out, "--weights", pth, "--estimate-preset", "sintel"],
             "--estimate-weights PATH.pth"),
            (["estimate", str(demo_video), "-o", out, "--weights", pth, "--preset", "bogus"],
             "choose from things, sintel, kitti, spring"),
            (["predict-next", str(demo_video), "-o", out, "--weights", pth, "--preset", "kitti"],
             "choose from things, sintel"),
            (["batch", str(demo_video), "-o", out, "--weights", pth, "--preset", "bogus"], "choose from things")):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert "-preset" in res.stderr and needle in res.stderr, res.stderr
        assert not (tmp_path / "o").exists()


def _sha_cache(tmp_path, monkeypatch, conformance_dir):
    """FLOWCLI_CACHE in tmp_path holding MemFlowNet_things.pth (a copy of the conformance checkpoint)."""
    import shutil
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("FLOWCLI_CACHE", str(cache))
    shutil.copy(conformance_dir / "memflow_est_seed0.pth", cache / "MemFlowNet_things.pth")
    return cache


def test_sha256_record_applies_to_the_cache_folders_files_only(tmp_path, monkeypatch, conformance_dir):
    """The record is keyed by file name: it used to refuse any MemFlowNet_things.pth anywhere (a user's own
    copy, a fine-tune), telling the user to delete it."""
    import json
    import shutil

    from flowcli.errors import CheckpointError
    from flowcli.weights import load_weights
    cache = _sha_cache(tmp_path, monkeypatch, conformance_dir)
    (cache / "sha256.json").write_text(json.dumps({"MemFlowNet_things.pth": "0" * 64}))
    mine = tmp_path / "mine" / "MemFlowNet_things.pth"
    mine.parent.mkdir()
    shutil.copy(cache / "MemFlowNet_things.pth", mine)
    assert load_weights(str(mine), preset="sintel").path == str(mine)
    for weights in ("MemFlowNet_things", str(cache / "MemFlowNet_things.pth")):  # the cache's own file is checked
        with pytest.raises(CheckpointError, match="differs from the one recorded"):
            load_weights(weights)
    res = CliRunner().invoke(cli, ["estimate", str(conformance_dir), "-o", str(tmp_path / "o"), "--weights",
                                   str(mine), "--preset", "sintel", "--iters", "1", "--end", "2", "--quiet"])
    assert res.exit_code == 0, res.output


def test_damaged_sha256_record_is_a_one_line_error_and_download_writes_it_whole(tmp_path, monkeypatch,
                                                                                conformance_dir):
    """A damaged record gave `internal error: JSONDecodeError` for every .pth (the record was written in
    place, non-atomically). Now: files outside the cache are not concerned, the cache's files get a
    one-line CheckpointError naming the record, and a download refuses to run until it is deleted."""
    import json

    from flowcli import weights as W
    from flowcli.errors import CheckpointError
    cache = _sha_cache(tmp_path, monkeypatch, conformance_dir)
    record = cache / "sha256.json"
    record.write_text('{"MemFlowNet_th')
    assert W.load_weights(str(conformance_dir / "memflow_est_seed0.pth"), preset="sintel").preset == "sintel"
    res = CliRunner().invoke(cli, ["estimate", str(conformance_dir), "-o", str(tmp_path / "o"), "--weights",
                                   "MemFlowNet_things", "--quiet"])
    assert res.exit_code == 1 and "internal error" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(record) in lines[0] and "MemFlowNet_things.pth" in lines[0]
    assert "delete the record" in lines[0]
    # downloads: from a local folder standing in for the release page (file:// URL, no network)
    release = tmp_path / "release"
    release.mkdir()
    (release / "MemFlowNet_sintel.pth").write_bytes((conformance_dir / "memflow_est_seed0.pth").read_bytes())
    monkeypatch.setattr(W, "RELEASE_URL", release.as_uri() + "/{file}")
    with pytest.raises(CheckpointError, match="sha256.json"):
        W.download_official("MemFlowNet_sintel")
    assert not (cache / "MemFlowNet_sintel.pth").exists()
    record.write_text(json.dumps([1, 2]))  # valid JSON, not a record
    with pytest.raises(CheckpointError, match="not an object"):
        W.load_weights("MemFlowNet_things")
    record.unlink()
    path = W.download_official("MemFlowNet_sintel")
    digest = W.sha256_file(path)
    assert json.loads(record.read_text()) == {"MemFlowNet_sintel.pth": digest}
    assert sorted(p.name for p in cache.iterdir()) == ["MemFlowNet_sintel.pth", "MemFlowNet_things.pth",
                                                       "sha256.json"]  # no temp files left
    assert oct(record.stat().st_mode & 0o777) != "0o600"
    assert W.load_weights("MemFlowNet_sintel").preset == "sintel"


def test_download_refuses_a_short_transfer_and_a_mismatch_and_keeps_the_cached_file(tmp_path, monkeypatch,
                                                                                   conformance_dir):
    """A transfer that stopped early was cached and its digest recorded as the official one (after which
    the real file was refused), and a re-download that did not match the record replaced the good cached
    file before being refused. Served here by a real local HTTP server."""
    import http.server
    import json
    import threading

    from flowcli import weights as W
    from flowcli.errors import CheckpointError
    good = (conformance_dir / "memflow_est_seed0.pth").read_bytes()
    served = {"body": good[:1000], "length": len(good)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(served["length"]))
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cache = tmp_path / "cache"
        monkeypatch.setenv("FLOWCLI_CACHE", str(cache))
        monkeypatch.setattr(W, "RELEASE_URL", f"http://127.0.0.1:{server.server_address[1]}/{{file}}")
        with pytest.raises(CheckpointError, match="stopped at 1,000 of"):
            W.download_official("MemFlowNet_things")
        assert not cache.exists() or sorted(p.name for p in cache.iterdir()) == []
        served["body"] = good
        path = W.download_official("MemFlowNet_things")
        assert path.read_bytes() == good
        assert json.loads((cache / "sha256.json").read_text()) == {path.name: W.sha256_file(path)}
        served["body"] = served["length"] * b"x"  # complete, but not the file first recorded
        with pytest.raises(CheckpointError, match="differs from the one recorded.*nothing was replaced"):
            W.download_official("MemFlowNet_things")
        assert path.read_bytes() == good
        assert sorted(p.name for p in cache.iterdir()) == ["MemFlowNet_things.pth", "sha256.json"]
        assert W.load_weights("MemFlowNet_things").preset == "things"
    finally:
        server.shutdown()


def test_damaged_flowcli_weights_metadata_and_upper_case_suffix(tmp_path, conformance_dir):
    """A flowcli .safetensors with an unparsable config or iters gave 'internal error: JSONDecodeError /
    ValueError'; a .SAFETENSORS file was read as a .pth and refused as 'could run code'."""
    from safetensors.torch import load_file, save_file

    from flowcli.weights import default_name, load_weights, weights_dir
    shipped = weights_dir() / f"{default_name('estimate')}.safetensors"
    tensors, meta = load_file(str(shipped)), load_weights(None).model.cfg.to_dict()
    import json
    for bad_meta, needle in (({"flowcli_config": "{x", "iters": "8"}, "Expecting property name"),
                             ({"flowcli_config": "[1]", "iters": "8"}, "not a JSON object"),
                             ({"flowcli_config": json.dumps(meta), "iters": "eight"}, "eight"),
                             ({"flowcli_config": json.dumps({**meta, "color": 1}), "iters": "8"}, "unknown")):
        path = tmp_path / "bad.safetensors"
        save_file(tensors, str(path), metadata=bad_meta)
        res = CliRunner().invoke(cli, ["estimate", str(conformance_dir), "-o", str(tmp_path / "o"), "--weights",
                                       str(path), "--end", "2", "--quiet"])
        assert res.exit_code == 1 and "internal error" not in res.stderr, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a valid flowcli weights file" in lines[0] and needle in lines[0], lines
    upper = tmp_path / "UP.SAFETENSORS"
    upper.write_bytes(shipped.read_bytes())
    assert load_weights(str(upper)).model.cfg == load_weights(None).model.cfg
    res = CliRunner().invoke(cli, ["weights", "download", "nope"])
    assert res.exit_code == 2 and "MemFlowNet_sintel" in res.output
    from flowcli.cmd_weights import OFFICIAL_CHOICES
    from flowcli.weights import OFFICIAL_NAMES
    assert list(OFFICIAL_CHOICES) == list(OFFICIAL_NAMES)
