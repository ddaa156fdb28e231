"""Flow for many videos: one output folder per video, a ledger, shards, worker processes, Ray.

MemFlow's memory runs in order inside a video, so the unit of work is one
whole video and parallelism is across videos. Each video is processed by
:func:`flowcli.pipeline.run_estimate` (or :func:`flowcli.predict.run_predict`)
exactly as ``flowcli estimate`` / ``flowcli predict-next`` would, into
``OUTROOT/<name>/``; this module only decides *which* videos run *where* and
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
``-`` plus the first 8 hex digits of the sha1 of their absolute path. A video
keeps the name the ledgers of OUTROOT already give it, so adding inputs later
never renames existing outputs.

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
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import FlowcliError, InputError

__all__ = ["VIDEO_EXTENSIONS", "BatchSpec", "VideoItem", "BatchPlan", "BatchSummary", "DiskFullError",
           "BatchInterrupted", "Terminated", "VideoRunner", "discover", "assign_names", "plan_batch",
           "run_batch", "read_ledger", "ledger_name", "parse_shard", "shard_of", "stable_name",
           "signals_as_interrupt", "batch_status"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv", ".y4m")
LEDGER = "ledger.jsonl"
REPORT_FILE = "flowcli.json"          # = flowcli.pipeline.REPORT_FILE (not imported: that pulls in torch)
MAX_NAME = 100
STOP_TIMEOUT = 60.0                   # seconds to let workers finish their current pair on interruption

# atomic_path temp files: ".<name>.<8 random chars>.tmp<suffix>"
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
_UNSAFE = re.compile(r"[^\w\-]+", re.UNICODE)


# ============================================================================ errors
class DiskFullError(FlowcliError):
    """The disk (or quota) is full: the batch stops; nothing partial is left, a rerun resumes."""


class BatchInterrupted(FlowcliError):
    """SIGINT / SIGTERM: the batch stopped cleanly; exit code 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT, summary: "BatchSummary | None" = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.summary = summary


