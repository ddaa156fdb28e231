"""flowcli benchmark (issues #3 and #4): speed, peak RSS, bf16 accuracy, end-to-end overhead.

    .venv/bin/python bench/run.py                 # full run (make bench); roughly 10-20 min on 2 idle cores
    .venv/bin/python bench/run.py --quick         # tiny sizes, 1 iteration, 2 frames (smoke test)
    .venv/bin/python bench/run.py --only estimate,baseline --sizes 224x320 --json out.json

Sections (``--only``, comma-separated): ``check`` (baseline == engine), ``estimate`` (flowcli
FlowStream, every supported precision), ``baseline`` (official-like re-implementation,
bench/official_like.py), ``flat`` (RSS over a longer stream), ``precision`` (bf16 vs fp32
end-point difference), ``predict`` (MemFlow-P loop), ``roofline`` (GFLOP per frame against the
machine's float32 matrix-multiply rate: how far the fp32 times are from what the arithmetic allows),
``coarse`` (the shipped weights from zero, with the coarse-to-fine start, and with it and the
variational refinement, their default: the cost of each),
``e2e`` (``flowcli estimate`` vs pure model), ``batch`` (``flowcli batch`` frames/s with 1 and 2 local
workers, bench/batch_row.py).
Every configuration runs in a fresh process (bench/worker.py), so each peak RSS is its own.
Timing: wall clock per ``push`` after warm-up pairs; the median is reported.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import REPO, machine_info, run_process, run_worker  # noqa: E402

SHARED = REPO.parent / "shared"
SECTIONS = ("check", "estimate", "baseline", "flat", "precision", "predict", "roofline", "coarse", "e2e", "batch")
SPEED_GOAL, PREDICT_GOAL = 4.0, 3.0  # issue #4 (fp32 estimation) and #6 (P step): x the official figures

# Official MemFlow on this machine type: 2 threads, float32, random weights, 15 iterations
# (../shared/docs/cpu-facts.md). (height, width) -> (s/frame, peak RSS GB).
OFFICIAL_QUOTED = {(436, 1024): (33.1, 2.13), (224, 320): (2.53, 0.48)}
OFFICIAL_QUOTED_PREDICT = {(436, 1024): (2.92, 1.26), (224, 320): (0.30, 0.441)}
QUOTED_ITERS, QUOTED_THREADS = 15, 2


# -- arguments ----------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HEIGHTxWIDTH, e.g. 436x1024") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides must be at least 16")
    return h, w


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(s) for s in text.split(",") if s.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, 1 iteration, 2 timed frames, short streams (smoke test; numbers meaningless)")
    ap.add_argument("--sizes", type=parse_sizes, help="HxW list for the speed table (default 436x1024,224x320,320x640)")
    ap.add_argument("--iters", type=int, help="refinement iterations (default 15)")
    ap.add_argument("--frames", type=int, help="timed pairs per configuration, after --warmup (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed pairs before timing (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every child (default 2)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="configurations run at once (default 1; >1 only for smoke runs: timings interfere)")
    ap.add_argument("--precisions", help="comma list (default: every precision the engine supports)")
    ap.add_argument("--only", help=f"comma list of sections: {','.join(SECTIONS)} (default all)")
    ap.add_argument("--flat-size", type=parse_size, help="HxW of the flatness stream (default 224x320)")
    ap.add_argument("--flat-frames", type=int, help="frames of the flatness stream (default 40)")
    ap.add_argument("--e2e-size", type=parse_size, help="HxW of the generated video (default 256x320)")
    ap.add_argument("--e2e-frames", type=int, help="frames of the generated video (default 24)")
    ap.add_argument("--epe-max-side", type=int, help="run bf16/fp32 real frames at this max side (default native)")
    ap.add_argument("--json", dest="json_path", type=Path, help="also write all results to this JSON file")
    args = ap.parse_args(argv)
    q = args.quick
    defaults = {"sizes": [(128, 160)] if q else [(436, 1024), (224, 320), (320, 640)],
                "iters": 1 if q else 15, "frames": 2 if q else 3,
                "flat_size": (128, 160) if q else (224, 320), "flat_frames": 12 if q else 40,
                "e2e_size": (128, 160) if q else (256, 320), "e2e_frames": 4 if q else 24,
                "epe_max_side": 160 if q else None}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.iters < 1 or args.frames < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--iters, --frames, --threads must be >= 1 and --warmup >= 0")
    args.only = set(SECTIONS) if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        ap.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def engine_precisions() -> tuple[list[str], str]:
    """Precisions flowcli's engine supports: from ``StreamOptions.precision`` (and PRECISIONS if exported)."""
    from flowcli import engine
    fields = {f.name for f in dataclasses.fields(engine.StreamOptions)}
    if "precision" not in fields:
        return ["fp32"], "bf16 skipped: flowcli.engine.StreamOptions has no 'precision' field yet"
    listed = getattr(engine, "PRECISIONS", None)
    return (list(listed) if listed else ["fp32", "bf16"]), ""


