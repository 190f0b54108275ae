"""napari_hrmatt.io.writers: round trips, the PNG encoder, TIFF tiling, streaming, dtypes."""

from __future__ import annotations

import struct
import threading
import zlib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_hrmatt.io import (
    open_image,
    save_alpha,
    save_image,
)

from .io_helpers import RNG, _alpha, _leftovers, _quantized


@pytest.mark.parametrize(
    ("ext", "bit_depth", "dtype"),
    [
        ("png", None, np.uint8),
        ("png", 8, np.uint8),
        ("png", 16, np.uint16),
        ("tif", None, np.uint8),
        ("tiff", 16, np.uint16),
        ("zarr", None, np.float32),
        ("zarr", 8, np.uint8),
        ("ome.zarr", 16, np.uint16),
        ("ome.zarr", None, np.float32),
    ],
)
def test_float_alpha_round_trip(tmp_path, ext, bit_depth, dtype):
    alpha = _alpha()
    lazy = da.from_array(alpha, chunks=(30, 40))  # uneven: 83 = 30 + 30 + 23
    out = save_alpha(lazy, tmp_path / f"alpha.{ext}", bit_depth=bit_depth)
    assert out == tmp_path / f"alpha.{ext}"
    back = open_image(out)
    assert isinstance(back, da.Array)
    assert back.dtype == dtype and back.shape == alpha.shape
    expected = alpha if dtype == np.float32 else _quantized(alpha, dtype)
    np.testing.assert_array_equal(back.compute(), expected)
    assert _leftovers(tmp_path) == [out.name]  # no partial sibling left behind


# 16-bit colour PNG is checked by the reference decoder below (Pillow reads it at 8 bits).
@pytest.mark.parametrize(
    ("ext", "dtype"),
    [("png", np.uint8), ("tif", np.uint8), ("tif", np.uint16), ("zarr", np.uint16)],
)
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_integer_colour_round_trip(tmp_path, ext, channels, dtype):
    image = RNG.integers(0, np.iinfo(dtype).max + 1, (37, 45, channels)).astype(dtype)
    out = save_image(da.from_array(image, chunks=(16, 20, channels)), tmp_path / f"im.{ext}")
    back = open_image(out).compute()
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)


