"""Training MemFlowNet-P (next-frame flow prediction) on CPU from synthetic clips.

One sample is a 3-frame clip (0, 1, 2). The past pair 0 -> 1 goes into memory
exactly as :class:`~flowcli.predict.PredictStream` does at inference (motion
value of the past flow, under frame 0's context key; forward warp flow =
``forward_interpolate`` of the past flow), and the model predicts 1 -> 2 from
frame 1's context alone. The loss is the L1 end-point loss of the upsampled
prediction against the GT of 1 -> 2.

The past flow is the GT (official ``use_gt=True``); with probability
``estimated_past``, an estimation model's flow for 0 -> 1 (what ``predict-next``
feeds it without ``--prior-flows``, official ``use_gt=False``); with probability
``noisy_past``, a corrupted GT (blurred, scaled, with noise). The last two teach
the model not to trust the past flow blindly.
``occluded_weight`` > 1 weighs the pixels of frame 1 that frame 2 hides more in
the loss: the predictor was measured 20% worse than constant velocity there (its
1/8-grid output smears an approaching occluder's motion over them).
The single pass costs one update block and no refinement loop, so steps are
cheap. The flow head's last layer starts at zero: an untrained model then
predicts the (1/8-grid) constant-velocity flow, and training learns
corrections to it. Weights resume from the safetensors file alone, like
:mod:`flowcli.train`.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .model import CPU_SMALL, MemFlowNet, ModelConfig, forward_interpolate
from .train import (MAX_FLOW, check_lr, check_run_folder, init_for_training, load_start, lr_at, optimizer_step,
                    start_workers)
from .weights import save_safetensors

# The prediction model: the small estimator's widths, official P rule for the softmax scale
# (train_avg_length = (H*W/64)/2 of the training crop, 192x256 -> 384).
CPU_SMALL_P = CPU_SMALL.replace(predict=True, train_avg_length=384.0)


@dataclass
class PredictTrainConfig:
    out_dir: str = "runs/cpu-small-p"
    total_steps: int = 4000
    max_steps: int | None = None
    batch_size: int = 8
    height: int = 192
    width: int = 256
    lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    noisy_past: float = 0.5       # probability of a corrupted past flow instead of the GT
    estimated_past: float = 0.0   # probability of the estimator's past flow instead of the GT
    estimator: str | None = None  # estimation weights for that (None: the shipped default)
    estimator_iters: int | None = None  # its iterations (None: the weights' own)
    occluded_weight: float = 1.0  # loss weight of frame-1 pixels hidden in frame 2 (see the module notes)
    bf16: bool = True             # bfloat16 autocast on CPU (AMX), as flowcli.train
    channels_last: bool = True
    threads: int = 2
    seed: int = 1
    workers: int = 1
    save_every: int = 50
    eval_every: int = 250
    eval_clips: int = 16
    model: dict = field(default_factory=lambda: CPU_SMALL_P.to_dict())


def past_flow_low(flow: torch.Tensor) -> torch.Tensor:
    """(B,2,H,W) full-res flow -> (B,2,H/8,W/8) on the 1/8 grid (official: bilinear, align_corners=True, /8)."""
    h, w = flow.shape[-2:]
    return F.interpolate(flow, size=(h // 8, w // 8), mode="bilinear", align_corners=True) / 8


def corrupt(flow_low: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A plausible estimation error: smoothed, slightly mis-scaled, plus noise proportional to speed."""
    b = flow_low.shape[0]
    smooth = F.avg_pool2d(flow_low, 3, stride=1, padding=1, count_include_pad=False)
    scale = 1 + 0.15 * torch.randn(b, 1, 1, 1, generator=gen)
    noise = torch.randn(flow_low.shape, generator=gen) * (0.1 + 0.1 * flow_low.abs())
    return smooth * scale + noise


