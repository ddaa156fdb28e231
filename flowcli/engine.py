"""Streaming flow estimation: one :class:`FlowStream` per video.

Frames are pushed one at a time; each push after the first returns the flow
from the previous frame to this one. Only the previous frame's input, feature
map and the bounded key/value memory are kept, so memory use does not grow
with video length. Every frame goes through the feature encoder once (the
official code encodes each frame twice); results are identical.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .allocator import release_free_heap, tune_malloc
from .coarse import CoarseGuide
from .refine import FlowRefiner
from .model import InputPadder, MemFlowNet, forward_interpolate, fused
from .model.workspace import Workspace


def pick_device(name: str = "auto") -> torch.device:
    """auto -> cuda, then mps, then cpu. (GPU paths are not tested in this project's CI: no GPU.)"""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: MPS is not available")
    return torch.device(name)


def run_size(height: int, width: int, max_side: int | None = None, scale: float | None = None) -> tuple[int, int]:
    """The (h, w) the network runs at, given --max-side or --scale (at least 8 px per side)."""
    s = 1.0
    if scale is not None:
        if scale <= 0:
            raise ValueError("--scale must be positive")
        s = scale
    elif max_side is not None:
        if max_side < 8:
            raise ValueError("--max-side must be at least 8")
        s = min(1.0, max_side / max(height, width))
    return max(8, round(height * s)), max(8, round(width * s))


def resize_flow(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a (h,w,2) flow to (height,width,2), scaling vectors to the new pixel size."""
    h, w = flow.shape[:2]
    if (h, w) == (height, width):
        return flow
    out = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def flow_to_low(flow: np.ndarray, run_hw: tuple[int, int], padder: InputPadder,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Full-res (H,W,2) flow of the input frames -> (1,2,h,w) flow on the padded 1/8 grid.

    As official: resize to the run size (if different), replicate-pad, bilinear
    ``align_corners=True`` to (Hp/8, Wp/8), divide by 8. NaN counts as zero motion.
    """
    flow = np.nan_to_num(np.asarray(flow, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flow = resize_flow(np.ascontiguousarray(flow), *run_hw)
    x = torch.from_numpy(np.ascontiguousarray(flow)).permute(2, 0, 1)[None].to(device)
    x = padder.pad(x)
    hp, wp = x.shape[-2:]
    return F.interpolate(x, size=(hp // 8, wp // 8), mode="bilinear", align_corners=True) / 8


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Geometry:
    """Sizes of one stream: input (H, W), the network's run size, and its padding."""

    size: tuple[int, int]
    run_hw: tuple[int, int]
    padder: InputPadder

    @classmethod
    def check(cls, current: "Geometry | None", image: np.ndarray, opt: "StreamOptions") -> "Geometry":
        """The stream's geometry after seeing ``image`` (fixed by the first frame)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB numpy arrays, got {describe(image)}")
        h, w = image.shape[:2]
        if current is None:
            run_hw = run_size(h, w, opt.max_side, opt.scale)
            return cls((h, w), run_hw, InputPadder(*run_hw))
        if current.size != (h, w):
            raise ValueError(f"frame size changed from {current.size[1]}x{current.size[0]} to {w}x{h}")
        return current


def describe(x) -> str:
    """What an array argument actually is, for an error message."""
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def image_to_input(image: np.ndarray, geometry: Geometry, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H,W,3) uint8 RGB -> (1,3,Hp,Wp) network input: resized to the run size, padded,
    scaled to [-1, 1]; channels-last on CPU."""
    h, w = geometry.size
    rh, rw = geometry.run_hw
    if (rh, rw) != (h, w):
        interp = cv2.INTER_AREA if rh < h else cv2.INTER_LINEAR
        image = cv2.resize(image, (rw, rh), interpolation=interp)
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    x = 2 * (geometry.padder.pad(x) / 255.0) - 1
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(dtype)


def output_flow(flow_up: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """(1,2,Hp,Wp) network flow -> (H,W,2) float32 at the input size."""
    flow = geometry.padder.unpad(flow_up)[0].permute(1, 2, 0).float().cpu().numpy()
    return resize_flow(np.ascontiguousarray(flow), *geometry.size)


def take_frame(stream, image: np.ndarray) -> torch.Tensor:
    """A stream's network input for ``image`` (a FlowStream's or PredictStream's). The first frame fixes
    the stream's geometry, and its run size decides whether the stream's model packs its weights."""
    first = stream.geometry is None
    stream.geometry = Geometry.check(stream.geometry, image, stream.opt)
    if first:
        fused.limit_packing(stream.model, stream.geometry.run_hw)
    return image_to_input(image, stream.geometry, stream.device, stream.dtype)


@dataclass
class StreamOptions:
    iters: int = 15
    warm_start: bool = False       # official default: off
    max_side: int | None = None
    scale: float | None = None
    precision: str = "fp32"        # "bf16": bfloat16 weights and activations (AMX on recent x86)
    coarse: bool = False           # coarse-to-fine start for large motions (flowcli.coarse; not official)
    refine: bool = False           # variational refinement of each output flow (flowcli.refine; not official)
    tta: bool = False              # MemFlow-P: average with the prediction on mirrored frames (flowcli.predict)


def prepare_model(model: MemFlowNet, precision: str, device: torch.device) -> MemFlowNet:
    """The inference form of ``model``: eval mode, on ``device``, NHWC (channels_last) on CPU,
    and for bf16 a bfloat16 copy (the caller's float32 model is left as it is).

    Channels-last is what makes oneDNN's 1x1 and depthwise convolutions fast on CPU
    (a 1x1 conv ran ~20x faster here); numerics stay within float32 rounding.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}")
    model = model.eval().to(device)
    if precision == "bf16":
        model = copy.deepcopy(model).to(torch.bfloat16)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
        tune_malloc()  # reuse per-frame memory instead of faulting it in again (see flowcli.allocator)
    return model


class FlowStream:
    """Push frames (H,W,3) uint8 RGB in order; get (H,W,2) float32 flows of consecutive pairs."""

    def __init__(self, model: MemFlowNet, options: StreamOptions | None = None, device: torch.device | str = "cpu"):
        if model.cfg.predict:
            raise ValueError("FlowStream needs an estimation model, not MemFlowNet-P (use flowcli.predict.PredictStream)")
        self.opt = options or StreamOptions()
        if self.opt.iters < 1:
            raise ValueError("--iters must be at least 1")
        self.device = torch.device(device)
        self.model = prepare_model(model, self.opt.precision, self.device)
        self.dtype = torch.bfloat16 if self.opt.precision == "bf16" else torch.float32
        self.guide = CoarseGuide(self.model, self.opt, self.device) if self.opt.coarse else None
        self.refiner = FlowRefiner() if self.opt.refine else None
        self.reset()

    def reset(self) -> None:
        if self.guide is not None:
            self.guide.reset()
        if self.refiner is not None:
            self.refiner.reset()
        self.memory = self.model.new_memory()
        self.workspace = Workspace()                 # correlation and attention buffers, reused per pair
        self.geometry: Geometry | None = None        # input size, run size and padding of this stream
        self.prev_input: torch.Tensor | None = None  # normalised, padded previous frame
        self.prev_fmap: torch.Tensor | None = None
        self.prev_flow_low: torch.Tensor | None = None
        self.pairs_done = 0

    # -- preprocessing -------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.geometry is None else self.geometry.size

    @property
    def padder(self) -> InputPadder | None:
        return None if self.geometry is None else self.geometry.padder

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        return take_frame(self, image)

    # -- streaming ------------------------------------------------------------------
    @torch.inference_mode()
    def prime(self, image: np.ndarray) -> None:
        """Make ``image`` the previous frame without computing a pair (resume, first frame)."""
        x = self._prepare(image)
        self.prev_input, self.prev_fmap = x, self.model.encode_features(x)
        if self.guide is not None:
            self.guide.prime(image, self.geometry.run_hw)
        if self.refiner is not None:
            self.refiner.prime(image)

    @torch.inference_mode()
    def push(self, image: np.ndarray) -> np.ndarray | None:
        """Add the next frame; return the flow previous -> this frame (None for the first frame)."""
        if self.prev_input is None:
            self.prime(image)
            return None
        x = self._prepare(image)
        flow_init = None
        if self.guide is not None:  # the half-size pass first; its flow is the start if the motion is large
            flow_init = self.guide.start(image, self.geometry)
        if flow_init is not None:
            flow_init = flow_init.to(self.device)
        elif self.opt.warm_start and self.prev_flow_low is not None:
            flow_init = forward_interpolate(self.prev_flow_low[0])[None].to(self.device)
        release_free_heap()  # the last pair's freed working set: the encoders come on top of the workspace
        fmap = self.model.encode_features(x)
        ctx = self.model.encode_context(self.prev_input)
        release_free_heap()  # before the pair's large buffers: they come on top of the heap (flowcli.allocator)
        est = self.model.estimate(ctx, self.prev_fmap, fmap, self.memory, self.opt.iters, flow_init=flow_init,
                                  workspace=self.workspace)
        self.memory.add(ctx.key, est.value)
        self.prev_input, self.prev_fmap, self.prev_flow_low = x, fmap, est.flow_low
        self.pairs_done += 1
        flow = output_flow(est.flow_up, self.geometry)
        return flow if self.refiner is None else self.refiner.refine(image, flow)

    # -- resume -----------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """What a resumed run needs besides the previous frame: memory and last low-res flow.

        The tensors are contiguous CPU copies, so whoever saves them (the background writer) runs
        no torch op: one there starts a second OpenMP thread team that competed with the model's
        threads (measured: every pair 25-30% slower in `flowcli estimate`).
        """
        out = {"pairs_done": torch.tensor(self.pairs_done)}
        if self.memory.keys is not None:
            out.update(keys=_snapshot(self.memory.keys), values=_snapshot(self.memory.values),
                       frame_tokens=torch.tensor(self.memory.frame_tokens))
        if self.prev_flow_low is not None:
            out["prev_flow_low"] = _snapshot(self.prev_flow_low)
        if self.guide is not None:
            out.update({f"coarse.{k}": v for k, v in self.guide.state().items()})
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.memory.reset()
        if "keys" in state:
            self.memory.keys = state["keys"].to(self.device)
            self.memory.values = state["values"].to(self.device)
            self.memory.frame_tokens = int(state["frame_tokens"])
        self.prev_flow_low = state["prev_flow_low"].to(self.device) if "prev_flow_low" in state else None
        self.pairs_done = int(state["pairs_done"])
        if self.guide is not None:
            self.guide.load_state({k[7:]: v for k, v in state.items() if k.startswith("coarse.")})


def _snapshot(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)


def iter_flows(model: MemFlowNet, frames, options: StreamOptions | None = None, device="cpu"):
    """Yield (index of first frame, flow (H,W,2)) for consecutive frames of any iterable of
    ``Frame``-like objects (``.index``, ``.image``) or plain (H,W,3) uint8 arrays."""
    stream = FlowStream(model, options, device)
    prev_index = None
    for i, frame in enumerate(frames):
        index, image = (frame.index, frame.image) if hasattr(frame, "image") else (i, frame)
        flow = stream.push(image)
        if flow is not None:
            yield prev_index, flow
        prev_index = index