class Terminated(KeyboardInterrupt):
    """KeyboardInterrupt raised for SIGTERM (or SIGINT) by :func:`signals_as_interrupt`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def _disk_full(exc: BaseException | None) -> OSError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _describe(exc: BaseException) -> str:
    """One line for the ledger."""
    if isinstance(exc, FlowcliError):
        msg = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        msg = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    else:
        detail = str(exc)
        msg = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if type(exc).__name__ == "UsageError" and hasattr(exc, "format_message"):
        msg = exc.format_message()
    return " ".join(msg.split()) or type(exc).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ============================================================================ settings
@dataclass
class BatchSpec:
    """What to compute for every video (the estimate / predict-next options)."""

    mode: str = "estimate"                # "estimate" or "predict-next"
    weights: str | None = None
    preset: str | None = None
    iters: int | None = None
    warm_start: bool = False
    device: str = "auto"
    threads: int | None = None            # torch threads per worker (None: cores // workers)
    max_side: int | None = None
    scale: float | None = None
    start: int = 0
    end: int | None = None
    step: int = 1
    formats: tuple[str, ...] = ()
    video: bool = False
    max_flow: float | None = None
    overwrite: bool = False
    extra: dict = field(default_factory=dict)   # further StreamOptions fields, e.g. {"precision": "bf16"}
    # predict-next only
    frames: bool = False
    prior_flows: str | None = None        # ROOT: ROOT/<name>/ holds each video's past flows
    estimate_weights: str | None = None
    estimate_preset: str | None = None
    with_estimate: bool = False
    include_first: bool = False
    debug: bool = False                   # print tracebacks of failed videos on stderr

    def normalized(self) -> "BatchSpec":
        """Defaults filled in, paths made absolute (workers may run elsewhere)."""
        if self.mode not in ("estimate", "predict-next"):
            raise ValueError(f"mode must be estimate or predict-next, got {self.mode!r}")
        formats = tuple(dict.fromkeys(self.formats))
        if not formats:
            if self.mode == "estimate" and not self.video:
                formats = ("flo",)
            if self.mode == "predict-next" and (not self.video or self.with_estimate):
                formats = ("flo",)

        def absolute(p):
            return os.path.abspath(p) if p and os.path.exists(p) else p

        return replace(self, formats=formats, weights=absolute(self.weights),
                       estimate_weights=absolute(self.estimate_weights),
                       prior_flows=os.path.abspath(self.prior_flows) if self.prior_flows else None,
                       extra={k: v for k, v in self.extra.items() if v is not None})


# ============================================================================ inputs and names
@dataclass(frozen=True)
class VideoItem:
    """One unit of work: a video file or an image-sequence folder."""

    path: str                 # absolute
    rel: str                  # what the name is made from (posix separators)
    is_dir: bool = False
    name: str = ""            # output folder under OUTROOT (assign_names)
    error: str | None = None  # e.g. a manifest entry that does not exist: recorded as failed


def _has_media(folder: Path) -> tuple[bool, bool]:
    """(has video files, has image files) directly in ``folder``."""
    from .sources import IMAGE_EXTENSIONS
    videos = images = False
    try:
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            videos = videos or suffix in VIDEO_EXTENSIONS
            images = images or suffix in IMAGE_EXTENSIONS
            if videos and images:
                break
    except OSError:
        pass
    return videos, images


def _inside(path: str, root: str | None) -> bool:
    return root is not None and (path == root or path.startswith(root.rstrip(os.sep) + os.sep))


def _given_rel(spec: str, path: str) -> str:
    """The path as the user wrote it if it is relative and stays below, else its last component."""
    p = Path(spec)
    if not p.is_absolute() and ".." not in p.parts and p.parts and str(p) != ".":
        return p.as_posix()
    return Path(path).name


def _walk(root: Path, exclude: str | None) -> list[tuple[str, bool]]:
    """Videos (recursively) and image-sequence folders under ``root``: [(abs path, is_dir)].

    A folder with images and no videos is one image sequence (a leaf: not searched
    further). Hidden files and folders, and ``exclude`` (OUTROOT), are skipped.
    """
    from .cli import natural_key
    found: list[tuple[str, bool]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirpath_abs = os.path.abspath(dirpath)
        if _inside(dirpath_abs, exclude):
            dirnames[:] = []
            continue
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        videos = sorted((f for f in filenames if not f.startswith(".")
                         and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS), key=natural_key)
        if not videos and dirpath_abs != os.path.abspath(root) and _has_media(Path(dirpath))[1]:
            found.append((dirpath_abs, True))
            dirnames[:] = []
            continue
        found.extend((os.path.join(dirpath_abs, f), False) for f in videos)
    return found


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if glob.has_magic(part):
            break
        keep.append(part)
    return str(Path(*keep)) if keep else "."


def _expand(spec: str, shown: str, exclude: str | None, from_manifest: bool) -> list[VideoItem]:
    """``spec``: a path to open; ``shown``: as written (names come from it)."""
    from .cli import natural_key
    path = Path(spec)
    if path.is_dir():
        absdir = os.path.abspath(spec)
        has_videos, has_images = _has_media(path)
        if has_images and not has_videos:
            return [VideoItem(absdir, _given_rel(shown, absdir), True)]
        found = _walk(path, exclude)
        if not found:
            raise InputError(f"{shown}: no videos ({', '.join(VIDEO_EXTENSIONS[:5])}, ...) or image folders "
                             "found in this folder")
        return [VideoItem(p, Path(os.path.relpath(p, absdir)).as_posix(), d) for p, d in found]
    if path.exists():
        absfile = os.path.abspath(spec)
        return [VideoItem(absfile, _given_rel(shown, absfile), False)]
    if glob.has_magic(spec):
        base = os.path.abspath(_glob_base(spec))
        items = []
        for match in sorted(glob.glob(spec, recursive=True), key=natural_key):
            m = os.path.abspath(match)
            if _inside(m, exclude) or Path(m).name.startswith("."):
                continue
            if os.path.isdir(m):
                if _has_media(Path(m)) == (False, True):
                    items.append(VideoItem(m, Path(os.path.relpath(m, base)).as_posix(), True))
            elif os.path.splitext(m)[1].lower() in VIDEO_EXTENSIONS:
                items.append(VideoItem(m, Path(os.path.relpath(m, base)).as_posix(), False))
        if not items:
            raise InputError(f"{shown}: no videos or image folders match this pattern")
        return items
    if from_manifest:
        absmiss = os.path.abspath(spec)
        return [VideoItem(absmiss, _given_rel(shown, absmiss), False, error=f"{shown}: no such file or folder")]
    raise InputError(f"{shown}: no such file or folder")


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Lines of a manifest: [(path to open, path as written)]; blank lines and ``#`` lines are skipped.

    Relative paths are relative to the manifest's own folder.
    """
    mpath = Path(path)
    try:
        text = mpath.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: manifest is not UTF-8 text") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(os.path.expanduser(line))
        out.append((str(p if p.is_absolute() else mpath.parent / p), line))
    return out


