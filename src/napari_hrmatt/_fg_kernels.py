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


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def sweep_tiles(xs, xw, from_coarser, out, img, A, active, ty, tx, halo, oy, ox, fy, fx,
                n_iter, eps, omega, relax):  # fmt: skip
    """Sweep the active tiles of one level and write them into ``out``; the others get
    the initial values (with ``from_coarser`` the nearest-neighbour upsampling).

    xs : (2C, n) float32, the initial state flattened with rows of ``xw`` entries: the
        level itself, or with ``from_coarser`` the next coarser level (a pixel starts as
        its parent). out : (nout, hp, wp) float32, the padded level; only the tiles'
        interiors are written (rows and columns past the level only by active tiles).
        active : (nty, ntx) uint8, the tiles to sweep. img : (C, h, w) float32,
        A : (h, w) float32: this level.
    ty, tx, halo : tile edges and halo (even); (oy, ox): level coordinates of pixel
        (0, 0) in the whole image, (fy, fx): the whole image's level size.

    A tile is held as four sub-lattices by (row, column) parity, ``k = 2 p + q`` for
    tile pixel ``(2 i + p, 2 j + q)``, so that a half-sweep runs over contiguous rows of
    one colour (loops the compiler vectorises; ``error_model="numpy"`` keeps the
    divisions free of Python's zero checks, which would prevent that).
    """
    c2 = xs.shape[0]
    c = c2 // 2
    nout = out.shape[0]
    h, w = A.shape
    sy, sx = ty + 2 * halo, tx + 2 * halo
    ny, nx = sy // 2, sx // 2
    size = ny * nx
    m = nx + 1  # margin of each flat sub-lattice: every neighbour is a shifted index
    f0 = np.float32(0.0)
    f1 = np.float32(1.0)
    eps32, omega32, r32 = np.float32(eps), np.float32(omega), np.float32(relax)
    keep = np.float32(1.0 - relax)
    # Sub-lattice k = 2 p + q of a tile: pixels (2 i + p, 2 j + q) at m + i nx + j.
    x = np.zeros((4, c2, size + 2 * m), np.float32)
    im = np.empty((4, c, size + 2 * m), np.float32)
    a = np.zeros((4, size + 2 * m), np.float32)
    # Updated (1) or on the tile's fixed outer ring (0), per sub-lattice pixel.
    upd = np.ones((4, size + 2 * m), np.bool_)
    for k in range(4):
        p, q = k // 2, k % 2
        for i in range(ny):
            for j in range(nx):
                ring = (p == 0 and i == 0) or (p == 1 and i == ny - 1)
                ring = ring or (q == 0 and j == 0) or (q == 1 and j == nx - 1)
                upd[k, m + i * nx + j] = not ring
    col = np.empty(sx, np.int64)  # clamped level column of each tile column
    # Per column parity q and sub-lattice column j: 1 / 0 for the edge to the left /
    # right kept / cut (it leaves the image), and the self weight of those columns.
    cut_l = np.empty((2, nx), np.float32)
    cut_r = np.empty((2, nx), np.float32)
    self_x = np.empty((2, nx), np.float32)
    self_y = np.empty(sy, np.float32)
    cut_u = np.empty(sy, np.float32)
    cut_d = np.empty(sy, np.float32)
    # Coefficients of one sub-lattice (scaled weights up, down, left, right, self;
    # alpha / r, (1 - alpha) / r; the gains).
    cw = np.zeros((9, size), np.float32)
    ones = np.ones(size, np.float32)
    zeros = np.zeros(size, np.float32)
    ntx = active.shape[1]
    run = -1  # first tile of the current run of inactive tiles in a row of tiles
    for t in range(active.size):
        tr, tc = t // ntx, t % ntx
        ty0, tx0 = tr * ty, tc * tx
        if not active[tr, tc]:  # initial values, written run by run (long rows)
            run = tc if run < 0 else run
            if tc == ntx - 1:
                _initial(xs, xw, from_coarser, out, ty0, run * tx, min(ty, h - ty0),
                         w - run * tx)  # fmt: skip
                run = -1
            continue
        if run >= 0:
            _initial(xs, xw, from_coarser, out, ty0, run * tx, min(ty, h - ty0),
                     min(tx0, w) - run * tx)  # fmt: skip
            run = -1
        y0 = ty0 - halo
        x0 = tx0 - halo
        inside = x0 >= 0 and x0 + sx <= w  # no column clamped (x0 is even)
        border = False  # does the tile hold an edge that leaves the image?
        for xx in range(sx):
            col[xx] = min(max(x0 + xx, 0), w - 1)
            gx = ox + x0 + xx
            q, j = xx % 2, xx // 2
            cut_l[q, j] = f0 if gx == 0 or gx == fx else f1
            cut_r[q, j] = f0 if gx == -1 or gx == fx - 1 else f1
            sw = f0
            if gx == 0:
                sw += eps32
            if gx == fx - 1:
                sw += eps32
            self_x[q, j] = sw
            border = border or gx == 0 or gx == fx - 1
        # Gather alpha, the image and the initial F, B (rows clamped, then columns).
        for yy in range(sy):
            ry = min(max(y0 + yy, 0), h - 1)
            gy = oy + y0 + yy
            cut_u[yy] = f0 if gy == 0 or gy == fy else f1
            cut_d[yy] = f0 if gy == -1 or gy == fy - 1 else f1
            sw = f0
            if gy == 0:
                sw += eps32
            if gy == fy - 1:
                sw += eps32
            self_y[yy] = sw
            border = border or gy == 0 or gy == fy - 1
            p, b = yy % 2, m + (yy // 2) * nx
            for q in range(2):
                k = 2 * p + q
                cols = col[q::2]
                if inside:  # every other pixel of the row, and the parents as they are
                    _copy(a[k, b : b + nx], A[ry, x0 + q : x0 + sx : 2])
                    for ch in range(c):
                        _copy(im[k, ch, b : b + nx], img[ch, ry, x0 + q : x0 + sx : 2])
                else:
                    _gather(a[k, b : b + nx], A[ry], cols, 0)
                    for ch in range(c):
                        _gather(im[k, ch, b : b + nx], img[ch, ry], cols, 0)
                if from_coarser and inside:
                    r0 = (ry >> 1) * xw + (x0 >> 1)
                    for ch in range(c2):
                        _copy(x[k, ch, b : b + nx], xs[ch, r0 : r0 + nx])
                elif from_coarser:
                    r0 = (ry >> 1) * xw
                    for ch in range(c2):
                        _gather(x[k, ch, b : b + nx], xs[ch, r0 : r0 + xw], cols, 1)
                else:
                    r0 = ry * xw
                    for ch in range(c2):
                        _gather(x[k, ch, b : b + nx], xs[ch, r0 : r0 + xw], cols, 0)
        for _ in range(n_iter):
            for k in (0, 3, 1, 2):  # red (00, 11), then black (01, 10)
                p, q = k // 2, k % 2
                kv, kh = 2 * (1 - p) + q, 2 * p + 1 - q  # up / down and left / right
                # Starts of the neighbours above, below, left and right (flat views,
                # so that the loops below index from 0 and vectorise).
                su, sd, sl, sr = m + (p - 1) * nx, m + p * nx, m + q - 1, m + q
                if border:  # row by row: edges leaving the image, self weights
                    for i in range(1 - p, ny - p):
                        yy = 2 * i + p
                        b = i * nx
                        _coefficients(
                            a[k, m + b : m + b + nx], a[kv, su + b : su + b + nx],
                            a[kv, sd + b : sd + b + nx], a[kh, sl + b : sl + b + nx],
                            a[kh, sr + b : sr + b + nx], cut_u[yy], cut_d[yy], cut_l[q],
                            cut_r[q], self_y[yy], self_x[q], cw[:, b : b + nx], omega32,
                            eps32, r32,
                        )  # fmt: skip
                else:  # the whole sub-lattice as one flat loop (the ring is discarded)
                    _coefficients(
                        a[k, m : m + size], a[kv, su : su + size], a[kv, sd : sd + size],
                        a[kh, sl : sl + size], a[kh, sr : sr + size], f1, f1, ones, ones,
                        f0, zeros, cw, omega32, eps32, r32,
                    )  # fmt: skip
                for ch in range(c):
                    _update(
                        x[k, ch, m : m + size], x[kv, ch, su : su + size],
                        x[kv, ch, sd : sd + size], x[kh, ch, sl : sl + size],
                        x[kh, ch, sr : sr + size], x[k, ch + c, m : m + size],
                        x[kv, ch + c, su : su + size], x[kv, ch + c, sd : sd + size],
                        x[kh, ch + c, sl : sl + size], x[kh, ch + c, sr : sr + size],
                        im[k, ch, m : m + size], cw, upd[k, m : m + size], keep,
                    )  # fmt: skip
        # The tile's interior into the padded level (halo is even: tile row yy is on
        # sub-lattice row parity yy % 2).
        ocol = tx0
        for ch in range(nout):
            for yy in range(ty):
                p, b = yy % 2, m + ((halo + yy) // 2) * nx + halo // 2
                dst = out[ch, ty0 + yy, ocol : ocol + tx]
                _interleave(dst, x[2 * p, ch, b : b + tx // 2], x[2 * p + 1, ch, b : b + tx // 2])


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
def _initial(xs, xw, from_coarser, out, y0, x0, ny, nx):
    """The initial state of an ``ny x nx`` block of the level at (y0, x0) (even)."""
    for ch in range(out.shape[0]):
        for y in range(y0, y0 + ny):
            dst = out[ch, y, x0 : x0 + nx]
            if from_coarser:
                r0 = (y >> 1) * xw + (x0 >> 1)
                src = xs[ch, r0 : r0 + (nx + 1) // 2]
                for j in range(nx // 2):
                    dst[2 * j] = src[j]
                    dst[2 * j + 1] = src[j]
                if nx % 2:
                    dst[nx - 1] = src[nx // 2]
            else:
                _copy(dst, xs[ch, y * xw + x0 : y * xw + x0 + nx])


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def _copy(dst, src):
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def _gather(dst, src, idx, shift):
    for j in range(dst.shape[0]):
        dst[j] = src[idx[j] >> shift]


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def _interleave(dst, even, odd):
    for j in range(even.shape[0]):
        dst[2 * j] = even[j]
        dst[2 * j + 1] = odd[j]


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def _coefficients(a, au, ad, al, ar, cu, cd, cl, cr, sy, sx, cw, omega, eps, relax):
    """One row (or flat sub-lattice) of update coefficients into ``cw`` (9, n)."""
    f1 = np.float32(1.0)
    for j in range(a.shape[0]):
        ai = a[j]
        w0 = (abs(ai - au[j]) * omega + eps) * cu  # up, down, left, right, self
        w1 = (abs(ad[j] - ai) * omega + eps) * cd
        w2 = (abs(ai - al[j]) * omega + eps) * cl[j]
        w3 = (abs(ar[j] - ai) * omega + eps) * cr[j]
        s = sy + sx[j]
        total = w0 + w1
        total += w2
        total += w3
        total += s
        a1 = f1 - ai
        denom = total + ai * ai
        denom += a1 * a1
        scale = (f1 / total) * relax
        gain = (f1 / denom) * relax
        cw[0, j] = w0 * scale
        cw[1, j] = w1 * scale
        cw[2, j] = w2 * scale
        cw[3, j] = w3 * scale
        cw[4, j] = s * scale
        cw[5, j] = ai / relax
        cw[6, j] = a1 / relax
        cw[7, j] = ai * gain
        cw[8, j] = a1 * gain


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def _update(xf, fu, fd, fl, fr, xb, bu, bd, bl, br, im, cw, upd, keep):
    """One channel's F and B of one sub-lattice, updated in place where ``upd``."""
    f0 = np.float32(0.0)
    f1 = np.float32(1.0)
    for j in range(xf.shape[0]):
        f = xf[j]
        b = xb[j]
        fm = cw[0, j] * fu[j]
        fm += cw[1, j] * fd[j]
        fm += cw[2, j] * fl[j]
        fm += cw[3, j] * fr[j]
        fm += cw[4, j] * f
        bm = cw[0, j] * bu[j]
        bm += cw[1, j] * bd[j]
        bm += cw[2, j] * bl[j]
        bm += cw[3, j] * br[j]
        bm += cw[4, j] * b
        res = im[j] - cw[5, j] * fm
        res -= cw[6, j] * bm
        fm += cw[7, j] * res
        bm += cw[8, j] * res
        fm += keep * f
        bm += keep * b
        fm = fm if fm > f0 else f0
        bm = bm if bm > f0 else f0
        fm = fm if fm < f1 else f1
        bm = bm if bm < f1 else f1
        xf[j] = fm if upd[j] else f
        xb[j] = bm if upd[j] else b


@numba.njit(
    "void(float32[:, :, :], float32[:, :, :], float32[:, :], float32[:, :, :], int64, int64, "
    "int64)",
    cache=True,
    nogil=True,
    fastmath=False,
    error_model="numpy",
)
def finish(out, img, alpha, src, g, sy0, sx0):
    """The block's result: ``F = I`` where alpha = 1, else the solved (or coarse) ``F``;
    ``B = I`` where alpha = 0, else ``B`` (channels ``C..2C - 1`` of ``out``, if any).

    ``src`` (nout, hs, ws) is read at ``((sy0 + y) >> g, (sx0 + x) >> g)`` (``g > 0``: the
    coarse level of a block with alpha only 0 or 1, expanded on the fly). Arrays of any
    strides (one signature): ``out`` is usually a view into the (H, W, C) output, so
    pixels are the inner loop's outer level and channels its inner one.
    """
    nout = out.shape[0]
    c = img.shape[0]
    for y in range(out.shape[1]):
        a = alpha[y]
        for ch in range(nout):  # row by row and channel by channel (simple loops)
            known = np.float32(1.0 if ch < c else 0.0)
            dst, im, s = out[ch, y], img[ch % c, y], src[ch, (sy0 + y) >> g]
            if g == 0:
                for x in range(dst.shape[0]):
                    dst[x] = im[x] if a[x] == known else s[x]
            else:
                for x in range(dst.shape[0]):
                    dst[x] = im[x] if a[x] == known else s[(sx0 + x) >> g]
