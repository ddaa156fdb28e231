"""The estimate job: frame source -> FlowStream -> output files, resumable.

Outputs for the pair (frame i -> next selected frame) are named by i, zero
padded to 6 digits: ``000000.flo``. Formats:

=========  =========================  ==========================================
format     file                       content
=========  =========================  ==========================================
flo        ``000000.flo``             Middlebury float flow
kitti      ``000000.png``             KITTI 16-bit PNG (u, v, valid)
npy        ``000000.npy``             NumPy (H, W, 2) float32
png        ``color/000000.png``       colour-wheel visualisation (8-bit RGB)
=========  =========================  ==========================================

``--video`` adds ``flow.mp4`` (the visualisation, at the source fps).
``flowcli.json`` records input, weights (name, sha256), options and timings.

Resume: after each pair its outputs are written (atomically) and then the
engine state (memory, last low-res flow) is saved to ``.flowcli-resume.safetensors``.
A rerun skips the pairs already written and restarts the engine from that
state, so results equal an uninterrupted run. If the state cannot be used
(an output before it is missing, or only a quantised format can be read back
for ``--video``) the pairs before the first missing one are recomputed (not
rewritten). The state file is written before the first output (a claim), so
output files with no state file beside them are not this tool's: the job
refuses the folder (``check_claimed``) rather than skip or replace them.

``--overwrite`` replaces the folder's earlier run: once the new run has finished,
the earlier run's outputs that it did not rewrite are removed (flowcli.replaced).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from .atomic import atomic_path
from .engine import FlowStream, StreamOptions
from .errors import InputError, OutputExistsError
from .flowio import write_flow
from .replaced import carried_runs, in_range, outputs_metadata, remove_replaced, replaced_runs, replaces_metadata

FORMAT_FILES = {"flo": "{i:06d}.flo", "kitti": "{i:06d}.png", "npy": "{i:06d}.npy", "png": "color/{i:06d}.png"}
STATE_FILE = ".flowcli-resume.safetensors"
REPORT_FILE = "flowcli.json"
VIDEO_FILE = "flow.mp4"


@dataclass
class EstimateJob:
    out_dir: Path
    formats: tuple[str, ...] = ("flo",)
    video: bool = False
    overwrite: bool = False
    max_flow: float | None = None        # fixed colour normalisation for png / video
    options: StreamOptions = field(default_factory=StreamOptions)

    def paths(self, index: int) -> dict[str, Path]:
        return {f: self.out_dir / FORMAT_FILES[f].format(i=index) for f in self.formats}


@dataclass
class JobReport:
    pairs: int = 0
    written: int = 0
    skipped: int = 0
    recomputed: int = 0
    removed: int = 0              # --overwrite: outputs of the replaced run that this run did not rewrite
    damaged_frames: int = 0       # frames the video decoder reported (and concealed) errors in
    seconds: float = 0.0
    model_seconds: float = 0.0
    resumed_from_state: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        computed = self.pairs - self.skipped + self.recomputed
        d["seconds_per_pair"] = self.model_seconds / computed if computed else None
        return d


def _is_path(source_name: str | None) -> bool:
    return source_name not in (None, "", "-", "<stdin>")


def input_key(source_name: str) -> str:
    """The input as a resume fingerprint names it: the same file or folder however it was spelled."""
    return str(Path(source_name).resolve()) if _is_path(source_name) else source_name


def drawing_key(max_flow: float | None, video: bool, source) -> dict:
    """Fingerprint entries for what is drawn: the colour scale of png / video outputs, and for a flow
    video the frames it covers (a finished flow.mp4 is not extended by a longer rerun). Absent when
    automatic / without a video, as in earlier versions."""
    key = {"max_flow": max_flow} if max_flow is not None else {}
    if video and getattr(source, "end", None) is not None:
        key["end"] = source.end
    return key


def _fingerprint(weights_sha: str, job: EstimateJob, source, start: int, step: int) -> str:
    o = job.options
    return json.dumps({"weights": weights_sha, "iters": o.iters, "warm_start": o.warm_start, "coarse": o.coarse,
                       "refine": o.refine, "precision": o.precision,
                       "max_side": o.max_side, "scale": o.scale, "start": start, "step": step,
                       "input": input_key(getattr(source, "name", "")),
                       **drawing_key(job.max_flow, job.video, source)}, sort_keys=True)


def check_not_an_input(out: Path, names: list[str], source_name: str | None, prior_flows: Path | None = None) -> None:
    """Outputs never go into a folder the job reads (OUT itself or a subfolder its ``names`` write
    to, such as color/ or frames/): its files would count as finished outputs or as more input
    frames, and --overwrite would replace them."""
    written = {out.resolve()} | {(out / name).parent.resolve() for name in names}
    for folder, what in ((source_name, "the input folder"), (prior_flows, "the --prior-flows folder")):
        if _is_path(folder) and Path(folder).is_dir() and Path(folder).resolve() in written:
            raise InputError(f"{folder}: is {what} and a folder this job writes to ({out}); "
                             "choose another output folder")


def _as_glob(name: str) -> str:
    """An output name pattern (``color/{i:06d}.png``) as a glob matching every index."""
    return name.replace("{i:06d}", "[0-9]" * 6)


def _recorded_outputs(meta: dict | None) -> tuple[set[str], bool] | None:
    """The output names and video flag a state file records (None: no record of them, an older flowcli)."""
    try:
        outputs = json.loads(meta["outputs"])
        return set(outputs["names"]), bool(outputs.get("video", False))
    except (KeyError, TypeError, ValueError):
        return None


def check_claimed(out: Path, state_path: Path, names: list[str], video: bool, overwrite: bool) -> None:
    """Refuse a folder that holds outputs of this job's names that no resume record (the state file)
    says a flowcli run wrote: another tool's files, a format the recorded run did not write, or a
    folder whose record was deleted. They can be neither skipped as finished nor silently replaced."""
    if overwrite:
        return
    meta = _state_metadata(state_path)
    recorded = _recorded_outputs(meta) if meta is not None else (set(), False)
    if recorded is None:  # a state from before outputs were recorded: it vouches for everything
        return
    patterns = [_as_glob(n) for n in names if n not in recorded[0]] + \
        ([VIDEO_FILE] if video and not recorded[1] else [])
    for pattern in patterns:
        found = next(iter(sorted(out.glob(pattern))), None)
        if found is not None:
            raise OutputExistsError(
                f"{found}: already exists and {out} has no record ({STATE_FILE}) of a flowcli run that "
                "wrote it; use --overwrite to replace the folder's outputs or choose another output folder")


def _state_metadata(path: Path) -> dict | None:
    """A state file's metadata (fingerprint, last_index, outputs, replaces), or None if there is none."""
    if not path.is_file():
        return None
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception:
        return None


