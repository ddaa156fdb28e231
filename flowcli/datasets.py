"""Evaluation dataset layouts: Sintel, KITTI, Middlebury, FlyingChairs.

:func:`find_sequences` turns a dataset root into :class:`EvalSequence` objects:
lists of consecutive frames that are evaluated in order (so MemFlow's memory is
carried across a scene), each with the pairs that have ground truth. Only paths
are collected here; nothing is decoded, so finding even a large dataset costs
one directory walk and no image memory.

Layouts (``root`` may be the dataset folder or, for Sintel and KITTI, its
``training`` folder):

* ``sintel``: ``training/{clean,final}/<scene>/frame_NNNN.png``, GT
  ``training/flow/<scene>/frame_NNNN.flo`` (NNNN -> NNNN+1), masks
  ``training/occlusions/...png`` and ``training/invalid/...png`` (255 = set).
  One sequence per (pass, scene).
* ``kitti``: ``training/colored_0/NNNNNN_10.png, _11.png`` (KITTI 2012 colour;
  else ``image_2`` (KITTI 2015), else ``image_0`` (2012 grey)), GT
  ``training/flow_occ/NNNNNN_10.png`` and/or ``training/flow_noc/...``. One
  2-frame sequence per pair. ``flow_path`` is ``flow_occ`` when present (all
  pixels), else ``flow_noc``; ``noc_flow_path`` is ``flow_noc`` when present.
* ``middlebury``: ``other-data/<seq>/frameNN.png`` (all NN in order),
  GT ``other-gt-flow/<seq>/flowNN.flo`` for frameNN -> frameNN+1. Sequences
  without GT are skipped.
* ``chairs``: ``*-img0.ppm, *-img1.ppm, *-gt.flo`` (flownet2 examples) or
  ``NNNNN_img1.ppm, NNNNN_img2.ppm, NNNNN_flow.flo`` (official release), found
  recursively.

Frame numbers with a gap (e.g. 1, 2, 4) split a scene into separate sequences,
because the flow (and the memory) between non-consecutive frames is not what
the GT describes; later parts are named ``<name>@<first frame number>``.
Sequences without any GT pair are dropped. A root that does not look like the
layout raises :class:`~flowcli.errors.InputError` saying what was expected where.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["LAYOUTS", "EvalPair", "EvalSequence", "find_sequences"]

LAYOUTS = ("sintel", "kitti", "middlebury", "chairs")


@dataclass
class EvalPair:
    """Ground truth for the pair ``frame_paths[index] -> frame_paths[index + 1]``."""

    index: int
    flow_path: Path
    occ_path: Path | None = None       # occlusion mask, 255 = occluded (Sintel)
    invalid_path: Path | None = None   # invalid mask, 255 = invalid (Sintel)
    noc_flow_path: Path | None = None  # GT restricted to non-occluded pixels (KITTI flow_noc)


@dataclass
class EvalSequence:
    name: str                                   # e.g. "sintel/final/alley_1", "kitti/000045"
    frame_paths: list[Path]                     # consecutive frames, in order
    pairs: list[EvalPair] = field(default_factory=list)  # only the pairs with GT, by index


def find_sequences(root: str | os.PathLike, layout: str) -> list[EvalSequence]:
    """All sequences with at least one GT pair under ``root`` for ``layout``."""
    finder = _FINDERS.get(layout)
    if finder is None:
        raise InputError(f"unknown dataset layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset folder")
    return finder(root)


# ------------------------------------------------------------------ helpers

_NUM = re.compile(r"(\d+)")


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name)
    except OSError:
        return []


def _numbered(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    """{number: path} for the files of ``folder`` whose name fully matches ``pattern`` (group 1 = number)."""
    out: dict[int, Path] = {}
    try:
        entries = list(folder.iterdir())
    except OSError:
        return out
    for p in entries:
        m = pattern.fullmatch(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return out


def _maybe(path: Path) -> Path | None:
    return path if path.is_file() else None


def _runs(numbers: list[int]) -> list[list[int]]:
    """Split sorted frame numbers into runs of consecutive numbers."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def _sequences_from_numbered(name: str, frames: dict[int, Path], gt: dict[int, EvalPair]) -> list[EvalSequence]:
    """Build sequences from numbered frames and GT keyed by the first frame's number.

    ``gt`` values carry a placeholder index; it is replaced by the position in the run.
    """
    out = []
    runs = _runs(sorted(frames))
    for k, run in enumerate(runs):
        pairs = []
        for i, n in enumerate(run[:-1]):
            if n in gt:
                p = gt[n]
                pairs.append(EvalPair(i, p.flow_path, p.occ_path, p.invalid_path, p.noc_flow_path))
        if pairs:
            seq_name = name if k == 0 or len(runs) == 1 else f"{name}@{run[0]}"
            out.append(EvalSequence(seq_name, [frames[n] for n in run], pairs))
    return out


def _training(root: Path, marker_dirs: tuple[str, ...]) -> Path:
    """``root/training`` if it exists and holds one of ``marker_dirs``, else ``root`` itself."""
    t = root / "training"
    if t.is_dir() and any((t / d).is_dir() for d in marker_dirs):
        return t
    return root


# ------------------------------------------------------------------ Sintel

_SINTEL_FRAME = re.compile(r"frame_(\d+)\.png", re.IGNORECASE)
_SINTEL_FLO = re.compile(r"frame_(\d+)\.flo", re.IGNORECASE)
SINTEL_PASSES = ("clean", "final")


