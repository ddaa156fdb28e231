"""Flow for many videos: one output folder per video, a ledger, shards, worker processes, Ray.

MemFlow's memory runs in order inside a video, so the unit of work is one
whole video and parallelism is across videos. Each video is processed by
:func:`flowcli.pipeline.run_estimate` (or :func:`flowcli.predict.run_predict`)
exactly as ``flowcli estimate`` / ``flowcli predict-next`` would, into
``OUTROOT/<name>/``; this package only decides *which* videos run *where* and
keeps the books.

Layout of OUTROOT::

    OUTROOT/
      ledger.jsonl                  one JSON line per finished video (done or failed)
      ledger.shard-0-of-4.jsonl     the same for `--shard 0/4` (every shard has its own file)
      cam1__clip_0001/              one folder per video: 000000.flo ..., flowcli.json
      clip-3fa2b1c0/                a name shared by two inputs gets a hash suffix

Names: the video's path relative to the folder (or glob base) it was found in,
or the path as given on the command line / in the manifest when that is a
relative path without ``..`` (else the file name), without the extension,
separators replaced by ``__`` and other characters than letters, digits, ``_``
and ``-`` by ``_``. Two inputs with the same name (case-insensitive) both get
``-`` plus the first 8 hex digits of the sha1 of their absolute path. A name
over 100 bytes (UTF-8; file systems allow 255 bytes) is cut to 91 and ends
with ``-`` plus 8 hex digits of the sha1 of the whole name. A video keeps the
name the ledgers of OUTROOT already give it, so adding inputs later never
renames existing outputs.

Done: a video is complete when ``OUTROOT/<name>/flowcli.json`` (written last)
records the same video and the same settings; such videos are skipped. A failed
video (corrupt, unreadable, too few frames, ...) is recorded in the ledger and
the batch goes on; on a rerun it is skipped unless ``retry_failed``. An
interrupted video has no ledger line; a rerun resumes it inside the video (the
pairs already written are kept). Disk full (ENOSPC/EDQUOT) stops the batch: it
is not the video's fault, so it is not recorded as a failure.

Shards: ``shard=(K, N)`` keeps the videos whose name hashes to K
(``int(sha1(name)[:8], 16) % N``): deterministic, no coordination, stable when
videos are added. Each shard appends to its own ledger file.

Modules: ``discovery`` (inputs and names), ``ledger`` (shards, ledger files, the
summary), ``plan`` (what runs, what is skipped), ``runner`` (settings and one
video), ``workers`` (in this process or worker processes; signals), ``ray_backend``
(Ray); :func:`run_batch` and :func:`batch_status` are here. None imports torch
before a model is loaded.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from .discovery import VIDEO_EXTENSIONS, VideoItem, assign_names, discover, stable_name
from .ledger import (BatchSummary, DiskFullError, Ledger, _Books, _latest, ledger_name, parse_shard, read_ledger,
                     shard_of)
from .plan import BatchPlan, plan_batch
from .ray_backend import _run_ray
from .runner import BatchSpec, VideoRunner
from .workers import BatchInterrupted, Terminated, _run_inline, _run_processes, signals_as_interrupt

__all__ = ["VIDEO_EXTENSIONS", "BatchSpec", "VideoItem", "BatchPlan", "BatchSummary", "DiskFullError",
           "BatchInterrupted", "Terminated", "VideoRunner", "discover", "assign_names", "plan_batch",
           "run_batch", "read_ledger", "ledger_name", "parse_shard", "shard_of", "stable_name",
           "signals_as_interrupt", "batch_status"]


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run_batch(inputs: Sequence[str] = (), out_root: str | os.PathLike = "", spec: BatchSpec | None = None, *,
              manifest: str | os.PathLike | None = None, shard: str | tuple[int, int] | None = None,
              workers: int | None = None, ray: str | bool | None = None, retry_failed: bool = False,
              quiet: bool = True, runner: VideoRunner | None = None, **settings: Any) -> BatchSummary:
    """Run flow over many videos into ``out_root`` (see the module docstring); return a summary.

    ``spec`` (or keyword ``settings``, the fields of :class:`BatchSpec`) says what to
    compute. ``workers``: parallel worker processes (default 1: in this process), or
    with ``ray`` the number of Ray actors (default: cluster CPUs // threads).
    ``ray``: None (no Ray), True or "" (``ray.init()`` default: RAY_ADDRESS or a new
    local cluster) or an address ("auto", "local", "HOST:PORT", "ray://HOST:PORT").
    Raises :class:`DiskFullError` (disk full) and KeyboardInterrupt (interrupted; the
    ledger is consistent, a rerun resumes). Failed videos do not raise: see
    ``summary.failures`` / ``summary.ok``.

    For benchmarks: ``summary.frames``, ``summary.seconds``, ``summary.frames_per_second``.
    With ``workers > 1`` the workers are started with the ``spawn`` method: a script
    calling this needs the usual ``if __name__ == "__main__":`` guard.
    """
    if not out_root:
        raise ValueError("out_root is required")
    spec = replace(spec or BatchSpec(), **settings).normalized()
    shard_t = parse_shard(shard)
    out = Path(out_root)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output root exists and is not a folder")
    use_ray = ray is not None and ray is not False
    address = None if ray in (None, True, False, "") else str(ray)
    n_workers = int(workers) if workers else (None if use_ray else 1)
    if n_workers is not None and n_workers < 1:
        raise ValueError("workers must be >= 1")
    threads = spec.threads or (None if use_ray else max(1, _cores() // (n_workers or 1)))

    t0 = time.perf_counter()
    if runner is None:
        # validates weights and options here, before any work (workers load their own copy)
        runner = VideoRunner(spec, threads if (n_workers == 1 and not use_ray) else None)
    plan = plan_batch(inputs, out, manifest=manifest, shard=shard_t, retry_failed=retry_failed,
                      overwrite=spec.overwrite, key=runner.key)
    todo = plan.todo()
    backend = "ray" if use_ray else ("processes" if (n_workers or 1) > 1 and len(todo) > 1 else "inline")
    summary = BatchSummary(output=str(out), mode=spec.mode,
                           shard=f"{shard_t[0]}/{shard_t[1]}" if shard_t else None, backend=backend,
                           workers=n_workers or 0, threads=threads, videos=len(plan.items),
                           skipped=plan.count("skip-done"), skipped_failed=plan.count("skip-failed"),
                           ledger=str(out / ledger_name(shard_t)))
    for it in plan.items:
        if plan.actions[it.path] == "skip-failed":
            last = plan.previous[it.path]
            summary.failures.append({"video": it.path, "output": it.name, "error": last.get("error"),
                                     "earlier": True})
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / ledger_name(shard_t))
    for rec in plan.repairs:
        ledger.append(rec)
    from ..cli import progress
    bar = progress(total=len(todo), desc="batch", unit="video", quiet=quiet)
    books = _Books(summary, ledger, bar, quiet)
    try:
        with bar:
            if not todo:
                pass
            elif backend == "inline":
                _run_inline(runner, todo, out, books)
            else:
                del runner  # the workers load their own
                if backend == "ray":
                    summary.workers, summary.threads = _run_ray(spec, todo, out, address, n_workers, spec.threads,
                                                                books)
                else:
                    _run_processes(spec, todo, out, n_workers, threads, books)
    except KeyboardInterrupt as exc:
        summary.seconds = round(time.perf_counter() - t0, 3)
        summary.interrupted = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        exc.summary = summary  # type: ignore[attr-defined]
        raise
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def batch_status(out_root: str | os.PathLike, inputs: Sequence[str] = (), manifest=None,
                 shard: str | tuple[int, int] | None = None) -> dict:
    """Latest status of every video in the ledgers of ``out_root`` (and, given inputs, what is pending)."""
    out = Path(out_root)
    if not out.is_dir():
        raise InputError(f"{out}: no such output folder")
    latest = _latest(read_ledger(out))
    shard_t = parse_shard(shard)
    selected = None
    if inputs or manifest is not None:
        known = {p: r["output"] for p, r in latest.items() if r.get("output")}
        items = assign_names(discover(inputs, manifest, exclude=out), known)
        if shard_t is not None:
            items = [it for it in items if shard_of(it.name, shard_t[1]) == shard_t[0]]
        selected = {it.path: it for it in items}
    videos = {p: r for p, r in latest.items() if selected is None or p in selected}
    done = [r for r in videos.values() if r["status"] == "done"]
    failed = [r for r in videos.values() if r["status"] != "done"]
    d = {"command": "batch-status", "output": str(out), "done": len(done), "failed": len(failed),
         "pairs": sum(int(r.get("pairs") or 0) for r in done),
         "seconds": round(sum(float(r.get("seconds") or 0) for r in done), 3),
         "failures": [{"video": r["video"], "output": r.get("output"), "error": r.get("error"),
                       "time": r.get("time")} for r in failed],
         "ledgers": sorted(p.name for p in out.glob("ledger*.jsonl"))}
    if selected is not None:
        d["videos"] = len(selected)
        d["pending"] = [{"video": p, "output": it.name} for p, it in selected.items() if p not in latest]
    return d
