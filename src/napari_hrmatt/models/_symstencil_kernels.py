"""Numba kernels of :class:`._stencil.Stencil` products from half of a symmetric stencil.

A symmetric stencil (``A[i, i + d] == A[i + d, i]``) is stored as ``2m + 1`` coefficient
images, one per offset ``d``, but half of them repeat the other half shifted:
``coef[-d][i] == coef[d][i - d]``. These kernels read only the centre and the offsets
``d > 0`` (row-major order: ``dy > 0``, or ``dy == 0`` and ``dx > 0``): the coefficient of
``-d`` at pixel ``i`` is read at ``i - d`` of the stored image ``d``, a row that streamed
through ``dy`` rows earlier and is still in cache. Against the full stencil's kernels
(:mod:`._cf_kernels`) this halves the coefficient traffic of a product (the level-0 cost
of ifm's CG, whose local flow is a 25-point stencil), with the same products up to
rounding (sums in another order; the two stored copies of a coefficient may differ by a
rounding).

Also the V-cycle's grid transfers (:class:`._stencil.Multigrid`): the 2 x 2 restriction
and the piecewise-constant prolongation plus add, one pass each instead of a padded copy,
strided slices and a broadcast copy in torch (the same sums in the same order: bit-identical);
and its set-up's Galerkin coarsening (``Stencil.coarsen``), likewise.

Private to :mod:`._stencil` (``Stencil.use_half``, ``Multigrid``), imported lazily:
``import numba`` costs ~0.6 s. Serial, ``nogil``, cached; float32 or float64 arrays, int64
offsets.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@_jit
def _row_product_half(half, dys, dxs, x, i, acc):
    """``acc[:] = (A x)[i, :]`` from ``half[0]`` (the centre) and ``half[k]`` (offset
    ``(dys[k], dxs[k]) > 0``) for ``k >= 1``."""
    n_off, h, w = half.shape
    c0 = half[0, i]
    x0 = x[i]
    for j in range(w):
        acc[j] = c0[j] * x0[j]
    for k in range(1, n_off):
        dy, dx = dys[k], dxs[k]
        j0 = max(0, -dx)
        j1 = min(w, w - dx)
        ii = i + dy  # the stored offset: coefficient at i, neighbour i + d
        if ii < h:
            ck = half[k, i, j0:j1]
            xr = x[ii, j0 + dx : j1 + dx]
            ac = acc[j0:j1]
            for j in range(j1 - j0):
                ac[j] += ck[j] * xr[j]
        ii = i - dy  # its mirror -d: coefficient stored at i - d, neighbour i - d
        if ii >= 0:
            # out[j] for j in [j0 + dx, j1 + dx) reads column j - dx
            ck = half[k, ii, j0:j1]
            xr = x[ii, j0:j1]
            ac = acc[j0 + dx : j1 + dx]
            for j in range(j1 - j0):
                ac[j] += ck[j] * xr[j]


@_jit
def half_apply(half, dys, dxs, x, out):
    """``out = A x``."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product_half(half, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = acc[j]


@_jit
def half_residual(half, dys, dxs, x, b, out):
    """``out = b - A x``."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product_half(half, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = b[i, j] - acc[j]


@_jit
def half_jacobi(half, dys, dxs, x, b, l1, out):
    """``out = x + l1 (b - A x)`` (``out`` must not be ``x``)."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product_half(half, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = x[i, j] + l1[i, j] * (b[i, j] - acc[j])


@_jit
def restrict2(r, out):
    """``out[I, J] = r[2I, 2J] + r[2I+1, 2J] + r[2I, 2J+1] + r[2I+1, 2J+1]`` (in this order,
    in ``r``'s dtype; cells past an odd edge count 0), ``out`` of shape ``ceil(r / 2)``."""
    h, w = r.shape
    hc, wc = out.shape
    for ic in range(hc):
        i0, i1 = 2 * ic, 2 * ic + 1
        for jc in range(wc):
            j0, j1 = 2 * jc, 2 * jc + 1
            s = r[i0, j0]
            if i1 < h:
                s = s + r[i1, j0]
            if j1 < w:
                s = s + r[i0, j1]
                if i1 < h:
                    s = s + r[i1, j1]
            out[ic, jc] = s


@_jit
def prolong_add(x, corr, out):
    """``out[i, j] = x[i, j] + corr[i // 2, j // 2]`` (piecewise-constant prolongation)."""
    h, w = x.shape
    for i in range(h):
        ci = corr[i // 2]
        xi = x[i]
        oi = out[i]
        for j in range(w):
            oi[j] = xi[j] + ci[j // 2]


@_jit
def coarsen2(coef, dys, dxs, out):
    """Galerkin coarsening of a stencil for 2 x 2 piecewise-constant aggregation (see
    ``Stencil.coarsen``): ``out[t, I, J]`` (9 offsets, shape ``ceil(coef / 2)``) sums
    ``coef[k, 2I + sy, 2J + sx]`` over ``(sy, sx)`` and ``k`` in that order with
    ``t = ((sy + dy_k) // 2 + 1) * 3 + (sx + dx_k) // 2 + 1``, fine pixels past an odd
    edge counting 0: the same sums in the same order as the torch code, in one pass."""
    n_off, h, w = coef.shape
    hc, wc = out.shape[1], out.shape[2]
    tgt = np.empty((2, 2, n_off), np.int64)
    for sy in range(2):
        for sx in range(2):
            for k in range(n_off):
                tgt[sy, sx, k] = ((sy + dys[k]) // 2 + 1) * 3 + (sx + dxs[k]) // 2 + 1
    acc = np.empty(9, out.dtype)
    acc[0] = 0
    zero = acc[0]  # of out's dtype: the pad's zeros are added as the torch code adds them
    for ic in range(hc):
        for jc in range(wc):
            for t in range(9):
                acc[t] = 0
            for sy in range(2):
                i = 2 * ic + sy
                for sx in range(2):
                    j = 2 * jc + sx
                    inside = i < h and j < w
                    for k in range(n_off):
                        v = coef[k, i, j] if inside else zero
                        t = tgt[sy, sx, k]
                        acc[t] = acc[t] + v
            for t in range(9):
                out[t, ic, jc] = acc[t]
