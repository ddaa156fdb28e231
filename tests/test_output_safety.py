"""Output folders are never confused with inputs or with files no run of these settings wrote
(estimate and predict-next): nothing is lost, nothing foreign is reported as done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli.cli import cli
from flowcli.flowio import read_flow, write_flow
from flowcli.model import CPU_SMALL, MemFlowNet
from flowcli.train_predict import CPU_SMALL_P
from flowcli.weights import save_safetensors

BIN = Path(sys.executable).parent / "flowcli"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random small estimation (est.safetensors) and prediction (p.safetensors) models."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("w")
    save_safetensors(d / "est.safetensors", MemFlowNet(CPU_SMALL), iters=2)
    save_safetensors(d / "p.safetensors", MemFlowNet(CPU_SMALL_P), iters=1)
    return d


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """4 frames named like KITTI outputs (000000.png ...): a folder where the two could be confused."""
    d = tmp_path_factory.mktemp("frames")
    base = np.random.RandomState(0).randint(0, 255, (72, 104, 3)).astype(np.uint8)
    for i in range(4):
        cv2.imwrite(str(d / f"{i:06d}.png"), base[i:i + 64, 2 * i:2 * i + 96])
    return d


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _est(frames: Path, out: Path, weights: Path, *extra: str):
    return CliRunner().invoke(cli, ["estimate", str(frames), "-o", str(out), "--weights",
                                    str(weights / "est.safetensors"), "--quiet", *extra])


def _pred(frames: Path, out: Path, weights: Path, *extra: str):
    return CliRunner().invoke(cli, ["predict-next", str(frames), "-o", str(out), "--weights",
                                    str(weights / "p.safetensors"), "--quiet", *extra])


def test_the_input_folder_is_never_the_output_folder(frames, weights):
    before = _files(frames)
    same = str(frames.parent / ".." / frames.parent.name / frames.name)  # spelled another way
    for extra in ([], ["--overwrite"], ["--format", "kitti", "--overwrite"]):
        res = _est(frames, Path(same), weights, *extra)
        assert res.exit_code == 1 and "is the input folder" in res.output, res.output
        res = _pred(frames, Path(same), weights, *extra)
        assert res.exit_code == 1 and "is the input folder" in res.output, res.output
    assert _files(frames) == before


def test_predict_next_never_writes_into_its_prior_flows_folder(tmp_path, frames, weights):
    prior = tmp_path / "est"
    assert _est(frames, prior, weights).exit_code == 0
    before = _files(prior)
    for extra in ([], ["--overwrite"]):
        res = _pred(frames, prior, weights, "--prior-flows", str(prior), *extra)
        assert res.exit_code == 1 and "is the --prior-flows folder" in res.output, res.output
    assert _files(prior) == before


def test_outputs_without_a_record_of_the_run_that_wrote_them_are_refused(tmp_path, frames, weights):
    """A .flo put there by something else is neither skipped as done nor replaced without --overwrite."""
    out = tmp_path / "o"
    out.mkdir()
    foreign = np.full((64, 96, 2), 7.0, np.float32)
    write_flow(out / "000001.flo", foreign)
    res = _est(frames, out, weights)
    assert res.exit_code == 1 and "000001.flo" in res.output and "no record" in res.output, res.output
    assert np.array_equal(read_flow(out / "000001.flo"), foreign)
    res = _pred(frames, out, weights)
    assert res.exit_code == 1 and "no record" in res.output, res.output
    res = _est(frames, out, weights, "--overwrite", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["written"] == 3, res.output
    assert not np.array_equal(read_flow(out / "000001.flo"), foreign)

    # the record deleted, then a rerun with other settings: refused, not "3 skipped"
    (out / ".flowcli-resume.safetensors").unlink()
    res = _est(frames, out, weights, "--iters", "1")
    assert res.exit_code == 1 and "no record" in res.output, res.output


def test_colour_scale_is_part_of_the_settings_and_the_record(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _est(frames, out, weights, "--format", "png", "--max-flow", "5").exit_code == 0
    assert json.loads((out / "flowcli.json").read_text())["max_flow"] == 5
    res = _est(frames, out, weights, "--format", "png", "--max-flow", "10")
    assert res.exit_code == 1 and "other settings" in res.output, res.output
    res = _pred(frames, tmp_path / "p", weights, "--max-flow", "5")
    assert res.exit_code == 0, res.output
    res = _pred(frames, tmp_path / "p", weights, "--max-flow", "10")
    assert res.exit_code == 1 and "other settings" in res.output, res.output


def test_a_rerun_that_changes_nothing_keeps_the_record(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _est(frames, out, weights).exit_code == 0
    record = (out / "flowcli.json").read_bytes()
    res = _est(frames, out, weights, "--json")
    assert res.exit_code == 0 and json.loads(res.output)["written"] == 0
    assert (out / "flowcli.json").read_bytes() == record


def test_predict_next_resumes_with_the_input_spelled_another_way(tmp_path, frames, weights, monkeypatch):
    out = tmp_path / "o"
    assert _pred(frames, out, weights).exit_code == 0
    monkeypatch.chdir(frames.parent)
    res = _pred(Path(frames.name), out, weights, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["written"] == 0


def test_weights_of_the_other_kind_are_a_one_line_error(tmp_path, frames, weights):
    for res in (CliRunner().invoke(cli, ["estimate", str(frames), "-o", str(tmp_path / "a"), "--weights",
                                         str(weights / "p.safetensors")]),
                _pred(frames, tmp_path / "b", weights, "--estimate-weights", str(weights / "p.safetensors")),
                CliRunner().invoke(cli, ["predict-next", str(frames), "-o", str(tmp_path / "c"), "--weights",
                                         str(weights / "est.safetensors")])):
        assert res.exit_code == 1, res.output
        assert len(res.output.strip().splitlines()) == 1 and "internal error" not in res.output, res.output
    assert "is a MemFlow-P prediction model" in _est(frames, tmp_path / "d", weights, "--weights",
                                                     str(weights / "p.safetensors")).output
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_empty_frame_range_is_a_usage_error(tmp_path, frames, weights):
    for run in (_est, _pred):
        res = run(frames, tmp_path / "o", weights, "--start", "2", "--end", "2")
        assert res.exit_code == 2 and "--end 2 must be greater than --start 2" in res.output, res.output


def _decoded(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    return np.stack(list(iio.imiter(path, plugin="pyav")))


def test_resumed_kitti_video_equals_an_uninterrupted_run(tmp_path, frames, weights):
    """KITTI PNGs hold flow to 1/64 px: a resumed run's video frames are not drawn from them."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert _est(frames, full, weights, "--format", "kitti", "--video").exit_code == 0
    assert _est(frames, resumed, weights, "--format", "kitti", "--end", "3").exit_code == 0  # pairs 0, 1
    res = _est(frames, resumed, weights, "--format", "kitti", "--video", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["written"] == 2, res.output  # 000002.png, flow.mp4
    assert np.array_equal(_decoded(resumed / "flow.mp4"), _decoded(full / "flow.mp4"))


def test_a_finished_video_is_not_extended_by_a_longer_rerun(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _est(frames, out, weights, "--video", "--end", "3").exit_code == 0
    res = _est(frames, out, weights, "--video")
    assert res.exit_code == 1 and "other settings" in res.output, res.output
    assert len(_decoded(out / "flow.mp4")) == 2


def test_sigterm_cleans_up_like_ctrl_c_and_the_rerun_resumes(tmp_path, weights):
    """A real process stopped by SIGTERM mid-run: exit 143, one line, no temp files; a rerun finishes."""
    from flowcli.synth import make_demo_video
    video = make_demo_video(tmp_path / "clip.mp4", num_frames=40, size=(320, 256)) and tmp_path / "clip.mp4"
    out = tmp_path / "o"
    args = [str(BIN), "estimate", str(video), "-o", str(out), "--weights", str(weights / "est.safetensors"),
            "--video", "--format", "flo", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "000002.flo").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == ["flowcli: error: stopped by SIGTERM"]
    leftovers = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert leftovers == [] and not (out / "flow.mp4").exists()
    done = subprocess.run(args[:-1] + ["--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_from_state"] and summary["pairs"] == 39 and summary["skipped"] >= 2
    assert len(_decoded(out / "flow.mp4")) == 39
    assert os.path.getsize(out / "000038.flo") > 0


def test_prior_flows_of_another_step_are_refused(tmp_path, frames, weights):
    """000000.flo of an `estimate --step 1` run is the flow 0 -> 1, not the 0 -> 2 a --step 2 run needs."""
    prior = tmp_path / "est"
    assert _est(frames, prior, weights).exit_code == 0
    res = _pred(frames, tmp_path / "p", weights, "--prior-flows", str(prior), "--step", "2")
    assert res.exit_code == 1 and "--step" in res.output and "1 frame(s) apart" in res.output, res.output
    assert _pred(frames, tmp_path / "q", weights, "--prior-flows", str(prior)).exit_code == 0


def test_a_rerun_removes_temp_files_a_killed_run_left(tmp_path, frames, weights):
    """SIGKILL cannot be cleaned up after; the next run in the folder (this job's, checked) does it."""
    out = tmp_path / "o"
    assert _est(frames, out, weights, "--format", "png", "--video").exit_code == 0
    stale = [out / ".flow.mp4.ab12cd.tmp.mp4", out / "color" / ".000002.png.q1w2.tmp.png",
             out / "..flowcli-resume.safetensors.zz.tmp.safetensors"]  # atomic_path: "." + name
    other = [out / ".notes.txt.ab.tmp.txt", out / "mine.tmp.mp4", out / ".000001.png.x9y8.tmp.png"]  # not its
    for p in stale + other:
        p.write_bytes(b"partial")
    assert _est(frames, out, weights, "--format", "png", "--video").exit_code == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in other)


def test_json_summary_to_a_closed_stdout_is_an_error(tmp_path, frames, weights):
    """`flowcli ... --json >&-`: the outputs are written, but the summary a script asked for is not: exit 1."""
    proc = subprocess.run([str(BIN), "estimate", str(frames), "-o", str(tmp_path / "o"), "--weights",
                           str(weights / "est.safetensors"), "--json", "--threads", "1"],
                          stderr=subprocess.PIPE, text=True, timeout=300, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1 and "stdout is closed" in proc.stderr, proc.stderr
    assert (tmp_path / "o" / "000002.flo").exists()


def test_the_input_is_never_a_subfolder_the_job_writes(tmp_path, frames, weights):
    """OUT/frames (predict-next --frames), OUT/color (png), OUT/estimate (--with-estimate) as the input:
    refused, or the job would read its own outputs as frames (or replace the input's)."""
    import shutil
    out = tmp_path / "o"
    for sub, run, extra in (("frames", _pred, ["--frames"]), ("color", _est, ["--format", "png"]),
                            ("estimate", _pred, ["--with-estimate"])):
        inside = out / sub
        shutil.copytree(frames, inside, dirs_exist_ok=True)
        before = _files(inside)
        for more in ([], ["--overwrite"]):
            res = run(inside, out, weights, *extra, *more)
            assert res.exit_code == 1 and "is the input folder" in res.output, res.output
        assert _files(inside) == before


def test_overwrite_clean_up_never_removes_the_prior_flows_it_reads(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _pred(frames, out, weights, "--with-estimate").exit_code == 0
    estimated = _files(out / "estimate")
    res = _pred(frames, out, weights, "--prior-flows", str(out / "estimate"), "--overwrite", "--json")
    assert res.exit_code == 0, res.output
    assert _files(out / "estimate") == estimated


def test_a_format_the_recorded_run_did_not_write_must_not_be_there_already(tmp_path, frames, weights):
    """The state vouches for the names it records: 000000.png written by something else (here viz) is
    not taken as this job's KITTI output when --format kitti is added."""
    out = tmp_path / "o"
    assert _est(frames, out, weights).exit_code == 0
    assert CliRunner().invoke(cli, ["viz", str(out), "-o", str(out), "--quiet"]).exit_code == 0  # 000000.png ...
    res = _est(frames, out, weights, "--format", "flo", "--format", "kitti")
    assert res.exit_code == 1 and "000000.png" in res.output and "no record" in res.output, res.output
    assert _est(frames, out, weights, "--format", "flo", "--format", "npy").exit_code == 0  # a new format is fine
    assert (out / "000002.npy").exists()


def test_a_run_from_stdin_is_not_resumed_from_another_stream(tmp_path, weights):
    out = tmp_path / "o"
    a, b = (np.random.RandomState(s).randint(0, 255, (4, 32, 48, 3), dtype=np.uint8) for s in (1, 2))
    args = [str(BIN), "estimate", "-", "--size", "48x32", "-o", str(out), "--weights",
            str(weights / "est.safetensors"), "--threads", "1", "--quiet"]
    assert subprocess.run(args, input=a.tobytes(), capture_output=True, timeout=300).returncode == 0
    kept = _files(out)
    again = subprocess.run(args, input=b.tobytes(), capture_output=True, timeout=300)
    assert again.returncode == 1 and b"stdin cannot be resumed" in again.stderr, again.stderr
    assert _files(out) == kept
    assert subprocess.run(args + ["--overwrite"], input=b.tobytes(), capture_output=True, timeout=300).returncode == 0


def test_prior_flows_from_with_estimate_of_another_step_are_refused(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _pred(frames, out, weights, "--with-estimate").exit_code == 0
    res = _pred(frames, tmp_path / "p", weights, "--prior-flows", str(out / "estimate"), "--step", "2")
    assert res.exit_code == 1 and "1 frame(s) apart" in res.output, res.output


def test_rerun_of_a_finished_predict_next_video_is_a_no_op(tmp_path, frames, weights):
    out = tmp_path / "o"
    assert _pred(frames, out, weights, "--video").exit_code == 0
    video = (out / "flow.mp4").read_bytes()
    res = _pred(frames, out, weights, "--video", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["written"] == 0, res.output
    assert (out / "flow.mp4").read_bytes() == video


def test_a_failed_predict_next_leaves_no_empty_folders(tmp_path, weights):
    """A video's frame count shows only while decoding: the job has made OUT (and OUT/color) by then."""
    from flowcli.synth import make_demo_video
    make_demo_video(tmp_path / "v.mp4", num_frames=3, size=(96, 64))
    out = tmp_path / "o"
    res = _pred(tmp_path / "v.mp4", out, weights, "--end", "1", "--format", "png", "--frames")  # one frame
    assert res.exit_code == 1 and "at least 2 frames" in res.output, res.output
    assert not out.exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 96 KiB tmpfs (needs mount rights; skipped without them)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root) for a real disk-full")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_while_saving_the_resume_state_is_a_disk_full_error(tiny_disk, frames, weights):
    """The state file is the one write safetensors does (its errors are not OSError): ENOSPC there is
    reported as disk full, in one line, like any other write."""
    res = _est(frames, tiny_disk / "o", weights, "--format", "npy")
    assert res.exit_code == 1, res.output
    assert "No space left on device" in res.output and "internal error" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_folder_another_run_is_writing_is_refused(frames, weights, tmp_path):
    """Two runs writing one folder at once both exited 0 with their outputs, state and flowcli.json mixed,
    and an --overwrite run removed the files of a run still writing. The folder is now locked (flock on
    the folder itself, dropped by the kernel when a run dies); the lock is held here as another run would."""
    from flowcli.pipeline import folder_lock
    out = tmp_path / "out"
    assert _est(frames, out, weights).exit_code == 0
    before = _files(out)
    with folder_lock(out):
        for res in (_est(frames, out, weights, "--overwrite", "--end", "2"),
                    _est(frames, out, weights, "--iters", "1"),
                    _pred(frames, out, weights, "--overwrite")):
            assert res.exit_code == 1 and "another flowcli run is writing into this folder" in res.stderr, res.stderr
            assert len(res.stderr.strip().splitlines()) == 1
            assert _files(out) == before  # nothing removed, nothing added
    assert _est(frames, out, weights, "--overwrite", "--end", "2").exit_code == 0  # free again
