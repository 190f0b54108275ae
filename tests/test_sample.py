"""Tests for the generated sample (napari_hrmatt.sample)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hrmatt.sample import make_sample, write_sample

SHAPES = [(64, 96), (97, 64), (256, 384)]


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_and_dtypes(shape):
    image, trimap, alpha = make_sample(shape, seed=3)
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    assert trimap.shape == shape and trimap.dtype == np.uint8
    assert alpha.shape == shape and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert set(np.unique(trimap).tolist()) == {0, 128, 255}


@pytest.mark.parametrize("shape", SHAPES)
def test_has_fine_and_soft_structure(shape):
    _, trimap, alpha = make_sample(shape, seed=0)
    mixed = (alpha > 0) & (alpha < 1)
    # Solid body, background and a real amount of partial transparency.
    assert (alpha == 1).mean() > 0.03
    assert (alpha == 0).mean() > 0.2
    assert mixed.mean() > 0.02
    # Semi-transparent values spread over the range, not just edge anti-aliasing.
    assert np.histogram(alpha[mixed], bins=4, range=(0, 1))[0].min() > 0


def test_deterministic_with_seed():
    a = make_sample((64, 96), seed=7, return_colors=True)
    b = make_sample((64, 96), seed=7, return_colors=True)
    c = make_sample((64, 96), seed=8, return_colors=True)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("shape", SHAPES)
def test_image_is_the_composite(shape):
    image, _, alpha, fg, bg = make_sample(shape, seed=1, return_colors=True)
    for x in (fg, bg):
        assert x.shape == (*shape, 3) and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 1
    a = alpha[..., None].astype(np.float64)
    expected = 255.0 * (a * fg + (1 - a) * bg)
    # uint8 rounding: at most half a grey level (plus float slack).
    assert np.abs(image - expected).max() <= 0.5 + 1e-3
    # F and B differ, so estimating F is a real task on this sample.
    assert np.abs(fg - bg).mean() > 0.2


@pytest.mark.parametrize("shape", SHAPES)
def test_trimap_agrees_with_alpha(shape):
    _, trimap, alpha = make_sample(shape, seed=2)
    assert np.all(alpha[trimap == 0] == 0)
    assert np.all(alpha[trimap == 255] == 1)
    # Every partially transparent pixel is unknown, and the band adds a margin.
    mixed = (alpha > 0) & (alpha < 1)
    assert np.all(trimap[mixed] == 128)
    assert (trimap == 128).sum() > mixed.sum()


@pytest.mark.parametrize("shape", [(15, 64), (64, 8), (64,), (4, 4, 4)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        make_sample(shape)


def test_default_size():
    image, trimap, alpha = make_sample()
    assert image.shape == (1536, 2048, 3) and trimap.shape == alpha.shape == (1536, 2048)


def test_write_sample(tmp_path):
    from PIL import Image

    image_path, trimap_path = write_sample(tmp_path / "new", shape=(64, 96), seed=4)
    assert image_path.name == "sample_image.png"
    assert trimap_path.name == "sample_trimap.png"
    image, trimap, _ = make_sample((64, 96), seed=4)
    with Image.open(image_path) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), image)
    with Image.open(trimap_path) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), trimap)
