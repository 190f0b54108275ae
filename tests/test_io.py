"""napari_hrmatt.io: round trips, streaming, atomic writes, refusing to overwrite inputs."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import zlib
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_hrmatt.io import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    check_output_path,
    open_image,
    open_trimap,
    save_alpha,
    save_image,
)
from napari_hrmatt.trimap import TrimapError

RNG = np.random.default_rng(7)


def _alpha(shape=(83, 121), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _quantized(x: np.ndarray, dtype) -> np.ndarray:
    return np.rint(x * np.iinfo(dtype).max).astype(dtype)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _failing(shape=(90, 100), chunks=30, bad_block=(1, 2), exc=None):
    """A float dask array whose block ``bad_block`` raises ``exc`` when computed."""
    exc = RuntimeError("boom") if exc is None else exc

    def block(x, block_info=None):
        if tuple(block_info[0]["chunk-location"]) == bad_block:
            raise exc
        return x

    return da.zeros(shape, np.float32, chunks=chunks).map_blocks(block, dtype=np.float32)


# --------------------------------------------------------------------------- round trips


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


def test_pillow_reads_16bit_colour_png_at_8bit_with_a_warning(tmp_path):
    image = RNG.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    out = save_image(image, tmp_path / "rgb16.png")
    with pytest.warns(UserWarning, match="8 bits per channel"):
        back = open_image(out).compute()
    np.testing.assert_array_equal(back, (image >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("mode", "expected_shape", "expected_dtype"),
    [
        ("P", (10, 14, 3), np.uint8),
        ("LA", (10, 14, 2), np.uint8),
        ("1", (10, 14), np.uint8),
        ("I;16", (10, 14), np.uint16),
        ("RGBA", (10, 14, 4), np.uint8),
    ],
)
def test_open_image_pillow_modes(tmp_path, mode, expected_shape, expected_dtype):
    grey = RNG.integers(0, 256, (10, 14)).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "LA":
        im = Image.fromarray(np.stack([grey, 255 - grey], -1), "LA")
    elif mode == "RGBA":
        im = Image.fromarray(np.stack([grey] * 4, -1), "RGBA")
    else:
        im = Image.fromarray(grey).convert(mode)
    im.save(tmp_path / "m.png")
    back = open_image(tmp_path / "m.png").compute()
    assert back.shape == expected_shape and back.dtype == expected_dtype
    if mode == "P":  # the palette maps back to the grey values
        np.testing.assert_array_equal(back[..., 0], np.asarray(im.convert("L")))
    if mode == "1":
        assert set(np.unique(back)) <= {0, 255}
    if mode == "I;16":
        np.testing.assert_array_equal(back, grey.astype(np.uint16) * 257)


# --------------------------------------------------------------------------- zarr / OME-Zarr


def _halve_reference(x: np.ndarray) -> np.ndarray:
    """2 x 2 means over (y, x) = the last two axes, odd edges replicated."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, h % 2), (0, w % 2)]
    x = np.pad(x.astype(np.float64), pad, mode="edge")
    return (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]) / 4


@pytest.mark.parametrize("colour", [False, True])
def test_ome_zarr_pyramid_and_metadata(tmp_path, colour):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    shape = (101, 75, 3) if colour else (101, 75)
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    out = save_image(da.from_array(image, chunks=(24, 24, 3)[: len(shape)]), tmp_path / "p.zarr")
    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == 3
    meta = dict(group.attrs)["ome"]
    assert meta["version"] == "0.5"
    ms = meta["multiscales"][0]
    names = [a["name"] for a in ms["axes"]]
    assert names == (["c", "y", "x"] if colour else ["y", "x"])
    paths = [d["path"] for d in ms["datasets"]]
    assert len(paths) >= 3  # 101 -> 51 -> 26 (<= 24 stops at the next level: 13)
    level0 = group[paths[0]][:]
    stored_first = np.moveaxis(image, -1, 0) if colour else image
    np.testing.assert_array_equal(level0, stored_first)  # channel-first per OME-NGFF
    previous = level0
    for i, path in enumerate(paths[1:], start=1):
        level = group[path]
        assert level.shape[-2:] == tuple((n + 1) // 2 for n in previous.shape[-2:])
        np.testing.assert_allclose(level[:], _halve_reference(previous), rtol=1e-6)
        scale = ms["datasets"][i]["coordinateTransformations"][0]["scale"]
        assert scale[-2:] == [2.0**i, 2.0**i]
        previous = level[:]
    assert max(previous.shape[-2:]) <= 24  # down to one chunk
    # An independent reader sees the same image and pyramid.
    nodes = list(Reader(parse_url(str(out)))())
    assert len(nodes[0].data) == len(paths)
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), stored_first)
    # And ours gives channels last again.
    np.testing.assert_array_equal(open_image(out).compute(), image)


