"""Optical-flow file formats: Middlebury .flo, KITTI 16-bit PNG, NumPy .npy, PFM.

Every reader returns the one in-memory form used across flowcli: a float32
array of shape (H, W, 2), channel 0 = u (x), channel 1 = v (y), with unknown or
invalid pixels as NaN in both channels. Each format's own way of marking
unknown pixels (1e10 in .flo, B == 0 in KITTI) is translated at the boundary so
the rest of the code only ever has to test for NaN.

One rule for unknown, in every format, on reading and on writing (and in
:mod:`flowcli.viz`): a pixel is unknown when u or v is NaN, infinite or larger
than 1e9 in absolute value. The 1e9 threshold is Middlebury's .flo convention;
it applies to .npy and .pfm too because no real displacement is that long
(images are at most 100 000 pixels wide), and because otherwise the same flow
would read back differently depending on its format. So an .npy holding 1e10
or 1e300 reads as unknown (NaN), and a writer stores such a pixel as its
format's unknown (1e10 in .flo, B == 0 in KITTI, NaN in .npy and .pfm), never
as a valid vector (KITTI would have clamped it to 512 px).

Every writer goes through :func:`flowcli.atomic.atomic_path`, so a crash never
leaves a half-written flow file and an existing file is only replaced when the
caller passes ``overwrite=True``.
"""
from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import BinaryIO, Callable

import cv2
import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .pngcheck import png_damage

__all__ = [
    "FLOW_EXTENSIONS",
    "FORMAT_EXTENSIONS",
    "read_flow",
    "write_flow",
    "read_flo",
    "write_flo",
    "read_kitti_png",
    "write_kitti_png",
    "read_pfm",
    "write_pfm",
    "read_npy",
    "write_npy",
    "unknown_mask",
]

FLOW_EXTENSIONS = (".flo", ".png", ".npy", ".pfm")
FORMAT_EXTENSIONS = {"flo": ".flo", "kitti": ".png", "npy": ".npy", "pfm": ".pfm"}

FLO_TAG = 202021.25
UNKNOWN_THRESHOLD = 1e9  # |u| or |v| above this means "unknown" (Middlebury's rule, used for every format)
FLO_UNKNOWN_VALUE = 1e10  # what we write for unknown pixels (Middlebury convention)
MAX_SIDE = 100_000  # larger width/height in a header means a corrupt or foreign file

KITTI_OFFSET = 2.0**15
KITTI_SCALE = 64.0

PathLike = str | os.PathLike


# ---------------------------------------------------------------- helpers


def _as_flow(flow: np.ndarray) -> np.ndarray:
    """Validate a flow given to a writer and return it as float32 (H, W, 2).

    A wrong shape is a programming error, hence ValueError rather than InputError.
    """
    arr = np.asarray(flow)
    if arr.ndim != 3 or arr.shape[2] != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"flow must have shape (H, W, 2) with H, W > 0, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"flow must be a real number array, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):  # beyond float32's range is beyond 1e9: unknown either way
        return arr.astype(np.float32, copy=False)


def unknown_mask(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: unknown pixels, where either channel is NaN, inf or beyond +-1e9.

    Compared as ``> T`` and ``< -T`` rather than ``abs() > T``: abs of the most
    negative integer wraps around to a negative number.
    """
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flow) | (flow > UNKNOWN_THRESHOLD) | (flow < -UNKNOWN_THRESHOLD)
    return bad.any(axis=2)


def _nan_invalid(flow: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Set both channels of ``invalid`` pixels to NaN, so unknown is always NaN/NaN."""
    flow[invalid] = np.nan
    return flow


def _read_bytes(path: PathLike) -> bytes:
    """Read a whole flow file, turning OS errors into one-line InputErrors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a flow file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _write_atomic(path: PathLike, overwrite: bool, write: Callable[[BinaryIO], None]) -> Path:
    """Stream ``write(fh)`` into a temp file next to ``path``; rename it on success.

    The overwrite check runs before any encoding work, and a writer that raises
    leaves neither a temp file nor a partial ``path`` behind. An OS error that
    names no file (a full disk raises plain ``[Errno 28]`` from ``write``) is
    re-raised naming ``path``, so the one-line CLI error says which file failed.
    """
    try:
        with atomic_path(path, overwrite) as tmp:
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return Path(path)


# ---------------------------------------------------------------- .flo


def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury .flo file (little-endian tag, width, height, u/v float32)."""
    data = _read_bytes(path)
    if len(data) < 12:
        raise InputError(f"{path}: not a .flo file (only {len(data)} bytes, the header alone is 12)")
    tag = np.frombuffer(data, "<f4", count=1, offset=0)[0]
    if tag != np.float32(FLO_TAG):
        raise InputError(f"{path}: not a .flo file (tag is {tag!r}, expected {FLO_TAG})")
    width, height = (int(x) for x in np.frombuffer(data, "<i4", count=2, offset=4))
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise InputError(f"{path}: corrupt .flo header (width {width}, height {height})")
    expected = 12 + width * height * 2 * 4
    if len(data) < expected:
        raise InputError(
            f"{path}: truncated .flo file ({len(data)} bytes, {width}x{height} needs {expected})"
        )
    if len(data) > expected:
        raise InputError(
            f"{path}: over-long .flo file ({len(data)} bytes, {width}x{height} needs {expected})"
        )
    flow = np.frombuffer(data, "<f4", offset=12).reshape(height, width, 2).astype(np.float32)
    return _nan_invalid(flow, unknown_mask(flow))


def _encode_flo(fh: BinaryIO, flow: np.ndarray) -> None:
    height, width = flow.shape[:2]
    out = flow.astype("<f4")  # always a copy: we edit it below
    out[unknown_mask(flow)] = FLO_UNKNOWN_VALUE
    fh.write(np.array([FLO_TAG], "<f4").tobytes())
    fh.write(np.array([width, height], "<i4").tobytes())
    fh.write(np.ascontiguousarray(out).tobytes())


def write_flo(path: PathLike, flow: np.ndarray, overwrite: bool = False) -> Path:
    """Write a Middlebury .flo file; NaN (unknown) pixels are stored as 1e10."""
    flow = _as_flow(flow)
    return _write_atomic(path, overwrite, lambda fh: _encode_flo(fh, flow))


# ---------------------------------------------------------------- KITTI png


def read_kitti_png(path: PathLike) -> np.ndarray:
    """Read a KITTI flow PNG: u=(R-2^15)/64, v=(G-2^15)/64, valid where B > 0."""
    data = _read_bytes(path)
    img = None if not data or png_damage(data) else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable PNG image")
    if img.dtype != np.uint16:
        bits = img.dtype.itemsize * 8
        raise InputError(f"{path}: not a KITTI flow PNG (pixels are {bits}-bit, KITTI flow is 16-bit)")
    if img.ndim != 3 or img.shape[2] != 3:
        channels = 1 if img.ndim == 2 else img.shape[2]
        raise InputError(f"{path}: not a KITTI flow PNG ({channels} channels, KITTI flow has 3)")
    # cv2 gives BGR: channel 2 is R (u), 1 is G (v), 0 is B (valid).
    flow = np.empty(img.shape[:2] + (2,), np.float32)
    flow[:, :, 0] = img[:, :, 2]
    flow[:, :, 1] = img[:, :, 1]
    flow -= KITTI_OFFSET
    flow /= KITTI_SCALE
    return _nan_invalid(flow, img[:, :, 0] == 0)


def _encode_kitti_png(fh: BinaryIO, flow: np.ndarray) -> None:
    invalid = unknown_mask(flow)
    # Same clamp as the KITTI devkit, but rounded instead of truncated, so the
    # error is at most 1/128 px instead of 1/64.
    scaled = np.where(invalid[:, :, None], 0.0, flow) * KITTI_SCALE + KITTI_OFFSET
    scaled = np.rint(np.clip(scaled, 0, 65535)).astype(np.uint16)
    img = np.empty(flow.shape[:2] + (3,), np.uint16)
    img[:, :, 2] = scaled[:, :, 0]
    img[:, :, 1] = scaled[:, :, 1]
    img[:, :, 0] = 1
    img[invalid] = 0
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("cv2 could not encode the KITTI PNG")
    fh.write(buf.tobytes())


def write_kitti_png(path: PathLike, flow: np.ndarray, overwrite: bool = False) -> Path:
    """Write a KITTI 16-bit flow PNG; values are quantised to 1/64 px and clamped to +-512 px.

    Unknown pixels (NaN, inf, beyond +-1e9) are stored invalid (B = 0), not clamped.
    """
    flow = _as_flow(flow)
    return _write_atomic(path, overwrite, lambda fh: _encode_kitti_png(fh, flow))


# ---------------------------------------------------------------- .npy


def _check_npy_size(path: PathLike, data: bytes) -> None:
    """Refuse a .npy whose header declares more data than the file holds.

    np.load allocates the declared shape before reading, so a damaged header
    (shape (100000, 100000, 2) in a 200-byte file) would otherwise be an "out of
    memory" error instead of saying that the file is broken.
    """
    fh = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    needed = math.prod(shape) * dtype.itemsize
    if len(data) - fh.tell() < needed:
        raise InputError(f"{path}: truncated or damaged .npy file ({len(data) - fh.tell()} data bytes, "
                         f"its header declares shape {shape} of {dtype}, {needed} bytes)")


def read_npy(path: PathLike) -> np.ndarray:
    """Read an (H, W, 2) .npy array (no pickles); other layouts are refused, not guessed.

    Unknown pixels (NaN, inf, beyond +-1e9, see the module docstring) become NaN;
    float64 values too large for float32 are beyond 1e9, so they are unknown too.
    """
    data = _read_bytes(path)
    _check_npy_size(path, data)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: not a single .npy array")
    if arr.ndim != 3 or arr.shape[2] != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{path}: flow .npy must have shape (H, W, 2), got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{path}: flow .npy must hold real numbers, got dtype {arr.dtype}")
    unknown = unknown_mask(arr)  # before the cast, which turns 1e300 into inf
    with np.errstate(over="ignore"):
        flow = arr.astype(np.float32)  # always a fresh, writable, native-endian copy
    return _nan_invalid(flow, unknown)


def write_npy(path: PathLike, flow: np.ndarray, overwrite: bool = False) -> Path:
    """Write the flow as an (H, W, 2) float32 .npy file; unknown pixels are stored as NaN."""
    flow = _as_flow(flow)
    unknown = unknown_mask(flow)
    if unknown.any():
        flow = _nan_invalid(flow.copy(), unknown)
    return _write_atomic(path, overwrite, lambda fh: np.save(fh, flow, allow_pickle=False))


# ---------------------------------------------------------------- PFM

_PFM_TOKEN = re.compile(rb"\s*(\S+)")


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a Portable Float Map ("PF", 3 channels) and keep channels 0 and 1 as u, v.

    Both byte orders are accepted (the sign of the scale says which); rows are
    stored bottom-to-top. A one-channel "Pf" map cannot hold a flow and is refused.
    """
    data = _read_bytes(path)
    tokens, pos = [], 0
    for _ in range(4):  # magic, width, height, scale
        m = _PFM_TOKEN.match(data, pos, min(len(data), pos + 64))
        if m is None:
            raise InputError(f"{path}: not a PFM file (incomplete header)")
        tokens.append(m.group(1))
        pos = m.end()
    magic, width_s, height_s, scale_s = tokens
    if magic not in (b"PF", b"Pf"):
        raise InputError(f"{path}: not a PFM file (starts with {magic[:8]!r}, expected b'PF')")
    if magic == b"Pf":
        raise InputError(f"{path}: one-channel PFM (Pf); a flow needs a 3-channel PF map")
    try:
        width, height, scale = int(width_s), int(height_s), float(scale_s)
    except ValueError as exc:
        raise InputError(f"{path}: corrupt PFM header ({exc})") from exc
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE) or scale == 0 or not np.isfinite(scale):
        raise InputError(f"{path}: corrupt PFM header (width {width}, height {height}, scale {scale})")
    pos += 1  # exactly one whitespace byte ends the header
    expected = width * height * 3 * 4
    if len(data) - pos < expected:
        raise InputError(f"{path}: truncated PFM file ({len(data) - pos} data bytes, {width}x{height} needs {expected})")
    if len(data) - pos > expected:
        raise InputError(f"{path}: over-long PFM file ({len(data) - pos} data bytes, {width}x{height} needs {expected})")
    dtype = "<f4" if scale < 0 else ">f4"
    img = np.frombuffer(data, dtype, count=width * height * 3, offset=pos).reshape(height, width, 3)
    flow = np.ascontiguousarray(img[::-1, :, :2], dtype=np.float32)
    return _nan_invalid(flow, unknown_mask(flow))


def _encode_pfm(fh: BinaryIO, flow: np.ndarray) -> None:
    height, width = flow.shape[:2]
    img = np.zeros((height, width, 3), "<f4")
    img[:, :, :2] = flow
    img[unknown_mask(flow), :2] = np.nan
    fh.write(f"PF\n{width} {height}\n-1.0\n".encode("ascii"))
    fh.write(np.ascontiguousarray(img[::-1]).tobytes())


def write_pfm(path: PathLike, flow: np.ndarray, overwrite: bool = False) -> Path:
    """Write a little-endian 3-channel PFM (third channel zero), rows bottom-to-top."""
    flow = _as_flow(flow)
    return _write_atomic(path, overwrite, lambda fh: _encode_pfm(fh, flow))


# ---------------------------------------------------------------- dispatch

_READERS = {".flo": read_flo, ".png": read_kitti_png, ".npy": read_npy, ".pfm": read_pfm}
_WRITERS = {"flo": write_flo, "kitti": write_kitti_png, "npy": write_npy, "pfm": write_pfm}
_EXT_TO_FORMAT = {ext: fmt for fmt, ext in FORMAT_EXTENSIONS.items()}


def read_flow(path: PathLike) -> np.ndarray:
    """Read any supported flow file, choosing the format by extension (case-insensitive)."""
    ext = Path(path).suffix.lower()
    reader = _READERS.get(ext)
    if reader is None:
        raise InputError(
            f"{path}: unknown flow file extension {ext!r} (supported: {', '.join(FLOW_EXTENSIONS)})"
        )
    return reader(path)


def write_flow(path: PathLike, flow: np.ndarray, overwrite: bool = False, fmt: str | None = None) -> Path:
    """Write ``flow`` to ``path`` in ``fmt`` (default: from the extension, .png => KITTI).

    An explicit ``fmt`` wins over the extension; the path is used as given.
    """
    if fmt is None:
        ext = Path(path).suffix.lower()
        fmt = _EXT_TO_FORMAT.get(ext)
        if fmt is None:
            raise InputError(
                f"{path}: unknown flow file extension {ext!r} (supported: {', '.join(FLOW_EXTENSIONS)})"
            )
    writer = _WRITERS.get(fmt)
    if writer is None:
        raise ValueError(f"unknown flow format {fmt!r} (choose from {', '.join(_WRITERS)})")
    return writer(path, flow, overwrite=overwrite)
