"""Accuracy of a flow method on a dataset with ground truth: metrics, runner, report.

Metrics (:func:`flow_metrics`), over the pixels where the GT is finite (and a
mask, if given, is true):

* ``epe``: mean end-point error ``|pred - gt|`` in pixels;
* ``px1``, ``px3``, ``px5``: fraction of pixels with EPE < 1, 3, 5 px;
* ``fl_all``: KITTI outlier rate, fraction of pixels with EPE > 3 px **and**
  EPE > 5 % of the GT vector length;
* ``s0_10``, ``s10_40``, ``s40``: mean EPE over the pixels whose GT speed is
  below 10 px, 10 to 40 px, and 40 px or more (the MPI-Sintel benchmark's
  s0-10 / s10-40 / s40+ columns): where a method loses, small or large motion;
* ``count``: number of pixels, plus ``<metric>_sum`` (sum of EPE, number of
  pixels under 1/3/5 px, number of outliers, EPE summed per speed band) and
  ``<band>_count`` so results can be re-aggregated.

Aggregation over a dataset (:meth:`EvalReport.summary`) is given both ways:

* ``epe``, ``px1``..., ``fl_all``: **mean over pairs** of the per-pair values
  (each pair counts once, whatever its number of valid pixels). This is the
  primary figure in the table.
* ``epe_px``, ``px1_px``..., ``fl_all_px``: **per pixel** (sums over all pairs
  divided by the total pixel count).

Published figures mix the two: RAFT/MemFlow's ``evaluate.py`` reports KITTI EPE
as the mean over pairs but KITTI Fl-all, Sintel and Chairs EPE per pixel;
Middlebury tables are per sequence (one pair each, so both agree per row). On
Sintel, whose frames all have the same size, the two differ only through the
excluded pixels. Regions: ``all`` = every pixel with finite GT (Sintel: minus
``invalid`` pixels, always; RAFT's script does not exclude them), ``noc`` =
``all`` minus occluded pixels where the layout has occlusion masks (Sintel), or
the ``flow_noc`` GT (KITTI). For KITTI with only ``flow_noc`` present (as in
the shared data) only ``noc`` is reported (its ``fl_all`` is KITTI's Fl-noc).

:func:`evaluate` runs each sequence in order through one stream (a
:class:`~flowcli.engine.FlowStream` for MemFlow, so the memory is carried
across a scene's frames; reset between sequences) and scores the pairs with
GT. Frames are read one at a time; only the stream's previous frame is held.
Classical baselines (``"dis"``: OpenCV DIS, PRESET_MEDIUM; ``"farneback"``:
OpenCV Farneback) go through the same runner, on grayscale frames; they have no
memory, so only the frames of GT pairs are read for them.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from .jsonutil import nan_to_none
from .datasets import EvalPair, EvalSequence, find_sequences
from .errors import InputError
from .flowio import read_flow
from .sources import read_image_rgb

__all__ = ["METHODS", "REGIONS", "METRICS", "SPEED_BANDS", "flow_metrics", "pair_metrics", "ClassicalStream",
           "PairRow", "EvalReport", "evaluate", "format_table"]

METHODS = ("dis", "farneback")
REGIONS = ("all", "noc")
METRICS = ("epe", "px1", "px3", "px5", "fl_all")
_THRESHOLDS = {"px1": 1.0, "px3": 3.0, "px5": 5.0}
SPEED_BANDS = {"s0_10": (0.0, 10.0), "s10_40": (10.0, 40.0), "s40": (40.0, math.inf)}  # GT speed, px

# Farneback parameters: the OpenCV tutorial's. (levels=5 gives identical numbers on the shared data: OpenCV stops
# the pyramid where a level would get smaller than 32 px anyway.)
FARNEBACK_PARAMS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


# ------------------------------------------------------------------ metrics


def flow_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """EPE, 1/3/5 px accuracies and Fl-all of ``pred`` against ``gt`` (both (H, W, 2)).

    Pixels count where ``gt`` is finite in both channels and ``mask`` (H, W bool,
    optional) is true. With no such pixel the rates are NaN and ``count`` is 0.
    A non-finite prediction on a counted pixel makes ``epe`` NaN (it is not hidden).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[2] != 2:
        raise ValueError(f"pred and gt must both be (H, W, 2); got {pred.shape} and {gt.shape}")
    valid = np.isfinite(gt).all(axis=2)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape[:2]:
            raise ValueError(f"mask must be {gt.shape[:2]}, got {mask.shape}")
        valid &= mask
    g = gt[valid].astype(np.float64)
    p = pred[valid].astype(np.float64)
    epe = np.sqrt(((p - g) ** 2).sum(axis=1))
    mag = np.sqrt((g ** 2).sum(axis=1))
    n = int(epe.size)
    sums = {"epe_sum": float(epe.sum())}
    for key, t in _THRESHOLDS.items():
        sums[f"{key}_sum"] = float((epe < t).sum())
    sums["fl_all_sum"] = float(((epe > 3.0) & (epe > 0.05 * mag)).sum())
    out: dict[str, float] = {}
    for m in METRICS:
        out[m] = sums[f"{m}_sum"] / n if n else math.nan
    for band, (lo, hi) in SPEED_BANDS.items():
        in_band = (mag >= lo) & (mag < hi)
        k = int(in_band.sum())
        sums[f"{band}_sum"], sums[f"{band}_count"] = float(epe[in_band].sum()), k
        out[band] = sums[f"{band}_sum"] / k if k else math.nan
    out["count"] = n
    out.update(sums)
    return out


