"""Training MemFlowNet on CPU from synthetic clips (or fine-tuning on user data).

Design for accuracy per CPU-hour: the small configuration (``CPU_SMALL``),
small crops, few training iterations, clips generated in a worker process.
Training is resumable from the weights file alone (safetensors, no optimizer
state): the step count lives in its metadata and the learning rate is a pure
function of the step, so a fresh machine continues the same schedule.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .errors import OutputExistsError
from .model import CPU_SMALL, MemFlowNet, ModelConfig
from .weights import check_kind, model_from_safetensors, read_safetensors_meta, save_safetensors

MAX_FLOW = 400.0  # pixels; larger GT vectors are ignored in the loss, as in RAFT


@dataclass
class TrainConfig:
    out_dir: str = "runs/cpu-small"
    total_steps: int = 20000      # length of the one-cycle schedule (spans several sessions)
    max_steps: int | None = None  # stop after this many steps in this run (None = until total_steps)
    batch_size: int = 4
    height: int = 192
    width: int = 256
    clip_frames: int = 3          # MemFlow learns from 3+ frame clips: pair 2 reads pair 1's memory
    max_speed: float | None = None  # synthetic max layer speed, px/frame at crop size (None = width / 8)
    speed_exponent: float = 2.5   # speeds are max_speed * U**exponent: lower = more large motions
    iters: int = 6                # refinement iterations during training
    lr: float = 4e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    gamma: float = 0.85           # sequence-loss decay over iterations (paper)
    grad_clip: float = 1.0
    bf16: bool = True             # bfloat16 autocast on CPU (AMX): ~2x faster steps here
    channels_last: bool = True    # NHWC activations: fast 1x1 and depthwise convs on CPU
    threads: int = 2
    seed: int = 0
    workers: int = 1
    save_every: int = 50
    eval_every: int = 250
    eval_clips: int = 8
    infer_iters: int = 12         # default iterations recorded with the weights for inference
    motion_aux: float = 1.0       # weight of the deep-supervision loss on the motion features (0 = off)
    model: dict = field(default_factory=lambda: CPU_SMALL.to_dict())


def init_for_training(model: MemFlowNet, residual_gain: float = 0.1) -> MemFlowNet:
    """Re-initialise the update block so that training from scratch can start.

    With PyTorch's default init, each PCBlock shrinks the input-dependent part of
    its output ~10x (measured: a change in the correlation features reaches the
    flow head 10^4 times smaller through the 5 chained blocks), so the initial
    flow updates are set by the biases alone and the correlation path gets no
    useful gradient; training then settles on near-zero flow. Here the main path
    of every PCBlock is variance-preserving (Kaiming, zero biases), each residual
    branch starts scaled by ``residual_gain`` (so the stacked residuals do not
    blow up), and the flow head's last layer starts at zero: the first updates
    are zero and every layer sees the input's signal.
    """
    from torch import nn

    from .model.pcblock import PCBlock
    for block in model.update_block.modules():
        if not isinstance(block, PCBlock):
            continue
        for conv in (block.ffn1[0], block.ffn2[0]):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        for conv in (block.ffn1[2], block.pw):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="linear")
            conv.weight.data.mul_(residual_gain)
        nn.init.kaiming_normal_(block.ffn2[2].weight, nonlinearity="linear")
        for conv in block.conv_list:
            if conv.kernel_size == (1, 1):
                nn.init.constant_(conv.weight, residual_gain)
            else:
                nn.init.normal_(conv.weight, 0.0, residual_gain / conv.kernel_size[0])
        for conv in (block.ffn1[0], block.ffn1[2], block.pw, block.ffn2[0], block.ffn2[2], *block.conv_list):
            nn.init.zeros_(conv.bias)
    last = model.update_block.flow_head.ffn2[2]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return model


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> float:
    """Backward, clip the gradient norm of everything the optimizer updates, step. Returns the norm."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in opt.param_groups for p in group["params"]]
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return float(gnorm)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """One-cycle: linear warm-up to ``lr``, then cosine decay to ~0 at ``total_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def sequence_loss(predictions: list[torch.Tensor], gt: torch.Tensor, valid: torch.Tensor,
                  gamma: float) -> tuple[torch.Tensor, dict]:
    """Exponentially weighted L1 over iterations on valid pixels (RAFT/MemFlow loss)."""
    mag = torch.linalg.vector_norm(gt, dim=1)
    mask = (valid > 0.5) & (mag < MAX_FLOW)
    denom = mask.sum().clamp(min=1)
    n = len(predictions)
    loss = gt.new_zeros(())
    for i, pred in enumerate(predictions):
        weight = gamma ** (n - i - 1)
        loss = loss + weight * ((pred - gt).abs().sum(dim=1) * mask).sum() / denom
    epe = torch.linalg.vector_norm(predictions[-1] - gt, dim=1)
    epe = (epe * mask).sum() / denom
    return loss, {"epe": float(epe.detach())}


class MotionProbe(torch.nn.Module):
    """Training-only deep supervision: a 1x1 conv reading the remaining flow (1/8 grid) from the
    motion features of every iteration. Not part of the model or its weights file.

    The motion features sit ~12 conv layers below the flow output, behind two PCBlocks
    whose last layers start near zero, so early in training the loss barely reaches the
    motion encoder and the network settles on near-zero flow. This probe gives the
    encoder a direct signal. Measured on global translations (128x160, batch 4, 2
    iterations): EPE 9.2 -> 1.3 px in 240 steps with it, 9.2 -> 6.3 px without.
    """

    def __init__(self, motion_dim: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(motion_dim, 2, 1)

    def loss(self, motions: list[tuple[torch.Tensor, torch.Tensor]], gt: torch.Tensor,
             valid: torch.Tensor) -> torch.Tensor:
        """Mean L1 between the probe's read-out and (GT - current flow) on the 1/8 grid."""
        h, w = motions[0][1].shape[-2:]
        scale = gt.shape[-1] / w
        gt_low = F.avg_pool2d(gt, int(scale)) / scale
        mask = (F.avg_pool2d(valid[:, None], int(scale)) > 0.999).float()
        total = gt.new_zeros(())
        for flow, motion in motions:
            err = (self.conv(motion.float()) - (gt_low - flow.float())).abs().sum(dim=1, keepdim=True)
            total = total + (err * mask).sum() / mask.sum().clamp(min=1)
        return total / len(motions)


