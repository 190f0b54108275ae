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