def _summarise(metrics: list[dict[str, float]]) -> dict[str, float]:
    """Mean over pairs (pairs with pixels) and per-pixel aggregate of per-pair metrics."""
    used = [m for m in metrics if m["count"] > 0]
    total = sum(m["count"] for m in used)
    out: dict[str, float] = {"pairs": len(used), "count": total}
    for k in METRICS:
        out[k] = float(np.mean([m[k] for m in used])) if used else math.nan
    for k in METRICS:
        out[f"{k}_px"] = sum(m[f"{k}_sum"] for m in used) / total if total else math.nan
    for band in SPEED_BANDS:  # a pair with no pixel in a band does not count for that band
        having = [m for m in used if m[f"{band}_count"] > 0]
        count = sum(m[f"{band}_count"] for m in having)
        out[band] = float(np.mean([m[band] for m in having])) if having else math.nan
        out[f"{band}_px"] = sum(m[f"{band}_sum"] for m in having) / count if count else math.nan
        out[f"{band}_count"] = count
    return out


# ------------------------------------------------------------------ classical baselines


class ClassicalStream:
    """OpenCV DIS (PRESET_MEDIUM) or Farneback with FlowStream's push/prime/reset interface."""

    needs_history = False  # no memory: a pair only needs its own two frames

    def __init__(self, method: str):
        if method not in METHODS:
            raise ValueError(f"unknown classical method {method!r} (choose from {', '.join(METHODS)})")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method == "dis" else None
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None

    @staticmethod
    def _gray(image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("frames must be (H, W, 3) uint8 RGB")
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)

    def prime(self, image: np.ndarray) -> None:
        self._prev = self._gray(image)

    def push(self, image: np.ndarray) -> np.ndarray | None:
        cur = self._gray(image)
        prev, self._prev = self._prev, cur
        if prev is None:
            return None
        if prev.shape != cur.shape:
            raise ValueError(f"frame size changed from {prev.shape[1]}x{prev.shape[0]} to {cur.shape[1]}x{cur.shape[0]}")
        if self._dis is not None:
            flow = self._dis.calc(prev, cur, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(prev, cur, None, **FARNEBACK_PARAMS)
        return np.asarray(flow, dtype=np.float32)


class _ModelStream:
    """A FlowStream that must see every frame (its memory carries over)."""

    needs_history = True

    def __init__(self, stream):
        self._s = stream

    def reset(self) -> None:
        self._s.reset()

    def prime(self, image: np.ndarray) -> None:
        self._s.prime(image)

    def push(self, image: np.ndarray) -> np.ndarray | None:
        return self._s.push(image)


# ------------------------------------------------------------------ report


@dataclass
class PairRow:
    sequence: str
    index: int                      # pair index in the sequence (frame_paths[index] -> [index + 1])
    frame: str                      # file name of the pair's first frame
    seconds: float                  # method time for this pair (the push that produced its flow)
    metrics: dict[str, dict[str, float]]  # region ("all", "noc") -> flow_metrics()

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "pair": self.index, "frame": self.frame,
                "seconds": self.seconds, **{r: dict(m) for r, m in self.metrics.items()}}


