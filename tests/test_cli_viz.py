"""The flowcli command line: group conventions (version, help, error policy, exit codes)
and ``flowcli viz``."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import flowcli
from flowcli import cli as cli_mod
from flowcli import cmd_viz as viz_cmd_mod
from flowcli.cli import cli, main
from flowcli.errors import InputError
from flowcli.viz import flow_to_color

REPO = Path(__file__).resolve().parents[1]
FLOWCLI_SCRIPT = REPO / ".venv" / "bin" / "flowcli"


def write_flo(path: Path, flow: np.ndarray) -> Path:
    """Minimal Middlebury .flo writer (tests only): tag, width, height, float32 u/v."""
    h, w = flow.shape[:2]
    with open(path, "wb") as fh:
        np.array([202021.25], "<f4").tofile(fh)
        np.array([w, h], "<i4").tofile(fh)
        flow.astype("<f4").tofile(fh)
    return path


def make_flow(h: int = 40, w: int = 56, gain: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([(xx - w / 2) / 4 * gain, (yy - h / 2) / 4], axis=-1)


def read_png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_one_line_error(result, code: int = 1, contains: str = ""):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("flowcli: error: ")
    assert contains in lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def flows(tmp_path) -> Path:
    """A folder with frame_1, frame_2, frame_10 .flo (natural order differs from sorted())."""
    d = tmp_path / "flows"
    d.mkdir()
    for i, gain in ((1, 1.0), (2, 2.0), (10, 3.0)):
        write_flo(d / f"frame_{i}.flo", make_flow(gain=gain))
    (d / "notes.txt").write_text("not a flow")
    return d


# ------------------------------------------------------------------ group conventions

def test_version():
    for flag in ("--version", "-V"):
        result = run(flag)
        assert result.exit_code == 0
        assert result.stdout.strip() == f"flowcli {flowcli.__version__}"


def test_help_teaches():
    result = run("--help")
    assert result.exit_code == 0
    for text in ("viz", "Examples", "--debug", "Exit codes"):
        assert text in result.stdout
    result = run("viz", "--help")
    assert result.exit_code == 0
    for text in ("--max-flow", "--normalize", "--video", "--side-by-side", "Examples", "natural order"):
        assert text in result.stdout


def test_exit_codes_documented():
    assert (cli_mod.EXIT_OK, cli_mod.EXIT_FAILURE, cli_mod.EXIT_USAGE, cli_mod.EXIT_INTERRUPTED) == (0, 1, 2, 130)
    assert "130" in cli_mod.__doc__


def test_usage_errors_exit_2(tmp_path, flows):
    out = str(tmp_path / "out")
    for args in (["viz", str(flows), "-o", out, "--bogus"],
                 ["viz", str(flows), "-o", out, "--normalize", "sometimes"],
                 ["viz", str(flows), "-o", out, "--normalize", "fixed"],
                 ["viz", str(flows), "-o", out, "--max-flow", "5", "--normalize", "sequence"],
                 ["viz", str(flows), "-o", out, "--max-flow", "-1"],
                 ["viz", str(flows), "-o", out, "--side-by-side"],
                 ["viz", str(flows), "-o", str(tmp_path / "x.png")],
                 ["viz", str(flows), "-o", str(tmp_path / "x.mp4")],
                 ["viz", str(flows)],
                 ["nosuchcommand"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_input_one_line_exit_1(tmp_path):
    result = run("viz", str(tmp_path / "nope.flo"), "-o", str(tmp_path / "out"))
    assert_one_line_error(result, 1, "nope.flo: no such file or folder")
    result = run("viz", str(tmp_path / "*.flo"), "-o", str(tmp_path / "out"))
    assert_one_line_error(result, 1, "no flow files match")


def test_debug_shows_traceback(tmp_path):
    result = run("--debug", "viz", str(tmp_path / "nope.flo"), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("flowcli: error: ")


def test_keyboard_interrupt_130_and_oserror_1(tmp_path, flows, monkeypatch):
    import flowcli.viz

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowcli.viz, "render", interrupted)
    result = run("viz", str(flows), "-o", str(tmp_path / "a"))
    assert_one_line_error(result, 130, "interrupted")

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/frame_1.png")

    monkeypatch.setattr(flowcli.viz, "render", disk_full)
    result = run("viz", str(flows), "-o", str(tmp_path / "b"))
    assert_one_line_error(result, 1, "out/frame_1.png: No space left on device")

    def bug(*a, **k):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(flowcli.viz, "render", bug)
    result = run("viz", str(flows), "-o", str(tmp_path / "c"))
    assert_one_line_error(result, 1, "internal error: ZeroDivisionError: oops")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abc")


def test_helpers(capsys):
    cli_mod.emit_json({"p": Path("a/b"), "x": np.float32(1.5), "n": float("nan"), "a": np.arange(2)})
    assert json.loads(capsys.readouterr().out) == {"p": "a/b", "x": 1.5, "n": None, "a": [0, 1]}
    bar = cli_mod.progress(range(3), desc="t", quiet=True)
    assert list(bar) == [0, 1, 2] and bar.disable
    names = ["f10.flo", "f2.flo", "F1.flo"]
    assert sorted(names, key=cli_mod.natural_key) == ["F1.flo", "f2.flo", "f10.flo"]
    assert main(["--version"]) == 0
    assert main(["viz"]) == 2


# ------------------------------------------------------------------ viz

def test_viz_single_file_to_png(tmp_path):
    flow = make_flow()
    flow[:3, :3] = np.nan
    src = write_flo(tmp_path / "a.flo", flow)
    out = tmp_path / "a.png"
    result = run("viz", str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    img = read_png(out)
    assert img.shape == (40, 56, 3)
    assert np.array_equal(img, flow_to_color(flow))
    assert (img[:3, :3] == 0).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flo", "a.png"]   # no temp left


def test_viz_folder_json_natural_order(tmp_path, flows):
    out = tmp_path / "out"
    result = run("viz", str(flows), "-o", str(out), "--json", "--legend")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 3 and summary["normalize"] == "frame"
    assert [Path(p).name for p in summary["outputs"]] == ["frame_1.png", "frame_2.png", "frame_10.png"]
    assert [Path(r["input"]).name for r in summary["inputs"]] == ["frame_1.flo", "frame_2.flo", "frame_10.flo"]
    assert sorted(p.name for p in out.iterdir()) == ["frame_1.png", "frame_10.png", "frame_2.png"]
    assert read_png(out / "frame_10.png").shape == (40, 56, 3)


def test_viz_glob_and_sequence_normalisation(tmp_path, flows):
    frame_out, seq_out = tmp_path / "frame", tmp_path / "seq"
    assert run("viz", str(flows / "frame_*.flo"), "-o", str(frame_out), "-q").exit_code == 0
    result = run("viz", str(flows / "frame_*.flo"), "-o", str(seq_out), "--normalize", "sequence", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    biggest = max(r["max_magnitude"] for r in summary["inputs"])
    assert summary["max_flow"] == pytest.approx(biggest, abs=1e-3)
    # the flow with the largest vectors looks the same; the smallest is paler with one scale
    assert np.abs(read_png(seq_out / "frame_10.png").astype(int) - read_png(frame_out / "frame_10.png")).max() <= 1
    assert read_png(seq_out / "frame_1.png").mean() > read_png(frame_out / "frame_1.png").mean() + 5
    fixed = tmp_path / "fixed"
    assert run("viz", str(flows), "-o", str(fixed), "--max-flow", "2.5").exit_code == 0
    expected = flow_to_color(make_flow(gain=2.0), max_flow=2.5)
    assert np.array_equal(read_png(fixed / "frame_2.png"), expected)


def test_viz_overwrite_refused(tmp_path, flows):
    out = tmp_path / "out"
    assert run("viz", str(flows), "-o", str(out)).exit_code == 0
    before = (out / "frame_1.png").read_bytes()
    (out / "frame_2.png").unlink()
    result = run("viz", str(flows), "-o", str(out), "--max-flow", "1")
    assert_one_line_error(result, 1, "already exists (use --overwrite")
    assert not (out / "frame_2.png").exists()           # refused before writing anything
    assert (out / "frame_1.png").read_bytes() == before
    result = run("viz", str(flows), "-o", str(out), "--max-flow", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "frame_1.png").read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == ["frame_1.png", "frame_10.png", "frame_2.png"]


def test_viz_all_or_nothing(tmp_path, flows):
    (flows / "frame_11.flo").write_bytes(b"PIEH garbage")     # corrupt, rendered last
    out = tmp_path / "out"
    result = run("viz", str(flows), "-o", str(out))
    assert_one_line_error(result, 1, "frame_11.flo")
    assert not out.exists()                               # not even the new empty folder
    video = tmp_path / "new" / "v.mp4"
    result = run("viz", str(flows), "-o", str(video), "--video")
    assert_one_line_error(result, 1, "frame_11.flo")
    assert not (tmp_path / "new").exists()


def test_viz_name_clash_and_own_input(tmp_path):
    from flowcli.flowio import write_flow

    flow = make_flow()
    src = write_flo(tmp_path / "a.flo", flow)
    np.save(tmp_path / "b.npy", flow)
    result = run("viz", str(src), str(tmp_path / "b.npy"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png"]
    (tmp_path / "x").mkdir()
    write_flo(tmp_path / "x" / "a.flo", flow)
    result = run("viz", str(src), str(tmp_path / "x" / "a.flo"), "-o", str(tmp_path / "o2"))
    assert_one_line_error(result, 1, "would both be written")
    kitti = write_flow(tmp_path / "k" / "f.png", flow)   # KITTI input named like its output
    before = kitti.read_bytes()
    result = run("viz", str(tmp_path / "k"), "-o", str(tmp_path / "k"), "--overwrite")
    assert_one_line_error(result, 1, "is one of the inputs")
    assert kitti.read_bytes() == before


def test_viz_image_folder_arrows_side_by_side(tmp_path, flows):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):                                   # one extra frame is fine
        cv2.imwrite(str(frames / f"img_{i:03d}.png"), np.full((80, 112, 3), 60 * i, np.uint8))
    out = tmp_path / "out"
    result = run("viz", str(flows), "-o", str(out), "--image", str(frames), "--arrows",
                 "--side-by-side", "--json", "--arrow-step", "8", "--arrow-scale", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in summary["inputs"]] == ["img_000.png", "img_001.png", "img_002.png"]
    img = read_png(out / "frame_2.png")
    assert img.shape == (40, 112, 3)                     # frame resized to the flow, then two panels
    assert np.array_equal(img[:, 56:], flow_to_color(make_flow(gain=2.0)))
    # too few frames
    result = run("viz", str(flows), "-o", str(tmp_path / "o2"), "--image", str(frames / "img_000.png"),
                 "--arrows")
    assert result.exit_code == 0
    (frames / "img_003.png").unlink()
    (frames / "img_002.png").unlink()
    result = run("viz", str(flows), "-o", str(tmp_path / "o3"), "--image", str(frames), "--arrows")
    assert_one_line_error(result, 1, "2 image(s) for 3 flow file(s)")


def test_viz_image_folder_goes_by_the_frame_index_in_the_flow_name(tmp_path):
    """Flows named by their first frame (as `estimate --start 10 --step 2` writes them) go with
    that frame of the folder, numbered as estimate numbers it; they used to go by position."""
    from flowcli.pipeline import FORMAT_FILES

    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(16):  # natural order: f2 before f10; the dotfile is no frame (as for estimate)
        cv2.imwrite(str(frames / f"f{k}.png"), np.full((40, 56, 3), 10 + 15 * k, np.uint8))
    cv2.imwrite(str(frames / ".f0.png"), np.zeros((40, 56, 3), np.uint8))
    flows = tmp_path / "flows"
    flows.mkdir()
    for k in (10, 12, 14):
        write_flo(flows / FORMAT_FILES["flo"].format(i=k), make_flow())
    out = tmp_path / "out"
    result = run("viz", str(flows), "-o", str(out), "--image", str(frames), "--side-by-side", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in summary["inputs"]] == ["f10.png", "f12.png", "f14.png"]
    for k in (10, 12, 14):
        assert (read_png(out / f"{k:06d}.png")[:, :56] == 10 + 15 * k).all(), k
    # an index with no frame in the folder, and names that mix indices and other names
    write_flo(flows / "000016.flo", make_flow())
    result = run("viz", str(flows), "-o", str(tmp_path / "o2"), "--image", str(frames), "--arrows")
    assert_one_line_error(result, 1, "000016.flo: no frame 16 in")
    (flows / "000016.flo").unlink()
    write_flo(flows / "frame_1.flo", make_flow())
    result = run("viz", str(flows), "-o", str(tmp_path / "o3"), "--image", str(frames), "--arrows")
    assert_one_line_error(result, 1, "frame_1.flo: not named by a frame index")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_viz_overwrite_help_promises_no_clean_up():
    """viz only replaces what it writes; the shared help promised removing an earlier run's leftovers."""
    def overwrite_help(command: str) -> str:
        result = run(command, "--help")
        assert result.exit_code == 0, result.output
        text = " ".join(result.stdout.split())
        return text[text.index("--overwrite"):text.index("-q, --quiet")]

    viz_help = overwrite_help("viz")
    assert "Replace existing output files" in viz_help
    assert "removed" not in viz_help and "did not rewrite" not in viz_help
    assert "did not rewrite are removed" in overwrite_help("estimate")  # estimate does clean up


