"""``flowcli batch``: flow for many videos (one output folder each), resumable, shardable, parallel."""
from __future__ import annotations

from pathlib import Path

import click

from .cli import emit_json, status
from .cmd_estimate import check_preset, stream_options
from .cmd_predict import tta_option
from .errors import FlowcliError

EPILOG = """\b
Examples:
  flowcli batch videos/ -o flow/                      every video under videos/ (recursive)
  flowcli batch --manifest list.txt -o flow/ --workers 2 --threads 1
  flowcli batch 'data/**/*.mp4' -o flow/ --format flo --format png --max-side 512
  flowcli batch videos/ -o flow/ --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
  flowcli batch videos/ -o flow/ --ray auto           on a running Ray cluster
  flowcli batch videos/ -o flow/ --dry-run            list what would run
  flowcli batch --status -o flow/                     done / failed so far
  flowcli batch videos/ -o pred/ --mode predict-next --weights P.pth --prior-flows flow/

\b
INPUT: a video file, a folder (searched recursively for videos; a folder
holding 2 or more images and no videos is also one image sequence, and its
subfolders are searched too; a lone image is ignored), or a quoted glob.
--manifest: one path per line (# comments; relative paths are relative to the
manifest). Output: OUTROOT/NAME/ per video, NAME = the path below the
folder/glob it was found in (or as given), extension dropped, "/" -> "__";
inputs sharing a name get -HASH8, and so do names cut to 100 bytes.
OUTROOT/ledger.jsonl (or ledger.shard-K-of-N.jsonl) gets one JSON line per
finished video: video, output, status (done/failed), pairs, seconds, error,
time.

\b
Rerun the same command to resume: complete videos (OUTROOT/NAME/flowcli.json
with the same settings) are skipped, an interrupted video continues where it
stopped, failed videos are skipped unless --retry-failed. --shard K/N runs the
videos whose name hashes to K (0 <= K < N), with no coordination needed.
Exit codes: 0 all done, 1 a video failed (now or in an earlier run and not
retried) or disk full, 2 usage, 130 SIGINT, 143 SIGTERM. See docs/batch.md.
"""

_PREDICT_ONLY = ("write_frames", "prior_flows", "estimate_weights", "estimate_preset", "with_estimate",
                 "include_first", "tta")