def discover(inputs: Sequence[str] = (), manifest: str | os.PathLike | None = None,
             exclude: str | os.PathLike | None = None) -> list[VideoItem]:
    """The videos named by ``inputs`` (files, folders, globs) and ``manifest``, each once, in order.

    Folders are searched recursively for video files; a folder holding images
    (and no videos) is one image sequence. ``exclude`` (the output root) is never
    searched. A command-line input that does not exist is an InputError; a manifest
    line that does not exist becomes an item with ``error`` set (recorded as failed).
    """
    excl = os.path.abspath(exclude) if exclude is not None else None
    items: list[VideoItem] = []
    for spec in inputs:
        items.extend(_expand(str(spec), str(spec), excl, from_manifest=False))
    if manifest is not None:
        for spec, shown in read_manifest(manifest):
            try:
                items.extend(_expand(spec, shown, excl, from_manifest=True))
            except InputError as exc:
                items.append(VideoItem(os.path.abspath(spec), _given_rel(shown, spec), True, error=str(exc)))
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.path not in seen:
            seen.add(it.path)
            unique.append(it)
    return unique


def stable_name(rel: str, is_dir: bool = False) -> str:
    """Folder name for a relative path: extension dropped, separators -> ``__``, unsafe chars -> ``_``."""
    p = Path(rel.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".", "/")]
    if parts and not is_dir:
        parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]
    name = "__".join(_UNSAFE.sub("_", x).strip("_") or "_" for x in parts) or "video"
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def _hashed(name: str, path: str) -> str:
    return f"{name[:MAX_NAME - 9]}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def assign_names(items: Sequence[VideoItem], known: dict[str, str] | None = None) -> list[VideoItem]:
    """Give every item its output folder name (see the module docstring).

    ``known``: absolute video path -> name already used in OUTROOT (from the ledgers);
    those names are kept and reserved.
    """
    known = known or {}
    taken = {n.casefold(): p for p, n in known.items()}
    names: dict[str, str] = {}
    groups: dict[str, list[VideoItem]] = {}
    for it in items:
        if it.path in known:
            names[it.path] = known[it.path]
        else:
            groups.setdefault(stable_name(it.rel, it.is_dir).casefold(), []).append(it)
    used = {n.casefold() for n in names.values()}
    for key, group in groups.items():
        base = stable_name(group[0].rel, group[0].is_dir)
        if len(group) == 1 and key not in taken and key not in used:
            names[group[0].path] = base
        else:
            for it in group:
                names[it.path] = _hashed(stable_name(it.rel, it.is_dir), it.path)
        used.update(names[it.path].casefold() for it in group)
    return [replace(it, name=names[it.path]) for it in items]


# ============================================================================ shards and ledger
def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 0 <= K < N."""
    if value is None:
        return None
    if isinstance(value, tuple):
        k, n = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if not m:
            raise ValueError(f"expected K/N (e.g. 0/4), got {value!r}")
        k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard K/N needs N >= 1 and 0 <= K < N, got {k}/{n}")
    return k, n


def shard_of(name: str, n: int) -> int:
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) % n


def ledger_name(shard: tuple[int, int] | None) -> str:
    return LEDGER if shard is None else f"ledger.shard-{shard[0]}-of-{shard[1]}.jsonl"


def read_ledger(out_root: str | os.PathLike) -> list[dict]:
    """All records of all ledger files in ``out_root``, oldest first (unparseable lines are skipped)."""
    root = Path(out_root)
    records = []
    for path in sorted(root.glob("ledger*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash or a full disk
            if isinstance(rec, dict) and "video" in rec and "status" in rec:
                records.append((str(rec.get("time", "")), path.name, n, rec))
    records.sort(key=lambda r: r[:3])
    return [r[3] for r in records]


def _latest(records: Iterable[dict]) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for rec in records:
        last[rec["video"]] = rec
    return last


class Ledger:
    """Append-only JSON lines; one complete line per write, fsync'd."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        data = (json.dumps(record, default=str) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # an earlier line was torn (crash, disk full): start afresh
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if _disk_full(exc):
                raise DiskFullError(f"disk full: cannot append to {self.path} ({exc.strerror})") from None
            raise