def _load_state(path: Path, fingerprint: str) -> tuple[dict | None, int | None, dict | None]:
    """The saved engine state, the index of its last pair and the file's metadata, if it belongs
    to this job."""
    if not path.is_file():
        return None, None, None
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception:
        return None, None, None
    if meta.get("fingerprint") != fingerprint:
        raise OutputExistsError(
            f"{path.parent}: holds outputs of a run with other settings or weights; "
            "use --overwrite to replace them or choose another output folder")
    last = meta.get("last_index", "")
    if not last.isdigit():  # this job's claim before its first pair, or a damaged state: start over
        return None, None, meta
    return tensors, int(last), meta


def _start_state(path: Path, fingerprint: str, overwrite: bool, source_name: str | None = None
                 ) -> tuple[dict | None, int | None, list]:
    """(state, its last index, earlier runs still to clean up) at the start of a job.
    With ``overwrite`` the state is not used, and the run it belonged to is being replaced.
    A stream on stdin cannot be told from another one, so a folder with a run in it is not resumed
    from stdin (it would continue one stream's memory with another's frames)."""
    if overwrite:
        return None, None, replaced_runs(_state_metadata(path))
    if source_name in ("-", "<stdin>") and _state_metadata(path) is not None:
        raise OutputExistsError(f"{path.parent}: holds a run; one read from stdin cannot be resumed (the "
                                "stream cannot be matched to it): use --overwrite or another output folder")
    state, last_index, meta = _load_state(path, fingerprint)
    return state, last_index, carried_runs(meta)


