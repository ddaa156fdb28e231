"""Streaming frame sources: a video file, a folder of images, or raw rgb24 on stdin.

Videos can be long and frames large, so a source never holds more than the frame
it is handing out: it decodes one frame, yields it, and forgets it. Whatever the
input, the caller sees the same thing: :class:`Frame` objects with an (H, W, 3)
uint8 RGB image and the frame's index in the original input, so outputs can be
named after the frames they came from even with ``start``/``step`` selection.

Every problem the user can fix (missing file, not a video, an image of the wrong
size, a broken stream, too few frames) is an :class:`~flowcli.errors.InputError`
whose one-line message names the file and, where it matters, the frame index.
"""
from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import av
import cv2
import numpy as np

from .errors import InputError
from .pngcheck import png_damage

__all__ = ["DecodeDamage", "Frame", "FrameSource", "folder_images", "open_source", "read_image_rgb",
           "IMAGE_EXTENSIONS", "MAX_FRAME_PIXELS", "MIN_FRAMES"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")
MIN_FRAMES = 2  # optical flow needs pairs
# Largest raw stdin frame, width x height: 2**28 pixels (e.g. 16384 x 16384; FFmpeg refuses images of
# about this size too). A larger --size is almost surely a typo, and would fail allocating its frame
# buffer (100000x100000 rgb24 is 30 GB) rather than on the data.
MAX_FRAME_PIXELS = 1 << 28


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame. ``eq=False``: frames compare (and hash) by identity, not pixels."""

    index: int  # index in the original source, before start/end/step selection
    image: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous


@dataclass
class DecodeDamage:
    """Frames whose decoding FFmpeg reported errors in, while it concealed them and went on.

    A few damaged bytes in an h264 stream give no exception: the decoder logs
    "error while decoding MB ..." and fills the gap, and frames predicted from the damaged one
    are wrong too. Their flow is then wrong, so the run says so (a warning, and ``damaged_frames``
    in the JSON report) instead of failing a long video over one glitch. Fixed size: a count and
    the first occurrence.
    """

    frames: int = 0
    first_index: int | None = None
    first_message: str = ""

    def note(self, index: int, messages: list[str]) -> None:
        self.frames += 1
        if self.first_index is None:
            self.first_index, self.first_message = index, messages[0]

    def warning(self, name: str) -> str | None:
        """One line for the user, or None if nothing was damaged."""
        if not self.frames:
            return None
        return (f"{name}: the decoder reported damaged data in {self.frames} frame(s), first at or after "
                f"frame {self.first_index} ({self.first_message}); flows from there on may be wrong")


class FrameSource:
    """A single-pass iterable of :class:`Frame`; also a context manager.

    Attributes: ``name`` (the path, or ``"<stdin>"``), ``fps`` (None when the
    input does not say), ``frame_count`` (frames this source will yield after
    start/end/step, None when not knowable up front; for videos it comes from
    container metadata), ``damage`` (:class:`DecodeDamage`: errors the video
    decoder concealed).

    Iteration raises InputError when it ends having produced fewer than
    MIN_FRAMES frames, so every consumer gets the "needs at least 2 frames"
    check without having to count. Sources whose count is known up front (image
    folders) raise that error already in :func:`open_source`.
    """

    def __init__(self, name: str, *, start: int, end: int | None, step: int,
                 fps: float | None = None, frame_count: int | None = None):
        self.name = name
        self.fps = fps
        self.frame_count = frame_count
        self._start, self._end, self._step = start, end, step
        self._iterated = False
        self.damage = DecodeDamage()

    @property
    def end(self) -> int | None:
        """The --end index (exclusive) this source stops before, or None."""
        return self._end

    # -- selection helpers shared by the subclasses

    def _selected(self, index: int) -> bool:
        return index >= self._start and (index - self._start) % self._step == 0

    def _past_end(self, index: int) -> bool:
        return self._end is not None and index >= self._end

    def _too_few(self, got: int) -> InputError:
        selection = self._start != 0 or self._end is not None or self._step != 1
        note = " after start/end/step selection" if selection else ""
        return InputError(f"{self.name}: needs at least {MIN_FRAMES} frames, got {got}{note}")

    # -- iteration

    def _frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError(f"{self.name}: a FrameSource can be iterated only once")
        self._iterated = True
        return self._counted()

    def _counted(self) -> Iterator[Frame]:
        got = 0
        try:
            for frame in self._frames():
                got += 1
                yield frame
        finally:
            self.close()
        if got < MIN_FRAMES:
            raise self._too_few(got)

    def close(self) -> None:
        """Release the underlying file or container (safe to call twice)."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps}, frame_count={self.frame_count})"


def _ffmpeg_reason(exc: Exception) -> str:
    """The human part of a PyAV error ("Invalid data found when processing input")."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _selected_count(total: int, start: int, end: int | None, step: int) -> int:
    stop = total if end is None else min(end, total)
    return len(range(start, stop, step))


class VideoSource(FrameSource):
    """Anything FFmpeg can demux and decode, through PyAV, one frame at a time.

    Frames before ``start`` or between ``step``s must still be decoded (codecs
    predict from earlier frames) but are not converted to RGB, which is most of
    the per-frame cost; decoding stops as soon as ``end`` is reached.

    A damaged stream is reported when FFmpeg reports it (a cut h264 mp4 fails
    in the decoder, naming the frame). Some cut files (avi, mkv, mpeg4-in-mp4)
    just end early without any error from FFmpeg; ``frame_count`` then says more
    frames than come out, and we do not second-guess the demuxer here. Errors the
    decoder conceals (it logs them and goes on) are collected in ``damage``:
    FFmpeg's log is captured at ERROR level around each decode call.
    """

    def __init__(self, path: Path, *, start: int, end: int | None, step: int):
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"{path}: not a readable video ({_ffmpeg_reason(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        # stream.frames is 0 when the container does not record it (mkv, webm).
        count = _selected_count(stream.frames, start, end, step) if stream.frames > 0 else None
        super().__init__(str(path), start=start, end=end, step=step, fps=fps, frame_count=count)
        self._container = container
        self._stream = stream

    def _frames(self) -> Iterator[Frame]:
        with _ffmpeg_errors_logged():
            yield from self._decode()

    def _decode(self) -> Iterator[Frame]:
        decoded = self._container.decode(self._stream)
        index, first_size = 0, None
        while not self._past_end(index):
            try:
                # local=False: slice threads log from their own threads. While a frame decodes, an
                # error another thread logs (a --video encoder) would be counted too: rare, and only
                # ever an over-report.
                with av.logging.Capture(local=False) as logs:
                    frame = next(decoded, None)
                errors = [msg.strip() for level, _, msg in logs if level <= av.logging.ERROR]
                if errors:
                    self.damage.note(index, errors)
                if frame is None:
                    return
                image = frame.to_ndarray(format="rgb24") if self._selected(index) else None
            except av.FFmpegError as exc:
                raise InputError(f"{self.name}: decode error at frame {index} ({_ffmpeg_reason(exc)})") from exc
            if image is not None:
                size = (frame.width, frame.height)
                first_size = first_size or size
                if size != first_size:  # legal in some streams, but flow needs equal sizes
                    raise InputError(f"{self.name}: frame {index} is {size[0]}x{size[1]}, "
                                     f"but the first frame is {first_size[0]}x{first_size[1]}")
                yield Frame(index, np.ascontiguousarray(image))
            index += 1

    def close(self) -> None:
        self._container.close()


@contextlib.contextmanager
def _ffmpeg_errors_logged():
    """FFmpeg's log at ERROR level, each message on its own (PyAV's default drops the log and folds
    repeats), for the time of one decode; the previous settings are restored after it."""
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)
    try:
        yield
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)


def _natural_key(name: str) -> tuple:
    """Sort key putting frame2 before frame10 (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def read_image_rgb(path: Path) -> np.ndarray:
    """Read one image as (H, W, 3) uint8 RGB, C-contiguous.

    Grey is tiled to RGB, alpha is dropped, and 16-bit samples are scaled to 8 bits
    by rounding v * 255 / 65535 (so 0 -> 0, 65535 -> 255 and 257 * k -> k).
    EXIF orientation is not applied: pixels are used as stored, as with videos.
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size and not png_damage(data) else None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{path}: unsupported pixel type {img.dtype} (need 8- or 16-bit integers)")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        img = cv2.cvtColor(img if img.ndim == 2 else img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        raise InputError(f"{path}: unsupported image with {channels} channels")
    return np.ascontiguousarray(img)


def folder_images(path: Path) -> list[Path]:
    """The images of a folder in natural order: item k is frame index k of :class:`FolderSource`.

    Shared so that whatever matches files to frame indices (``flowcli viz --image``) numbers
    the folder exactly as ``flowcli estimate`` does. Other files and dotfiles are ignored.
    """
    try:
        names = [p.name for p in path.iterdir()
                 if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    except OSError as exc:
        raise InputError(f"{path}: cannot list folder ({exc.strerror or exc})") from exc
    if not names:
        raise InputError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in folder")
    return [path / name for name in sorted(names, key=_natural_key)]


class FolderSource(FrameSource):
    """The images of one folder in natural order; other files and dotfiles are ignored.

    All images must have the size of the first selected one: a flow between
    frames of different sizes is meaningless, so a mismatch is an error, not a resize.
    """

    def __init__(self, path: Path, *, start: int, end: int | None, step: int):
        files = folder_images(path)
        stop = len(files) if end is None else min(end, len(files))
        self._files = [(i, files[i]) for i in range(start, stop, step)]
        super().__init__(str(path), start=start, end=end, step=step, frame_count=len(self._files))
        if len(self._files) < MIN_FRAMES:
            raise self._too_few(len(self._files))

    def _frames(self) -> Iterator[Frame]:
        first_shape, first_file = None, None
        for index, file in self._files:
            try:
                image = read_image_rgb(file)
            except InputError as exc:  # say where in the sequence it stopped
                raise InputError(f"{exc} (frame {index})") from exc
            if first_shape is None:
                first_shape, first_file = image.shape, file
            elif image.shape != first_shape:
                h, w = image.shape[:2]
                raise InputError(
                    f"{file}: frame {index} is {w}x{h}, but the first frame "
                    f"({first_file.name}) is {first_shape[1]}x{first_shape[0]}"
                )
            yield Frame(index, image)


class StdinSource(FrameSource):
    """Raw rgb24 frames, W*H*3 bytes each, back to back (e.g. from ``ffmpeg -f rawvideo``).

    Raw bytes carry no size, so ``size=(W, H)`` is required; a stream whose
    length is not a whole number of frames is an error rather than a silently
    dropped tail, since it usually means the size is wrong.
    """

    def __init__(self, stream: BinaryIO, size: tuple[int, int], *, start: int, end: int | None, step: int):
        super().__init__("<stdin>", start=start, end=end, step=step)
        self._stream = stream
        self._width, self._height = size

    def _read_frame(self, frame_bytes: int) -> bytearray | None:
        """Read exactly one frame; None at a clean end of stream."""
        buf = bytearray(frame_bytes)
        view, got = memoryview(buf), 0
        while got < frame_bytes:
            n = self._stream.readinto(view[got:])
            if not n:
                break
            got += n
        if got == 0:
            return None
        if got < frame_bytes:
            raise InputError(
                f"{self.name}: input ends with a partial frame of {got} bytes; the byte count does not "
                f"divide by the frame size {self._width}x{self._height}x3 = {frame_bytes} bytes"
            )
        return buf

    def _frames(self) -> Iterator[Frame]:
        frame_bytes = self._width * self._height * 3
        index = 0
        while not self._past_end(index):
            buf = self._read_frame(frame_bytes)
            if buf is None:
                return
            if self._selected(index):
                image = np.frombuffer(buf, np.uint8).reshape(self._height, self._width, 3)
                yield Frame(index, image)
            index += 1


def check_selection(start: int, end: int | None, step: int) -> None:
    for name, value in (("start", start), ("end", end), ("step", step)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise InputError(f"{name} must be an integer, got {value!r}")
    if start < 0:
        raise InputError(f"start must be >= 0, got {start}")
    if step < 1:
        raise InputError(f"step must be >= 1, got {step}")
    if end is not None and end <= start:
        raise InputError(f"end ({end}) must be greater than start ({start})")


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height), got {size!r}") from None
    if width <= 0 or height <= 0:
        raise InputError(f"size must be positive, got {width}x{height}")
    if width * height > MAX_FRAME_PIXELS:
        raise InputError(f"size {width}x{height} is {width * height} pixels; frames of at most "
                         f"{MAX_FRAME_PIXELS} pixels (e.g. 16384x16384) are supported")
    return width, height


def open_source(spec: str, *, size: tuple[int, int] | None = None, start: int = 0,
                end: int | None = None, step: int = 1, stdin: BinaryIO | None = None) -> FrameSource:
    """Open a video file, an image folder, or ``"-"`` (raw rgb24 on stdin) as a FrameSource.

    ``start`` (inclusive), ``end`` (exclusive, None = to the end) and ``step``
    select frames by their index in the input. ``size=(W, H)`` is required for
    stdin and refused elsewhere (frames are never resized here). ``stdin`` is a
    binary stream with ``readinto`` (default ``sys.stdin.buffer``).
    """
    check_selection(start, end, step)
    if str(spec) == "-":
        if size is None:
            raise InputError("<stdin>: raw rgb24 input needs the frame size (width, height)")
        stream = stdin if stdin is not None else sys.stdin.buffer
        return StdinSource(stream, _check_size(size), start=start, end=end, step=step)
    if size is not None:
        raise InputError(f"{spec}: a frame size is only used for raw stdin input ('-')")
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, start=start, end=end, step=step)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InputError(f"{path}: a single image; give a folder of images or a video")
    return VideoSource(path, start=start, end=end, step=step)
