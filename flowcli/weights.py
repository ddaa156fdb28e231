"""Finding and loading weights: shipped ones, official ones, or a file path.

* Shipped weights live in ``weights/`` (safetensors + ``manifest.json``) and are
  this project's own, trained on CPU (see ``weights/MODEL_CARD.md``).
* Official MemFlow checkpoints are known by name (``MemFlowNet_sintel`` ...).
  They are downloaded only on request into a cache folder; the sha256 seen on
  first download is recorded (``CACHE/sha256.json``) and checked whenever that
  cached file is loaded (copies elsewhere are not the cache's files).
* A path to an official ``.pth`` is loaded with a ``--preset`` giving its settings;
  a path to one of our ``.safetensors`` files carries its own config.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .model import MemFlowNet, ModelConfig, get_preset
from .model.checkpoint import load_into, read_state_dict, sha256_file

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
RELEASE_URL = "https://github.com/DQiaole/MemFlow/releases/download/v1.0.0/{file}"
OFFICIAL_NAMES = {  # name -> preset
    "MemFlowNet_things": "things",
    "MemFlowNet_sintel": "sintel",
    "MemFlowNet_kitti": "kitti",
    "MemFlowNet_spring": "spring",
}


@dataclass
class LoadedWeights:
    model: MemFlowNet
    name: str
    path: str
    sha256: str
    iters: int          # default refinement iterations for these weights
    preset: str | None
    coarse: bool = False  # coarse-to-fine start by default (flowcli.coarse); official checkpoints: never
    refine: bool = False  # variational refinement by default (flowcli.refine); official checkpoints: never
    tta: bool = False     # MemFlow-P: mirrored-view averaging by default (flowcli.predict); official: never

    def inference_settings(self, iters: int | None = None, coarse: bool | None = None,
                           refine: bool | None = None, tta: bool | None = None) -> dict:
        """StreamOptions fields ``iters``, ``coarse``, ``refine``, ``tta``: those given, else these weights'
        defaults."""
        return {"iters": iters or self.iters, "coarse": self.coarse if coarse is None else bool(coarse),
                "refine": self.refine if refine is None else bool(refine),
                "tta": self.tta if tta is None else bool(tta)}


def cache_dir() -> Path:
    base = os.environ.get("FLOWCLI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flowcli")
    return Path(base)


def weights_dir() -> Path:
    """$FLOWCLI_WEIGHTS_DIR, else the repo's weights/ (source or editable install),
    else <prefix>/share/flowcli/weights (where a regular pip install puts them)."""
    if os.environ.get("FLOWCLI_WEIGHTS_DIR"):
        return Path(os.environ["FLOWCLI_WEIGHTS_DIR"])
    if (WEIGHTS_DIR / "manifest.json").is_file():
        return WEIGHTS_DIR
    return Path(sys.prefix) / "share" / "flowcli" / "weights"


def manifest(kind: str | None = None) -> list[dict]:
    """Entries of weights/manifest.json (optionally only estimate or predict models)."""
    path = weights_dir() / "manifest.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text())["models"]
    return [e for e in entries if kind is None or e.get("kind", "estimate") == kind]


def default_name(kind: str = "estimate") -> str | None:
    entries = manifest(kind)
    for e in entries:
        if e.get("default"):
            return e["name"]
    return entries[0]["name"] if entries else None


# Inference options that flowcli weights may turn on by default: metadata key -> LoadedWeights field.
DEFAULT_FLAGS = {"coarse_to_fine": "coarse", "refine": "refine", "tta": "tta"}


def meta_flag(meta: dict[str, str], key: str) -> bool:
    """Whether flowcli weights' metadata turns on ``key`` (a DEFAULT_FLAGS key) by default."""
    return meta.get(key, "false").lower() in ("1", "true", "yes")


def _flags(meta: dict[str, str]) -> dict[str, bool]:
    return {field: meta_flag(meta, key) for key, field in DEFAULT_FLAGS.items()}


