"""The run pipeline's result store (napari_hrmatt.pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hrmatt import pipeline
from napari_hrmatt.pipeline import ResultStore

# --------------------------------------------------------------------------- storage


def test_result_store_in_memory():
    store = ResultStore((10, 12), np.float32, (4, 4))
    store[(slice(0, 4), slice(4, 8))] = np.ones((4, 4), np.float32)
    assert store.in_memory and list(store.pyramid_steps()) == []
    out = store.data()
    assert isinstance(out, np.ndarray) and out.sum() == 16


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_result_store_zarr_pyramid(monkeypatch, dtype):
    monkeypatch.setattr(pipeline, "PYRAMID_MAX_SIDE", 20)
    rng = np.random.default_rng(0)
    full = (rng.random((96, 130)) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    store = ResultStore(full.shape, dtype, (32, 32), in_memory_pixels=0)
    assert not store.in_memory and store.path.is_dir()
    for r in range(0, 96, 32):
        for c in range(0, 130, 32):
            store[(slice(r, r + 32), slice(c, c + 32))] = full[r : r + 32, c : c + 32]
    assert list(store.pyramid_steps()) == [1, 2, 3]
    levels = store.data()
    assert [lv.shape for lv in levels] == [(96, 130), (48, 65), (24, 33), (12, 17)]
    np.testing.assert_array_equal(levels[0].compute(), full)
    # Level 1 is the 2 x 2 mean of level 0 (rounded for integers).
    mean = full.astype(np.float64).reshape(48, 2, 65, 2).mean(axis=(1, 3))
    expect = np.round(mean) if dtype == np.uint8 else mean
    np.testing.assert_allclose(levels[1].compute(), expect.astype(dtype), atol=1e-6)
    path = store.path
    store.discard()
    assert not path.exists()
