"""Outputs of an earlier run that an ``--overwrite`` run did not replace.

``--overwrite`` rewrites every output of the new run, but an earlier run over a
longer range (or another step, or more formats) also left files the new run does
not write: ``000080.flo`` from yesterday's full video next to today's
``--end 50`` outputs, made with other weights. So an ``--overwrite`` run removes
them, and only once it has finished: an interrupted run loses nothing.

Every run records in its resume state (see ``flowcli.pipeline``) what it writes:
its ``start`` and ``step`` (in the fingerprint), the last index it reached, and
its output names (:class:`RunOutputs`). Only those files are candidates, so a
file the earlier run did not write (an input frame, a ``flowcli viz`` PNG) is
never removed, and nothing inside the input folder is. A state from a flowcli
version that did not record its names is not cleaned up at all. The replaced
runs travel in the new run's state (``replaces``): until the clean-up is done,
the new run trusts no existing file it has not itself written (it rewrites them),
and an interrupted ``--overwrite`` run that is resumed later still cleans up.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunOutputs:
    """The files a run wrote: ``names`` (relative to the output folder, ``{i:06d}`` for the index)
    for indices start, start + step, ..., last; ``video``: also ``flow.mp4``."""

    start: int
    step: int
    last: int
    names: tuple[str, ...]
    video: bool = False

    def indices(self) -> range:
        return range(self.start, self.last + 1, self.step) if self.step >= 1 else range(0)

    @classmethod
    def from_dict(cls, d: dict) -> RunOutputs:
        return cls(int(d["start"]), int(d["step"]), int(d["last"]), tuple(str(n) for n in d["names"]),
                   bool(d.get("video", False)))


def outputs_metadata(names: Iterable[str], video: bool) -> dict[str, str]:
    """State metadata recording what this run writes (read back by :func:`replaced_runs`)."""
    return {"outputs": json.dumps({"names": list(names), "video": video})}


def replaced_runs(meta: dict | None) -> list[RunOutputs]:
    """The run whose state metadata is ``meta``, and the runs it still had to clean up."""
    if not meta:
        return []
    runs = carried_runs(meta)
    try:
        fingerprint, outputs = json.loads(meta["fingerprint"]), json.loads(meta["outputs"])
        runs.append(RunOutputs(int(fingerprint["start"]), int(fingerprint["step"]), int(meta["last_index"]),
                               tuple(outputs["names"]), bool(outputs.get("video", False))))
    except (KeyError, TypeError, ValueError):
        pass  # no record of its outputs (an older flowcli): nothing is known to be its
    return runs


def carried_runs(meta: dict | None) -> list[RunOutputs]:
    """The replaced runs a state file carries under ``replaces`` (still to be cleaned up)."""
    try:
        return [RunOutputs.from_dict(d) for d in json.loads((meta or {}).get("replaces", "[]"))]
    except (KeyError, TypeError, ValueError):
        return []


def replaces_metadata(runs: list[RunOutputs]) -> dict[str, str]:
    """State metadata that carries ``runs`` (empty when there are none)."""
    return {"replaces": json.dumps([asdict(r) for r in runs])} if runs else {}


def in_range(index: int, start: int, step: int, last: int | None) -> bool:
    """``index`` is one of start, start + step, ..., last."""
    return last is not None and start <= index <= last and (index - start) % step == 0


def remove_replaced(runs: list[RunOutputs], out_dir: Path, kept: Callable[[int], Iterable[Path]],
                    keeps_video: bool, inputs: Iterable[str | Path | None] = ()) -> int:
    """Delete the existing files of ``runs`` that this run did not write (``kept(index)``; its
    ``flow.mp4`` if ``keeps_video``), never anything inside what the run reads (``inputs``: the
    input video or folder, the --prior-flows folder). Returns how many."""
    from .pipeline import VIDEO_FILE
    protected = [Path(p).resolve() for p in inputs if p not in (None, "", "-", "<stdin>")]
    removed = 0

    def remove(path: Path) -> None:
        nonlocal removed
        where = path.resolve()
        if any(where == p or p in where.parents for p in protected):
            return
        if path.is_file():
            path.unlink()
            removed += 1

    for run in runs:
        for index in run.indices():
            keep = set(kept(index))
            for name in run.names:
                path = out_dir / name.format(i=index)
                if path not in keep:
                    remove(path)
        if run.video and not keeps_video:
            remove(out_dir / VIDEO_FILE)
    return removed
