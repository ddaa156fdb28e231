"""One whole video: the batch settings (:class:`BatchSpec`) and :class:`VideoRunner`.

The same runner serves the batch process, each worker process and each Ray actor;
it imports torch and the model code only when it is built.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from .discovery import VideoItem
from .ledger import _describe, _disk_full, _now, frames_of, read_ledger

# atomic_path temp files: ".<name>.<8 random chars>.tmp<suffix>"
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


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


class VideoRunner:
    """Loads the model(s) once; :meth:`run` processes one whole video into ``OUTROOT/<name>/``.

    Used in the batch process (``workers=1``), in each worker process and in each
    Ray actor. :meth:`run` never raises for a bad video: it returns a ledger record
    with status ``done``, ``failed`` or ``abort`` (disk full: stop the batch);
    only KeyboardInterrupt passes through.
    """

    def __init__(self, spec: BatchSpec, threads: int | None = None):
        import torch

        from ..cmd_estimate import prepare_engine

        spec = spec.normalized()
        self.spec = spec
        if threads:
            torch.set_num_threads(int(threads))
        kind = "predict" if spec.mode == "predict-next" else "estimate"
        if kind == "predict":
            from ..errors import CheckpointError
            from ..weights import default_name
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
            from ..cmd_predict import adopt_estimator_defaults
            from ..weights import load_weights
            if spec.prior_flows is None:
                est = load_weights(spec.estimate_weights, preset=spec.estimate_preset, kind="estimate", device=dev)
                self.estimator = est.model
                adopt_estimator_defaults(self.options, est, spec.iters, spec.extra.get("coarse"),
                                         spec.extra.get("refine"), spec.with_estimate)
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
            d.update(iters=o.iters, warm_start=o.warm_start, coarse=o.coarse, refine=o.refine)
        else:
            d.update(frames=s.frames, with_estimate=s.with_estimate, include_first=s.include_first,
                     prior_flows=s.prior_flows, tta=o.tta)  # the effective value: --no-tta spelled out is no change
            if self.estimate_info:
                d.update(estimate_weights=self.estimate_info["sha256"], iters=o.iters, warm_start=o.warm_start,
                         coarse=o.coarse, refine=o.refine)
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
        from ..cmd_estimate import open_job_source
        from ..pipeline import write_report

        spec = self.spec
        out_dir = Path(out_root) / item.name
        rec: dict[str, Any] = {"video": item.path, "output": item.name, "status": "failed", "pairs": 0,
                               "frames": 0, "seconds": 0.0, "error": None, "time": None, "mode": spec.mode,
                               "settings": self.key, "host": socket.gethostname()}
        t0 = time.perf_counter()
        self.pairs_done = 0
        created = False
        try:
            if item.error:
                raise InputError(item.error)
            created = not out_dir.exists()  # in the try: a bad name (too long, ...) fails this video only
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
                    from ..pipeline import EstimateJob, run_estimate
                    job = EstimateJob(out_dir=out_dir, formats=spec.formats, video=spec.video,
                                      overwrite=spec.overwrite, max_flow=spec.max_flow, options=self.options)
                    report = run_estimate(self.loaded.model, job, source, weights_info=self.weights_info,
                                          start=spec.start, step=spec.step, device=self.device,
                                          on_pair=self._on_pair(on_pair))
                    record = {"command": "estimate", **common, "iters": self.options.iters,
                              "warm_start": self.options.warm_start}
                    rec["pairs"], rec["frames"] = report.pairs, frames_of(report.pairs)
                else:
                    from ..predict import PredictJob, run_predict
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
                              "include_first": spec.include_first, "tta": self.options.tta}
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
