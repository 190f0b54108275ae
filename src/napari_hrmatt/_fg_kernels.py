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

Compile time (paid once per install, with an empty numba cache): numba's cost grows with
each kernel and each array expression, so the work arrays are flat, the slicing sits in
a few small helpers compiled once each (one specialisation: no literal arguments), and
helpers get no Python / C entry points. See docs/foreground.md, "Compile time cut".
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["sweep_tiles"]


# Every kernel: one compile per install (cache), no GIL (dask threads), IEEE arithmetic;
# error_model="numpy" keeps divisions free of Python's zero checks, which would stop the
# loops from vectorising.
_JIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
# Helpers are only called from the kernels: no Python or C entry points to build.
_HELPER = dict(_JIT, no_cpython_wrapper=True, no_cfunc_wrapper=True)


@numba.njit(**_JIT)
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
    one colour (loops the compiler vectorises). Compile time: the work is split into
    small kernels, each compiled once, on flat (1-D) arrays addressed by offsets (every
    array expression in a kernel costs compile time, a slice of a 3-D array ~30 ms).
    """
    c2 = xs.shape[0]
    c = c2 // 2
    h, w = A.shape
    sy, sx = ty + 2 * halo, tx + 2 * halo
    ny, nx = sy // 2, sx // 2
    size = ny * nx
    m = nx + 1  # margin of each flat sub-lattice: every neighbour is a shifted index
    L = size + 2 * m  # sub-lattice k = 2 p + q, pixels (2 i + p, 2 j + q) at m + i nx + j
    # Work arrays, all allocated alike (each kind of allocation compiles its own code).
    x = np.zeros(4 * c2 * L, np.float32)  # channel ch of sub-lattice k at (k c2 + ch) L
    im = np.zeros(4 * c * L, np.float32)  # likewise (k c + ch) L
    a = np.zeros(4 * L, np.float32)
    # Per sub-lattice pixel: 1 updated, 0 on the tile's fixed outer ring (first / last
    # row of the tile: i = 0 of p = 0, i = ny - 1 of p = 1; likewise columns).
    upd = np.zeros(4 * L, np.float32)
    for k in range(4):
        p, q = k // 2, k % 2
        for i in range(1 - p, ny - p):
            for j in range(1 - q, nx - q):
                upd[k * L + m + i * nx + j] = 1.0
    # Per tile row / column (parity-major, ``(i % 2) n / 2 + i // 2``): 1 / 0 for the
    # edge up or left and down or right kept / cut (it leaves the image), self weight;
    # rows of ``sy`` / ``sx``.
    ey = np.zeros(3 * sy, np.float32)
    ex = np.zeros(3 * sx, np.float32)
    cw = np.zeros(9 * size, np.float32)  # coefficients of one sub-lattice, row r at r size
    flat = np.zeros(3 * size, np.float32)  # no edge cut, no self weight: 1, 1, 0
    for j in range(2 * size):
        flat[j] = 1.0
    xs1, out1, img1, a1 = xs.reshape(-1), out.reshape(-1), img.reshape(-1), A.reshape(-1)
    shift = 1 if from_coarser else 0
    keep = np.float32(1.0 - relax)
    f0, f1 = np.float32(0.0), np.float32(1.0)
    z = np.int64(0)  # (literal 0 arguments would compile a second specialisation)
    ntx = active.shape[1]
    run = -1  # first tile of the current run of inactive tiles in a row of tiles
    for t in range(active.size):
        tr, tc = t // ntx, t % ntx
        ty0, tx0 = tr * ty, tc * tx
        rows = ty if ty < h - ty0 else h - ty0
        if not active[tr, tc]:  # initial values, written run by run (long rows)
            run = tc if run < 0 else run
            if tc == ntx - 1:
                _initial(xs1, xs.shape[1], xw, shift, out1, out.shape, ty0, run * tx, rows,
                         w - run * tx)  # fmt: skip
                run = -1
            continue
        if run >= 0:
            _initial(xs1, xs.shape[1], xw, shift, out1, out.shape, ty0, run * tx, rows,
                     (tx0 if tx0 < w else w) - run * tx)  # fmt: skip
            run = -1
        y0, x0 = ty0 - halo, tx0 - halo
        border = _edges(ex, ox + x0, fx, eps)
        border = _edges(ey, oy + y0, fy, eps) or border
        _gather(x, im, a, xs1, xs.shape[1], xw, shift, img1, a1, h, w, y0, x0, sy, nx, m, L)
        for _ in range(n_iter):
            for k in (0, 3, 1, 2):  # red (00, 11), then black (01, 10): update k
                p, q = k // 2, k % 2
                kv, kh = 2 * (1 - p) + q, 2 * p + 1 - q  # up / down and left / right
                # Starts of the neighbours above, below, left and right (flat: every
                # loop indexes from 0 and vectorises).
                su, sd = kv * L + m + (p - 1) * nx, kv * L + m + p * nx
                sl, sr = kh * L + m + q - 1, kh * L + m + q
                if border:  # row by row: edges leaving the image, self weights
                    for i in range(1 - p, ny - p):
                        b, r = i * nx, p * ny + i  # r: tile row 2 i + p, parity-major
                        _coefficients(a, k * L + m + b, su + b, sd + b, sl + b, sr + b, ey[r],
                                      ey[2 * ny + r], ey[4 * ny + r], ex, 2 * nx, q * nx, cw,
                                      b, size, nx, omega, eps, relax)  # fmt: skip
                else:  # the whole sub-lattice as one flat loop (the ring is discarded)
                    _coefficients(a, k * L + m, su, sd, sl, sr, f1, f1, f0, flat, size, z, cw,
                                  z, size, size, omega, eps, relax)  # fmt: skip
                for ch in range(c):  # neighbours' channel ch: their sub-lattice's + o
                    o, oh = (kv * c2 + ch - kv) * L, (kh * c2 + ch - kh) * L
                    _update(x, (k * c2 + ch) * L + m, su + o, sd + o, sl + oh, sr + oh, c * L,
                            im, (k * c + ch) * L + m, cw, upd, k * L + m, size, keep)  # fmt: skip
        _write(out1, out.shape, ty0, tx0, ty, tx, x, c2, halo, nx, m, L)


@numba.njit(**_HELPER)
def _edges(e, g0, full, eps):
    """Edges of the tile rows (or columns) at whole-image coordinates ``g0 + i`` into
    ``e`` (3 rows of n), parity-major: kept (1) / cut (0) before, after, and the self
    weight. Returns whether any edge is cut."""
    n = e.shape[0] // 3
    border = False
    for i in range(n):
        g = g0 + i
        j = (i % 2) * (n // 2) + i // 2
        e[j] = 0.0 if g == 0 or g == full else 1.0
        e[n + j] = 0.0 if g == -1 or g == full - 1 else 1.0
        s = np.float32(0.0)
        if g == 0:
            s += np.float32(eps)
        if g == full - 1:
            s += np.float32(eps)
        e[2 * n + j] = s
        border = border or g == 0 or g == full - 1
    return border


@numba.njit(**_HELPER)
def _gather(x, im, a, xs, rows, xw, shift, img, A, h, w, y0, x0, sy, nx, m, L):
    """Gather a tile's alpha, image and initial F, B (from ``xs``: flat, ``rows`` entries
    per channel, rows of ``xw``; ``shift`` 1: the parents) into its sub-lattices: tile
    pixel ``(yy, xx)`` reads level pixel ``(y0 + yy, x0 + xx)``, clamped to the level."""
    c2 = x.shape[0] // (4 * L)
    c = c2 // 2
    cols = np.empty(2 * nx, np.int64)  # clamped level column of tile column 2 j + q
    for xx in range(2 * nx):
        cx = x0 + xx
        cols[(xx % 2) * nx + xx // 2] = 0 if cx < 0 else (w - 1 if cx > w - 1 else cx)
    inside = x0 >= 0 and x0 + 2 * nx <= w  # no column clamped (x0 is even)
    for yy in range(sy):
        ry = y0 + yy
        ry = 0 if ry < 0 else (h - 1 if ry > h - 1 else ry)
        b = m + (yy // 2) * nx
        for q in range(2):
            k = 2 * (yy % 2) + q
            cq = cols[q * nx : (q + 1) * nx]
            for ch in range(c + 1):  # alpha, then the image
                if ch == 0:
                    dst, src = a[k * L + b : k * L + b + nx], A[ry * w : (ry + 1) * w]
                else:
                    dst = im[(k * c + ch - 1) * L + b : (k * c + ch - 1) * L + b + nx]
                    src = img[((ch - 1) * h + ry) * w : ((ch - 1) * h + ry + 1) * w]
                if inside:  # every other pixel of the row
                    src = src[x0 + q :]
                    for j in range(nx):
                        dst[j] = src[2 * j]
                else:
                    for j in range(nx):
                        dst[j] = src[cq[j]]
            for ch in range(c2):
                dst = x[(k * c2 + ch) * L + b : (k * c2 + ch) * L + b + nx]
                src = xs[ch * rows + (ry >> shift) * xw :]
                if inside and shift:  # the parents as they are
                    src = src[x0 >> 1 :]
                    for j in range(nx):
                        dst[j] = src[j]
                else:
                    for j in range(nx):
                        dst[j] = src[cq[j] >> shift]


@numba.njit(**_HELPER)
def _initial(xs, rows, xw, shift, out, shape, y0, x0, ny, nx):
    """The initial state of an ``ny x nx`` block of the level at (y0, x0) (even) into
    ``out`` (flat, of ``shape``) from ``xs`` (flat, ``rows`` entries per channel, rows of
    ``xw``); ``shift`` 1: each pixel is its parent in ``xs``."""
    nout, hp, wp = shape
    for ch in range(nout):
        for y in range(y0, y0 + ny):
            dst = out[(ch * hp + y) * wp + x0 : (ch * hp + y) * wp + x0 + nx]
            src = xs[ch * rows + (y >> shift) * xw + (x0 >> shift) :]
            if shift:
                for j in range(nx // 2):
                    dst[2 * j] = src[j]
                    dst[2 * j + 1] = src[j]
                if nx % 2:
                    dst[nx - 1] = src[nx // 2]
            else:
                for j in range(nx):
                    dst[j] = src[j]


@numba.njit(**_HELPER)
def _write(out, shape, ty0, tx0, ty, tx, x, c2, halo, nx, m, L):
    """The tile's interior into the padded level ``out`` (flat, of ``shape``): tile row
    ``yy`` interleaves sub-lattices ``2 p`` and ``2 p + 1``, ``p = yy % 2`` (halo is even)."""
    nout, hp, wp = shape
    n = tx // 2
    for ch in range(nout):
        for yy in range(ty):
            p, b = yy % 2, m + ((halo + yy) // 2) * nx + halo // 2
            o0 = (ch * hp + ty0 + yy) * wp + tx0
            e0, d0 = (2 * p * c2 + ch) * L + b, ((2 * p + 1) * c2 + ch) * L + b
            dst, even, odd = out[o0 : o0 + 2 * n], x[e0 : e0 + n], x[d0 : d0 + n]
            for j in range(n):
                dst[2 * j] = even[j]
                dst[2 * j + 1] = odd[j]


@numba.njit(**_HELPER)
def _coefficients(a, o, ou, od, ol, orr, cu, cd, sy, ex, es, xo, cw, b, size, n, omega, eps,
                  relax):  # fmt: skip
    """Update coefficients of ``n`` pixels of one sub-lattice (alpha at ``a[o:]``, its
    neighbours at ``a[ou:]`` etc.) into ``cw[r size + b:]`` (scaled weights up, down,
    left, right, self; alpha / r, (1 - alpha) / r; the gains). ``cu, cd, sy``: the row's
    edges kept and self weight; ``ex[xo:]``, ``ex[es + xo:]``, ``ex[2 es + xo:]`` the
    columns'."""
    f1 = np.float32(1.0)
    omega, eps, relax = np.float32(omega), np.float32(eps), np.float32(relax)
    ai_, au, ad, al, ar = (
        a[o : o + n],
        a[ou : ou + n],
        a[od : od + n],
        a[ol : ol + n],
        a[orr : orr + n],
    )
    cl, cr, sx = ex[xo : xo + n], ex[es + xo : es + xo + n], ex[2 * es + xo : 2 * es + xo + n]
    c0, c1, c2, c3 = (
        cw[b : b + n],
        cw[size + b : size + b + n],
        cw[2 * size + b : 2 * size + b + n],
        cw[3 * size + b : 3 * size + b + n],
    )
    c4, c5, c6 = (
        cw[4 * size + b : 4 * size + b + n],
        cw[5 * size + b : 5 * size + b + n],
        cw[6 * size + b : 6 * size + b + n],
    )
    c7, c8 = cw[7 * size + b : 7 * size + b + n], cw[8 * size + b : 8 * size + b + n]
    for j in range(n):
        ai = ai_[j]
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
        c0[j] = w0 * scale
        c1[j] = w1 * scale
        c2[j] = w2 * scale
        c3[j] = w3 * scale
        c4[j] = s * scale
        c5[j] = ai / relax
        c6[j] = a1 / relax
        c7[j] = ai * gain
        c8[j] = a1 * gain