# ============================================================================ one video
def _clean_stale_temps(out_dir: Path) -> None:
    """Remove temp files a killed run left (atomic writes that never got renamed)."""
    if not out_dir.is_dir():
        return
    for dirpath, _, filenames in os.walk(out_dir):
        for f in filenames:
            if _TEMP_RE.match(f):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, f))


def _remove_empty_tree(path: Path) -> None:
    """Remove ``path`` if it holds only empty folders."""
    if not path.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class VideoRunner:
    """Loads the model(s) once; :meth:`run` processes one whole video into ``OUTROOT/<name>/``.

    Used in the batch process (``workers=1``), in each worker process and in each
    Ray actor. :meth:`run` never raises for a bad video: it returns a ledger record
    with status ``done``, ``failed`` or ``abort`` (disk full: stop the batch);
    only KeyboardInterrupt passes through.
    """

    def __init__(self, spec: BatchSpec, threads: int | None = None):
        import torch

        from .cmd_estimate import prepare_engine

        spec = spec.normalized()
        self.spec = spec
        if threads:
            torch.set_num_threads(int(threads))
        kind = "predict" if spec.mode == "predict-next" else "estimate"
        if kind == "predict":
            from .errors import CheckpointError
            from .weights import default_name
            if spec.weights is None and default_name("predict") is None:
                raise CheckpointError("no MemFlow-P (prediction) weights are shipped yet; pass --weights PATH")
            if spec.prior_flows is not None and not os.path.isdir(spec.prior_flows):
                raise InputError(f"{spec.prior_flows}: --prior-flows is not a folder")
        loaded, options, dev = prepare_engine(spec.weights, spec.preset, spec.iters, spec.device, None,
                                              spec.max_side, spec.scale, spec.warm_start, kind=kind)
        for name, value in spec.extra.items():  # options stream_options gained later (precision, ...)
            if hasattr(options, name):
                setattr(options, name, value)
        self.loaded, self.options, self.device = loaded, options, dev
        self.weights_info = {"name": loaded.name, "path": loaded.path, "sha256": loaded.sha256,
                             "preset": loaded.preset}
        self.estimator, self.estimate_info = None, None
        self.prior_names: dict[str, str] = {}
        if kind == "predict":
            from .cmd_predict import _check_kind
            from .weights import load_weights
            _check_kind(loaded, True, "--weights")
            if spec.prior_flows is None:
                est = load_weights(spec.estimate_weights, preset=spec.estimate_preset, kind="estimate", device=dev)
                _check_kind(est, False, "--estimate-weights")
                self.estimator = est.model
                self.options.iters = spec.iters or est.iters
                self.estimate_info = {"name": est.name, "path": est.path, "sha256": est.sha256,
                                      "preset": est.preset}
            else:  # the prior-flows root may be an estimate batch: use its names
                self.prior_names = {r["video"]: r["output"] for r in read_ledger(spec.prior_flows)
                                    if r.get("output")}
        self.settings = self._settings()
        self.key = hashlib.sha1(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.pairs_done = 0          # progress of the current video (read by the Ray driver)
        self.stop_requested = False  # set by a Ray actor's stop(): raise KeyboardInterrupt at the next pair

    def _settings(self) -> dict:
        s, o = self.spec, self.options
        extra = {k: getattr(o, k) for k in sorted(s.extra) if hasattr(o, k)}
        d = {"mode": s.mode, "weights": self.weights_info["sha256"], "max_side": o.max_side, "scale": o.scale,
             "start": s.start, "end": s.end, "step": s.step, "formats": list(s.formats), "video": s.video,
             "max_flow": s.max_flow, **extra}
        if s.mode == "estimate":
            d.update(iters=o.iters, warm_start=o.warm_start)
        else:
            d.update(frames=s.frames, with_estimate=s.with_estimate, include_first=s.include_first,
                     prior_flows=s.prior_flows)
            if self.estimate_info:
                d.update(estimate_weights=self.estimate_info["sha256"], iters=o.iters, warm_start=o.warm_start)
        return d

    # -------------------------------------------------------------------------------------------
    def _on_pair(self, callback):
        def on_pair(i):
            self.pairs_done += 1
            if self.stop_requested:
                raise KeyboardInterrupt
            if callback is not None:
                callback(i)
        return on_pair

    def run(self, item: VideoItem, out_root: str | os.PathLike,
            on_pair: Callable[[int], None] | None = None) -> dict:
        """Process one video; return its ledger record (never raises, except KeyboardInterrupt)."""
        from .cmd_estimate import open_job_source
        from .pipeline import write_report

        spec = self.spec
        out_dir = Path(out_root) / item.name
        rec: dict[str, Any] = {"video": item.path, "output": item.name, "status": "failed", "pairs": 0,
                               "frames": 0, "seconds": 0.0, "error": None, "time": None, "mode": spec.mode,
                               "settings": self.key, "host": socket.gethostname()}
        t0 = time.perf_counter()
        self.pairs_done = 0
        created = not out_dir.exists()
        try:
            if item.error:
                raise InputError(item.error)
            _clean_stale_temps(out_dir)
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            source = open_job_source(item.path, None, spec.start, spec.end, spec.step)
            common = {"input": source.name, "output": str(out_dir), "started": started,
                      "weights": self.weights_info, "max_side": self.options.max_side,
                      "scale": self.options.scale, **{k: getattr(self.options, k) for k in spec.extra
                                                      if hasattr(self.options, k)},
                      "start": spec.start, "end": spec.end, "step": spec.step, "formats": list(spec.formats),
                      "video": spec.video}
            with source:
                if spec.mode == "estimate":
                    from .pipeline import EstimateJob, run_estimate
                    job = EstimateJob(out_dir=out_dir, formats=spec.formats, video=spec.video,
                                      overwrite=spec.overwrite, max_flow=spec.max_flow, options=self.options)
                    report = run_estimate(self.loaded.model, job, source, weights_info=self.weights_info,
                                          start=spec.start, step=spec.step, device=self.device,
                                          on_pair=self._on_pair(on_pair))
                    record = {"command": "estimate", **common, "iters": self.options.iters,
                              "warm_start": self.options.warm_start}
                    rec["pairs"], rec["frames"] = report.pairs, report.pairs + 1 if report.pairs else 0
                else:
                    from .predict import PredictJob, run_predict
                    prior = None
                    if spec.prior_flows is not None:
                        prior = Path(spec.prior_flows) / self.prior_names.get(item.path, item.name)
                    job = PredictJob(out_dir=out_dir, formats=spec.formats, video=spec.video, frames=spec.frames,
                                     with_estimate=spec.with_estimate, include_first=spec.include_first,
                                     prior_flows=prior, overwrite=spec.overwrite, max_flow=spec.max_flow,
                                     options=self.options)
                    report = run_predict(self.loaded.model, job, source, weights_info=self.weights_info,
                                         estimator=self.estimator, estimate_info=self.estimate_info,
                                         start=spec.start, step=spec.step, device=self.device,
                                         on_frame=self._on_pair(on_pair))
                    record = {"command": "predict-next", **common,
                              "past_flows": "prior-flows" if prior is not None else "estimator",
                              "prior_flows": str(prior) if prior is not None else None,
                              "estimate_weights": self.estimate_info,
                              "iters": self.options.iters if self.estimator is not None else None,
                              "warm_start": self.options.warm_start if self.estimator is not None else None,
                              "write_frames": spec.frames, "with_estimate": spec.with_estimate,
                              "include_first": spec.include_first}
                    rec["pairs"], rec["frames"] = report.predictions, report.frames
            record.update({"device": str(self.device), **report.to_dict(),
                           "batch": {"video": item.path, "name": item.name, "settings": self.key}})
            write_report(out_dir, record)   # last: its presence means "complete"
            rec["status"] = "done"
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad video must not stop the batch
            full = _disk_full(exc)
            if full is not None:
                where = f" writing {full.filename}" if full.filename else ""
                rec["status"] = "abort"
                rec["error"] = f"disk full{where} ({full.strerror or 'No space left on device'})"
            else:
                rec["error"] = _describe(exc)
                if spec.debug:
                    traceback.print_exc(file=sys.stderr)
            if created:
                _remove_empty_tree(out_dir)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        rec["time"] = _now()
        return rec


# ============================================================================ planning
@dataclass
class BatchPlan:
    items: list[VideoItem]                  # this shard's videos, named
    actions: dict[str, str]                 # path -> run | retry | skip-done | skip-failed
    previous: dict[str, dict]               # path -> latest ledger record
    repairs: list[dict] = field(default_factory=list)  # done videos missing a ledger line

    def todo(self) -> list[VideoItem]:
        return [it for it in self.items if self.actions[it.path] in ("run", "retry")]

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions.values() if a == action)


