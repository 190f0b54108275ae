"""The fused numba sweep kernel (napari_hrmatt._fg_kernels) against the torch path.

Both implement the same red-black sweeps of ``sweep_level`` (same order, relaxation and
weights), so they agree to float32 rounding; the torch path is what CUDA runs, kept
tested here on the CPU by ``_foreground_solver.KERNEL = "torch"``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

import napari_hrmatt._foreground_solver as solver  # noqa: E402
from napari_hrmatt._foreground_solver import make_plan, sweep_level  # noqa: E402
from napari_hrmatt.foreground import estimate_foreground  # noqa: E402
from napari_hrmatt.sample import make_sample  # noqa: E402

# float32 rounding of a handful of sweeps on values in [0, 1] (measured up to ~1e-6).
TOL = 1e-5


def _level(h, w, c=3, seed=0):
    """Image, alpha (soft, 0 and 1 regions) and an initial F, B of one level."""
    rng = np.random.default_rng(seed)
    img = rng.random((c, h, w), dtype=np.float32)
    alpha = rng.random((h, w), dtype=np.float32)
    alpha[: h // 3] = 0.0
    alpha[-h // 4 :, : w // 2] = 1.0
    coarse = rng.random((2 * c, -(-h // 2), -(-w // 2)), dtype=np.float32)
    level = rng.random((2 * c, h, w), dtype=np.float32)
    return torch.from_numpy(img), torch.from_numpy(alpha), coarse, level


def _both(monkeypatch, **kwargs):
    out = {}
    for kernel in ("torch", "numba"):
        monkeypatch.setattr(solver, "KERNEL", kernel)
        with torch.inference_mode():
            out[kernel] = sweep_level(**kwargs).clone().numpy()
    return out["torch"], out["numba"]


@pytest.mark.parametrize(
    ("shape", "origin", "full"),
    [
        ((45, 61), (0, 0), (45, 61)),  # the whole image: every border cut
        ((40, 52), (20, 30), (100, 120)),  # inside the image: no border
        ((37, 50), (64, 0), (101, 50)),  # bottom, left and right borders
    ],
)
@pytest.mark.parametrize(
    ("tile", "n_iter", "from_coarser"),
    [(None, 1, True), (None, 2, False), (None, 10, True), (16, 1, True), (16, 2, True),
     (32, 3, False), (8, 1, False)],
)  # fmt: skip
def test_numba_equals_torch(monkeypatch, shape, origin, full, tile, n_iter, from_coarser):
    h, w = shape
    img, alpha, coarse, level = _level(h, w, seed=h + n_iter)
    plan = make_plan(full, 1e9, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    active = None
    if tile is not None:  # some tiles only: the others keep the initial values
        nty, ntx = -(-h // tile), -(-w // tile)
        active = torch.from_numpy(np.random.default_rng(1).random((nty, ntx)) < 0.6)
    x = torch.from_numpy(coarse if from_coarser else level)
    kw = {
        "X": x,
        "img": img,
        "A": alpha,
        "origin": origin,
        "full": full,
        "n_iter": n_iter,
        "plan": plan,
        "tile": tile,
        "active": active,
        "from_coarser": from_coarser,
    }
    ref, got = _both(monkeypatch, **kw)
    assert got.shape == ref.shape == (6, h, w)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)
    with torch.inference_mode():  # (the sweeps did change the initial values)
        initial = sweep_level(**{**kw, "n_iter": 0}).numpy()
    assert np.abs(got - initial).max() > 0.01
    # F alone (the finest level without B).
    ref_f, got_f = _both(monkeypatch, **kw, channels=3)
    np.testing.assert_allclose(got_f, ref_f, rtol=0, atol=TOL)
    np.testing.assert_array_equal(got_f, got[:3])


def test_numba_equals_torch_on_strided_state_and_grey(monkeypatch):
    # The state of a previous level's padded work array (read in place) and one channel.
    h, w = 30, 42
    img, alpha, _, level = _level(h, w, c=1, seed=5)
    padded = torch.from_numpy(np.pad(level, ((0, 0), (0, 6), (0, 10))))[:, :h, :w]
    assert not padded.is_contiguous()
    plan = make_plan((h, w), 1e9, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    kw = {
        "X": padded,
        "img": img,
        "A": alpha,
        "origin": (0, 0),
        "full": (h, w),
        "n_iter": 2,
        "plan": plan,
        "tile": 16,
    }
    ref, got = _both(monkeypatch, **kw)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def test_numba_equals_torch_across_torch_batches(monkeypatch):
    # The torch path sweeps the tiles in batches; the kernel all of a level at once.
    h, w = 96, 128
    img, alpha, coarse, _ = _level(h, w, seed=7)
    plan = make_plan((h, w), 1e9, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    monkeypatch.setattr(solver, "_BATCH", 3 * 20 * 20)  # three 16-tiles per batch
    kw = {
        "X": torch.from_numpy(coarse),
        "img": img,
        "A": alpha,
        "origin": (8, 0),
        "full": (200, 128),
        "n_iter": 2,
        "plan": plan,
        "tile": 16,
        "from_coarser": True,
    }
    ref, got = _both(monkeypatch, **kw)
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("return_background", [True, False])
def test_estimate_foreground_numba_equals_torch(monkeypatch, return_background):
    image, _, alpha, _, _ = make_sample((150, 230), seed=3, return_colors=True)
    alpha = alpha.copy()
    alpha[:60, :100] = 0.0  # blocks with alpha only 0 or 1 (expanded coarse F, B)
    alpha[100:, 140:] = 1.0
    out = {}
    for kernel in ("torch", "numba"):
        monkeypatch.setattr(solver, "KERNEL", kernel)
        out[kernel] = estimate_foreground(
            image, alpha, return_background=return_background, device="cpu",
            global_size=3000, chunks=48,
        )  # fmt: skip
    ref, got = out["torch"], out["numba"]
    if not return_background:
        ref, got = (ref,), (got,)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=TOL)


def test_kernel_is_used_for_cpu_float32_only(monkeypatch):
    calls = []
    real = solver._kernel

    def spy():
        calls.append(1)
        return real()

    monkeypatch.setattr(solver, "_kernel", spy)
    img, alpha, coarse, _ = _level(20, 20)
    plan = make_plan((20, 20), 1e9, 10, 2, 32, 1e-5, 1.0, 1.5)
    kw = {
        "img": img,
        "A": alpha,
        "origin": (0, 0),
        "full": (20, 20),
        "n_iter": 1,
        "plan": plan,
        "from_coarser": True,
    }
    sweep_level(torch.from_numpy(coarse), **kw)
    assert len(calls) == 1
    sweep_level(torch.from_numpy(coarse).double(), **{**kw, "img": img.double(),
                "A": alpha.double()})  # fmt: skip
    monkeypatch.setattr(solver, "KERNEL", "torch")
    sweep_level(torch.from_numpy(coarse), **kw)
    assert len(calls) == 1


def test_torch_banded_tiles_equal_dense_sweeps(monkeypatch):
    # The tiles-only property of test_foreground, on the torch path (CUDA's).
    from .test_foreground import _block_result, _max_diff

    monkeypatch.setattr(solver, "KERNEL", "torch")
    hairy = make_sample((150, 230), seed=3, return_colors=True)
    alpha = hairy[2]
    plan = make_plan(alpha.shape, 600, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    dense = _block_result(hairy, plan, None, monkeypatch)
    banded = _block_result(hairy, plan, (16, 32, 64, 128), monkeypatch)
    c = dense.shape[2] // 2
    split = ((dense[..., :c], dense[..., c:]), (banded[..., :c], banded[..., c:]))
    assert _max_diff(*split, alpha) < 1e-6


def test_numba_is_imported_on_first_use_only():
    # importing numba costs ~0.6 s: not on the library's import path.
    import subprocess
    import sys

    code = "import sys, napari_hrmatt.foreground; print('NUMBA', 'numba' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "NUMBA False" in result.stdout


def test_one_specialisation_per_kernel(monkeypatch):
    # Each extra specialisation is a full compile on a fresh install (issue #12: the
    # README command's time): dense and tiled levels, from the coarser level or not, at
    # the image border and inside it, all with one signature per kernel. (Kernels loaded
    # from numba's cache list no signatures; a fresh cache checks the helpers too.)
    import numba

    import napari_hrmatt._fg_kernels as kernels

    monkeypatch.setattr(solver, "KERNEL", "numba")
    img, alpha, coarse, level = _level(40, 52)
    plan = make_plan((100, 120), 1e9, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    for tile, from_coarser, origin in [(None, True, (0, 0)), (16, False, (20, 30)),
                                       (8, True, (60, 68))]:  # fmt: skip
        x = torch.from_numpy(coarse if from_coarser else level)
        sweep_level(x, img, alpha, origin=origin, full=(100, 120), n_iter=2, plan=plan,
                    tile=tile, from_coarser=from_coarser)  # fmt: skip
    assert len(kernels.sweep_tiles.signatures) == 1
    for name in dir(kernels):
        kernel = getattr(kernels, name)
        if isinstance(kernel, numba.core.registry.CPUDispatcher):
            assert len(kernel.signatures) <= 1, name
