"""``flowcli predict-next``: predict each frame's flow to the next frame with MemFlowNet-P."""
from __future__ import annotations

import time
from pathlib import Path

import click

from .cli import emit_json, plural, progress, removed_message, status, warn
from .cmd_estimate import check_preset, open_job_source, prepare_engine, stream_options

EPILOG = """\b
Examples:
  flowcli predict-next clip.mp4 -o pred/ --weights MemFlowNet_P_sintel.pth --preset sintel
  flowcli predict-next frames/ -o pred/ --weights P.pth --preset things --prior-flows flow/
  flowcli predict-next clip.mp4 -o out/ --weights P.pth --with-estimate --frames --video

\b
What is predicted: for frame t, the flow t -> t+1 using only frames 0..t.
Output names: the prediction starting at frame t is written as t, 6 digits:
000005.flo = predicted flow 5 -> 6 (kitti: 000005.png, npy: 000005.npy,
png: color/000005.png; flow.mp4 with --video). The first frame has no past
motion (empty memory, zero prior flow), so predictions start at the second
frame; --include-first also writes the official loop's t=0 output. The last
frame gets a prediction too: the flow to a frame that does not exist yet.

\b
Past flows (the memory of MemFlow-P) come from:
  * an estimation model run alongside (default): --estimate-weights /
    --estimate-preset (default: the shipped estimation weights); --iters and
    --warm-start apply to it; or
  * --prior-flows DIR: flow files of the pairs, DIR/000004.flo = flow 4 -> 5,
    named like `flowcli estimate` output (.flo, .npy, .pfm or KITTI .png).
--with-estimate writes the estimated flows too, in the same pass:
OUTDIR/estimate/000004.flo = estimated 4 -> 5 (same --format), predictions
in OUTDIR/.

\b
--frames writes OUTDIR/frames/000005.png, frame 5 moved by the predicted flow:
forward splatting (bilinear, softmax-weighted so that where pixels collide the
one moving most unlike the dominant motion is in front); pixels nothing lands
on (disocclusions, borders) are inpainted from their surroundings.

\b
--weights/--preset choose the MemFlow-P model (default: the shipped
flowcli-small-p; official presets: things, sintel).
OUTDIR/flowcli.json records inputs, weights (sha256), options and timings.
Rerunning the same command resumes: existing outputs are kept and skipped.
"""


TTA_HELP = ("Test-time augmentation: also predict on the left-right mirrored frames and average the two "
            "predictions (MemFlow-P and its encoders run twice per frame; the estimator once; not official). "
            "Default: the prediction weights' own (official checkpoints: off).")


def tta_option(help_text: str = TTA_HELP):
    return click.option("--tta/--no-tta", "tta", default=None, help=help_text)


@click.command("predict-next", epilog=EPILOG)
@click.argument("input_spec", metavar="INPUT")
@click.option("--format", "formats", multiple=True, type=click.Choice(["flo", "kitti", "npy", "png"]),
              help="Output format, repeatable (default flo; with --video and no --format only flow.mp4 is "
                   "written, and with --with-estimate also flo files, for the predictions and the estimates).")
@click.option("--video", is_flag=True, help="Also write OUTDIR/flow.mp4, the colour visualisation of the predictions.")
@click.option("--frames", "write_frames", is_flag=True,
              help="Also write OUTDIR/frames/T.png: frame T forward-warped by its predicted flow.")
@click.option("--prior-flows", type=click.Path(path_type=Path), metavar="DIR",
              help="Take past flows from these flow files instead of running an estimator.")
@click.option("--estimate-weights", metavar="NAME|PATH",
              help="Estimation weights for the past flows (default: the shipped ones).")
@click.option("--estimate-preset", help="Official settings of an estimation .pth: things, sintel, kitti, spring.")
@click.option("--with-estimate", is_flag=True,
              help="Also write the estimated flows to OUTDIR/estimate/ (one pass, shared stream).")
@click.option("--include-first", is_flag=True,
              help="Also write the prediction at the first frame (no past motion yet).")
