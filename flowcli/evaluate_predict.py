"""Accuracy of one-frame-ahead prediction (MemFlow-P) next to the constant-velocity baseline.

A prediction of the flow ``t -> t+1`` is made before frame t+1 exists, from
frames <= t and the past flow ``t-1 -> t``. Both methods get the same past flow:

* ``past="gt"`` (official ``use_gt=True``): the ground truth of ``t-1 -> t``;
  only pairs whose previous pair has GT too are scored (the synthetic clips;
  KITTI/Middlebury/Chairs pairs have no GT predecessor);
* ``past="estimate"`` (official ``use_gt=False``, what ``flowcli predict-next``
  does): an estimation model runs along each sequence from its first frame and
  supplies ``t-1 -> t``; every GT pair with t >= 1 is scored (e.g. Sintel
  ambush_4 4->5 and 6->7, whose predecessors have no GT).

The methods:

* ``memflow-p``: a :class:`~flowcli.predict.PredictStream`; the P model's memory
  holds one past pair, so (with GT past flows) priming frame t-1 and pushing
  frame t is exactly the state of a run over the whole scene;
* ``constant-velocity``: every pixel keeps moving as it just did: the past flow
  forward-warped by itself (:func:`constant_velocity`), at full resolution.

Metrics and regions are :mod:`flowcli.evaluate`'s, against the GT of ``t -> t+1``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from scipy.interpolate import griddata

from .datasets import EvalSequence, find_sequences
from .errors import InputError
from .evaluate import EvalReport, PairRow, _read_gt, pair_metrics, timed_push
from .sources import read_image_rgb

__all__ = ["BASELINE", "PAST_FLOWS", "constant_velocity", "scored_pairs", "PredictEvaluation", "evaluate_predict"]

BASELINE = "constant-velocity"


def constant_velocity(flow: np.ndarray) -> np.ndarray:
    """(H,W,2) past flow ``t-1 -> t`` -> predicted flow ``t -> t+1`` (H,W,2) float32.

    Each pixel p of frame t-1 lands at p + flow(p) in frame t and is assumed to
    move by the same vector again. The moved vectors are scattered samples on
    frame t; each pixel of frame t takes the nearest one (the official
    ``forward_interpolate``, at full resolution). Unknown (non-finite) past
    vectors are dropped; with none left the prediction is zero.
    """
    h, w = flow.shape[:2]
    dx, dy = flow[..., 0].reshape(-1), flow[..., 1].reshape(-1)
    x0, y0 = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    x1, y1 = x0.reshape(-1) + dx, y0.reshape(-1) + dy
    keep = np.isfinite(x1) & np.isfinite(y1) & (x1 > 0) & (x1 < w) & (y1 > 0) & (y1 < h)
    if not keep.any():
        return np.zeros((h, w, 2), np.float32)
    vectors = np.stack([dx[keep], dy[keep]], axis=1)
    out = griddata((x1[keep], y1[keep]), vectors, (x0, y0), method="nearest")
    return out.astype(np.float32)


@dataclass
class PredictEvaluation:
    """The two reports over the same pairs, and how much lower the predictor's EPE is."""

    predicted: EvalReport
    baseline: EvalReport
    past: str = "gt"                # where both methods' past flow came from: "gt" or "estimate"
    tta: bool = False               # the predictor averaged its mirrored view (StreamOptions.tta)
    estimator: dict[str, Any] | None = None  # past="estimate": the estimation weights and the settings they ran with

    def improvement(self, region: str = "all") -> float:
        """1 - EPE(predicted) / EPE(baseline), mean over pairs (0.2 = 20% lower). NaN without pairs."""
        if not self.predicted.rows or region not in self.predicted.regions:
            return float("nan")
        p = self.predicted.summary()[region]["epe"]
        b = self.baseline.summary()[region]["epe"]
        return 1.0 - p / b if b > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        from .jsonutil import nan_to_none
        return {"past_flow": self.past, "estimator": self.estimator, "tta": self.tta,
                "predicted": self.predicted.to_dict(),
                "baseline": self.baseline.to_dict(),
                "improvement": nan_to_none({r: self.improvement(r) for r in self.predicted.regions})}


PAST_FLOWS = ("gt", "estimate")


def scored_pairs(seq: EvalSequence, past: str = "gt") -> list[int]:
    """Pair indices t that can be scored: GT exists and t >= 1; with ``past="gt"`` pair t-1 has GT too."""
    have = {p.index for p in seq.pairs}
    if past == "gt":
        return sorted(t for t in have if t - 1 in have)
    return sorted(t for t in have if t >= 1)


def _model_and_name(weights: Any, default: str) -> tuple[Any, str]:
    if hasattr(weights, "model"):  # LoadedWeights
        return weights.model, weights.name
    return weights, default


