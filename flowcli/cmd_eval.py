"""``flowcli eval``: accuracy on a dataset with ground truth (Sintel, KITTI, Middlebury, FlyingChairs)."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import click

from .cli import emit_json, json_option, progress, quiet_option
from .cmd_estimate import check_preset
from .cmd_predict import tta_option

EPILOG = """\b
Examples:
  flowcli eval data/sintel --layout sintel
  flowcli eval data/kitti2012 --layout kitti --json
  flowcli eval data/middlebury --layout middlebury --method dis    # classical baseline
  flowcli eval data/sintel --layout sintel --weights MemFlowNet_sintel.pth --preset sintel
  flowcli eval synth/ --layout sintel --predict              # next-frame prediction
  flowcli eval data/sintel --layout sintel --predict --past-flow estimate
  (python -m flowcli.synth export synth/ writes held-out synthetic clips)

\b
--predict scores MemFlow-P (default: the shipped prediction weights) on
every pair whose previous pair also has ground truth, given that previous
GT flow, next to the constant-velocity baseline (the previous flow
forward-warped by itself), and prints how much lower its EPE is.
--past-flow estimate gives both the estimation model's past flow instead
(the way predict-next runs; --estimate-weights/--estimate-preset choose it,
--iters/--coarse-to-fine apply to it), so every GT pair after a scene's
first frame counts (Sintel ambush_4 4->5 and 6->7).

