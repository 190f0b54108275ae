"""Sparse stencil operators on the pixel grid, their multigrid preconditioner, and CG.

A :class:`Stencil` stores a symmetric operator as one coefficient image per pixel offset
(the matting Laplacians of :mod:`.closed_form` and :mod:`.ifm` are of this kind) and
applies it without a sparse matrix. :class:`Multigrid` is a V-cycle over Galerkin
coarsenings of it (2 x 2 piecewise-constant aggregation, Gauss-Seidel-like smoothing,
a dense solve at the coarsest level), used as the preconditioner of :func:`cg`;
:func:`crop_to_unknown` is the box of a grid that a solve needs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .._kernel_choice import numba_wanted

__all__ = [
    "Stencil",
    "Multigrid",
    "cg",
    "crop_to_unknown",
    "restrict_to_unknown",
    "shift",
    "stencil_offsets",
    "numba_kernels",
]

#: Use the fused numba kernels (:mod:`._cf_kernels`) for CPU tensors. False: the torch
#: operations everywhere (the CUDA path), e.g. to test them on the CPU. The default
#: follows ``HRMATT_KERNELS`` (:mod:`.._kernel_choice`).
USE_NUMBA = numba_wanted()


def numba_kernels():
    """The module of fused numba kernels, imported on first use (``import numba`` costs
    ~0.6 s: never on ``import napari_hrmatt``'s path)."""
    from . import _cf_kernels

    return _cf_kernels


def half_kernels():
    """The symmetric half-stencil kernels (:mod:`._symstencil_kernels`), on first use."""
    from . import _symstencil_kernels

    return _symstencil_kernels


def _numba_ok(*tensors: torch.Tensor) -> bool:
    """Whether the numba kernels take these tensors: CPU, one float dtype, no grad."""
    if not USE_NUMBA:
        return False
    t0 = tensors[0]
    if t0.device.type != "cpu" or t0.dtype not in (torch.float32, torch.float64):
        return False
    return all(
        t.device == t0.device and t.dtype == t0.dtype and not t.requires_grad for t in tensors
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``y[..., i, j] = x[..., i + dy, j + dx]``, zero where that falls outside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def stencil_offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


class Stencil:
    """A sparse symmetric operator stored as one coefficient image per neighbour offset.

    ``coef[k, i, j]`` multiplies ``x[i + dy_k, j + dx_k]`` in row ``(i, j)``.
    """

    def __init__(self, coef: torch.Tensor, radius: int):
        self.coef, self.radius = coef, radius
        self.offsets = stencil_offsets(radius)
        self.center = len(self.offsets) // 2
        self._half = None

    def use_half(self) -> Stencil:
        """From now on, the products (``__call__``, ``residual``, ``jacobi``) on the CPU
        read only the centre and the offsets ``d > 0`` of a copy of ``coef`` (half the
        coefficient traffic, :mod:`._symstencil_kernels`): for a symmetric operator,
        the same products up to rounding. Later in-place changes of ``coef`` are not
        seen by them. Does nothing where the numba kernels do not apply."""
        if self._fused():
            keep = [self.center] + list(range(self.center + 1, len(self.offsets)))
            half = self.coef[keep].contiguous()
            dys, dxs = self._offset_arrays()
            self._half = (half.numpy(), dys[keep].copy(), dxs[keep].copy())
        return self

    @property
    def diagonal(self) -> torch.Tensor:
        return self.coef[self.center]

    def _terms(self, h: int, w: int):
        """``(coefficient view, output rows, output cols, input rows, input cols)`` per
        off-centre offset, for an ``h x w`` grid (cached: the views are reused)."""
        key = (h, w, self.coef)
        cached = getattr(self, "_cache_key", None)
        if cached is None or cached[:2] != key[:2] or cached[2] is not self.coef:
            terms = []
            for k, (dy, dx) in enumerate(self.offsets):
                if k == self.center or abs(dy) >= h or abs(dx) >= w:
                    continue
                yd, ys = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
                xd, xs = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
                terms.append((self.coef[k, yd, xd], yd, xd, ys, xs))
            self._cache_key, self._cache_terms = key, terms
        return self._cache_terms

    def _offset_arrays(self):
        arrs = getattr(self, "_offset_np", None)
        if arrs is None:
            arrs = tuple(np.array(v, dtype=np.int64) for v in zip(*self.offsets, strict=True))
            self._offset_np = arrs
        return arrs

    def _fused(self, *tensors: torch.Tensor) -> bool:
        return self.coef.is_contiguous() and _numba_ok(self.coef, *tensors)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._half is not None and self._fused(x):
            out = torch.empty(x.shape, dtype=x.dtype)
            half_kernels().half_apply(*self._half, _np(x), out.numpy())
            return out
        if self._fused(x):
            out = torch.empty(x.shape, dtype=x.dtype)
            numba_kernels().stencil_apply(
                self.coef.numpy(), *self._offset_arrays(), _np(x), out.numpy()
            )
            return out
        # In place on views: no padded copy of x, no zero-filled output. Neighbours that
        # fall outside the array contribute nothing (their coefficients are zero anyway).
        out = self.coef[self.center] * x
        for c, yd, xd, ys, xs in self._terms(*x.shape):
            out[yd, xd].addcmul_(c, x[ys, xs])
        return out

    def abs_row_sum(self) -> torch.Tensor:
        """``sum_k |coef[k]|``: the l1 norm of every row (l1-Jacobi smoothing)."""
        if self._fused():
            out = torch.empty(self.coef.shape[1:], dtype=self.coef.dtype)
            numba_kernels().stencil_abs_sum(self.coef.numpy(), out.numpy())
            return out
        return self.coef.abs().sum(0)

    def residual(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``b - A x`` (one fused pass on the CPU)."""
        if self._half is not None and self._fused(x, b):
            out = torch.empty(x.shape, dtype=x.dtype)
            half_kernels().half_residual(*self._half, _np(x), _np(b), out.numpy())
            return out
        if self._fused(x, b):
            out = torch.empty(x.shape, dtype=x.dtype)
            numba_kernels().stencil_residual(
                self.coef.numpy(), *self._offset_arrays(), _np(x), _np(b), out.numpy()
            )
            return out
        return b - self(x)

    def jacobi(self, x: torch.Tensor, b: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        """One l1-Jacobi step ``x + l1 (b - A x)`` (one fused pass on the CPU)."""
        if self._half is not None and self._fused(x, b, l1):
            out = torch.empty(x.shape, dtype=x.dtype)
            half_kernels().half_jacobi(*self._half, _np(x), _np(b), _np(l1), out.numpy())
            return out
        if self._fused(x, b, l1):
            out = torch.empty(x.shape, dtype=x.dtype)
            numba_kernels().stencil_jacobi(
                self.coef.numpy(), *self._offset_arrays(), _np(x), _np(b), _np(l1), out.numpy()
            )
            return out
        return x + l1 * (b - self(x))

    def coarsen(self) -> Stencil:
        """Galerkin operator ``P^T A P`` for piecewise-constant 2x2 aggregation.

        A fine pixel ``i = 2I + s`` coupled to ``i + d`` lands in coarse cell
        ``I + (s + d) // 2``: with ``|d| <= 2`` and ``s in {0, 1}`` the coarse couplings
        reach one cell, so every coarse level is a 9-point stencil.
        """
        k, h, w = self.coef.shape
        if self._fused():  # the same sums in the same order, one pass (numba)
            out = torch.empty((9, (h + 1) // 2, (w + 1) // 2), dtype=self.coef.dtype)
            half_kernels().coarsen2(self.coef.numpy(), *self._offset_arrays(), out.numpy())
            return Stencil(out, 1)
        coef = F.pad(self.coef, (0, w % 2, 0, h % 2))
        hc, wc = coef.shape[1] // 2, coef.shape[2] // 2
        out = torch.zeros((9, hc, wc), dtype=coef.dtype, device=coef.device)
        for sy in (0, 1):
            for sx in (0, 1):
                sub = coef[:, sy::2, sx::2]
                for c, (dy, dx) in zip(sub, self.offsets, strict=True):
                    out[((sy + dy) // 2 + 1) * 3 + (sx + dx) // 2 + 1] += c
        return Stencil(out, 1)


class Multigrid:
    """Symmetric V-cycle preconditioner (unsmoothed aggregation, l1-Jacobi smoothing).

    Levels are Galerkin products of 2x2 piecewise-constant aggregation, so the cycle is
    symmetric positive definite and can precondition conjugate gradients; the coarsest
    level (at most ``coarsest`` cells) is solved exactly by a dense Cholesky factor.
    """

    def __init__(self, op: Stencil, smooth: int = 1, coarsest: int = 1024):
        self.levels = [op]
        while self.levels[-1].coef[0].numel() > coarsest:
            self.levels.append(self.levels[-1].coarsen())
        self.smooth = smooth
        self.l1 = []
        for lvl in self.levels:
            d = lvl.abs_row_sum()
            # Cells with no unknown pixel are isolated: identity rows.
            empty = lvl.diagonal <= 0
            lvl.coef[lvl.center][empty] = 1.0
            d[empty] = 1.0
            self.l1.append(1.0 / d)
        self._factor_coarsest()

    def _factor_coarsest(self):
        op = self.levels[-1]
        h, w = op.coef.shape[1:]
        n = h * w
        idx = torch.arange(n, device=op.coef.device).reshape(h, w)
        dense = torch.zeros((n, n), dtype=torch.float64, device=op.coef.device)
        for c, (dy, dx) in zip(op.coef, op.offsets, strict=True):
            cols = shift(idx.to(torch.float64) + 1, dy, dx).long() - 1  # -1: outside
            ok = (cols >= 0) & (c != 0)
            dense[idx[ok], cols[ok]] += c[ok].double()
        dense = 0.5 * (dense + dense.T)
        chol, info = torch.linalg.cholesky_ex(dense)
        if info != 0:  # an unknown region with no Dirichlet contact: regularise lightly
            chol = torch.linalg.cholesky(dense + 1e-6 * torch.eye(n, dtype=dense.dtype))
        self.chol = chol

    def _cycle(self, level: int, b: torch.Tensor) -> torch.Tensor:
        if level == len(self.levels) - 1:
            x = torch.cholesky_solve(b.reshape(-1, 1).double(), self.chol)
            return x.reshape(b.shape).to(b.dtype)
        op, l1 = self.levels[level], self.l1[level]
        x = l1 * b
        for _ in range(self.smooth - 1):
            x = op.jacobi(x, b, l1)
        res = op.residual(x, b)
        h, w = res.shape
        fused = _numba_ok(res, x)
        if fused:  # the same sums in one pass each (numba)
            coarse = torch.empty(((h + 1) // 2, (w + 1) // 2), dtype=res.dtype)
            half_kernels().restrict2(_np(res), coarse.numpy())
        else:
            coarse = F.pad(res, (0, w % 2, 0, h % 2))
            coarse = (
                coarse[0::2, 0::2] + coarse[1::2, 0::2] + coarse[0::2, 1::2] + coarse[1::2, 1::2]
            )
        corr = self._cycle(level + 1, coarse)
        if fused:
            out = torch.empty_like(x)
            half_kernels().prolong_add(_np(x), _np(corr), out.numpy())
            x = out
        else:
            hc, wc = corr.shape  # piecewise-constant prolongation: one broadcast copy
            x = x + corr[:, None, :, None].expand(hc, 2, wc, 2).reshape(2 * hc, 2 * wc)[:h, :w]
        for _ in range(self.smooth):
            x = op.jacobi(x, b, l1)
        return x

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        return self._cycle(0, b)


def restrict_to_unknown(op: Stencil, unknown: torch.Tensor) -> Stencil:
    """Turn ``op`` (in place) into ``L_UU`` embedded in the full grid.

    Known rows and columns are zeroed (the multigrid set-up then gives known rows an
    identity diagonal, which leaves CG untouched: its vectors are zero there).
    """
    if op._fused() and unknown.device.type == "cpu":  # one pass, in place
        numba_kernels().stencil_restrict(
            op.coef.numpy(), *op._offset_arrays(), np.ascontiguousarray(unknown.numpy(), bool)
        )
        return op
    u = unknown.to(op.coef.dtype)
    for c, (dy, dx) in zip(op.coef, op.offsets, strict=True):
        c.mul_(u * shift(u, dy, dx))
    return op


def cg(apply, precond, b, y, maxiter: int, tol: float):
    """Preconditioned conjugate gradients for ``apply(y) = b`` from ``y``.

    Stops when ``|b - apply(y)| <= tol |b|``, after ``maxiter`` iterations, or on a
    non-positive curvature (the operator is positive semi-definite only up to rounding).
    Returns ``(y, iterations)``. Used by every solver here and by :mod:`.ifm`. With
    ``b == 0`` (e.g. an unknown region bordered by background only) the answer is 0: it is
    returned at once (iterating would drive the residual to 0 and divide 0 by 0).
    """
    bnorm = float(torch.linalg.vector_norm(b))
    if bnorm == 0.0:
        return torch.zeros_like(y), 0
    res = b - apply(y)
    z = precond(res)
    p = z.clone()
    rz = (res * z).sum()
    threshold = tol * bnorm
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007 - the count is reported
        if float(torch.linalg.vector_norm(res)) <= threshold:
            it -= 1
            break
        ap = apply(p)
        pap = (p * ap).sum()
        if pap <= 0:
            break
        step = rz / pap
        y = y + step * p
        res = res - step * ap
        z = precond(res)
        rz_new = (res * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return y, it


def crop_to_unknown(unknown: np.ndarray, margin: int):
    """Bounding box of the unknown pixels grown by ``margin`` (slices), or None."""
    rows = np.flatnonzero(unknown.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(unknown.any(0))
    h, w = unknown.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )
