"""``flowcli estimate``: a video (or image folder, or stdin) to dense flow files."""
from __future__ import annotations

import time
from pathlib import Path

import click

from .cli import (FiniteFloatRange, emit_json, json_option, overwrite_option, plural, progress, quiet_option,
                  removed_message, status, warn)

EPILOG = """\b
Examples:
  flowcli estimate clip.mp4 -o flow/                    # flow/000000.flo, 000001.flo, ...
  flowcli estimate frames/ -o out/ --format flo --format png --video
  flowcli estimate clip.mp4 -o out/ --max-side 512 --iters 8     # faster, smaller run size
  ffmpeg -i x.mp4 -f rawvideo -pix_fmt rgb24 - | flowcli estimate - --size 640x360 -o out/
  flowcli estimate frames/ -o out/ --weights MemFlowNet_sintel.pth --preset sintel

\b
Output names: the pair (frame i -> next frame) is written as i, 6 digits:
000000.flo (flo), 000000.png (kitti: KITTI 16-bit), 000000.npy (npy),
color/000000.png (png: colour visualisation), flow.mp4 (--video).
OUTDIR/flowcli.json records input, weights (sha256), options and timings.
Rerunning the same command resumes: pairs already written are skipped.
"""


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter("expected WIDTHxHEIGHT, e.g. 640x360", param_hint="--size") from None
    if w <= 0 or h <= 0:
        raise click.BadParameter("width and height must be positive", param_hint="--size")
    from .sources import MAX_FRAME_PIXELS
    if w * h > MAX_FRAME_PIXELS:
        raise click.BadParameter(f"{w}x{h} is {w * h} pixels; at most {MAX_FRAME_PIXELS} (e.g. 16384x16384) "
                                 "are supported", param_hint="--size")
    return w, h


def stream_options(f):
    """Options shared by estimate and predict-next (frame selection, weights, engine)."""
    opts = [
        click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
                     help="Output folder (created if missing)."),
        click.option("--weights", metavar="NAME|PATH",
                     help="Shipped or official weights name, or a .pth/.safetensors path "
                          "(default: the weights shipped with flowcli; see `flowcli weights list`)."),
        click.option("--preset", help="Official settings for a .pth checkpoint: things, sintel, kitti, spring "
                                      "(default things; not used with flowcli .safetensors weights, which "
                                      "carry their own)."),
        click.option("--iters", type=click.IntRange(1, 100),
                     help="Refinement iterations (default: the weights' own, 15 for official presets). "
                          "Fewer is faster and a little less accurate."),
        click.option("--warm-start/--no-warm-start", default=False, show_default=True,
                     help="Start each pair from the previous pair's flow, forward-splatted (official: off)."),
        click.option("--coarse-to-fine/--no-coarse-to-fine", "coarse", default=None,
                     help="Where a half-size pass finds large motion (the fastest 10% of pixels move >= 16 px), "
                          "start the full-size pass from its flow: finds motions larger than the network learned; ~18% "
                          "slower. Default: the weights' own (on for the shipped flowcli-small; official "
                          "checkpoints run as the official code, without it)."),
        click.option("--refine/--no-refine", "refine", default=None,
                     help="Finish each estimated flow with a classical variational pass (OpenCV's "
                          "VariationalRefinement at 3 scales, started from the network's flow): several times "
                          "more precise on small motions; ~0.2 s more per 436x1024 frame, at the input size even "
                          "with --max-side. Default: the weights' "
                          "own (on for the shipped flowcli-small; official checkpoints: off)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
                     show_default=True, help="Where to run. GPU paths are untested in this project (no GPU)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                     help="bf16: bfloat16 weights and activations, ~2x faster on CPUs with AMX/AVX512-BF16, "
                          "flow within ~0.05 px of fp32."),
        click.option("--max-side", type=click.IntRange(8, None),
                     help="Run the network with the longer side at most this many pixels; flow is returned "
                          "at input size with vectors rescaled."),
        click.option("--scale", type=FiniteFloatRange(0.05, 4.0),
                     help="Run the network at this scale of the input (alternative to --max-side)."),
        click.option("--start", type=click.IntRange(0, None), default=0, show_default=True,
                     help="First frame index to use."),
        click.option("--end", type=click.IntRange(1, None), help="Stop before this frame index."),
        click.option("--step", type=click.IntRange(1, None), default=1, show_default=True,
                     help="Use every STEP-th frame (pairs are then STEP frames apart)."),
        click.option("--size", "size", metavar="WxH",
                     help="Frame size of raw rgb24 frames on stdin (INPUT '-'); at most 2**28 pixels "
                          "(e.g. 16384x16384)."),
        click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for torch (default: all cores)."),
        click.option("--max-flow", type=FiniteFloatRange(0, None, min_open=True),
                     help="Fixed colour scale (px) for png/--video (default: per frame for png, "
                          "running maximum for the video)."),
        overwrite_option, quiet_option, json_option,
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def open_job_source(input_spec: str, size: str | None, start: int, end: int | None, step: int):
    from .sources import open_source
    parsed = parse_size(size)
    if input_spec == "-" and parsed is None:
        raise click.UsageError("reading frames from stdin ('-') needs --size WxH")
    if input_spec != "-" and parsed is not None:
        raise click.UsageError("--size is only for raw frames on stdin (INPUT '-')")
    if end is not None and end <= start:
        raise click.UsageError(f"--end {end} must be greater than --start {start}")
    return open_source(input_spec, size=parsed, start=start, end=end, step=step)