def _decode_png(path: Path) -> np.ndarray:
    """A small reference PNG decoder (PNG spec, sections 5, 9, 11), pure Python.

    Written independently of the encoder: it undoes all five filter types byte by
    byte and checks every CRC, so it also catches a writer that Pillow tolerates.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour_type = header[:4]
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour_type]
    bpp = channels * depth // 8
    stride = w * bpp
    raw = zlib.decompress(idat)
    assert len(raw) == h * (stride + 1)
    prior = bytearray(stride)
    rows = []
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            if ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            else:
                assert ftype == 0, ftype
                pred = 0
            line[i] = (line[i] + pred) % 256
        rows.append(bytes(line))
        prior = line
    dtype = np.dtype(">u2") if depth == 16 else np.dtype(np.uint8)
    arr = np.frombuffer(b"".join(rows), dtype).reshape(h, w, channels)
    return arr.astype(dtype.newbyteorder("=")).squeeze(-1) if channels == 1 else arr


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_writer_against_reference_decoder(tmp_path, channels, dtype):
    # Smooth ramps plus noise, so that every filter type wins somewhere.
    yy, xx = np.mgrid[:13, :19]
    base = (yy * 9 + xx * 5)[..., None] + RNG.integers(0, 4, (13, 19, channels))
    image = (base * (np.iinfo(dtype).max // 300)).astype(dtype)
    if channels == 1:
        image = image[..., 0]
    out = save_image(da.from_array(image, chunks=5), tmp_path / "ref.png")
    np.testing.assert_array_equal(_decode_png(out), image)


def test_tiff_is_tiled_and_compressed(tmp_path):
    alpha = _alpha((300, 530), seed=3)
    out = save_alpha(da.from_array(alpha, chunks=(70, 200)), tmp_path / "a.tif", bit_depth=16)
    np.testing.assert_array_equal(tifffile.imread(out), _quantized(alpha, np.uint16))
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.compression != tifffile.COMPRESSION.NONE


@pytest.mark.parametrize("ext", ["tif", "png"])
def test_files_are_streamed_block_row_by_block_row(tmp_path, ext):
    """Rows already computed are on disk before later rows are computed."""
    alpha = _alpha((768, 300), seed=4)  # noise compresses badly: every band is visible
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(x, block_info=None):
        partial = list(tmp_path.glob(".a.*.partial-*"))
        size = partial[0].stat().st_size if partial else -1
        with lock:
            seen.append((block_info[0]["chunk-location"][0], size))
        return x

    lazy = da.from_array(alpha, chunks=(256, 100)).map_blocks(record, dtype=np.float32)
    out = save_alpha(lazy, tmp_path / f"a.{ext}", bit_depth=16, progress=True)
    np.testing.assert_array_equal(open_image(out).compute(), _quantized(alpha, np.uint16))
    assert len(seen) == lazy.npartitions  # every block computed exactly once
    rows = [r for r, _ in seen]
    assert rows == sorted(rows)  # one block-row after the other
    first = max(size for r, size in seen if r == 0)
    last = min(size for r, size in seen if r == 2)
    assert last > first + 100_000  # rows 0 and 1 (2 x 150 kB of noise) were written


@pytest.mark.parametrize(
    ("value", "match"), [(np.nan, "NaN"), (1.5, r"must lie in \[0, 1\]"), (-0.2, r"\[0, 1\]")]
)
def test_bad_float_values_raise_while_writing(tmp_path, value, match):
    alpha = _alpha((40, 40))
    alpha[30, 33] = value
    with pytest.raises(ValueError, match=match):
        save_alpha(da.from_array(alpha, chunks=16), tmp_path / "a.png")
    assert _leftovers(tmp_path) == []


def test_solver_rounding_noise_is_clipped(tmp_path):
    alpha = np.array([[-1e-6, 1 + 1e-6]], np.float32)
    back = open_image(save_alpha(alpha, tmp_path / "a.png")).compute()
    np.testing.assert_array_equal(back, [[0, 255]])


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((2, 3, 4, 5), np.uint8), "can only save"),
        (np.zeros((4, 4, 5), np.uint8), "can only save"),
        (np.zeros((4, 4), np.int32), "cannot save dtype int32"),
        (np.zeros((0, 4), np.uint8), "empty"),
    ],
)
def test_save_rejects_non_images(tmp_path, array, match):
    with pytest.raises(ValueError, match=match):
        save_image(array, tmp_path / "x.tif")


def test_save_alpha_requires_2d(tmp_path):
    with pytest.raises(ValueError, match=r"alpha must be 2D"):
        save_alpha(np.zeros((4, 4, 3), np.float32), tmp_path / "a.png")


@pytest.mark.parametrize(
    ("array", "bit_depth", "expected"),
    [
        (np.array([[0, 1, 255]], np.uint8), 16, [[0, 257, 65535]]),
        (np.array([[0, 257, 65535, 200]], np.uint16), 8, [[0, 1, 255, 1]]),
        (np.array([[False, True]]), None, [[0, 255]]),
    ],
)
def test_integer_bit_depth_conversion(tmp_path, array, bit_depth, expected):
    out = save_image(array, tmp_path / "x.tif", bit_depth=bit_depth)
    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_bad_bit_depth(tmp_path):
    with pytest.raises(ValueError, match="bit_depth must be 8 or 16"):
        save_image(np.zeros((4, 4), np.float32), tmp_path / "x.png", bit_depth=12)


def test_save_reads_array_likes_by_region(tmp_path):
    source = zarr.create_array(tmp_path / "src.zarr", shape=(70, 50), chunks=(16, 16), dtype="f4")
    source[:] = _alpha((70, 50))
    out = save_alpha(source, tmp_path / "a.tif", bit_depth=16, chunks=32)
    np.testing.assert_array_equal(tifffile.imread(out), _quantized(source[:], np.uint16))
