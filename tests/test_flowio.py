"""Tests for flowcli.flowio: round trips, cv2 interop, bad files, atomic writes, real data."""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowcli import flowio
from flowcli.errors import InputError, OutputExistsError
from flowcli.flowio import FORMAT_EXTENSIONS, read_flow, write_flow

FORMATS = list(FORMAT_EXTENSIONS)  # flo, kitti, npy, pfm


def make_flow(h=7, w=11, seed=0, unknown=True) -> np.ndarray:
    """A small non-square flow with fractional values, negatives and some NaN pixels."""
    rng = np.random.default_rng(seed)
    flow = rng.uniform(-40, 40, size=(h, w, 2)).astype(np.float32)
    if unknown:
        flow[0, 0] = np.nan
        flow[3, 5] = np.nan
        flow[h - 1, w - 1] = np.nan
    return flow


def assert_same_flow(got, want, atol=0.0):
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=0, atol=atol)


def leftovers(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.name != name]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_with_unknown_pixels(tmp_path, fmt):
    flow = make_flow()
    path = write_flow(tmp_path / f"f{FORMAT_EXTENSIONS[fmt]}", flow)
    got = read_flow(path)
    # KITTI stores 1/64 px steps and rounds, so the error is at most 1/128 px.
    assert_same_flow(got, flow, atol=1 / 128 + 1e-6 if fmt == "kitti" else 0.0)
    assert got.flags.c_contiguous and got.flags.writeable
    assert leftovers(tmp_path, path.name) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_is_nan_in_both_channels(tmp_path, fmt):
    flow = make_flow(unknown=False)
    flow[2, 2, 0] = np.nan  # only u unknown
    flow[4, 4, 1] = np.inf  # only v broken
    got = read_flow(write_flow(tmp_path / f"f{FORMAT_EXTENSIONS[fmt]}", flow))
    assert np.isnan(got[2, 2]).all() and np.isnan(got[4, 4]).all()
    assert np.isnan(got).any(axis=2).sum() == 2


def test_explicit_fmt_wins_over_extension(tmp_path):
    flow = make_flow()
    write_flow(tmp_path / "f.bin", flow, fmt="flo")
    assert_same_flow(flowio.read_flo(tmp_path / "f.bin"), flow)
    with pytest.raises(ValueError, match="unknown flow format"):
        write_flow(tmp_path / "g.flo", flow, fmt="jpeg")


def test_unknown_extension(tmp_path):
    with pytest.raises(InputError, match=r"f\.txt.*unknown flow file extension"):
        write_flow(tmp_path / "f.txt", make_flow())
    (tmp_path / "g.txt").write_bytes(b"x")
    with pytest.raises(InputError, match=r"g\.txt.*unknown flow file extension"):
        read_flow(tmp_path / "g.txt")