# -- saving our own weights ---------------------------------------------------------------------------
def save_safetensors(path: str | Path, model: MemFlowNet, *, iters: int, extra: dict | None = None) -> Path:
    """Write model weights + config (no optimizer state) atomically as safetensors."""
    from safetensors.torch import save_file

    from .atomic import atomic_path
    meta = {"flowcli_config": json.dumps(model.cfg.to_dict()), "iters": str(iters)}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    # contiguous(): NCHW layout on disk; clone(): norm3 and downsample.1 share storage in memory
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def read_safetensors_meta(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None


def model_from_safetensors(path: str | Path) -> tuple[MemFlowNet, dict[str, str]]:
    """The model a flowcli safetensors file describes, and its metadata (checked: a damaged or edited
    config or ``iters`` is a CheckpointError, not a failure inside the model)."""
    meta = read_safetensors_meta(path)
    if "flowcli_config" not in meta:
        raise CheckpointError(f"{path}: safetensors file without a flowcli config in its metadata")
    try:
        config = json.loads(meta["flowcli_config"])
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        model = MemFlowNet(ModelConfig.from_dict(config))
        iters = int(meta.get("iters", 12))
        if iters < 1:
            raise ValueError(f"iters {iters} < 1")
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid flowcli weights file (its metadata: "
                              f"{' '.join(str(exc).split())})") from None
    load_into(model, read_state_dict(path), str(path))
    return model.eval(), {**meta, "iters": str(iters)}


# -- resolving a --weights value ---------------------------------------------------------------------
_KIND_NAMES = {"estimate": "an estimation model (estimate, eval, --estimate-weights)",
               "predict": "a MemFlow-P prediction model (predict-next --weights, eval --predict --weights)"}


def check_kind(model: MemFlowNet, kind: str, path: str | Path, hint: str | None = None) -> None:
    """A flowcli file carries its kind; refuse the other one here rather than fail inside the model.

    ``hint`` replaces the list of commands that take the file's kind (e.g. a training option)."""
    is_kind = "predict" if model.cfg.predict else "estimate"
    if is_kind != kind:
        what = _KIND_NAMES[is_kind] if hint is None else f"{_KIND_NAMES[is_kind].split(' (')[0]} ({hint})"
        raise CheckpointError(f"{path}: is {what}; this needs {_KIND_NAMES[kind].split(' (')[0]}")


def _official_cached(name: str) -> Path:
    path = cache_dir() / f"{name}.pth"
    if not path.is_file():
        raise CheckpointError(
            f"official weights {name!r} are not downloaded; run `flowcli weights download {name}` "
            f"where there is internet (cache: {cache_dir()})")
    return path


SHA_RECORD = "sha256.json"


def _read_sha_record(for_path: Path) -> dict[str, str]:
    """The cache's record of downloaded digests ({file name: sha256}); {} if there is none yet.

    A record that is not a JSON object of names to digests (an interrupted write by an older flowcli, an
    edit) is a :class:`CheckpointError` naming ``for_path`` and the record: it is not ignored, since it is
    what vouches for the cached files, and it is not guessed at. Deleting it and downloading again records
    the digests afresh.
    """
    record = cache_dir() / SHA_RECORD
    if not record.is_file():
        return {}
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(known, dict) or not all(isinstance(v, str) for v in known.values()):
            raise ValueError("not an object of file names to sha256 digests")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{for_path}: cannot check it against the sha256 record {record}, which is "
                              f"damaged ({' '.join(str(exc).split())}); delete the record and run `flowcli weights download "
                              f"{for_path.stem}` again") from None
    return known


def _in_cache(path: Path) -> bool:
    """Whether ``path`` is a file in the cache folder (the only files the sha256 record describes)."""
    try:
        return path.absolute().parent.resolve() == cache_dir().resolve()  # the file itself may be a link
    except OSError:
        return False


def _check_recorded_sha(path: Path, digest: str) -> None:
    """Refuse a cached official checkpoint whose sha256 differs from the one recorded at its download.

    The record (``CACHE/sha256.json``) is keyed by file name and describes the files of the cache folder
    only: a ``.pth`` anywhere else (a copy, a fine-tune with an official name) is not checked against it.
    A damaged record is an error (see :func:`_read_sha_record`).
    """
    if not _in_cache(path):
        return
    known = _read_sha_record(path)
    if path.name in known and known[path.name] != digest:
        raise CheckpointError(f"{path}: sha256 {digest[:16]}... differs from the one recorded at download "
                              f"({known[path.name][:16]}...); delete it and download again")


