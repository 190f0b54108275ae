"""Streaming PNG encoder: scanlines from an iterator of row blocks, adaptive filtering, zlib.

Chosen over pypng (which writes from a row iterator too) because pypng never filters
scanlines: its files of a smooth 16-bit matte are much larger, at about the same speed
(measured in docs/usage.md, "Writing large PNGs").
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["write_png"]


def _png_chunk(f, tag: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)))
    f.write(tag)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF))


def _png_filter(raw: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    """Filter scanlines (PNG spec, section 9), choosing per line the filter whose
    output has the smallest sum of absolute signed bytes (the spec's heuristic).

    ``raw`` is (rows, bytes) uint8, ``prior`` the line above the first (zeros at the
    top of the image). Encoding reads only unfiltered bytes, so unlike decoding it
    vectorises over whole lines: Paeth included.
    """
    x = raw.astype(np.int16)
    b = np.concatenate([prior[None].astype(np.int16), x[:-1]])  # above
    a = np.zeros_like(x)  # left (bpp bytes back)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)  # above-left
    c[:, bpp:] = b[:, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    # filter types 0 none, 1 sub, 2 up, 4 paeth (3, average, rarely wins)
    candidates = np.stack([x, x - a, x - b, x - paeth]).astype(np.uint8)
    score = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    best = score.argmin(axis=0)
    out = np.empty((x.shape[0], x.shape[1] + 1), np.uint8)
    out[:, 0] = np.array([0, 1, 2, 4], np.uint8)[best]
    out[:, 1:] = candidates[best, np.arange(x.shape[0])]
    return out


def write_png(rows: Iterable[np.ndarray], target: Path, shape: tuple, dtype) -> None:
    """Write a PNG from row blocks arriving top to bottom (memory: one block).

    Parameters
    ----------
    rows : iterable of (h, W[, C]) numpy arrays
        Consecutive bands of the image, of any heights adding up to ``H``.
    target : Path
    shape : (H, W) or (H, W, C) tuple, C <= 4
        C = 2 is grey + alpha, 3 RGB, 4 RGBA.
    dtype : uint8 or uint16
    """
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    depth = np.dtype(dtype).itemsize * 8
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]  # grey, grey+alpha, RGB, RGBA
    bpp = c * depth // 8
    line = w * bpp
    # Filter in slabs of ~0.5 MB of scanlines: bounded temporaries for any width.
    slab = max(1, 2**19 // line)
    compressor = zlib.compressobj(6)
    prior = np.zeros(line, np.uint8)
    with open(target, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
        for block in rows:
            if depth == 16:
                block = block.astype(">u2")  # PNG is big-endian
            raw = np.ascontiguousarray(block).view(np.uint8).reshape(block.shape[0], line)
            for y in range(0, raw.shape[0], slab):
                part = raw[y : y + slab]
                data = compressor.compress(_png_filter(part, prior, bpp).tobytes())
                prior = part[-1]
                if data:
                    _png_chunk(f, b"IDAT", data)
        _png_chunk(f, b"IDAT", compressor.flush())
        _png_chunk(f, b"IEND", b"")
