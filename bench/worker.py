"""One benchmark configuration, run in a fresh process: ``worker.py TASK_JSON RESULT_PATH``.

Tasks (``task["kind"]``):

* ``speed``: s/frame of flowcli's FlowStream or the official-like baseline at one size (random
  official weights, or ``"weights": "shipped"``; ``"options"``: further StreamOptions fields);
* ``flat``: RSS over a longer stream (flatness);
* ``equivalence``: max |flow difference| between FlowStream and the official-like baseline;
* ``precision``: flows of every requested precision on real frames, and their differences;
* ``model_time``: pure FlowStream time over the decoded frames of a video (for the e2e ratio);
* ``flops``: GFLOP per estimation pair and per MemFlow-P step at one size;
* ``gemm_peak``: the machine's float32 matrix-multiply GFLOP/s (the roofline for the above).

The result (JSON) always carries ``peak_rss_gb`` (ru_maxrss at the end) and ``vm`` (VmRSS/VmHWM).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.measure import TextureFrames, median, peak_rss_gb, proc_status  # noqa: E402

PRECISION_ALIASES = {"bf16": ("bf16", "bfloat16"), "fp32": ("fp32", "float32")}


class Unsupported(Exception):
    """The engine does not support this option (reported as a skip, not a failure)."""


def stream_option_fields() -> set[str]:
    from flowcli.engine import StreamOptions
    return {f.name for f in dataclasses.fields(StreamOptions)}


def make_stream(model, iters: int, precision: str = "fp32", **options):
    """FlowStream(model, StreamOptions(iters, precision=...)); fp32 needs no precision field."""
    from flowcli.engine import FlowStream, StreamOptions
    if "precision" not in stream_option_fields():
        if precision != "fp32":
            raise Unsupported(f"StreamOptions has no 'precision' field: {precision} not supported by this engine")
        return FlowStream(model, StreamOptions(iters=iters, **options))
    errors = []
    for value in PRECISION_ALIASES.get(precision, (precision,)):
        try:
            return FlowStream(model, StreamOptions(iters=iters, precision=value, **options))
        except (ValueError, TypeError, NotImplementedError) as exc:
            errors.append(f"{value!r}: {exc}")
    raise Unsupported("engine refused precision " + "; ".join(errors))


def random_model(seed: int = 0, sharpen_memory: bool = False):
    """OFFICIAL MemFlowNet with random weights. ``sharpen_memory``: make the memory path matter as in the
    conformance checkpoints (gamma 0.7, to_qk x6, to_v x8) -- the official init has gamma = 0."""
    from flowcli.model import OFFICIAL, MemFlowNet
    torch.manual_seed(seed)
    model = MemFlowNet(OFFICIAL).eval()
    if sharpen_memory:
        with torch.no_grad():
            model.update_block.aggregator.gamma.fill_(0.7)
            model.att.to_qk.weight.mul_(6)
            model.update_block.aggregator.to_v.weight.mul_(8)
    return model


def make_impl(task: dict, model):
    if task["impl"] == "flowcli":
        return make_stream(model, task["iters"], task.get("precision", "fp32"), **task.get("options", {}))
    if task["impl"] == "official_like":
        from bench.official_like import OfficialLikeStream
        if task.get("precision", "fp32") != "fp32":
            raise Unsupported("the official-like baseline is float32 only")
        return OfficialLikeStream(model, task["iters"])
    raise ValueError(f"unknown impl {task['impl']!r}")


# -- tasks -------------------------------------------------------------------------------------------------
def task_speed(task: dict) -> dict:
    h, w = task["size"]
    n_timed, warmup = task["frames"], task.get("warmup", 1)
    frames = TextureFrames(h, w, task.get("seed", 0))
    if task.get("weights") == "shipped":  # this project's trained weights, at their own iterations
        from flowcli.weights import load_weights
        loaded = load_weights(None)
        model, task = loaded.model, {**task, "iters": task.get("iters") or loaded.iters}
    else:
        model = random_model(task.get("seed", 0))
    stream = make_impl(task, model)
    vm_before = proc_status()
    t0 = time.perf_counter()
    stream.push(frames[0])                      # first frame: no pair
    prime_s = time.perf_counter() - t0
    warm, times = [], []
    for i in range(1, 1 + warmup + n_timed):
        t0 = time.perf_counter()
        flow = stream.push(frames[i])
        (warm if i <= warmup else times).append(time.perf_counter() - t0)
    assert flow is not None and flow.shape == (h, w, 2) and np.isfinite(flow).all(), "bad flow"
    return {"times_s": times, "median_s": median(times), "warmup_s": warm, "prime_s": prime_s,
            "rss_before_run_gb": vm_before.get("VmRSS")}


def task_flat(task: dict) -> dict:
    h, w = task["size"]
    n, mark = task["frames"], task.get("mark", 10)
    frames = TextureFrames(h, w, task.get("seed", 0))
    stream = make_stream(random_model(task.get("seed", 0)), task["iters"], task.get("precision", "fp32"))
    rss, hwm = [], []
    for i in range(n):
        stream.push(frames[i])
        vm = proc_status()
        rss.append(vm.get("VmRSS")), hwm.append(vm.get("VmHWM"))
    m = min(mark, n) - 1
    return {"rss_gb": rss, "hwm_gb": hwm, "mark": m + 1, "rss_mark_gb": rss[m], "rss_end_gb": rss[-1],
            "hwm_mark_gb": hwm[m], "hwm_end_gb": hwm[-1]}


def task_equivalence(task: dict) -> dict:
    from bench.official_like import OfficialLikeStream
    h, w = task["size"]
    frames = TextureFrames(h, w, task.get("seed", 0))
    model = random_model(task.get("seed", 0), sharpen_memory=True)
    ref = OfficialLikeStream(copy.deepcopy(model), task["iters"])
    eng = make_stream(model, task["iters"], "fp32")
    diffs, mags = [], []
    for i in range(task["frames"]):
        a, b = eng.push(frames[i]), ref.push(frames[i])
        if a is not None:
            diffs.append(float(np.abs(a - b).max()))
            mags.append(float(np.abs(b).max()))
    return {"max_abs_diff": max(diffs), "per_pair": diffs, "max_abs_flow": max(mags)}


def _load_epe_weights(spec: dict):
    from flowcli.weights import default_name, load_weights
    name = default_name() if spec.get("prefer_default", True) else None
    if name is not None:
        lw = load_weights(None)
        return lw.model, f"shipped default {name}"
    lw = load_weights(spec["conformance"], preset="sintel")
    return lw.model, f"{Path(spec['conformance']).name} (preset sintel)"


def task_precision(task: dict) -> dict:
    from flowcli.sources import read_image_rgb
    precisions = task["precisions"]
    out = []
    for ds in task["datasets"]:
        try:
            model, weights = _load_epe_weights(ds)
        except Exception as exc:  # missing weights / shared data: report, keep going
            out.append({"name": ds["name"], "error": f"{type(exc).__name__}: {exc}"})
            continue
        images = [read_image_rgb(Path(p)) for p in ds["frames"]]
        flows, secs = {}, {}
        for prec in precisions:
            try:
                stream = make_stream(copy.deepcopy(model), task["iters"], prec, max_side=ds.get("max_side"))
            except Unsupported as exc:
                flows[prec], secs[prec] = None, str(exc)
                continue
            fl, ts = [], []
            for img in images:
                t0 = time.perf_counter()
                f = stream.push(img)
                if f is not None:
                    ts.append(time.perf_counter() - t0)
                    fl.append(f)
            flows[prec], secs[prec] = fl, median(ts)
        row = {"name": ds["name"], "weights": weights, "pairs": len(images) - 1, "size": list(images[0].shape[:2]),
               "max_side": ds.get("max_side"), "s_per_pair": secs, "diff": {}}
        ref = flows.get("fp32")
        for prec in precisions:
            if prec == "fp32" or ref is None or flows.get(prec) is None:
                continue
            d = [np.linalg.norm(a - b, axis=2) for a, b in zip(flows[prec], ref)]
            row["diff"][prec] = {"mean_epe": float(np.mean([x.mean() for x in d])),
                                 "max_epe": float(max(x.max() for x in d)),
                                 "mean_flow_mag": float(np.mean([np.linalg.norm(a, axis=2).mean() for a in ref]))}
        gt = ds.get("gt")  # {"pair": k, "flo": path}: EPE of each precision against ground truth
        if gt:
            from flowcli.evaluate import flow_metrics
            from flowcli.flowio import read_flo
            g = read_flo(gt["flo"])
            row["gt_epe"] = {p: flow_metrics(flows[p][gt["pair"]], g)["epe"] for p in precisions if flows.get(p)}
        out.append(row)
    return {"datasets": out}


def task_model_time(task: dict) -> dict:
    from flowcli.sources import open_source
    from flowcli.weights import load_weights
    with open_source(task["video"]) as src:
        images = [f.image for f in src]
    lw = load_weights(task["weights"], preset=task.get("preset"))
    stream = make_stream(lw.model, task["iters"], task.get("precision", "fp32"))
    times = []
    for img in images:
        t0 = time.perf_counter()
        stream.push(img)
        times.append(time.perf_counter() - t0)
    return {"frames": len(images), "model_s": sum(times), "prime_s": times[0], "pair_times_s": times[1:]}


def task_predict(task: dict) -> dict:
    """MemFlow-P prediction loop (past flows given, as official use_gt): s/frame after warm-up
    (``"tta": true``: with the mirrored-view averaging of ``predict-next --tta``; ``"impl":
    "official_like"``: the official loop of bench/official_like.py)."""
    from flowcli.engine import StreamOptions
    from flowcli.model import InputPadder, MemFlowNet, get_preset
    from flowcli.predict import PredictStream
    h, w = task["size"]
    frames = TextureFrames(h, w, task.get("seed", 0))
    torch.manual_seed(task.get("seed", 0))
    model = MemFlowNet(get_preset("sintel", "predict").config).eval()
    if task.get("impl", "flowcli") == "official_like":
        from bench.official_like import OfficialLikePredictStream
        if task.get("precision", "fp32") != "fp32" or task.get("tta"):
            raise Unsupported("the official-like prediction loop is float32, without --tta")
        stream = OfficialLikePredictStream(model)
    else:
        stream = PredictStream(model, StreamOptions(iters=1, precision=task.get("precision", "fp32"),
                                                    tta=task.get("tta", False)))
    hp, wp = InputPadder(h, w).padded_size
    low = torch.zeros(1, 2, hp // 8, wp // 8)
    low[:, 0], low[:, 1] = 0.25, 0.125  # the texture moves (+2, +1) px per frame
    n_timed, warmup = task["frames"], task.get("warmup", 1)
    times = []
    for i in range(1 + warmup + n_timed):
        t0 = time.perf_counter()
        stream.push(frames[i], past_flow_low=low if i else None)
        if i > warmup:
            times.append(time.perf_counter() - t0)
    return {"times_s": times, "median_s": median(times)}


def task_flops(task: dict) -> dict:
    """GFLOP of one estimation pair (OFFICIAL, ``iters``) and one MemFlow-P step at ``size``, counted
    by torch's FlopCounterMode on the plain (unfused) ops -- the same arithmetic as the fast path."""
    from flowcli.engine import StreamOptions
    from flowcli.model import InputPadder, MemFlowNet, fused, get_preset
    from flowcli.predict import PredictStream
    h, w = task["size"]
    frames = TextureFrames(h, w, 0)
    hp, wp = InputPadder(h, w).padded_size
    past_low = torch.full((1, 2, hp // 8, wp // 8), 0.25)
    with fused.plain_ops():
        estimate = make_stream(random_model(0), task["iters"])
        predict = PredictStream(MemFlowNet(get_preset("sintel", "predict").config).eval(), StreamOptions(iters=1))
        return {"estimate_gflop": _third_push_gflop(lambda i: estimate.push(frames[i])),
                "predict_gflop": _third_push_gflop(
                    lambda i: predict.push(frames[i], past_flow_low=past_low if i else None))}


def _third_push_gflop(push) -> float:
    """GFLOP of ``push(2)`` after ``push(0)`` and ``push(1)`` (the memory then holds a past pair)."""
    from torch.utils.flop_counter import FlopCounterMode
    push(0)
    push(1)
    with FlopCounterMode(display=False) as count:
        push(2)
    return count.get_total_flops() / 1e9


def task_gemm_peak(task: dict) -> dict:
    """This machine's float32 matrix-multiply rate (GFLOP/s): 2048^3 torch.mm, median of 15."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return {"gemm_gflops": 2 * n ** 3 / median(times) / 1e9, "size": n}


TASKS = {"speed": task_speed, "predict": task_predict, "flat": task_flat, "equivalence": task_equivalence,
         "precision": task_precision, "model_time": task_model_time, "flops": task_flops,
         "gemm_peak": task_gemm_peak}


def main(argv: list[str]) -> int:
    task, result_path = json.loads(argv[0]), Path(argv[1])
    torch.set_num_threads(int(task.get("threads", 2)))
    try:
        result = TASKS[task["kind"]](task)
    except Unsupported as exc:
        result = {"unsupported": str(exc)}
    result.update(task=task, peak_rss_gb=peak_rss_gb(), vm=proc_status(), torch_threads=torch.get_num_threads())
    result_path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
