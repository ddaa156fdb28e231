"""Copy a training checkpoint into weights/ and record it in weights/manifest.json.

    .venv/bin/python tools/ship_weights.py runs/cpu-small/latest.safetensors flowcli-small \
        --description "..." [--kind estimate] [--default] [--iters N] [--coarse-to-fine | --no-coarse-to-fine]
        [--refine | --no-refine] [--tta | --no-tta]

The shipped file is the training checkpoint itself (weights + config + step
metadata, no optimizer state), so `flowcli train --resume weights/NAME.safetensors`
continues the same schedule on a fresh machine. ``--iters N`` records N as the
weights' default refinement iterations (the file is re-saved with that metadata;
the training script records its ``infer_iters``), for when an evaluation shows
that fewer iterations are as accurate. ``--coarse-to-fine`` likewise records
that the weights run with the coarse-to-fine start by default (flowcli.coarse),
and ``--refine`` with the variational refinement (flowcli.refine); ``--tta``, for
prediction weights, with the mirrored-view averaging (flowcli.predict).
"""
from __future__ import annotations

import argparse
import json
import shutil

from flowcli.model.checkpoint import sha256_file
from flowcli.weights import DEFAULT_FLAGS, meta_flag, model_from_safetensors, save_safetensors, weights_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("name")
    ap.add_argument("--description", default="")
    ap.add_argument("--kind", default="estimate", choices=["estimate", "predict"])
    ap.add_argument("--default", action="store_true")
    ap.add_argument("--iters", type=int, help="default refinement iterations to record (default: the file's)")
    ap.add_argument("--coarse-to-fine", dest="coarse", action=argparse.BooleanOptionalAction,
                    help="record whether the coarse-to-fine start is on by default (default: the file's)")
    ap.add_argument("--refine", dest="refine", action=argparse.BooleanOptionalAction,
                    help="record whether the variational refinement is on by default (default: the file's)")
    ap.add_argument("--tta", dest="tta", action=argparse.BooleanOptionalAction,
                    help="prediction weights: record whether mirrored-view averaging is on by default")
    a = ap.parse_args()
    if a.iters is not None and a.iters < 1:
        ap.error("--iters must be at least 1")
    if a.kind == "predict" and (a.coarse or a.refine):
        ap.error("--coarse-to-fine/--refine are estimator settings (predict-next takes them from its estimator)")
    if a.kind == "estimate" and a.tta:
        ap.error("--tta is a prediction setting (--kind predict)")
    model, meta = model_from_safetensors(a.src)  # validates the file
    dest_dir = weights_dir()
    dest = dest_dir / f"{a.name}.safetensors"
    changes = {}
    if a.iters is not None and a.iters != int(meta.get("iters", 12)):
        changes["iters"] = str(a.iters)
    for key, field in DEFAULT_FLAGS.items():
        wanted = getattr(a, field)
        if wanted is not None and wanted != meta_flag(meta, key):
            changes[key] = "true" if wanted else "false"
    if changes:
        meta.update(changes)
        extra = {k: v for k, v in meta.items() if k not in ("flowcli_config", "iters")}
        save_safetensors(dest, model, iters=int(meta.get("iters", 12)), extra=extra)
    else:
        shutil.copyfile(a.src, dest)
    path = dest_dir / "manifest.json"
    data = json.loads(path.read_text()) if path.is_file() else {"models": []}
    entries = [e for e in data["models"] if e["name"] != a.name]
    if a.default:
        for e in entries:
            if e.get("kind", "estimate") == a.kind:
                e["default"] = False
    entries.append({
        "name": a.name, "file": dest.name, "kind": a.kind, "default": a.default,
        "sha256": sha256_file(dest), "iters": int(meta.get("iters", 12)),
        **{key: meta_flag(meta, key) for key in DEFAULT_FLAGS},
        "train_step": int(meta.get("step", 0)), "train_seconds": float(meta.get("train_seconds", 0)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": json.loads(meta["flowcli_config"]), "description": a.description,
    })
    data["models"] = entries
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"shipped {dest} ({dest.stat().st_size / 2**20:.1f} MiB), step {meta.get('step')}")


if __name__ == "__main__":
    main()