def test_viz_video(tmp_path, flows):
    import av

    out = tmp_path / "flows.mp4"
    result = run("viz", str(flows), "-o", str(out), "--video", "--fps", "5", "--normalize",
                 "sequence", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 3 and summary["video"] == str(out)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(5)
    assert len(frames) == 3 and frames[0].shape == (40, 56, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows", "flows.mp4"]
    result = run("viz", str(flows), "-o", str(out), "--video")
    assert_one_line_error(result, 1, "already exists")
    assert run("viz", str(flows), "-o", str(tmp_path / "v.avi"), "--video").exit_code == 2


# ------------------------------------------------------------------ real processes

def test_console_script_subprocess(tmp_path):
    assert FLOWCLI_SCRIPT.exists(), "run `make install` (pip install -e .) first"
    src = write_flo(tmp_path / "a.flo", make_flow())
    out = tmp_path / "viz" / "a.png"
    env = {**os.environ, "FLOWCLI_DEBUG": ""}
    proc = subprocess.run([str(FLOWCLI_SCRIPT), "viz", str(src), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert read_png(out).shape == (40, 56, 3)
    proc = subprocess.run([str(FLOWCLI_SCRIPT), "viz", str(src), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"flowcli: error: {out}: already exists (use --overwrite to replace it)"]
    proc = subprocess.run([sys.executable, "-m", "flowcli", "--version"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == f"flowcli {flowcli.__version__}"


def _flowcli(*args) -> subprocess.CompletedProcess:
    """The installed console script in its own process: stderr is everything it printed, OpenCV's
    C++ logging and Python warnings included (CliRunner sees neither)."""
    env = {**os.environ, "FLOWCLI_DEBUG": "", "PYTHONWARNINGS": ""}
    return subprocess.run([str(FLOWCLI_SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_stderr_is_exactly_the_one_line_error(tmp_path):
    """A truncated KITTI PNG: OpenCV's "[ WARN:0@...] PNG input buffer is incomplete" came first."""
    flow = np.zeros((48, 64, 2), np.float32)
    flow[..., 0] = np.random.default_rng(0).uniform(-100, 100, (48, 64))  # incompressible: a long PNG
    kitti = flowcli.write_flow(tmp_path / "k.png", flow)
    cut = tmp_path / "cut.png"
    cut.write_bytes(kitti.read_bytes()[:3000])
    proc = _flowcli("viz", cut, "-o", tmp_path / "out.png")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"flowcli: error: {cut}: not a readable PNG image"]


def test_huge_values_and_tiny_max_flow_print_no_warnings(tmp_path):
    """numpy RuntimeWarnings (overflow in viz.py and flowio.py) went to stderr with their source lines."""
    src = write_flo(tmp_path / "a.flo", make_flow())
    proc = _flowcli("viz", src, "-o", tmp_path / "tiny.png", "--max-flow", "1e-300", "-q")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert np.array_equal(read_png(tmp_path / "tiny.png"), flow_to_color(make_flow(), max_flow=1e-6))
    big = make_flow().astype(np.float64)
    big[:20] = 1e300                                 # unknown (beyond 1e9): black
    np.save(tmp_path / "big.npy", big)
    proc = _flowcli("viz", tmp_path / "big.npy", "-o", tmp_path / "big.png", "-q")
    assert (proc.returncode, proc.stderr) == (0, "")
    unknown = make_flow()
    unknown[:20] = np.nan
    assert np.array_equal(read_png(tmp_path / "big.png"), flow_to_color(unknown))


def test_npy_with_a_damaged_header_is_not_out_of_memory(tmp_path):
    import struct

    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 2), }"
    header += b" " * (118 - len(header)) + b"\n"
    bad = tmp_path / "hs.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 100)
    result = run("viz", str(bad), "-o", str(tmp_path / "hs.png"))
    assert_one_line_error(result, 1, f"{bad}: truncated or damaged .npy file")
    assert "memory" not in result.stderr and not (tmp_path / "hs.png").exists()


@pytest.mark.parametrize("args", [["--arrow-scale", "1e20"], ["--max-flow", "1e-9"],
                                  ["--max-flow", "1e-300", "--arrow-scale", "1e300"]])
def test_viz_arrows_far_off_the_image(tmp_path, args):
    """Arrow end points beyond int32 made cv2.arrowedLine fail: "internal error ... Can't parse 'pt2'"."""
    src = write_flo(tmp_path / "a.flo", np.full((48, 64, 2), 5.0, np.float32))
    result = run("viz", str(src), "-o", str(tmp_path / "a.png"), "--arrows", *args)
    assert result.exit_code == 0, result.output
    img = read_png(tmp_path / "a.png")
    assert img.shape == (48, 64, 3) and (img == 0).all(axis=2).sum() > 100   # black arrows drawn


def test_viz_output_below_a_file_says_not_a_folder(tmp_path, flows):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, extra in ((afile / "x.png", []), (afile / "sub" / "x.png", []), (afile / "dir", []),
                       (afile / "v.mp4", ["--video"])):
        src = flows / "frame_1.flo" if out.suffix == ".png" else flows
        result = run("viz", str(src), "-o", str(out), *extra)
        assert_one_line_error(result, 1, f"{afile}: is not a folder, so ")
    assert afile.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "flows"]


def test_viz_truncated_source_image_is_refused(tmp_path):
    """cv2.imread returned a truncated JPEG as a half-grey picture (libjpeg warned on stderr)."""
    src = write_flo(tmp_path / "a.flo", make_flow())
    frame = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    ok, jpg = cv2.imencode(".jpg", frame)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.tobytes()[:len(jpg) // 2])
    result = run("viz", str(src), "-o", str(tmp_path / "a.png"), "--image", str(cut), "--arrows")
    assert_one_line_error(result, 1, f"{cut}: not a readable image")
    assert not (tmp_path / "a.png").exists()


# ------------------------------------------------------------------ real ground truth

def test_viz_sintel_gt(shared_data, tmp_path):
    from flowcli.flowio import read_flow

    src = shared_data / "sintel/training/flow/alley_1/frame_0002.flo"
    out = tmp_path / "sintel.png"
    result = run("viz", str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    img = read_png(out)
    assert img.shape == (436, 1024, 3)
    assert np.array_equal(img, flow_to_color(read_flow(src)))
    assert (img.max(axis=2) > 0).all()                    # dense GT: no black pixel


def test_viz_kitti_sparse_gt(shared_data, tmp_path):
    from flowcli.flowio import read_flow

    src = shared_data / "kitti2012/training/flow_noc/000045_10.png"
    frame = shared_data / "kitti2012/training/colored_0/000045_10.png"
    out = tmp_path / "out"
    result = run("viz", str(src), "-o", str(out), "--image", str(frame), "--side-by-side",
                 "--arrows", "--legend")
    assert result.exit_code == 0, result.output
    flow = read_flow(src)
    invalid = np.isnan(flow).any(axis=2)
    assert 0.6 < invalid.mean() < 0.9                     # ~22 % valid
    img = read_png(out / "000045_10.png")
    h, w = flow.shape[:2]
    assert img.shape == (h, 2 * w, 3)
    right = img[:, w:]
    assert (right[invalid & (np.arange(w)[None, :] < w - 200)] == 0).all()   # black (legend aside)
    assert (right[~invalid].max(axis=1) > 0).mean() > 0.99


# ------------------------------------------------------------------ adding a command

@click.command("hello")
@cli_mod.quiet_option
@cli_mod.json_option
@click.option("--fail", is_flag=True)
def _hello_cmd(quiet, as_json, fail):
    """Say hello (test command registered through LAZY_COMMANDS)."""
    if fail:
        raise InputError("bad input\nsecond line")
    cli_mod.status("hello", quiet)
    if as_json:
        cli_mod.emit_json({"hello": True})


def test_lazy_command_gets_error_policy(monkeypatch):
    monkeypatch.setitem(cli_mod.LAZY_COMMANDS, "hello", f"{__name__}:_hello_cmd")
    assert "hello" in run("--help").stdout
    result = run("hello", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"hello": True}
    assert result.stderr == "flowcli: hello\n"
    assert run("hello", "-q").stderr == ""
    assert_one_line_error(run("hello", "--fail"), 1, "bad input second line")


def test_non_png_image_output_name_is_a_usage_error(tmp_path, flows):
    """`-o x.jpg` used to create a folder called x.jpg; viz only writes PNG."""
    result = run("viz", str(flows / "frame_1.flo"), "-o", str(tmp_path / "x.jpg"))
    assert result.exit_code == 2, result.output
    assert "viz writes PNG images" in result.stderr
    assert not (tmp_path / "x.jpg").exists()
    (tmp_path / "d.jpg").mkdir()  # an existing folder with such a name is still a folder
    result = run("viz", str(flows / "frame_1.flo"), "-o", str(tmp_path / "d.jpg"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d.jpg" / "frame_1.png").is_file()


def test_disk_full_while_writing_png_names_the_png(tmp_path, flows, monkeypatch):
    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(viz_cmd_mod, "open", lambda p, mode="r": FullDisk(real_open(p, mode)), raising=False)
    out = tmp_path / "v"
    result = run("viz", str(flows), "-o", str(out))
    assert_one_line_error(result, 1, f"{out / 'frame_1.png'}: No space left on device")
    assert not out.exists()


# ------------------------------------------------------------------ option values, out of memory, help

def _all_params():
    """(command path, parameter) for every option of every command, subcommands included."""
    ctx = click.Context(cli)
    todo = [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]
    while todo:
        path, cmd = todo.pop()
        if isinstance(cmd, click.Group):
            todo += [(f"{path} {name}", cmd.get_command(ctx, name)) for name in cmd.list_commands(ctx)]
        for param in cmd.params:
            yield path, param


def test_every_float_option_refuses_nan_and_infinity():
    """click's FloatRange lets nan through any bounds and inf through a missing upper one."""
    floats = [(path, p.name) for path, p in _all_params() if isinstance(p.type, click.types.FloatParamType)]
    assert ("viz", "fps") in floats and ("train", "lr") in floats and ("batch", "max_flow") in floats
    plain = [(path, p.name) for path, p in _all_params() if isinstance(p.type, click.types.FloatParamType)
             and not isinstance(p.type, cli_mod.FiniteFloatRange)]
    assert plain == []


# a crop size train refuses after parsing: the float options are checked first, and without that check
# nothing would train here anyway
NO_RUN = ["--size", "30x30"]


@pytest.mark.parametrize("args", [
    ["estimate", "IN", "-o", "OUT", "--max-flow", "nan"],
    ["estimate", "IN", "-o", "OUT", "--max-flow", "inf"],
    ["estimate", "IN", "-o", "OUT", "--scale", "nan"],
    ["predict-next", "IN", "-o", "OUT", "--max-flow", "nan"],
    ["batch", "IN", "-o", "OUT", "--max-flow", "inf"],
    ["viz", "FLOW", "-o", "OUT", "--max-flow", "nan"],
    ["viz", "FLOW", "-o", "OUT", "--arrows", "--arrow-scale", "inf"],
    ["viz", "FLOW", "-o", "OUT.mp4", "--video", "--fps", "nan"],
    ["viz", "FLOW", "-o", "OUT.mp4", "--video", "--fps", "1e-30"],
    ["viz", "FLOW", "-o", "OUT.mp4", "--video", "--fps", "1e12"],
    ["train", "-o", "OUT", "--lr", "nan", *NO_RUN],
    ["train", "-o", "OUT", "--max-speed", "inf", *NO_RUN],
    ["train", "-o", "OUT", "--speed-exponent", "nan", *NO_RUN],
    ["train", "-o", "OUT", "--predict", "--estimated-past", "nan", *NO_RUN],
    ["train", "-o", "OUT", "--predict", "--occluded-weight", "nan", *NO_RUN],
])
def test_non_finite_or_out_of_range_floats_are_usage_errors(tmp_path, flows, args):
    """Before: internal errors (ValueError, 'cannot convert float NaN to integer', Mp4Writer's fps 0), or
    a bare NaN written into flowcli.json (--max-flow nan with flo files only)."""
    names = {"IN": str(flows), "FLOW": str(flows / "frame_1.flo"), "OUT": str(tmp_path / "o")}
    for name, value in names.items():
        args = [a.replace(name, value) for a in args]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert ("is not a finite number" in result.stderr) != ("is not in the range" in result.stderr), result.stderr
    assert "Traceback" not in result.output and not list(tmp_path.glob("o*"))


def test_viz_fps_range_covers_what_the_video_writer_stores(tmp_path, flows):
    for fps in ("0.001", "1000"):
        out = tmp_path / f"v{fps}.mp4"
        result = run("viz", str(flows), "-o", str(out), "--video", "--fps", fps, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["fps"] == float(fps) and out.stat().st_size > 0


def test_out_of_memory_is_a_one_line_failure_not_an_internal_error():
    """e.g. `estimate - --size 16000x16000` on a small machine; Python, NumPy and torch report it differently."""
    import torch
    errors = []
    for allocate in (lambda: bytearray(1 << 62), lambda: np.empty((1 << 40, 1 << 20), np.uint8),
                     lambda: torch.empty(1 << 50, dtype=torch.uint8)):
        try:
            allocate()
        except (MemoryError, RuntimeError) as exc:
            errors.append(exc)
    assert len(errors) == 3
    messages = [cli_mod._describe(exc) for exc in errors]
    for message, code in messages:
        assert code == 1 and message.startswith("out of memory") and "internal" not in message
    assert "Unable to allocate" in messages[1][0] and "could not allocate 1024.0 TiB" in messages[2][0]
    assert cli_mod._describe(RuntimeError("something else"))[0].startswith("internal error: RuntimeError")


@pytest.mark.parametrize("command", ["estimate", "predict-next", "batch"])
def test_format_help_says_what_video_alone_writes(command):
    """estimate, predict-next and batch write only flow.mp4 for --video without --format (predict-next
    with --with-estimate also writes flo files: checked by running them)."""
    result = run(command, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    start = text.index("--format")
    assert "with --video and no --format only flow.mp4 is written" in text[start:start + 400]
    if command != "estimate":
        assert "--with-estimate" in text[start:start + 400]


def test_empty_kitti_png_and_hidden_temp_files(tmp_path):
    """An empty .png (the 0-byte temp a killed KITTI writer leaves) gave 'internal error: ... !buf.empty()';
    viz FOLDER read hidden files, so a killed run's complete temp file became an extra frame."""
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    assert_one_line_error(run("viz", str(empty), "-o", str(tmp_path / "o.png")), 1, f"{empty}: not a readable PNG")
    folder = tmp_path / "flows"
    folder.mkdir()
    write_flo(folder / "000000.flo", make_flow())
    write_flo(folder / ".000001.flo.k2j3.tmp.flo", make_flow())
    result = run("viz", str(folder), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000000.png"]
