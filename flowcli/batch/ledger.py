"""The books of a batch: shards, the ledger files (one per shard) and the run's summary.

Ledger records are what every backend reports and what a rerun reads back, so
their files, their one-line errors and the parent's counters live together here.
Nothing here imports torch.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from ..errors import FlowcliError

LEDGER = "ledger.jsonl"


class DiskFullError(FlowcliError):
    """The disk (or quota) is full: the batch stops; nothing partial is left, a rerun resumes."""


def _disk_full(exc: BaseException | None) -> OSError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _describe(exc: BaseException) -> str:
    """One line for the ledger."""
    if isinstance(exc, FlowcliError):
        msg = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        msg = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    else:
        detail = str(exc)
        msg = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if type(exc).__name__ == "UsageError" and hasattr(exc, "format_message"):
        msg = exc.format_message()
    return " ".join(msg.split()) or type(exc).__name__


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 0 <= K < N."""
    if value is None:
        return None
    if isinstance(value, tuple):
        k, n = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
        if not m:
            raise ValueError(f"expected K/N (e.g. 0/4), got {value!r}")
        k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard K/N needs N >= 1 and 0 <= K < N, got {k}/{n}")
    return k, n


def shard_of(name: str, n: int) -> int:
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) % n


def ledger_name(shard: tuple[int, int] | None) -> str:
    return LEDGER if shard is None else f"ledger.shard-{shard[0]}-of-{shard[1]}.jsonl"


def read_ledger(out_root: str | os.PathLike) -> list[dict]:
    """All records of all ledger files in ``out_root``, oldest first (unparseable lines are skipped)."""
    root = Path(out_root)
    records = []
    for path in sorted(root.glob("ledger*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash or a full disk
            if isinstance(rec, dict) and "video" in rec and "status" in rec:
                records.append((str(rec.get("time", "")), path.name, n, rec))
    records.sort(key=lambda r: r[:3])
    return [r[3] for r in records]


def _latest(records: Iterable[dict]) -> dict[str, dict]:
    last: dict[str, dict] = {}
    for rec in records:
        last[rec["video"]] = rec
    return last


class Ledger:
    """Append-only JSON lines; one complete line per write, fsync'd."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        data = (json.dumps(record, default=str) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # an earlier line was torn (crash, disk full): start afresh
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if _disk_full(exc):
                raise DiskFullError(f"disk full: cannot append to {self.path} ({exc.strerror})") from None
            raise


@dataclass
class BatchSummary:
    """What :func:`run_batch` did (``to_dict()`` is the ``--json`` summary)."""

    output: str
    mode: str
    shard: str | None
    backend: str                 # inline | processes | ray
    workers: int
    threads: int | None
    videos: int = 0              # videos in this shard
    ran: int = 0                 # videos started this run
    done: int = 0                # finished this run
    failed: int = 0              # failed this run
    skipped: int = 0             # already complete
    skipped_failed: int = 0      # failed earlier, not retried (retry with --retry-failed)
    pairs: int = 0               # pairs (estimate) or predictions (predict-next) of videos done this run
    frames: int = 0              # frames of videos done this run
    seconds: float = 0.0         # wall time of the run
    failures: list = field(default_factory=list)   # [{video, output, error}] failed this run or before
    ledger: str = ""
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(command="batch", ok=self.ok, frames_per_second=round(self.frames_per_second, 4))
        return d


class _Books:
    """The parent's bookkeeping: ledger lines, counters, progress bar."""

    def __init__(self, summary: BatchSummary, ledger: Ledger, bar, quiet: bool):
        self.summary, self.ledger, self.bar, self.quiet = summary, ledger, bar, quiet
        self.live_pairs = 0

    def message(self, text: str) -> None:
        if self.quiet:
            return
        line = f"flowcli: {text}"
        if self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def result(self, rec: dict) -> None:
        if rec["status"] == "abort":
            raise DiskFullError(f"{rec['error']}; video {rec['video']} was not finished (nothing partial is "
                                "left; free some space and rerun the same command to resume)")
        if rec["status"] == "interrupted":
            return
        self.ledger.append(rec)
        s = self.summary
        if rec["status"] == "done":
            s.done += 1
            s.pairs += int(rec.get("pairs") or 0)
            s.frames += int(rec.get("frames") or 0)
        else:
            s.failed += 1
            s.failures.append({"video": rec["video"], "output": rec["output"], "error": rec["error"]})
            self.message(f"failed: {rec['output']}: {rec['error']}")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(pairs=s.pairs, failed=s.failed, refresh=False)

    def pairs(self, n: int) -> None:
        if self.bar is not None and not getattr(self.bar, "disable", True):
            self.bar.set_postfix(pairs=self.summary.pairs + n, failed=self.summary.failed)


def frames_of(pairs: int) -> int:
    """Frames an estimate run read for ``pairs`` flow pairs (a run with no pair is recorded as 0 frames)."""
    return pairs + 1 if pairs else 0