class PastEstimator:
    """The estimation model that supplies estimated past flows while training (no gradients).

    Same computation as the estimator inside ``PredictStream`` for a sequence's first pair
    (empty memory): the refined flow 0 -> 1 on the 1/8 grid.
    """

    def __init__(self, weights: str | None, iters: int | None):
        from .engine import prepare_model
        from .weights import load_weights
        loaded = load_weights(weights, kind="estimate")
        self.name, self.iters = loaded.name, iters or loaded.iters
        self.model = prepare_model(loaded.model, "fp32", torch.device("cpu"))

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B,>=2,3,H,W) 0..255 -> (B,2,H/8,W/8) estimated flow 0 -> 1, 1/8-grid pixels."""
        x = (2 * (frames[:, :2] / 255.0) - 1).contiguous()
        x0 = x[:, 0].contiguous(memory_format=torch.channels_last)
        x1 = x[:, 1].contiguous(memory_format=torch.channels_last)
        m = self.model
        est = m.estimate(m.encode_context(x0), m.encode_features(x0), m.encode_features(x1), None, self.iters)
        return est.flow_low.float()


def choose_past(gt_low: torch.Tensor, frames: torch.Tensor, cfg: PredictTrainConfig, gen: torch.Generator,
                estimator: PastEstimator | None) -> torch.Tensor:
    """Per sample: the estimator's flow (p = estimated_past), a corrupted GT (p = noisy_past) or the GT."""
    u = torch.rand(gt_low.shape[0], generator=gen)
    past = gt_low
    noisy = (u >= cfg.estimated_past) & (u < cfg.estimated_past + cfg.noisy_past)
    if noisy.any():
        past = torch.where(noisy[:, None, None, None], corrupt(gt_low, gen), past)
    estimated = u < cfg.estimated_past
    if estimated.any():
        if estimator is None:
            raise ValueError("estimated_past > 0 needs an estimator")
        idx = estimated.nonzero().flatten()
        past = past.clone()
        past[idx] = estimator(frames[idx])
    return past


def predict_forward(model: MemFlowNet, frames: torch.Tensor, past_low: torch.Tensor,
                    channels_last: bool = False) -> torch.Tensor:
    """frames (B,3,3,H,W) 0..255, past_low (B,2,h,w) flow 0->1 on the 1/8 grid -> upsampled flow 1->2."""
    x = 2 * (frames[:, :2] / 255.0) - 1
    b = x.shape[0]
    flat = x.flatten(0, 1)
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    fmaps = model.encode_features(flat).unflatten(0, (b, 2))
    ctxs = model.encode_context(flat)  # both frames in one batch: the cnet's BatchNorm sees them together
    ctx0, ctx1 = _context_part(ctxs, b, 0), _context_part(ctxs, b, 1)
    memory = model.new_memory()
    memory.add(ctx0.key, model.motion_value(model.correlation(fmaps[:, 0], fmaps[:, 1]), past_low))
    fwd = torch.stack([forward_interpolate(f) for f in past_low.detach()])
    _, flow_up = model.predict(ctx1, memory, fwd)
    return flow_up


def _context_part(ctx, b: int, i: int):
    """Frame i of a Context computed on (B*2) images interleaved as (b0f0, b0f1, b1f0, ...)."""
    from .model.memflow import Context
    h, w = ctx.size
    pick = lambda t: None if t is None else t.unflatten(0, (b, 2))[:, i]
    return Context(pick(ctx.net), pick(ctx.inp), pick(ctx.query), pick(ctx.key), (h, w))


def l1_epe(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, float]:
    """(L1 loss, mean EPE) over valid pixels; ``weight`` (B,H,W) scales each pixel's share of the loss
    (not of the EPE), which stays normalised by the number of valid pixels."""
    mask = (valid > 0.5) & (torch.linalg.vector_norm(gt, dim=1) < MAX_FLOW)
    denom = mask.sum().clamp(min=1)
    loss_mask = mask if weight is None else mask * weight
    loss = ((pred - gt).abs().sum(dim=1) * loss_mask).sum() / denom
    epe = (torch.linalg.vector_norm(pred - gt, dim=1) * mask).sum() / denom
    return loss, float(epe.detach())


def new_model(cfg: PredictTrainConfig) -> MemFlowNet:
    """A fresh P model (:func:`~flowcli.train.init_for_training`): its flow head starts at zero, so
    it first predicts the forward-warped past flow and learns corrections to it."""
    torch.manual_seed(cfg.seed)
    return init_for_training(MemFlowNet(ModelConfig.from_dict(cfg.model)))


