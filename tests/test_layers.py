"""Tests for napari_hrmatt._layers and _sample_data (plugin logic without Qt)."""

from __future__ import annotations

from types import SimpleNamespace

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt import _layers
from napari_hrmatt._layers import (
    Geometry,
    as_dask,
    crop_to_view,
    layer_geometry,
)

# --------------------------------------------------------------------------- geometry


def test_layer_geometry_takes_last_two_axes():
    layer = SimpleNamespace(scale=(5.0, 2.0, 3.0), translate=(1.0, 10.0, -4.0))
    assert layer_geometry(layer) == Geometry((2.0, 3.0), (10.0, -4.0))


def test_geometry_shifted_moves_by_scaled_pixels():
    g = Geometry((2.0, 0.5), (10.0, 1.0)).shifted(3, 8)
    assert g == Geometry((2.0, 0.5), (16.0, 5.0))


@pytest.mark.parametrize(
    ("corners", "expected"),
    [
        ([[10.2, 20.7], [30.5, 40.0]], (slice(10, 32), slice(20, 41))),  # inside
        ([[-50, -50], [30, 40]], (slice(0, 31), slice(0, 41))),  # clipped at 0
        ([[80, 100], [500, 900]], (slice(80, 96), slice(100, 128))),  # clipped at shape
    ],
)
def test_crop_to_view(corners, expected):
    assert crop_to_view(np.array(corners), (96, 128)) == expected


def test_crop_to_view_outside_raises():
    with pytest.raises(ValueError, match="not in view"):
        crop_to_view(np.array([[200, 300], [400, 500]]), (96, 128))


# --------------------------------------------------------------------------- wrapping


def test_as_dask_wraps_numpy_without_copy():
    a = np.arange(96 * 128, dtype=np.float32).reshape(96, 128)
    d = as_dask(a, 40)
    assert d.chunks == ((40, 40, 16), (40, 40, 40, 8))
    a[0, 0] = -1.0  # a view: the graph reads the caller's array when it runs
    assert float(d[0, 0].compute()) == -1.0


def test_as_dask_keeps_channels_in_one_block_and_dask_unchanged():
    a = np.zeros((50, 60, 3), np.uint8)
    assert as_dask(a, 32).chunks[2] == (3,)
    d = da.zeros((50, 60), chunks=7)
    assert as_dask(d, 32) is d


# --------------------------------------------------------------------------- layers


def test_trimap_layer_colours_and_geometry():
    labels = np.zeros((4, 5), np.uint8)
    data, kwargs, kind = _layers.trimap_layer(
        labels, name="t", geometry=Geometry((2.0, 3.0), (1.0, 1.0))
    )
    assert data is labels and kind == "labels"
    assert kwargs["scale"] == (2.0, 3.0) and kwargs["translate"] == (1.0, 1.0)
    colors = kwargs["colormap"]
    assert colors[0][3] == 0.0  # unknown: transparent
    assert colors[1] != colors[2] and colors[1][3] == colors[2][3] == 1.0


@pytest.mark.parametrize("multiscale", [False, True])
def test_alpha_layer_kwargs(multiscale):
    alpha = np.zeros((8, 8), np.float32)
    data = [alpha, alpha[::2, ::2]] if multiscale else alpha
    _, kwargs, kind = _layers.alpha_layer(data, name="a", geometry=Geometry((0.5, 0.5)))
    assert kind == "image"
    assert kwargs["contrast_limits"] == (0.0, 1.0)
    assert kwargs["colormap"] == "gray"
    assert kwargs["multiscale"] is multiscale
    assert kwargs["scale"] == (0.5, 0.5)


# --------------------------------------------------------------------------- sample data


def test_sample_data_layers():
    from napari_hrmatt._sample_data import make_sample_data

    (image, ikw, ikind), (labels, lkw, lkind), (alpha, akw, _) = make_sample_data()
    assert ikind == "image" and ikw["rgb"] and image.shape == (1536, 2048, 3)
    assert lkind == "labels" and labels.shape == (1536, 2048)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert akw["visible"] is False and alpha.dtype == np.float32
