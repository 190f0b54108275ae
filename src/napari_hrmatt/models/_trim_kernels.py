"""Numba kernels of the patch-based trimming on CPU (:mod:`._trim`): each pixel's 3x3 patch
statistics and the smallest Bhattacharyya distance to its candidates. The trimming's
windowed search is :func:`._ifm_kernels.window_knn_kernel` (shared with the KNN flow).

Private to :mod:`._trim`, imported lazily on first use (``import numba`` costs about
0.6 s); each kernel is the loop form of the torch formula of :mod:`._trim` (the same
numbers up to rounding).
"""

from __future__ import annotations

import numba
import numpy as np

from ._ifm_kernels import _JIT, _chol_logdet


@numba.njit(**_JIT)
def patch_stats_kernel(image, reg, mu, cov):
    """Mean and covariance of each pixel's 3x3 patch (cut at the border), as
    ``_trim.patch_statistics`` (the mean of ``x x^T`` minus ``mu mu^T``, plus ``reg I``),
    written in the layout the distance kernel reads: ``mu`` (H*W, C), ``cov`` (H*W, C, C)
    float64. ``image`` (C, H, W) float64. Per row, column sums of the three rows first."""
    c, h, w = image.shape
    s1 = np.empty((w, c), np.float64)
    s2 = np.empty((w, c, c), np.float64)
    m = np.empty(c, np.float64)
    for y in range(h):
        y0, y1 = max(y - 1, 0), min(y + 2, h)
        for x in range(w):
            for a in range(c):
                t = 0.0
                for yy in range(y0, y1):
                    t += image[a, yy, x]
                s1[x, a] = t
                for b in range(a + 1):
                    t = 0.0
                    for yy in range(y0, y1):
                        t += image[a, yy, x] * image[b, yy, x]
                    s2[x, a, b] = t
        for x in range(w):
            x0, x1 = max(x - 1, 0), min(x + 2, w)
            n = (y1 - y0) * (x1 - x0)
            p = y * w + x
            for a in range(c):
                t = 0.0
                for xx in range(x0, x1):
                    t += s1[xx, a]
                m[a] = t / n
                mu[p, a] = m[a]
            for a in range(c):
                for b in range(a + 1):
                    t = 0.0
                    for xx in range(x0, x1):
                        t += s2[xx, a, b]
                    v = t / n - m[a] * m[b]
                    cov[p, a, b] = v
                    cov[p, b, a] = v
                cov[p, a, a] += reg


@numba.njit(**_JIT)
def min_bhattacharyya_kernel(mu, cov, rows, index, logdet, out):
    """Smallest Bhattacharyya distance from each query's patch distribution to its valid
    candidates' (``inf`` without any); see ``_trim.bhattacharyya``. ``mu`` (H*W, C),
    ``cov`` (H*W, C, C) float64; ``index`` (N, k) int64 (-1 missing); ``out`` (N,).
    ``logdet`` (H*W,) float64, NaN where not yet known: each pixel's ``log det cov`` is
    computed once, when first needed, and kept there (a candidate serves many queries, a
    query both groups' calls: pass the same array)."""
    c = mu.shape[1]
    s = np.empty((c, c), np.float64)
    low = np.empty((c, c), np.float64)
    v = np.empty(c, np.float64)
    for r in range(rows.shape[0]):
        p = rows[r]
        best = np.inf
        for j in range(index.shape[1]):
            q = index[r, j]
            if q < 0:
                continue
            for e in (p, q):
                if np.isnan(logdet[e]):
                    logdet[e] = _chol_logdet(cov[e], c, low)
            for a in range(c):
                for b in range(c):
                    s[a, b] = 0.5 * (cov[p, a, b] + cov[q, a, b])
            logdet_s = _chol_logdet(s, c, low)
            for a in range(c):  # L v = mu_p - mu_q; maha = |v|^2
                t = mu[p, a] - mu[q, a]
                for b in range(a):
                    t -= low[a, b] * v[b]
                v[a] = t / low[a, a]
            maha = 0.0
            for a in range(c):
                maha += v[a] * v[a]
            dist = maha / 8 + (logdet_s - 0.5 * (logdet[p] + logdet[q])) / 2
            if dist < best:
                best = dist
        out[r] = best
