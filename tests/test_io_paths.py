"""napari_hrmatt.io._paths: refusing to overwrite inputs, unsupported outputs, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import dask
import numpy as np
import pytest
from PIL import Image

from napari_hrmatt.io import (
    check_output_path,
    open_image,
    save_alpha,
    save_image,
)

from .io_helpers import _failing, _leftovers


@pytest.mark.parametrize("name", ["alpha.bmp", "alpha.jpg", "alpha", "alpha.npy"])
def test_unsupported_output_extension_raises_before_compute(tmp_path, name):
    bomb = _failing(bad_block=(0, 0), exc=AssertionError("computed"))
    with pytest.raises(ValueError, match="unsupported file extension.*\\.png, \\.tif"):
        save_image(bomb, tmp_path / name)
    assert _leftovers(tmp_path) == []


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
