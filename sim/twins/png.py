"""A real, small PNG of a scope screen, written with zlib and struct only (no imaging library).

`render_screen` draws the graticule and each channel's trace (8-bit codes, 0 at the bottom of
the screen, 255 at the top) into an indexed-colour image and encodes it as PNG: signature,
IHDR, PLTE, IDAT (zlib), IEND, each chunk with its CRC.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence

SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 600, 400  # 12 x 8 divisions of 50 pixels
DIVISIONS = (12, 8)
# palette: background, graticule, then one colour per channel (as on the DS1000Z)
PALETTE = [(0, 0, 0), (70, 70, 70), (255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 128, 255)]
_GRID, _FIRST_TRACE = 1, 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(width: int, height: int, rows: Sequence[bytes | bytearray]) -> bytes:
    """An 8-bit indexed-colour PNG of `rows` (one palette index per pixel) with PALETTE."""
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    palette = b"".join(bytes(colour) for colour in PALETTE)
    raw = b"".join(b"\x00" + bytes(row) for row in rows)  # filter type 0 on every row
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", palette)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def render_screen(traces: Mapping[int, Sequence[int]]) -> bytes:
    """The screen as PNG: a dotted graticule, and for each channel (1-4) its codes, one screen
    column per group of samples drawn from its lowest to its highest code (as a scope draws)."""
    pixels = [bytearray(WIDTH) for _ in range(HEIGHT)]
    columns, rows = DIVISIONS
    for division in range(columns + 1):
        x = min(division * WIDTH // columns, WIDTH - 1)
        for y in range(0, HEIGHT, 4):
            pixels[y][x] = _GRID
    for division in range(rows + 1):
        y = min(division * HEIGHT // rows, HEIGHT - 1)
        for x in range(0, WIDTH, 4):
            pixels[y][x] = _GRID
    for channel, codes in sorted(traces.items()):
        if not codes:
            continue
        colour = _FIRST_TRACE + (channel - 1) % (len(PALETTE) - _FIRST_TRACE)
        count = len(codes)
        previous: int | None = None
        for x in range(WIDTH):
            group = codes[
                x * count // WIDTH : max((x + 1) * count // WIDTH, x * count // WIDTH + 1)
            ]
            ys = [(255 - code) * (HEIGHT - 1) // 255 for code in group]
            low, high = min(ys), max(ys)
            if previous is not None:  # join to the previous column
                low, high = min(low, previous), max(high, previous)
            for y in range(low, high + 1):
                pixels[y][x] = colour
            previous = ys[-1]
    return encode_png(WIDTH, HEIGHT, pixels)
