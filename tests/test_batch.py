"""`flowcli batch`: many real (tiny) videos, ledger, resume, shards, workers, Ray, signals, disk full.

Everything runs for real on mp4 files from make_demo_video (64x48, 4 frames)
with a small random model saved as safetensors (--iters 1, --threads 1).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowcli import batch as B
from flowcli.cli import cli
from flowcli.flowio import read_flow
from flowcli.model import CPU_SMALL, MemFlowNet
from flowcli.synth.demo_clip import make_demo_video
from flowcli.weights import save_safetensors

REPO = Path(__file__).resolve().parents[1]
TEMP_RE = re.compile(r"^\..*\.tmp")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_assets")
    for i, name in enumerate(["a", "b", "c"]):
        make_demo_video(root / "vids" / f"{name}.mp4", 4, size=(64, 48), seed=i)
    (root / "corrupt.mp4").write_bytes(b"this is not a video\n" * 20)
    torch.manual_seed(0)
    save_safetensors(root / "small.safetensors", MemFlowNet(CPU_SMALL), iters=1)
    return root


def _videos(assets, tmp_path, corrupt=True) -> Path:
    """A fresh copy of the three videos (+ a corrupt one) that a test may change."""
    vids = tmp_path / "vids"
    shutil.copytree(assets / "vids", vids)
    if corrupt:
        shutil.copy(assets / "corrupt.mp4", vids / "corrupt.mp4")
    return vids


def _args(assets, *args):
    return ["batch", *map(str, args), "--weights", str(assets / "small.safetensors"), "--iters", "1",
            "--threads", "1", "--quiet"]


def _run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _ledger(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line must be complete JSON


def _no_temp_files(root: Path) -> None:
    temps = [p for p in root.rglob("*") if TEMP_RE.match(p.name)]
    assert not temps, temps


def _flows(folder: Path) -> list[np.ndarray]:
    return [read_flow(p) for p in sorted(folder.glob("*.flo"))]


def _consistent(out: Path) -> list[dict]:
    """Ledger lines are complete; every done video has its report; nothing partial on disk."""
    records = []
    for ledger in out.glob("ledger*.jsonl"):
        records += _ledger(ledger)
    for r in records:
        assert set(r) >= {"video", "output", "status", "pairs", "seconds", "error", "time"}
        if r["status"] == "done":
            assert (out / r["output"] / "flowcli.json").is_file()
            assert len(list((out / r["output"]).glob("*.flo"))) == r["pairs"]
        else:
            assert r["status"] == "failed" and r["error"]
    _no_temp_files(out)
    return records


# ----------------------------------------------------------------------------------------------- core
def test_batch_done_failed_rerun_and_retry(assets, tmp_path):
    vids, out = _videos(assets, tmp_path), tmp_path / "out"
    res = _run(_args(assets, vids, "-o", out))
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines()[-1].startswith("flowcli: error: 1 of 4 videos failed")
    recs = _consistent(out)
    assert sorted((r["output"], r["status"]) for r in recs) == [
        ("a", "done"), ("b", "done"), ("c", "done"), ("corrupt", "failed")]
    bad = next(r for r in recs if r["status"] == "failed")
    assert "not a readable video" in bad["error"] and bad["video"] == str(vids / "corrupt.mp4")
    assert not (out / "corrupt").exists()  # a failed video leaves no folder behind
    good = next(r for r in recs if r["output"] == "a")
    assert good["pairs"] == 3 and good["seconds"] > 0 and good["error"] is None
    report = json.loads((out / "a" / "flowcli.json").read_text())
    assert report["batch"]["video"] == str(vids / "a.mp4") and report["iters"] == 1

    # rerun: done videos are skipped, the failed one too (without --retry-failed); still exit 1
    mtime = (out / "a" / "000000.flo").stat().st_mtime_ns
    res = _run(_args(assets, vids, "-o", out, "--json"))
    assert res.exit_code == 1
    summary = json.loads(res.output.splitlines()[0])
    assert (summary["skipped"], summary["skipped_failed"], summary["ran"]) == (3, 1, 0)
    assert summary["failures"][0]["earlier"] is True
    assert len(_ledger(out / "ledger.jsonl")) == 4
    assert (out / "a" / "000000.flo").stat().st_mtime_ns == mtime

    # --dry-run lists, runs nothing
    res = _run(_args(assets, vids, "-o", out, "--dry-run", "--retry-failed", "--json"))
    assert res.exit_code == 0
    actions = {r["output"]: r["action"] for r in json.loads(res.output)["videos"]}
    assert actions == {"a": "skip-done", "b": "skip-done", "c": "skip-done", "corrupt": "retry"}

    # --retry-failed after the file was fixed
    make_demo_video(vids / "corrupt.mp4", 4, size=(64, 48), seed=7)
    res = _run(_args(assets, vids, "-o", out, "--retry-failed", "--json"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["done"], summary["failed"], summary["skipped"], summary["ok"]) == (1, 0, 3, True)
    assert summary["frames"] == 4 and summary["pairs"] == 3
    recs = _consistent(out)
    assert len(recs) == 5 and recs[-1]["output"] == "corrupt" and recs[-1]["status"] == "done"

    # --status summarises the ledger
    res = _run(["batch", "--status", "-o", str(out), str(vids), "--json"])
    status = json.loads(res.output)
    assert (status["done"], status["failed"], status["pending"]) == (4, 0, [])


def test_image_sequences_and_too_small_inputs(assets, tmp_path):
    import cv2
    import imageio.v3 as iio

    from flowcli.synth.clips import generate_clip
    from flowcli.synth.demo_clip import demo_params
    frames = generate_clip(0, demo_params(4, (64, 48))).frames
    seqs = tmp_path / "seqs"
    for i, f in enumerate(frames):
        (seqs / "walk").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(seqs / "walk" / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (seqs / "single").mkdir()
    cv2.imwrite(str(seqs / "single" / "000.png"), frames[0])
    iio.imwrite(seqs / "one_frame.mp4", np.stack(frames[:1]), plugin="pyav", codec="mpeg4", fps=10)
    out = tmp_path / "out"
    res = _run(_args(assets, seqs, "-o", out, "--json"))
    assert res.exit_code == 1
    recs = {r["output"]: r for r in _consistent(out)}
    assert recs["walk"]["status"] == "done" and recs["walk"]["pairs"] == 3
    assert "single" not in recs  # one image is not a sequence (no flow): not an input
    assert "at least 2 frames" in recs["one_frame"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["ledger.jsonl", "walk"]  # no empty folders left
    res = _run(_args(assets, seqs / "single", "-o", out))
    assert res.exit_code == 1 and "folders of 2+ images" in res.output


def test_stray_image_does_not_hide_videos_below(assets, tmp_path):
    """A folder is an image sequence only with 2+ images, and its subfolders are still searched."""
    import cv2
    ds = tmp_path / "ds"
    shutil.copytree(assets / "vids", ds / "cam1")  # a.mp4 b.mp4 c.mp4
    frame = np.tile((np.arange(64, dtype=np.uint8) * 4)[None, :, None], (48, 1, 3))
    cv2.imwrite(str(ds / "cover.png"), frame)      # one stray image at the top
    (ds / "seq" / "more").mkdir(parents=True)       # a sequence that also holds a folder with a video
    for i in range(3):
        cv2.imwrite(str(ds / "seq" / f"{i:03d}.png"), np.roll(frame, 4 * i, axis=1))
    shutil.copy(assets / "vids" / "a.mp4", ds / "seq" / "more" / "a.mp4")
    (ds / "lone").mkdir()
    cv2.imwrite(str(ds / "lone" / "000.png"), frame)
    out = tmp_path / "out"
    res = _run(_args(assets, ds, "-o", out, "--dry-run", "--json"))
    assert res.exit_code == 0, res.output
    assert [r["output"] for r in json.loads(res.output)["videos"]] == [
        "cam1__a", "cam1__b", "cam1__c", "seq", "seq__more__a"]
    res = _run(_args(assets, ds, "-o", out, "--json"))
    assert res.exit_code == 0, res.output
    recs = {r["output"]: r for r in _consistent(out)}
    assert sorted(recs) == ["cam1__a", "cam1__b", "cam1__c", "seq", "seq__more__a"]
    assert recs["seq"]["pairs"] == 2 and recs["seq__more__a"]["pairs"] == 3


def test_names_collisions_and_discovery(tmp_path, monkeypatch):
    for rel in ["d1/x.mp4", "d2/x.mp4", "tree/sub/deep/y.mov", "tree/my clip.v2.mp4", "tree/.hidden.mp4",
                "tree/frames/000.png", "tree/frames/001.png", "tree/notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "tree" / "out" / "old").mkdir(parents=True)
    (tmp_path / "tree" / "out" / "old" / "flow.mp4").write_bytes(b"x")  # an output root inside the input
    d1, d2 = str(tmp_path / "d1" / "x.mp4"), str(tmp_path / "d2" / "x.mp4")

    items = B.assign_names(B.discover([d1, d2, str(tmp_path / "tree")], exclude=tmp_path / "tree" / "out"))
    names = {Path(it.path).relative_to(tmp_path).as_posix(): it.name for it in items}
    assert set(names) == {"d1/x.mp4", "d2/x.mp4", "tree/sub/deep/y.mov", "tree/my clip.v2.mp4", "tree/frames"}
    assert names["tree/sub/deep/y.mov"] == "sub__deep__y"
    assert names["tree/my clip.v2.mp4"] == "my_clip_v2"
    assert names["tree/frames"] == "frames"  # an image folder is one video
    # the two x.mp4: same name -> both get a hash of their absolute path, stable whatever the order
    assert re.fullmatch(r"x-[0-9a-f]{8}", names["d1/x.mp4"]) and names["d1/x.mp4"] != names["d2/x.mp4"]
    again = B.assign_names(B.discover([d2, d1]))
    assert {it.path: it.name for it in again} == {d1: names["d1/x.mp4"], d2: names["d2/x.mp4"]}
    # alone it is just "x"; a name already in the ledger is kept, and reserved
    assert B.assign_names(B.discover([d1]))[0].name == "x"
    assert B.assign_names(B.discover([d1, d2]), known={d1: "x"})[0].name == "x"
    assert B.assign_names(B.discover([d2]), known={d1: "x"})[0].name.startswith("x-")
    # relative inputs keep their folders in the name
    monkeypatch.chdir(tmp_path)
    assert B.assign_names(B.discover(["d1/x.mp4"]))[0].name == "d1__x"
    # globs: relative to the part before the first wildcard
    globbed = B.assign_names(B.discover([str(tmp_path / "tree" / "**" / "*.mov")]))
    assert [it.name for it in globbed] == ["sub__deep__y"]

    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# comment\n\nd1/x.mp4\n{d2}\nmissing.mp4\n")
    items = B.assign_names(B.discover(manifest=manifest))
    assert [(it.name, it.error is not None) for it in items] == [
        ("d1__x", False), ("x", False), ("missing", True)]
    with pytest.raises(B.InputError, match="no such file"):
        B.discover(["nope.mp4"])


def test_long_non_ascii_names_fit_the_file_system(assets, tmp_path):
    """Names are limited in UTF-8 bytes (a file name may have 255), not characters, and stay distinct."""
    cjk = tmp_path / "cjk"
    deep = cjk / ("漢" * 50)
    deep.mkdir(parents=True)
    for stem in ("漢" * 50, "漢" * 49 + "字"):  # same first 91 bytes of name
        shutil.copy(assets / "vids" / "a.mp4", deep / f"{stem}.mp4")
    shutil.copy(assets / "vids" / "b.mp4", cjk / "zz.mp4")
    out = tmp_path / "out"
    res = _run(_args(assets, cjk, "-o", out, "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["done"] == 3
    names = [r["output"] for r in _consistent(out)]
    assert len(set(names)) == 3 and "zz" in names
    assert all(len(n.encode()) <= 100 for n in names), names
    one, other = B.stable_name("é" * 60), B.stable_name("é" * 59 + "e")  # 120 and 119 bytes
    assert one != other and len(one.encode()) <= 100 and len(other.encode()) <= 100


def test_undecodable_file_names_get_hashed_names(assets, tmp_path):
    """File names that are not UTF-8 (str with surrogates) are hashed as their bytes, not a crash."""
    root = tmp_path / "latin1"
    for sub, raw in (("a", b"x\xe9.mp4"), ("b", b"x\xe8.mp4")):  # both named "x": hashed by path
        (root / sub).mkdir(parents=True)
        shutil.copy(assets / "vids" / "a.mp4", os.path.join(os.fsencode(root / sub), raw))
    videos = [str(p) for p in sorted(root.glob("*/*.mp4"))]
    out = tmp_path / "out"
    res = _run(_args(assets, *videos, "-o", out, "--json"))
    assert res.exit_code == 0, res.output
    names = sorted(r["output"] for r in _consistent(out))
    assert len(names) == 2 and all(re.fullmatch(r"x-[0-9a-f]{8}", n) for n in names), names


def test_a_video_whose_output_cannot_be_made_fails_alone(assets, tmp_path):
    """An OSError on the output folder (here a name too long, from the ledger) fails that video; the rest run."""
    vids, out = _videos(assets, tmp_path, corrupt=False), tmp_path / "out"
    out.mkdir()
    too_long = "x" * 300  # e.g. a ledger written on a file system that allows longer names
    (out / "ledger.jsonl").write_text(json.dumps({
        "video": str(vids / "a.mp4"), "output": too_long, "status": "failed", "pairs": 0, "frames": 0,
        "seconds": 0.0, "error": "earlier", "time": "2026-01-01T00:00:00.000+00:00"}) + "\n")
    res = _run(_args(assets, vids, "-o", out, "--retry-failed", "--json"))
    assert res.exit_code == 1
    summary = json.loads(res.output.splitlines()[0])
    assert (summary["done"], summary["failed"]) == (2, 1)
    last = B.batch_status(out)
    assert (last["done"], last["failed"]) == (2, 1)
    assert "File name too long" in last["failures"][0]["error"]


def test_shards_cover_every_video_once(assets, tmp_path):
    vids, out = _videos(assets, tmp_path), tmp_path / "out"
    manifest = tmp_path / "videos.txt"
    manifest.write_text("\n".join(str(p) for p in sorted(vids.iterdir())) + "\n")
    codes = [_run(_args(assets, "--manifest", manifest, "-o", out, "--shard", f"{k}/2")).exit_code for k in (0, 1)]
    assert sorted(codes) in ([0, 1], [1, 1])  # the shard holding the corrupt file fails
    assert sorted(p.name for p in out.glob("ledger*")) == ["ledger.shard-0-of-2.jsonl", "ledger.shard-1-of-2.jsonl"]
    per_shard = [[r["output"] for r in _ledger(out / f"ledger.shard-{k}-of-2.jsonl")] for k in (0, 1)]
    assert sorted(per_shard[0] + per_shard[1]) == ["a", "b", "c", "corrupt"]  # each exactly once
    for k, names in enumerate(per_shard):
        assert all(B.shard_of(n, 2) == k for n in names)
    _consistent(out)
    res = _run(_args(assets, "--manifest", manifest, "-o", out, "--dry-run", "--json"))
    assert {r["action"] for r in json.loads(res.output)["videos"]} == {"skip-done", "skip-failed"}
    res = _run(_args(assets, vids, "-o", out, "--shard", "2/2"))
    assert res.exit_code == 2 and "0 <= K < N" in res.output


def test_workers_2_equal_workers_1(assets, tmp_path):
    vids = _videos(assets, tmp_path, corrupt=False)
    r1 = _run(_args(assets, vids, "-o", tmp_path / "w1", "--workers", "1", "--json"))
    r2 = _run(_args(assets, vids, "-o", tmp_path / "w2", "--workers", "2", "--json"))
    assert r1.exit_code == 0 and r2.exit_code == 0, r2.output
    s2 = json.loads(r2.output)
    assert (s2["backend"], s2["workers"], s2["done"], s2["frames"]) == ("processes", 2, 3, 12)
    for name in "abc":
        a, b = _flows(tmp_path / "w1" / name), _flows(tmp_path / "w2" / name)
        assert len(a) == len(b) == 3
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert sorted(r["output"] for r in _consistent(tmp_path / "w2")) == ["a", "b", "c"]


def test_ray_local_cluster(assets, tmp_path, monkeypatch):
    # loopback only: with this Ray binds every service of the local cluster to 127.0.0.1 (read when
    # ray is imported, here and in the cluster's own processes, which inherit the environment)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'flowcli[ray]')")
    from ray._private import ray_constants
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # in case ray was imported earlier
    vids = _videos(assets, tmp_path)
    ref = _run(_args(assets, vids, "-o", tmp_path / "ref"))
    assert ref.exit_code == 1
    import tempfile
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", _temp_dir=ray_tmp)
    try:
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        t0 = time.monotonic()
        res = _run(_args(assets, vids, "--ray", "-o", tmp_path / "ray", "--workers", "2", "--json"))
        assert time.monotonic() - t0 < 120
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert res.exit_code == 1, res.output
    summary = json.loads(res.output.splitlines()[0])
    assert (summary["backend"], summary["workers"], summary["done"], summary["failed"]) == ("ray", 2, 3, 1)
    recs = _consistent(tmp_path / "ray")
    assert sorted((r["output"], r["status"]) for r in recs) == [
        ("a", "done"), ("b", "done"), ("c", "done"), ("corrupt", "failed")]
    for name in "abc":
        for x, y in zip(_flows(tmp_path / "ref" / name), _flows(tmp_path / "ray" / name)):
            np.testing.assert_array_equal(x, y)


def test_ray_option_takes_only_addresses():
    from flowcli.cmd_batch import _split_ray
    assert _split_ray("videos/", ("b.mp4",)) == ("", ("videos/", "b.mp4"))
    assert _split_ray("auto", ()) == ("auto", ())
    assert _split_ray("10.0.0.1:6379", ()) == ("10.0.0.1:6379", ())
    assert _split_ray(None, ("a",)) == (None, ("a",))


# ----------------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("sig,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_signal_mid_batch_then_rerun_completes(assets, tmp_path, sig, workers):
    vids = tmp_path / "vids"
    for i in range(4):  # 23 pairs per video: a signal sent after its 2nd pair lands well inside it, even under load
        make_demo_video(vids / f"v{i}.mp4", 24, size=(96, 64), seed=10 + i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flowcli", *_args(assets, vids, "-o", out, "--workers", workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/000001.flo")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the batch ended before it could be interrupted"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    # Python's multiprocessing resource tracker (a separate process) may warn after flowcli's last line
    # about a queue semaphore of a killed worker; that is not flowcli's output
    ours = [line for line in err.strip().splitlines() if "resource_tracker" not in line]
    assert ours[-1].startswith("flowcli: error: interrupted"), err
    done_before = [r["output"] for r in _consistent(out)]
    assert len(done_before) < 4
    partial = [d for d in out.iterdir() if d.is_dir() and d.name not in done_before]
    assert partial  # a video was cut in the middle: some pairs on disk, no report
    assert all(not (d / "flowcli.json").exists() for d in partial)

    res = _run(_args(assets, vids, "-o", out, "--json"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["skipped"] == len(done_before) and summary["done"] == 4 - len(done_before)
    recs = _consistent(out)
    assert sorted(r["output"] for r in recs) == ["v0", "v1", "v2", "v3"]  # one line per video
    assert _run(_args(assets, vids, "-o", tmp_path / "ref")).exit_code == 0
    for d in partial:  # resumed inside the video: same flows as an uninterrupted run
        got, want = _flows(d), _flows(tmp_path / "ref" / d.name)
        assert len(got) == len(want) == 23
        for x, y in zip(got, want):
            np.testing.assert_allclose(x, y, atol=1e-4)


def test_disk_full_stops_cleanly_and_rerun_resumes(assets, tmp_path, monkeypatch):
    vids, out = _videos(assets, tmp_path, corrupt=False), tmp_path / "out"
    real_replace, calls = os.replace, [0]

    def full_disk_replace(src, dst, *a, **kw):
        calls[0] += 1
        if calls[0] >= 10:  # video 1 takes 7 renames (3 flows, 3 states, report): fail inside video 2
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", full_disk_replace)
    res = _run(_args(assets, vids, "-o", out))
    monkeypatch.setattr(os, "replace", real_replace)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowcli: error: disk full writing ")
    assert "No space left on device" in lines[0] and "rerun" in lines[0]
    recs = _consistent(out)  # nothing partial, no temp files
    assert [(r["output"], r["status"]) for r in recs] == [("a", "done")]  # disk full is not the video's fault
    assert not (out / "b" / "flowcli.json").exists()
    stale = out / "b" / ".000001.flo.k3x9_q2z.tmp.flo"  # what a SIGKILL'd atomic write leaves behind
    stale.write_bytes(b"partial")

    res = _run(_args(assets, vids, "-o", out, "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["done"] == 2
    assert not stale.exists()
    assert sorted(r["output"] for r in _consistent(out)) == ["a", "b", "c"]


def test_ledger_survives_a_torn_line_and_missing_ledger_line(assets, tmp_path):
    vids, out = _videos(assets, tmp_path, corrupt=False), tmp_path / "out"
    assert _run(_args(assets, vids / "a.mp4", vids / "b.mp4", "-o", out)).exit_code == 0
    ledger = out / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text(lines[0] + "\n" + '{"video": "torn')  # b's line lost, a torn tail (crash)
    res = _run(_args(assets, vids / "a.mp4", vids / "b.mp4", vids / "c.mp4", "-o", out, "--json"))
    assert res.exit_code == 0
    summary = json.loads(res.output)
    assert (summary["skipped"], summary["done"]) == (2, 1)  # b found complete on disk, not recomputed
    good = [json.loads(line) for line in ledger.read_text().splitlines() if line.startswith('{"video": "/')]
    assert sorted(r["output"] for r in good) == ["a", "b", "c"]
    lost, repaired = json.loads(lines[1]), next(r for r in good if r.get("note") == "found complete on disk")
    assert repaired["output"] == lost["output"] == "b"
    assert (repaired["pairs"], repaired["frames"]) == (lost["pairs"], lost["frames"]) == (3, 4)


def test_predict_next_mode_and_usage_errors(assets, tmp_path):
    vids = _videos(assets, tmp_path, corrupt=False)
    pweights = tmp_path / "p.safetensors"
    torch.manual_seed(1)
    save_safetensors(pweights, MemFlowNet(CPU_SMALL.replace(predict=True)), iters=1)
    est = tmp_path / "est"
    assert _run(_args(assets, vids, "-o", est)).exit_code == 0
    # past flows from the estimate batch's folders (matched by video through its ledger)
    res = _run(["batch", str(vids / "a.mp4"), str(vids / "b.mp4"), "-o", str(tmp_path / "pred"), "--mode",
                "predict-next", "--weights", str(pweights), "--prior-flows", str(est), "--threads", "1", "--quiet",
                "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["done"] == 2
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / "pred" / name).glob("*.flo")) == [
            "000001.flo", "000002.flo", "000003.flo"]
        assert json.loads((tmp_path / "pred" / name / "flowcli.json").read_text())["tta"] is False
    # the weights' own default spelled out is the same settings: a rerun skips the finished videos
    res = _run(["batch", str(vids / "a.mp4"), str(vids / "b.mp4"), "-o", str(tmp_path / "pred"), "--mode",
                "predict-next", "--weights", str(pweights), "--prior-flows", str(est), "--threads", "1", "--quiet",
                "--json", "--no-tta"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["done"] == 0 and json.loads(res.output)["skipped"] == 2, res.output
    # a lost ledger is rebuilt from the reports with the same counts (predictions are the pairs)
    ledger = tmp_path / "pred" / "ledger.jsonl"
    before = [(r["output"], r["pairs"], r["frames"]) for r in _ledger(ledger)]
    ledger.unlink()
    res = _run(["batch", str(vids / "a.mp4"), str(vids / "b.mp4"), "-o", str(tmp_path / "pred"), "--mode",
                "predict-next", "--weights", str(pweights), "--prior-flows", str(est), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert [(r["output"], r["pairs"], r["frames"]) for r in _ledger(ledger)] == before == [("a", 3, 4), ("b", 3, 4)]
    # --tta reaches the stream: other predictions, recorded
    res = _run(["batch", str(vids / "a.mp4"), "-o", str(tmp_path / "tta"), "--mode", "predict-next", "--weights",
                str(pweights), "--prior-flows", str(est), "--threads", "1", "--quiet", "--tta"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "tta" / "a" / "flowcli.json").read_text())["tta"] is True
    plain, mirrored = read_flow(tmp_path / "pred" / "a" / "000002.flo"), read_flow(tmp_path / "tta" / "a" / "000002.flo")
    assert np.abs(plain - mirrored).max() > 1e-3
    res = _run(_args(assets, vids, "-o", tmp_path / "x", "--frames"))
    assert res.exit_code == 2 and "--frames is for --mode predict-next" in res.output
    res = _run(_args(assets, "-o", tmp_path / "x"))
    assert res.exit_code == 2 and "--manifest" in res.output
    res = _run(_args(assets, tmp_path / "missing", "-o", tmp_path / "x"))
    assert res.exit_code == 1 and "no such file or folder" in res.output


def test_run_batch_api_for_bench(assets, tmp_path):
    vids = _videos(assets, tmp_path, corrupt=False)
    summary = B.run_batch([str(vids)], tmp_path / "o", weights=str(assets / "small.safetensors"), iters=1,
                          threads=1)
    assert summary.ok and summary.done == 3 and summary.frames == 12 and summary.seconds > 0
    assert summary.frames_per_second > 0 and summary.to_dict()["command"] == "batch"


def test_workers_stop_when_the_batch_process_is_killed(assets, tmp_path):
    """After a SIGKILL of the batch process its workers went on writing into OUTROOT until their video
    ended (they looked for their parent only between videos); now the kernel signals them at once."""
    vids = tmp_path / "long"
    for name in ("x", "y"):
        make_demo_video(vids / f"{name}.mp4", 600, size=(64, 48), seed=3)
    proc = subprocess.Popen([sys.executable, "-m", "flowcli", *_args(assets, vids, "-o", tmp_path / "out",
                                                                     "--workers", "2")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[str]:
        return subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + 120
    while not list((tmp_path / "out").glob("*/000001.flo")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until the workers are writing
    workers = children()
    assert workers and proc.poll() is None, "the workers did not start writing"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5  # (a 600-frame video takes them far longer)
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers outlived the batch"
    assert not [p for p in (tmp_path / "out").rglob("*") if TEMP_RE.match(p.name)]  # they cleaned up
