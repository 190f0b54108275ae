"""Fused numba kernels of the closed-form solver on the CPU (private; imported lazily).

``import numba`` costs ~0.6 s, so this module is imported only by the first call that
needs it (:func:`._stencil.numba_kernels`), never on ``import napari_hrmatt``'s path.
Every kernel is serial (dask parallelises over blocks), releases the GIL, and is cached
on disk, compiled for C-contiguous float32 or float64 arrays and int64 indices.

- :func:`stencil_apply`, :func:`stencil_residual`, :func:`stencil_jacobi`: the
  :class:`._stencil.Stencil` product ``A x`` and the two things the V-cycle does with it,
  ``b - A x`` and the l1-Jacobi step ``x + l1 (b - A x)``, in one pass over the grid
  (row by row: the output row stays in the L1 cache while the coefficient images stream
  through once), instead of one torch operation per offset.
- :func:`cf_stencil`: the closed-form matting Laplacian's coefficient images, window by
  window (the formula of ``closed_form._cf_stencil_part``), accumulated in float64.
- :func:`stencil_csr`: the rows and columns of a stencil at the unknown pixels as CSR
  arrays (``_aggregation.stencil_to_csr``).
- :func:`stencil_restrict`, :func:`stencil_abs_sum`: ``_stencil.restrict_to_unknown`` and
  the l1 row norms of the smoothers, one pass each.
- :func:`tentative`: the tentative prolongator of the ``sa`` set-up
  (``_aggregation._tentative``).
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True, fastmath=False)


@_jit
def _row_product(coef, dys, dxs, x, i, acc):
    """``acc[:] = (A x)[i, :]``; ``coef[k, i, j]`` multiplies ``x[i + dys[k], j + dxs[k]]``."""
    n_off, h, w = coef.shape
    for j in range(w):
        acc[j] = 0.0
    for k in range(n_off):
        ii = i + dys[k]
        if ii < 0 or ii >= h:
            continue
        dx = dxs[k]
        j0 = max(0, -dx)
        j1 = min(w, w - dx)
        # slices starting at 0: the indices are provably non-negative, no wrap-around
        # checks, so the loop vectorises
        ck = coef[k, i, j0:j1]
        xr = x[ii, j0 + dx : j1 + dx]
        ac = acc[j0:j1]
        for j in range(j1 - j0):
            ac[j] += ck[j] * xr[j]


@_jit
def stencil_apply(coef, dys, dxs, x, out):
    """``out = A x``."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product(coef, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = acc[j]


