"""The engine's shortcuts at scale: cell sums, cell kinds, and reading only what is needed."""

import dataclasses

import dask
import dask.array as da
import numpy as np
import pytest

from napari_hrmatt import estimate_alpha
from napari_hrmatt._cells import (
    CELL_BACKGROUND,
    CELL_FOREGROUND,
    CELL_MIXED,
    CELL_UNKNOWN,
    cell_kinds,
    cell_means,
    known_counts,
)
from napari_hrmatt.global_pass import global_pass
from napari_hrmatt.patch_pass import block_kinds, refine


def _padded_mean(x, f):
    pad = [(0, -x.shape[0] % f), (0, -x.shape[1] % f)] + [(0, 0)] * (x.ndim - 2)
    p = np.pad(x.astype(np.float64), pad, mode="edge")
    return p.reshape(p.shape[0] // f, f, p.shape[1] // f, f, *p.shape[2:]).mean((1, 3))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(("shape", "chunks", "f"), [((61, 47), (13, 20, 3), 4), ((50, 50), 50, 7)])
def test_cell_means_equal_the_padded_mean(dtype, shape, chunks, f):
    rng = np.random.default_rng(0)
    top = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    x = (rng.random(shape + (3,)) * top).astype(dtype)
    got = cell_means(da.from_array(x, chunks=chunks), f, scale=1 / top).compute()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _padded_mean(x, f) / top, rtol=1e-6, atol=1e-7)


def test_known_fractions_and_cell_kinds_are_exact():
    f = 4
    t = np.full((18, 13), 255, np.uint8)  # not multiples of f: replicated edge cells
    t[:8] = 0  # cell rows 0-1 background
    t[9, 5] = 128  # one unknown pixel in cell (2, 1)
    t[12, :] = 0  # cell row 3 mixed (no unknown pixel)
    fractions = cell_means(da.from_array(t, chunks=(7, 5)), f, prepare=known_counts, channels=2)
    fractions = fractions.compute()
    np.testing.assert_allclose(fractions[..., 0], _padded_mean(t == 255, f), atol=1e-7)
    kinds = cell_kinds(fractions, f)
    assert (kinds[:2] == CELL_BACKGROUND).all()
    assert kinds[2, 1] == CELL_UNKNOWN and (np.delete(kinds[2], 1) == CELL_FOREGROUND).all()
    assert (kinds[3] == CELL_MIXED).all() and (kinds[4] == CELL_FOREGROUND).all()


def _recorded(array, chunks, log):
    """``array`` as dask, noting the chunk location of every chunk that is computed."""

    def note(block, block_info=None):
        log.append(tuple(block_info[0]["chunk-location"][:2]))
        return block

    return da.from_array(array, chunks=chunks).map_blocks(note, dtype=array.dtype)


def test_cell_means_read_only_the_chunks_of_needed_cells():
    x = np.arange(40 * 40, dtype=np.float32).reshape(40, 40) / 1600
    need = np.zeros((10, 10), bool)
    need[2, 7] = True  # rows 8-11, cols 28-31: chunk (0, 1) only (chunks of 20)
    log = []
    got = cell_means(_recorded(x, 20, log), 4, need=need).compute()
    assert sorted(set(log)) == [(0, 1)]
    assert got[2, 7] == pytest.approx(x[8:12, 28:32].mean())
    assert (got[~need] == 0).all()


def _band_scene(size=256, band=2):
    """A large known image with a thin unknown band around a disc (most blocks known)."""
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - 80, xx - 80) - 40
    alpha = np.clip(0.5 - d / 2, 0, 1)
    fg = np.stack([0.9 + 0 * xx, 0.6 + 0.2 * np.sin(yy / 5), 0.3 + 0 * xx], -1)
    bg = np.stack([0.2 + 0.1 * np.cos(xx / 7), 0.5 + 0 * xx, 0.8 + 0 * xx], -1)
    image = np.round(255 * (alpha[..., None] * fg + (1 - alpha[..., None]) * bg))
    trimap = np.where(np.abs(d) <= band, 128, np.where(d < 0, 255, 0)).astype(np.uint8)
    trimap[200:, 10:50] = 255  # a foreground patch touching background: mixed cells
    return image.astype(np.uint8), trimap


def test_known_blocks_never_read_the_image_and_results_are_unchanged():
    image, trimap = _band_scene()
    log = []
    lazy_image = _recorded(image, (32, 32, 3), log)
    # "cf": its global pass reads the image only near the unknown cells (global_reach);
    # the patch pass's skipping of known blocks does not depend on the model.
    kw = {"model": "cf", "chunks": 32, "overlap": 8, "global_size": 4096}  # factor 4
    with dask.config.set(scheduler="sync"):
        context = global_pass(
            lazy_image, da.from_array(trimap, chunks=32), model="cf", global_size=4096
        )
        read_global = set(log)
        # the solve reads the image only near the unknown cells: not every chunk
        assert 0 < len(read_global) < 64
        log.clear()
        fast = refine(lazy_image, trimap, context, model="cf", chunks=32, overlap=8).compute()
        read_patch = set(log)
        log.clear()
        slow = refine(
            lazy_image,
            trimap,
            dataclasses.replace(context, cell_kinds=None),
            model="cf",
            chunks=32,
            overlap=8,
        ).compute()
    assert len(set(log)) == 64  # without the cell kinds every chunk is read
    kinds = block_kinds(*_grid_and(context, trimap.shape))
    solved = [ij for ij in np.ndindex(8, 8) if ij not in kinds]
    assert {CELL_BACKGROUND, CELL_FOREGROUND, CELL_MIXED} <= set(kinds.values())
    # the image chunks read are those under the grown blocks that have unknown pixels
    under = {
        (a, b)
        for i, j in solved
        for a in range(max(i - 1, 0), min(i + 2, 8))
        for b in range(max(j - 1, 0), min(j + 2, 8))
    }
    assert read_patch <= under and len(read_patch) < 40
    np.testing.assert_array_equal(fast, slow)
    whole = estimate_alpha(image, trimap, **kw)
    np.testing.assert_array_equal(whole, fast)


def _grid_and(context, shape):
    from napari_hrmatt._blocks import BlockGrid

    return BlockGrid.plan(shape, 32, 8), context


def test_global_pass_reading_part_of_the_image_solves_the_same_problem(monkeypatch):
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap = _band_scene()
    log = []
    lazy = _recorded(image, (32, 32, 3), log)
    part = global_pass(lazy, trimap, model="cf", global_size=4096)
    assert 0 < len(set(log)) < 64
    monkeypatch.setattr(ClosedFormModel, "global_reach", lambda self: None)
    log.clear()
    full = global_pass(lazy, trimap, model="cf", global_size=4096)
    assert len(set(log)) == 64
    np.testing.assert_array_equal(part.alpha, full.alpha)
    np.testing.assert_array_equal(part.cell_kinds, full.cell_kinds)


def test_canonical_trimap_is_not_converted_twice():
    from napari_hrmatt.trimap import canonical_trimap

    t = da.from_array(np.array([[0, 7, 255]], np.uint8), chunks=1)
    once = canonical_trimap(t)
    assert canonical_trimap(once) is once
    assert canonical_trimap(once, labels=False) is once
    np.testing.assert_array_equal(once.compute(), [[0, 128, 255]])