\b
Metrics: EPE (mean end-point error, px), 1/3/5 px accuracy, Fl (KITTI
outliers: EPE > 3 px and > 5% of |gt|), seconds per pair. "all" = every
pixel with ground truth; "noc" = non-occluded pixels where masks exist.
The summary is the mean over pairs (per-pixel means are in --json).
Sintel scenes are run as sequences, carrying MemFlow's memory.
"""


@click.command("eval", epilog=EPILOG)
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--layout", required=True, type=click.Choice(["sintel", "kitti", "middlebury", "chairs"]),
              help="How ROOT is laid out (the datasets' usual layouts).")
@click.option("--method", type=click.Choice(["memflow", "dis", "farneback"]), default="memflow",
              show_default=True, help="memflow (the network) or a classical OpenCV baseline.")
@click.option("--weights", metavar="NAME|PATH", help="Weights (default: the shipped ones).")
@click.option("--preset", help="Official settings for a .pth checkpoint (with --predict: the MemFlow-P one; the "
                                "estimator's is --estimate-preset).")
@click.option("--iters", type=click.IntRange(1, 100), help="Refinement iterations (default: the weights' own).")
@click.option("--warm-start/--no-warm-start", default=False, show_default=True)
@click.option("--coarse-to-fine/--no-coarse-to-fine", "coarse", default=None,
              help="Coarse-to-fine start where motion is large (default: the weights' own; see "
                   "`flowcli estimate --help`).")
@click.option("--refine/--no-refine", "refine", default=None,
              help="Variational refinement of each flow (default: the weights' own; see `flowcli estimate --help`).")
@click.option("--max-side", type=click.IntRange(8, None), help="Run the network smaller (metrics at full size).")
@click.option("--predict", "predict", is_flag=True,
              help="Score next-frame prediction (MemFlow-P) against the constant-velocity baseline.")
@click.option("--past-flow", type=click.Choice(["gt", "estimate"]), default="gt", show_default=True,
              help="With --predict: the past flow both methods get: ground truth (pairs whose previous pair "
                   "has GT) or the estimation model's (every GT pair after a sequence's first frame).")
@click.option("--estimate-weights", metavar="NAME|PATH",
              help="With --past-flow estimate: estimation weights (default: the shipped ones).")
@click.option("--estimate-preset",
              help="With --past-flow estimate: official settings of an estimation .pth given as --estimate-weights: "
                   "things, sintel, kitti, spring (default: an official name's own preset, else things).")
@tta_option("With --predict: average with the prediction on mirrored frames (default: the weights' own; "
            "see `flowcli predict-next --help`).")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for torch.")
@quiet_option
@json_option
def eval_cmd(root, layout, method, weights, preset, iters, warm_start, coarse, refine, max_side, predict, past_flow,
             estimate_weights, estimate_preset, tta, threads, quiet, as_json):
    """Evaluate flow accuracy on the dataset at ROOT."""
    from .evaluate import evaluate, format_table

    if predict and refine is not None:
        raise click.UsageError("--refine/--no-refine do not apply to --predict (predictions are not refined)")
    if predict:
        return _eval_predict(root, layout, method, weights, preset, iters, warm_start, coarse, max_side, past_flow,
                             estimate_weights, estimate_preset, tta, threads, quiet, as_json)
    if past_flow != "gt" or estimate_weights or estimate_preset or tta is not None:
        raise click.UsageError("--past-flow/--estimate-weights/--estimate-preset/--tta only apply with --predict")
    if method == "memflow":
        import torch

        from .weights import load_weights
        check_preset(weights, preset, "estimate")
        if threads:
            torch.set_num_threads(threads)
        subject = load_weights(weights, preset=preset)
    else:
        if weights or preset:
            raise click.UsageError("--weights/--preset only apply to --method memflow")
        subject = method
    if method != "memflow":  # the classical baselines run at full size with their own settings
        given = [flag for flag, value in (("--coarse-to-fine/--no-coarse-to-fine", coarse is not None),
                                          ("--refine/--no-refine", refine is not None), ("--iters", iters),
                                          ("--warm-start", warm_start), ("--max-side", max_side)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply to --method memflow")
    report = evaluate(subject, root, layout, iters=iters, warm_start=warm_start, max_side=max_side, coarse=coarse,
                      refine=refine, progress=functools.partial(progress, quiet=quiet))
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(format_table(report))


def _eval_predict(root, layout, method, weights, preset, iters, warm_start, coarse, max_side, past_flow,
                  estimate_weights, estimate_preset, tta, threads, quiet, as_json):
    import torch

    from .errors import CheckpointError
    from .evaluate import format_table
    from .evaluate_predict import evaluate_predict
    from .weights import default_name, load_weights

    if method != "memflow" or warm_start:
        raise click.UsageError("--predict takes MemFlow-P --weights/--preset, not --method/--warm-start")
    if past_flow == "gt" and (iters is not None or estimate_weights or estimate_preset or coarse is not None):
        raise click.UsageError("--iters/--estimate-weights/--estimate-preset/--coarse-to-fine apply to "
                               "--past-flow estimate only")
    if weights is None and default_name("predict") is None:
        raise CheckpointError("no MemFlow-P (prediction) weights are shipped yet; pass --weights PATH")
    check_preset(weights, preset, "predict")
    check_preset(estimate_weights, estimate_preset, "estimate", "--estimate-preset", "--estimate-weights")
    if threads:
        torch.set_num_threads(threads)
    loaded = load_weights(weights, preset=preset, kind="predict")
    estimator = None
    if past_flow == "estimate":
        estimator = load_weights(estimate_weights, preset=estimate_preset, kind="estimate")
    result = evaluate_predict(loaded, root, layout, past=past_flow, estimator=estimator, iters=iters,
                              max_side=max_side, coarse=coarse, tta=tta,
                              progress=functools.partial(progress, quiet=quiet))
    if as_json:
        emit_json(result.to_dict())
        return
    if result.estimator is not None:
        est = result.estimator
        click.echo(f"past flows: {est['name']} (iters {est['iters']}"
                   f"{', coarse-to-fine' if est['coarse_to_fine'] else ''})")
        click.echo()
    click.echo(format_table(result.predicted))
    click.echo()
    click.echo(format_table(result.baseline))
    click.echo()
    for region in result.predicted.regions:
        p = result.predicted.summary()[region]["epe"]
        b = result.baseline.summary()[region]["epe"]
        click.echo(f"{region}: predicted EPE {p:.3f}, constant velocity {b:.3f}: "
                   f"{_compared(p, b, result.improvement(region))}")


def _compared(predicted: float, baseline: float, improvement: float) -> str:
    """How the predicted EPE compares with the baseline's: "12.3% lower" / "4.5% higher". A perfect
    baseline (EPE 0: no motion, or motion that does not change) leaves no percentage to give."""
    if math.isfinite(improvement):
        return f"{abs(100 * improvement):.1f}% {'lower' if improvement >= 0 else 'higher'}"
    if baseline == 0:
        return "the same (both exact)" if predicted == 0 else "no percentage (the baseline is exact)"
    return "not comparable (no pixels scored)"