def _find_sintel(root: Path) -> list[EvalSequence]:
    base = _training(root, SINTEL_PASSES)
    passes = [p for p in SINTEL_PASSES if (base / p).is_dir()]
    expected = (f"expected {root}/training/{{clean,final}}/<scene>/frame_NNNN.png "
                f"and {root}/training/flow/<scene>/frame_NNNN.flo")
    if not passes:
        raise InputError(f"{root}: not a Sintel dataset root ({expected})")
    if not (base / "flow").is_dir():
        raise InputError(f"{root}: Sintel ground truth folder {base / 'flow'} is missing ({expected})")
    out: list[EvalSequence] = []
    for pas in passes:
        for scene_dir in _subdirs(base / pas):
            scene = scene_dir.name
            frames = _numbered(scene_dir, _SINTEL_FRAME)
            gt = {}
            for n, flo in _numbered(base / "flow" / scene, _SINTEL_FLO).items():
                stem = f"{flo.stem}.png"
                gt[n] = EvalPair(-1, flo,
                                 occ_path=_maybe(base / "occlusions" / scene / stem),
                                 invalid_path=_maybe(base / "invalid" / scene / stem))
            out.extend(_sequences_from_numbered(f"sintel/{pas}/{scene}", frames, gt))
    if not out:
        raise InputError(f"{root}: no Sintel frame pair with ground truth found ({expected})")
    return out


# ------------------------------------------------------------------ KITTI

KITTI_IMAGE_DIRS = ("colored_0", "image_2", "image_0")
KITTI_GT_DIRS = ("flow_occ", "flow_noc")
_KITTI_GT = re.compile(r"(\d+)_10\.png", re.IGNORECASE)


def _find_kitti(root: Path) -> list[EvalSequence]:
    base = _training(root, KITTI_IMAGE_DIRS + KITTI_GT_DIRS)
    expected = (f"expected {root}/training/colored_0 (or image_2)/NNNNNN_10.png, _11.png "
                f"and {root}/training/flow_noc (or flow_occ)/NNNNNN_10.png")
    image_dir = next((base / d for d in KITTI_IMAGE_DIRS if (base / d).is_dir()), None)
    gt_dirs = [base / d for d in KITTI_GT_DIRS if (base / d).is_dir()]
    if image_dir is None or not gt_dirs:
        raise InputError(f"{root}: not a KITTI dataset root ({expected})")
    ids: set[str] = set()
    for d in gt_dirs:
        ids.update(m.group(1) for p in d.iterdir() if (m := _KITTI_GT.fullmatch(p.name)))
    out = []
    for sid in sorted(ids):
        f0, f1 = image_dir / f"{sid}_10.png", image_dir / f"{sid}_11.png"
        if not (f0.is_file() and f1.is_file()):
            continue
        occ = _maybe(base / "flow_occ" / f"{sid}_10.png")
        noc = _maybe(base / "flow_noc" / f"{sid}_10.png")
        out.append(EvalSequence(f"kitti/{sid}", [f0, f1], [EvalPair(0, occ or noc, noc_flow_path=noc)]))
    if not out:
        raise InputError(f"{root}: no KITTI frame pair with ground truth found in {image_dir} ({expected})")
    return out


# ------------------------------------------------------------------ Middlebury

_MB_FRAME = re.compile(r"frame(\d+)\.png", re.IGNORECASE)
_MB_FLO = re.compile(r"flow(\d+)\.flo", re.IGNORECASE)


def _find_middlebury(root: Path) -> list[EvalSequence]:
    data, gtdir = root / "other-data", root / "other-gt-flow"
    expected = (f"expected {root}/other-data/<seq>/frame10.png, frame11.png "
                f"and {root}/other-gt-flow/<seq>/flow10.flo")
    if not data.is_dir() or not gtdir.is_dir():
        raise InputError(f"{root}: not a Middlebury dataset root ({expected})")
    out = []
    for seq_dir in _subdirs(data):
        frames = _numbered(seq_dir, _MB_FRAME)
        gt = {n: EvalPair(-1, flo) for n, flo in _numbered(gtdir / seq_dir.name, _MB_FLO).items()}
        out.extend(_sequences_from_numbered(f"middlebury/{seq_dir.name}", frames, gt))
    if not out:
        raise InputError(f"{root}: no Middlebury sequence with ground truth found ({expected})")
    return out


# ------------------------------------------------------------------ FlyingChairs

# (first image suffix, second image suffix, GT suffix)
_CHAIRS_NAMINGS = (("-img0.ppm", "-img1.ppm", "-gt.flo"), ("_img1.ppm", "_img2.ppm", "_flow.flo"))


def _find_chairs(root: Path) -> list[EvalSequence]:
    found: list[tuple[Path, Path, Path, Path]] = []  # (prefix path, img0, img1, gt)
    for s0, s1, sg in _CHAIRS_NAMINGS:
        for f0 in root.rglob(f"*{s0}"):
            prefix = str(f0)[: -len(s0)]
            f1, gt = Path(prefix + s1), Path(prefix + sg)
            if f0.is_file() and f1.is_file() and gt.is_file():
                found.append((Path(prefix), f0, f1, gt))
    if not found:
        raise InputError(f"{root}: no FlyingChairs pairs found (expected NNNNNNN-img0.ppm, -img1.ppm, -gt.flo "
                         f"or NNNNN_img1.ppm, _img2.ppm, _flow.flo anywhere under {root})")
    found.sort(key=lambda t: (t[0].name, str(t[0])))
    short = [t[0].name for t in found]
    unique = len(set(short)) == len(short)
    out = []
    for (prefix, f0, f1, gt), name in zip(found, short):
        if not unique:
            name = prefix.relative_to(root).as_posix()
        out.append(EvalSequence(f"chairs/{name}", [f0, f1], [EvalPair(0, gt)]))
    return out


_FINDERS = {"sintel": _find_sintel, "kitti": _find_kitti, "middlebury": _find_middlebury, "chairs": _find_chairs}