@dataclass
class EvalReport:
    method: str
    layout: str
    root: str
    iters: int | None
    warm_start: bool
    sequences: int
    rows: list[PairRow] = field(default_factory=list)
    coarse: bool = False            # coarse-to-fine start (flowcli.coarse) was on
    refine: bool = False            # variational refinement (flowcli.refine) was on
    max_side: int | None = None     # the network ran with its longer side at most this (metrics at full size)

    @property
    def regions(self) -> list[str]:
        return [r for r in REGIONS if any(r in row.metrics for row in self.rows)]

    def summary(self) -> dict[str, Any]:
        """{region: aggregate metrics} plus ``pairs``, ``seconds`` and ``seconds_per_pair``."""
        out: dict[str, Any] = {"pairs": len(self.rows)}
        for r in self.regions:
            out[r] = _summarise([row.metrics[r] for row in self.rows if r in row.metrics])
        total = sum(row.seconds for row in self.rows)
        out["seconds"] = total
        out["seconds_per_pair"] = total / len(self.rows) if self.rows else math.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None)."""
        return nan_to_none({
            "method": self.method, "layout": self.layout, "root": self.root,
            "iters": self.iters, "warm_start": self.warm_start, "coarse_to_fine": self.coarse,
            "refine": self.refine, "max_side": self.max_side,
            "sequences": self.sequences,
            "aggregation": ("summary <metric>: mean over pairs of per-pair values; "
                            "<metric>_px: per pixel over all pairs"),
            "summary": self.summary(),
            "pairs": [row.to_dict() for row in self.rows],
        })


def _fmt(value: float, pct: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def format_table(report: EvalReport) -> str:
    """A fixed-width table: one line per (pair, region), then the dataset summary."""
    seq_w = max([len("sequence")] + [len(r.sequence) for r in report.rows] + [len("mean over pairs")])
    head = (f"{'sequence':<{seq_w}}  {'pair':>4}  {'region':<6}  {'EPE':>8}  {'<1px':>6}  {'<3px':>6}  "
            f"{'<5px':>6}  {'Fl-all':>6}  {'s0-10':>7}  {'s10-40':>7}  {'s40+':>7}  {'pixels':>9}  {'time s':>7}")
    iters = f", iters {report.iters}" if report.iters is not None else ""
    warm = ((", warm start" if report.warm_start else "") + (", coarse-to-fine" if report.coarse else "")
            + (", refined" if report.refine else "")
            + (f", max side {report.max_side}" if report.max_side is not None else ""))
    lines = [f"{report.method} on {report.layout} ({report.root}): {report.sequences} sequences, "
             f"{len(report.rows)} pairs{iters}{warm}", head, "-" * len(head)]

    def line(name: str, pair: str, region: str, m: dict, seconds: str, epe_key="epe", sfx="") -> str:
        return (f"{name:<{seq_w}}  {pair:>4}  {region:<6}  {_fmt(m[epe_key]):>8}  "
                f"{_fmt(m['px1' + sfx], True):>6}  {_fmt(m['px3' + sfx], True):>6}  {_fmt(m['px5' + sfx], True):>6}  "
                f"{_fmt(m['fl_all' + sfx], True):>6}  "
                + "".join(f"{_fmt(m[band + sfx]):>7}  " for band in SPEED_BANDS)
                + f"{m['count']:>9}  {seconds:>7}")

    for row in report.rows:
        for r in REGIONS:
            if r in row.metrics:
                lines.append(line(row.sequence, str(row.index), r, row.metrics[r], f"{row.seconds:.3f}"))
    s = report.summary()
    lines.append("-" * len(head))
    per_pair = f"{s['seconds_per_pair']:.3f}" if report.rows else "-"
    for r in report.regions:
        lines.append(line("mean over pairs", "", r, s[r], per_pair))
    for r in report.regions:
        lines.append(line("per pixel", "", r, s[r], "", epe_key="epe_px", sfx="_px"))
    return "\n".join(lines)


# ------------------------------------------------------------------ runner


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(f"{path}: not a readable mask image")
    if img.shape != shape:
        raise InputError(f"{path}: mask is {img.shape[1]}x{img.shape[0]}, the GT is {shape[1]}x{shape[0]}")
    return img > 127


def _read_gt(path: Path, shape: tuple[int, int]) -> np.ndarray:
    gt = read_flow(path)
    if gt.shape[:2] != shape:
        raise InputError(f"{path}: GT is {gt.shape[1]}x{gt.shape[0]}, the frames are {shape[1]}x{shape[0]}")
    return gt


def pair_metrics(pred: np.ndarray, pair: EvalPair) -> dict[str, dict[str, float]]:
    """{"all": ..., "noc": ...} metrics of one predicted flow against an :class:`EvalPair`'s GT.

    When the only GT is a noc one (KITTI with ``flow_noc`` but no ``flow_occ``), only ``noc`` is
    reported: calling those pixels "all" would pass a noc figure off as KITTI's Fl-all.
    """
    shape = pred.shape[:2]
    keep = None
    if pair.invalid_path is not None:
        keep = ~_read_mask(pair.invalid_path, shape)
    if pair.noc_flow_path is not None and pair.noc_flow_path == pair.flow_path:
        return {"noc": flow_metrics(pred, _read_gt(pair.flow_path, shape), keep)}
    gt = _read_gt(pair.flow_path, shape)
    out = {"all": flow_metrics(pred, gt, keep)}
    if pair.occ_path is not None:
        noc = ~_read_mask(pair.occ_path, shape)
        out["noc"] = flow_metrics(pred, gt, noc if keep is None else noc & keep)
    elif pair.noc_flow_path is not None:
        out["noc"] = flow_metrics(pred, _read_gt(pair.noc_flow_path, shape), keep)
    return out


def _make_stream(model_or_method: Any, iters: int | None, warm_start: bool, device: Any,
                 max_side: int | None, coarse: bool | None = None, refine: bool | None = None):
    """(stream, label, iters, StreamOptions or None for a classical method)."""
    if isinstance(model_or_method, str):
        method = model_or_method.lower()
        if method not in METHODS:
            raise InputError(f"unknown method {model_or_method!r} (choose from {', '.join(METHODS)}, or give weights)")
        return ClassicalStream(method), method, None, None
    from .engine import FlowStream, StreamOptions

    if hasattr(model_or_method, "inference_settings"):  # LoadedWeights: its defaults where none is given
        model, name = model_or_method.model, model_or_method.name
        chosen = model_or_method.inference_settings(iters, coarse, refine)
    elif iters is None:
        raise ValueError("iters is required when evaluating a bare model")
    else:
        model, name = model_or_method, "memflow"
        chosen = {"iters": iters, "coarse": bool(coarse), "refine": bool(refine)}
    options = StreamOptions(warm_start=warm_start, max_side=max_side, **chosen)
    return _ModelStream(FlowStream(model, options, device)), name, options.iters, options


def evaluate(model_or_method: Any, root: str | os.PathLike, layout: str, *, iters: int | None = None,
             warm_start: bool = False, progress: Callable[..., Iterable] | None = None,
             device: str = "cpu", max_side: int | None = None, name: str | None = None,
             sequences: list[EvalSequence] | None = None, coarse: bool | None = None,
             refine: bool | None = None) -> EvalReport:
    """Evaluate a method on the dataset at ``root`` laid out as ``layout``.

    ``model_or_method``: ``"dis"`` or ``"farneback"``, a :class:`~flowcli.model.MemFlowNet`, or a
    :class:`~flowcli.weights.LoadedWeights` (its name and, when ``iters`` is None, its iters are used).
    ``progress``: optional tqdm-like wrapper called as ``progress(iterable, total=n_pairs, desc=..., unit="pair")``
    (e.g. ``functools.partial(flowcli.cli.progress, quiet=quiet)``). ``max_side``: run the network at a
    reduced size (the flow is resized back, so metrics are at full resolution). ``sequences``: evaluate
    these instead of all of ``find_sequences(root, layout)``. ``name``: the method label in the report.
    ``coarse``: the coarse-to-fine start (:mod:`flowcli.coarse`), ``refine``: the variational refinement
    (:mod:`flowcli.refine`); default for both: the weights' own, off for a bare model.
    """
    stream, label, used_iters, options = _make_stream(model_or_method, iters, warm_start, device, max_side,
                                                      coarse, refine)
    seqs = find_sequences(root, layout) if sequences is None else sequences
    report = EvalReport(method=name or label, layout=layout, root=str(root), iters=used_iters,
                        warm_start=bool(warm_start) and used_iters is not None, sequences=len(seqs),
                        coarse=bool(options and options.coarse), refine=bool(options and options.refine),
                        max_side=options.max_side if options else None)
    rows: Iterable[PairRow] = _run(stream, seqs)
    if progress is not None:
        rows = progress(rows, total=sum(len(s.pairs) for s in seqs), desc=f"eval {layout}", unit="pair")
    for row in rows:
        report.rows.append(row)
    return report


def timed_push(stream: Any, path: Path, image: np.ndarray, **kwargs: Any) -> tuple[Any, float]:
    """``stream.push(image, **kwargs)`` and its seconds; a frame the stream refuses is an InputError naming it."""
    t0 = time.perf_counter()
    try:
        out = stream.push(image, **kwargs)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return out, time.perf_counter() - t0


def _run(stream: Any, seqs: list[EvalSequence]) -> Iterator[PairRow]:
    for seq in seqs:
        if not seq.pairs:
            continue
        stream.reset()
        gt = {p.index: p for p in seq.pairs}
        first = 0 if stream.needs_history else min(gt)
        last = max(gt) + 1  # frames after the last GT pair cannot change any score
        for i in range(first, last + 1):
            path = seq.frame_paths[i]
            image = read_image_rgb(path)
            pair = gt.get(i - 1)
            if pair is None and not stream.needs_history:
                stream.prime(image)
                continue
            flow, seconds = timed_push(stream, path, image)
            if pair is not None:
                yield PairRow(seq.name, pair.index, seq.frame_paths[pair.index].name, seconds,
                              pair_metrics(flow, pair))
            del image, flow
