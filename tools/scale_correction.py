"""Scale MemFlow-P's learned correction: a copy of prediction weights whose output is
forward-warped past flow + ALPHA x (the network's correction).

    .venv/bin/python tools/scale_correction.py weights/flowcli-small-p.safetensors /tmp/p-a0.safetensors 0.0

MemFlow-P's low-resolution output is ``forward_warp(past flow) + delta``, then convex
upsampling; ``delta`` is the last convolution of ``update_block.flow_head``, so multiplying
that convolution's weight and bias by ALPHA gives exactly ``forward_warp + ALPHA * delta``
(the upsampling mask is computed separately and does not change). ALPHA = 0 keeps only the
forward warp and the learned upsampling. This is the measurement behind the model card's
"What the learned correction adds" (session 12); the shipped files are not scaled.
"""
from __future__ import annotations

import argparse

import torch

from flowcli.weights import model_from_safetensors, save_safetensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="prediction weights (.safetensors)")
    ap.add_argument("dst", help="where to write the scaled copy")
    ap.add_argument("alpha", type=float, help="scale of the correction (1: unchanged, 0: none)")
    args = ap.parse_args()
    model, meta = model_from_safetensors(args.src)
    if not model.cfg.predict:
        raise SystemExit(f"{args.src}: not prediction (MemFlow-P) weights")
    last = model.update_block.flow_head.ffn2[2]
    with torch.no_grad():
        last.weight.mul_(args.alpha)
        last.bias.mul_(args.alpha)
    extra = {k: v for k, v in meta.items() if k not in ("flowcli_config", "iters")}
    extra["correction_scale"] = str(args.alpha)
    save_safetensors(args.dst, model, iters=int(meta.get("iters", 1)), extra=extra)
    print(f"{args.dst}: correction x {args.alpha}")


if __name__ == "__main__":
    main()
