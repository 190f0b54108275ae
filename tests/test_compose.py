"""Tests for cut-outs and composites (napari_hrmatt.compose)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt.compose import composite, cutout, parse_color
from napari_hrmatt.foreground import estimate_foreground

from .test_foreground import smooth_composite


@pytest.fixture(scope="module")
def smooth():
    return smooth_composite()


# --------------------------------------------------------------------------- cutout


@pytest.mark.parametrize("lazy", [False, True])
def test_cutout(smooth, lazy):
    image, alpha, _, _ = smooth
    F = estimate_foreground(image, alpha, device="cpu")
    a = da.from_array(alpha, chunks=50) if lazy else alpha
    rgba = cutout(image, a, foreground=F)
    assert isinstance(rgba, da.Array) == lazy
    rgba = np.asarray(rgba)
    assert rgba.shape == (*alpha.shape, 4) and rgba.dtype == np.float32
    np.testing.assert_array_equal(rgba[..., :3], F)
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    # Without a foreground, cutout estimates it.
    np.testing.assert_array_equal(cutout(image, alpha, device="cpu"), rgba)


def test_cutout_of_grey_is_rgba(smooth):
    image, alpha, _, _ = smooth
    rgba = cutout(image[..., 0], alpha, device="cpu")
    assert rgba.shape == (*alpha.shape, 4)
    np.testing.assert_array_equal(rgba[..., 0], rgba[..., 2])


# --------------------------------------------------------------------------- composite


@pytest.mark.parametrize(
    ("value", "rgb"),
    [
        ("white", (1, 1, 1)),
        ("Black", (0, 0, 0)),
        ("#00ff00", (0, 1, 0)),
        ("#f00", (1, 0, 0)),
        ("0, 0, 255", (0, 0, 1)),
        ((0, 255, 0), (0, 1, 0)),
        ([0.5, 0.25, 1.0], (0.5, 0.25, 1.0)),
        (np.array([1.0, 1.0, 0.0], np.float32), (1, 1, 0)),
    ],
)
def test_parse_color(value, rgb):
    np.testing.assert_allclose(parse_color(value), rgb, atol=1e-6)


@pytest.mark.parametrize("value", ["chartreuse-ish", "#12345", (1, 2), (0, 0, 300), "1,2"])
def test_parse_color_rejects(value):
    with pytest.raises(ValueError, match="colour"):
        parse_color(value)


def test_composite_over_colour_and_image(smooth):
    image, alpha, fg, bg = smooth
    out = composite(fg, alpha, "white")
    a = alpha[..., None]
    np.testing.assert_allclose(out, a * fg + (1 - a), atol=1e-6)
    # Over the true background it rebuilds the image; as uint8, too.
    np.testing.assert_allclose(composite(fg, alpha, bg), image / 255.0, atol=0.5 / 255 + 1e-6)
    again = composite(fg, alpha, np.rint(bg * 255).astype(np.uint8))
    np.testing.assert_allclose(again, image / 255.0, atol=1 / 255 + 1e-6)
    lazy = composite(da.from_array(fg, chunks=40), alpha, (255, 255, 255))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), out, atol=1e-6)


def test_composite_estimated_foreground_removes_the_halo(smooth):
    image, alpha, fg, _ = smooth
    new_bg = (0.0, 1.0, 0.0)
    truth = composite(fg, alpha, new_bg)
    naive = composite(image, alpha, new_bg)
    ours = composite(estimate_foreground(image, alpha, device="cpu"), alpha, new_bg)
    soft = (alpha > 0) & (alpha < 1)
    assert np.abs(ours - truth)[soft].mean() < 0.3 * np.abs(naive - truth)[soft].mean()


def test_composite_grey_foreground_and_bad_background(smooth):
    image, alpha, _, _ = smooth
    out = composite(image[..., 0], alpha, "red")
    assert out.shape == (*alpha.shape, 3)
    with pytest.raises(ValueError, match="same size"):
        composite(image, alpha, np.zeros((5, 5, 3), np.uint8))