@numba.njit(**_HELPER)
def _update(x, o, ou, od, ol, orr, ob, im, oi, cw, upd, ou_, n, keep):
    """One channel's F (at ``x[o:]``, neighbours at ``x[ou:]`` etc.) and B (``ob`` after
    each) of one sub-lattice, updated in place where ``upd[ou_:]``."""
    f0 = np.float32(0.0)
    f1 = np.float32(1.0)
    xf, fu, fd, fl, fr = (
        x[o : o + n],
        x[ou : ou + n],
        x[od : od + n],
        x[ol : ol + n],
        x[orr : orr + n],
    )
    o, ou, od, ol, orr = o + ob, ou + ob, od + ob, ol + ob, orr + ob
    xb, bu, bd, bl, br = (
        x[o : o + n],
        x[ou : ou + n],
        x[od : od + n],
        x[ol : ol + n],
        x[orr : orr + n],
    )
    c0, c1, c2, c3, c4 = (
        cw[:n],
        cw[n : 2 * n],
        cw[2 * n : 3 * n],
        cw[3 * n : 4 * n],
        cw[4 * n : 5 * n],
    )
    c5, c6, c7, c8 = cw[5 * n : 6 * n], cw[6 * n : 7 * n], cw[7 * n : 8 * n], cw[8 * n : 9 * n]
    imj, u = im[oi : oi + n], upd[ou_ : ou_ + n]
    for j in range(n):
        f = xf[j]
        b = xb[j]
        fm = c0[j] * fu[j]
        fm += c1[j] * fd[j]
        fm += c2[j] * fl[j]
        fm += c3[j] * fr[j]
        fm += c4[j] * f
        bm = c0[j] * bu[j]
        bm += c1[j] * bd[j]
        bm += c2[j] * bl[j]
        bm += c3[j] * br[j]
        bm += c4[j] * b
        res = imj[j] - c5[j] * fm
        res -= c6[j] * bm
        fm += c7[j] * res
        bm += c8[j] * res
        fm += keep * f
        bm += keep * b
        fm = fm if fm > f0 else f0
        bm = bm if bm > f0 else f0
        fm = fm if fm < f1 else f1
        bm = bm if bm < f1 else f1
        xf[j] = fm if u[j] > f0 else f
        xb[j] = bm if u[j] > f0 else b


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
