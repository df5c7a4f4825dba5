"""The body of an HTTP fallback POST: frames, each preceded by its length as a varuint.

Shared by the server (``http_transport.py``) and the Python client; the
JavaScript ``CollabTransport`` writes the same framing (lib0's varuint).
"""

from __future__ import annotations

from collections.abc import Iterable

#: A length needs at most this many varuint bytes (2**70 > any body).
_MAX_VARUINT_BYTES = 10


class FramingError(ValueError):
    """The body is not a sequence of length-prefixed frames."""


def encode_frames(frames: Iterable[bytes]) -> bytes:
    """Concatenate ``frames``, each after its length as a varuint."""
    out = bytearray()
    for frame in frames:
        size = len(frame)
        while size >= 0x80:
            out.append((size & 0x7F) | 0x80)
            size >>= 7
        out.append(size)
        out += frame
    return bytes(out)


def decode_frames(body: bytes, max_frame: int | None = None) -> list[bytes]:
    """Split a body into frames; ``FramingError`` if it is truncated or a frame is too big."""
    frames = []
    pos, end = 0, len(body)
    while pos < end:
        size = shift = 0
        for _ in range(_MAX_VARUINT_BYTES):
            if pos >= end:
                raise FramingError("truncated frame length")
            byte = body[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        else:
            raise FramingError("oversized frame length")
        if max_frame is not None and size > max_frame:
            raise FramingError(f"a frame of {size} bytes is above the limit of {max_frame}")
        if pos + size > end:
            raise FramingError(f"truncated frame: {size} bytes announced, {end - pos} present")
        frames.append(body[pos : pos + size])
        pos += size
    return frames
