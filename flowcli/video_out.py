"""Streaming, atomic MP4 output for rendered frames.

:class:`Mp4Writer` encodes ``uint8`` RGB frames to an H.264 MP4 through PyAV,
one frame at a time (frames are never collected in memory).

Codec
    ``libx264`` (H.264, CRF 18, yuv420p, BT.709 tagged) when this PyAV build has
    it; otherwise it falls back to FFmpeg's native ``mpeg4`` encoder (MPEG-4 Part
    2, in the same .mp4 container, also yuv420p). ``Mp4Writer.codec`` tells which
    one was used. The PyAV wheels ship libx264, so the fallback is for unusual
    FFmpeg builds.

Sizes
    yuv420p needs an even width and height: an odd-sized frame gets one extra
    row/column, a copy of its last one (edge replicate). Every frame must have the
    size of the first one.

Atomicity
    The video is written to a temp file in the destination folder (same
    ``.mp4`` suffix) and renamed onto the destination by :meth:`Mp4Writer.close`.
    If anything fails (or an exception leaves the ``with`` block), the temp file is
    removed and the destination is untouched. An existing destination is refused
    with :class:`~flowcli.errors.OutputExistsError` unless ``overwrite=True``.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .atomic import atomic_path

__all__ = ["Mp4Writer", "default_codec"]


def default_codec() -> str:
    """``"libx264"`` if this PyAV/FFmpeg can encode with it, else ``"mpeg4"``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return "mpeg4"


def _even_pad(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
    return frame


class Mp4Writer:
    """Write RGB uint8 frames ``(H, W, 3)`` to an MP4 file, atomically.

    Usage::

        with Mp4Writer("out.mp4", fps=10) as video:
            for img in images:
                video.write(img)
        # out.mp4 appears only here, complete

    Args:
        path: destination ``.mp4`` file.
        fps: frame rate (int, float or Fraction; e.g. 10, 29.97).
        overwrite: replace an existing ``path``; otherwise it is refused at once.
        crf: libx264 quality (0 = lossless, 18 = visually lossless, 23 = default).
        codec: force an encoder name (``None`` = :func:`default_codec`).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 10, overwrite: bool = False,
                 crf: int = 18, codec: str | None = None) -> None:
        fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.crf = int(crf)
        self.codec = codec or default_codec()
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the input frames
        self._stream = None
        self._closed = False
        self._atomic = atomic_path(self.path, overwrite)
        self._tmp = self._atomic.__enter__()  # refuses an existing path here
        try:
            self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                      options={"movflags": "+faststart"})
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise

    # -- context manager -------------------------------------------------------
    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing -----------------------------------------------------------------
    def _add_stream(self, width: int, height: int) -> None:
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:
            stream.bit_rate = max(2_000_000, stream.width * stream.height * 30)
        cc = stream.codec_context
        cc.color_range = 1       # MPEG / limited range
        cc.colorspace = 1        # BT.709 matrix
        cc.color_primaries = 1   # BT.709
        cc.color_trc = 1         # BT.709
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame now."""
        if self._closed:
            raise ValueError("Mp4Writer is closed")
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("frame is empty")
        if self.size is None:
            self.size = (w, h)
            self._add_stream(w, h)
        elif self.size != (w, h):
            raise ValueError(f"frame {self.frames_written} is {w}x{h}, but the video is "
                             f"{self.size[0]}x{self.size[1]} (all frames must have one size)")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even_pad(frame)), format="rgb24")
        vf = vf.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range=1)
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, finish the file and rename it onto ``path``.

        Raises ValueError (and leaves nothing behind) if no frame was written.
        """
        if self._closed:
            return self.path
        try:
            if self._stream is None:
                raise ValueError(f"{self.path}: no frames were written, no video saved")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._closed = True
        self._atomic.__exit__(None, None, None)  # rename temp -> path
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        """Stop without saving: close the container and remove the temp file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the file is discarded anyway
            pass
        err = exc if exc is not None else RuntimeError("aborted")
        try:
            self._atomic.__exit__(type(err), err, err.__traceback__)
        except BaseException as raised:  # the generator re-raises what it was given
            if raised is not err:
                raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Mp4Writer({str(self.path)!r}, fps={self.fps}, codec={self.codec!r}, {state}, frames={self.frames_written})"