@torch.no_grad()
def evaluate_synthetic(model: MemFlowNet, cfg: PredictTrainConfig, clips: int) -> dict[str, float]:
    """Held-out EPE of the prediction and of the full-res constant-velocity baseline (GT past flow)."""
    from .evaluate_predict import constant_velocity
    from .synth import ClipParams, generate_clip
    model.eval()
    params = ClipParams(height=cfg.height, width=cfg.width, num_frames=3)
    pe = be = 0.0
    for i in range(clips):
        clip = generate_clip(10_000_000 + i, params)
        frames = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() for f in clip.frames])[None]
        past = torch.from_numpy(clip.flows[0]).permute(2, 0, 1)[None]
        pred = predict_forward(model, frames, past_flow_low(past))
        gt = torch.from_numpy(clip.flows[1]).permute(2, 0, 1)[None]
        valid = torch.from_numpy(clip.valid[1].astype("float32"))[None]
        pe += l1_epe(pred, gt, valid)[1] / clips
        base = torch.from_numpy(constant_velocity(clip.flows[0])).permute(2, 0, 1)[None]
        be += l1_epe(base, gt, valid)[1] / clips
    model.train()
    return {"eval_epe": pe, "eval_baseline_epe": be}


def train_predict(cfg: PredictTrainConfig, resume: str | None = None, progress=None,
                  overwrite: bool = False) -> Path:
    """Train until ``max_steps`` (this run) or ``total_steps``. Returns the weights path.

    As :func:`flowcli.train.train`, everything is checked before the first file is written.
    """
    from .synth import ClipParams, SynthClipDataset
    out = Path(cfg.out_dir)
    replacing = check_run_folder(out, resume, overwrite=overwrite)
    check_lr(cfg.lr)
    if not 0 <= cfg.estimated_past + cfg.noisy_past <= 1:
        raise ValueError("estimated_past + noisy_past must be within [0, 1]")
    torch.set_num_threads(cfg.threads)
    start, seconds_before, samples = 0, 0.0, 0
    if resume:
        model, meta = load_start(resume, "predict")
        start = int(meta.get("step", 0))
        seconds_before = float(meta.get("train_seconds", 0.0))
        samples = int(meta.get("samples", 0))
    else:
        model = new_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    params = ClipParams(height=cfg.height, width=cfg.width, num_frames=3)
    loader = DataLoader(SynthClipDataset(10_000_000, cfg.seed * 1_000_003 + start, params),
                        batch_size=cfg.batch_size, num_workers=cfg.workers)
    gen = torch.Generator().manual_seed(cfg.seed + start)
    estimator = PastEstimator(cfg.estimator, cfg.estimator_iters) if cfg.estimated_past > 0 else None
    stop = cfg.total_steps if cfg.max_steps is None else min(cfg.total_steps, start + cfg.max_steps)
    out.mkdir(parents=True, exist_ok=True)
    if replacing:  # (start weights are in memory by now): no old weights beside the new config and log
        (out / "latest.safetensors").unlink(missing_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log = open(out / "log.jsonl", "w" if replacing else "a")
    latest = out / "latest.safetensors"
    step, t0 = start, time.time()
    data = start_workers(loader)
    while step < stop:
        batch = next(data)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        past = choose_past(past_flow_low(batch["flows"][:, 0]), batch["frames"], cfg, gen, estimator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = predict_forward(model, batch["frames"], past, cfg.channels_last)
        weight = 1 + (cfg.occluded_weight - 1) * batch["occluded"][:, 1] if cfg.occluded_weight != 1 else None
        loss, epe = l1_epe(pred.float(), batch["flows"][:, 1], batch["valid"][:, 1], weight)
        gnorm = optimizer_step(opt, loss, cfg.grad_clip)
        step += 1
        samples += batch["frames"].shape[0]
        rec = {"step": step, "loss": float(loss.detach()), "epe": epe, "lr": lr_at(step - 1, cfg),
               "gnorm": gnorm, "sec": round(time.time() - t0, 1)}
        if step % cfg.eval_every == 0 or step == stop:
            rec.update(evaluate_synthetic(model, cfg, cfg.eval_clips))
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if progress is not None:
            progress(rec)
        if step % cfg.save_every == 0 or step == stop:
            save_safetensors(latest, model, iters=1,
                             extra={"step": step, "train": json.dumps(asdict(cfg)), "samples": samples,
                                    "train_seconds": round(seconds_before + time.time() - t0, 1)})
    log.close()
    return latest