def _split_ray(value: str | None, inputs: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """``--ray`` takes an optional ADDRESS; a following input path is not one."""
    if value is None or value in ("", "auto", "local") or ":" in value:
        return value, inputs
    return "", (value, *inputs)


@click.command("batch", epilog=EPILOG)
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Text file with one video/folder/glob per line (# comments allowed).")
@click.option("--mode", type=click.Choice(["estimate", "predict-next"]), default="estimate", show_default=True,
              help="What to run on each video (the options of that command apply).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["flo", "kitti", "npy", "png"]),
              help="Output format, repeatable (default flo; with --video and no --format only flow.mp4 is "
                   "written, except flo files too in --mode predict-next with --with-estimate).")
@click.option("--video", is_flag=True, help="Also write OUTROOT/NAME/flow.mp4, the colour visualisation.")
@click.option("--shard", metavar="K/N", help="Run only shard K of N (0 <= K < N), e.g. a Slurm array task.")
@click.option("--workers", type=click.IntRange(1, 4096),
              help="Worker processes, each loading the model once and running whole videos (default 1). "
                   "With --ray: number of Ray actors (default: cluster CPUs / --threads).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None, metavar="[ADDRESS]",
              help="Run on a Ray cluster: ADDRESS is auto, local, HOST:PORT or ray://HOST:PORT (default: "
                   "RAY_ADDRESS, else a new local cluster). Needs flowcli[ray]; outputs must be on storage "
                   "every node sees.")
@click.option("--retry-failed", is_flag=True, help="Run again the videos that failed in earlier runs.")
@click.option("--dry-run", is_flag=True, help="List what would run (and what is skipped), run nothing.")
@click.option("--status", "show_status", is_flag=True,
              help="Summarise the ledgers of OUTROOT (with INPUTs: also what is pending) and exit.")
@click.option("--frames", "write_frames", is_flag=True, help="predict-next: also write frames/T.png.")
@click.option("--prior-flows", type=click.Path(path_type=Path, file_okay=False), metavar="ROOT",
              help="predict-next: past flows from ROOT/NAME/ (e.g. the OUTROOT of an estimate batch) "
                   "instead of an estimator.")
@click.option("--estimate-weights", metavar="NAME|PATH", help="predict-next: estimation weights for past flows.")
@click.option("--estimate-preset", help="predict-next: official settings of an estimation .pth.")
@click.option("--with-estimate", is_flag=True, help="predict-next: also write the estimated flows.")
@click.option("--include-first", is_flag=True, help="predict-next: also write the prediction at the first frame.")
@tta_option("predict-next: average with the prediction on mirrored frames (default: the weights' own; "
            "see `flowcli predict-next --help`).")
@stream_options
@click.pass_context
def batch(ctx, inputs, manifest, mode, formats, video, shard, workers, ray_address, retry_failed, dry_run,
          show_status, write_frames, prior_flows, estimate_weights, estimate_preset, with_estimate, include_first,
          tta, out_dir, weights, preset, iters, warm_start, device, max_side, scale, start, end, step, size, threads,
          max_flow, overwrite, quiet, as_json, **more_stream_options):
    """Estimate (or predict) optical flow for many videos: one output folder
    per video under OUTROOT (-o), a ledger of finished videos, resumable.

    Videos run whole (MemFlow's memory runs in order inside a video); parallelism
    is across videos: --workers N processes here, --shard K/N for scheduler
    arrays, --ray for a Ray cluster. A video that cannot be processed (corrupt,
    unreadable, too few frames) is recorded as failed and the batch goes on.
    """
    from . import batch as B

    ray_address, inputs = _split_ray(ray_address, tuple(inputs))
    try:
        shard_t = B.parse_shard(shard)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None

    if show_status:
        d = B.batch_status(out_dir, inputs, manifest, shard_t)
        if as_json:
            emit_json(d)
            return
        click.echo(f"{d['output']}: {d['done']} done, {d['failed']} failed"
                   + (f", {len(d['pending'])} of {d['videos']} pending" if "pending" in d else "")
                   + f" ({d['pairs']} pairs, {d['seconds']:.1f} s of work; ledgers: {', '.join(d['ledgers']) or 'none'})")
        for f in d["failures"]:
            click.echo(f"failed   {f['output']}  {f['error']}")
        for p in d.get("pending", []):
            click.echo(f"pending  {p['output']}  {p['video']}")
        return

    if not inputs and manifest is None:
        raise click.UsageError("give INPUT videos/folders/globs or --manifest FILE")
    if size is not None:
        raise click.UsageError("--size is for raw frames on stdin; batch reads video files and image folders")
    if end is not None and end <= start:
        raise click.UsageError(f"--end {end} must be greater than --start {start}")
    if max_side is not None and scale is not None:
        raise click.UsageError("give --max-side or --scale, not both")
    given = dict(write_frames=write_frames, prior_flows=prior_flows, estimate_weights=estimate_weights,
                 estimate_preset=estimate_preset, with_estimate=with_estimate, include_first=include_first,
                 tta=tta is not None)
    if mode == "estimate":
        for name in _PREDICT_ONLY:
            if given[name]:
                flag = {"write_frames": "--frames", "tta": "--tta/--no-tta"}.get(name, "--" + name.replace("_", "-"))
                raise click.UsageError(f"{flag} is for --mode predict-next")
    else:
        from .cmd_predict import check_estimator_flags
        check_estimator_flags(prior_flows, estimate_weights, estimate_preset, with_estimate, iters, warm_start,
                              more_stream_options.get("coarse"), more_stream_options.get("refine"))
    check_preset(weights, preset, "predict" if mode == "predict-next" else "estimate")
    check_preset(estimate_weights, estimate_preset, "estimate", "--estimate-preset", "--estimate-weights")
    if ray_address is not None and threads is None:
        threads = 1  # one torch thread per actor, one actor per CPU

    spec = B.BatchSpec(mode=mode, weights=weights, preset=preset, iters=iters, warm_start=warm_start,
                       device=device, threads=threads, max_side=max_side, scale=scale, start=start, end=end,
                       step=step, formats=tuple(formats), video=video, max_flow=max_flow, overwrite=overwrite,
                       extra={k: v for k, v in {**more_stream_options, "tta": tta}.items() if v is not None},
                       frames=write_frames, prior_flows=str(prior_flows) if prior_flows else None,
                       estimate_weights=estimate_weights, estimate_preset=estimate_preset,
                       with_estimate=with_estimate, include_first=include_first,
                       debug=bool((ctx.find_root().params or {}).get("debug")))

    if dry_run:
        runner = B.VideoRunner(spec)
        plan = B.plan_batch(inputs, out_dir, manifest=manifest, shard=shard_t, retry_failed=retry_failed,
                            overwrite=overwrite, key=runner.key)
        rows = [{"video": it.path, "output": it.name, "action": plan.actions[it.path]} for it in plan.items]
        if as_json:
            emit_json({"command": "batch", "dry_run": True, "output": str(out_dir), "settings": runner.key,
                       "shard": shard, "videos": rows})
        else:
            for r in rows:
                click.echo(f"{r['action']:<11}  {r['output']}  {r['video']}")
            status(f"{len(plan.todo())} of {len(rows)} videos would run", quiet)
        return

    with B.signals_as_interrupt():
        try:
            summary = B.run_batch(inputs, out_dir, spec, manifest=manifest, shard=shard_t, workers=workers,
                                  ray=ray_address, retry_failed=retry_failed, quiet=quiet)
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", 2)
            s = getattr(exc, "summary", None)
            if s is not None and as_json:
                emit_json(s.to_dict())
            done = f"{s.done} video{'' if s.done == 1 else 's'} finished, " if s is not None else ""
            raise B.BatchInterrupted(
                f"interrupted ({'SIGTERM' if signum == 15 else 'SIGINT'}): {done}no partial files; the "
                "ledger is consistent, rerun the same command to resume", signum, s) from None

    if as_json:
        emit_json(summary.to_dict())
    else:
        earlier = f" ({summary.skipped_failed} failed earlier, not retried)" if summary.skipped_failed else ""
        status(f"{summary.done} done, {summary.failed} failed, {summary.skipped} already done{earlier} "
               f"of {summary.videos} videos in {summary.seconds:.1f} s -> {out_dir}", quiet)
    if summary.failures:
        n = len(summary.failures)
        raise FlowcliError(f"{n} of {summary.videos} videos failed (see {summary.ledger}"
                             + ("; rerun with --retry-failed to try them again" if summary.skipped_failed or n
                                else "") + ")")


# The shared options describe one input and one output folder; say what they mean here.
_HELP = {
    "out_dir": "Output root (created if missing): OUTROOT/NAME/ per video and the ledger files.",
    "threads": "CPU threads for torch in each worker (default: cores / --workers; 1 per Ray actor).",
}
for _param in batch.params:
    if _param.name in _HELP:
        _param.help = _HELP[_param.name]
    if _param.name == "size":  # raw stdin frames: not for batch
        _param.hidden = True
