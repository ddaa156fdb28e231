"""Streaming flow *prediction* with MemFlowNet-P: the flow from frame t to frame t+1,
computed before frame t+1 is seen.

This is the official ``evaluate_MemFlowNet_predict`` loop made streaming. For
each frame t, in order:

1. if t >= 1, the past flow of the pair (t-1 -> t) is now known (from an
   estimation :class:`~flowcli.engine.FlowStream` running alongside, official
   ``use_gt=False``, or from a flow file, official ``use_gt=True``), so the
   pair goes into memory (``set_memory``): the P model's feature maps of t-1
   and t are correlated at ``coords0 + flow_low``, the motion value is stored
   under the context key of frame **t-1** (the first frame of the pair), and
   the forward warp flow becomes ``forward_interpolate(flow_low)``;
2. the P model predicts t -> t+1 from frame t's context, the memory and the
   forward warp flow (``step``). Memory policy 2/1: the store holds exactly one
   past pair, so the state needed at frame t is only frames t-1, t and the
   past flow of (t-1 -> t).

At t = 0 the memory is empty and the forward warp flow is zero; the official
loop predicts there too (from appearance and the learned motion prompt only).
:meth:`PredictStream.push` returns that prediction as well (``first=True``);
``flowcli predict-next`` writes it only with ``--include-first``.

Past flows from files are full-resolution flows of the input frames. They are
resized to the run size (``--max-side``/``--scale``, vectors rescaled), padded
like the frames (replicate, :class:`~flowcli.model.InputPadder`), resized to
the 1/8 grid with bilinear ``align_corners=True`` and divided by 8, exactly as
the official evaluation does with ground truth. Unknown (NaN) pixels count as
zero motion.

Encoder sharing: official P checkpoints have their own cnet and fnet. The
estimator's feature maps are reused for the P model only if both fnets hold
identical weights (checked once with ``torch.equal``); otherwise the P model
runs its own fnet once per frame. The context encoders always differ.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from .engine import (FlowStream, Geometry, StreamOptions, describe, flow_to_low, output_flow, prepare_model,
                     take_frame)
from .errors import InputError
from .pipeline import drawing_key, input_key
from .model import InputPadder, MemFlowNet, forward_interpolate, fused
from .model.update import same_layout
from .model.workspace import Workspace

__all__ = ["PredictStep", "PredictStream", "PredictorView", "mirror", "fnets_equal", "flow_to_low", "warp_forward",
           "prior_flow_path", "read_prior_flow", "PredictJob", "PredictReport", "run_predict"]


def fnets_equal(a: MemFlowNet, b: MemFlowNet) -> bool:
    """True if the two feature encoders hold identical weights (same names, shapes and values)."""
    sa, sb = a.fnet.state_dict(), b.fnet.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].shape == sb[k].shape and sa[k].device == sb[k].device and torch.equal(sa[k], sb[k])
               for k in sa)


@dataclass
class PredictStep:
    """What :meth:`PredictStream.push` returns for one frame."""

    index: int                     # frames pushed before this one (t)
    flow: np.ndarray               # (H,W,2) float32: predicted flow this frame -> next frame, input size
    flow_low: torch.Tensor         # (1,2,h,w): the prediction on the padded 1/8 grid (incl. forward warp flow)
    first: bool                    # t == 0: empty memory, zero forward flow (official loop predicts anyway)
    past_flow: np.ndarray | None = None  # (H,W,2) estimated flow previous -> this frame (estimator mode)


class PredictStream:
    """Push frames (H,W,3) uint8 RGB in order; get the predicted flow from each to the next.

    ``model`` is a MemFlowNet-P (``cfg.predict``). With ``estimator`` (a MemFlowNet
    estimator) an estimation :class:`FlowStream` runs alongside and supplies the
    past flows; without it, every push after the first needs ``past_flow``
    (full-res flow previous -> this frame) or ``past_flow_low`` (1/8 grid).
    ``options`` gives the estimator's iters/warm start and the run size.
    """

    def __init__(self, model: MemFlowNet, options: StreamOptions | None = None,
                 device: torch.device | str = "cpu", estimator: MemFlowNet | None = None):
        if not model.cfg.predict:
            raise ValueError("PredictStream needs a MemFlowNet-P model (cfg.predict=True)")
        if estimator is not None and estimator.cfg.predict:
            raise ValueError("the estimator must be an estimation model, not MemFlowNet-P")
        self.opt = options or StreamOptions()
        self.device = torch.device(device)
        self.model = prepare_model(model, self.opt.precision, self.device)
        self.dtype = torch.bfloat16 if self.opt.precision == "bf16" else torch.float32
        self.estimator = FlowStream(estimator, self.opt, self.device) if estimator is not None else None
        # share feature maps only if they are what the P model's own fnet would compute
        self.shared_fnet = estimator is not None and fnets_equal(model, estimator)
        self.reset()

    def reset(self) -> None:
        workspace = Workspace()  # the past pair's correlation buffers, reused per frame (and by both views)
        self.views = [PredictorView(self.model, workspace)]
        if self.opt.tta:
            self.views.append(PredictorView(self.model, workspace, mirrored=True))
        self.geometry: Geometry | None = None
        self.frames_seen = 0
        if self.estimator is not None:
            self.estimator.reset()

    @property
    def memory(self):
        """The (plain view's) memory of past motion: one past pair."""
        return self.views[0].memory

    # -- preprocessing (the engine's) --------------------------------------------------------
    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.geometry is None else self.geometry.size

    @property
    def run_hw(self) -> tuple[int, int] | None:
        return None if self.geometry is None else self.geometry.run_hw

    @property
    def padder(self) -> InputPadder | None:
        return None if self.geometry is None else self.geometry.padder

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        return take_frame(self, image)

    def _encode(self, image: np.ndarray, prime: bool):
        """Feed the estimator (if any); return (P input, P fmap, estimated full-res flow, its flow_low)."""
        if self.estimator is None:
            x = self._prepare(image)
            return x, self.model.encode_features(x), None, None
        est = self.estimator
        if prime:
            est.prime(image)
            est_flow = None
        else:
            est_flow = est.push(image)
        if self.size is None:  # take over the estimator's geometry
            self.geometry = est.geometry
            fused.limit_packing(self.model, self.geometry.run_hw)
        x = est.prev_input  # same precision as the P model (both follow the options)
        fmap = est.prev_fmap if self.shared_fnet else self.model.encode_features(x)
        return x, fmap, est_flow, (est.prev_flow_low if est_flow is not None else None)

    # -- streaming ---------------------------------------------------------------------------
    @torch.inference_mode()
    def prime(self, image: np.ndarray, t: int | None = None) -> None:
        """Make ``image`` (frame ``t``) the previous frame without predicting: for resume and
        skipped frames. With an estimator, call :meth:`load_state` first if its state was
        saved (as for a FlowStream); the P side needs nothing else."""
        x, fmap, _, _ = self._encode(image, prime=True)
        for view in self.views:
            view.prime(x, fmap)
        self.frames_seen = t + 1 if t is not None else max(self.frames_seen, 1)

    @torch.inference_mode()
    def push(self, image: np.ndarray, past_flow: np.ndarray | None = None,
             past_flow_low: torch.Tensor | None = None) -> PredictStep:
        """Add frame t; return the predicted flow t -> t+1.

        For t >= 1 without an estimator, give the flow (t-1 -> t) as ``past_flow``
        (full-res (H,W,2) at the input size) or ``past_flow_low`` ((1,2,h,w) on the
        padded 1/8 grid, in 1/8-grid pixels).
        """
        has_prev = self.views[0].prev_key is not None
        if self.estimator is not None and (past_flow is not None or past_flow_low is not None):
            raise ValueError("past flows come from the estimator; do not pass them too")
        x, fmap, est_flow, low = self._encode(image, prime=False)
        if has_prev:
            if self.estimator is None:
                if past_flow_low is not None:
                    grid = (1, 2, x.shape[-2] // 8, x.shape[-1] // 8)
                    if not isinstance(past_flow_low, torch.Tensor) or tuple(past_flow_low.shape) != grid:
                        raise ValueError(f"past_flow_low must be a tensor of shape {grid} (the padded 1/8 grid), "
                                         f"got {describe(past_flow_low)}")
                    low = past_flow_low.to(self.device, torch.float32)
                elif past_flow is not None:
                    if (not isinstance(past_flow, np.ndarray) or past_flow.ndim != 3 or past_flow.shape[2] != 2
                            or past_flow.shape[:2] != self.size):
                        raise ValueError(f"past_flow must be a ({self.size[0]}, {self.size[1]}, 2) array (the "
                                         f"frames' size), got {describe(past_flow)}")
                    low = flow_to_low(past_flow, self.run_hw, self.padder, self.device)
                else:
                    raise ValueError("push() needs the past flow (previous -> this frame) without an estimator")
        flows = [view.step(x, fmap, low if has_prev else None) for view in self.views]
        flow_low, flow_up = flows[0] if len(flows) == 1 else (0.5 * (flows[0][0] + flows[1][0]),
                                                             0.5 * (flows[0][1] + flows[1][1]))
        t = self.frames_seen
        self.frames_seen += 1
        flow = output_flow(flow_up, self.geometry)
        return PredictStep(t, flow, flow_low, first=not has_prev, past_flow=est_flow)

    # -- resume ----------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """The history a resumed run cannot recompute: the estimator's (the P side is rebuilt
        from the previous frame and the past flow, since its memory holds one pair)."""
        out = {"frames_seen": torch.tensor(self.frames_seen)}
        if self.estimator is not None:
            out.update({f"est.{k}": v for k, v in self.estimator.state().items()})
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.estimator is not None:
            self.estimator.load_state({k[4:]: v for k, v in state.items() if k.startswith("est.")})
        self.frames_seen = int(state.get("frames_seen", torch.tensor(0)))


def mirror(x: torch.Tensor, flow: bool = False) -> torch.Tensor:
    """(B,C,H,W) image or flow -> its left-right mirror image, in the same memory format; a flow's
    horizontal component changes sign (``flow=True``)."""
    out = x.flip(-1)
    if flow:
        out = torch.cat([-out[:, :1], out[:, 1:]], dim=1)
    return same_layout(out, x)


class PredictorView:
    """The P model's state over one view of the video: the previous frame's context key and feature
    map, the memory of the past pair, and the forward warp flow.

    ``mirrored``: the view of the left-right mirror image of every frame, for the test-time
    augmentation of ``StreamOptions.tta``: the prediction is made on the mirrored frames from the
    mirrored past flow, mirrored back and averaged with the plain view's. The mirrored view runs its
    own encoders (the estimator's feature maps are of the plain frames). Frames and flows are mirrored
    after padding, on the network's grid, so the two views' 1/8 grids and flows line up. Where the
    padding is uneven (an odd padded width: the padder puts the smaller half on the left) this is the
    network run on the mirrored *padded* frames, not exactly on the mirrored video, whose padding
    would fall the other way (measured: up to ~0.5 px apart at 157 px wide).
    """

    def __init__(self, model: MemFlowNet, workspace: Workspace, mirrored: bool = False):
        self.model, self.workspace, self.mirrored = model, workspace, mirrored
        self.memory = model.new_memory()
        self.prev_key: torch.Tensor | None = None   # context key of the previous frame
        self.prev_fmap: torch.Tensor | None = None  # feature map of the previous frame
        self.forward_flow: torch.Tensor | None = None

    def _view(self, x: torch.Tensor, fmap: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """This view's input and feature map of a frame (``fmap``: the plain frame's, if computed)."""
        if self.mirrored:
            x, fmap = mirror(x), None
        return x, self.model.encode_features(x) if fmap is None else fmap

    def prime(self, x: torch.Tensor, fmap: torch.Tensor | None) -> None:
        """Make ``x`` (a padded network input) the previous frame, with an empty memory."""
        x, self.prev_fmap = self._view(x, fmap)
        self.prev_key = self.model.encode_context(x).key
        self.memory.reset()
        self.forward_flow = None

    def step(self, x: torch.Tensor, fmap: torch.Tensor | None, past_low: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``x`` and the past flow (previous -> this frame, (1,2,h,w) on the 1/8 grid; None at the
        first frame) -> the predicted flow (low, up) of the plain frames, this frame -> next."""
        x, fmap = self._view(x, fmap)
        if past_low is not None:
            if self.mirrored:
                past_low = mirror(past_low, flow=True)
            corr = self.model.correlation(self.prev_fmap, fmap, self.workspace)
            self.memory.add(self.prev_key, self.model.motion_value(corr, past_low))
            self.forward_flow = forward_interpolate(past_low[0])[None].to(x.device)
        ctx = self.model.encode_context(x)
        if self.forward_flow is None:
            self.forward_flow = torch.zeros(1, 2, *ctx.size, device=x.device)
        flow_low, flow_up = self.model.predict(ctx, self.memory, self.forward_flow)
        self.prev_key, self.prev_fmap = ctx.key, fmap
        if self.mirrored:
            flow_low, flow_up = mirror(flow_low, flow=True), mirror(flow_up, flow=True)
        return flow_low, flow_up


# ============================================================================== predicted frames
def warp_forward(image: np.ndarray, flow: np.ndarray, alpha: float = 2.0) -> np.ndarray:
    """Frame t moved by the flow t -> t+1: an estimate of frame t+1 (H,W,3 uint8).

    Forward splatting with softmax weights (Niklaus & Liu, CVPR 2020): each pixel is
    spread bilinearly onto the 4 pixels around ``x + flow(x)``, weighted by
    ``exp(alpha * |flow(x) - median flow|)``, so where pixels collide the ones moving
    unlike the dominant (camera) motion, usually the foreground, win; similar motions
    average. Pixels nothing lands on (disocclusions, borders) are inpainted (OpenCV
    Telea) from their surroundings.
    """
    h, w = flow.shape[:2]
    flow = np.nan_to_num(flow.astype(np.float32))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    x0, y0 = np.floor(tx), np.floor(ty)
    fx, fy = tx - x0, ty - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    dev = np.linalg.norm(flow - np.median(flow.reshape(-1, 2), axis=0), axis=-1).astype(np.float64).reshape(-1)
    corners = []  # (target indices, source mask, bilinear weights) of the 4 pixels around each target point
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        m = ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & (wgt > 0)).reshape(-1)
        corners.append(((yi * w + xi).reshape(-1)[m], m, wgt.reshape(-1)[m].astype(np.float64)))
    # The softmax is shifted by the largest deviation landing on each target pixel, not the frame's:
    # with one global shift, a pixel moving ~370 px unlike the rest made every other weight exp(-740) = 0.
    top = np.full(h * w, -np.inf)
    for idx, m, _ in corners:
        np.maximum.at(top, idx, dev[m])
    src = image.reshape(-1, 3).astype(np.float64)
    acc = np.zeros((h * w, 3))
    wsum = np.zeros(h * w)        # softmax-weighted
    coverage = np.zeros(h * w)    # bilinear only: did anything land here?
    for idx, m, bil in corners:
        wm = bil * np.exp(alpha * (dev[m] - top[idx]))  # <= bil, no overflow
        coverage += np.bincount(idx, bil, h * w)
        wsum += np.bincount(idx, wm, h * w)
        for c in range(3):
            acc[:, c] += np.bincount(idx, wm * src[m, c], h * w)
    holes = (coverage < 1e-3) | (wsum <= 0)
    out = acc / np.where(holes, 1.0, wsum)[:, None]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(h, w, 3)
    if holes.any():
        out = cv2.inpaint(out, holes.reshape(h, w).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return out


# ============================================================================== prior flow files
PRIOR_EXTENSIONS = (".flo", ".npy", ".pfm", ".png")


def prior_flow_path(folder: Path, index: int) -> Path | None:
    """The flow file of the pair starting at frame ``index`` (``000005.flo`` etc.), or None."""
    for ext in PRIOR_EXTENSIONS:
        p = Path(folder) / f"{index:06d}{ext}"
        if p.is_file():
            return p
    return None


def check_prior_step(folder: Path, step: int) -> None:
    """A prior-flows folder written by ``flowcli estimate`` records its --step: 000004.flo is then the flow
    4 -> 4 + step. Refuse pairing it with another --step (the files alone cannot tell). Folders without a
    record are taken as they are."""
    from .pipeline import REPORT_FILE
    folder = Path(folder)
    try:
        if (folder / REPORT_FILE).is_file():
            record = json.loads((folder / REPORT_FILE).read_text())
            recorded = int(record["step"]) if record.get("command") == "estimate" else None
        else:  # OUT/estimate/ of `predict-next --with-estimate`: the record is OUT's
            record = json.loads((folder.parent / REPORT_FILE).read_text())
            recorded = int(record["step"]) if record.get("command") == "predict-next" and \
                record.get("with_estimate") and folder.name == "estimate" else None
    except (OSError, ValueError, KeyError, TypeError):
        return
    if recorded is not None and recorded != step:
        raise InputError(f"{folder}: its flows are {recorded} frame(s) apart (--step {recorded}, recorded in "
                         f"{REPORT_FILE}), this run's pairs {step}; use the same --step")


def read_prior_flow(folder: Path, index: int, next_index: int, size: tuple[int, int]) -> np.ndarray:
    from .flowio import read_flow
    path = prior_flow_path(folder, index)
    if path is None:
        raise InputError(f"{Path(folder) / f'{index:06d}.flo'}: missing prior flow for frames {index} -> "
                         f"{next_index} (--prior-flows needs one flow file per pair, named by its first "
                         "frame as `flowcli estimate` writes them)")
    flow = read_flow(path)
    if flow.shape[:2] != tuple(size):
        raise InputError(f"{path}: flow is {flow.shape[1]}x{flow.shape[0]}, frames are {size[1]}x{size[0]}")
    return flow


# ============================================================================== the job
@dataclass
class PredictJob:
    """Outputs of ``flowcli predict-next``, named by the frame t a prediction starts from."""

    out_dir: Path
    formats: tuple[str, ...] = ("flo",)
    video: bool = False
    frames: bool = False             # also write frames/{t}.png: frame t forward-warped by the prediction
    with_estimate: bool = False      # also write the estimated flows to estimate/ (estimator mode)
    include_first: bool = False      # also write the t = 0 prediction (empty memory)
    prior_flows: Path | None = None  # past flows from files instead of an estimator
    overwrite: bool = False
    max_flow: float | None = None
    options: StreamOptions = field(default_factory=StreamOptions)

    def prediction_paths(self, index: int) -> dict[str, Path]:
        from .pipeline import FORMAT_FILES
        return {f: self.out_dir / FORMAT_FILES[f].format(i=index) for f in self.formats}

    def frame_path(self, index: int) -> Path:
        return self.out_dir / "frames" / f"{index:06d}.png"

    def estimate_paths(self, index: int) -> dict[str, Path]:
        from .pipeline import FORMAT_FILES
        return {f: self.out_dir / "estimate" / FORMAT_FILES[f].format(i=index) for f in self.formats}

    def outputs(self, t: int, index: int, prev_index: int | None) -> list[Path]:
        """Every file written for frame t (original index ``index``)."""
        out: list[Path] = []
        if t > 0 or self.include_first:
            out += self.prediction_paths(index).values()
            if self.frames:
                out.append(self.frame_path(index))
        if self.with_estimate and prev_index is not None:
            out += self.estimate_paths(prev_index).values()
        return out

    def paths_of_run(self, index: int, start: int, step: int, last: int | None) -> list[Path]:
        """The files named by ``index`` that a run over frames start, start + step, ..., last writes."""
        from .replaced import in_range
        if not in_range(index, start, step, last):
            return []
        out: list[Path] = []
        if index > start or self.include_first:
            out += self.prediction_paths(index).values()
            if self.frames:
                out.append(self.frame_path(index))
        if self.with_estimate and index < last:
            out += self.estimate_paths(index).values()
        return out

    def output_names(self) -> list[str]:
        """The names this job writes, relative to out_dir, with ``{i:06d}`` for the index."""
        from .pipeline import FORMAT_FILES
        names = [FORMAT_FILES[f] for f in self.formats]
        frames = ["frames/{i:06d}.png"] if self.frames else []
        estimated = [f"estimate/{n}" for n in names] if self.with_estimate else []
        return names + frames + estimated


@dataclass
class PredictReport:
    frames: int = 0
    predictions: int = 0        # predictions on disk for this input (written or found)
    written: int = 0            # files written
    skipped: int = 0            # frames with output files, all of which existed
    recomputed: int = 0         # of those, frames the model still had to run on (state needed)
    computed: int = 0           # frames that went through the models (push)
    seconds: float = 0.0
    model_seconds: float = 0.0
    resumed_from_state: bool = False
    removed: int = 0            # --overwrite: outputs of the replaced run that this run did not rewrite
    damaged_frames: int = 0     # frames the video decoder reported (and concealed) errors in
    shared_features: bool = False  # the P model reused the estimator's feature maps (identical fnets)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds_per_frame"] = self.model_seconds / max(1, self.computed)
        return d


def _fingerprint(weights_sha: str, estimate_sha: str | None, job: PredictJob, source,
                 start: int, step: int) -> str:
    o = job.options
    past = {"prior_flows": str(Path(job.prior_flows).resolve())} if job.prior_flows is not None else \
        {"estimator": estimate_sha, "iters": o.iters, "warm_start": o.warm_start, "coarse": o.coarse,
         "refine": o.refine}
    return json.dumps({"command": "predict-next", "weights": weights_sha, **past, "max_side": o.max_side,
                       "scale": o.scale, "precision": o.precision, "start": start, "step": step,
                       "input": input_key(getattr(source, "name", "")), **({"tta": True} if o.tta else {}),
                       **drawing_key(job.max_flow, job.video, source)}, sort_keys=True)


def _write_png(path: Path, rgb: np.ndarray, overwrite: bool) -> int:
    from .atomic import atomic_path
    if path.exists() and not overwrite:
        return 0
    with atomic_path(path, overwrite=True) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")
    return 1


def run_predict(model: MemFlowNet, job: PredictJob, source, *, weights_info: dict,
                estimator: MemFlowNet | None = None, estimate_info: dict | None = None,
                start: int = 0, step: int = 1, device: torch.device | str = "cpu",
                on_frame: Callable[[int], None] | None = None) -> PredictReport:
    """Run MemFlowNet-P ``model`` over ``source`` (an iterable of Frame), writing ``job``'s outputs.

    Past flows come from ``estimator`` or, if ``job.prior_flows`` is set, from flow files.
    Resume: outputs that exist are never rewritten (unless ``job.overwrite``). With prior
    flows any frame whose outputs all exist is skipped (the state at frame t needs only
    frame t-1 and its prior flow). With an estimator the estimator's state is saved after
    every frame and a rerun restarts from it; without a usable state earlier frames are
    recomputed (not rewritten).
    """
    from .pipeline import check_not_an_input, output_folder

    if (estimator is None) == (job.prior_flows is None):
        raise ValueError("give either an estimator or job.prior_flows")
    if job.with_estimate and estimator is None:
        raise ValueError("with_estimate needs the estimator")
    prior = Path(job.prior_flows) if job.prior_flows is not None else None
    if prior is not None and not prior.is_dir():
        raise InputError(f"{prior}: --prior-flows is not a folder")
    if prior is not None:
        check_prior_step(prior, step)
    check_not_an_input(job.out_dir, job.output_names(), getattr(source, "name", None), prior)
    with output_folder(job.out_dir):
        return _run_predict(model, job, source, prior, weights_info=weights_info, estimator=estimator,
                            estimate_info=estimate_info, start=start, step=step, device=device, on_frame=on_frame)


def _run_predict(model: MemFlowNet, job: PredictJob, source, prior: Path | None, *, weights_info: dict,
                 estimator: MemFlowNet | None, estimate_info: dict | None, start: int, step: int, device,
                 on_frame) -> PredictReport:
    from .errors import OutputExistsError
    from .pipeline import (EXACT_FORMATS, VIDEO_FILE, FolderClaim, _finish_replacing, _read_back, _save_state,
                           _VideoSink, _write_pair, damaged_frames, open_job_state)
    from .replaced import remove_replaced

    out = job.out_dir
    if "png" in job.formats:
        (out / "color").mkdir(exist_ok=True)
    fingerprint = _fingerprint(weights_info.get("sha256", ""), (estimate_info or {}).get("sha256"), job,
                               source, start, step)
    js = open_job_state(out, fingerprint, job.output_names(), job.video, job.overwrite,
                        getattr(source, "name", None))
    state_path, state, resume_index, replaces, rewrite, meta = \
        js.path, js.state, js.resume_index, js.replaces, js.rewrite, js.meta
    written_until = resume_index  # this run wrote the outputs of the frames up to here (its state says)
    render_video = job.video
    if job.video and (out / VIDEO_FILE).exists() and not rewrite:
        # flow.mp4 appears only when a run completes; with this job's state beside it, it is that run's
        if resume_index is None:
            raise OutputExistsError(f"{out / VIDEO_FILE}: already exists (use --overwrite to replace it)")
        render_video = False
    readable = any(f in job.formats for f in EXACT_FORMATS)
    if render_video and not readable:  # skipped predictions could not be drawn into the video
        state, resume_index = None, None
    if estimator is None:
        state, resume_index = None, None  # not needed: see the docstring
    if resume_index is not None:  # trust the state only if every frame up to it is on disk
        k, t, prev_k = start, 0, None
        while k <= resume_index:
            if not all(p.exists() for p in job.outputs(t, k, prev_k)):
                state, resume_index = None, None
                break
            prev_k, k, t = k, k + step, t + 1
    claim = FolderClaim(state_path, meta, resuming=resume_index is not None)

    stream = PredictStream(model, job.options, device, estimator=estimator)
    report = PredictReport(resumed_from_state=resume_index is not None, shared_features=stream.shared_fnet)
    video = _VideoSink(out / VIDEO_FILE, getattr(source, "fps", None) or 10.0, rewrite, job.max_flow) \
        if render_video else None
    t_job = time.perf_counter()
    last_frame = None
    try:
        prev = None
        live = False  # the stream has seen `prev`
        for t, frame in enumerate(source):
            i = last_frame = frame.index
            prev_i = prev.index if prev is not None else None
            writes_prediction = t > 0 or job.include_first
            paths = job.prediction_paths(i) if writes_prediction else {}
            outputs = job.outputs(t, i, prev_i)
            vouched = written_until is not None and i <= written_until
            done = all(p.exists() for p in outputs) and (vouched or not rewrite)
            report.frames += 1
            can_skip = (prior is not None and (readable or not render_video)) or \
                (resume_index is not None and i <= resume_index)
            if done and can_skip:
                report.skipped += bool(outputs)
                if writes_prediction:
                    report.predictions += 1
                    if video is not None:
                        video.add(_read_back(paths))
                if estimator is not None:
                    if i == resume_index:
                        stream.load_state(state)
                        stream.prime(frame.image, t)
                        live = True
                else:
                    live = False
                prev = frame
                if on_frame:
                    on_frame(i)
                continue
            if not live and prev is not None:
                stream.prime(prev.image, t - 1)
            live = True
            if not writes_prediction and not outputs:  # t = 0: only the state is needed
                stream.prime(frame.image, t)
                prev = frame
                if on_frame:
                    on_frame(i)
                continue
            past = None
            if prior is not None and prev is not None:
                past = read_prior_flow(prior, prev_i, i, frame.image.shape[:2])
            t0 = time.perf_counter()
            step_out = stream.push(frame.image, past_flow=past)
            report.model_seconds += time.perf_counter() - t0
            report.computed += 1
            if done:
                report.skipped += bool(outputs)
                report.recomputed += bool(outputs)
            else:
                claim.before_output()
                if writes_prediction:
                    report.written += _write_pair(step_out.flow, paths, rewrite, job.max_flow)
                    if job.frames:
                        report.written += _write_png(job.frame_path(i), warp_forward(frame.image, step_out.flow),
                                                     rewrite)
                if job.with_estimate and step_out.past_flow is not None:
                    report.written += _write_pair(step_out.past_flow, job.estimate_paths(prev_i), rewrite,
                                                  job.max_flow)
            if writes_prediction:
                report.predictions += 1
                if video is not None:
                    video.add(step_out.flow)
            _save_state(state_path, stream.state(), meta, i)
            prev = frame
            if on_frame:
                on_frame(i)
        if video is not None:
            video.writer.close()
            report.written += 1  # flow.mp4
    except BaseException:
        if video is not None:
            video.writer.abort()
        raise
    report.damaged_frames = damaged_frames(source)
    if replaces:  # finished: drop what the replaced runs wrote and this one did not
        report.removed = remove_replaced(replaces, out, kept=lambda k: job.paths_of_run(k, start, step, last_frame),
                                         keeps_video=job.video, inputs=[getattr(source, "name", None), prior])
        _finish_replacing(state_path)
    report.seconds = time.perf_counter() - t_job
    return report
