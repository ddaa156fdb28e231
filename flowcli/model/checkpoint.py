"""Safe checkpoint loading.

* ``.pth``/``.pt``: ``torch.load(..., weights_only=True)`` only. A pickle that
  would run code (or build arbitrary objects) is refused, never executed.
* ``.safetensors``: this project's own weights (no code path at all).
* Accepts a plain state_dict, a ``{'model': state_dict, ...}`` wrapper and DDP
  ``module.`` prefixes, as the official training scripts save them.
* Mismatches are reported with the offending keys listed.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``path`` without executing code; unwrap and strip prefixes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors and loading it could run code "
            f"({first})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state_dict (expected a mapping of names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model``; list missing, unexpected and mis-shaped keys on failure."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                        for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(f"{source}: does not fit this model ({'; '.join(problems)}); "
                              "check --preset / the architecture")
    model.load_state_dict(state, strict=True)