def test_zarr_without_pyramid_and_integer_levels(tmp_path):
    image = RNG.integers(0, 256, (50, 70)).astype(np.uint8)
    flat = save_image(image, tmp_path / "flat.zarr", pyramid=False, chunks=16)
    assert list(zarr.open_group(flat, mode="r").array_keys()) == ["0"]
    pyr = save_image(image, tmp_path / "pyr.ome.zarr", chunks=16)
    level1 = zarr.open_group(pyr, mode="r")["1"]
    assert level1.dtype == np.uint8 and level1.chunks == (16, 16)
    np.testing.assert_array_equal(level1[:], np.rint(_halve_reference(image)).astype(np.uint8))


def test_open_zarr_written_by_others(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    image = RNG.integers(0, 65536, (3, 40, 52)).astype(np.uint16)
    group = zarr.open_group(tmp_path / "v04.zarr", mode="w", zarr_format=2)
    write_image(image, group, axes="cyx", fmt=FormatV04(), scale_factors=(2,))
    back = open_image(tmp_path / "v04.zarr")
    assert back.shape == (40, 52, 3) and back.dtype == np.uint16
    np.testing.assert_array_equal(back.compute(), np.moveaxis(image, 0, -1))
    # a plain array, channels first, and an array addressed inside a store
    zarr.save_array(tmp_path / "plain.zarr", image)
    np.testing.assert_array_equal(open_image(tmp_path / "plain.zarr"), np.moveaxis(image, 0, -1))
    first = dict(group.attrs)["multiscales"][0]["datasets"][0]["path"]
    np.testing.assert_array_equal(
        open_image(tmp_path / "v04.zarr" / first), np.moveaxis(image, 0, -1)
    )


def test_zarr_group_without_multiscales_is_an_error(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("a", shape=(4, 4), dtype="u1")
    with pytest.raises(ValueError, match=r"g\.zarr.*without OME-Zarr multiscales.*g\.zarr/a"):
        open_image(tmp_path / "g.zarr")


def test_existing_zarr_output_is_replaced_whole(tmp_path):
    out = tmp_path / "a.zarr"
    save_image(np.zeros((60, 60), np.float32), out, chunks=16)
    assert "2" in zarr.open_group(out, mode="r")  # 60 -> 30 -> 15
    save_image(np.ones((20, 20), np.float32), out, chunks=16)
    group = zarr.open_group(out, mode="r")
    assert sorted(group.array_keys()) == ["0", "1"]  # no stale level 2
    np.testing.assert_array_equal(group["0"][:], 1)
    assert _leftovers(tmp_path) == ["a.zarr"]


# --------------------------------------------------------------------------- TIFF


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


def test_zarr_computes_every_block_once(tmp_path):
    """One compute for level 0: shared graph pieces (here an overlap) run once."""
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(x, block_info=None):
        with lock:
            calls.append(tuple(block_info[0]["chunk-location"]))
        return x

    source = da.from_array(_alpha((90, 100)), chunks=30).map_blocks(record, dtype=np.float32)
    smoothed = source.map_overlap(lambda b: b, depth=4, boundary="reflect", dtype=np.float32)
    out = save_alpha(smoothed, tmp_path / "a.zarr", progress=True)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == source.npartitions
    np.testing.assert_array_equal(open_image(out).compute(), _alpha((90, 100)))


def test_open_tiff_is_lazy_picklable_and_channel_last(tmp_path):
    image = RNG.integers(0, 256, (3, 70, 90)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", image, photometric="rgb", tile=(32, 32))
    tifffile.imwrite(tmp_path / "chw.tif", image, photometric="minisblack")
    for name in ("planar.tif", "chw.tif"):
        back = open_image(tmp_path / name, chunks=32)
        assert back.shape == (70, 90, 3)
        assert back.chunks[:2] == ((32, 32, 6), (32, 32, 26))
        np.testing.assert_array_equal(
            pickle.loads(pickle.dumps(back)).compute(), image.transpose(1, 2, 0)
        )


def test_open_tiff_pyramid_takes_level_0(tmp_path):
    base = RNG.integers(0, 256, (128, 160)).astype(np.uint8)
    with tifffile.TiffWriter(tmp_path / "pyr.tif") as tw:
        tw.write(base, subifds=1, tile=(64, 64))
        tw.write(base[::2, ::2], subfiletype=1, tile=(64, 64))
    np.testing.assert_array_equal(open_image(tmp_path / "pyr.tif").compute(), base)


def test_tiff_stack_is_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 20, 30), np.uint8))
    with pytest.raises(ValueError, match=r"stack\.tif.*\(6, 20, 30\).*one plane per file"):
        open_image(tmp_path / "stack.tif")


# --------------------------------------------------------------------------- trimaps