@_jit
def stencil_residual(coef, dys, dxs, x, b, out):
    """``out = b - A x``."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product(coef, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = b[i, j] - acc[j]


@_jit
def stencil_jacobi(coef, dys, dxs, x, b, l1, out):
    """``out = x + l1 (b - A x)`` (``out`` must not be ``x``: rows above are still read)."""
    h, w = x.shape
    acc = np.empty(w, dtype=out.dtype)
    for i in range(h):
        _row_product(coef, dys, dxs, x, i, acc)
        for j in range(w):
            out[i, j] = x[i, j] + l1[i, j] * (b[i, j] - acc[j])


@_jit
def _inverse_at(cov, j, n_ch, inv, low):
    """``inv[:, :, j] = cov[:, :, j]^-1`` for symmetric positive definite matrices
    (Cholesky ``L L^T``, then ``L^-T L^-1``; ``low`` (n_ch, n_ch) is scratch)."""
    for i in range(n_ch):
        for k in range(i + 1):
            s = cov[i, k, j]
            for m in range(k):
                s -= low[i, m] * low[k, m]
            if i == k:
                low[i, i] = np.sqrt(s) if s > 0 else 1e-300
            else:
                low[i, k] = s / low[k, k]
    for k in range(n_ch):  # L^-1 in place of L, column by column (lower triangular)
        low[k, k] = 1.0 / low[k, k]
        for i in range(k + 1, n_ch):
            s = 0.0
            for m in range(k, i):
                s -= low[i, m] * low[m, k]
            low[i, k] = s / low[i, i]
    for i in range(n_ch):  # (i, k) = sum_m Linv[m, i] Linv[m, k], m >= max(i, k)
        for k in range(i, n_ch):
            s = 0.0
            for m in range(k, n_ch):
                s += low[m, i] * low[m, k]
            inv[i, k, j] = s
            inv[k, i, j] = s


@_jit
def _centred_row(image, cy, cx0, n, ays, axs, mu, e):
    """Window means ``mu[c, j]`` and centred colours ``e[a, c, j] = I_{k+a} - mu_k`` of the
    ``n`` windows centred at ``(cy, cx0 + j)``."""
    n_ch = image.shape[0]
    n_win = ays.size
    for c in range(n_ch):
        m = mu[c, :n]
        for j in range(n):
            m[j] = 0.0
        for a in range(n_win):
            src = image[c, cy + ays[a], cx0 + axs[a] : cx0 + axs[a] + n]
            for j in range(n):
                m[j] += src[j]
        for j in range(n):
            m[j] /= n_win
        for a in range(n_win):
            src = image[c, cy + ays[a], cx0 + axs[a] : cx0 + axs[a] + n]
            ea = e[a, c, :n]
            for j in range(n):
                ea[j] = src[j] - m[j]


@_jit
def _covariance_row(e, n, eps, cov):
    """Regularised window covariances ``cov[c1, c2, j]``."""
    n_win, n_ch = e.shape[0], e.shape[1]
    for c1 in range(n_ch):
        for c2 in range(c1, n_ch):
            cv = cov[c1, c2, :n]
            for j in range(n):
                cv[j] = 0.0
            for a in range(n_win):
                e1 = e[a, c1, :n]
                e2 = e[a, c2, :n]
                for j in range(n):
                    cv[j] += e1[j] * e2[j]
            reg = eps / n_win if c1 == c2 else 0.0
            mirror = cov[c2, c1, :n]
            for j in range(n):
                cv[j] = cv[j] / n_win + reg
                mirror[j] = cv[j]


@_jit
def _projected_row(inv, e, n, proj):
    """``proj[b, :, j] = Delta_j e[b, :, j]``."""
    n_win, n_ch = e.shape[0], e.shape[1]
    for b in range(n_win):
        for c1 in range(n_ch):
            pb = proj[b, c1, :n]
            for j in range(n):
                pb[j] = 0.0
            for c2 in range(n_ch):
                d = inv[c1, c2, :n]
                eb = e[b, c2, :n]
                for j in range(n):
                    pb[j] += d[j] * eb[j]


@_jit
def _pairs_row(e, proj, n, cy, cx0, y0, y1, r, ays, axs, term, buf):
    """Add every pair term ``delta_ab - (1 + e_a^T Delta e_b) / |w|`` of the row's windows
    to its two places in the strip buffer (rows ``y0 <= y < y1``)."""
    n_win, n_ch = e.shape[0], e.shape[1]
    span = 4 * r + 1
    for a in range(n_win):
        ya, xa = cy + ays[a], cx0 + axs[a]
        for b in range(a, n_win):
            yb, xb = cy + ays[b], cx0 + axs[b]
            t = term[:n]
            for j in range(n):
                t[j] = 0.0
            for c in range(n_ch):  # e_a^T Delta e_b
                ea = e[a, c, :n]
                pb = proj[b, c, :n]
                for j in range(n):
                    t[j] += ea[j] * pb[j]
            diag = 1.0 if a == b else 0.0
            for j in range(n):
                t[j] = diag - (1.0 + t[j]) / n_win
            # row k + a, offset b - a; and by symmetry row k + b, offset a - b
            if ya >= y0 and ya < y1:
                k = (ays[b] - ays[a] + 2 * r) * span + (axs[b] - axs[a] + 2 * r)
                dst = buf[k, ya - y0, xa : xa + n]
                for j in range(n):
                    dst[j] += t[j]
            if b != a and yb >= y0 and yb < y1:
                k = (ays[a] - ays[b] + 2 * r) * span + (axs[a] - axs[b] + 2 * r)
                dst = buf[k, yb - y0, xb : xb + n]
                for j in range(n):
                    dst[j] += t[j]


@_jit
def cf_stencil(image, radius, eps, need, strip, out):
    """Closed-form matting Laplacian coefficients into ``out`` ``((4r+1)^2, H, W)``.

    ``image`` (C, H, W) float64; windows are the ``(2r+1)^2`` windows lying entirely
    inside the array. Coefficients are computed (exactly, summed over every window) at
    the pixels where ``need`` is true and left untouched elsewhere. Accumulated in float64,
    ``strip`` rows at a time (windows whose pixels straddle two strips are visited by both),
    then stored in ``out``'s dtype. Each row of window centres is done at once, between
    the first and last column any needed pixel of it asks for (inner loops over columns).
    """
    n_ch, h, w = image.shape
    r = radius
    side = 2 * r + 1
    n_win = side * side
    span = 4 * r + 1
    n_off = span * span
    ays = np.empty(n_win, dtype=np.int64)
    axs = np.empty(n_win, dtype=np.int64)
    for a in range(n_win):
        ays[a] = a // side - r
        axs[a] = a % side - r
    first = np.empty(h, dtype=np.int64)  # first / last needed column of each row
    last = np.empty(h, dtype=np.int64)
    for y in range(h):
        first[y] = w
        last[y] = -1
        for x in range(w):
            if need[y, x]:
                if first[y] == w:
                    first[y] = x
                last[y] = x
    e = np.empty((n_win, n_ch, w))
    proj = np.empty((n_win, n_ch, w))
    mu = np.empty((n_ch, w))
    cov = np.empty((n_ch, n_ch, w))
    inv = np.empty((n_ch, n_ch, w))
    low = np.empty((n_ch, n_ch))
    term = np.empty(w)
    buf = np.zeros((n_off, strip, w))
    for y0 in range(0, h, strip):
        y1 = min(y0 + strip, h)
        todo = False
        for y in range(y0, y1):
            todo = todo or last[y] >= 0
        if not todo:
            continue
        for k in range(n_off):
            for y in range(strip):
                for x in range(w):
                    buf[k, y, x] = 0.0
        for cy in range(max(y0 - r, r), min(y1 + r, h - r)):
            lo, hi = w, -1  # needed columns in this window row's pixel rows inside the strip
            for py in range(max(cy - r, y0), min(cy + r + 1, y1)):
                if last[py] >= 0:
                    lo = min(lo, first[py])
                    hi = max(hi, last[py])
            cx0 = max(lo - r, r)
            n = min(hi + r + 1, w - r) - cx0
            if n <= 0:
                continue
            _centred_row(image, cy, cx0, n, ays, axs, mu, e)
            _covariance_row(e, n, eps, cov)
            for j in range(n):
                _inverse_at(cov, j, n_ch, inv, low)
            _projected_row(inv, e, n, proj)
            _pairs_row(e, proj, n, cy, cx0, y0, y1, r, ays, axs, term, buf)
        for y in range(y0, y1):
            for x in range(first[y], last[y] + 1):
                if need[y, x]:
                    for k in range(n_off):
                        out[k, y, x] = buf[k, y - y0, x]


@_jit
def stencil_csr(coef, dys, dxs, unknown):
    """The rows and columns of the stencil at the ``unknown`` pixels, numbered in
    row-major order, as CSR ``(indptr, indices, data)`` (float64; zero entries left
    out; columns sorted, as the offsets are in row-major order)."""
    n_off, h, w = coef.shape
    ids = np.empty((h, w), dtype=np.int64)
    n = 0
    for i in range(h):
        for j in range(w):
            ids[i, j] = -1
            if unknown[i, j]:
                ids[i, j] = n
                n += 1
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(n * n_off, dtype=np.int32)
    data = np.empty(n * n_off, dtype=np.float64)
    nnz = 0
    row = 0
    for i in range(h):
        for j in range(w):
            if not unknown[i, j]:
                continue
            for k in range(n_off):
                ii, jj = i + dys[k], j + dxs[k]
                if ii < 0 or ii >= h or jj < 0 or jj >= w:
                    continue
                col = ids[ii, jj]
                v = coef[k, i, j]
                if col >= 0 and v != 0:
                    indices[nnz] = col
                    data[nnz] = v
                    nnz += 1
            row += 1
            indptr[row] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy()


@_jit
def stencil_restrict(coef, dys, dxs, unknown):
    """In place: zero every coefficient whose row or column pixel is not ``unknown``."""
    n_off, h, w = coef.shape
    for k in range(n_off):
        dy, dx = dys[k], dxs[k]
        for i in range(h):
            ck = coef[k, i]
            ii = i + dy
            if ii < 0 or ii >= h:
                for j in range(w):
                    ck[j] = 0.0
                continue
            for j in range(w):
                jj = j + dx
                if not unknown[i, j] or jj < 0 or jj >= w or not unknown[ii, jj]:
                    ck[j] = 0.0


@_jit
def stencil_abs_sum(coef, out):
    """``out[i, j] = sum_k |coef[k, i, j]|`` (the l1 norm of each row)."""
    n_off, h, w = coef.shape
    for i in range(h):
        oi = out[i]
        for j in range(w):
            oi[j] = 0.0
        for k in range(n_off):
            ck = coef[k, i]
            for j in range(w):
                oi[j] += abs(ck[j])


@_jit
def tentative(agg, n_agg, cand, drop):
    """``_aggregation._tentative`` in one pass: per aggregate, the candidate columns
    orthonormalised by modified Gram-Schmidt (twice), a column dropped where its remainder
    is below ``drop`` times its norm. Returns ``(indptr, indices, data)`` of the tentative
    prolongator (one row per node, coarse unknowns numbered aggregate by aggregate), the
    coarse candidates ``(nc, m)`` and the owner aggregate of each coarse unknown."""
    n, m = cand.shape
    counts = np.zeros(n_agg + 1, dtype=np.int64)
    for i in range(n):
        counts[agg[i] + 1] += 1
    for g in range(n_agg):
        counts[g + 1] += counts[g]
    members = np.empty(n, dtype=np.int64)  # node ids, aggregate by aggregate, stable
    fill = counts[:n_agg].copy()
    for i in range(n):
        g = agg[i]
        members[fill[g]] = i
        fill[g] += 1
    q = np.zeros((n, m))  # q[i, j]: node i's entry of its aggregate's j-th column
    r = np.zeros((n_agg, m, m))
    keep = np.zeros((n_agg, m), dtype=np.bool_)
    v = np.empty(n)
    for g in range(n_agg):
        lo, hi = counts[g], counts[g + 1]
        for j in range(m):
            norm0 = 0.0
            for t in range(lo, hi):
                v[t] = cand[members[t], j]
                norm0 += v[t] * v[t]
            norm0 = np.sqrt(norm0)
            for _ in range(2):
                for i in range(j):
                    c = 0.0
                    for t in range(lo, hi):
                        c += q[members[t], i] * v[t]
                    for t in range(lo, hi):
                        v[t] -= c * q[members[t], i]
                    r[g, i, j] += c
            nv = 0.0
            for t in range(lo, hi):
                nv += v[t] * v[t]
            nv = np.sqrt(nv)
            ok = nv > drop * norm0 and nv > 0
            for t in range(lo, hi):
                q[members[t], j] = v[t] / nv if ok else 0.0
            r[g, j, j] = nv if ok else 0.0
            keep[g, j] = ok
    coarse = np.empty((n_agg, m), dtype=np.int64)
    nc = 0
    for g in range(n_agg):
        for j in range(m):
            coarse[g, j] = nc if keep[g, j] else -1
            nc += 1 if keep[g, j] else 0
    cand_c = np.empty((nc, m))
    owner = np.empty(nc, dtype=np.int64)
    for g in range(n_agg):
        for j in range(m):
            if keep[g, j]:
                owner[coarse[g, j]] = g
                for k in range(m):
                    cand_c[coarse[g, j], k] = r[g, j, k]
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(n * m, dtype=np.int32)
    data = np.empty(n * m)
    nnz = 0
    for i in range(n):
        g = agg[i]
        for j in range(m):
            if keep[g, j]:
                indices[nnz] = coarse[g, j]
                data[nnz] = q[i, j]
                nnz += 1
        indptr[i + 1] = nnz
    return indptr, indices[:nnz].copy(), data[:nnz].copy(), cand_c, owner, nc