def _complete(out_root: Path, item: VideoItem, key: str | None) -> dict | None:
    rep = _read_json(out_root / item.name / REPORT_FILE)
    if not rep:
        return None
    b = rep.get("batch") or {}
    if b.get("video") != item.path or (key is not None and b.get("settings") != key):
        return None
    return rep


def plan_batch(inputs: Sequence[str], out_root: str | os.PathLike, *, manifest=None,
               shard: tuple[int, int] | None = None, retry_failed: bool = False, overwrite: bool = False,
               key: str | None = None) -> BatchPlan:
    """Find, name and shard the videos; decide for each whether it runs (``key``: settings hash)."""
    out_root = Path(out_root)
    items = discover(inputs, manifest, exclude=out_root)
    records = read_ledger(out_root) if out_root.is_dir() else []
    known: dict[str, str] = {}
    for rec in records:
        if rec.get("output"):
            known.setdefault(rec["video"], rec["output"])
    items = assign_names(items, known)
    if shard is not None:
        items = [it for it in items if shard_of(it.name, shard[1]) == shard[0]]
    previous = _latest(records)
    actions: dict[str, str] = {}
    repairs = []
    for it in items:
        last = previous.get(it.path)
        if overwrite:
            actions[it.path] = "run"
            continue
        rep = _complete(out_root, it, key)
        if rep is not None:
            actions[it.path] = "skip-done"
            if not last or last.get("status") != "done" or (key is not None and last.get("settings") != key):
                repairs.append({"video": it.path, "output": it.name, "status": "done",
                                "pairs": rep.get("pairs", 0), "frames": rep.get("frames", 0),
                                "seconds": rep.get("seconds", 0.0), "error": None, "time": _now(),
                                "mode": (rep.get("command") or ""), "settings": key,
                                "host": socket.gethostname(), "note": "found complete on disk"})
        elif last is not None and last.get("status") == "failed":
            actions[it.path] = "retry" if retry_failed else "skip-failed"
        else:
            actions[it.path] = "run"
    return BatchPlan(items, actions, previous, repairs)