@dataclass
class JobState:
    """What a job finds in its output folder's state file at its start (``open_job_state``)."""
    path: Path
    state: dict | None          # the engine state to resume from, if any
    resume_index: int | None    # the index of its last pair / frame
    replaces: list              # earlier runs still to clean up (flowcli.replaced)
    rewrite: bool               # existing files may be rewritten (--overwrite, or an unfinished clean-up)
    meta: dict[str, str]        # what this job's state files say besides last_index


def open_job_state(out: Path, fingerprint: str, names: list[str], video: bool, overwrite: bool,
                   source_name: str | None) -> JobState:
    """The checks and state every job starts with, shared by estimate and predict-next: refuse foreign
    outputs (``check_claimed``) and runs of other settings, load the state, drop a killed run's temp files."""
    path = out / STATE_FILE
    check_claimed(out, path, names, video, overwrite)
    state, resume_index, replaces = _start_state(path, fingerprint, overwrite, source_name)
    remove_stale_temps(out, names, video)
    # Until the replaced runs are cleaned up, an existing file is this run's only if the state says so.
    return JobState(path, state, resume_index, replaces, overwrite or bool(replaces),
                    _state_meta(fingerprint, names, video, replaces))


def _state_meta(fingerprint: str, names, video: bool, replaces: list) -> dict[str, str]:
    """What a job's state files say besides ``last_index``: who wrote them, what that run
    writes, and the earlier runs it replaces (flowcli.replaced)."""
    return {"fingerprint": fingerprint, **outputs_metadata(names, video), **replaces_metadata(replaces)}


def _save_state(path: Path, state: dict[str, torch.Tensor], meta: dict[str, str], last_index: int | None) -> None:
    """Save a stream's ``state()`` snapshot (taken right after the pair was computed); with no state
    and ``last_index`` None, the job's claim on the folder before its first output."""
    from safetensors.torch import save_file
    tensors = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(path, overwrite=True) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={**meta, "last_index": "" if last_index is None else str(last_index)})
        except OSError:
            raise
        except Exception as exc:  # safetensors reports I/O errors (disk full) as SafetensorError
            found = re.search(r"os error (\d+)", str(exc))
            code = int(found.group(1)) if found else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from exc


