"""Tests for flowcli.sources on real files: videos written with PyAV, image folders, stdin bytes.

No mocks: every video is encoded here with the FFmpeg that PyAV bundles, and a
container whose encoder is missing is skipped with the reason.
"""
from __future__ import annotations

import gc
import io
import os
import re
import tracemalloc
import weakref
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from flowcli.errors import InputError
from flowcli.sources import Frame, FrameSource, open_source, read_image_rgb

W, H = 64, 48


def level(i: int) -> int:
    """Grey level of generated frame i: distinct per frame, so order can be checked after lossy coding."""
    return 10 + 16 * (i % 15)


def have_encoder(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:
        return False


def write_video(path: Path, n: int, codec: str = "mpeg4", rate: int = 10, w: int = W, h: int = H,
                options: dict | None = None, noisy: bool = False) -> Path:
    """Encode n flat grey frames (level(i)) with PyAV; ``noisy`` makes every frame costly to code."""
    if not have_encoder(codec):
        pytest.skip(f"the bundled PyAV/FFmpeg has no {codec} encoder")
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        container.start_encoding()
        rng = np.random.default_rng(0)
        for i in range(n):
            img = rng.integers(0, 256, (h, w, 3), np.uint8) if noisy else np.full((h, w, 3), level(i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_images(folder: Path, names, make=None) -> Path:
    """Write one 8-bit BGR image per name with cv2 (level(i) grey unless ``make`` says otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = make(i) if make else np.full((H, W, 3), level(i), np.uint8)
        assert cv2.imwrite(str(folder / name), img), name
    return folder


def levels(frames) -> list[int]:
    return [int(round(f.image.mean())) for f in frames]


def check_frame(frame: Frame, w: int = W, h: int = H) -> None:
    img = frame.image
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert img.flags.c_contiguous


# ---------------------------------------------------------------- videos

CONTAINERS = [
    ("mp4", "libx264"),
    ("mp4", "mpeg4"),
    ("avi", "mpeg4"),
    ("mov", "mpeg4"),
    ("mkv", "libx264"),
    ("webm", "libvpx-vp9"),
    ("webm", "libvpx"),
]


@pytest.mark.parametrize("ext, codec", CONTAINERS, ids=[f"{e}-{c}" for e, c in CONTAINERS])
def test_video_containers(tmp_path, ext, codec):
    path = write_video(tmp_path / f"clip.{ext}", 12, codec)
    with open_source(str(path)) as src:
        assert src.name == str(path)
        assert src.fps == pytest.approx(10.0)
        assert src.frame_count in (12, None)  # mkv/webm do not record a frame count
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    for f in frames:
        check_frame(f)
    np.testing.assert_allclose(levels(frames), [level(i) for i in range(12)], atol=6)


def test_video_start_end_step(tmp_path):
    path = write_video(tmp_path / "clip.avi", 12)
    src = open_source(str(path), start=2, end=10, step=3)
    assert src.frame_count == 3
    frames = list(src)
    assert [f.index for f in frames] == [2, 5, 8]
    np.testing.assert_allclose(levels(frames), [level(i) for i in (2, 5, 8)], atol=6)
    # end past the last frame just stops at the end
    assert [f.index for f in open_source(str(path), start=9, end=100)] == [9, 10, 11]
    assert open_source(str(path), start=9, end=100).frame_count == 3


def test_video_with_one_or_zero_frames(tmp_path):
    one = write_video(tmp_path / "one.avi", 1)
    with pytest.raises(InputError, match=r"one\.avi: needs at least 2 frames, got 1$"):
        list(open_source(str(one)))
    empty = write_video(tmp_path / "empty.avi", 0)
    with pytest.raises(InputError, match=r"empty\.avi: needs at least 2 frames, got 0$"):
        list(open_source(str(empty)))
    two = write_video(tmp_path / "two.avi", 5)
    with pytest.raises(InputError, match="got 1 after start/end/step selection"):
        list(open_source(str(two), start=4))


@pytest.mark.parametrize("ext, codec", [("mp4", "libx264"), ("mkv", "libx264")])
def test_video_container_without_frames(tmp_path, ext, codec):
    """Header-only files fail either at open or at iteration, always naming the file."""
    path = write_video(tmp_path / f"empty.{ext}", 0, codec)
    with pytest.raises(InputError, match=rf"empty\.{ext}: "):
        list(open_source(str(path)))


def test_not_a_video(tmp_path):
    text = tmp_path / "x.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match=r"x\.mp4: not a readable video"):
        open_source(str(text))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.mp4: not a readable video"):
        open_source(str(empty))


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(InputError, match=r"audio\.mkv: has no video stream"):
        open_source(str(path))


def test_missing_path_and_single_image(tmp_path):
    with pytest.raises(InputError, match=r"nope\.mp4: no such file or folder"):
        open_source(str(tmp_path / "nope.mp4"))
    write_images(tmp_path, ["one.png"])
    with pytest.raises(InputError, match=r"one\.png: a single image"):
        open_source(str(tmp_path / "one.png"))


def test_truncated_mp4_names_frame(tmp_path):
    """An h264 mp4 (index first) cut in half: the frames before the cut come out, then an error naming the frame."""
    path = write_video(tmp_path / "clip.mp4", 20, "libx264", noisy=True, options={"movflags": "+faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(InputError, match=r"clip\.mp4: decode error at frame \d+") as exc:
        for frame in open_source(str(path)):
            got.append(frame.index)
    bad = int(re.search(r"frame (\d+)", str(exc.value)).group(1))
    assert got == list(range(bad)) and bad > 0


def damage_packet(src: Path, dst: Path, which: float, length: int = 16) -> Path:
    """Copy ``src`` with ``length`` bytes zeroed in the middle of its inter-coded video packet at
    ``which`` (fraction of the packets): the demuxer is untouched, the decoder meets bad slice data."""
    with av.open(str(src)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size and not p.is_keyframe]
    pos, size = packets[int(which * len(packets))]
    data = bytearray(src.read_bytes())
    data[pos + size // 2: pos + size // 2 + length] = bytes(length)
    dst.write_bytes(data)
    return dst


DAMAGE_AT = [0.1 + 0.08 * k for k in range(10)]


def check_damage_reported(clean: Path, tmp_path: Path) -> None:
    """Zeroed bytes at 10 places, one file each: all frames still come out, and the decoder's concealed
    errors are counted, at or before the first frame that differs from the clean decode. Not every
    damage is detectable (some bytes decode to valid but wrong data: measured, 5-8 of these 10 are
    reported), so at least 3 must be; the clean file reports none."""
    with open_source(str(clean)) as src:
        ref = [f.image for f in src]
    assert src.damage.frames == 0 and src.damage.warning(src.name) is None
    reported = 0
    for k, where in enumerate(DAMAGE_AT):
        damaged = damage_packet(clean, tmp_path / f"damaged{k}.mp4", where)
        with open_source(str(damaged)) as src:
            got = [f.image for f in src]
        assert len(got) == len(ref)
        differ = [i for i, (a, b) in enumerate(zip(ref, got)) if np.abs(a.astype(int) - b).mean() > 0.5]
        assert differ, "the damage should change the picture"
        if src.damage.frames:
            reported += 1
            assert src.damage.first_index <= differ[0]
            assert re.match(rf"{re.escape(str(damaged))}: the decoder reported damaged data in \d+ frame",
                            src.damage.warning(src.name))
    assert reported >= 3


def test_concealed_decode_errors_are_reported(tmp_path):
    """A few zeroed bytes inside an h264 frame: FFmpeg conceals them and only logs; we count them."""
    check_damage_reported(write_video(tmp_path / "clip.mp4", 30, "libx264", noisy=True), tmp_path)


def test_concealed_decode_errors_are_reported_real_video(shared_data, tmp_path):
    check_damage_reported(shared_data / "videos/cat.mp4", tmp_path)


def test_truncated_real_mp4_names_frame(shared_data, tmp_path):
    """cat.mp4 remuxed with its index first (faststart), then cut: the frames before the cut come out."""
    src_path = shared_data / "videos/cat.mp4"
    fast = tmp_path / "cat_faststart.mp4"
    with av.open(str(src_path)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:
                packet.stream = out_stream
                out.mux(packet)
    data = fast.read_bytes()
    cut = tmp_path / "cat_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    source = open_source(str(cut))
    assert source.frame_count == 87  # the index still lists every frame
    got = []
    with pytest.raises(InputError, match=r"cat_cut\.mp4: decode error at frame \d+") as exc:
        for frame in source:
            got.append(frame.index)
    bad = int(re.search(r"frame (\d+)", str(exc.value)).group(1))
    assert 10 < bad < 87 and got == list(range(bad))

    # The original layout (index at the end) cut in half cannot even be opened.
    raw_cut = tmp_path / "cat_rawcut.mp4"
    raw_cut.write_bytes(src_path.read_bytes()[:100_000])
    with pytest.raises(InputError, match=r"cat_rawcut\.mp4: not a readable video"):
        open_source(str(raw_cut))


# ---------------------------------------------------------------- real clips


def test_real_cat_clip_all_frames(shared_data):
    with open_source(str(shared_data / "videos/cat.mp4")) as src:
        assert src.fps == pytest.approx(20.0)
        assert src.frame_count == 87
        n = 0
        for frame in src:
            check_frame(frame, 368, 480)
            assert frame.index == n
            n += 1
    assert n == 87


def test_real_bikes_clip_first_frames(shared_data):
    src = open_source(str(shared_data / "videos/bikes.mp4"), step=2)
    assert src.fps == pytest.approx(25.0)
    assert src.frame_count == 125
    indices = []
    with src:
        for frame in src:
            check_frame(frame, 640, 272)
            indices.append(frame.index)
            if len(indices) == 10:
                break
    assert indices == list(range(0, 20, 2))


def test_real_davis_jpg_folder(shared_data):
    src = open_source(str(shared_data / "frames_nogt/flow-davis"))
    assert src.frame_count == 3 and src.fps is None
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    for f in frames:
        check_frame(f, 854, 480)
    # cv2 reads BGR; the source must hand out RGB.
    bgr = cv2.imread(str(shared_data / "frames_nogt/flow-davis/00000.jpg"))
    np.testing.assert_array_equal(frames[0].image, bgr[:, :, ::-1])


# ---------------------------------------------------------------- image folders


@pytest.mark.parametrize("ext", [".png", ".ppm", ".bmp", ".tif", ".tiff", ".PNG"])
def test_folder_lossless_formats(tmp_path, ext):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (H, W, 3), np.uint8) for _ in range(3)]
    write_images(tmp_path / "f", [f"{i}{ext}" for i in range(3)], lambda i: imgs[i])
    frames = list(open_source(str(tmp_path / "f")))
    for frame, bgr in zip(frames, imgs):
        check_frame(frame)
        np.testing.assert_array_equal(frame.image, bgr[:, :, ::-1])  # RGB out


def test_folder_jpg_and_colour_order(tmp_path):
    """A pure-red BGR image must come out with R high (checks the BGR->RGB swap on a lossy format)."""
    def red(i):
        img = np.zeros((H, W, 3), np.uint8)
        img[:, :, 2] = 200  # BGR: channel 2 is red
        return img

    write_images(tmp_path / "f", ["a.jpg", "b.jpeg"], red)
    for frame in open_source(str(tmp_path / "f")):
        r, g, b = frame.image.reshape(-1, 3).mean(axis=0)
        assert r > 180 and g < 20 and b < 20


def test_folder_natural_order_and_ignored_files(tmp_path):
    folder = write_images(tmp_path / "f", ["frame10.png", "frame2.png", "frame1.png", "Frame3.png"])
    (folder / "notes.txt").write_text("not an image")
    (folder / ".frame0.png").write_bytes(b"macOS resource fork junk")
    (folder / "sub.png").mkdir()  # a folder that looks like an image
    src = open_source(str(folder))
    assert src.frame_count == 4
    frames = list(src)
    # natural order: frame1, frame2, Frame3, frame10 (written as levels 2, 1, 3, 0)
    assert levels(frames) == [level(2), level(1), level(3), level(0)]
    assert [f.index for f in frames] == [0, 1, 2, 3]


def test_folder_start_end_step(tmp_path):
    folder = write_images(tmp_path / "f", [f"img_{i:03d}.png" for i in range(10)])
    src = open_source(str(folder), start=1, end=8, step=3)
    assert src.frame_count == 3
    frames = list(src)
    assert [f.index for f in frames] == [1, 4, 7]
    assert levels(frames) == [level(1), level(4), level(7)]
    with pytest.raises(InputError, match="needs at least 2 frames, got 1 after start/end/step"):
        open_source(str(folder), start=9)


def test_folder_16bit_grey_rgba_palette(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    # 16-bit colour: 257 * k maps back to k exactly; 65535 -> 255; values round.
    img16 = np.zeros((H, W, 3), np.uint16)
    img16[:, :, 0] = 257 * 10  # B
    img16[:, :, 1] = 65535  # G
    img16[:, :, 2] = 128 + 257 * 100  # R: 100.498 -> 100
    assert cv2.imwrite(str(folder / "a.png"), img16)
    grey = np.tile(np.arange(W, dtype=np.uint8), (H, 1))
    assert cv2.imwrite(str(folder / "b.png"), grey)
    grey16 = np.full((H, W), 65535, np.uint16)
    assert cv2.imwrite(str(folder / "c.png"), grey16)
    bgra = np.zeros((H, W, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 1, 2, 3, 0  # fully transparent
    assert cv2.imwrite(str(folder / "d.png"), bgra)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((H, W, 3), (30, 60, 90), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "e.png")

    a, b, c, d, e = list(open_source(str(folder)))
    for f in (a, b, c, d, e):
        check_frame(f)
    assert tuple(a.image[0, 0]) == (100, 255, 10)
    np.testing.assert_array_equal(b.image, np.repeat(grey[:, :, None], 3, axis=2))
    assert (c.image == 255).all()
    assert tuple(d.image[0, 0]) == (3, 2, 1)  # alpha dropped, not composited
    assert tuple(e.image[0, 0]) == (30, 60, 90)


def test_folder_size_change_names_file(tmp_path):
    folder = write_images(tmp_path / "f", ["1.png", "2.png"])
    assert cv2.imwrite(str(folder / "3.png"), np.zeros((H + 2, W, 3), np.uint8))
    got = []
    with pytest.raises(InputError, match=r"3\.png: frame 2 is 64x50, but the first frame \(1\.png\) is 64x48"):
        for frame in open_source(str(folder)):
            got.append(frame.index)
    assert got == [0, 1]


def test_folder_unreadable_image_names_file(tmp_path):
    folder = write_images(tmp_path / "f", ["1.png", "2.png", "4.png"])
    (folder / "3.png").write_bytes(b"\x89PNG but not really")
    got = []
    with pytest.raises(InputError, match=r"3\.png: not a readable image \(frame 2\)$"):
        for frame in open_source(str(folder)):
            got.append(frame.index)
    assert got == [0, 1]
    (folder / "3.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"3\.png: not a readable image"):
        list(open_source(str(folder)))


def test_truncated_image_is_reported_once_without_decoder_lines(tmp_path):
    """OpenCV and libpng printed "[ WARN:0@...] ... PNG input buffer is incomplete" / "libpng error: ..."
    on stderr (from C++: only a real process shows it) before flowcli's own one-line error. Damaged PNGs
    are now refused before decoding (flowcli.pngcheck)."""
    import subprocess
    import sys
    noise = lambda i: np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)  # noqa: E731
    folder = write_images(tmp_path / "f", ["0.png", "1.png", "2.png"], make=noise)  # (also "libpng error: ...")
    whole = (folder / "2.png").read_bytes()
    (folder / "2.png").write_bytes(whole[:len(whole) // 2])
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "FLOWCLI_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "flowcli", "estimate", str(folder), "-o", str(tmp_path / "o"),
                           "--iters", "1", "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"flowcli: error: {folder / '2.png'}: not a readable image (frame 2)"]


def test_png_damage_is_found_and_trailing_bytes_are_not_damage(tmp_path):
    import subprocess
    import sys

    from flowcli.pngcheck import png_damage
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    png = png.tobytes()
    assert png_damage(png) is None and png_damage(b"GIF89a...") is None
    assert png_damage(png[:len(png) // 2]) == "cut short" and png_damage(png[:-1]) == "cut short"
    corrupt = bytearray(png)
    corrupt[len(png) // 2] ^= 0xFF  # inside the image data
    assert png_damage(bytes(corrupt)) == "damaged IDAT chunk"
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png + b"\0" * 64)  # bytes after IEND: decoders read the image
    assert read_image_rgb(folder / "0.png").shape == (64, 96, 3)
    (folder / "2.png").write_bytes(bytes(corrupt))
    env = {k: v for k, v in os.environ.items() if k != "FLOWCLI_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "flowcli", "estimate", str(folder), "-o", str(tmp_path / "o"),
                           "--iters", "1", "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1  # before: "libpng error: IDAT: CRC error" came first
    assert proc.stderr.splitlines() == [f"flowcli: error: {folder / '2.png'}: not a readable image (frame 2)"]


def test_empty_and_single_image_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"empty: no images"):
        open_source(str(empty))
    one = write_images(tmp_path / "one", ["a.png"])
    with pytest.raises(InputError, match=r"one: needs at least 2 frames, got 1$"):
        open_source(str(one))


# ---------------------------------------------------------------- stdin


def raw_frames(n: int, w: int = 5, h: int = 3) -> bytes:
    return b"".join(np.full((h, w, 3), i, np.uint8).tobytes() for i in range(n))


def test_stdin_frames(tmp_path):
    data = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).tobytes()  # 2 frames of 5x3
    src = open_source("-", size=(5, 3), stdin=io.BytesIO(data))
    assert src.name == "<stdin>" and src.fps is None and src.frame_count is None
    frames = list(src)
    assert [f.index for f in frames] == [0, 1]
    for f in frames:
        check_frame(f, 5, 3)
        assert f.image.flags.writeable
    np.testing.assert_array_equal(
        np.stack([f.image for f in frames]), np.frombuffer(data, np.uint8).reshape(2, 3, 5, 3)
    )


def test_stdin_selection_stops_reading_at_end():
    stream = io.BytesIO(raw_frames(10))
    frames = list(open_source("-", size=(5, 3), start=1, end=6, step=2, stdin=stream))
    assert [f.index for f in frames] == [1, 3, 5]
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 3, 5]
    assert stream.tell() == 6 * 5 * 3 * 3  # frames after `end` are left unread


def test_stdin_partial_frame():
    data = raw_frames(3) + b"\0" * 7
    got = []
    with pytest.raises(InputError, match=r"<stdin>: .*partial frame of 7 bytes.*does not divide by the frame size 5x3x3 = 45"):
        for frame in open_source("-", size=(5, 3), stdin=io.BytesIO(data)):
            got.append(frame.index)
    assert got == [0, 1, 2]


def test_stdin_too_few_frames_and_size_rules():
    with pytest.raises(InputError, match=r"<stdin>: needs at least 2 frames, got 0"):
        list(open_source("-", size=(5, 3), stdin=io.BytesIO(b"")))
    with pytest.raises(InputError, match=r"<stdin>: needs at least 2 frames, got 1"):
        list(open_source("-", size=(5, 3), stdin=io.BytesIO(raw_frames(1))))
    with pytest.raises(InputError, match="needs the frame size"):
        open_source("-", stdin=io.BytesIO(b""))
    with pytest.raises(InputError, match="size must be positive"):
        open_source("-", size=(0, 3), stdin=io.BytesIO(b""))
    with pytest.raises(InputError, match="only used for raw stdin"):
        open_source("clip.mp4", size=(5, 3))


# ---------------------------------------------------------------- selection and protocol


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(start=-1), "start must be >= 0"),
        (dict(step=0), "step must be >= 1"),
        (dict(step=-2), "step must be >= 1"),
        (dict(start=5, end=5), r"end \(5\) must be greater than start \(5\)"),
        (dict(start=5, end=2), "must be greater than start"),
        (dict(start=1.5), "start must be an integer"),
    ],
)
def test_bad_selection(kwargs, message):
    with pytest.raises(InputError, match=message):
        open_source("-", size=(5, 3), stdin=io.BytesIO(b""), **kwargs)


def test_single_pass_and_context_manager(tmp_path):
    path = write_video(tmp_path / "clip.avi", 3)
    with open_source(str(path)) as src:
        assert isinstance(src, FrameSource)
        assert len(list(src)) == 3
        with pytest.raises(RuntimeError, match="only once"):
            iter(src)
    src.close()  # closing twice is harmless


def test_frames_compare_by_identity():
    img = np.zeros((2, 2, 3), np.uint8)
    a, b = Frame(0, img), Frame(0, img)
    assert a == a and a != b
    assert len({a, b}) == 2
    with pytest.raises(AttributeError):
        a.index = 1  # frozen


# ---------------------------------------------------------------- memory


def _sources_of_200(tmp_path, kind) -> FrameSource:
    if kind == "video":
        return open_source(str(write_video(tmp_path / "long.avi", 200)))
    if kind == "folder":
        return open_source(str(write_images(tmp_path / "f", [f"{i}.png" for i in range(200)])))
    return open_source("-", size=(W, H), stdin=io.BytesIO(raw_frames(200, W, H)))


@pytest.mark.parametrize("kind", ["video", "folder", "stdin"])
def test_source_keeps_no_frames_alive(tmp_path, kind):
    """Frames the caller has dropped are freed: the source holds no references to them."""
    src = _sources_of_200(tmp_path, kind)
    refs = []
    for frame in src:
        refs.append(weakref.ref(frame.image))
        # The caller keeps the previous frame at most; everything older must be gone.
        if len(refs) > 2:
            assert refs[-3]() is None, f"frame {len(refs) - 3} still alive"
    assert len(refs) == 200
    del frame
    gc.collect()
    assert all(r() is None for r in refs)


@pytest.mark.parametrize("kind", ["folder", "stdin"])
def test_peak_memory_is_bounded(tmp_path, kind):
    """Streaming 200 frames allocates about one frame at a time (numpy/cv2 buffers are traced)."""
    src = _sources_of_200(tmp_path, kind)
    frame_bytes = W * H * 3
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        n = sum(1 for _ in src)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert n == 200
    assert peak < 10 * frame_bytes, f"peak {peak} bytes for {frame_bytes}-byte frames"
