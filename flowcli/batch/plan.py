"""Planning a batch: which of the named videos run, are skipped (done / failed) or need a ledger repair.

Apart from the runner because it needs no model: only the disk, the ledgers and
the settings key (``VideoRunner.key``).
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .discovery import VideoItem, assign_names, discover
from .ledger import _latest, _now, frames_of, read_ledger, shard_of

REPORT_FILE = "flowcli.json"          # = flowcli.pipeline.REPORT_FILE (not imported: that pulls in torch)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class BatchPlan:
    items: list[VideoItem]                  # this shard's videos, named
    actions: dict[str, str]                 # path -> run | retry | skip-done | skip-failed
    previous: dict[str, dict]               # path -> latest ledger record
    repairs: list[dict] = field(default_factory=list)  # done videos missing a ledger line

    def todo(self) -> list[VideoItem]:
        return [it for it in self.items if self.actions[it.path] in ("run", "retry")]

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions.values() if a == action)


def _complete(out_root: Path, item: VideoItem, key: str | None) -> dict | None:
    rep = _read_json(out_root / item.name / REPORT_FILE)
    if not rep:
        return None
    b = rep.get("batch") or {}
    if b.get("video") != item.path or (key is not None and b.get("settings") != key):
        return None
    return rep


def _counts(rep: dict) -> tuple[int, int]:
    """(pairs, frames) from a complete video's report, counted as :meth:`VideoRunner.run` counts them.

    An estimate report has no ``frames``, a predict-next report no ``pairs`` (it has ``predictions``).
    """
    if rep.get("command") == "predict-next":
        return int(rep.get("predictions") or 0), int(rep.get("frames") or 0)
    pairs = int(rep.get("pairs") or 0)
    return pairs, frames_of(pairs)


def plan_batch(inputs: Sequence[str], out_root: str | os.PathLike, *, manifest=None,
               shard: tuple[int, int] | None = None, retry_failed: bool = False, overwrite: bool = False,
               key: str | None = None) -> BatchPlan:
    """Find, name and shard the videos; decide for each whether it runs (``key``: settings hash)."""
    out_root = Path(out_root)
    items = discover(inputs, manifest, exclude=out_root)
    records = read_ledger(out_root) if out_root.is_dir() else []
    known: dict[str, str] = {}
    for rec in records:
        if rec.get("output"):
            known.setdefault(rec["video"], rec["output"])
    items = assign_names(items, known)
    if shard is not None:
        items = [it for it in items if shard_of(it.name, shard[1]) == shard[0]]
    previous = _latest(records)
    actions: dict[str, str] = {}
    repairs = []
    for it in items:
        last = previous.get(it.path)
        if overwrite:
            actions[it.path] = "run"
            continue
        rep = _complete(out_root, it, key)
        if rep is not None:
            actions[it.path] = "skip-done"
            if not last or last.get("status") != "done" or (key is not None and last.get("settings") != key):
                pairs, frames = _counts(rep)
                repairs.append({"video": it.path, "output": it.name, "status": "done",
                                "pairs": pairs, "frames": frames,
                                "seconds": rep.get("seconds", 0.0), "error": None, "time": _now(),
                                "mode": (rep.get("command") or ""), "settings": key,
                                "host": socket.gethostname(), "note": "found complete on disk"})
        elif last is not None and last.get("status") == "failed":
            actions[it.path] = "retry" if retry_failed else "skip-failed"
        else:
            actions[it.path] = "run"
    return BatchPlan(items, actions, previous, repairs)