def remove_stale_temps(out: Path, names: list[str], video: bool) -> int:
    """Remove temp files (flowcli.atomic) that a killed run (SIGKILL, power loss) left for this job's
    outputs, state or record; called once the folder is known to be this job's. Returns the count."""
    targets = [_as_glob(n) for n in names] + [STATE_FILE, REPORT_FILE] + \
        ([VIDEO_FILE] if video else [])
    removed = 0
    for target in targets:
        folder, _, name = target.rpartition("/")
        suffix = Path(name).suffix
        for tmp in (out / folder).glob(f".{name}.*.tmp{suffix}"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    return removed


class FolderClaim:
    """The job's claim on its output folder: a state file with no engine state, saved just before
    the job's first output unless it resumes from a state. Every output file then has a state file
    beside it (``check_claimed``), and a run that fails before writing anything leaves no trace."""

    def __init__(self, path: Path, meta: dict[str, str], resuming: bool):
        self.path, self.meta, self.pending = path, meta, not resuming

    def before_output(self) -> None:
        if self.pending:
            _save_state(self.path, {}, self.meta, None)
            self.pending = False


def _finish_replacing(path: Path) -> None:
    """The clean-up is done: the state file stops carrying the replaced runs."""
    meta = _state_metadata(path)
    if meta is None or "replaces" not in meta:
        return
    from safetensors.torch import load_file
    meta.pop("replaces")
    last = meta.pop("last_index", "")
    _save_state(path, load_file(str(path)), meta, int(last) if last.isdigit() else None)


class _VideoSink:
    """Colour frames into an mp4 at the end of the job (fixed or running-max normalisation)."""

    def __init__(self, path: Path, fps: float, overwrite: bool, max_flow: float | None):
        from .video_out import Mp4Writer
        self.writer = Mp4Writer(path, fps, overwrite=overwrite)
        self.max_flow = max_flow
        self.running = 0.0

    def add(self, flow: np.ndarray) -> None:
        from .viz import flow_to_color, max_magnitude
        scale = self.max_flow
        if scale is None:
            self.running = max(self.running, max_magnitude(flow))
            scale = self.running or 1.0
        self.writer.write(flow_to_color(flow, max_flow=scale))


def _write_pair(flow: np.ndarray, paths: dict[str, Path], overwrite: bool, max_flow: float | None) -> int:
    written = 0
    for fmt, path in paths.items():
        if path.exists() and not overwrite:
            continue  # written by an interrupted earlier run; results are deterministic
        if fmt == "png":
            import cv2

            from .viz import flow_to_color
            with atomic_path(path, overwrite=True) as tmp:
                if not cv2.imwrite(str(tmp), cv2.cvtColor(flow_to_color(flow, max_flow), cv2.COLOR_RGB2BGR)):
                    raise OSError(f"{path}: could not write PNG")
        else:
            write_flow(path, flow, overwrite=True, fmt=fmt)
        written += 1
    return written


# Formats a skipped pair's flow can be read back from exactly (KITTI PNGs are quantised to 1/64 px).
EXACT_FORMATS = ("flo", "npy")


def _read_back(paths: dict[str, Path]) -> np.ndarray | None:
    """A written flow, read back to draw its video frame on resume (the exact formats only)."""
    from .flowio import read_flow
    for fmt in EXACT_FORMATS:
        if fmt in paths:
            return read_flow(paths[fmt])
    return None


def prefetch(iterable, depth: int = 2):
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead.

    Video decoding then overlaps with the model; memory stays bounded. Errors
    raised by the iterable are re-raised here, in order.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer
            items.put((done, exc))

    thread = threading.Thread(target=produce, name="flowcli-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = items.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


class OrderedWriter:
    """Runs output tasks in one background thread, in order, at most ``depth`` behind.

    Encoding and writing overlap with the next pair's compute. ``result`` of
    each task is passed to ``on_done`` in the calling thread; a failed task
    raises at the next submit or at ``close``.
    """

    def __init__(self, on_done: Callable[[object], None], depth: int = 2):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowcli-write")
        self.pending: deque[Future] = deque()
        self.on_done = on_done
        self.depth = depth

    def submit(self, fn, *args) -> None:
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.on_done(self.pending.popleft().result())

    def close(self) -> None:
        """Finish every pending task (raising the first error)."""
        try:
            while self.pending:
                self.on_done(self.pending.popleft().result())
        finally:
            self.pool.shutdown(wait=True)

    def abort(self) -> None:
        """Let pending tasks finish (each output is atomic) without raising, then stop."""
        self.pool.shutdown(wait=True)
        self.pending.clear()


def run_estimate(model, job: EstimateJob, source, *, weights_info: dict, start: int = 0, step: int = 1,
                 device: torch.device | str = "cpu", on_pair: Callable[[int], None] | None = None) -> JobReport:
    """Run ``model`` over ``source`` (an iterable of Frame) writing ``job``'s outputs."""
    check_not_an_input(job.out_dir, [FORMAT_FILES[f] for f in job.formats], getattr(source, "name", None))
    with output_folder(job.out_dir):
        return _run_estimate(model, job, source, weights_info=weights_info, start=start, step=step,
                             device=device, on_pair=on_pair)


@contextlib.contextmanager
def output_folder(out: Path):
    """Create a job's output folder and hold it for the job; if the job fails, remove the folders it
    created that are still empty (a run that failed before writing anything leaves no trace)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with folder_lock(out):
            yield out
    except BaseException:
        if created:
            for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [out]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


@contextlib.contextmanager
def folder_lock(out: Path):
    """An exclusive lock on the folder itself (flock on its descriptor: no lock file, and the kernel
    drops it when the process dies, even by SIGKILL). Two runs writing one folder at once mixed their
    outputs, state and record, and an --overwrite run removed the files of a run still writing."""
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputExistsError(f"{out}: another flowcli run is writing into this folder; wait for it to "
                                    "finish or choose another output folder") from None
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _run_estimate(model, job: EstimateJob, source, *, weights_info: dict, start: int, step: int,
                  device, on_pair) -> JobReport:
    out = job.out_dir
    if "png" in job.formats:
        (out / "color").mkdir(exist_ok=True)
    fingerprint = _fingerprint(weights_info.get("sha256", ""), job, source, start, step)
    js = open_job_state(out, fingerprint, [FORMAT_FILES[f] for f in job.formats], job.video, job.overwrite,
                        getattr(source, "name", None))
    state_path, state, resume_index, replaces, rewrite, meta = \
        js.path, js.state, js.resume_index, js.replaces, js.rewrite, js.meta
    render_video = job.video
    if job.video and (out / VIDEO_FILE).exists() and not rewrite:
        # flow.mp4 appears only when a run completes; with a matching state it is this job's
        if resume_index is None:
            raise OutputExistsError(f"{out / VIDEO_FILE}: already exists (use --overwrite to replace it)")
        render_video = False
    # A state file is only trusted if every pair up to it is on disk (and, for --video,
    # if those pairs can be read back to draw their video frames).
    if render_video and not any(f in job.formats for f in EXACT_FORMATS):
        state, resume_index = None, None
    if job.video and not render_video and not job.formats:
        return JobReport(resumed_from_state=True)  # the finished video is all this job writes
    if resume_index is not None:
        k = start
        while k <= resume_index:
            if not all(p.exists() for p in job.paths(k).values()):
                state, resume_index = None, None
                break
            k += step
    claim = FolderClaim(state_path, meta, resuming=resume_index is not None)

    stream = FlowStream(model, job.options, device)
    report = JobReport(resumed_from_state=resume_index is not None)
    video = _VideoSink(out / VIDEO_FILE, getattr(source, "fps", None) or 10.0, rewrite, job.max_flow) \
        if render_video else None

    def finish_pair(written: int) -> None:
        report.written += written

    def write_pair(flow, paths, state, index, skip_files):
        """Outputs first, then the resume state that says they exist."""
        claim.before_output()
        written = 0 if skip_files else _write_pair(flow, paths, rewrite, job.max_flow)
        if video is not None:
            video.add(flow)
        _save_state(state_path, state, meta, index)
        return written

    writer = OrderedWriter(finish_pair)
    t_job = time.perf_counter()
    last_pair = None
    try:
        prev = None
        live = False  # the stream has seen `prev` (primed or pushed)
        for frame in prefetch(source):
            if prev is None:
                prev = frame
                continue
            i = last_pair = prev.index
            paths = job.paths(i)
            vouched = resume_index is not None and i <= resume_index  # the state says this run wrote them
            done = bool(paths) and all(p.exists() for p in paths.values()) and (vouched or not rewrite)
            report.pairs += 1
            if done and vouched:
                report.skipped += 1
                if video is not None:
                    writer.submit(lambda p=paths: video.add(_read_back(p)) or 0)
                if i == resume_index:
                    stream.load_state(state)
                    stream.prime(frame.image)
                    live = True
                prev = frame
                if on_pair:
                    on_pair(i)
                continue
            if not live:
                stream.prime(prev.image)
                live = True
            t0 = time.perf_counter()
            flow = stream.push(frame.image)
            report.model_seconds += time.perf_counter() - t0
            if done:
                report.skipped += 1
                report.recomputed += 1
            writer.submit(write_pair, flow, paths, stream.state(), i, done)
            prev = frame
            if on_pair:
                on_pair(i)
        writer.close()
        if video is not None:
            video.writer.close()
            report.written += 1  # flow.mp4
    except BaseException:
        writer.abort()
        if video is not None:
            video.writer.abort()
        raise
    report.damaged_frames = damaged_frames(source)
    if replaces:  # finished: drop what the replaced runs wrote and this one did not
        report.removed = remove_replaced(
            replaces, out, kept=lambda k: job.paths(k).values() if in_range(k, start, step, last_pair) else (),
            keeps_video=job.video, inputs=[getattr(source, "name", None)])
        _finish_replacing(state_path)
    report.seconds = time.perf_counter() - t_job
    return report


def damaged_frames(source) -> int:
    """How many frames the source's decoder reported concealed errors in (flowcli.sources.DecodeDamage)."""
    damage = getattr(source, "damage", None)
    return damage.frames if damage is not None else 0


def write_report(out_dir: Path, record: dict, changed: bool = True) -> dict:
    """Write OUTDIR/flowcli.json (atomically) with version and run environment; return the record.

    A rerun that ``changed`` nothing (every output was already there) keeps the record of the run that
    wrote them (same settings: the resume fingerprint matched) instead of replacing it with zero counts."""
    import platform
    record = {"flowcli_version": __version__, **record, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.machine()}
    path = out_dir / REPORT_FILE
    if not changed and path.is_file():
        return record
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record