# ============================================================================ running
@dataclass
class BatchSummary:
    """What :func:`run_batch` did (``to_dict()`` is the ``--json`` summary)."""

    output: str
    mode: str
    shard: str | None
    backend: str                 # inline | processes | ray
    workers: int
    threads: int | None
    videos: int = 0              # videos in this shard
    ran: int = 0                 # videos started this run
    done: int = 0                # finished this run
    failed: int = 0              # failed this run
    skipped: int = 0             # already complete
    skipped_failed: int = 0      # failed earlier, not retried (retry with --retry-failed)
    pairs: int = 0               # pairs (estimate) or predictions (predict-next) of videos done this run
    frames: int = 0              # frames of videos done this run
    seconds: float = 0.0         # wall time of the run
    failures: list = field(default_factory=list)   # [{video, output, error}] failed this run or before
    ledger: str = ""
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(command="batch", ok=self.ok, frames_per_second=round(self.frames_per_second, 4))
        return d


class _Books:
    """The parent's bookkeeping: ledger lines, counters, progress bar."""

    def __init__(self, summary: BatchSummary, ledger: Ledger, bar, quiet: bool):
        self.summary, self.ledger, self.bar, self.quiet = summary, ledger, bar, quiet
        self.live_pairs = 0

    def message(self, text: str) -> None:
        if self.quiet:
            return
        line = f"flowcli: {text}"
        if self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def result(self, rec: dict) -> None:
        if rec["status"] == "abort":
            raise DiskFullError(f"{rec['error']}; video {rec['video']} was not finished (nothing partial is "
                                "left; free some space and rerun the same command to resume)")
        if rec["status"] == "interrupted":
            return
        self.ledger.append(rec)
        s = self.summary
        if rec["status"] == "done":
            s.done += 1
            s.pairs += int(rec.get("pairs") or 0)
            s.frames += int(rec.get("frames") or 0)
        else:
            s.failed += 1
            s.failures.append({"video": rec["video"], "output": rec["output"], "error": rec["error"]})
            self.message(f"failed: {rec['output']}: {rec['error']}")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(pairs=s.pairs, failed=s.failed, refresh=False)

    def pairs(self, n: int) -> None:
        if self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.set_postfix(pairs=self.summary.pairs + n, failed=self.summary.failed)


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


