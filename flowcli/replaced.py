"""Outputs of an earlier run that an ``--overwrite`` run did not replace.

``--overwrite`` rewrites every output of the new run, but an earlier run over a
longer range (or another step, or more formats) also left files the new run does
not write: ``000080.flo`` from yesterday's full video next to today's
``--end 50`` outputs, made with other weights. So an ``--overwrite`` run removes
them, and only once it has finished: an interrupted run loses nothing.

The earlier run is known from its resume state (see ``flowcli.pipeline``): its
``start`` and ``step`` (in the fingerprint) and the last index it reached. Only
files that run could have written are candidates: the output names of its
indices, in any format. The ranges travel in the new run's state
(``replaces``), so an interrupted ``--overwrite`` run that is resumed later
still does the clean-up.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

Range = tuple[int, int, int]  # (start, step, last index reached)


def replaced_ranges(meta: dict | None) -> list[Range]:
    """The index ranges of the run whose state metadata is ``meta`` and of the runs it replaced."""
    if not meta:
        return []
    ranges = carried_ranges(meta)
    try:
        fingerprint = json.loads(meta["fingerprint"])
        ranges.append((int(fingerprint["start"]), int(fingerprint["step"]), int(meta["last_index"])))
    except (KeyError, TypeError, ValueError):
        pass
    return ranges


def carried_ranges(meta: dict | None) -> list[Range]:
    """The ranges a state file carries under ``replaces`` (still to be cleaned up)."""
    try:
        return [tuple(int(v) for v in r) for r in json.loads((meta or {}).get("replaces", "[]"))]
    except (TypeError, ValueError):
        return []


def ranges_metadata(ranges: list[Range]) -> dict[str, str]:
    """State metadata that carries ``ranges`` (empty when there are none)."""
    return {"replaces": json.dumps([list(r) for r in ranges])} if ranges else {}


def in_range(index: int, start: int, step: int, last: int | None) -> bool:
    """``index`` is one of start, start + step, ..., last."""
    return last is not None and start <= index <= last and (index - start) % step == 0


def remove_replaced(ranges: list[Range], candidates: Callable[[int], Iterable[Path]],
                    kept: Callable[[int], Iterable[Path]], extra: Iterable[Path] = ()) -> int:
    """Delete, for every index of ``ranges``, the existing ``candidates(index)`` that are not in
    ``kept(index)`` (this run's outputs), plus the existing ``extra`` paths. Returns how many."""
    removed = 0
    for start, step, last in ranges:
        if step < 1:
            continue
        for index in range(start, last + 1, step):
            keep = set(kept(index))
            for path in candidates(index):
                if path not in keep and path.is_file():
                    path.unlink()
                    removed += 1
    for path in extra:
        if path.is_file():
            path.unlink()
            removed += 1
    return removed
