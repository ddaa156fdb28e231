"""Measurement helpers: machine description, one fresh subprocess per configuration, RSS, frames.

Every configuration runs in its own process (``bench/worker.py``) so its peak RSS is its own.
The child reports ``ru_maxrss`` / VmHWM itself; the parent also records the child's
``ru_maxrss`` from ``os.wait4`` and its wall time (used for the end-to-end CLI run).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("worker.py")


# -- machine ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted=("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def machine_info(threads: int) -> dict:
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        from flowcli import __version__ as flowcli_version
    except Exception:  # pragma: no cover
        flowcli_version = "?"
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": affinity, "cpu_flags": cpu_flags(),
        "torch": torch.__version__, "threads": threads, "python": platform.python_version(),
        "flowcli": flowcli_version, "load_avg": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# -- memory of the current process -----------------------------------------------------------------------
def proc_status() -> dict[str, float]:
    """VmRSS and VmHWM (current and peak resident set) of this process, in GB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024**2  # kB -> GB
    except OSError:
        pass
    return out


def peak_rss_gb() -> float:
    """Peak RSS of this process in GB (ru_maxrss is kB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024**3 if sys.platform == "darwin" else r / 1024**2


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# -- synthetic frames -----------------------------------------------------------------------------------
class TextureFrames:
    """A smooth random texture seen through a window moving (+2, +1) px per frame, wrapping around.

    Frames are made on demand (a long stream never holds more than one)."""

    def __init__(self, height: int, width: int, seed: int = 0):
        import cv2

        rng = np.random.default_rng(seed)
        self.h, self.w = height, width
        big_h, big_w = height + 64, width + 128
        coarse = rng.integers(0, 256, (big_h // 8 + 2, big_w // 8 + 2, 3), dtype=np.uint8)
        tex = cv2.resize(coarse, (big_w, big_h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        tex += rng.integers(-20, 21, tex.shape, dtype=np.int16)
        self.texture = np.clip(tex, 0, 255).astype(np.uint8)

    def __getitem__(self, i: int) -> np.ndarray:
        bh, bw = self.texture.shape[:2]
        dy, dx = (i % (bh - self.h)), (2 * i) % (bw - self.w)
        return np.ascontiguousarray(self.texture[dy:dy + self.h, dx:dx + self.w])


# -- subprocesses -----------------------------------------------------------------------------------
def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_process(cmd: list[str], threads: int, timeout: float | None = None, cwd: str | None = None) -> dict:
    """Run ``cmd``; return returncode, wall seconds, the child's peak RSS (GB, from wait4), stdout/stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=child_env(threads),
                                cwd=cwd or str(REPO))
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()  # our own child, by its pid
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return {"returncode": proc.returncode, "wall_s": wall, "child_maxrss_gb": usage.ru_maxrss / 1024**2,
                "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def run_worker(task: dict, threads: int, timeout: float | None = None) -> dict:
    """Run one configuration in a fresh ``bench/worker.py`` process; return its JSON result.

    On failure the result is ``{"error": <last line of the child's stderr>}``."""
    with tempfile.TemporaryDirectory(prefix="flowcli-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        task = {**task, "threads": threads}
        run = run_process([sys.executable, str(WORKER), json.dumps(task), str(result_path)], threads, timeout)
        if run["returncode"] != 0 or not result_path.is_file():
            lines = [ln for ln in run["stderr"].strip().splitlines() if ln.strip()]
            return {"error": lines[-1] if lines else f"exit code {run['returncode']}", "task": task,
                    "stderr_tail": "\n".join(lines[-15:])}
        result = json.loads(result_path.read_text())
    result["process_wall_s"] = run["wall_s"]
    result["process_maxrss_gb"] = run["child_maxrss_gb"]
    return result
