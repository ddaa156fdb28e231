"""A PNG's chunk structure, checked before the file is decoded.

For a PNG cut short or with a damaged chunk, libpng prints its own "libpng error: ..." line on
stderr next to flowcli's one-line error (no OpenCV setting silences it). Such files are refused
here first, without decoding; bytes after the IEND chunk are ignored, as decoders ignore them.
"""
from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_damage(data) -> str | None:
    """Why ``data`` (bytes or a uint8 array), a PNG by its signature, cannot be decoded cleanly: "cut
    short" or "damaged <chunk> chunk"; None for an intact PNG, and for data that is not a PNG."""
    data = memoryview(data).cast("B")
    if bytes(data[:8]) != SIGNATURE:
        return None
    pos = 8
    while True:
        if pos + 8 > len(data):
            return "cut short"
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return "cut short"
        if zlib.crc32(data[pos + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            return f"damaged {kind.decode('latin-1')} chunk"
        if kind == b"IEND":
            return None
        pos = end
