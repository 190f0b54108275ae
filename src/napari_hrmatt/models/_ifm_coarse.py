"""Two-level coarse correction for ifm's CG on the colour-mixture neighbour graph (CPU).

The stencil V-cycle (:class:`._stencil.Multigrid`) sees only the local flow; the
colour-mixture flow couples pixels up to ``search`` pixels apart. Here the unknown pixels
are grouped into aggregates on the symmetrised colour-mixture neighbour graph (greedy
"standard" aggregation in the manner of Vanek, Mandel and Brezina, "Algebraic multigrid by
smoothed aggregation", Computing 56, 1996: a pixel whose neighbours are all free forms an
aggregate with them; left-over pixels join a neighbouring aggregate). With the
piecewise-constant prolongator ``T`` (one column per aggregate) the Galerkin matrix
``T^T A T`` of the whole CG operator ``A`` is assembled in one numba pass over the fine
neighbour lists (no fine-level scipy products) and factorised once (scipy's sparse LU
in symmetric mode); the correction ``T (T^T A T)^{-1} T^T r`` is added to the V-cycle's
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

__all__ = ["CoarseCorrection"]


@numba.njit(cache=True, nogil=True, fastmath=False)
def cm_aggregate_kernel(cm_c, agg):
    """Greedy aggregation of the symmetrised colour-mixture graph among the unknown pixels
    (``i ~ j`` if either lists the other; ``cm_c`` (n, k) int64: neighbour ids among the
    unknown pixels, -1 for others; self loops ignored), without building that graph.

    ``agg`` (n,) int64 is filled with the aggregate of each pixel; returns their count.
    Pass 1: a pixel whose neighbours are all unassigned forms an aggregate with them.
    Pass 2: a pixel still unassigned joins the pass-1 aggregate of its lowest-numbered
    neighbour that has one. Pass 3 (not reached after passes 1-2, kept as a safety net):
    the rest forms aggregates with its unassigned neighbours. A pixel's neighbours are its
    own list and the pixels that list it (an incoming list, by counting sort); no pass
    depends on their order or on repeats, so neither is sorted out.
    """
    n, k = cm_c.shape
    iptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        for j in range(k):
            c = cm_c[r, j]
            if c >= 0 and c != r:
                iptr[c + 1] += 1
    for i in range(n):
        iptr[i + 1] += iptr[i]
    fill = iptr[:-1].copy()
    inc = np.empty(iptr[n], np.int64)
    for r in range(n):
        for j in range(k):
            c = cm_c[r, j]
            if c >= 0 and c != r:
                inc[fill[c]] = r
                fill[c] += 1
    agg[:] = -1
    count = 0
    for i in range(n):
        if agg[i] >= 0:
            continue
        free = True
        for j in range(k):
            c = cm_c[i, j]
            if c >= 0 and agg[c] >= 0:
                free = False
                break
        if free:
            for e in range(iptr[i], iptr[i + 1]):
                if agg[inc[e]] >= 0:
                    free = False
                    break
        if not free:
            continue
        agg[i] = count
        for j in range(k):
            if cm_c[i, j] >= 0:
                agg[cm_c[i, j]] = count
        for e in range(iptr[i], iptr[i + 1]):
            agg[inc[e]] = count
        count += 1
    first = agg.copy()
    for i in range(n):
        if first[i] >= 0:
            continue
        best = -1
        for j in range(k):
            c = cm_c[i, j]
            if c >= 0 and c != i and first[c] >= 0 and (best < 0 or c < best):
                best = c
        for e in range(iptr[i], iptr[i + 1]):
            c = inc[e]
            if first[c] >= 0 and (best < 0 or c < best):
                best = c
        if best >= 0:
            agg[i] = first[best]
    for i in range(n):
        if agg[i] >= 0:
            continue
        agg[i] = count
        for j in range(k):
            c = cm_c[i, j]
            if c >= 0 and agg[c] < 0:
                agg[c] = count
        for e in range(iptr[i], iptr[i + 1]):
            if agg[inc[e]] < 0:
                agg[inc[e]] = count
        count += 1
    return count


@numba.njit(cache=True, nogil=True, fastmath=False)
def galerkin_kernel(
    agg, nc, coef, dys, dxs, gid, flat, cm_c, cm_w, sigma, uu_index, uu_w, shift, cap
):
    """CSR (``indptr``, ``indices``, ``data``; a row's columns in the order first met, not
    sorted) of ``T^T A T`` (see :class:`CoarseCorrection`) from the fine lists, coarse row
    by coarse row with a dense accumulator (Gustavson).

    ``agg`` (n,) aggregate of each unknown pixel, ``nc`` their count; ``coef`` (K, H, W)
    the local operator's stencil (offsets ``dys``, ``dxs``; its rows and columns at the
    unknown pixels are read, zero coefficients skipped); ``gid`` (H W,) each pixel's id
    among the unknown pixels (-1: known) and ``flat`` (n,) the unknown pixels' flat
    indices; ``cm_c`` (n, k) colour-mixture neighbour ids among the unknown pixels (-1
    otherwise) with weights ``cm_w``; ``uu_index`` (n, K') intra-U neighbours (flat
    indices) of each unknown pixel with weights ``uu_w``, whose degrees (edges to known
    pixels included) go on the diagonal with ``shift`` (H W,). ``cap``: the output's first
    capacity in entries (doubled as needed).
    """
    n, k = cm_c.shape
    h, w = coef.shape[1], coef.shape[2]
    n_off = coef.shape[0]
    # The diagonal: intra-U degrees from either end (summed in edge order) plus the shift.
    deg_p = np.zeros(n, np.float64)
    deg_q = np.zeros(n, np.float64)
    ku = uu_index.shape[1]
    for r in range(n):
        for j in range(ku):
            deg_p[r] += uu_w[r, j]
            g = gid[uu_index[r, j]]
            if g >= 0:
                deg_q[g] += uu_w[r, j]
    diag = np.empty(n, np.float64)
    for i in range(n):
        diag[i] = (deg_p[i] + deg_q[i]) + np.float64(shift[flat[i]])
    # Members of each aggregate (counting sort).
    mptr = np.zeros(nc + 1, np.int64)
    for i in range(n):
        mptr[agg[i] + 1] += 1
    for a in range(nc):
        mptr[a + 1] += mptr[a]
    fill = mptr[:-1].copy()
    members = np.empty(n, np.int64)
    for i in range(n):
        members[fill[agg[i]]] = i
        fill[agg[i]] += 1
    # Rows of M T (M = I - W on the colour-mixture rows): aggregates merged per row.
    where = np.full(nc, -1, np.int64)
    tptr = np.zeros(n + 1, np.int64)
    tcol = np.empty(n * (k + 1), np.int64)
    tval = np.empty(n * (k + 1), np.float64)
    pos = 0
    for r in range(n):
        start = pos
        for j in range(k + 1):
            c = r if j == 0 else cm_c[r, j - 1]
            if c < 0:
                continue
            v = 1.0 if j == 0 else -cm_w[r, j - 1]
            a = agg[c]
            if where[a] >= start:
                tval[where[a]] += v
            else:
                where[a] = pos
                tcol[pos] = a
                tval[pos] = v
                pos += 1
        tptr[r + 1] = pos
    # Its transpose: per aggregate, the rows r with an entry and the entry.
    cptr = np.zeros(nc + 1, np.int64)
    for e in range(pos):
        cptr[tcol[e] + 1] += 1
    for a in range(nc):
        cptr[a + 1] += cptr[a]
    fill = cptr[:-1].copy()
    crow = np.empty(pos, np.int64)
    cval = np.empty(pos, np.float64)
    for r in range(n):
        for e in range(tptr[r], tptr[r + 1]):
            a = tcol[e]
            crow[fill[a]] = r
            cval[fill[a]] = tval[e]
            fill[a] += 1
    # Intra-U edges between unknown pixels, by the aggregate of either end.
    eptr = np.zeros(nc + 1, np.int64)
    for r in range(n):
        for j in range(ku):
            g = gid[uu_index[r, j]]
            if g >= 0:
                eptr[agg[r] + 1] += 1
                eptr[agg[g] + 1] += 1
    for a in range(nc):
        eptr[a + 1] += eptr[a]
    fill = eptr[:-1].copy()
    eto = np.empty(eptr[nc], np.int64)
    ew = np.empty(eptr[nc], np.float64)
    for r in range(n):
        for j in range(ku):
            g = gid[uu_index[r, j]]
            if g >= 0:
                a, b = agg[r], agg[g]
                eto[fill[a]] = b
                ew[fill[a]] = uu_w[r, j]
                fill[a] += 1
                eto[fill[b]] = a
                ew[fill[b]] = uu_w[r, j]
                fill[b] += 1
    # Coarse rows.
    acc = np.zeros(nc, np.float64)
    mark = np.full(nc, -1, np.int64)
    touched = np.empty(nc, np.int64)
    ptr = np.zeros(nc + 1, np.int64)
    idx = np.empty(cap, np.int64)
    val = np.empty(cap, np.float64)
    nnz = 0
    for a in range(nc):
        nt = 0
        for m in range(mptr[a], mptr[a + 1]):
            i = members[m]
            y, x = flat[i] // w, flat[i] % w
            for o in range(n_off):
                yy, xx = y + dys[o], x + dxs[o]
                if yy < 0 or yy >= h or xx < 0 or xx >= w:
                    continue
                col = gid[yy * w + xx]
                v = coef[o, y, x]
                if col < 0 or v == 0:
                    continue
                b = agg[col]
                if mark[b] != a:
                    mark[b] = a
                    acc[b] = 0.0
                    touched[nt] = b
                    nt += 1
                acc[b] += np.float64(v)
            if mark[a] != a:
                mark[a] = a
                acc[a] = 0.0
                touched[nt] = a
                nt += 1
            acc[a] += diag[i]
        for e in range(cptr[a], cptr[a + 1]):
            r = crow[e]
            va = sigma * cval[e]
            for f in range(tptr[r], tptr[r + 1]):
                b = tcol[f]
                if mark[b] != a:
                    mark[b] = a
                    acc[b] = 0.0
                    touched[nt] = b
                    nt += 1
                acc[b] += va * tval[f]
        for e in range(eptr[a], eptr[a + 1]):
            b = eto[e]
            if mark[b] != a:
                mark[b] = a
                acc[b] = 0.0
                touched[nt] = b
                nt += 1
            acc[b] -= ew[e]
        if nnz + nt > cap:
            cap = 2 * (nnz + nt)
            idx2 = np.empty(cap, np.int64)
            val2 = np.empty(cap, np.float64)
            for t in range(nnz):  # loops, not slice copies: those compile numba's
                idx2[t] = idx[t]  # shape-error messages (~1.8 s on the first run)
                val2[t] = val[t]
            idx, val = idx2, val2
        for t in range(nt):
            idx[nnz + t] = touched[t]
            val[nnz + t] = acc[touched[t]]
        nnz += nt
        ptr[a + 1] = nnz
    return ptr, idx[:nnz].copy(), val[:nnz].copy()


#: ``splu`` options for the coarse matrix, which is symmetric positive definite (a
#: Galerkin product of the SPD CG operator): a minimum-degree ordering of ``A + A^T``
#: and no pivoting (symmetric mode), i.e. in effect a Cholesky-like factorisation. On the
#: global pass of GT04 at 0.5 MP (4,722 rows) factor 0.49 -> 0.20 s, one solve 3.5 ->
#: 1.7 ms, 4.7 -> 2.9 M factor entries against scipy's default (COLAMD, partial
#: pivoting); docs/ifm.md, fifth round.
SPLU_OPTIONS = {
    "permc_spec": "MMD_AT_PLUS_A",
    "diag_pivot_thresh": 0.0,
    "options": {"SymmetricMode": True},
}


def factorize(matrix: sp.spmatrix, dtype=np.float64):
    """scipy's sparse LU of the symmetric positive definite ``matrix`` (:data:`SPLU_OPTIONS`)
    in ``dtype``."""
    return spla.splu(sp.csc_matrix(matrix, dtype=dtype), **SPLU_OPTIONS)


class CoarseCorrection:
    """``r -> T (T^T A T)^{-1} T^T r`` for ifm's CG operator
    ``A = op + nl + diag(shift)`` restricted to the ``unknown`` pixels.

    Parameters
    ----------
    op : Stencil
        The local operator already restricted to the unknown pixels (CPU).
    nl : ``_ifm_nonlocal._NonLocal``
        Colour-mixture and intra-U operator on the flat grid.
    unknown : (H, W) bool array
    shift : (H, W) tensor
        Diagonal added to ``op + nl`` (0 outside the unknown pixels).

    Raises ``RuntimeError`` if the coarse matrix cannot be factorised (``A`` singular).
    """

    #: Entries per coarse row the Galerkin kernel's output holds at first (it doubles when
    #: full: GT04's global pass has ~56 per row, the tests' tiny scenes ~13).
    ROW_CAPACITY = 16

    def __init__(self, op, nl, unknown: np.ndarray, shift: torch.Tensor):
        self.shape = unknown.shape
        self.flat = flat = np.flatnonzero(unknown.reshape(-1))
        n = flat.size
        gid = np.full(unknown.size, -1, dtype=np.int64)
        gid[flat] = np.arange(n)
        # ifm_system: both lists' rows are the unknown pixels in order.
        for rows in (nl.cm_rows, nl.uu_rows):
            if not np.array_equal(rows.cpu().numpy(), flat):
                raise RuntimeError("non-local rows are not the unknown pixels in order")
        cm_c = gid[nl.cm_index.cpu().numpy()]
        # Aggregates on the symmetrised colour-mixture graph among unknown pixels.
        self.agg = np.empty(n, dtype=np.int64)
        self.nc = nc = int(cm_aggregate_kernel(cm_c, self.agg))

        # T^T A T in one pass over the fine lists: the local operator (read from its
        # stencil), the colour mixture sigma_cm (M T)^T (M T) (M = I - W on the
        # colour-mixture rows, unknown columns; no M^T M), the intra-U Laplacian (degrees,
        # edges to known pixels included, on the diagonal; weights of edges between
        # unknown pixels off it) and the shift.
        def arr(t, dtype):
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype)

        coef = op.coef.detach().cpu().numpy()
        if not coef.flags.c_contiguous or coef.dtype not in (np.float32, np.float64):
            coef = np.ascontiguousarray(coef, np.float64)
        dys, dxs = op._offset_arrays()
        shift_np = shift.detach().cpu().numpy().reshape(-1)
        uu_index = arr(nl.uu_index, np.int64)
        ptr, idx, val = galerkin_kernel(
            self.agg, nc, coef, dys, dxs, gid, flat, cm_c, arr(nl.cm_w, np.float64),
            float(nl.sigma_cm), uu_index, arr(nl.uu_w, np.float64).reshape(uu_index.shape),
            np.ascontiguousarray(shift_np), self.ROW_CAPACITY * nc + 16,
        )  # fmt: skip
        self.matrix = ac = sp.csr_matrix((val, idx, ptr), shape=(nc, nc))  # T^T A T
        # In CG's precision (the shift's dtype): with float32 CG vectors a float32 factor
        # (the float64 sums rounded once) has half the memory and traffic and factorises
        # 1.3x faster; the correction is a preconditioner, its rounding changes no answer.
        self.dtype = np.float32 if shift.dtype == torch.float32 else np.float64
        self.lu = factorize(ac, self.dtype)
        probe = self.lu.solve(np.ones(nc, self.dtype))
        if not np.all(np.isfinite(probe)):
            raise RuntimeError("coarse matrix is singular")

    def _solve(self, r: torch.Tensor) -> np.ndarray:
        rc = np.zeros(self.nc, np.float64)
        restrict_kernel(np.ascontiguousarray(r.reshape(-1).numpy()), self.flat, self.agg, rc)
        return self.lu.solve(rc.astype(self.dtype, copy=False))

    def add_to(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x += T (T^T A T)^{-1} T^T r`` in place at the unknown pixels (``x``:
        C-contiguous, CPU, of ``r``'s shape; the correction rounded to ``x``'s dtype, then
        added): CG's two-level preconditioner adds it to the V-cycle's output."""
        xa = x.numpy().reshape(-1)
        zc = self._solve(r).astype(xa.dtype, copy=False)  # rounded as the grid's copy was
        prolong_add_kernel(zc, self.flat, self.agg, xa)
        return x


@numba.njit(cache=True, nogil=True, fastmath=False)
def restrict_kernel(r, flat, agg, out):
    """``out += T^T r`` (sums in float64): ``r`` on the grid, ``flat`` the unknown pixels."""
    for i in range(flat.shape[0]):
        out[agg[i]] += r[flat[i]]


@numba.njit(cache=True, nogil=True, fastmath=False)
def prolong_add_kernel(zc, flat, agg, out):
    """``out += T zc`` at the unknown pixels (``zc`` of ``out``'s dtype)."""
    for i in range(flat.shape[0]):
        out[flat[i]] += zc[agg[i]]
