"""Smoothed-aggregation preconditioner with a colour-aware coarse space.

The restricted matting Laplacian ``L_UU`` (plus an optional prior ``lambda I``) is nearly
singular on every function that is locally ``alpha = a . I + b``: the constant and the
colour channels. Piecewise-constant aggregation (:class:`._stencil.Multigrid`) represents
only the constant, which leaves hundreds of CG iterations. Smoothed aggregation (P. Vanek,
J. Mandel, M. Brezina, "Algebraic multigrid by smoothed aggregation for second and fourth
order elliptic problems", Computing 56, 1996) carries any set of near-null vectors to the
coarse level: each aggregate (a 6 x 6 tile of unknown pixels) gets up to four coarse
unknowns, the per-aggregate orthonormalised ``[1, R, G, B]``, and the tentative prolongator
is smoothed by one damped Jacobi step so its columns overlap. Coarser levels repeat the
construction on 2 x 2 groups of aggregates with the coarse representation of the same
vectors (colour on every level: with the constant alone below the first level most of
the gain is lost); the coarsest level is factorised directly.

The set-up runs in scipy.sparse (float64, on the CPU); the V-cycle runs in torch on the
stencil's device: l1-Jacobi smoothing with the :class:`._stencil.Stencil` product on the
fine grid, torch sparse CSR products for the prolongators and the coarse operators. Pre-
and post-smoothing are the same symmetric smoother, so the cycle is a symmetric positive
definite preconditioner for conjugate gradients.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from . import _stencil
from ._stencil import Stencil

__all__ = ["SmoothedAggregation", "stencil_to_csr"]


def stencil_to_csr(op: Stencil, unknown: np.ndarray) -> sp.csr_matrix:
    """The rows and columns of ``op`` at the ``unknown`` pixels as a CSR matrix (numbered
    in row-major order of the unknown pixels; symmetric up to the rounding of ``op``).

    Built row by row directly: the offsets are in row-major order, so each row's column
    indices come out sorted and no COO sort is needed.
    """
    if _stencil._numba_ok(op.coef) and op.coef.is_contiguous():
        indptr, indices, data = _stencil.numba_kernels().stencil_csr(
            op.coef.numpy(), *op._offset_arrays(), np.ascontiguousarray(unknown, bool)
        )
        n = indptr.size - 1
        return sp.csr_matrix((data, indices, indptr), shape=(n, n))
    h, w = unknown.shape
    r = op.radius
    wp = w + 2 * r
    ids = np.full((h + 2 * r) * wp, -1, dtype=np.int32)
    flat = np.flatnonzero(unknown.reshape(-1))
    n = flat.size
    ys, xs = np.divmod(flat, w)
    base = (ys + r) * wp + (xs + r)
    ids[base] = np.arange(n, dtype=np.int32)
    coef = op.coef.detach().cpu().numpy().reshape(len(op.offsets), -1)
    cols = np.empty((len(op.offsets), n), dtype=np.int32)
    vals = np.empty((len(op.offsets), n), dtype=np.float64)
    for k, (dy, dx) in enumerate(op.offsets):  # (K, n): contiguous writes; read as (n, K)
        cols[k] = ids[base + (dy * wp + dx)]
        vals[k] = coef[k, flat]
    cols, vals = cols.T, vals.T
    keep = (cols >= 0) & (vals != 0)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=indptr[1:])
    return sp.csr_matrix((vals[keep], cols[keep], indptr), shape=(n, n))


def _tentative(agg: np.ndarray, n_agg: int, cand: np.ndarray, drop: float):
    """Tentative prolongator: per aggregate, the candidates ``cand`` (n, m) orthonormalised
    (modified Gram-Schmidt, twice); a column whose remainder is below ``drop`` times its
    norm is dropped. Returns ``(P_tent (n, nc) CSR, coarse candidates (nc, m), owner
    aggregate of each coarse unknown)``."""
    if _stencil.USE_NUMBA:
        indptr, indices, data, cand_c, owner, nc = _stencil.numba_kernels().tentative(
            np.ascontiguousarray(agg, np.int64), int(n_agg),
            np.ascontiguousarray(cand, np.float64), float(drop),
        )  # fmt: skip
        p = sp.csr_matrix((data, indices, indptr), shape=(cand.shape[0], nc))
        return p, cand_c, owner
    n, m = cand.shape
    order = np.argsort(agg, kind="stable")
    counts = np.bincount(agg, minlength=n_agg)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n) - starts[agg[order]]
    b = np.zeros((n_agg, int(counts.max()), m))
    b[agg, slot] = cand
    q = np.zeros_like(b)
    r = np.zeros((n_agg, m, m))
    keep = np.zeros((n_agg, m), dtype=bool)
    for j in range(m):
        v = b[:, :, j].copy()
        norm0 = np.sqrt((v * v).sum(1))
        for _ in range(2):
            for i in range(j):
                c = (q[:, :, i] * v).sum(1)
                v -= c[:, None] * q[:, :, i]
                r[:, i, j] += c
        nv = np.sqrt((v * v).sum(1))
        ok = (nv > drop * norm0) & (nv > 0)
        q[:, :, j] = np.where(ok[:, None], v / np.where(ok, nv, 1.0)[:, None], 0.0)
        r[:, j, j] = np.where(ok, nv, 0.0)
        keep[:, j] = ok
    coarse = np.full((n_agg, m), -1, dtype=np.int64)
    nc = int(keep.sum())
    coarse[keep] = np.arange(nc)
    node = np.repeat(np.arange(n), m)
    col = coarse[agg].reshape(-1)
    val = q[agg, slot].reshape(-1)
    ok = col >= 0
    p = sp.csr_matrix((val[ok], (node[ok], col[ok])), shape=(n, nc))
    owner = np.nonzero(keep)[0]
    return p, r[keep], owner


def _spectral_radius(a: sp.csr_matrix, dinv: np.ndarray, iters: int = 4) -> float:
    """Power-iteration estimate of rho(D^-1 A) (via the symmetric D^-1/2 A D^-1/2).

    Few iterations on purpose: the estimate stays below rho (on 5 MP dev blocks 4
    iterations give ~1.55, 12 give 1.9-2.7, rho is 2.4-2.8), so omega = 4/3 / estimate
    smooths the prolongator more than the textbook value, which took fewer CG
    iterations than 12 power iterations did (docs/engine.md, "Whole process at 5-8 MP");
    each iteration is a fine-matrix product of the set-up."""
    s = np.sqrt(dinv)
    x = np.random.default_rng(0).standard_normal(a.shape[0])
    lam = 1.0
    for _ in range(iters):
        y = s * (a @ (s * x))
        lam = float(np.linalg.norm(y) / max(np.linalg.norm(x), 1e-300))
        x = y / max(np.linalg.norm(y), 1e-300)
    return lam * 1.05  # power iteration underestimates


def _torch_csr(m: sp.spmatrix, dtype, device) -> torch.Tensor:
    m = m.tocsr()
    m.sort_indices()
    index = torch.int32 if m.nnz < 2**31 else torch.int64  # half the index memory
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.as_tensor(m.indptr, dtype=index),
            torch.as_tensor(m.indices, dtype=index),
            torch.as_tensor(m.data, dtype=dtype),
            size=m.shape,
            check_invariants=False,
        ).to(device)


class SmoothedAggregation:
    """Symmetric V-cycle of smoothed aggregation for a restricted stencil operator.

    Parameters
    ----------
    op : Stencil
        ``L_UU`` embedded in the grid (known rows and columns zero), e.g. from
        :func:`._stencil.restrict_to_unknown`; its known rows get an identity diagonal
        here (in place, as :class:`._stencil.Multigrid` does), which CG never sees.
    unknown : (H, W) bool tensor
    image : (C, H, W) tensor
        The colours whose affine functions are the near-null space (any number of
        channels; one for a grey image).
    tile, group : int
        Fine aggregates are ``tile x tile`` pixel tiles, coarser ones ``group x group``
        blocks of aggregates.
    smooth, coarse_smooth : int
        l1-Jacobi steps before and after each coarse correction, on the fine grid (each
        costs a stencil product) and on the coarse levels (cheap sparse products).
    coarsest : int
        Size at or below which a level is solved by a direct factorisation (dense
        Cholesky up to 1500 unknowns, SuperLU on the CPU above).
    drop : float
        A candidate vector whose part orthogonal to the previous ones in an aggregate is
        below ``drop`` times its norm is left out there (flat or one-pixel aggregates).
    colour_levels : int
        Number of levels whose aggregates carry the colour vectors; below them only the
        constant.
    """

    def __init__(
        self,
        op: Stencil,
        unknown: torch.Tensor,
        image: torch.Tensor,
        *,
        tile: int = 6,
        group: int = 2,
        smooth: int = 1,
        coarse_smooth: int = 3,
        coarsest: int = 3000,
        drop: float = 1e-6,
        colour_levels: int = 8,
    ):
        self.op, self.smooth, self.coarse_smooth = op, smooth, coarse_smooth
        dtype, device = op.coef.dtype, op.coef.device
        unk = unknown.cpu().numpy().astype(bool)
        h, w = unk.shape
        self.flat = torch.as_tensor(np.flatnonzero(unk.reshape(-1)), device=device)
        self.shape = (h, w)
        empty = op.diagonal <= 0
        op.coef[op.center][empty] = 1.0
        self.l1_fine = 1.0 / op.abs_row_sum()
        a = stencil_to_csr(op, unk)
        ys, xs = np.nonzero(unk)
        col = image.detach().cpu().numpy().astype(np.float64)[:, ys, xs].T
        cand = np.concatenate([np.ones((ys.size, 1)), col], axis=1)
        tiles = (ys // tile) * ((w + tile - 1) // tile) + xs // tile
        uniq, agg = np.unique(tiles, return_inverse=True)
        ty, tx = uniq // ((w + tile - 1) // tile), uniq % ((w + tile - 1) // tile)
        self.p, self.pt, self.a, self.l1 = [], [], [], []
        level = 0
        while a.shape[0] > coarsest:
            if level >= colour_levels:
                cand = cand[:, :1]
            p_tent, cand_c, owner = _tentative(agg, uniq.size, cand, drop)
            if p_tent.shape[1] > 0.7 * a.shape[0]:
                break  # coarsening stalls (scattered unknown pixels): factor this level
            dinv = 1.0 / a.diagonal()
            omega = (4.0 / 3.0) / _spectral_radius(a, dinv)
            p = (a @ p_tent).tocsr()  # then scaled row by row: -omega D^-1 A P_tent
            p.data *= np.repeat(-omega * dinv, np.diff(p.indptr))
            p = (p + p_tent).tocsr()
            del p_tent
            if level > 0:
                self.a.append(_torch_csr(a, dtype, device))
                l1 = np.asarray(abs(a).sum(1)).ravel()
                self.l1.append(torch.as_tensor(1.0 / l1, dtype=dtype, device=device))
            ap = a @ p
            a = None  # the largest matrices go as soon as they are used (peak memory)
            pt = p.T.tocsr()
            ac = (pt @ ap).tocsr()
            del ap
            ac = ((ac + ac.T) * 0.5).tocsr()
            self.p.append(_torch_csr(p, dtype, device))
            self.pt.append(_torch_csr(pt, dtype, device))
            del p, pt
            # Next aggregates: group x group blocks of this level's aggregates.
            gy, gx = ty[owner] // group, tx[owner] // group
            key = gy * (int(gx.max()) + 1) + gx
            uniq, agg = np.unique(key, return_inverse=True)
            ty, tx = uniq // (int(gx.max()) + 1), uniq % (int(gx.max()) + 1)
            a, cand = ac, cand_c
            level += 1
        self.levels = level
        self._factor(a, device)

    def _factor(self, a: sp.csr_matrix, device):
        n = a.shape[0]
        diag = a.diagonal()
        shift = 1e-10 * float(diag.mean()) if n else 0.0
        if n <= 1500:
            dense = a.toarray()
            try:
                chol = scipy.linalg.cholesky(dense, lower=True)
            except np.linalg.LinAlgError:  # no Dirichlet contact: regularise lightly
                reg = 1e-8 * max(float(diag.mean()), 1e-30)
                chol = scipy.linalg.cholesky(dense + reg * np.eye(n), lower=True)
            self.chol = torch.as_tensor(chol, device=device)
            self.lu = None
        else:
            self.chol = None
            self.lu = spla.splu((a + shift * sp.eye(n)).tocsc())

    def _solve_coarsest(self, b: torch.Tensor) -> torch.Tensor:
        if self.chol is not None:
            x = torch.cholesky_solve(b.reshape(-1, 1).to(self.chol.dtype), self.chol)
            return x.reshape(-1).to(b.dtype)
        x = self.lu.solve(b.detach().cpu().numpy().astype(np.float64))
        return torch.as_tensor(x, dtype=b.dtype, device=b.device)

    def _cycle(self, level: int, b: torch.Tensor) -> torch.Tensor:
        if level == self.levels:
            return self._solve_coarsest(b)
        if level == 0:
            apply, l1 = self.op, self.l1_fine
        else:
            mat, l1 = self.a[level - 1], self.l1[level - 1]

            def apply(v):
                return mat @ v

        steps = self.smooth if level == 0 else self.coarse_smooth
        x = l1 * b
        for _ in range(steps - 1):
            x = self._jacobi(level, apply, x, b, l1)
        res = self.op.residual(x, b) if level == 0 else b - apply(x)
        if level == 0:
            res = res.reshape(-1)[self.flat]
        corr = self.pt[level] @ res
        corr = self.p[level] @ self._cycle(level + 1, corr)
        if level == 0:
            x = x.reshape(-1).index_add(0, self.flat, corr).reshape(self.shape)
        else:
            x = x + corr
        for _ in range(steps):
            x = self._jacobi(level, apply, x, b, l1)
        return x

    def _jacobi(self, level, apply, x, b, l1):
        if level == 0:  # the fine grid: one fused stencil pass on the CPU
            return self.op.jacobi(x, b, l1)
        return x + l1 * (b - apply(x))

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        if self.levels == 0:  # small problem: the direct solve is the preconditioner
            out = torch.zeros_like(b).reshape(-1)
            out[self.flat] = self._solve_coarsest(b.reshape(-1)[self.flat])
            return out.reshape(b.shape)
        return self._cycle(0, b)
