"""Tests for benchmarks/composites.py (semi-synthetic HR composites), on data made here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pymatting")
pytest.importorskip("skimage")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "composites.py"
_spec = importlib.util.spec_from_file_location("hrmatt_bench_composites", _PATH)
composites = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = composites  # dataclasses look their module up there
_spec.loader.exec_module(composites)


def _disc(h, w, radius):
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy + 0.5) / h - 0.5, (xx + 0.5) / w - 0.5) * min(h, w)
    return np.clip((radius - r) / 3 + 0.5, 0, 1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """alphamatting.com-shaped folders: lowres 30x40 photo + GT, highres 97x131 GT + trimap."""
    base = tmp_path_factory.mktemp("data")
    root = base / "alphamatting-training"
    for sub in (
        "input_training_lowres",
        "gt_training_lowres",
        "gt_training_highres",
        "trimap_training_highres/Trimap1",
    ):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(3)
    a_lr = _disc(30, 40, 10)
    fg = np.array([0.9, 0.5, 0.1])
    bg = rng.uniform(0, 1, (30, 40, 3))
    photo = a_lr[..., None] * fg + (1 - a_lr[..., None]) * bg
    Image.fromarray((photo * 255).round().astype(np.uint8)).save(
        root / "input_training_lowres" / "GT07.png"
    )
    Image.fromarray((a_lr * 255).round().astype(np.uint8)).save(
        root / "gt_training_lowres" / "GT07.png"
    )
    a_hr = (_disc(97, 131, 33) * 255).round().astype(np.uint8)
    # Palette-mode GT, as most of the real highres mattes are.
    Image.fromarray(a_hr).convert("P").save(root / "gt_training_highres" / "GT07.png")
    tri = np.where(a_hr > 127, 255, 0).astype(np.uint8)
    tri[(a_hr > 0) & (a_hr < 255)] = 128
    Image.fromarray(tri).save(root / "trimap_training_highres" / "Trimap1" / "GT07.png")
    (base / "pxhere-backgrounds").mkdir()
    backdrop = rng.integers(0, 256, (60, 200, 3), dtype=np.uint8)  # wider than the frame
    Image.fromarray(backdrop).save(base / "pxhere-backgrounds" / "backdrop.jpg")
    return base


def test_composite_is_alpha_consistent(data_dir):
    c = composites.make_composite("GT07", data_dir=data_dir)
    assert c.kind == "semi-synthetic"
    assert c.image.shape == (97, 131, 3) and c.image.dtype == np.uint8
    assert c.alpha.shape == c.trimap.shape == (97, 131)
    assert c.foreground.shape == c.background.shape == (97, 131, 3)
    expected = c.alpha[..., None] * c.foreground + (1 - c.alpha[..., None]) * c.background
    # uint8 rounding: at most half a grey level (plus float32 slack)
    np.testing.assert_array_less(np.abs(c.image / 255.0 - expected), 0.5 / 255 + 1e-6)
    # The alpha is the high-resolution ground truth itself, not a resampled one.
    gt = np.asarray(Image.open(data_dir / "alphamatting-training/gt_training_highres/GT07.png"))
    np.testing.assert_array_equal(np.round(c.alpha * 255).astype(np.uint8), gt)
    assert set(np.unique(c.trimap)) <= {0, 128, 255}


def test_foreground_colour_comes_from_the_lowres_photo(data_dir):
    c = composites.make_composite("GT07", data_dir=data_dir)
    inside = c.alpha > 0.99
    # The disc in the lowres photo is (0.9, 0.5, 0.1): the estimate must recover it.
    np.testing.assert_allclose(c.foreground[inside].mean(0), [0.9, 0.5, 0.1], atol=0.03)


@pytest.mark.parametrize("shape", [(50, 50), (97, 131), (300, 40)])
def test_fit_background_covers_and_keeps_aspect(shape):
    # A horizontal ramp: after a cover-resize and a centre crop, the crop's columns keep
    # the ramp's left-to-right order and nothing is stretched to black borders.
    ramp = np.tile(np.linspace(0, 255, 200).astype(np.uint8)[None, :, None], (60, 1, 3))
    out = composites.fit_background(ramp, shape)
    assert out.shape == (*shape, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    row = out[shape[0] // 2, :, 0]
    assert np.all(np.diff(row) >= -1e-3)
    # centre crop: the middle column sits at the middle of the ramp
    assert abs(row[shape[1] // 2] - 0.5) < 0.05


@pytest.mark.parametrize("a", [0.0, 0.25, 1.0])
def test_composite_equation(a):
    fg = np.full((2, 3, 3), 0.8, np.float32)
    bg = np.full((2, 3, 3), 0.2, np.float32)
    out = composites.composite(np.full((2, 3), a), fg, bg)
    np.testing.assert_allclose(out, a * 0.8 + (1 - a) * 0.2, rtol=1e-6)


def test_upsample_shape_and_range():
    x = np.random.default_rng(0).uniform(0, 1, (5, 7, 3))
    y = composites.upsample(x, (17, 23))
    assert y.shape == (17, 23, 3) and y.dtype == np.float32
    assert x.min() - 1e-6 <= y.min() and y.max() <= x.max() + 1e-6


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="alphamatting-training"):
        composites.make_composite("GT01", data_dir=tmp_path)