def clip_forward(model: MemFlowNet, frames: torch.Tensor, iters: int, channels_last: bool = False,
                 motions: list | None = None) -> list[list[torch.Tensor]]:
    """frames (B,T,3,H,W) in 0..255 -> per pair, upsampled flow after every iteration.

    Same memory policy as inference: each pair reads the memory of the previous
    pair, then writes its own key/value. ``motions``, if given, receives each pair's
    per-iteration (flow, motion features) for :class:`MotionProbe`.
    """
    x = 2 * (frames / 255.0) - 1
    b, t = x.shape[:2]
    flat = x.flatten(0, 1)
    if channels_last:
        flat = flat.contiguous(memory_format=torch.channels_last)
    fmaps = model.encode_features(flat).unflatten(0, (b, t))
    memory = model.new_memory()
    out = []
    for ti in range(t - 1):
        xi = x[:, ti].contiguous(memory_format=torch.channels_last) if channels_last else x[:, ti]
        ctx = model.encode_context(xi)
        est = model.estimate(ctx, fmaps[:, ti], fmaps[:, ti + 1], memory, iters, all_predictions=True)
        memory.add(ctx.key, est.value)
        out.append(est.predictions)
        if motions is not None:
            motions.append(est.motions)
    return out


def _clip_params(cfg: TrainConfig):
    """The synthetic clip distribution for training and for the held-out evaluation."""
    from .synth import ClipParams
    return ClipParams(height=cfg.height, width=cfg.width, num_frames=cfg.clip_frames,
                      max_speed=cfg.max_speed, speed_exponent=cfg.speed_exponent)


def _dataset(cfg: TrainConfig, seed: int):
    from .synth import SynthClipDataset
    return SynthClipDataset(length=10_000_000, base_seed=seed, params=_clip_params(cfg))


@torch.no_grad()
def evaluate_synthetic(model: MemFlowNet, cfg: TrainConfig, clips: int, iters: int) -> float:
    """Mean EPE of the last pair over held-out synthetic clips (seeds disjoint from training)."""
    from .synth import generate_clip
    model.eval()
    params = _clip_params(cfg)
    total = 0.0
    for i in range(clips):
        clip = generate_clip(10_000_000 + i, params)
        frames = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() for f in clip.frames])[None]
        preds = clip_forward(model, frames, iters)
        gt = torch.from_numpy(clip.flows[-1]).permute(2, 0, 1)[None]
        valid = torch.from_numpy(clip.valid[-1].astype("float32"))[None]
        _, m = sequence_loss([preds[-1][-1]], gt, valid, 1.0)
        total += m["epe"]
    model.train()
    return total / clips


def check_run_folder(out_dir: str | Path, resume: str | None = None, init: str | None = None,
                     overwrite: bool = False) -> bool:
    """Refuse to start in a folder that already holds a run (its ``latest.safetensors``) unless the run
    is continued (``resume`` is that very file) or ``overwrite`` asks to replace it.

    Anything else there would replace the run's trained weights, rewrite ``train_config.json`` and mix a
    second run into ``log.jsonl``; naming other start weights (``--init``, or ``--resume`` of another
    file) is not asking for that. Returns True when a run is being replaced: its log starts afresh.
    """
    latest = Path(out_dir) / "latest.safetensors"
    if not latest.is_file():  # (with --overwrite, the log of a run stopped before its first save goes too)
        return overwrite and (Path(out_dir) / "log.jsonl").is_file()
    if resume and not init and Path(resume).resolve() == latest.resolve():
        return False
    if overwrite:
        return True
    try:
        step = f", step {int(read_safetensors_meta(latest)['step'])}"
    except Exception:  # noqa: BLE001 - the step only decorates the message
        step = ""
    raise OutputExistsError(f"{out_dir}: already holds a training run ({latest.name}{step}); continue it with "
                            f"--resume {latest}, replace it with --overwrite, or choose another output folder")


