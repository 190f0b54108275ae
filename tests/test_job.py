"""The napari job without Qt (napari_hrmatt._job): steps, stores, failures, colour layers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_hrmatt import pipeline
from napari_hrmatt._job import Failure, MattingJob, Progress
from napari_hrmatt._layers import Geometry, as_dask
from napari_hrmatt.engine import estimate_alpha
from napari_hrmatt.foreground import estimate_foreground
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
    monkeypatch.setattr(pipeline, "PYRAMID_MAX_SIDE", 64)
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
    path = job._run.stores[0].path
    assert path.is_dir()
    job.discard()  # what the widget does on cancel
    assert not path.exists()
    gen.close()


def test_job_cuda_without_gpu_is_a_failure(small):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    image, labels, _ = small
    _, result = run_job(MattingJob(image, labels, labels=True, name="s", device="cuda"))
    assert isinstance(result, Failure) and "CUDA" in result.message


# --------------------------------------------------------------------------- colours


@pytest.mark.parametrize("in_memory_pixels", [None, 0])
def test_job_cutout_and_composite_layers_from_stored_alpha(small, monkeypatch, in_memory_pixels):
    monkeypatch.setattr(pipeline, "PYRAMID_MAX_SIDE", 64)
    image, labels, _ = small
    job = MattingJob(
        image, labels, labels=True, name="s", chunks=64, cutout=True,
        background=(0.0, 1.0, 0.0), in_memory_pixels=in_memory_pixels,
    )  # fmt: skip
    steps, layers = run_job(job)
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["s alpha", "s cutout", "s composite"]
    assert {"alpha", "cutout", "composite"} <= {s.description for s in steps}
    assert steps[-1].done == steps[-1].total

    def finest(data):
        return np.asarray(data[0] if isinstance(data, list) else data)

    alpha, cut, comp = (finest(d) for d, _, _ in layers)
    assert layers[1][1]["rgb"] and cut.shape == (96, 128, 4) and cut.dtype == np.uint8
    np.testing.assert_array_equal(cut[..., 3], np.round(alpha * 255).astype(np.uint8))
    # The colours come from the stored alpha: F estimated from it, composited over green.
    fg = estimate_foreground(image, alpha)
    np.testing.assert_allclose(cut[..., :3], np.round(fg * 255), atol=1)
    expect = fg * alpha[..., None] + np.array([0.0, 1.0, 0.0]) * (1 - alpha[..., None])
    np.testing.assert_allclose(comp, np.round(expect * 255), atol=1)


def test_job_with_a_run_store_recomputes_only_edited_blocks(small, tmp_path):
    """The widget keeps a job's store: after a trimap edit only the touched blocks run."""
    image, labels, _ = small
    store = tmp_path / "run.zarr"
    settings = {"model": "cf", "chunks": 32, "global_size": 2000, "batch": 1, "store": store}
    steps, _ = run_job(MattingJob(image, labels, labels=True, name="s", **settings))
    assert [s.done for s in steps if s.description == "alpha"] == list(range(1, 13))
    edited = labels.copy()
    edited[2:12, 2:12] = 0  # background becomes unknown, in the top-left block only
    # (blocks of 32 grown by 16 px: the neighbours start reading at row/column 16)
    steps, layers = run_job(MattingJob(image, edited, labels=True, name="s", **settings))
    assert [(s.done, s.total) for s in steps if s.description == "alpha"] == [(1, 1)]
    fresh = estimate_alpha(image, edited, labels=True, model="cf", chunks=32, global_size=2000)
    alpha = np.asarray(layers[0][0][0] if isinstance(layers[0][0], list) else layers[0][0])
    diff = np.abs(alpha - fresh)[edited == 0]
    assert diff.mean() < 1e-3 and diff.max() < 2 / 255
    assert store.exists()  # the job leaves the store to its owner