def _worker_main(wid: int, spec: BatchSpec, threads: int, out_root: str, inbox, outbox, parent: int) -> None:
    """A worker process: load the model once, then run the videos the parent sends, one at a time."""
    signal.signal(signal.SIGINT, _worker_signal)
    signal.signal(signal.SIGTERM, _worker_signal)
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


# ---------------------------------------------------------------------------- Ray
class _RayWorker:
    """A Ray actor: loads the model once, runs whole videos (decoding here, writing to shared storage)."""

    def __init__(self, spec: BatchSpec, threads: int, out_root: str):
        self.out_root = out_root
        self.error = None
        try:
            self.runner = VideoRunner(spec, threads)
        except Exception as exc:  # noqa: BLE001
            self.runner = None
            self.error = f"on {socket.gethostname()}: {_describe(exc)}"

    def run(self, item: VideoItem) -> dict:
        if self.runner is None:
            return {"status": "fatal", "error": self.error}
        try:
            return self.runner.run(item, self.out_root)
        except KeyboardInterrupt:
            return {"status": "interrupted", "video": item.path}

    def progress(self) -> int:
        return self.runner.pairs_done if self.runner is not None else 0

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop_requested = True


def _ray_init(address: str | None, quiet: bool):
    import logging

    import ray
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if quiet:
        kwargs["logging_level"] = logging.ERROR
    if address in (None, "", "local") and (address == "local" or not os.environ.get("RAY_ADDRESS")):
        kwargs["include_dashboard"] = False
    ray.init(address=address or None, **kwargs)
    return ray, True


def _run_ray(spec: BatchSpec, todo: list[VideoItem], out_root: Path, address: str | None, workers: int | None,
             threads: int | None, books: _Books) -> tuple[int, int]:
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise FlowcliError("--ray needs Ray: pip install 'flowcli[ray]'")
    ray, started = _ray_init(address, books.quiet)
    actors: list = []
    inflight: dict = {}
    try:
        per = threads or 1
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or max(1, cpus // per), len(todo)))
        opts: dict[str, Any] = {"num_cpus": per, "max_concurrency": 2}
        if spec.device == "cuda":
            opts["num_gpus"] = 1
        actor_cls = ray.remote(**opts)(_RayWorker)
        out = str(out_root)

        def new_actor():
            return actor_cls.remote(spec, per, out)

        actors = [new_actor() for _ in range(n)]
        tasks = list(todo)
        tasks.reverse()

        def dispatch(slot):
            item = tasks.pop()
            books.summary.ran += 1
            inflight[actors[slot].run.remote(item)] = (slot, item)

        for slot in range(n):
            if tasks:
                dispatch(slot)
        last_poll = 0.0
        show = books.bar is not None and not getattr(books.bar, "disable", True)
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in done:
                slot, item = inflight.pop(ref)
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    rec = _failed(item, spec, f"Ray worker died ({_describe(exc)})")
                    with contextlib.suppress(Exception):
                        ray.kill(actors[slot])
                    actors[slot] = new_actor()
                except ray.exceptions.RayTaskError as exc:
                    rec = _failed(item, spec, _describe(exc))
                if rec.get("status") == "fatal":
                    raise FlowcliError(f"Ray worker could not start {rec['error']}")
                books.result(rec)
                if tasks:
                    dispatch(slot)
            if show and time.monotonic() - last_poll > 1.0 and inflight:
                last_poll = time.monotonic()
                with contextlib.suppress(Exception):
                    books.pairs(sum(ray.get([a.progress.remote() for a in actors], timeout=2)))
        return n, per
    except BaseException:
        # ask the actors to stop after their current pair; record what still finishes
        for a in actors:
            with contextlib.suppress(Exception):
                a.stop.remote()
        deadline = time.monotonic() + STOP_TIMEOUT
        while inflight and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.5)
                for ref in done:
                    inflight.pop(ref, None)
                    with contextlib.suppress(Exception):
                        rec = ray.get(ref)
                        if rec.get("status") in ("done", "failed"):
                            books.result(rec)
        raise
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()


# ---------------------------------------------------------------------------- entry point
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
    from .cli import progress
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
