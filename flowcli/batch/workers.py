"""Running videos here or in worker processes, and stopping cleanly on SIGINT / SIGTERM.

The signal handling and the process pool go together: an interruption stops the
workers after their current pair, and the ledger keeps only finished videos.
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import FlowcliError, Terminated
from .discovery import VideoItem
from .ledger import BatchSummary, _Books, _describe, _now
from .runner import BatchSpec, VideoRunner

STOP_TIMEOUT = 60.0                   # seconds to let workers finish their current pair on interruption


class BatchInterrupted(FlowcliError):
    """SIGINT / SIGTERM: the batch stopped cleanly; exit code 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT, summary: "BatchSummary | None" = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.summary = summary


def _one_shot_handler(signum, frame):
    # further signals are ignored while the batch cleans up (bounded waits only)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_interrupt():
    """Within the block, SIGINT and SIGTERM raise :class:`Terminated` (a KeyboardInterrupt) once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, _one_shot_handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _failed(item: VideoItem, spec: BatchSpec, error: str, host: str | None = None) -> dict:
    """The ledger record of a video whose worker died (same keys as :meth:`VideoRunner.run`'s)."""
    return {"video": item.path, "output": item.name, "status": "failed", "pairs": 0, "frames": 0, "seconds": 0.0,
            "error": error, "time": _now(), "mode": spec.mode, "settings": None, "host": host}


def _run_inline(runner: VideoRunner, todo: list[VideoItem], out_root: Path, books: _Books) -> None:
    for item in todo:
        books.summary.ran += 1
        books.result(runner.run(item, out_root, on_pair=lambda i: books.pairs(runner.pairs_done)))


# ---------------------------------------------------------------------------- worker processes
def _worker_signal(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when the batch process dies (Linux PR_SET_PDEATHSIG).

    Without it a SIGKILLed batch left its workers running, still writing into OUTROOT until their video
    ended (they only noticed between videos). A parent gone before the call is caught by getppid().
    """
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the check between videos remains
        pass
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(wid: int, spec: BatchSpec, threads: int, out_root: str, inbox, outbox, parent: int) -> None:
    """A worker process: load the model once, then run the videos the parent sends, one at a time."""
    signal.signal(signal.SIGINT, _worker_signal)
    signal.signal(signal.SIGTERM, _worker_signal)
    _die_with_parent(parent)
    try:
        try:
            runner = VideoRunner(spec, threads)
        except Exception as exc:  # noqa: BLE001
            outbox.put(("fatal", wid, _describe(exc)))
            return
        outbox.put(("ready", wid))
        while True:
            try:
                msg = inbox.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:
                    return  # the batch process is gone
                continue
            if msg is None:
                return
            tid, item = msg
            last = [0.0]

            def on_pair(i, tid=tid):
                now = time.monotonic()
                if now - last[0] > 0.2:
                    last[0] = now
                    outbox.put(("pairs", wid, tid, runner.pairs_done))

            rec = runner.run(item, out_root, on_pair=on_pair)
            outbox.put(("result", wid, tid, rec))
    except KeyboardInterrupt:
        return


class _Pool:
    """N spawned worker processes, one task each at a time (the parent knows who runs what)."""

    def __init__(self, n: int, spec: BatchSpec, threads: int, out_root: Path):
        import multiprocessing as mp
        self.ctx = mp.get_context("spawn")
        self.spec, self.threads, self.out_root = spec, threads, str(out_root)
        self.outbox = self.ctx.Queue()
        self.procs: dict[int, Any] = {}
        self.inboxes: dict[int, Any] = {}
        self.next_id = 0
        for _ in range(n):
            self.start()

    def start(self) -> int:
        wid = self.next_id
        self.next_id += 1
        inbox = self.ctx.Queue()
        p = self.ctx.Process(target=_worker_main, name=f"flowcli-batch-{wid}", daemon=True,
                             args=(wid, self.spec, self.threads, self.out_root, inbox, self.outbox, os.getpid()))
        p.start()
        self.procs[wid], self.inboxes[wid] = p, inbox
        return wid

    def send(self, wid: int, msg) -> None:
        self.inboxes[wid].put(msg)

    def forget(self, wid: int) -> None:
        self.procs.pop(wid, None)
        q = self.inboxes.pop(wid, None)
        if q is not None:
            q.cancel_join_thread()
            q.close()

    def stop(self, graceful: bool, timeout: float) -> None:
        for wid, p in list(self.procs.items()):
            if p.is_alive():
                if graceful:
                    with contextlib.suppress(Exception):
                        self.inboxes[wid].put(None)
                else:
                    with contextlib.suppress(OSError):
                        os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
                p.join(5)

    def close(self) -> None:
        for wid in list(self.procs):
            self.forget(wid)
        self.outbox.cancel_join_thread()
        self.outbox.close()


def _run_processes(spec: BatchSpec, todo: list[VideoItem], out_root: Path, workers: int, threads: int,
                   books: _Books) -> None:
    n = min(workers, len(todo))
    pool = _Pool(n, spec, threads, out_root)
    tasks = list(enumerate(todo))
    tasks.reverse()  # pop() from the end = in order
    running: dict[int, tuple[int, VideoItem]] = {}   # wid -> task
    idle: list[int] = []
    progress: dict[int, int] = {}
    remaining = len(todo)
    ready: set[int] = set()
    early_deaths = 0
    clean = False
    try:
        while remaining:
            try:
                msg = pool.outbox.get(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is not None:
                kind, wid = msg[0], msg[1]
                if kind == "fatal":
                    raise FlowcliError(f"batch worker could not start: {msg[2]}")
                if kind == "ready":
                    ready.add(wid)
                    idle.append(wid)
                elif kind == "pairs":
                    progress[wid] = msg[3]
                    books.pairs(sum(progress.values()))
                elif kind == "result":
                    running.pop(wid, None)
                    progress.pop(wid, None)
                    remaining -= 1
                    books.result(msg[3])
                    idle.append(wid)
            # dead workers: their video failed (e.g. killed for memory); replace them
            for wid, p in list(pool.procs.items()):
                if p.is_alive() or p.exitcode is None:
                    continue
                task = running.pop(wid, None)
                pool.forget(wid)
                with contextlib.suppress(ValueError):
                    idle.remove(wid)
                if wid not in ready:
                    early_deaths += 1
                    if early_deaths >= 3:
                        raise FlowcliError(f"batch worker processes keep dying at start (exit code {p.exitcode})")
                if task is not None:
                    remaining -= 1
                    tid, item = task
                    books.result(_failed(item, spec, f"worker process died (exit code {p.exitcode}; "
                                                      "out of memory?)", socket.gethostname()))
                if tasks or running:
                    pool.start()
            while idle and tasks:
                wid = idle.pop(0)
                tid, item = tasks.pop()
                running[wid] = (tid, item)
                books.summary.ran += 1
                pool.send(wid, (tid, item))
        clean = True
    except BaseException:
        # stop: workers finish nothing more; an interrupted video has no ledger line
        for wid, p in pool.procs.items():
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while running and time.monotonic() < deadline and any(p.is_alive() for p in pool.procs.values()):
            try:
                msg = pool.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg[0] == "result" and msg[3]["status"] in ("done", "failed"):
                running.pop(msg[1], None)
                with contextlib.suppress(Exception):
                    books.result(msg[3])   # finished just before the stop: keep the record
        raise
    finally:
        pool.stop(graceful=clean, timeout=STOP_TIMEOUT if clean else 10.0)
        pool.close()
