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


@pytest.mark.skipif(not _glibc(), reason="needs glibc's malloc_trim")
def test_release_free_heap_returns_freed_heap_pages():
    """With trimming off, freed heap blocks stay resident; release_free_heap gives them back."""
    code = """
import flowcli.allocator as a
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
assert a.tune_malloc()
blocks = [bytearray(4 * 2**20) for _ in range(50)]   # 200 MB of 4 MB heap blocks (below the mmap threshold)
keep = bytearray(1024)                                # a live block above them: the heap top cannot shrink
del blocks
before = rss()
assert a.release_free_heap()
print((before - rss()) // 2**20)
"""
    released_mb = int(_run(code, {"PATH": "/usr/bin:/bin"}))
    assert released_mb > 150


def test_release_free_heap_is_a_no_op_when_not_tuned(monkeypatch):
    import flowcli.allocator as a
    monkeypatch.setitem(a._state, "libc", None)
    assert a.release_free_heap() is False
