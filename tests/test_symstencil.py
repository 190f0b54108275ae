"""Products from half of a symmetric stencil (``Stencil.use_half``, numba) against the
full stencil's products (torch path) and an explicit loop over all offsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hrmatt.models import _stencil
from napari_hrmatt.models._stencil import Stencil


def _symmetric_stencil(rng, radius, h, w, dtype):
    """Random coefficients with ``coef[-d][i] == coef[d][i - d]`` (a symmetric operator)."""
    coef = torch.as_tensor(rng.standard_normal(((2 * radius + 1) ** 2, h, w)))
    offsets = _stencil.stencil_offsets(radius)
    for k, (dy, dx) in enumerate(offsets):
        if (dy, dx) > (0, 0):
            coef[offsets.index((-dy, -dx))] = _stencil.shift(coef[k], -dy, -dx)
    return Stencil(coef.to(dtype), radius)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("radius, h, w", [(2, 23, 17), (1, 9, 30), (2, 3, 4), (2, 1, 7)])
def test_half_stencil_products_equal_the_full_ones(monkeypatch, dtype, tol, radius, h, w):
    rng = np.random.default_rng(radius * 100 + h)
    op = _symmetric_stencil(rng, radius, h, w, dtype)
    dense = np.zeros((h * w, h * w))  # the operator as a matrix: symmetric by construction
    for c, (dy, dx) in zip(op.coef.double(), op.offsets, strict=True):
        for i in range(h):
            for j in range(w):
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    dense[i * w + j, (i + dy) * w + j + dx] += float(c[i, j])
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=1e-6)
    x, b, l1 = (torch.as_tensor(rng.standard_normal((h, w)), dtype=dtype) for _ in range(3))
    monkeypatch.setattr(_stencil, "USE_NUMBA", False)
    ref = (op(x), op.residual(x, b), op.jacobi(x, b, l1))
    monkeypatch.setattr(_stencil, "USE_NUMBA", True)
    assert op.use_half() is op and op._half is not None
    assert op._half[0].shape[0] == len(op.offsets) // 2 + 1
    got = (op(x), op.residual(x, b), op.jacobi(x, b, l1))
    for g, want in zip(got, ref, strict=True):
        assert g.dtype == dtype
        assert float((g - want).abs().max()) <= tol * float(want.abs().max()) * 10
    explicit = dense @ x.double().numpy().ravel()
    np.testing.assert_allclose(got[0].double().numpy().ravel(), explicit, rtol=0,
                               atol=tol * 10 * np.abs(explicit).max())  # fmt: skip


def test_use_half_is_a_no_op_on_the_torch_path(monkeypatch):
    monkeypatch.setattr(_stencil, "USE_NUMBA", False)
    op = _symmetric_stencil(np.random.default_rng(0), 1, 5, 6, torch.float32)
    assert op.use_half()._half is None


@pytest.mark.parametrize("h, w", [(7, 9), (8, 6), (1, 5), (5, 1)])
def test_multigrid_transfers_equal_the_torch_formulas(h, w):
    """The V-cycle's restriction and prolongation kernels: bit-identical to the torch code
    (padded 2 x 2 sums, broadcast copy), odd sizes included."""
    from napari_hrmatt.models._symstencil_kernels import prolong_add, restrict2

    rng = np.random.default_rng(h * 10 + w)
    r = torch.as_tensor(rng.standard_normal((h, w)), dtype=torch.float32)
    pad = torch.nn.functional.pad(r, (0, w % 2, 0, h % 2))
    want = pad[0::2, 0::2] + pad[1::2, 0::2] + pad[0::2, 1::2] + pad[1::2, 1::2]
    got = torch.empty_like(want)
    restrict2(r.numpy(), got.numpy())
    assert torch.equal(got, want)
    corr = torch.as_tensor(rng.standard_normal(want.shape), dtype=torch.float32)
    hc, wc = corr.shape
    want = r + corr[:, None, :, None].expand(hc, 2, wc, 2).reshape(2 * hc, 2 * wc)[:h, :w]
    got = torch.empty_like(r)
    prolong_add(r.numpy(), corr.numpy(), got.numpy())
    assert torch.equal(got, want)


def test_multigrid_cycle_with_kernels_equals_torch_path(monkeypatch):
    """A V-cycle on a symmetric diagonally dominant stencil: numba transfers and half
    products (level 0) against the torch path."""
    rng = np.random.default_rng(7)
    op = _symmetric_stencil(rng, 2, 37, 29, torch.float64)
    op.coef[op.center] = op.coef.abs().sum(0) + 1.0
    b = torch.as_tensor(rng.standard_normal((37, 29)))
    monkeypatch.setattr(_stencil, "USE_NUMBA", False)
    want = _stencil.Multigrid(Stencil(op.coef.clone(), 2), coarsest=16)(b)
    monkeypatch.setattr(_stencil, "USE_NUMBA", True)
    mg = _stencil.Multigrid(op, coarsest=16)
    op.use_half()
    assert len(mg.levels) >= 3
    np.testing.assert_allclose(mg(b).numpy(), want.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("radius, h, w", [(2, 11, 9), (1, 8, 7), (2, 1, 3), (1, 6, 1)])
def test_coarsen_kernel_equals_the_torch_formula(monkeypatch, dtype, radius, h, w):
    """``Stencil.coarsen`` in one numba pass == its torch code (padded strided sums in the
    same order): bit-identical, odd sizes included."""
    rng = np.random.default_rng(radius * 10 + h + w)
    coef = torch.as_tensor(rng.standard_normal(((2 * radius + 1) ** 2, h, w)), dtype=dtype)
    monkeypatch.setattr(_stencil, "USE_NUMBA", False)
    want = Stencil(coef, radius).coarsen()
    monkeypatch.setattr(_stencil, "USE_NUMBA", True)
    got = Stencil(coef, radius).coarsen()
    assert got.radius == 1 and got.coef.dtype == dtype
    assert torch.equal(got.coef, want.coef)
