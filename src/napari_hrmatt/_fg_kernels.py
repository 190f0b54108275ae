"""Fused numba kernel for the red-black sweeps of :mod:`._foreground_solver` (CPU).

Imported lazily by :func:`._foreground_solver.sweep_level` on its first CPU call (numba
costs ~0.6 s to import). One call sweeps every active tile of one level: each tile is
gathered into a small work array (it stays in the core's caches), swept ``n_iter`` times
in red-black order and its interior written back. The arithmetic is that of the torch
path (``_sweep_tiles``), operation by operation, so the two agree to float rounding:

* edge weight ``eps + omega |alpha_i - alpha_j|`` (0 for an edge leaving the image; such
  a pixel gets ``eps`` on itself per border side instead), ``total`` their sum;
* ``r F_bar = sum (w r / total) x_j``, the compositing residual
  ``res = I - (alpha / r) r F_bar - ((1 - alpha) / r) r B_bar``,
  ``F = r F_bar + alpha (r / denom) res + (1 - r) F`` (likewise ``B``), clipped to [0, 1],
  with ``denom = total + alpha^2 + (1 - alpha)^2`` and ``r`` the over-relaxation;
* the tile's outer ring stays fixed; coordinates outside the level are clamped.

All arithmetic is float32, like the torch path's. One signature (float32 C-contiguous
arrays, int64 indices and integers, float64 scalars) serves every call.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["sweep_tiles"]


@numba.njit(cache=True, nogil=True, fastmath=False)
def sweep_tiles(xs, xw, from_coarser, out, img, A, ti, tj, ty, tx, halo, oy, ox, fy, fx,
                n_iter, eps, omega, relax):  # fmt: skip
    """Sweep the tiles ``(ti[k], tj[k])`` of one level and write them into ``out``.

    xs : (2C, n) float32, the initial state flattened with rows of ``xw`` entries: the
        level itself, or with ``from_coarser`` the next coarser level (a pixel starts as
        its parent). out : (nout, hp, wp) float32, the padded level; only the tiles'
        interiors are written. img : (C, h, w) float32, A : (h, w) float32: this level.
    ty, tx, halo : tile edges and halo (even); (oy, ox): level coordinates of pixel
        (0, 0) in the whole image, (fy, fx): the whole image's level size.
    """
    c2 = xs.shape[0]
    c = c2 // 2
    nout = out.shape[0]
    h, w = A.shape
    sy, sx = ty + 2 * halo, tx + 2 * halo
    f0 = np.float32(0.0)
    f1 = np.float32(1.0)
    eps32, omega32, r32 = np.float32(eps), np.float32(omega), np.float32(relax)
    keep = np.float32(1.0 - relax)
    x = np.empty((c2, sy, sx), np.float32)
    im = np.empty((c, sy, sx), np.float32)
    a = np.empty((sy, sx), np.float32)
    # Edge weights of a tile: wv[y, x] joins (y, x) to (y + 1, x), wh[y, x] to (y, x + 1);
    # 0 where the edge leaves the image. Self weights per tile row and column.
    wv = np.zeros((sy, sx), np.float32)
    wh = np.zeros((sy, sx), np.float32)
    cut_x = np.empty(sx, np.float32)  # 0 where the edge to the right is cut, else 1
    self_y = np.empty(sy, np.float32)
    self_x = np.empty(sx, np.float32)
    col = np.empty(sx, np.int64)  # clamped level column of each tile column
    for t in range(ti.shape[0]):
        y0 = ti[t] * ty - halo
        x0 = tj[t] * tx - halo
        inside = x0 >= 0 and x0 + sx <= w  # no column clamped (x0 is even)
        for xx in range(sx):
            col[xx] = min(max(x0 + xx, 0), w - 1)
            gx = ox + x0 + xx
            cut_x[xx] = f0 if gx == -1 or gx == fx - 1 else f1
            sw = f0
            if gx == 0:
                sw += eps32
            if gx == fx - 1:
                sw += eps32
            self_x[xx] = sw
        # Gather alpha, the image and the initial F, B (rows clamped, then columns).
        for yy in range(sy):
            ry = min(max(y0 + yy, 0), h - 1)
            gy = oy + y0 + yy
            sw = f0
            if gy == 0:
                sw += eps32
            if gy == fy - 1:
                sw += eps32
            self_y[yy] = sw
            if inside:
                for xx in range(sx):
                    a[yy, xx] = A[ry, x0 + xx]
                for ch in range(c):
                    for xx in range(sx):
                        im[ch, yy, xx] = img[ch, ry, x0 + xx]
            else:
                for xx in range(sx):
                    a[yy, xx] = A[ry, col[xx]]
                for ch in range(c):
                    for xx in range(sx):
                        im[ch, yy, xx] = img[ch, ry, col[xx]]
            if from_coarser:
                row = (ry >> 1) * xw
                if yy % 2 == 1 and ry >> 1 == (min(max(y0 + yy - 1, 0), h - 1)) >> 1:
                    for ch in range(c2):  # the same parents as the row above
                        for xx in range(sx):
                            x[ch, yy, xx] = x[ch, yy - 1, xx]
                elif inside:
                    row += x0 >> 1
                    for ch in range(c2):
                        for m in range(sx // 2):
                            v = xs[ch, row + m]
                            x[ch, yy, 2 * m] = v
                            x[ch, yy, 2 * m + 1] = v
                else:
                    for ch in range(c2):
                        for xx in range(sx):
                            x[ch, yy, xx] = xs[ch, row + (col[xx] >> 1)]
            else:
                row = ry * xw
                if inside:
                    row += x0
                    for ch in range(c2):
                        for xx in range(sx):
                            x[ch, yy, xx] = xs[ch, row + xx]
                else:
                    for ch in range(c2):
                        for xx in range(sx):
                            x[ch, yy, xx] = xs[ch, row + col[xx]]
        # Edge weights eps + omega |alpha_i - alpha_j|, once per edge.
        for yy in range(sy):
            gy = oy + y0 + yy
            if yy < sy - 1 and gy != -1 and gy != fy - 1:
                for xx in range(sx):
                    wv[yy, xx] = abs(a[yy, xx] - a[yy + 1, xx]) * omega32 + eps32
            else:
                for xx in range(sx):
                    wv[yy, xx] = f0
            for xx in range(sx - 1):
                wh[yy, xx] = (abs(a[yy, xx] - a[yy, xx + 1]) * omega32 + eps32) * cut_x[xx]
        for _ in range(n_iter):
            for colour in range(2):  # red ((y + x) even) first, then black
                for yy in range(1, sy - 1):
                    start = 1 if (yy + 1) % 2 == colour else 2
                    for xx in range(start, sx - 1, 2):
                        ai = a[yy, xx]
                        # up, down, left, right (the torch path's order), self
                        w0 = wv[yy - 1, xx]
                        w1 = wv[yy, xx]
                        w2 = wh[yy, xx - 1]
                        w3 = wh[yy, xx]
                        s = self_y[yy] + self_x[xx]
                        total = w0 + w1
                        total += w2
                        total += w3
                        total += s
                        a1 = f1 - ai
                        denom = total + ai * ai
                        denom += a1 * a1
                        scale = (f1 / total) * r32
                        gain = (f1 / denom) * r32
                        w0 *= scale
                        w1 *= scale
                        w2 *= scale
                        w3 *= scale
                        s *= scale
                        a0r = ai / r32
                        a1r = a1 / r32
                        g0 = ai * gain
                        g1 = a1 * gain
                        for ch in range(c):
                            xf = x[ch, yy, xx]
                            fm = w0 * x[ch, yy - 1, xx]
                            fm += w1 * x[ch, yy + 1, xx]
                            fm += w2 * x[ch, yy, xx - 1]
                            fm += w3 * x[ch, yy, xx + 1]
                            fm += s * xf
                            cb = ch + c
                            xb = x[cb, yy, xx]
                            bm = w0 * x[cb, yy - 1, xx]
                            bm += w1 * x[cb, yy + 1, xx]
                            bm += w2 * x[cb, yy, xx - 1]
                            bm += w3 * x[cb, yy, xx + 1]
                            bm += s * xb
                            res = im[ch, yy, xx] - a0r * fm
                            res -= a1r * bm
                            fm += g0 * res
                            bm += g1 * res
                            fm += keep * xf
                            bm += keep * xb
                            x[ch, yy, xx] = min(max(fm, f0), f1)
                            x[cb, yy, xx] = min(max(bm, f0), f1)
        # The tile's interior into the padded level.
        for ch in range(nout):
            for yy in range(ty):
                orow = ti[t] * ty + yy
                for xx in range(tx):
                    out[ch, orow, tj[t] * tx + xx] = x[ch, halo + yy, halo + xx]
