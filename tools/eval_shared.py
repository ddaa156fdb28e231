"""Accuracy table of weights on ../shared/data next to OpenCV baselines (for the model card).

    .venv/bin/python tools/eval_shared.py [--weights NAME|PATH] [--iters N] [--[no-]coarse-to-fine] [--[no-]refine]
        [--json F]

Prints markdown tables: mean EPE over pairs per dataset (all pixels; KITTI: noc
EPE and Fl-noc), for the weights and for DIS-medium and Farneback, plus s/pair;
per Sintel scene; and per GT speed band (Sintel's s0-10 / s10-40 / s40+).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from flowcli.evaluate import SPEED_BANDS, evaluate
from flowcli.jsonutil import nan_to_none
from flowcli.weights import load_weights

SETS = [("sintel", "sintel"), ("kitti2012", "kitti"), ("middlebury", "middlebury"),
        ("flyingchairs", "chairs")]


def summarise(report, layout):
    s = report.summary()
    region = "noc" if layout == "kitti" else "all"
    m = s[region] if region in s else s
    out = {"epe": m["epe"], "fl": m.get("fl_all"), "sec": s.get("seconds_per_pair"),
           "bands": {band: m[band] for band in SPEED_BANDS}}  # mean over the pairs with such pixels
    if layout == "sintel":  # per scene: the acceptance targets are per scene
        scenes: dict[str, list[float]] = {}
        for row in report.rows:
            scenes.setdefault(row.sequence, []).append(row.metrics["all"]["epe"])
        out["scenes"] = {k: sum(v) / len(v) for k, v in scenes.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--weights")
    ap.add_argument("--iters", type=int)
    ap.add_argument("--json")
    ap.add_argument("--coarse-to-fine", dest="coarse", action=argparse.BooleanOptionalAction,
                    help="coarse-to-fine start on/off (default: the weights' own)")
    ap.add_argument("--refine", dest="refine", action=argparse.BooleanOptionalAction,
                    help="variational refinement on/off (default: the weights' own)")
    a = ap.parse_args()
    loaded = load_weights(a.weights)
    rows = {}
    for folder, layout in SETS:
        root = Path(a.root) / folder
        rows[layout] = {name: summarise(evaluate(subject, root, layout, iters=a.iters if name == "flowcli" else None,
                                                 coarse=a.coarse if name == "flowcli" else None,
                                                 refine=a.refine if name == "flowcli" else None),
                                        layout)
                        for name, subject in (("flowcli", loaded), ("dis", "dis"), ("farneback", "farneback"))}
        print(layout, json.dumps(rows[layout]), flush=True)
    used = loaded.inference_settings(a.iters, a.coarse, a.refine)
    c2f = (", coarse-to-fine" if used["coarse"] else "") + (", refined" if used["refine"] else "")
    print(f"\n| dataset | {loaded.name} (iters {used['iters']}{c2f}) | DIS-medium | Farneback |")
    print("|---|---|---|---|")
    for layout, r in rows.items():
        def cell(x):
            fl = f" / Fl {100 * x['fl']:.1f}%" if layout == "kitti" and x["fl"] is not None else ""
            return f"{x['epe']:.2f}{fl}"
        print(f"| {layout} | {cell(r['flowcli'])} | {cell(r['dis'])} | {cell(r['farneback'])} |")
    scenes = rows["sintel"]["flowcli"]["scenes"]
    print("\n| Sintel scene | " + " | ".join(n for n in rows["sintel"]) + " |")
    print("|---|---|---|---|")
    for scene in scenes:
        print(f"| {scene} | " + " | ".join(f"{rows['sintel'][n]['scenes'][scene]:.2f}" for n in rows["sintel"]) + " |")
    print("\n| dataset | speed band | " + " | ".join(n for n in rows["sintel"]) + " |")
    print("|---|---|---|---|---|")
    for layout, r in rows.items():
        for band in SPEED_BANDS:
            cells = [r[n]["bands"][band] for n in r]
            if all(c != c for c in cells):  # NaN: the dataset has no pixel this fast
                continue
            print(f"| {layout} | {band.replace('_', '-')} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(nan_to_none(rows), indent=2))


if __name__ == "__main__":
    main()