@tta_option()
@stream_options
def predict_next(input_spec, formats, video, write_frames, prior_flows, estimate_weights, estimate_preset,
                 with_estimate, include_first, tta, out_dir, weights, preset, iters, warm_start, coarse, device,
                 max_side,
                 scale, start, end, step, size, threads, max_flow, overwrite, quiet, as_json, **more_stream_options):
    """Predict, for every frame of INPUT, the optical flow to the next frame
    before that frame is seen (MemFlow-P).

    INPUT is a video file, a folder of images (natural order), or '-' for raw
    rgb24 frames on stdin with --size. Frames are streamed; memory use does not
    depend on the video's length.
    """

    from .errors import CheckpointError
    from .predict import PredictJob, run_predict
    from .pipeline import write_report
    from .weights import default_name, load_weights

    refine = more_stream_options.pop("refine", None)
    check_estimator_flags(prior_flows, estimate_weights, estimate_preset, with_estimate, iters, warm_start,
                          coarse, refine)
    check_preset(estimate_weights, estimate_preset, "estimate", "--estimate-preset", "--estimate-weights")
    if not formats and (not video or with_estimate):
        formats = ("flo",)
    source = open_job_source(input_spec, size, start, end, step)
    if weights is None and default_name("predict") is None:
        raise CheckpointError("no MemFlow-P (prediction) weights are shipped yet; pass --weights PATH "
                              "(an official MemFlowNet_P .pth with --preset things|sintel, or a flowcli "
                              ".safetensors prediction model)")
    loaded, options, dev = prepare_engine(weights, preset, iters, device, threads, max_side, scale, warm_start,
                                          kind="predict", tta=tta)
    for name, value in more_stream_options.items():  # options added to stream_options later (engine settings)
        if value is not None and hasattr(options, name):
            setattr(options, name, value)
    weights_info = {"name": loaded.name, "path": loaded.path, "sha256": loaded.sha256, "preset": loaded.preset}
    estimator, estimate_info = None, None
    if prior_flows is None:
        est = load_weights(estimate_weights, preset=estimate_preset, kind="estimate", device=dev)
        estimator = est.model
        adopt_estimator_defaults(options, est, iters, coarse, refine, with_estimate)
        estimate_info = {"name": est.name, "path": est.path, "sha256": est.sha256, "preset": est.preset}
    job = PredictJob(out_dir=out_dir, formats=tuple(dict.fromkeys(formats)), video=video, frames=write_frames,
                     with_estimate=with_estimate, include_first=include_first, prior_flows=prior_flows,
                     overwrite=overwrite, max_flow=max_flow, options=options)
    total = source.frame_count
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    with source, progress(total=total, desc="predict", quiet=quiet, unit="frame") as bar:
        report = run_predict(loaded.model, job, source, weights_info=weights_info, estimator=estimator,
                             estimate_info=estimate_info, start=start, step=step, device=dev,
                             on_frame=lambda i: bar.update(1))
    record = {
        "command": "predict-next", "input": source.name, "output": str(out_dir), "started": started,
        "weights": weights_info,
        "past_flows": "prior-flows" if prior_flows is not None else "estimator",
        "prior_flows": str(prior_flows) if prior_flows is not None else None,
        "estimate_weights": estimate_info,
        "iters": options.iters if estimator is not None else None,
        "warm_start": options.warm_start if estimator is not None else None,
        "coarse_to_fine": options.coarse if estimator is not None else None,
        "refine": options.refine if estimator is not None else None,
        "max_side": options.max_side, "scale": options.scale, "precision": options.precision,
        "tta": options.tta, "start": start, "end": end, "step": step,
        "formats": list(job.formats), "video": video, "write_frames": write_frames, "with_estimate": with_estimate,
        "include_first": include_first, "max_flow": max_flow, "device": str(dev), **report.to_dict(),
    }
    record = write_report(out_dir, record, changed=bool(report.written or report.removed))
    if as_json:
        emit_json(record)
    else:
        status(f"{plural(report.frames, 'frame')}, {plural(report.predictions, 'prediction')} "
               f"({plural(report.written, 'file')} written, "
               f"{report.skipped} frames skipped) in {report.seconds:.1f} s -> {out_dir}", quiet)
        if report.removed:
            status(removed_message(report.removed), quiet)
    if source.damage.frames:
        warn(source.damage.warning(source.name))


def check_estimator_flags(prior_flows, estimate_weights, estimate_preset, with_estimate, iters, warm_start,
                          coarse: bool | None, refine: bool | None) -> None:
    """Refuse estimator options that cannot apply (predict-next and batch --mode predict-next)."""
    if prior_flows is not None:
        for flag, given in (("--estimate-weights", estimate_weights), ("--estimate-preset", estimate_preset),
                            ("--with-estimate", with_estimate), ("--iters", iters), ("--warm-start", warm_start),
                            ("--coarse-to-fine/--no-coarse-to-fine", coarse is not None),
                            ("--refine/--no-refine", refine is not None)):
            if given:
                raise click.UsageError(f"{flag} is for the estimator, which --prior-flows replaces")
    if refine and not with_estimate:
        raise click.UsageError("--refine refines the estimated flows, which only --with-estimate writes")


def adopt_estimator_defaults(options, est, iters: int | None, coarse: bool | None, refine: bool | None,
                             with_estimate: bool) -> None:
    """The estimator's settings where none was given (``options`` were built from the prediction weights).

    Iterations and coarse-to-fine: the estimator's own defaults. Refinement: only when asked, and only
    for estimated flows that are written (``with_estimate``): MemFlow-P reads unrefined flows."""
    options.iters = iters or est.iters
    options.coarse = est.coarse if coarse is None else coarse
    options.refine = bool(refine) and with_estimate


# The shared options describe the estimation model; say what they mean here.
_HELP = {
    "weights": "MemFlow-P (prediction) weights: an official MemFlowNet_P .pth with --preset, or a flowcli "
               ".safetensors prediction model (default: the shipped one, `flowcli weights list`).",
    "preset": "Official settings of a MemFlow-P .pth: things or sintel (default things).",
    "iters": "Refinement iterations of the estimator (MemFlow-P itself runs one pass).",
    "warm_start": "Warm-start the estimator from the previous pair's flow (official: off).",
    "coarse": "Coarse-to-fine start for the estimator where motion is large (default: the estimation "
              "weights' own; see `flowcli estimate --help`).",
    "refine": "Variational refinement of the estimated flows written with --with-estimate (off unless "
              "given; the past flows MemFlow-P reads and its predictions are never refined).",
    "precision": "bf16: MemFlow-P and the estimator in bfloat16, faster on CPUs with AMX/AVX512-BF16; "
                 "predictions within ~0.05 px of fp32 (fp32 is the conformant path).",
}
for _param in predict_next.params:
    if _param.name in _HELP:
        _param.help = _HELP[_param.name]