def check_preset(weights: str | None, preset: str | None, kind: str = "estimate", option: str = "--preset",
                 weights_option: str = "--weights") -> None:
    """Usage errors (exit 2) for a ``--preset`` that cannot apply or does not exist.

    A preset gives an official ``.pth`` checkpoint its settings: with flowcli weights (the shipped default,
    a shipped name or a ``.safetensors`` file), which carry their own, it would be silently ignored.
    An unknown name lists the presets of ``kind`` ("estimate" or "predict").
    """
    if preset is None:
        return
    from .model import get_preset
    from .weights import manifest
    if weights is None:
        which = f"the shipped default weights carry their own settings (give {weights_option} PATH.pth with it)"
    elif str(weights).lower().endswith(".safetensors"):
        which = "flowcli .safetensors weights carry their own settings"
    elif weights in {e["name"] for e in manifest()}:
        which = f"the shipped weights {weights} carry their own settings"
    else:
        which = None
    if which:
        raise click.UsageError(f"{option} is for official .pth checkpoints; {which}")
    try:
        get_preset(preset, kind)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def prepare_engine(weights, preset, iters, device, threads, max_side, scale, warm_start, kind="estimate",
                   precision="fp32", coarse=None, refine=None, tta=None):
    import torch

    from .engine import StreamOptions, pick_device
    from .weights import load_weights
    if max_side is not None and scale is not None:
        raise click.UsageError("give --max-side or --scale, not both")
    check_preset(weights, preset, kind)
    if threads:
        torch.set_num_threads(threads)
    try:
        dev = pick_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    loaded = load_weights(weights, preset=preset, kind=kind, device=dev)
    options = StreamOptions(warm_start=warm_start, max_side=max_side, scale=scale, precision=precision,
                            **loaded.inference_settings(iters, coarse, refine, tta))
    return loaded, options, dev


@click.command("estimate", epilog=EPILOG)
@click.argument("input_spec", metavar="INPUT")
@click.option("--format", "formats", multiple=True, type=click.Choice(["flo", "kitti", "npy", "png"]),
              help="Output format, repeatable (default flo; with --video and no --format only "
                   "flow.mp4 is written).")
@click.option("--video", is_flag=True, help="Also write OUTDIR/flow.mp4, the colour visualisation.")
@stream_options
def estimate(input_spec, formats, video, out_dir, weights, preset, iters, warm_start, coarse, refine, device,
             precision, max_side, scale, start, end, step, size, threads, max_flow, overwrite, quiet, as_json):
    """Estimate dense optical flow between consecutive frames of INPUT.

    INPUT is a video file (mp4, avi, mov, mkv, webm), a folder of images
    (natural order), or '-' for raw rgb24 frames on stdin with --size. Frames
    are streamed: memory use does not depend on the video's length. The MemFlow
    key/value memory is carried from pair to pair.
    """
    from .pipeline import EstimateJob, run_estimate, write_report

    if not formats and not video:
        formats = ("flo",)
    source = open_job_source(input_spec, size, start, end, step)
    loaded, options, dev = prepare_engine(weights, preset, iters, device, threads, max_side, scale, warm_start,
                                          precision=precision, coarse=coarse, refine=refine)
    job = EstimateJob(out_dir=out_dir, formats=tuple(dict.fromkeys(formats)), video=video, overwrite=overwrite,
                      max_flow=max_flow, options=options)
    weights_info = {"name": loaded.name, "path": loaded.path, "sha256": loaded.sha256, "preset": loaded.preset}
    total = source.frame_count - 1 if source.frame_count else None
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with source, progress(total=total, desc="estimate", quiet=quiet, unit="pair") as bar:
        report = run_estimate(loaded.model, job, source, weights_info=weights_info, start=start, step=step,
                              device=dev, on_pair=lambda i: bar.update(1))
    record = {
        "command": "estimate", "input": source.name, "output": str(out_dir), "started": started,
        "weights": weights_info, "iters": options.iters, "warm_start": options.warm_start,
        "coarse_to_fine": options.coarse, "refine": options.refine,
        "max_side": options.max_side, "scale": options.scale,
        "precision": precision, "start": start, "end": end, "step": step,
        "formats": list(job.formats), "video": video, "max_flow": max_flow, "device": str(dev), **report.to_dict(),
    }
    record = write_report(out_dir, record, changed=bool(report.written or report.removed))
    if as_json:
        emit_json(record)
    else:
        status(f"{plural(report.pairs, 'pair')} ({plural(report.written, 'file')} written, "
               f"{report.skipped} skipped) in "
               f"{report.seconds:.1f} s -> {out_dir}", quiet)
        if report.removed:
            status(removed_message(report.removed), quiet)
    if source.damage.frames:
        warn(source.damage.warning(source.name))
