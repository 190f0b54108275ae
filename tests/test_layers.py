"""Tests for napari_hrmatt._layers and _sample_data (plugin logic without Qt)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt import _layers
from napari_hrmatt._layers import (
    Failure,
    Geometry,
    MattingJob,
    Progress,
    ResultStore,
    as_dask,
    crop_to_view,
    layer_geometry,
)
from napari_hrmatt.engine import estimate_alpha
from napari_hrmatt.sample import make_sample
from napari_hrmatt.trimap import trimap_to_labels


@pytest.fixture(scope="module")
def small():
    """A 96 x 128 sample: RGB uint8 image, label trimap (0/1/2), true alpha."""
    image, trimap, alpha = make_sample((96, 128), seed=3)
    return image, trimap_to_labels(trimap), alpha


def run_job(job: MattingJob):
    """Drive a job to the end; returns (progress steps, result)."""
    steps, gen = [], job.steps()
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            return steps, stop.value


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


# --------------------------------------------------------------------------- storage


def test_result_store_in_memory():
    store = ResultStore((10, 12), np.float32, (4, 4))
    store[(slice(0, 4), slice(4, 8))] = np.ones((4, 4), np.float32)
    assert store.in_memory and list(store.pyramid_steps()) == []
    out = store.data()
    assert isinstance(out, np.ndarray) and out.sum() == 16


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_result_store_zarr_pyramid(monkeypatch, dtype):
    monkeypatch.setattr(_layers, "_PYRAMID_MAX_SIDE", 20)
    rng = np.random.default_rng(0)
    full = (rng.random((96, 130)) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    store = ResultStore(full.shape, dtype, (32, 32), in_memory_pixels=0)
    assert not store.in_memory and store.path.is_dir()
    for r in range(0, 96, 32):
        for c in range(0, 130, 32):
            store[(slice(r, r + 32), slice(c, c + 32))] = full[r : r + 32, c : c + 32]
    assert list(store.pyramid_steps()) == [1, 2, 3]
    levels = store.data()
    assert [lv.shape for lv in levels] == [(96, 130), (48, 65), (24, 32), (12, 16)]
    np.testing.assert_array_equal(levels[0].compute(), full)
    # Level 1 is the 2 x 2 mean of level 0 (rounded for integers).
    mean = full.astype(np.float64).reshape(48, 2, 65, 2).mean(axis=(1, 3))
    expect = np.round(mean) if dtype == np.uint8 else mean
    np.testing.assert_allclose(levels[1].compute(), expect.astype(dtype), atol=1e-6)
    path = store.path
    store.discard()
    assert not path.exists()


# --------------------------------------------------------------------------- the job


def test_job_matches_engine_and_reports_every_block(small):
    image, labels, true_alpha = small
    geometry = Geometry((2.0, 2.0), (5.0, -3.0))
    job = MattingJob(image, labels, labels=True, name="s", geometry=geometry, chunks=48)
    steps, layers = run_job(job)
    assert all(isinstance(s, Progress) for s in steps)
    blocks = [s for s in steps if s.description == "alpha"]
    assert [s.done for s in blocks] == [1, 2, 3, 4, 5, 6]  # 2 x 3 blocks of 48
    assert all(s.total == 6 for s in blocks)
    ((alpha, kwargs, kind),) = layers
    assert kind == "image" and kwargs["name"] == "s alpha"
    assert kwargs["scale"] == (2.0, 2.0) and kwargs["translate"] == (5.0, -3.0)
    assert alpha.dtype == np.float32 and alpha.shape == (96, 128)
    expected = estimate_alpha(
        as_dask(image, 48), as_dask(labels, 48), chunks=48, labels=True, compute=True
    )
    np.testing.assert_array_equal(alpha, expected)
    assert np.all(alpha[labels == 1] == 0) and np.all(alpha[labels == 2] == 1)
    # A real matte, not the trimap: close to the truth in the unknown band.
    unknown = labels == 0
    assert np.abs(alpha - true_alpha)[unknown].mean() < 0.1


def test_job_large_result_goes_to_zarr_pyramid(small, monkeypatch):
    monkeypatch.setattr(_layers, "_PYRAMID_MAX_SIDE", 64)
    image, labels, _ = small
    job = MattingJob(image, labels, labels=True, name="s", chunks=64, in_memory_pixels=0)
    steps, layers = run_job(job)
    ((levels, kwargs, _),) = layers
    assert kwargs["multiscale"] is True
    assert [lv.shape for lv in levels] == [(96, 128), (48, 64)]
    assert steps[-1].description == "alpha: pyramid"
    expected = estimate_alpha(image, labels, chunks=64, labels=True)
    np.testing.assert_allclose(levels[0].compute(), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda img, lab: (img, np.where(lab == 2, 7, lab)), "outside the convention"),
        (lambda img, lab: (img, lab[:-8]), "same pixels"),
        (lambda img, lab: (img.astype(np.float32) * 2.0, lab), r"\[0, 1\]"),
    ],
    ids=["bad-labels", "shape-mismatch", "float-out-of-range"],
)
def test_job_bad_input_is_a_failure_with_the_library_message(small, edit, message):
    image, labels = edit(*small[:2])
    steps, result = run_job(MattingJob(image, labels, labels=True, name="s", chunks=64))
    assert isinstance(result, Failure)
    assert re.search(message, result.message), result.message


def test_job_abandoned_midway_discards_partial_store(small):
    image, labels, _ = small
    job = MattingJob(image, labels, labels=True, name="s", chunks=32, in_memory_pixels=0, batch=1)
    gen = job.steps()
    step = next(gen)
    while step.done < 2:
        step = next(gen)
    path = job._stores[0].path
    assert path.is_dir()
    job.discard()  # what the widget does on cancel
    assert not path.exists()
    gen.close()


# --------------------------------------------------------------------------- sample data


def test_sample_data_layers():
    from napari_hrmatt._sample_data import make_sample_data

    (image, ikw, ikind), (labels, lkw, lkind), (alpha, akw, _) = make_sample_data()
    assert ikind == "image" and ikw["rgb"] and image.shape == (1536, 2048, 3)
    assert lkind == "labels" and labels.shape == (1536, 2048)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert akw["visible"] is False and alpha.dtype == np.float32


def test_job_cuda_without_gpu_is_a_failure(small):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    image, labels, _ = small
    _, result = run_job(MattingJob(image, labels, labels=True, name="s", device="cuda"))
    assert isinstance(result, Failure) and "CUDA" in result.message


# --------------------------------------------------------------------------- foreground


def _fake_foreground():
    """Stand-in for napari_hrmatt.foreground with issue 5's contract (F = the image)."""
    import types

    def estimate_foreground(image, alpha):
        return image.astype(np.float32) / 255

    def cutout(image, alpha, foreground=None):  # the real module's signature
        fg = estimate_foreground(image, alpha) if foreground is None else foreground
        return da.concatenate([fg, alpha[..., None]], axis=-1)

    def composite(foreground, alpha, background):
        a = alpha[..., None]
        return foreground * a + background * (1 - a)

    return types.SimpleNamespace(
        estimate_foreground=estimate_foreground, cutout=cutout, composite=composite
    )