def download_official(name: str) -> Path:
    """Download an official checkpoint into the cache and record its sha256 (needs internet).

    The download goes to a temp file and replaces the cached file only once it is complete (as long
    as the server's Content-Length says) and matches the digest recorded for that name, if any: the
    first digest seen for a file name is kept, so a damaged or different later download is refused
    and the cached file left as it was. The record is replaced atomically.
    """
    if name not in OFFICIAL_NAMES:
        raise CheckpointError(f"unknown official weights {name!r}; choose from {', '.join(OFFICIAL_NAMES)}")
    from .atomic import atomic_path, write_bytes_atomic
    dest = cache_dir() / f"{name}.pth"
    known = _read_sha_record(dest)  # a damaged record stops here, before the download
    url = RELEASE_URL.format(file=f"{name}.pth")
    try:
        with atomic_path(dest, overwrite=True) as tmp, urllib.request.urlopen(url, timeout=60) as resp:
            expected = resp.headers.get("Content-Length") if resp.headers else None
            digest, size = hashlib.sha256(), 0
            with open(tmp, "wb") as fh:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            if expected is not None and expected.isdigit() and size != int(expected):
                raise CheckpointError(f"cannot download {url}: the transfer stopped at {size:,} of "
                                      f"{int(expected):,} bytes; nothing was cached, try again")
            digest = digest.hexdigest()
            if known.get(dest.name, digest) != digest:
                raise CheckpointError(f"{url}: sha256 {digest[:16]}... differs from the one recorded at the "
                                      f"first download ({known[dest.name][:16]}...); nothing was replaced (if the "
                                      f"release really changed, delete its entry in {cache_dir() / SHA_RECORD})")
    except (OSError, http.client.HTTPException) as exc:  # (a short body can raise IncompleteRead)
        raise CheckpointError(f"cannot download {url}: {exc!r}" if not str(exc) else
                              f"cannot download {url}: {exc}") from None
    if dest.name not in known:
        known[dest.name] = digest
        write_bytes_atomic(cache_dir() / SHA_RECORD, (json.dumps(known, indent=2) + "\n").encode(),
                           overwrite=True)
    return dest


def load_weights(weights: str | None = None, preset: str | None = None, kind: str = "estimate",
                 device: str | torch.device = "cpu") -> LoadedWeights:
    """Resolve ``weights`` (None = shipped default, a shipped name, an official name, or a path)."""
    shipped = {e["name"]: e for e in manifest(kind)}
    if weights is None:
        weights = default_name(kind)
        if weights is None:
            raise CheckpointError(
                "no default weights are shipped in this install; pass --weights PATH "
                "(an official MemFlow .pth with --preset, or a flowcli .safetensors)")
    if weights in shipped:
        entry = shipped[weights]
        path = weights_dir() / entry["file"]
        digest = sha256_file(path)
        if entry.get("sha256") and entry["sha256"] != digest:
            raise CheckpointError(f"{path}: sha256 does not match weights/manifest.json")
        model, meta = model_from_safetensors(path)
        return LoadedWeights(model.to(device), weights, str(path), digest, int(meta.get("iters", 12)), None,
                             **_flags(meta))
    if weights in OFFICIAL_NAMES and kind == "estimate":  # (the official names are estimation models)
        path = _official_cached(weights)
        preset = preset or OFFICIAL_NAMES[weights]
    else:
        path = Path(weights)
        if not path.exists():
            other = "predict" if kind == "estimate" else "estimate"
            if weights in OFFICIAL_NAMES or weights in {e["name"] for e in manifest(other)}:
                raise CheckpointError(f"{weights}: is {_KIND_NAMES[other]}; this needs "
                                      f"{_KIND_NAMES[kind].split(' (')[0]}")
            names = ", ".join(list(shipped) + (list(OFFICIAL_NAMES) if kind == "estimate" else []))
            raise CheckpointError(f"{weights}: no such weights file or name (known names: {names})")
    path = Path(path)
    digest = sha256_file(path)
    if path.suffix.lower() == ".safetensors":
        model, meta = model_from_safetensors(path)
        check_kind(model, kind, path)
        return LoadedWeights(model.to(device), path.stem, str(path), digest, int(meta.get("iters", 12)), None,
                             **_flags(meta))
    _check_recorded_sha(path, digest)
    try:
        p = get_preset(preset or "things", kind)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    model = MemFlowNet(p.config)
    load_into(model, read_state_dict(path), str(path))
    return LoadedWeights(model.eval().to(device), path.stem, str(path), digest, p.iters, p.name)
