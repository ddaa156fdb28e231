"""Which videos a batch is about: inputs, folders, globs and manifests found, and named.

Kept apart from the rest so that listing and naming videos needs nothing else of
the batch (and no torch); the naming rules are in the :mod:`flowcli.batch` docstring.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv", ".y4m")
MAX_NAME = 100          # bytes of UTF-8: file systems limit a name to 255 bytes, not characters

_UNSAFE = re.compile(r"[^\w\-]+", re.UNICODE)


@dataclass(frozen=True)
class VideoItem:
    """One unit of work: a video file or an image-sequence folder."""

    path: str                 # absolute
    rel: str                  # what the name is made from (posix separators)
    is_dir: bool = False
    name: str = ""            # output folder under OUTROOT (assign_names)
    error: str | None = None  # e.g. a manifest entry that does not exist: recorded as failed


def _is_sequence(folder: Path) -> bool:
    """``folder`` directly holds at least 2 images (one image has no flow) and no videos."""
    from ..sources import IMAGE_EXTENSIONS
    images = 0
    try:
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in VIDEO_EXTENSIONS:
                return False
            images += suffix in IMAGE_EXTENSIONS
    except OSError:
        return False
    return images >= 2


def _inside(path: str, root: str | None) -> bool:
    return root is not None and (path == root or path.startswith(root.rstrip(os.sep) + os.sep))


def _given_rel(spec: str, path: str) -> str:
    """The path as the user wrote it if it is relative and stays below, else its last component."""
    p = Path(spec)
    if not p.is_absolute() and ".." not in p.parts and p.parts and str(p) != ".":
        return p.as_posix()
    return Path(path).name


def _walk(root: Path, exclude: str | None) -> list[tuple[str, bool]]:
    """Videos and image-sequence folders below ``root`` (recursively; not ``root`` itself): [(abs path, is_dir)].

    A folder with 2+ images and no videos is one image sequence; its subfolders are
    searched too, so a stray image never hides videos. Hidden files and folders,
    and ``exclude`` (OUTROOT), are skipped.
    """
    from ..cli import natural_key
    found: list[tuple[str, bool]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirpath_abs = os.path.abspath(dirpath)
        if _inside(dirpath_abs, exclude):
            dirnames[:] = []
            continue
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        videos = sorted((f for f in filenames if not f.startswith(".")
                         and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS), key=natural_key)
        if not videos and dirpath_abs != os.path.abspath(root) and _is_sequence(Path(dirpath)):
            found.append((dirpath_abs, True))
        found.extend((os.path.join(dirpath_abs, f), False) for f in videos)
    return found


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if glob.has_magic(part):
            break
        keep.append(part)
    return str(Path(*keep)) if keep else "."


def _expand(spec: str, shown: str, exclude: str | None, from_manifest: bool) -> list[VideoItem]:
    """``spec``: a path to open; ``shown``: as written (names come from it)."""
    from ..cli import natural_key
    path = Path(spec)
    if path.is_dir():
        absdir = os.path.abspath(spec)
        items = [VideoItem(absdir, _given_rel(shown, absdir), True)] if _is_sequence(path) else []
        items += [VideoItem(p, Path(os.path.relpath(p, absdir)).as_posix(), d) for p, d in _walk(path, exclude)]
        if not items:
            raise InputError(f"{shown}: no videos ({', '.join(VIDEO_EXTENSIONS[:5])}, ...) or folders of 2+ "
                             "images found in this folder")
        return items
    if path.exists():
        absfile = os.path.abspath(spec)
        return [VideoItem(absfile, _given_rel(shown, absfile), False)]
    if glob.has_magic(spec):
        base = os.path.abspath(_glob_base(spec))
        items = []
        for match in sorted(glob.glob(spec, recursive=True), key=natural_key):
            m = os.path.abspath(match)
            if _inside(m, exclude) or Path(m).name.startswith("."):
                continue
            if os.path.isdir(m):
                if _is_sequence(Path(m)):
                    items.append(VideoItem(m, Path(os.path.relpath(m, base)).as_posix(), True))
            elif os.path.splitext(m)[1].lower() in VIDEO_EXTENSIONS:
                items.append(VideoItem(m, Path(os.path.relpath(m, base)).as_posix(), False))
        if not items:
            raise InputError(f"{shown}: no videos or image folders match this pattern")
        return items
    if from_manifest:
        absmiss = os.path.abspath(spec)
        return [VideoItem(absmiss, _given_rel(shown, absmiss), False, error=f"{shown}: no such file or folder")]
    raise InputError(f"{shown}: no such file or folder")


def read_manifest(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Lines of a manifest: [(path to open, path as written)]; blank lines and ``#`` lines are skipped.

    Relative paths are relative to the manifest's own folder.
    """
    mpath = Path(path)
    try:
        text = mpath.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: manifest is not UTF-8 text") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(os.path.expanduser(line))
        out.append((str(p if p.is_absolute() else mpath.parent / p), line))
    return out