@pytest.mark.parametrize("in_memory_pixels", [None, 0])
def test_job_cutout_and_composite_layers_from_stored_alpha(small, monkeypatch, in_memory_pixels):
    import sys

    import napari_hrmatt

    fake = _fake_foreground()
    monkeypatch.setitem(sys.modules, "napari_hrmatt.foreground", fake)
    # `from . import foreground` reads the package attribute first, which is set once the
    # real module has been imported by another test.
    monkeypatch.setattr(napari_hrmatt, "foreground", fake, raising=False)
    monkeypatch.setattr(_layers, "_PYRAMID_MAX_SIDE", 64)
    image, labels, _ = small
    job = MattingJob(
        image, labels, labels=True, name="s", chunks=64, cutout=True,
        background=(0.0, 1.0, 0.0), in_memory_pixels=in_memory_pixels,
    )  # fmt: skip
    steps, layers = run_job(job)
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["s alpha", "s cutout", "s composite"]
    assert steps[-1].done == steps[-1].total == 3 * 4  # alpha, cutout, composite: 4 blocks each

    def finest(data):
        return np.asarray(data[0] if isinstance(data, list) else data)

    alpha, cut, comp = (finest(d) for d, _, _ in layers)
    assert layers[1][1]["rgb"] and cut.shape == (96, 128, 4) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut[..., :3], image)
    np.testing.assert_array_equal(cut[..., 3], np.round(alpha * 255).astype(np.uint8))
    expect = image / 255 * alpha[..., None] + np.array([0.0, 1.0, 0.0]) * (1 - alpha[..., None])
    np.testing.assert_allclose(comp, np.round(expect * 255), atol=1)


def test_job_with_the_real_foreground_module(small):
    pytest.importorskip("napari_hrmatt.foreground")
    image, labels, _ = small
    job = MattingJob(image, labels, labels=True, name="s", chunks=64, cutout=True,
                     background=(1.0, 1.0, 1.0))  # fmt: skip
    _, layers = run_job(job)
    assert not isinstance(layers, Failure), layers
    (_, _, _), (cut, ckw, _), (comp, _, _) = layers
    assert cut.shape == (96, 128, 4) and comp.shape == (96, 128, 3)
