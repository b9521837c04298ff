"""Sans-I/O frame codec: the byte stream between two peers is a sequence of frames.

A frame is a 4-byte unsigned big-endian length ``n`` followed by ``n`` payload bytes,
with ``1 <= n <= max_frame_size``. Empty frames are not allowed (ping/pong messages do
the keepalive). ``FrameDecoder`` turns arbitrary chunks of the stream into whole frames;
once it has seen an invalid length the stream cannot be resynchronised, so the decoder
refuses every later input and the connection must be closed.
"""

from __future__ import annotations

from p2p.errors import FrameError

HEADER_SIZE = 4
# A proposal or block response carries a whole block (chain.block.MAX_BLOCK_SIZE = 4 MiB)
# plus its certificate, proposal and AEAD tag, hence 4 MiB + 1 MiB of headroom.
DEFAULT_MAX_FRAME_SIZE = 5 * 1024 * 1024
ABSOLUTE_MAX_FRAME_SIZE = (1 << 32) - 1


def _check_limit(max_frame_size: int) -> int:
    if (not isinstance(max_frame_size, int) or isinstance(max_frame_size, bool)
            or not 1 <= max_frame_size <= ABSOLUTE_MAX_FRAME_SIZE):
        raise ValueError(f"max frame size must be 1..{ABSOLUTE_MAX_FRAME_SIZE}")
    return max_frame_size


def encode_frame(payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Return ``payload`` framed (length prefix + payload)."""
    n = len(payload)
    if n == 0:
        raise FrameError("empty frame")
    if n > max_frame_size:
        raise FrameError(f"frame of {n} bytes exceeds limit of {max_frame_size}")
    return n.to_bytes(HEADER_SIZE, "big") + bytes(payload)


def parse_header(header: bytes, max_frame_size: int) -> int:
    """Payload length announced by a 4-byte header, refused if empty or above the limit."""
    if len(header) != HEADER_SIZE:
        raise FrameError("frame header must be 4 bytes")
    n = int.from_bytes(header, "big")
    if n == 0:
        raise FrameError("empty frame")
    if n > max_frame_size:
        raise FrameError(f"frame of {n} bytes exceeds limit of {max_frame_size}")
    return n


class FrameDecoder:
    """Incremental decoder: ``feed`` chunks, get back the frames they complete."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = _check_limit(max_frame_size)
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame (bounded by header + max frame)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return every frame completed by it, in order.

        Raises ``FrameError`` on an empty or oversize frame; the frames completed before
        the bad header in the same call are lost with the connection, which is closed.
        """
        if self._error is not None:
            raise FrameError(f"stream already failed: {self._error}")
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        pos = 0
        try:
            while True:
                if self._need is None:
                    if len(buf) - pos < HEADER_SIZE:
                        break
                    self._need = parse_header(bytes(buf[pos:pos + HEADER_SIZE]),
                                              self.max_frame_size)
                    pos += HEADER_SIZE
                if len(buf) - pos < self._need:
                    break
                frames.append(bytes(buf[pos:pos + self._need]))
                pos += self._need
                self._need = None
        except FrameError as exc:
            self._error = str(exc)
            self._buf = bytearray()
            raise
        del buf[:pos]
        return frames