def test_writers_reject_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        write_flow(tmp_path / "f.flo", np.zeros((2, 4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_flo_layout_is_exact(tmp_path):
    """Header and interleaving byte for byte, little-endian, unknown stored as 1e10."""
    flow = np.array([[[1.5, -2.0], [np.nan, np.nan]]], np.float32)  # H=1, W=2
    data = write_flow(tmp_path / "f.flo", flow).read_bytes()
    assert data[:4] == struct.pack("<f", 202021.25)
    assert struct.unpack("<ii", data[4:12]) == (2, 1)
    assert struct.unpack("<4f", data[12:]) == (1.5, -2.0, 1e10, 1e10)


def test_kitti_layout_and_clamp(tmp_path):
    """R=u, G=v (cv2 BGR order), B=valid; values clamp like the devkit; invalid is 0,0,0."""
    flow = np.array([[[1.0, -0.5], [1000.0, -1000.0], [np.nan, 3.0]]], np.float32)
    path = write_flow(tmp_path / "f.png", flow)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (1, 3, 3)
    b, g, r = img[0, 0]
    assert (r, g, b) == (32768 + 64, 32768 - 32, 1)
    assert tuple(img[0, 1][::-1]) == (65535, 0, 1)
    assert tuple(img[0, 2]) == (0, 0, 0)


def test_pfm_layout(tmp_path):
    """PF header, negative scale (little-endian), third channel zero, bottom row first."""
    flow = np.array([[[1, 2]], [[3, 4]]], np.float32)  # H=2, W=1
    data = write_flow(tmp_path / "f.pfm", flow).read_bytes()
    header = b"PF\n1 2\n-1.0\n"
    assert data.startswith(header)
    assert struct.unpack("<6f", data[len(header):]) == (3, 4, 0, 1, 2, 0)


def test_pfm_big_endian_and_header_on_one_line(tmp_path):
    flow = make_flow(unknown=False)
    h, w = flow.shape[:2]
    img = np.zeros((h, w, 3), ">f4")
    img[:, :, :2] = flow
    path = tmp_path / "be.pfm"
    path.write_bytes(f"PF {w} {h} 1.0\n".encode() + img[::-1].tobytes())
    assert_same_flow(read_flow(path), flow)


def test_npy_casts_float64_and_refuses_other_layouts(tmp_path):
    flow = make_flow()
    np.save(tmp_path / "f64.npy", flow.astype(np.float64))
    assert_same_flow(read_flow(tmp_path / "f64.npy"), flow)
    np.save(tmp_path / "chw.npy", flow.transpose(2, 0, 1))
    with pytest.raises(InputError, match=r"chw\.npy.*\(H, W, 2\)"):
        read_flow(tmp_path / "chw.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy"):
        read_flow(tmp_path / "obj.npy")


# ---------------------------------------------------------------- one rule for unknown


@pytest.mark.parametrize("fmt", ["kitti", "npy", "pfm"])  # .flo had this rule already
def test_beyond_1e9_is_unknown_in_every_format(tmp_path, fmt):
    """|u| or |v| > 1e9 is unknown whatever the format: it reads back as NaN, and KITTI stores it
    invalid rather than as a valid vector clamped to 512 px."""
    flow = make_flow(unknown=False)
    flow[1, 2] = (2e9, 0.0)
    flow[2, 3] = (0.0, -1e10)
    flow[4, 4] = (1e9, -1e9)                       # the threshold itself is still known
    want = flow.copy()
    want[1, 2] = want[2, 3] = np.nan
    if fmt == "kitti":
        want[4, 4] = (511.984375, -512.0)          # known, so clamped like any long vector
    path = write_flow(tmp_path / f"f{FORMAT_EXTENSIONS[fmt]}", flow)
    assert_same_flow(read_flow(path), want, atol=1 / 128 if fmt == "kitti" else 0.0)


@pytest.mark.parametrize("ext", [".npy", ".pfm"])
def test_files_holding_values_beyond_1e9_read_as_unknown(tmp_path, ext):
    """Files flowcli did not write (numpy's own np.save, a PFM from elsewhere) follow the .flo rule too."""
    flow = make_flow(unknown=False)
    flow[1, 2] = (2e9, 1.0)
    flow[2, 3] = (1.0, -np.inf)
    want = flow.copy()
    want[1, 2] = want[2, 3] = np.nan
    path = tmp_path / f"f{ext}"
    if ext == ".npy":
        np.save(path, flow)
    else:
        img = np.zeros(flow.shape[:2] + (3,), "<f4")
        img[:, :, :2] = flow
        path.write_bytes(f"PF\n{flow.shape[1]} {flow.shape[0]}\n-1.0\n".encode() + img[::-1].tobytes())
    assert_same_flow(read_flow(path), want)
    assert_same_flow(read_flow(write_flow(tmp_path / "f.flo", flow)), want)  # same as .flo


def test_npy_beyond_float32_is_unknown_without_warnings(tmp_path):
    """float64 1e300 (and the most negative int64) are unknown, with no RuntimeWarning on stderr."""
    want = make_flow(unknown=False)
    flow = want.astype(np.float64)
    flow[1, 2] = (1e300, 0.0)
    flow[2, 3] = (0.0, -1e300)
    np.save(tmp_path / "f64.npy", flow)
    ints = np.zeros((2, 3, 2), np.int64)
    ints[0, 1, 0] = np.iinfo(np.int64).min
    ints[1, 2, 1] = 7
    np.save(tmp_path / "i64.npy", ints)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_flow(tmp_path / "f64.npy")
        got_ints = read_flow(tmp_path / "i64.npy")
        written = np.load(write_flow(tmp_path / "out.npy", flow))
    want[1, 2] = want[2, 3] = np.nan
    assert_same_flow(got, want)
    assert_same_flow(written, want)
    assert np.isnan(got_ints[0, 1]).all() and (got_ints[1, 2] == (0, 7)).all()
    assert np.isnan(got_ints).sum() == 2


def _npy_with_header(shape, data: bytes, version=(1, 0)) -> bytes:
    """An .npy file whose header declares ``shape`` (float32) followed by ``data``."""
    import io

    fh = io.BytesIO()
    write_header = (np.lib.format.write_array_header_1_0 if version == (1, 0)
                    else np.lib.format.write_array_header_2_0)
    write_header(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return fh.getvalue() + data


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
@pytest.mark.parametrize("shape, size", [((100000, 100000, 2), 100), ((4, 5, 2), 4 * 5 * 2 * 4 - 4)])
def test_npy_header_declaring_more_data_than_the_file_has(tmp_path, version, shape, size):
    """A damaged header must not make np.load allocate 80 GB and fail as "out of memory"."""
    path = tmp_path / "damaged.npy"
    path.write_bytes(_npy_with_header(shape, b"\0" * size, version))
    with pytest.raises(InputError, match=r"truncated or damaged \.npy") as exc:
        read_flow(path)
    assert str(path) in str(exc.value) and str(shape) in str(exc.value)
    path.write_bytes(_npy_with_header((4, 5, 2), b"\0" * (4 * 5 * 2 * 4), version))  # complete: fine
    assert read_flow(path).shape == (4, 5, 2)


# ---------------------------------------------------------------- cv2 interop


def test_flo_we_write_reads_back_with_cv2(tmp_path):
    flow = make_flow()
    path = flowio.write_flo(tmp_path / "ours.flo", flow)
    theirs = cv2.readOpticalFlow(str(path))
    assert theirs.shape == flow.shape and theirs.dtype == np.float32
    known = ~np.isnan(flow).any(axis=2)
    np.testing.assert_array_equal(theirs[known], flow[known])
    assert (theirs[~known] == 1e10).all()


def test_flo_cv2_writes_we_read(tmp_path):
    flow = make_flow(unknown=False)
    flow[1, 2] = 1e10  # how cv2 users mark unknown pixels
    path = tmp_path / "cv2.flo"
    assert cv2.writeOpticalFlow(str(path), flow)
    got = flowio.read_flo(path)
    want = flow.copy()
    want[1, 2] = np.nan
    assert_same_flow(got, want)


# ---------------------------------------------------------------- bad files


def _flo_header(w=3, h=2, tag=202021.25) -> bytes:
    return struct.pack("<fii", tag, w, h)


def _flo_bytes(w=3, h=2, tag=202021.25) -> bytes:
    return _flo_header(w, h, tag) + np.zeros(w * h * 2, "<f4").tobytes()


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("tag.flo", _flo_bytes(tag=1.0), "not a .flo file"),
        ("short.flo", _flo_bytes()[:-4], "truncated"),
        ("header.flo", b"PIEH", "not a .flo file"),
        ("long.flo", _flo_bytes() + b"\0\0\0\0", "over-long"),
        ("huge.flo", _flo_header(w=10**8, h=10**8), "corrupt .flo header"),
        ("neg.flo", _flo_header(w=-3), "corrupt .flo header"),
        ("empty.flo", b"", "not a .flo file"),
        ("text.pfm", b"hello world, not a float map\n", "not a PFM file"),
        ("short.pfm", b"PF\n2 2\n-1.0\n" + b"\0" * 40, "truncated PFM"),
        ("gray.pfm", b"Pf\n1 1\n-1.0\n" + b"\0" * 4, "one-channel"),
        ("text.npy", b"not numpy", "not a readable .npy"),
        ("text.png", b"not a png", "not a readable PNG"),
    ],
)
def test_bad_files_name_the_path(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=message) as exc:
        read_flow(path)
    assert str(path) in str(exc.value)


def test_missing_file_and_folder(tmp_path):
    for fmt_ext in flowio.FLOW_EXTENSIONS:
        path = tmp_path / f"missing{fmt_ext}"
        with pytest.raises(InputError, match="no such file") as exc:
            read_flow(path)
        assert str(path) in str(exc.value)
    folder = tmp_path / "dir.flo"
    folder.mkdir()
    with pytest.raises(InputError, match="is a folder"):
        read_flow(folder)


@pytest.mark.parametrize(
    "img, message",
    [
        (np.full((4, 5, 3), 128, np.uint8), "8-bit"),
        (np.full((4, 5), 128, np.uint16), "1 channels"),
        (np.full((4, 5, 4), 128, np.uint16), "4 channels"),
    ],
)
def test_non_kitti_png(tmp_path, img, message):
    path = tmp_path / "image.png"
    assert cv2.imwrite(str(path), img)
    with pytest.raises(InputError, match=message) as exc:
        read_flow(path)
    assert str(path) in str(exc.value)


# ---------------------------------------------------------------- overwrite / atomicity


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_overwrite_unless_asked(tmp_path, fmt):
    path = tmp_path / f"f{FORMAT_EXTENSIONS[fmt]}"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_flow(path, make_flow())
    assert path.read_bytes() == b"precious"
    flow = make_flow(seed=1)
    write_flow(path, flow, overwrite=True)
    assert_same_flow(read_flow(path), flow, atol=1 / 128 + 1e-6 if fmt == "kitti" else 0.0)
    assert leftovers(tmp_path, path.name) == []


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """A writer that dies half-way leaves neither the target nor a temp file."""

    def half_then_fail(fh, flow):
        fh.write(b"PIEH partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(flowio, "_encode_flo", half_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_flow(tmp_path / "f.flo", make_flow())
    assert list(tmp_path.iterdir()) == []

    # ...and an existing file survives a failed overwrite untouched.
    (tmp_path / "f.flo").write_bytes(b"precious")
    with pytest.raises(RuntimeError):
        write_flow(tmp_path / "f.flo", make_flow(), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["f.flo"]
    assert (tmp_path / "f.flo").read_bytes() == b"precious"


def test_disk_full_error_names_the_file(tmp_path, monkeypatch):
    """ENOSPC from write() carries no file name; the error must name the flow file."""
    import errno
    import os

    def disk_full(fh, flow):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(flowio, "_encode_flo", disk_full)
    with pytest.raises(OSError) as exc:
        write_flow(tmp_path / "f.flo", make_flow())
    assert exc.value.errno == errno.ENOSPC
    assert exc.value.filename == str(tmp_path / "f.flo")
    assert list(tmp_path.iterdir()) == []


def test_write_creates_parent_folders(tmp_path):
    path = write_flow(tmp_path / "a" / "b" / "f.npy", make_flow())
    assert path.exists()


# ---------------------------------------------------------------- real files from ../shared/data


def test_sintel_flo(shared_data, tmp_path):
    path = shared_data / "sintel/training/flow/alley_1/frame_0002.flo"
    flow = read_flow(path)
    assert flow.shape == (436, 1024, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()  # Sintel GT is dense
    np.testing.assert_array_equal(flow, cv2.readOpticalFlow(str(path)))
    out = write_flow(tmp_path / "copy.flo", flow)
    assert out.read_bytes() == path.read_bytes()  # byte-identical re-encode
    for fmt in ("npy", "pfm"):
        assert_same_flow(read_flow(write_flow(tmp_path / f"copy{FORMAT_EXTENSIONS[fmt]}", flow)), flow)


def test_middlebury_flo_unknown_pixels(shared_data, tmp_path):
    paths = sorted((shared_data / "middlebury/other-gt-flow").glob("*/flow10.flo"))
    assert len(paths) >= 4
    unknown_counts = {}
    for path in paths:
        flow = read_flow(path)
        theirs = cv2.readOpticalFlow(str(path))
        unknown = (np.abs(theirs) > 1e9).any(axis=2)
        np.testing.assert_array_equal(np.isnan(flow).any(axis=2), unknown)
        np.testing.assert_array_equal(np.isnan(flow).all(axis=2), unknown)
        np.testing.assert_array_equal(flow[~unknown], theirs[~unknown])
        unknown_counts[path.parent.name] = int(unknown.sum())
        assert_same_flow(read_flow(write_flow(tmp_path / f"{path.parent.name}.flo", flow)), flow)
    # RubberWhale and Dimetrodon mark occluded/unknown pixels; Venus and Grove2 are dense.
    assert unknown_counts["RubberWhale"] > 0 and unknown_counts["Dimetrodon"] > 0


def test_kitti_png(shared_data, tmp_path):
    path = shared_data / "kitti2012/training/flow_noc/000045_10.png"
    flow = read_flow(path)
    assert flow.shape == (376, 1241, 2) and flow.dtype == np.float32
    valid = np.isfinite(flow).all(axis=2)
    assert np.isnan(flow[~valid]).all()
    assert 0.20 < valid.mean() < 0.24  # about 22 % valid (PROVENANCE.md)
    # Independent decode straight from the pixels.
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64)
    np.testing.assert_array_equal(valid, img[:, :, 0] > 0)
    np.testing.assert_array_equal(flow[valid, 0], (img[valid, 2] - 2**15) / 64)
    np.testing.assert_array_equal(flow[valid, 1], (img[valid, 1] - 2**15) / 64)
    # KITTI values are multiples of 1/64, so re-encoding is exact.
    again = read_flow(write_flow(tmp_path / "copy.png", flow))
    assert_same_flow(again, flow)
    assert_same_flow(read_flow(write_flow(tmp_path / "copy.flo", flow)), flow)