# -- printing ---------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(wd) if a == "l" else c.rjust(wd) for c, wd, a in zip(r, widths, align)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def fmt(x, nd=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.{nd}f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def sz(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


def quoted_ok(args) -> bool:
    return args.iters == QUOTED_ITERS and args.threads == QUOTED_THREADS


def error_of(r: dict) -> str | None:
    return r.get("error") or r.get("unsupported")


# -- the plan: every configuration is one job (a fresh process) ---------------------------------------------
class Job:
    def __init__(self, name: str, run):
        self.name, self.run = name, run


def execute(jobs: list[Job], parallel: int) -> dict[str, dict]:
    """Run the jobs (each starts one child process), ``parallel`` at a time; results by name."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock

    lock, done, results = Lock(), [0], {}

    def one(job: Job):
        t0 = time.perf_counter()
        r = job.run()
        with lock:
            done[0] += 1
            err = error_of(r)
            what = f"skipped/failed: {err}" if err else (
                f"{r['median_s']:.3f} s/frame, " if "median_s" in r else "") + (
                f"peak RSS {r['peak_rss_gb']:.2f} GB" if not err and "peak_rss_gb" in r else "")
            print(f"  [{done[0]}/{len(jobs)}] {job.name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
        return r

    if parallel <= 1:
        for job in jobs:
            results[job.name] = one(job)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            for job, r in zip(jobs, pool.map(one, jobs)):
                results[job.name] = r
    return results


def worker_job(name: str, task: dict, threads: int) -> Job:
    return Job(name, lambda: run_worker(task, threads))


def plan_check(args) -> list[Job]:
    iters = max(2, min(args.iters, 4))
    return [worker_job("check", {"kind": "equivalence", "size": [128, 160], "iters": iters, "frames": 3},
                       args.threads)]


def speed_impls(args, precisions) -> list[tuple[str, str]]:
    impls = [("flowcli", p) for p in precisions] if "estimate" in args.only else []
    return impls + ([("official_like", "fp32")] if "baseline" in args.only else [])


def plan_speed(args, precisions) -> list[Job]:
    return [worker_job(f"speed {impl} {prec} {sz(hw)}",
                       {"kind": "speed", "impl": impl, "precision": prec, "size": list(hw), "iters": args.iters,
                        "frames": args.frames, "warmup": args.warmup}, args.threads)
            for hw in args.sizes for impl, prec in speed_impls(args, precisions)]


def plan_flat(args) -> list[Job]:
    return [worker_job("flat", {"kind": "flat", "size": list(args.flat_size), "iters": args.iters,
                                "frames": args.flat_frames, "mark": 10}, args.threads)]


def plan_precision(args, precisions) -> list[Job]:
    if "bf16" not in precisions or not (SHARED / "conformance").is_dir():
        return []
    return [worker_job("precision", {"kind": "precision", "precisions": precisions, "iters": args.iters,
                                     "datasets": precision_datasets(args)}, args.threads)]


def predict_available() -> str:
    """'' if flowcli.predict.PredictStream exists, else why not."""
    import importlib.util
    if importlib.util.find_spec("flowcli.predict") is None:
        return "flowcli.predict is not available in this version"
    return ""


def plan_predict(args, precisions) -> list[Job]:
    if predict_available():
        return []
    return [worker_job(predict_job(hw, p, tta, impl), {"kind": "predict", "size": list(hw), "frames": args.frames,
                                                       "warmup": args.warmup, "precision": p, "tta": tta,
                                                       "impl": impl}, args.threads)
            for hw in args.sizes for p, tta, impl in predict_rows(precisions)]


def predict_rows(precisions) -> list[tuple[str, bool, str]]:
    """(precision, tta, impl) rows per size: the official-like loop (the same-run baseline, float32), then
    flowcli at every precision, and fp32 with --tta (mirrored-view averaging)."""
    return ([("fp32", False, "official_like")] + [(p, False, "flowcli") for p in precisions]
            + ([("fp32", True, "flowcli")] if "fp32" in precisions else []))


def predict_job(hw, precision: str, tta: bool, impl: str = "flowcli") -> str:
    return f"predict {sz(hw)} {precision}" + (" --tta" if tta else "") + (" official-like" if impl != "flowcli" else "")


def plan_roofline(args) -> list[Job]:
    return ([worker_job("gemm peak", {"kind": "gemm_peak"}, args.threads)]
            + [worker_job(f"flops {sz(hw)}", {"kind": "flops", "size": list(hw), "iters": args.iters}, args.threads)
               for hw in args.sizes])


def coarse_size(args) -> tuple[int, int]:
    """The largest speed-table size; --quick: 256x320, the smallest frames that get a coarse pass at all."""
    return (256, 320) if args.quick else max(args.sizes, key=lambda s: s[0] * s[1])


# The shipped weights' inference settings, cheapest first: (label, StreamOptions fields).
COARSE_CONFIGS = (("from zero (--no-coarse-to-fine --no-refine)", {"coarse": False, "refine": False}),
                  ("coarse-to-fine (--no-refine)", {"coarse": True, "refine": False}),
                  ("coarse-to-fine + refinement (default)", {"coarse": True, "refine": True}))


def plan_coarse(args) -> list[Job]:
    hw = coarse_size(args)
    return [worker_job(f"coarse {label} {sz(hw)}", {"kind": "speed", "impl": "flowcli", "weights": "shipped",
                                                    "options": options, "size": list(hw), "iters": None,
                                                    "frames": args.frames, "warmup": args.warmup}, args.threads)
            for label, options in COARSE_CONFIGS]


def plan_e2e(args, tmp: Path) -> list[Job]:
    """Make the video and a random-weight official .pth now; the CLI run and the pure-model run are jobs."""
    import torch

    from bench.worker import random_model
    from flowcli.synth import make_demo_video
    h, w = args.e2e_size
    video, weights, out = tmp / "demo.mp4", tmp / "random_official.pth", tmp / "out"
    make_demo_video(video, num_frames=args.e2e_frames, size=(w, h))
    torch.save(random_model(0).state_dict(), weights)
    cmd = [sys.executable, "-m", "flowcli", "estimate", str(video), "-o", str(out), "--weights", str(weights),
           "--preset", "sintel", "--iters", str(args.iters), "--threads", str(args.threads), "--device", "cpu", "-q"]

    def cli() -> dict:
        run = run_process(cmd, args.threads)
        if run["returncode"] != 0:
            tail = [ln for ln in run["stderr"].splitlines() if ln.strip()][-1:]
            return {"error": f"flowcli estimate exited {run['returncode']}: {' '.join(tail)}"}
        return {"wall_s": run["wall_s"], "peak_rss_gb": run["child_maxrss_gb"],
                "report": json.loads((out / "flowcli.json").read_text())}

    return [Job("e2e flowcli estimate", cli),
            worker_job("e2e pure model", {"kind": "model_time", "video": str(video), "weights": str(weights),
                                          "preset": "sintel", "iters": args.iters}, args.threads)]


def report_coarse(args, res, results) -> None:
    hw = coarse_size(args)
    section(f"Coarse-to-fine start and variational refinement: their cost with the shipped weights ({sz(hw)}, "
            f"their default iterations, {args.threads} threads, fp32; the half-size pass runs on every pair, "
            f"whether or not its flow is used)")
    runs = [(label, res[f"coarse {label} {sz(hw)}"]) for label, _ in COARSE_CONFIGS]
    results["coarse"] = {key: r for key, (_, r) in zip(("plain", "coarse", "refined"), runs)}
    failed = next((error_of(r) for _, r in runs if error_of(r)), None)
    if failed:
        print("skipped: " + failed)
        return
    base = runs[0][1]["median_s"]
    results["coarse"]["ratio"] = runs[1][1]["median_s"] / base
    results["coarse"]["refined_ratio"] = runs[2][1]["median_s"] / base
    print(table(["settings", "s/frame", "ratio", "peak RSS GB"],
                [[label, fmt(r["median_s"]), f"{r['median_s'] / base:.3f}", fmt(r["peak_rss_gb"], 2)]
                 for label, r in runs]))


# -- reports ----------------------------------------------------------------------------------------------
def report_check(args, res, results):
    section("Baseline check: official-like vs flowcli FlowStream (same random weights, memory path sharpened)")
    r = results["check"] = res["check"]
    if error_of(r):
        print(f"FAILED: {error_of(r)}")
        return
    verdict = "OK (< 1e-3)" if r["max_abs_diff"] < 1e-3 else "MISMATCH"
    print(f"128x160, {r['task']['iters']} iterations, {len(r['per_pair'])} pairs: max |flow difference| "
          f"{r['max_abs_diff']:.2e} px (flow up to {r['max_abs_flow']:.2f} px) -> {verdict}")


def report_speed(args, res, results, precisions, note):
    section(f"Estimation: s/frame and peak RSS (OFFICIAL config, random weights, {args.iters} iterations, "
            f"{args.threads} threads; median of {args.frames} pairs after {args.warmup} warm-up; one process per row)")
    impls = speed_impls(args, precisions)
    rows = []
    for hw in args.sizes:
        for impl, prec in impls:
            r = res[f"speed {impl} {prec} {sz(hw)}"]
            r.update(size=list(hw), impl=impl, precision=prec)
            rows.append(r)
    results["speed"] = rows
    base = {tuple(r["size"]): r["median_s"] for r in rows if r["impl"] == "official_like" and not error_of(r)}
    out = []
    for r in rows:
        hw = tuple(r["size"])
        name = "flowcli" if r["impl"] == "flowcli" else "official-like baseline"
        if error_of(r):
            out.append([sz(hw), name, r["precision"], "skipped: " + error_of(r)[:60]] + [""] * 6)
            continue
        t, mp = r["median_s"], hw[0] * hw[1] / 1e6
        q = OFFICIAL_QUOTED.get(hw) if quoted_ok(args) else None
        r["speedup_vs_baseline"] = base[hw] / t if hw in base else None
        r["speedup_vs_official_quoted"] = q[0] / t if q else None
        out.append([sz(hw), name, r["precision"], fmt(t), f"{fmt(min(r['times_s']))}-{fmt(max(r['times_s']))}",
                    fmt(t / mp), fmt(r["peak_rss_gb"], 2), ratio(base.get(hw), t),
                    ratio(q[0], t) if q else "-", ratio(q[1], r["peak_rss_gb"]) if q else "-"])
    print(table(["size", "implementation", "prec", "s/frame", "min-max", "s/MP", "peak RSS GB",
                 "speed-up vs baseline", "speed-up vs official (quoted)", "RSS: official/this"], out,
                "lllrrrrrrr"))
    print(f"official (quoted, {QUOTED_THREADS} threads, fp32, {QUOTED_ITERS} it): "
          + "; ".join(f"{sz(k)} {v[0]} s/frame, {v[1]} GB" for k, v in OFFICIAL_QUOTED.items())
          + ("" if quoted_ok(args) else f"  [not compared: this run uses {args.iters} it, {args.threads} threads]"))
    print("speed-up = other s/frame / this s/frame (>1: this is faster); s/MP = s/frame per input megapixel; "
          "the baseline's 'vs official' column shows how close the re-implementation is to the real thing")
    if note:
        print(f"note: {note}")
    for impl, prec in impls:
        pts = [(tuple(r["size"]), r["median_s"]) for r in rows
               if r["impl"] == impl and r["precision"] == prec and not error_of(r)]
        if len(pts) >= 2:
            per_mp = [t / (h * w / 1e6) for (h, w), t in pts]
            print(f"linearity {impl} {prec}: s/MP " + ", ".join(f"{sz(hw)} {fmt(v)}" for (hw, _), v in zip(pts, per_mp))
                  + f" (max/min {max(per_mp) / min(per_mp):.2f})")


def report_flat(args, res, results):
    h, w = args.flat_size
    section(f"Memory flatness: flowcli fp32 stream of {args.flat_frames} frames at {h}x{w}, {args.iters} iterations")
    r = results["flat"] = res["flat"]
    if error_of(r):
        print(f"failed: {error_of(r)}")
        return
    n, m = args.flat_frames, r["mark"]
    growth = (r["rss_end_gb"] - r["rss_mark_gb"]) * 1024
    per = growth / max(1, n - m)
    r["growth_mb"], r["growth_mb_per_frame"] = growth, per
    print(table(["", f"after frame {m}", f"after frame {n}", "growth MB", "MB/frame"],
                [["RSS (VmRSS) GB", fmt(r["rss_mark_gb"]), fmt(r["rss_end_gb"]), f"{growth:+.1f}", f"{per:+.2f}"],
                 ["peak (VmHWM) GB", fmt(r["hwm_mark_gb"]), fmt(r["hwm_end_gb"]),
                  f"{(r['hwm_end_gb'] - r['hwm_mark_gb']) * 1024:+.1f}", ""]]))
    print(("flat" if abs(per) < 1.0 else "NOT flat") + " (criterion: |growth| < 1 MB/frame after frame 10)"
          + (" -- too few frames to judge" if n - m < 10 else ""))


def precision_datasets(args) -> list[dict]:
    conf = SHARED / "conformance"
    data = SHARED / "data"
    pth = str(conf / "memflow_est_seed0.pth")
    sets = [{"name": "conformance frames 0-4", "frames": [str(p) for p in sorted(conf.glob("frame_00*.png"))],
             "conformance": pth, "prefer_default": False}]
    alley = data / "sintel/training/final/alley_1"
    if alley.is_dir():
        sets.append({"name": "Sintel alley_1 final 1-4",
                     "frames": [str(p) for p in sorted(alley.glob("frame_000[1-4].png"))],
                     "conformance": pth, "max_side": args.epe_max_side,
                     "gt": {"pair": 1, "flo": str(data / "sintel/training/flow/alley_1/frame_0002.flo")}})
    davis = data / "frames_nogt/flow-davis"
    if davis.is_dir():
        sets.append({"name": "DAVIS 00000-00002", "frames": [str(p) for p in sorted(davis.glob("*.jpg"))],
                     "conformance": pth, "max_side": args.epe_max_side})
    return [s for s in sets if len(s["frames"]) >= 2]


def report_precision(args, res, results, precisions, note):
    section(f"bf16 vs fp32: mean end-point difference between the two precisions' flows ({args.iters} iterations)")
    if "precision" not in res:
        if "bf16" in precisions:
            why = f"{SHARED / 'conformance'} is missing"
        elif note:
            why = note
        else:
            why = "bf16 not selected (--precisions)"
        print(f"skipped: {why}")
        results["precision"] = {"skipped": why}
        return
    r = results["precision"] = res["precision"]
    if error_of(r):
        print(f"failed: {error_of(r)}")
        return
    rows = []
    for d in r["datasets"]:
        if d.get("error"):
            rows.append([d["name"], f"error: {d['error']}"] + [""] * 7)
            continue
        run_hw = f"max side {d['max_side']}" if d.get("max_side") else "native"
        size = f"{d['size'][0]}x{d['size'][1]}"
        secs = d["s_per_pair"]
        for prec, diff in d["diff"].items():
            gt = d.get("gt_epe", {})
            rows.append([d["name"], d["weights"], f"{d['pairs']} @ {size}", run_hw, f"{diff['mean_epe']:.4f}",
                         f"{diff['max_epe']:.4f}", fmt(diff["mean_flow_mag"], 2),
                         " / ".join(fmt(secs[p]) if isinstance(secs.get(p), float) else "-" for p in ("fp32", prec)),
                         " / ".join(fmt(gt.get(p)) for p in ("fp32", prec)) if gt else ""])
        for prec, s in secs.items():
            if isinstance(s, str):
                rows.append([d["name"], d["weights"], "", "", f"{prec} skipped: {s}"] + [""] * 4)
    print(table(["frames", "weights", "pairs", "run size", "mean EPE diff px", "max px", "mean |flow| px",
                 "s/pair fp32 / bf16", "EPE vs GT fp32 / bf16"], rows, "lllllrrrr"))
    print("EPE vs GT means something only with trained (shipped) weights; the conformance weights are random.")


def report_predict(args, res, results, precisions):
    section(f"MemFlow-P prediction loop (past flows given, as official use_gt; {args.threads} threads): "
            "flowcli.predict.PredictStream against the official-like loop (bench/official_like.py)")
    if predict_available():
        print(f"skipped: {predict_available()}")
        results["predict"] = {"skipped": predict_available()}
        return
    rows, out = [], []
    for hw in args.sizes:
        base = None
        for p, tta, impl in predict_rows(precisions):
            r = res[predict_job(hw, p, tta, impl)]
            r.update(size=list(hw), precision=p, tta=tta, impl=impl)
            rows.append(r)
            label = p + (" --tta" if tta else "")
            if error_of(r):
                out.append([sz(hw), impl, label, f"skipped/failed: {error_of(r)[:70]}", "", "", "", ""])
                continue
            if impl == "official_like":
                base = r["median_s"]
            else:
                r["speedup_vs_baseline"] = base / r["median_s"] if base else None
            q = OFFICIAL_QUOTED_PREDICT.get(hw) if args.threads == QUOTED_THREADS else None
            out.append([sz(hw), impl.replace("_", "-"), label, fmt(r["median_s"]), fmt(r["peak_rss_gb"], 2),
                        ratio(base, r["median_s"]) if impl == "flowcli" else "-",
                        f"{q[0]} s, {q[1]} GB (fp32)" if q else "-", ratio(q[0], r["median_s"]) if q else "-"])
    results["predict"] = rows
    print(table(["size", "implementation", "precision", "s/frame", "peak RSS GB", "speed-up vs baseline",
                 "official (quoted)", "speed-up vs official (quoted)"], out, "lllrrrlr"))
    print("baseline: the official prediction loop's work per frame written out the official way (feature "
          "encoder on both frames of each pair, correlation volume rebuilt, scipy forward_interpolate); "
          "its flows match pred_vectors_seed0.npz. The quoted official figures were measured on the "
          "session-1 host (Intel, AMX); the baseline is measured on this machine in this run.")


def _fp32_by_size(rows, **match) -> dict:
    """{(h, w): row} of the successful float32 rows of a report section that match ``match``."""
    if not isinstance(rows, list):
        return {}
    return {tuple(r["size"]): r for r in rows if r.get("precision") == "fp32" and not error_of(r)
            and all(r.get(k) == v for k, v in match.items())}


def report_roofline(args, res, results):
    """GFLOP/frame, the GFLOP/s the fp32 times attain, and what the speed goals would need."""
    peak = res["gemm peak"]
    section(f"Roofline (float32, {args.threads} threads): GFLOP per frame (torch FlopCounterMode, plain ops) "
            f"against this machine's matrix-multiply rate")
    if error_of(peak):
        print(f"skipped: {error_of(peak)}")
        return
    rate = peak["gemm_gflops"]
    speed = _fp32_by_size(results.get("speed"), impl="flowcli")
    pred = _fp32_by_size(results.get("predict"), tta=False, impl="flowcli")  # a dict, not rows, when the section was skipped
    rows, out = [], []
    for hw in args.sizes:
        r = res[f"flops {sz(hw)}"]
        if error_of(r):
            out.append([sz(hw), "skipped: " + error_of(r)[:60]] + [""] * 6)
            continue
        for what, gflop, timed, quoted, goal in (
                ("estimate", r["estimate_gflop"], speed.get(hw), OFFICIAL_QUOTED.get(hw), SPEED_GOAL),
                ("P step", r["predict_gflop"], pred.get(hw), OFFICIAL_QUOTED_PREDICT.get(hw), PREDICT_GOAL)):
            t = timed["median_s"] if timed else None
            goal_s = quoted[0] / goal if quoted and quoted_ok(args) else None
            row = {"size": list(hw), "what": what, "gflop": gflop, "s_per_frame": t,
                   "attained_gflops": gflop / t if t else None, "floor_s": gflop / rate,
                   "goal_s": goal_s, "goal_gflops": gflop / goal_s if goal_s else None}
            rows.append(row)
            out.append([sz(hw), what, fmt(gflop, 1), fmt(row["floor_s"]), fmt(t) if t else "-",
                        f"{fmt(row['attained_gflops'], 0)} ({100 * row['attained_gflops'] / rate:.0f}%)" if t else "-",
                        fmt(goal_s) if goal_s else "-",
                        f"{fmt(row['goal_gflops'], 0)} ({100 * row['goal_gflops'] / rate:.0f}%)" if goal_s else "-"])
    results["roofline"] = {"gemm_gflops": rate, "rows": rows}
    print(f"float32 matrix multiply (2048^3 torch.mm): {rate:.0f} GFLOP/s")
    print(table(["size", "what", "GFLOP/frame", "s at that rate", "s/frame (this run)", "attained GFLOP/s (% of mm)",
                 "goal s/frame", "goal needs GFLOP/s (% of mm)"], out, "llrrrrrr"))
    print("every op counts at the matrix-multiply rate in the 's at that rate' column; depthwise convolutions, "
          "norms and the correlation lookup run well below it")


def report_e2e(args, res, results):
    h, w = args.e2e_size
    section(f"End-to-end `flowcli estimate` vs pure model time (generated {w}x{h} video, {args.e2e_frames} frames, "
            f"{args.iters} iterations, {args.threads} threads, random OFFICIAL weights)")
    cli, pure = res["e2e flowcli estimate"], res["e2e pure model"]
    for what, r in (("flowcli estimate", cli), ("pure model run", pure)):
        if error_of(r):
            print(f"failed: {what}: {error_of(r)}")
            results["e2e"] = {"error": error_of(r)}
            return
    report = cli["report"]
    wall, job, model_in_job, pm = cli["wall_s"], report.get("seconds"), report.get("model_seconds"), pure["model_s"]
    results["e2e"] = {"wall_s": wall, "job_s": job, "model_in_job_s": model_in_job, "pure_model_s": pm,
                      "pairs": report.get("pairs"), "frames": pure["frames"], "cli_peak_rss_gb": cli["peak_rss_gb"],
                      "pure_peak_rss_gb": pure["peak_rss_gb"], "ratio_wall": wall / pm,
                      "ratio_job": job / pm if job else None}
    print(table(["measure", "seconds", "/ pure model"], [
        ["flowcli estimate, whole process (start-up, weights, decode, model, write)", fmt(wall), f"{wall / pm:.3f}"],
        ["  of which the job (decode + model + write + resume state)", fmt(job), ratio(job, pm).rstrip("x")],
        ["  of which FlowStream.push inside the job", fmt(model_in_job), ratio(model_in_job, pm).rstrip("x")],
        ["  outside the job (start-up, imports, weights)", fmt(wall - (job or 0)), ""],
        [f"pure model: FlowStream.push over the same {pure['frames']} decoded frames", fmt(pm), "1.000"],
    ], "lrr"))
    print(f"ratio whole process / pure model {wall / pm:.3f}: {'within' if wall / pm <= 1.10 else 'NOT within'} the "
          f"10% goal (job only: {ratio(job, pm)}); peak RSS: CLI {cli['peak_rss_gb']:.2f} GB, "
          f"pure {pure['peak_rss_gb']:.2f} GB")


# -- main ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    info = machine_info(args.threads)
    precisions, note = engine_precisions()
    if args.precisions:
        wanted = [p.strip() for p in args.precisions.split(",") if p.strip()]
        missing = [p for p in wanted if p not in precisions]
        precisions = [p for p in wanted if p in precisions]
        if missing:
            note = (note + "; " if note else "") + f"not supported by the engine: {', '.join(missing)}"
    results: dict = {"machine": info, "args": {k: (list(v) if isinstance(v, set) else v)
                                               for k, v in vars(args).items() if k != "json_path"},
                     "precisions": precisions, "precision_note": note,
                     "official_quoted": {sz(k): {"s_per_frame": v[0], "peak_rss_gb": v[1]}
                                         for k, v in OFFICIAL_QUOTED.items()},
                     "official_quoted_predict": {sz(k): {"s_per_frame": v[0], "peak_rss_gb": v[1]}
                                                 for k, v in OFFICIAL_QUOTED_PREDICT.items()}}
    print("flowcli benchmark" + (" (--quick: tiny sizes, numbers are not meaningful)" if args.quick else ""))
    print(f"machine: {info['cpu']}; {info['cores']} cores ({info['cores_usable']} usable); "
          f"flags {' '.join(info['cpu_flags']) or '-'}")
    print(f"torch {info['torch']}, {args.threads} threads per run; python {info['python']}; flowcli {info['flowcli']}; "
          f"{info['date']}")
    load1 = info["load_avg"][0]
    print(f"load average {load1:.2f}" + (" -- WARNING: the machine is busy; timings are unreliable "
                                         "(pause other jobs for real numbers)" if load1 > 0.5 else ""))
    print(f"engine precisions: {', '.join(precisions)}" + (f" ({note})" if note else ""))
    args.sizes = list(dict.fromkeys(args.sizes))

    with tempfile.TemporaryDirectory(prefix="flowcli-bench-") as tmp:
        plan: list[Job] = []
        if "check" in args.only:
            plan += plan_check(args)
        if {"estimate", "baseline"} & args.only:
            plan += plan_speed(args, precisions)
        if "flat" in args.only:
            plan += plan_flat(args)
        if "precision" in args.only:
            plan += plan_precision(args, precisions)
        if "predict" in args.only:
            plan += plan_predict(args, precisions)
        if "roofline" in args.only:
            plan += plan_roofline(args)
        if "coarse" in args.only:
            plan += plan_coarse(args)
        if "e2e" in args.only:
            plan += plan_e2e(args, Path(tmp))
        print(f"\nrunning {len(plan)} configurations, each in a fresh process"
              + (f", {args.jobs} at a time (timings interfere)" if args.jobs > 1 else "") + ":", flush=True)
        res = execute(plan, args.jobs)

    if "check" in args.only:
        report_check(args, res, results)
    if {"estimate", "baseline"} & args.only:
        report_speed(args, res, results, precisions, note)
    if "flat" in args.only:
        report_flat(args, res, results)
    if "precision" in args.only:
        report_precision(args, res, results, precisions, note)
    if "predict" in args.only:
        report_predict(args, res, results, precisions)
    if "roofline" in args.only:
        report_roofline(args, res, results)
    if "coarse" in args.only:
        report_coarse(args, res, results)
    if "e2e" in args.only:
        report_e2e(args, res, results)
    if "batch" in args.only:
        from bench.batch_row import measure_batch
        section("Batch: `flowcli batch` over short generated videos, 1 vs 2 local workers (same total threads)")
        rows = measure_batch(args.threads, args.quick)
        print(table(["workers", "videos", "size", "iters", "frames", "seconds", "frames/s", "failed", "weights"],
                    [[r["workers"], r["videos"], r["size"], r["iters"], r["frames"], fmt(r["seconds"], 1),
                      fmt(r["frames_per_second"], 2), r["failed"], r["weights"]] for r in rows]))
        results["batch"] = rows
    results["total_s"] = time.perf_counter() - t_start
    print(f"\ntotal {results['total_s']:.0f} s")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(results, indent=1, default=str))
        print(f"results: {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
