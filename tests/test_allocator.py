"""flowcli.allocator: glibc malloc thresholds for streaming (speed effect measured in bench, not here)."""
from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallopt")
    except OSError:
        return False


def _run(code: str, env: dict) -> str:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(not _glibc(), reason="needs glibc's mallopt")
def test_applied_once_in_a_fresh_process():
    code = "import flowcli.allocator as a; print(a.tune_malloc(), a.tune_malloc())"
    assert _run(code, {"PATH": "/usr/bin:/bin"}) == "True True"


@pytest.mark.skipif(not _glibc(), reason="needs glibc's mallopt")
def test_user_malloc_settings_win():
    code = "import flowcli.allocator as a; print(a.tune_malloc())"
    assert _run(code, {"PATH": "/usr/bin:/bin", "MALLOC_TRIM_THRESHOLD_": "1000"}) == "False"


def test_a_stream_applies_it(monkeypatch):
    """The CPU engines call it (so `flowcli estimate`, eval and predict-next all get it)."""
    from flowcli.engine import FlowStream, StreamOptions
    from flowcli.model import CPU_SMALL, MemFlowNet
    calls = []
    monkeypatch.setattr("flowcli.engine.tune_malloc", lambda: calls.append(1) or True)
    FlowStream(MemFlowNet(CPU_SMALL), StreamOptions(iters=1))
    assert calls
