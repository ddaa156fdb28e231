"""estimate and predict-next count flow.mp4 among the files they write: the status line, --json and
flowcli.json "written" (a --video-only run used to say "0 files written")."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from flowcli.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*args: str):
    return CliRunner().invoke(cli, [*args, "--iters", "1", "--max-side", "128"])


def test_estimate_counts_the_video_it_writes(tmp_path, conformance_dir):
    out = tmp_path / "v"
    args = ["estimate", str(conformance_dir), "-o", str(out), "--video"]
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "4 pairs (1 file written, 0 skipped)" in res.output, res.output
    assert json.loads((out / "flowcli.json").read_text())["written"] == 1
    res = _run(*args, "--json", "-q")  # finished: the video is kept, nothing written
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 0, res.output
    res = _run(*args, "--overwrite", "--json", "-q")
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 1, res.output
    res = _run("estimate", str(conformance_dir), "-o", str(tmp_path / "fv"), "--format", "flo", "--video",
               "--json", "-q")
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 5, res.output  # 4 .flo and flow.mp4


def test_predict_next_counts_the_video_it_writes(tmp_path, conformance_dir):
    out = tmp_path / "p"
    args = ["predict-next", str(conformance_dir), "-o", str(out), "--video", "--format", "flo", "--end", "3"]
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "3 frames, 2 predictions (3 files written, 0 frames skipped)" in res.output, res.output
    assert json.loads((out / "flowcli.json").read_text())["written"] == 3  # 000001.flo, 000002.flo, flow.mp4
    res = _run(*args, "--json", "-q")
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 0, res.output
    res = _run("predict-next", str(conformance_dir), "-o", str(tmp_path / "v"), "--video", "--end", "3",
               "--json", "-q")
    assert res.exit_code == 0 and json.loads(res.stdout)["written"] == 1, res.output  # flow.mp4 only