def test_open_trimap_conventions(tmp_path):
    grey = np.array([[0, 1, 128, 254, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "t.png")
    np.testing.assert_array_equal(open_trimap(tmp_path / "t.png"), [[0, 128, 128, 128, 255]])
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(open_trimap(tmp_path / "rgb.png"), [[0, 128, 128, 128, 255]])
    tifffile.imwrite(tmp_path / "t16.tif", np.array([[0, 255, 65535]], np.uint16))
    np.testing.assert_array_equal(open_trimap(tmp_path / "t16.tif"), [[0, 128, 255]])
    Image.fromarray(np.array([[0, 1, 2]], np.uint8)).save(tmp_path / "lab.png")
    np.testing.assert_array_equal(open_trimap(tmp_path / "lab.png", labels=True), [[128, 0, 255]])


def test_open_trimap_rejects_colour_and_bad_labels(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(TrimapError, match="colour channels that differ"):
        open_trimap(tmp_path / "colour.png").compute()
    Image.fromarray(np.array([[0, 1, 3]], np.uint8)).save(tmp_path / "lab.png")
    with pytest.raises(TrimapError, match=r"values \[3\] outside the convention"):
        open_trimap(tmp_path / "lab.png", labels=True).compute()
    tifffile.imwrite(tmp_path / "i32.tif", np.zeros((3, 3), np.int32))
    with pytest.raises(TrimapError, match=r"i32\.tif.*unsupported trimap dtype"):
        open_trimap(tmp_path / "i32.tif")


# --------------------------------------------------------------------------- bad paths


@pytest.mark.parametrize("name", ["missing.png", "missing.tif", "missing.zarr"])
def test_missing_file(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=name):
        open_image(tmp_path / name)


@pytest.mark.parametrize("name", ["bad.png", "bad.tif", "bad.jpg", "bad.zarr"])
def test_unreadable_file_names_path_and_formats(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".zarr"):
        path.mkdir()  # a directory with no Zarr metadata
    else:
        path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=rf"cannot read .*{name}.*\.ome\.zarr"):
        open_image(path)


def test_unsupported_extensions(tmp_path):
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"unsupported file extension '\.bmp'.*\.tiff"):
        open_image(tmp_path / "x.bmp")
    for ext in READ_EXTENSIONS:
        assert ext.endswith(("png", "jpg", "jpeg", "tif", "tiff", "zarr"))
    assert ".jpg" not in WRITE_EXTENSIONS


@pytest.mark.parametrize("name", ["alpha.bmp", "alpha.jpg", "alpha", "alpha.npy"])
def test_unsupported_output_extension_raises_before_compute(tmp_path, name):
    bomb = _failing(bad_block=(0, 0), exc=AssertionError("computed"))
    with pytest.raises(ValueError, match="unsupported file extension.*\\.png, \\.tif"):
        save_image(bomb, tmp_path / name)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("ext", ["png", "tif", "zarr"])
def test_failure_while_computing_leaves_no_output(tmp_path, ext):
    with pytest.raises(RuntimeError, match="boom"):
        save_image(_failing(), tmp_path / f"out.{ext}")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("ext", ["png", "tif", "zarr"])
def test_failed_overwrite_keeps_the_old_output(tmp_path, ext):
    out = save_image(np.full((20, 20), 0.5, np.float32), tmp_path / f"out.{ext}")
    with pytest.raises(RuntimeError, match="boom"):
        save_image(_failing(), out)
    assert _leftovers(tmp_path) == [out.name]
    np.testing.assert_array_equal(
        open_image(out).compute(), np.full((20, 20), 0.5 if ext == "zarr" else 128)
    )


@pytest.mark.parametrize("ext", ["tif", "zarr"])
def test_keyboard_interrupt_leaves_no_output(tmp_path, ext):
    with dask.config.set(scheduler="synchronous"), pytest.raises(KeyboardInterrupt):
        save_image(_failing(exc=KeyboardInterrupt()), tmp_path / f"out.{ext}")
    assert _leftovers(tmp_path) == []


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


# --------------------------------------------------------------------------- inputs


def test_refuse_to_overwrite_an_input(tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    before = image.read_bytes()
    with pytest.raises(ValueError, match=r"refusing to overwrite the input .*image\.png.*output"):
        save_alpha(np.ones((8, 8), np.float32), image, inputs=[image])
    # the same file by another name
    os.symlink(image, tmp_path / "link.png")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_alpha(np.ones((8, 8), np.float32), tmp_path / "link.png", inputs=[str(image)])
    relative = Path(os.path.relpath(image))
    with pytest.raises(ValueError, match="refusing to overwrite"):
        save_alpha(np.ones((8, 8), np.float32), relative, inputs=[image.resolve()])
    assert image.read_bytes() == before


def test_refuse_to_write_inside_or_over_an_input_zarr(tmp_path):
    store = save_image(np.zeros((8, 8), np.uint8), tmp_path / "in.zarr")
    with pytest.raises(ValueError, match=r"inside the input .*in\.zarr"):
        check_output_path(store / "alpha.png", inputs=[store])
    with pytest.raises(ValueError, match=r"would delete the input .*in\.zarr/0"):
        check_output_path(store, inputs=[store / "0"])
    assert check_output_path(tmp_path / "other.zarr", inputs=[store]) == tmp_path / "other.zarr"


def test_refuse_to_replace_a_directory_that_is_not_zarr(tmp_path):
    (tmp_path / "photos.zarr").mkdir()
    (tmp_path / "photos.zarr" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a Zarr store"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "photos.zarr")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="existing directory"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "dir.png")
    assert (tmp_path / "photos.zarr" / "holiday.jpg").exists()


# --------------------------------------------------------------------------- shapes and dtypes


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
