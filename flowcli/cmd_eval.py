"""``flowcli eval``: accuracy on a dataset with ground truth (Sintel, KITTI, Middlebury, FlyingChairs)."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from .cli import emit_json, json_option, progress, quiet_option

EPILOG = """\b
Examples:
  flowcli eval data/sintel --layout sintel
  flowcli eval data/kitti2012 --layout kitti --json
  flowcli eval data/middlebury --layout middlebury --method dis    # classical baseline
  flowcli eval data/sintel --layout sintel --weights MemFlowNet_sintel.pth --preset sintel

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
@click.option("--preset", help="Official settings for a .pth checkpoint.")
@click.option("--iters", type=click.IntRange(1, 100), help="Refinement iterations (default: the weights' own).")
@click.option("--warm-start/--no-warm-start", default=False, show_default=True)
@click.option("--max-side", type=click.IntRange(8, None), help="Run the network smaller (metrics at full size).")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for torch.")
@quiet_option
@json_option
def eval_cmd(root, layout, method, weights, preset, iters, warm_start, max_side, threads, quiet, as_json):
    """Evaluate flow accuracy on the dataset at ROOT."""
    from .evaluate import evaluate, format_table

    if method == "memflow":
        import torch

        from .weights import load_weights
        if threads:
            torch.set_num_threads(threads)
        subject = load_weights(weights, preset=preset)
    else:
        if weights or preset:
            raise click.UsageError("--weights/--preset only apply to --method memflow")
        subject = method
    report = evaluate(subject, root, layout, iters=iters, warm_start=warm_start, max_side=max_side,
                      progress=functools.partial(progress, quiet=quiet))
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(format_table(report))
