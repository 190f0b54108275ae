"""Numba kernels of the information-flow model on CPU (windowed kNN, the colour-mixture and
intra-U searches in one pass, LLE weights, the intra-U edge weights, the non-local
operator's product and diagonal; the trimming's patch statistics and Bhattacharyya
distances are in :mod:`._trim_kernels`).

Private to :mod:`._knn`, :mod:`._trim_kernels`, :mod:`._ifm_knn`, :mod:`._ifm_nonlocal`
and :mod:`.ifm`, imported lazily on first use
(``import numba`` costs about 0.6 s). Each kernel is the serial loop form of a torch
formula kept for CUDA: the same numbers up to rounding (and the same neighbours up to
ties in distance). Fixed dtypes: float32 features, float64 colours and statistics,
int64 indices, C-contiguous arrays, so one compiled signature serves every call (the
non-local product has two: float32 and float64 vectors, with int32 indices; int64 ones
only past 2^31 pixels).
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"cache": True, "nogil": True, "fastmath": False}

# cm_uu_knn_kernel's guessed caps (docs/ifm.md, "Sixth round: the colour-mixture search").
GUESS_CM, GUESS_UU = 2.0, 3.0


@numba.njit(**_JIT)
def candidate_runs_kernel(label, first, last):
    """Per pixel ``(y, x)``: ``first[y, x]`` the first column ``>= x`` of row ``y`` holding
    a candidate (``label > 0``; ``W`` if none), ``last[y, x]`` the last one ``<= x`` (-1)."""
    h, w = label.shape
    for y in range(h):
        nxt = w
        for x in range(w - 1, -1, -1):
            if label[y, x] > 0:
                nxt = x
            first[y, x] = nxt
        prv = -1
        for x in range(w):
            if label[y, x] > 0:
                prv = x
            last[y, x] = prv


@numba.njit(**_JIT)
def window_knn_kernel(feat, label, run0, run1, qpos, ngroups, k, radius, index, dist2):
    """k nearest candidates per query within the window (see ``_knn.window_knn``).

    ``feat`` (D, H, W) float32; ``label`` (H, W) int8, 1 + group of a candidate, 0 for none;
    ``run0``, ``run1`` (H, W) int32, the ``first`` and ``last`` arrays of
    :func:`candidate_runs_kernel` (a window row is scanned only between its first and last
    candidate, and skipped without any: sparse candidates, as the trimming's known pixels,
    cost little); ``qpos`` (N,) flat query positions in row-major order; ``index`` (G, N, k)
    int64 filled with -1 and ``dist2`` (G, N, k) float32 filled with inf, written here. Per
    window row, the squared distances to all its pixels (candidates' span) are computed
    first (in float64 from the float32 features: exact differences, a loop the compiler
    vectorises), then a vectorised count of the pixels within their own group's current
    k-th distance (``lim[label]``; a non-candidate's limit is -1: never), and only if some
    are the row is scanned up to the last of them: a candidate enters its group's sorted
    buffer if it precedes the current k-th in the order (distance, flat index): equal
    distances go to the earlier (row-major) pixel, as a stable sort would, whatever the
    scan order. Each group has its own limit, so a group that has fewer than ``k``
    candidates in the window (its limit stays inf; common in the trimming, where an unknown
    pixel often sees one side only) does not make every pixel of the other group's rows be
    scanned. Rows are visited centre-out (the query's row, then one above, one below, ...):
    near rows fill the buffers with good candidates early, so fewer later candidates need
    inserting.
    """
    d, h, w = feat.shape
    best = np.empty((ngroups, k), np.float64)
    arg = np.empty((ngroups, k), np.int64)
    lim = np.empty(max(ngroups + 1, 3), np.float64)  # per label: its group's k-th distance
    lim0 = np.empty_like(lim)
    fq = np.empty(d, np.float64)
    row = np.empty(2 * radius + 1, np.float64)
    for n in range(qpos.shape[0]):
        p = qpos[n]
        py = p // w
        px = p - py * w
        for t in range(d):
            fq[t] = feat[t, py, px]
        for g in range(lim.shape[0]):
            lim[g] = -1.0
        for g in range(ngroups):
            lim[g + 1] = np.inf
            for j in range(k):
                best[g, j] = np.inf
                arg[g, j] = -1
        y0, y1 = max(py - radius, 0), min(py + radius + 1, h)
        x0, x1 = max(px - radius, 0), min(px + radius + 1, w)
        for step in range(2 * radius + 1):
            cy = py + ((step + 1) // 2) * (1 if step % 2 == 0 else -1)
            if cy < y0 or cy >= y1:
                continue
            xa, xb = run0[cy, x0], run1[cy, x1 - 1] + 1  # candidates in [xa, xb)
            if xa >= xb:
                continue
            m = xb - xa
            if d == 3:  # one pass (the same sums in the same order)
                f0, f1, f2 = fq[0], fq[1], fq[2]
                for i in range(m):
                    d0 = np.float64(feat[0, cy, xa + i]) - f0
                    d1 = np.float64(feat[1, cy, xa + i]) - f1
                    d2 = np.float64(feat[2, cy, xa + i]) - f2
                    row[i] = (d0 * d0 + d1 * d1) + d2 * d2
            else:
                ft = fq[0]
                for i in range(m):
                    diff = np.float64(feat[0, cy, xa + i]) - ft
                    row[i] = diff * diff
                for t in range(1, d):
                    ft = fq[t]
                    for i in range(m):
                        diff = np.float64(feat[t, cy, xa + i]) - ft
                        row[i] += diff * diff
            lab_row = label[cy, xa:xb]
            cnt = 0  # a vectorised count first: most rows have no pixel within its limit
            if ngroups <= 2:  # selects instead of a gather
                lim1, lim2 = lim[1], lim[2]
                for i in range(m):
                    lb = lab_row[i]
                    cnt += row[i] <= (lim1 if lb == 1 else (lim2 if lb == 2 else -1.0))
            else:
                for i in range(m):
                    cnt += row[i] <= lim[lab_row[i]]
            if cnt == 0:
                continue
            for g in range(lim.shape[0]):
                lim0[g] = lim[g]  # the limits counted with
            for i in range(m):
                dd = row[i]
                lb = lab_row[i]
                if dd > lim0[lb]:  # not counted: not a candidate, or too far for its group
                    continue
                cnt -= 1
                cx = xa + i
                c = cy * w + cx
                g = lb - 1
                last = arg[g, k - 1]
                skip = dd > lim[lb] or (dd == lim[lb] and last >= 0 and c > last)
                if not (skip or (cy == py and cx == px)):
                    # Insert into the sorted buffer, ordered by (distance, flat index).
                    j = k - 1
                    while j > 0 and (
                        best[g, j - 1] > dd or (best[g, j - 1] == dd and arg[g, j - 1] > c)
                    ):
                        best[g, j] = best[g, j - 1]
                        arg[g, j] = arg[g, j - 1]
                        j -= 1
                    best[g, j] = dd
                    arg[g, j] = c
                    lim[lb] = best[g, k - 1]
                if cnt == 0:  # every pixel counted has been seen
                    break
        for g in range(ngroups):
            for j in range(k):
                if arg[g, j] >= 0:
                    index[g, n, j] = arg[g, j]
                    dist2[g, n, j] = best[g, j]


@numba.njit(**_JIT)
def _chol_logdet(s, c, low):
    """Cholesky factor of the (c, c) matrix ``s`` into ``low``; returns log det s."""
    logdet = 0.0
    for a in range(c):
        for b in range(a + 1):
            v = s[a, b]
            for t in range(b):
                v -= low[a, t] * low[b, t]
            if a == b:
                low[a, a] = np.sqrt(v)
                logdet += 2.0 * np.log(low[a, a])
            else:
                low[a, b] = v / low[b, b]
    return logdet


@numba.njit(**_JIT)
def lle_kernel(colour, index, points, reg, out):
    """LLE weights per query (see ``_knn.lle_weights``): ``(E E^T + reg I)^-1 1`` over the
    ``m`` valid neighbours (rows of ``E``: their colours minus the query's), normalised
    to sum 1 (0 if the sum vanishes). Solved through the Woodbury identity,
    ``(1 - E (reg I_C + E^T E)^-1 E^T 1) / reg``: a C x C Cholesky solve instead of an
    m x m one (the same numbers up to rounding: the subtraction loses at most a factor
    ``1 + |E|^2 / reg`` of float64's precision, about 1e-11 relative here).
    ``colour`` (C, H*W) float64; ``out`` (N, K) float64 zeros, written here."""
    n, kk = index.shape
    c = colour.shape[0]
    e = np.empty((kk, c), np.float64)
    g = np.empty((c, c), np.float64)
    low = np.empty((c, c), np.float64)
    z = np.empty(c, np.float64)
    wt = np.empty(kk, np.float64)
    pos = np.empty(kk, np.int64)
    for r in range(n):
        p = points[r]
        m = 0
        for j in range(kk):
            q = index[r, j]
            if q >= 0:
                for t in range(c):
                    e[m, t] = colour[t, q] - colour[t, p]
                pos[m] = j
                m += 1
        if m == 0:
            continue
        for a in range(c):  # g = reg I + E^T E, z = E^T 1
            s = 0.0
            for i in range(m):
                s += e[i, a]
            z[a] = s
            for b in range(a + 1):
                s = 0.0
                for i in range(m):
                    s += e[i, a] * e[i, b]
                g[a, b] = s
            g[a, a] += reg
        _chol_logdet(g, c, low)
        for a in range(c):  # L y = z
            s = z[a]
            for t in range(a):
                s -= low[a, t] * z[t]
            z[a] = s / low[a, a]
        for a in range(c - 1, -1, -1):  # L^T v = y
            s = z[a]
            for t in range(a + 1, c):
                s -= low[t, a] * z[t]
            z[a] = s / low[a, a]
        total = 0.0
        for i in range(m):
            s = 1.0
            for t in range(c):
                s -= e[i, t] * z[t]
            wt[i] = s / reg
            total += wt[i]
        if abs(total) > 1e-12:
            for i in range(m):
                out[r, pos[i]] = wt[i] / total


@numba.njit(**_JIT)
def _nonlocal_acc(x, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, same):
    """``sigma_cm (I - W)^T (I - W) x + L_uu x`` in float64 (see ``_ifm_nonlocal._NonLocal``): per
    colour-mixture row ``r = x_p - sum_q w_q x_q`` is gathered, then scattered back to
    ``p`` and (times ``-w_q``) to its neighbours; per intra-U edge ``(p, q)`` (row ``p`` of
    ``uu_rows``, its column ``q`` of ``uu_index``) ``d = w (x_p - x_q)`` goes to ``p`` and
    ``-d`` to ``q``. With ``same`` (both lists have the same rows, as ifm_system's: checked
    once by ``_ifm_nonlocal._NonLocal``, not per product) one loop does both (``p``'s own sums stay
    in a register)."""
    acc = np.zeros(x.shape[0], np.float64)
    k, ku = cm_index.shape[1], uu_index.shape[1]
    for r in range(cm_rows.shape[0]):
        p = cm_rows[r]
        xp = np.float64(x[p])
        s = xp
        for j in range(k):
            s -= cm_w[r, j] * np.float64(x[cm_index[r, j]])
        s *= sigma_cm
        for j in range(k):
            acc[cm_index[r, j]] -= cm_w[r, j] * s
        if same:
            for j in range(ku):
                q = uu_index[r, j]
                dd = uu_w[r, j] * (xp - np.float64(x[q]))
                s += dd
                acc[q] -= dd
        acc[p] += s
    if not same:
        for r in range(uu_rows.shape[0]):
            p = uu_rows[r]
            xp = np.float64(x[p])
            for j in range(ku):
                q = uu_index[r, j]
                dd = uu_w[r, j] * (xp - np.float64(x[q]))
                acc[p] += dd
                acc[q] -= dd
    return acc


@numba.njit(**_JIT)
def nonlocal_apply_kernel(
    x, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, same, out
):
    """``out = sigma_cm (I - W)^T (I - W) x + L_uu x`` (see ``_ifm_nonlocal._NonLocal`` and
    :func:`_nonlocal_acc`). Sums in float64, ``out`` of ``x``'s dtype; the weights are of
    the vectors' dtype (``_NonLocal.to``)."""
    acc = _nonlocal_acc(x, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, same)
    for i in range(x.shape[0]):
        out[i] = acc[i]


@numba.njit(**_JIT)
def cg_apply_kernel(
    x, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, same, base, shift, mask, out
):
    """ifm's CG operator in one pass: ``out = (base + N x + shift x) mask`` with ``N x`` the
    product of :func:`nonlocal_apply_kernel` and ``base`` the local stencil's product (all
    flat, of ``x``'s dtype; sums in float64, one rounding at the end)."""
    acc = _nonlocal_acc(x, sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, same)
    for i in range(x.shape[0]):
        v = np.float64(base[i]) + acc[i] + np.float64(shift[i]) * np.float64(x[i])
        out[i] = v * np.float64(mask[i])


@numba.njit(**_JIT)
def _push(best, arg, k, dd, c):
    """Insert candidate ``c`` at squared distance ``dd`` into the sorted buffer
    ``best``/``arg`` (order: distance, then flat index) if it precedes the k-th entry."""
    last = arg[k - 1]
    if dd > best[k - 1] or (dd == best[k - 1] and last >= 0 and c > last):
        return
    j = k - 1
    while j > 0 and (best[j - 1] > dd or (best[j - 1] == dd and arg[j - 1] > c)):
        best[j] = best[j - 1]
        arg[j] = arg[j - 1]
        j -= 1
    best[j] = dd
    arg[j] = c


@numba.njit(inline="always", **_JIT)
def _cm_uu_scan(col, pos, unknown, p, radius, fq, row, dx_c, dx_u, bc, ac, bu, au, cap_c, cap_u):
    """Query ``p``'s window for :func:`cm_uu_knn_kernel`, into the buffers ``bc``/``ac``
    and ``bu``/``au`` up to each search's ``cap`` (inf: no cap; < 0: the search is off)."""
    c, h, w = col.shape
    k_cm, k_uu = bc.shape[0], bu.shape[0]
    py = p // w
    px = p - py * w
    y0, y1 = max(py - radius, 0), min(py + radius + 1, h)
    x0 = max(px - radius, 0)
    m = min(px + radius + 1, w) - x0
    yc, yu = np.float64(pos[0, py]), np.float64(pos[2, py])
    for step in range(2 * radius + 1):
        cy = py + ((step + 1) // 2) * (1 if step % 2 == 0 else -1)
        if cy < y0 or cy >= y1:
            continue
        d = np.float64(pos[0, cy]) - yc
        dy_c = d * d
        d = np.float64(pos[2, cy]) - yu
        dy_u = d * d
        lim_c = min(bc[k_cm - 1], cap_c) if dy_c <= min(bc[k_cm - 1], cap_c) else -1.0
        lim_u = min(bu[k_uu - 1], cap_u) if dy_u <= min(bu[k_uu - 1], cap_u) else -1.0
        if lim_c < 0 and lim_u < 0:  # -1: the search is off for this row
            continue
        # Vectorised counts first: most rows have no pixel within a limit (not scanned).
        cnt_c, cnt_u = 0, 0
        if c == 3:  # the distances and counts in one pass (the same sums, same order)
            f0, f1, f2 = fq[0], fq[1], fq[2]
            for i in range(m):
                d0 = np.float64(col[0, cy, x0 + i]) - f0
                d1 = np.float64(col[1, cy, x0 + i]) - f1
                d2 = np.float64(col[2, cy, x0 + i]) - f2
                r = (d0 * d0 + d1 * d1) + d2 * d2
                row[i] = r
                cnt_c += (r + dy_c) + dx_c[i] <= lim_c
                cnt_u += (r + dy_u) + dx_u[i] <= lim_u
        else:
            for i in range(m):
                row[i] = 0.0
            for t in range(c):
                ft = fq[t]
                for i in range(m):
                    diff = np.float64(col[t, cy, x0 + i]) - ft
                    row[i] += diff * diff
            for i in range(m):
                cnt_c += (row[i] + dy_c) + dx_c[i] <= lim_c
                cnt_u += (row[i] + dy_u) + dx_u[i] <= lim_u
        if cnt_c > 0:  # scan until the cnt pixels counted are seen
            cnt = cnt_c
            for i in range(m):
                dd = (row[i] + dy_c) + dx_c[i]
                if dd > lim_c:
                    continue
                cx = x0 + i
                if not (dd > bc[k_cm - 1] or (cy == py and cx == px)):
                    _push(bc, ac, k_cm, dd, cy * w + cx)
                cnt -= 1
                if cnt == 0:
                    break
        if cnt_u > 0:
            cnt = cnt_u
            for i in range(m):
                dd = (row[i] + dy_u) + dx_u[i]
                if dd > lim_u:
                    continue
                cx = x0 + i
                if unknown[cy, cx] and not (dd > bu[k_uu - 1] or (cy == py and cx == px)):
                    _push(bu, au, k_uu, dd, cy * w + cx)
                cnt -= 1
                if cnt == 0:
                    break


@numba.njit(inline="always", **_JIT)
def _clear(best, arg, on):
    for j in range(best.shape[0] if on else 0):
        best[j] = np.inf
        arg[j] = -1


@numba.njit(**_JIT)
def cm_uu_knn_kernel(
    col, pos, unknown, qpos, radius, guess_cm, guess_uu, cm_index, cm_dist2, uu_index, uu_dist2
):
    """The colour-mixture and intra-U searches of ifm in one pass over the window.

    Both search every query's window for the nearest pixels in ``[colour, y / s_g,
    x / s_g]``: the colour-mixture one (g = 0) among all pixels, the intra-U one (g = 1)
    among ``unknown`` pixels. ``col`` (C, H, W) float32 colours; ``pos`` (4, max(H, W))
    float32: ``pos[2 g]`` the row and ``pos[2 g + 1]`` the column coordinate of search
    ``g`` (separable: a row's ``dy^2`` is one number, the columns' ``dx^2`` are computed
    once per query). Each colour distance is computed once for both buffers, as the very
    sums of :func:`window_knn_kernel` on the stacked features (float64, channels in
    order: colours, y, x): the same neighbours, ties included (distance, then flat
    index). A row is skipped for a search when its ``dy^2`` alone exceeds the search's
    limit. The limit is also capped from the start: ``guess_cm`` / ``guess_uu`` (inf: no
    cap) times the previous query's k-th distance, or its mean with the query above's
    where that pixel is a query, so the counts reject most pixels and few are inserted.
    Exact either way: a buffer that ends with k entries lost only candidates farther than
    the cap, hence than its k-th; one with fewer (the cap was too low) is searched again
    without a cap. ``unknown`` (H, W) bool; ``qpos`` (N,) int64 flat query positions,
    row-major; ``cm_index`` (N, k_cm) / ``uu_index`` (N, k_uu) int64 and ``cm_dist2`` /
    ``uu_dist2`` float32 of the same shapes (k >= 1), every entry written here (-1 and
    inf where missing).
    """
    c, h, w = col.shape
    k_cm, k_uu = cm_index.shape[1], uu_index.shape[1]
    best_c, arg_c = np.empty(k_cm, np.float64), np.empty(k_cm, np.int64)
    best_u, arg_u = np.empty(k_uu, np.float64), np.empty(k_uu, np.int64)
    fq = np.empty(c, np.float64)
    span = 2 * radius + 1
    row, dx_c, dx_u = np.empty(span), np.empty(span), np.empty(span)  # float64
    kth_c, kth_u = np.inf, np.inf  # the previous query's k-th distances
    a = 0  # the query above the current one, if any: qpos[a] == p - w
    for n in range(qpos.shape[0]):
        p = qpos[n]
        py = p // w
        px = p - py * w
        for t in range(c):
            fq[t] = col[t, py, px]
        _clear(best_c, arg_c, True)
        _clear(best_u, arg_u, True)
        x0, x1 = max(px - radius, 0), min(px + radius + 1, w)
        xc, xu = np.float64(pos[1, px]), np.float64(pos[3, px])
        for i in range(x1 - x0):
            d = np.float64(pos[1, x0 + i]) - xc
            dx_c[i] = d * d
            d = np.float64(pos[3, x0 + i]) - xu
            dx_u[i] = d * d
        g_c, g_u = kth_c, kth_u
        while qpos[a] < p - w:
            a += 1
        if qpos[a] == p - w:  # the mean with the query above's k-th distances
            g_c = 0.5 * (g_c + np.float64(cm_dist2[a, k_cm - 1]))
            g_u = 0.5 * (g_u + np.float64(uu_dist2[a, k_uu - 1]))
        cap_c = g_c * guess_cm if guess_cm < np.inf else np.inf
        cap_u = g_u * guess_uu if guess_uu < np.inf else np.inf
        _cm_uu_scan(
            col, pos, unknown, p, radius, fq, row, dx_c, dx_u, best_c, arg_c, best_u, arg_u,
            cap_c, cap_u,
        )  # fmt: skip
        redo_c = arg_c[k_cm - 1] < 0 and cap_c < np.inf  # fewer than k within the cap
        redo_u = arg_u[k_uu - 1] < 0 and cap_u < np.inf
        if redo_c or redo_u:
            _clear(best_c, arg_c, redo_c)
            _clear(best_u, arg_u, redo_u)
            _cm_uu_scan(
                col, pos, unknown, p, radius, fq, row, dx_c, dx_u, best_c, arg_c, best_u,
                arg_u, np.inf if redo_c else -1.0, np.inf if redo_u else -1.0,
            )  # fmt: skip
        kth_c, kth_u = best_c[k_cm - 1], best_u[k_uu - 1]
        for j in range(k_cm):
            cm_index[n, j] = arg_c[j]
            cm_dist2[n, j] = best_c[j]
        for j in range(k_uu):
            uu_index[n, j] = arg_u[j]
            uu_dist2[n, j] = best_u[j]


@numba.njit(**_JIT)
def uu_weights_kernel(fq, rows, index, sigma, out_index, out_w):
    """The intra-U edges of ``ifm.ifm_system`` in one pass: ``out_w[n, j] = sigma *
    max(1 - sum_t |fq[t, q] - fq[t, p]|, 0)`` for ``p = rows[n]``, ``q = index[n, j]``
    (sums in float64 over the channels in order, as the torch formula), and
    ``out_index`` = ``index`` with missing neighbours (-1) pointing at ``p`` with weight 0.
    ``fq`` (C, H W) float64; ``rows`` (N,) and ``index`` (N, K) int64."""
    c = fq.shape[0]
    for n in range(index.shape[0]):
        p = rows[n]
        for j in range(index.shape[1]):
            q = index[n, j]
            if q < 0:
                out_index[n, j] = p
                out_w[n, j] = 0.0
                continue
            s = 0.0
            for t in range(c):
                s += abs(fq[t, q] - fq[t, p])
            out_index[n, j] = q
            out_w[n, j] = max(1.0 - s, 0.0) * sigma


@numba.njit(**_JIT)
def nonlocal_diagonal_kernel(sigma_cm, cm_rows, cm_index, cm_w, uu_rows, uu_index, uu_w, out):
    """``out += diag(sigma_cm (I - W)^T (I - W) + L_uu)`` in float64, the terms added in
    the order of ``_ifm_nonlocal._NonLocal.diagonal``'s four ``index_add_`` calls (the same sums):
    ``sigma_cm`` per colour-mixture row, ``sigma_cm w^2`` per neighbour, then the intra-U
    weights at each edge's row and at its column."""
    k, ku = cm_index.shape[1], uu_index.shape[1]
    for r in range(cm_rows.shape[0]):
        out[cm_rows[r]] += sigma_cm
    for r in range(cm_rows.shape[0]):
        for j in range(k):
            w = np.float64(cm_w[r, j])
            out[cm_index[r, j]] += sigma_cm * (w * w)
    for r in range(uu_rows.shape[0]):
        for j in range(ku):
            out[uu_rows[r]] += np.float64(uu_w[r, j])
    for r in range(uu_rows.shape[0]):
        for j in range(ku):
            out[uu_index[r, j]] += np.float64(uu_w[r, j])


@numba.njit(**_JIT)
def tree_rows_kernel(dist, idx, queries, out, simple):
    """The k-d tree's answer rows that are already in (distance, index) order with the
    query first (strictly increasing distances, ``idx[r, 0] == queries[r]``: see
    ``_ifm_knn._nearest_others``): ``simple[r]`` True and ``out[r] = idx[r, 1:]``; the
    other rows: ``simple[r]`` False, ``out[r]`` untouched. One pass instead of numpy's
    ``diff`` / ``all`` / masked copies (the same rows and numbers)."""
    n, kq = idx.shape
    for r in range(n):
        ok = idx[r, 0] == queries[r]
        j = 0
        while ok and j < kq - 1:
            ok = dist[r, j + 1] > dist[r, j]
            j += 1
        simple[r] = ok
        if ok:
            for j in range(kq - 1):
                out[r, j] = idx[r, j + 1]
