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


@pytest.mark.skipif(not _glibc(), reason="needs glibc's malloc_trim")
def test_a_small_free_heap_is_left_resident():
    """Below keep_bytes free, nothing is released (its pages would only be faulted in again); the same
    heap is released once keep_bytes is lower than what is free."""
    code = """
import flowcli.allocator as a
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
assert a.tune_malloc()
blocks = [bytearray(4 * 2**20) for _ in range(10)]   # 40 MB of heap blocks
keep = bytearray(1024)
del blocks
free = a.free_heap_bytes()
before = rss()
kept = a.release_free_heap(keep_bytes=free + 2**20)
middle = rss()
released = a.release_free_heap(keep_bytes=free // 2)
print(free >= 40 * 2**20, kept, (before - middle) // 2**20, released, (middle - rss()) // 2**20)
"""
    out = _run(code, {"PATH": "/usr/bin:/bin"}).split()
    assert out[:2] == ["True", "False"] and int(out[2]) < 5
    assert out[3] == "True" and int(out[4]) > 30


def test_release_free_heap_is_a_no_op_when_not_tuned(monkeypatch):
    import flowcli.allocator as a
    monkeypatch.setitem(a._state, "libc", None)
    assert a.release_free_heap() is False


def test_estimation_does_not_import_scipy():
    """scipy.interpolate (~25-40 MB resident, ~0.3 s) is only for warm start and MemFlow-P: a plain
    estimation stream must not load it (it counted against the 436x1024 peak-RSS goal)."""
    code = ("import sys, numpy as np, flowcli.engine as e, flowcli.cli\n"
            "from flowcli.model import CPU_SMALL, MemFlowNet\n"
            "s = e.FlowStream(MemFlowNet(CPU_SMALL), e.StreamOptions(iters=1))\n"
            "for i in range(2): s.push(np.full((64, 64, 3), 40 * i, np.uint8))\n"
            "print(any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules))\n"
            "from flowcli.model import forward_interpolate\n"
            "import torch; forward_interpolate(torch.zeros(2, 4, 4))\n"
            "print(any(m.startswith('scipy.interpolate') for m in sys.modules))")
    assert _run(code, {"PATH": "/usr/bin:/bin"}).split() == ["False", "True"]
