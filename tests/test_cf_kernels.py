"""The numba kernels of the closed-form solver against the torch / scipy code they replace.

Each kernel is compared with the formula it replaces on small synthetic inputs (the
torch path is the CUDA path, so it is also what these tests keep exercising on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hrmatt.models import _stencil
from napari_hrmatt.models._aggregation import stencil_to_csr
from napari_hrmatt.models._stencil import Stencil
from napari_hrmatt.models.closed_form import _cf_stencil, solve_closed_form


@pytest.fixture
def torch_path(monkeypatch):
    """Call ``torch_path(f)`` to run ``f()`` with the numba kernels switched off."""

    def run(f):
        monkeypatch.setattr(_stencil, "USE_NUMBA", False)
        try:
            return f()
        finally:
            monkeypatch.setattr(_stencil, "USE_NUMBA", True)

    return run


def _random_stencil(rng, radius, h, w, dtype):
    coef = torch.as_tensor(rng.standard_normal(((2 * radius + 1) ** 2, h, w)), dtype=dtype)
    return Stencil(coef, radius)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("radius, h, w", [(2, 23, 17), (1, 9, 30), (2, 3, 4)])
def test_fused_stencil_products_equal_torch(torch_path, dtype, tol, radius, h, w):
    rng = np.random.default_rng(radius * 100 + h)
    op = _random_stencil(rng, radius, h, w, dtype)
    x, b, l1 = (torch.as_tensor(rng.standard_normal((h, w)), dtype=dtype) for _ in range(3))
    assert _stencil._numba_ok(op.coef, x)
    fused = (op(x), op.residual(x, b), op.jacobi(x, b, l1))
    ref = torch_path(lambda: (op(x), op.residual(x, b), op.jacobi(x, b, l1)))
    for got, want in zip(fused, ref, strict=True):
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= tol * scale * 10
    # the product really is A x: against an explicit loop over the offsets
    explicit = torch.zeros_like(x)
    for c, (dy, dx) in zip(op.coef, op.offsets, strict=True):
        explicit += c * _stencil.shift(x, dy, dx)
    assert float((fused[0] - explicit).abs().max()) <= tol * float(explicit.abs().max()) * 10


def test_fused_product_takes_non_contiguous_input():
    rng = np.random.default_rng(1)
    op = _random_stencil(rng, 2, 12, 10, torch.float32)
    big = torch.as_tensor(rng.standard_normal((12, 20)), dtype=torch.float32)
    x = big[:, ::2]
    assert not x.is_contiguous()
    np.testing.assert_allclose(op(x).numpy(), op(x.contiguous()).numpy(), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_restriction_and_row_norms_equal_torch(torch_path, dtype):
    rng = np.random.default_rng(9)
    unknown = torch.as_tensor(rng.random((16, 19)) < 0.5)
    op = _random_stencil(rng, 2, 16, 19, dtype)
    ref = Stencil(op.coef.clone(), 2)
    got = _stencil.restrict_to_unknown(op, unknown).coef
    want = torch_path(lambda: _stencil.restrict_to_unknown(ref, unknown).coef)
    assert torch.equal(got, want)  # the same zeros, the other entries untouched
    assert float(got.abs().sum()) > 0
    norms = op.abs_row_sum()
    np.testing.assert_allclose(norms.numpy(), got.abs().sum(0).numpy(), rtol=1e-6)


@pytest.mark.parametrize("channels", [3, 1, 4])
@pytest.mark.parametrize("radius", [1, 2])
def test_cf_stencil_kernel_equals_torch_build(torch_path, channels, radius):
    rng = np.random.default_rng(channels + 10 * radius)
    h, w = 37, 29
    image = torch.as_tensor(rng.random((channels, h, w)))
    rows = rng.random((h, w)) < 0.2
    rows[:3] = False  # a strip with no needed pixel at all
    for need in (None, rows):
        got = _cf_stencil(image, radius, 1e-7, dtype=torch.float64, rows=need).coef
        want = torch_path(lambda need=need: _cf_stencil(image, radius, 1e-7, rows=need).coef)
        if need is not None:  # exact at the needed pixels; elsewhere unspecified (zero)
            m = torch.as_tensor(need)
            got, want = got * m, want * m
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= 1e-10 * scale
        got32 = _cf_stencil(image, radius, 1e-7, dtype=torch.float32, rows=need).coef
        if need is not None:
            got32 = got32 * torch.as_tensor(need)
        assert float((got32.double() - want).abs().max()) <= 1e-6 * scale


def test_cf_stencil_kernel_on_arrays_too_small_for_a_window():
    image = torch.rand(3, 2, 9, dtype=torch.float64)
    assert float(_cf_stencil(image, 1, 1e-7).coef.abs().max()) == 0.0


def test_stencil_csr_kernel_equals_numpy_gather(torch_path):
    rng = np.random.default_rng(3)
    op = _random_stencil(rng, 2, 15, 13, torch.float32)
    op.coef[:, 4:6] = 0  # zero entries are left out in both
    unknown = rng.random((15, 13)) < 0.6
    got = stencil_to_csr(op, unknown)
    want = torch_path(lambda: stencil_to_csr(op, unknown))
    assert got.shape == want.shape and got.nnz == want.nnz
    np.testing.assert_array_equal(got.toarray(), want.toarray())


def test_tentative_prolongator_kernel_equals_numpy(torch_path):
    from napari_hrmatt.models._aggregation import _tentative

    rng = np.random.default_rng(12)
    n, n_agg = 300, 17
    agg = rng.integers(0, n_agg, n)
    agg[:n_agg] = np.arange(n_agg)  # every aggregate used
    cand = np.concatenate([np.ones((n, 1)), rng.random((n, 3))], axis=1)
    cand[agg == 3, 1:] = 0.5  # a flat aggregate: its colour columns are dropped
    cand[agg == 5, 3] = cand[agg == 5, 2]  # a dependent column
    got = _tentative(agg, n_agg, cand, 1e-6)
    want = torch_path(lambda: _tentative(agg, n_agg, cand, 1e-6))
    assert got[0].shape == want[0].shape and got[0].shape[1] < 4 * n_agg
    np.testing.assert_allclose(got[0].toarray(), want[0].toarray(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[2], want[2])


@pytest.mark.parametrize("precond", ["sa", "mg"])
def test_solve_with_kernels_equals_torch_path(torch_path, precond):
    """End to end: the same alpha within CG's tolerance."""
    rng = np.random.default_rng(8)
    h, w = 60, 70
    yy, xx = np.mgrid[:h, :w]
    truth = np.clip((xx - 20 - 10 * np.sin(yy / 7)) / 25, 0, 1)
    fg, bg = np.array([0.9, 0.6, 0.2]), np.array([0.1, 0.3, 0.7])
    image = truth[..., None] * fg + (1 - truth[..., None]) * bg
    image += 0.03 * rng.standard_normal(image.shape)
    trimap = np.where(truth <= 0, 0, np.where(truth >= 1, 255, 128)).astype(np.uint8)
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy())
    t = torch.as_tensor(trimap)

    def solve():
        return solve_closed_form(im, t, tol=1e-7, maxiter=2000, precond=precond).numpy()

    got = solve()
    want = torch_path(solve)
    assert np.abs(got - want).max() < 1e-3


def test_library_import_does_not_import_numba():
    """``import numba`` costs ~0.6 s: only the first CPU solve may pay it."""
    import subprocess
    import sys

    code = (
        "import sys, napari_hrmatt, napari_hrmatt.engine, napari_hrmatt.models.closed_form\n"
        "print('numba' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_kernels_give_the_same_result_in_concurrent_threads():
    """dask runs blocks in threads and the kernels release the GIL: no shared state."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    images = [torch.as_tensor(rng.random((3, 40, 37))) for _ in range(6)]
    rows = rng.random((40, 37)) < 0.5

    def work(image):
        op = _cf_stencil(image, 1, 1e-7, dtype=torch.float32, rows=rows)
        op = _stencil.restrict_to_unknown(op, torch.as_tensor(rows))
        x = image[0].float()
        return op.jacobi(x, op(x), 1.0 / op.abs_row_sum().clamp(min=1e-6)).numpy()

    sequential = [work(im) for im in images]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(work, images))
    for a, b in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
