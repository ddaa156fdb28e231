"""``flowcli train``: train (or fine-tune) MemFlow weights on CPU."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from .cli import FiniteFloatRange, progress, quiet_option, status

EPILOG = """\b
Examples:
  flowcli train -o runs/small --steps 2000                 # from scratch, synthetic clips
  flowcli train -o runs/small --resume runs/small/latest.safetensors
  nice -n 10 flowcli train -o runs/small --resume weights/flowcli-small.safetensors --max-steps 500
  flowcli train --predict -o runs/small-p --steps 3000       # MemFlow-P (next-frame prediction)

\b
Weights are saved as OUT/latest.safetensors every --save-every steps (no
optimizer state: resuming needs only that file; the step count and the
learning-rate schedule position are in its metadata). OUT/log.jsonl has
one line per step (loss, EPE, lr) and periodic held-out synthetic EPE.
A folder that already holds a run (OUT/latest.safetensors) is refused
unless --resume OUT/latest.safetensors continues it or --overwrite
replaces it (starting there from other --resume/--init weights needs
--overwrite too; the replaced run's log starts afresh). --resume/--init
weights must be of the kind trained: a MemFlow-P model with --predict,
an estimator without. With --predict the model is MemFlow-P: it learns
the flow 1 -> 2 of 3-frame clips from frame 1 and the past flow 0 -> 1
(the GT; half the time a corrupted GT; with --estimated-past, the
estimator's flow for a share of the samples); the log also has the
held-out EPE of the constant-velocity baseline. --frames and --iters do not apply to it.
"""


@click.command("train", epilog=EPILOG)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False), help="Continue from these weights.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False),
              help="Start from these weights with a fresh schedule (fine-tuning).")
@click.option("--steps", "total_steps", type=click.IntRange(1, None), default=6000, show_default=True,
              help="Length of the one-cycle schedule.")
@click.option("--max-steps", type=click.IntRange(1, None), help="Stop this run after this many steps.")
@click.option("--batch-size", type=click.IntRange(1, None), default=4, show_default=True)
@click.option("--size", default="256x192", show_default=True, help="Training crop WxH.")
@click.option("--frames", "clip_frames", type=click.IntRange(2, 16), default=3, show_default=True,
              help="Frames per training clip (memory is used from the second pair on).")
@click.option("--iters", type=click.IntRange(1, 32), default=6, show_default=True,
              help="Refinement iterations during training.")
@click.option("--lr", type=FiniteFloatRange(0, None, min_open=True), default=4e-4, show_default=True,
              help="Peak learning rate of the one-cycle schedule.")
@click.option("--max-speed", type=FiniteFloatRange(0.5, None),
              help="Largest synthetic layer motion, px/frame at the crop size [default: width/8].")
@click.option("--speed-exponent", type=FiniteFloatRange(0.5, 8.0), default=2.5, show_default=True,
              help="Motions are max-speed * U**exponent: lower means more large motions.")
@click.option("--bf16/--fp32", default=True, show_default=True, help="bfloat16 autocast on CPU.")
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True)
@click.option("--save-every", type=click.IntRange(1, None), default=50, show_default=True)
@click.option("--eval-every", type=click.IntRange(1, None), default=250, show_default=True)
@click.option("--overwrite", is_flag=True,
              help="Replace the run that OUT already holds (its weights, config and log).")
@click.option("--predict", "predict", is_flag=True, help="Train MemFlow-P (next-frame prediction) instead.")
@click.option("--estimated-past", type=FiniteFloatRange(0.0, 0.5), default=0.0, show_default=True,
              help="With --predict: fraction of samples whose past flow is the shipped estimator's output "
                   "(as predict-next gives it) instead of the GT; costs one estimation per such sample.")
@click.option("--occluded-weight", type=FiniteFloatRange(1.0, 10.0), default=1.0, show_default=True,
              help="With --predict: loss weight of the pixels that the next frame hides.")
@quiet_option
def train_cmd(out_dir, resume, init, total_steps, max_steps, batch_size, size, clip_frames, iters, lr, max_speed,
              speed_exponent, bf16, threads, save_every, eval_every, overwrite, predict, estimated_past, occluded_weight,
              quiet):
    """Train MemFlow weights from procedurally generated clips with exact ground truth."""
    from .cmd_estimate import parse_size
    from .train import TrainConfig, train
    if resume and init:
        raise click.UsageError("give --resume or --init, not both")
    w, h = parse_size(size)
    if w % 8 or h % 8:
        raise click.BadParameter("width and height must be multiples of 8", param_hint="--size")
    if (estimated_past or occluded_weight != 1.0) and not predict:
        raise click.UsageError("--estimated-past and --occluded-weight apply to --predict")
    if predict:
        from .train_predict import PredictTrainConfig, train_predict
        if init:
            raise click.UsageError("--init does not apply to --predict (use --resume)")
        if max_speed is not None or speed_exponent != 2.5:
            raise click.UsageError("--max-speed and --speed-exponent apply to the estimator, not --predict")
        cfg = PredictTrainConfig(out_dir=str(out_dir), total_steps=total_steps, max_steps=max_steps,
                                 batch_size=batch_size, height=h, width=w, lr=lr, bf16=bf16, threads=threads,
                                 save_every=save_every, eval_every=eval_every, estimated_past=estimated_past,
                                 occluded_weight=occluded_weight)
        run = functools.partial(train_predict, cfg, resume=resume, overwrite=overwrite)
    else:
        cfg = TrainConfig(out_dir=str(out_dir), total_steps=total_steps, max_steps=max_steps, batch_size=batch_size,
                          height=h, width=w, clip_frames=clip_frames, iters=iters, lr=lr, max_speed=max_speed,
                          speed_exponent=speed_exponent, bf16=bf16, threads=threads, save_every=save_every,
                          eval_every=eval_every)
        run = functools.partial(train, cfg, resume=resume, init=init, overwrite=overwrite)
    bar = progress(total=max_steps or total_steps, desc="train --predict" if predict else "train", quiet=quiet,
                   unit="step")

    def show(rec):
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.2f}", epe=f"{rec['epe']:.2f}")
        if "eval_epe" in rec:
            baseline = (f" (constant velocity {rec['eval_baseline_epe']:.3f})"
                        if "eval_baseline_epe" in rec else "")
            status(f"step {rec['step']}: held-out synthetic EPE {rec['eval_epe']:.3f}{baseline}", quiet)

    with bar:
        path = run(progress=show)
    status(f"weights: {path}", quiet)
