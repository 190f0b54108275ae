"""napari_hrmatt.io.readers: Pillow modes, lazy TIFF, trimaps, missing and unreadable files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hrmatt.io import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    open_image,
    open_trimap,
    save_image,
)
from napari_hrmatt.trimap import TrimapError

from .io_helpers import RNG


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