def load_start(path: str, kind: str) -> tuple[MemFlowNet, dict[str, str]]:
    """The model and metadata of ``--resume``/``--init`` weights, refused (CheckpointError) if they are
    not a flowcli safetensors file of ``kind`` ("estimate" or "predict", which ``--predict`` trains)."""
    model, meta = model_from_safetensors(path)
    check_kind(model, kind, path, hint=f"train it {'with' if kind == 'estimate' else 'without'} --predict")
    return model, meta


def start_workers(loader: DataLoader):
    """``iter(loader)``, its worker processes forked while OpenCV's thread pool is stopped.

    A worker is a fork of this process and gets a copy of OpenCV's pool without its threads; once this
    process had used that pool (an earlier run's evaluation, any cv2 call of the caller), the worker's
    first cv2 call (``setNumThreads``) waited for good on the copied threads' condition variable: a
    second ``train()`` in one Python session could hang. The pool is back as it was once the workers run.
    """
    import cv2
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # stops the pool's threads here, so a fork copies none
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)


def check_lr(lr: float) -> None:
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr}")


def train(cfg: TrainConfig, resume: str | None = None, init: str | None = None, progress=None,
          overwrite: bool = False) -> Path:
    """Train until ``max_steps`` (this run) or ``total_steps`` (schedule end). Returns the weights path.

    Everything is checked before the first file is written: the output folder (:func:`check_run_folder`),
    the start weights (:func:`load_start`) and the learning rate.
    """
    out = Path(cfg.out_dir)
    replacing = check_run_folder(out, resume, init, overwrite)
    check_lr(cfg.lr)
    torch.set_num_threads(cfg.threads)
    start, seconds_before, cpu_before, samples = 0, 0.0, 0.0, 0
    if resume or init:
        model, meta = load_start(resume or init, "estimate")
        if resume:
            start = int(meta.get("step", 0))
            seconds_before = float(meta.get("train_seconds", 0.0))
            cpu_before = float(meta.get("train_cpu_seconds", 0.0))
            samples = int(meta.get("samples", 0))
    else:
        torch.manual_seed(cfg.seed)
        model = init_for_training(MemFlowNet(ModelConfig.from_dict(cfg.model)))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    probe = MotionProbe(model.cfg.motion_dim)
    params = list(model.parameters()) + (list(probe.parameters()) if cfg.motion_aux else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop = cfg.total_steps if cfg.max_steps is None else min(cfg.total_steps, start + cfg.max_steps)
    loader = DataLoader(_dataset(cfg, cfg.seed * 1_000_003 + start), batch_size=cfg.batch_size,
                        num_workers=cfg.workers)
    out.mkdir(parents=True, exist_ok=True)
    if replacing:  # (start weights are in memory by now): no old weights beside the new config and log
        (out / "latest.safetensors").unlink(missing_ok=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log = open(out / "log.jsonl", "w" if replacing else "a")
    latest = out / "latest.safetensors"
    step, t0, cpu0 = start, time.time(), time.process_time()
    data_iter = start_workers(loader)
    while step < stop:
        batch = next(data_iter)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        motions: list = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            preds = clip_forward(model, batch["frames"], cfg.iters, cfg.channels_last, motions)
        loss, metrics = torch.zeros(()), {"epe": 0.0}  # loss in float32 even under autocast
        if cfg.motion_aux:
            aux = sum(probe.loss(m, batch["flows"][:, ti], batch["valid"][:, ti]) for ti, m in enumerate(motions))
            loss = loss + cfg.motion_aux * aux / len(motions)
            metrics["motion_aux"] = float(aux.detach()) / len(motions)
        for ti, p in enumerate(preds):
            p = [q.float() for q in p]
            l, m = sequence_loss(p, batch["flows"][:, ti], batch["valid"][:, ti], cfg.gamma)
            loss = loss + l / len(preds)
            metrics["epe"] += m["epe"] / len(preds)
        gnorm = optimizer_step(opt, loss, cfg.grad_clip)
        step += 1
        samples += batch["frames"].shape[0]
        rec = {"step": step, "loss": float(loss.detach()), **metrics, "lr": lr_at(step - 1, cfg),
               "gnorm": gnorm, "sec": round(time.time() - t0, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if step % cfg.eval_every == 0 or step == stop:
            rec["eval_epe"] = evaluate_synthetic(model, cfg, cfg.eval_clips, cfg.infer_iters)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if progress is not None:
            progress(rec)
        if step % cfg.save_every == 0 or step == stop:
            save_safetensors(latest, model, iters=cfg.infer_iters,
                             extra={"step": step, "train": json.dumps(asdict(cfg)), "samples": samples,
                                    "train_seconds": round(seconds_before + time.time() - t0, 1),
                                    "train_cpu_seconds": round(cpu_before + time.process_time() - cpu0, 1)})
    log.close()
    return latest
