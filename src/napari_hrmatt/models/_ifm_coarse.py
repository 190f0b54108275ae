"""Two-level coarse correction for ifm's CG on the colour-mixture neighbour graph (CPU).

The stencil V-cycle (:class:`._stencil.Multigrid`) sees only the local flow; the
colour-mixture flow couples pixels up to ``search`` pixels apart. Here the unknown pixels
are grouped into aggregates on the symmetrised colour-mixture neighbour graph (greedy
"standard" aggregation in the manner of Vanek, Mandel and Brezina, "Algebraic multigrid by
smoothed aggregation", Computing 56, 1996: a pixel whose neighbours are all free forms an
aggregate with them; left-over pixels join a neighbouring aggregate). With the
piecewise-constant prolongator ``T`` (one column per aggregate) the Galerkin matrix
``T^T A T`` of the whole CG operator ``A`` is assembled in scipy.sparse and factorised
once (sparse LU); the correction ``T (T^T A T)^{-1} T^T r`` is added to the V-cycle's
output (additive two-level preconditioner, symmetric positive definite when ``A`` is).

Private to :mod:`.ifm`, imported lazily (this module imports numba: ~0.6 s).
See docs/ifm.md ("Two-level coarse correction").
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from ._aggregation import stencil_to_csr

__all__ = ["CoarseCorrection"]


@numba.njit(cache=True, nogil=True, fastmath=False)
def aggregate_kernel(indptr, indices, agg):
    """Greedy aggregation of a symmetric graph (CSR ``indptr``, ``indices``: int64).

    ``agg`` (n,) int64 is filled with the aggregate of each node; returns their count.
    Pass 1: a node whose neighbours are all unassigned forms an aggregate with them.
    Pass 2: a node still unassigned joins the first pass-1 aggregate among its neighbours.
    Pass 3 (not reached after passes 1-2, kept as a safety net): the rest forms
    aggregates with its unassigned neighbours.
    """
    n = agg.size
    agg[:] = -1
    count = 0
    for i in range(n):
        if agg[i] >= 0:
            continue
        free = True
        for k in range(indptr[i], indptr[i + 1]):
            if agg[indices[k]] >= 0:
                free = False
                break
        if not free:
            continue
        agg[i] = count
        for k in range(indptr[i], indptr[i + 1]):
            agg[indices[k]] = count
        count += 1
    first = agg.copy()
    for i in range(n):
        if first[i] >= 0:
            continue
        for k in range(indptr[i], indptr[i + 1]):
            if first[indices[k]] >= 0:
                agg[i] = first[indices[k]]
                break
    for i in range(n):
        if agg[i] >= 0:
            continue
        agg[i] = count
        for k in range(indptr[i], indptr[i + 1]):
            if agg[indices[k]] < 0:
                agg[indices[k]] = count
        count += 1
    return count


def aggregate(graph: sp.csr_matrix) -> tuple[np.ndarray, int]:
    """Aggregate of each node of the symmetric ``graph`` and the number of aggregates."""
    agg = np.empty(graph.shape[0], dtype=np.int64)
    indptr = np.ascontiguousarray(graph.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(graph.indices, dtype=np.int64)
    count = aggregate_kernel(indptr, indices, agg)
    return agg, int(count)


class CoarseCorrection:
    """``r -> T (T^T A T)^{-1} T^T r`` for ifm's CG operator
    ``A = op + nl + diag(shift)`` restricted to the ``unknown`` pixels.

    Parameters
    ----------
    op : Stencil
        The local operator already restricted to the unknown pixels (CPU).
    nl : ``ifm._NonLocal``
        Colour-mixture and intra-U operator on the flat grid.
    unknown : (H, W) bool array
    shift : (H, W) tensor
        Diagonal added to ``op + nl`` (0 outside the unknown pixels).

    Raises ``RuntimeError`` if the coarse matrix cannot be factorised (``A`` singular).
    """

    def __init__(self, op, nl, unknown: np.ndarray, shift: torch.Tensor):
        self.shape = unknown.shape
        self.flat = np.flatnonzero(unknown.reshape(-1))
        n = self.flat.size
        gid = np.full(unknown.size, -1, dtype=np.int64)
        gid[self.flat] = np.arange(n)
        cm_r = gid[nl.cm_rows.cpu().numpy()]
        cm_c = gid[nl.cm_index.cpu().numpy()]
        cm_w = nl.cm_w.detach().cpu().numpy().astype(np.float64)
        m, k = cm_c.shape

        # Aggregates on the symmetrised colour-mixture graph among unknown pixels (CSR
        # straight from the lists, row by row: no COO sort).
        edge = (cm_c >= 0) & (cm_c != cm_r[:, None])
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(edge.sum(1), out=indptr[1:])
        g = sp.csr_matrix((np.ones(indptr[-1]), cm_c[edge], indptr), shape=(n, n))
        if not np.array_equal(cm_r, np.arange(n)):  # ifm_system: rows = unknown, in order
            raise RuntimeError("colour-mixture rows are not the unknown pixels in order")
        self.agg, nc = aggregate((g + g.T).tocsr())
        self.nc = nc
        agg = self.agg
        t = sp.csr_matrix((np.ones(n), agg, np.arange(n + 1)), shape=(n, nc))

        # T^T op T from the stencil's CSR form.
        s = stencil_to_csr(op, unknown).astype(np.float64)
        ac = (t.T @ (s @ t)).tocsr()
        # sigma_cm (M T)^T (M T): M = I - W on the colour-mixture rows, unknown columns
        # (rows of M T as CSR with duplicate columns, which the products sum).
        cols = np.concatenate([cm_r[:, None], cm_c], 1)
        vals = np.concatenate([np.ones((m, 1)), -cm_w], 1)
        keep = cols >= 0
        mptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(keep.sum(1), out=mptr[1:])
        mt = sp.csr_matrix((vals[keep], agg[cols[keep]], mptr), shape=(m, nc))
        mt.sum_duplicates()
        ac = ac + float(nl.sigma_cm) * (mt.T @ mt)
        # Intra-U graph Laplacian: degrees (edges to known pixels included) minus the
        # weights of edges between unknown pixels, summed per pair of aggregates.
        up, uq = nl.uu_p.cpu().numpy(), nl.uu_q.cpu().numpy()
        uw = nl.uu_w.detach().cpu().numpy().astype(np.float64)
        deg = np.bincount(up, uw, minlength=unknown.size)
        deg += np.bincount(uq, uw, minlength=unknown.size)
        gp, gq = gid[up], gid[uq]
        both = (gp >= 0) & (gq >= 0)
        wc = sp.csr_matrix((uw[both], (agg[gp[both]], agg[gq[both]])), shape=(nc, nc))
        diag = (
            deg[self.flat] + shift.detach().cpu().numpy().astype(np.float64).reshape(-1)[self.flat]
        )
        ac = ac - wc - wc.T + sp.diags(np.bincount(agg, diag, minlength=nc))
        self.lu = spla.splu(ac.tocsc())
        probe = self.lu.solve(np.ones(nc))
        if not np.all(np.isfinite(probe)):
            raise RuntimeError("coarse matrix is singular")

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        ru = r.reshape(-1).numpy()[self.flat].astype(np.float64)
        zc = self.lu.solve(np.bincount(self.agg, ru, minlength=self.nc))
        out = np.zeros(r.numel(), dtype=np.float64)
        out[self.flat] = zc[self.agg]
        return torch.from_numpy(out.reshape(self.shape)).to(r.dtype)