def discover(inputs: Sequence[str] = (), manifest: str | os.PathLike | None = None,
             exclude: str | os.PathLike | None = None) -> list[VideoItem]:
    """The videos named by ``inputs`` (files, folders, globs) and ``manifest``, each once, in order.

    Folders are searched recursively for video files; a folder holding 2+ images
    and no videos is also one image sequence. ``exclude`` (the output root) is never
    searched. A command-line input that does not exist is an InputError; a manifest
    line that does not exist becomes an item with ``error`` set (recorded as failed).
    """
    excl = os.path.abspath(exclude) if exclude is not None else None
    items: list[VideoItem] = []
    for spec in inputs:
        items.extend(_expand(str(spec), str(spec), excl, from_manifest=False))
    if manifest is not None:
        for spec, shown in read_manifest(manifest):
            try:
                items.extend(_expand(spec, shown, excl, from_manifest=True))
            except InputError as exc:
                items.append(VideoItem(os.path.abspath(spec), _given_rel(shown, spec), True, error=str(exc)))
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.path not in seen:
            seen.add(it.path)
            unique.append(it)
    return unique


def stable_name(rel: str, is_dir: bool = False) -> str:
    """Folder name for a relative path: extension dropped, separators -> ``__``, unsafe chars -> ``_``."""
    p = Path(rel.replace("\\", "/"))
    parts = [x for x in p.parts if x not in ("", ".", "/")]
    if parts and not is_dir:
        parts[-1] = os.path.splitext(parts[-1])[0] or parts[-1]
    name = "__".join(_UNSAFE.sub("_", x).strip("_") or "_" for x in parts) or "video"
    if len(name.encode()) > MAX_NAME:
        name = _hashed(name, name)
    return name


def _hashed(name: str, key: str) -> str:
    """``name`` cut to fit MAX_NAME bytes (never inside a character), ``-``, 8 hex digits of sha1(key).

    ``key`` may be a path holding undecodable bytes (surrogates): they are hashed as the bytes they were.
    """
    head = name.encode()[:MAX_NAME - 9].decode("utf-8", "ignore")
    return f"{head}-{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def assign_names(items: Sequence[VideoItem], known: dict[str, str] | None = None) -> list[VideoItem]:
    """Give every item its output folder name (see the :mod:`flowcli.batch` docstring).

    ``known``: absolute video path -> name already used in OUTROOT (from the ledgers);
    those names are kept and reserved.
    """
    known = known or {}
    taken = {n.casefold(): p for p, n in known.items()}
    names: dict[str, str] = {}
    groups: dict[str, list[VideoItem]] = {}
    for it in items:
        if it.path in known:
            names[it.path] = known[it.path]
        else:
            groups.setdefault(stable_name(it.rel, it.is_dir).casefold(), []).append(it)
    used = {n.casefold() for n in names.values()}
    for key, group in groups.items():
        base = stable_name(group[0].rel, group[0].is_dir)
        if len(group) == 1 and key not in taken and key not in used:
            names[group[0].path] = base
        else:
            for it in group:
                names[it.path] = _hashed(stable_name(it.rel, it.is_dir), it.path)
        used.update(names[it.path].casefold() for it in group)
    return [replace(it, name=names[it.path]) for it in items]