def evaluate_predict(weights: Any, root: str | os.PathLike, layout: str, *, past: str = "gt",
                     estimator: Any = None, iters: int | None = None, device: str = "cpu",
                     max_side: int | None = None, coarse: bool | None = None, tta: bool | None = None,
                     progress: Callable[..., Iterable] | None = None,
                     sequences: list[EvalSequence] | None = None) -> PredictEvaluation:
    """Score a MemFlow-P model (a :class:`~flowcli.weights.LoadedWeights` or bare model) on ``root``.

    ``past``: where the past flow comes from, ``"gt"`` or ``"estimate"`` (then ``estimator``, an
    estimation model or LoadedWeights, and its ``iters`` are required). ``tta``: mirrored-view
    averaging (``StreamOptions.tta``; default: the weights' own). ``max_side``: run both models smaller
    (metrics at full size). Raises :class:`InputError` when no pair can be scored.
    """
    from .engine import StreamOptions
    from .predict import PredictStream

    if past not in PAST_FLOWS:
        raise ValueError(f"past must be one of {PAST_FLOWS}, not {past!r}")
    model, name = _model_and_name(weights, "memflow-p")
    if not model.cfg.predict:
        raise InputError(f"{name}: an estimation model; --predict needs MemFlow-P weights")
    est_model, estimator_info = None, None
    if past == "estimate":
        if estimator is None:
            raise ValueError("past='estimate' needs an estimator")
        est_model, est_name = _model_and_name(estimator, "memflow")
        iters = getattr(estimator, "iters", None) if iters is None else iters
        if iters is None:
            raise ValueError("iters is required with a bare estimator model")
        coarse = getattr(estimator, "coarse", False) if coarse is None else coarse
        estimator_info = {"name": est_name, "path": getattr(estimator, "path", None),
                          "sha256": getattr(estimator, "sha256", None), "preset": getattr(estimator, "preset", None),
                          "iters": iters, "coarse_to_fine": bool(coarse)}
    tta = getattr(weights, "tta", False) if tta is None else tta
    options = StreamOptions(iters=iters or 12, max_side=max_side, coarse=bool(coarse) and est_model is not None,
                            tta=bool(tta))
    stream = PredictStream(model, options, device, estimator=est_model)
    seqs = find_sequences(root, layout) if sequences is None else sequences
    seqs = [s for s in seqs if scored_pairs(s, past)]
    if not seqs:
        need = ("a pair with ground truth for the previous pair too (consecutive GT flows)" if past == "gt"
                else "a ground-truth pair after the first frame of a sequence")
        raise InputError(f"{root}: prediction needs {need}; none found"
                         + (" (try --past-flow estimate)" if past == "gt" else ""))
    total = sum(len(scored_pairs(s, past)) for s in seqs)
    result = PredictEvaluation(
        EvalReport(method=name, layout=layout, root=str(root), iters=None, warm_start=False, sequences=len(seqs),
                   max_side=max_side),
        EvalReport(method=BASELINE, layout=layout, root=str(root), iters=None, warm_start=False,
                   sequences=len(seqs), max_side=max_side if past == "estimate" else None),  # (its past flow)
        past, options.tta, estimator_info)
    rows: Iterable[tuple[PairRow, PairRow]] = _run_gt(stream, seqs) if past == "gt" else _run_estimate(stream, seqs)
    if progress is not None:
        rows = progress(rows, total=total, desc=f"eval --predict {layout}", unit="pair")
    for predicted, baseline in rows:
        result.predicted.rows.append(predicted)
        result.baseline.rows.append(baseline)
    return result


def _rows(seq: EvalSequence, pair: Any, t: int, predicted: np.ndarray, seconds: float,
          past_flow: np.ndarray) -> tuple[PairRow, PairRow]:
    t0 = time.perf_counter()
    baseline = constant_velocity(past_flow)
    base_seconds = time.perf_counter() - t0
    name = seq.frame_paths[t].name
    return (PairRow(seq.name, t, name, seconds, pair_metrics(predicted, pair)),
            PairRow(seq.name, t, name, base_seconds, pair_metrics(baseline, pair)))


def _run_estimate(stream: Any, seqs: list[EvalSequence]) -> Iterator[tuple[PairRow, PairRow]]:
    """Past flows from the estimator running alongside, from each sequence's first frame."""
    for seq in seqs:
        pairs = {p.index: p for p in seq.pairs}
        targets = scored_pairs(seq, "estimate")
        stream.reset()
        for t in range(0, max(targets) + 1):
            step, seconds = timed_push(stream, seq.frame_paths[t], read_image_rgb(seq.frame_paths[t]))
            if t in pairs and t >= 1:
                yield _rows(seq, pairs[t], t, step.flow, seconds, step.past_flow)


def _run_gt(stream: Any, seqs: list[EvalSequence]) -> Iterator[tuple[PairRow, PairRow]]:
    for seq in seqs:
        pairs = {p.index: p for p in seq.pairs}
        last_pushed = None
        for t in scored_pairs(seq):
            past = pairs[t - 1]
            frame_t = read_image_rgb(seq.frame_paths[t])
            past_flow = _read_gt(past.flow_path, frame_t.shape[:2])
            if last_pushed != t - 1:
                stream.reset()
                stream.prime(read_image_rgb(seq.frame_paths[t - 1]))
            # NaN (unknown) past vectors count as zero motion for the predictor, as in predict-next
            step, seconds = timed_push(stream, seq.frame_paths[t], frame_t, past_flow=past_flow)
            last_pushed = t
            yield _rows(seq, pairs[t], t, step.flow, seconds, past_flow)
