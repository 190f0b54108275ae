"""The multilevel foreground solver behind :mod:`napari_hrmatt.foreground`.

The pyramid plan shared by the global pass and the blocks, the red-black sweeps of one
level (whole, or banded to the tiles that contain unknown alpha) and the dense coarse
solve. :mod:`.foreground` explains the method; this module is its arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._kernel_choice import numba_wanted

__all__ = [
    "TILES",
    "Plan",
    "make_plan",
    "foreground_overlap",
    "to_tensor",
    "subsample",
    "upsample",
    "sweep_level",
    "plan_tiles",
    "solve_coarse",
]

# Tile edges (pixels of the level) tried for the banded fine-level sweeps; each level
# takes the one (or a dense sweep) that sweeps the fewest pixels. Small tiles follow thin
# hair closely; each costs a halo of 2 n pixels per side, so not too small.
TILES = (16, 32, 64, 128)

# Relative time per swept pixel of each tile edge (None: one dense tile larger than a
# batch; a smaller one counts 1.0), measured with the numba kernel on one CPU thread on
# the real blocks of GT04 / GT13 / GT01 at 5 MP (benchmarks/bench_foreground_tiling.py,
# docs/foreground.md "Fused CPU kernel"): per-tile costs favour large tiles (16: 1.3-1.8,
# 64: 0.7-0.8, 128: 0.6-0.8 of 32), a dense level 1.1-1.5. (The torch path measured
# 1.12 / 1.0 / 1.07 / 1.16 and dense 1.15-2.4; CUDA was never measured.)
_TILE_COST = {16: 1.5, 32: 1.0, 64: 0.8, 128: 0.7, None: 1.3}

# Swept pixels per batch of tiles on the CPU: the work arrays of a batch (~100 bytes per
# pixel) stay closer to the core; measured ~10 % faster than one batch of all tiles at
# 5 MP. With the flat sub-lattice arrays 2^17 measured 5-8 % faster than 2^18 and 2^15,
# 2^16 in between (GT04 / GT13 at 5 MP, medians of 5). On CUDA all tiles go in one batch.
_BATCH = 1 << 17


# Sweeps of CPU float32 tensors: "numba" (._fg_kernels, one pass per half-sweep, a whole
# level per call) or "torch" (_sweep_tiles, which CUDA always uses; tests set "torch" to
# keep that path tested on the CPU). numba is imported on first use (~0.6 s). The default
# follows HRMATT_KERNELS (._kernel_choice).
KERNEL = "numba" if numba_wanted() else "torch"


def _use_kernel(*tensors) -> bool:
    """Whether the numba kernels take these tensors: chosen, CPU, all float32."""
    f32 = {str(x.dtype) for x in tensors} == {"torch.float32"}
    return KERNEL == "numba" and tensors[0].device.type == "cpu" and f32


def _kernel():
    from ._fg_kernels import sweep_tiles

    return sweep_tiles


# --------------------------------------------------------------------------- levels


@dataclass(frozen=True)
class Plan:
    """Pyramid layout shared by the global pass and every block."""

    shape: tuple[int, int]  # full-resolution (H, W)
    glevel: int  # G: the global pass solves levels L..G, blocks solve G-1..0
    iterations: tuple[int, ...]  # sweeps on level k, k = 0..L
    eps: float
    omega: float
    relaxation: float = 1.0  # over-relaxation of levels swept more than once
    relaxation_once: float | None = None  # of levels swept once (None: ``relaxation``)

    def relax(self, n_iter: int) -> float:
        """Over-relaxation factor of a level swept ``n_iter`` times."""
        once = self.relaxation if self.relaxation_once is None else self.relaxation_once
        return once if n_iter == 1 else self.relaxation

    def size(self, k: int) -> tuple[int, int]:
        f = 1 << k
        return -(-self.shape[0] // f), -(-self.shape[1] // f)

    @property
    def levels(self) -> int:
        return len(self.iterations) - 1


def make_plan(
    shape,
    global_size,
    n_small,
    n_big,
    small_size,
    eps,
    omega,
    relaxation=1.5,
    n_finest=None,
    relaxation_once=None,
) -> Plan:
    """The pyramid of an image of ``shape``.

    Levels of at most ``small_size`` pixels per side get ``n_small`` sweeps, the others
    ``n_big``; ``n_finest`` overrides the finest of these: an int for level 0, or a
    sequence for levels 0, 1, ... (each only where that level has ``n_big``).
    ``relaxation_once`` (default ``relaxation``) is the over-relaxation of levels swept
    once. A negative number of sweeps is a ValueError.
    """
    finest = () if n_finest is None else tuple(np.atleast_1d(n_finest).astype(int).tolist())
    if min((*finest, n_big, n_small)) < 0:
        raise ValueError("the numbers of sweeps must be >= 0")
    h, w = int(shape[0]), int(shape[1])
    top = max(0, math.ceil(math.log2(max(h, w, 1))))  # level L is 1 x 1
    glevel = 0
    if h * w > global_size:
        glevel = min(top, max(0, math.ceil(0.5 * math.log2(h * w / global_size))))
    iterations = []
    for k in range(top + 1):
        hk, wk = -(-h // (1 << k)), -(-w // (1 << k))
        iterations.append(n_small if hk <= small_size and wk <= small_size else n_big)
    for k, n in enumerate(finest[: top + 1]):
        if iterations[k] == n_big:
            iterations[k] = n
    once = None if relaxation_once is None else float(relaxation_once)
    return Plan((h, w), glevel, tuple(iterations), float(eps), float(omega), float(relaxation),
                once)  # fmt: skip


def foreground_overlap(plan: Plan) -> int:
    """Block overlap (pixels) after which a block border cannot change a kept pixel.

    A red-black sweep reads the direct neighbours of a pixel twice (once per colour),
    so ``n_k`` sweeps on level ``k`` reach ``2 n_k`` pixels of ``2^k`` full-resolution
    pixels each; nearest-neighbour upsampling adds no reach. Rounded up to a multiple
    of ``2^G`` so that grown blocks line up with every level.
    """
    reach = sum(2 * plan.iterations[k] * (1 << k) for k in range(plan.glevel))
    step = 1 << plan.glevel
    return -(-reach // step) * step


def to_tensor(x: np.ndarray, device: str):
    """A torch tensor from a numpy array (copied when read-only, as torch needs)."""
    import torch

    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x).to(device)


def subsample(x, k: int):
    """Level ``k`` of an (h, w, c) array (numpy or dask): every ``2^k``-th row and column."""
    step = 1 << k
    return x[::step, ::step]


def upsample(x, shape):
    """Nearest-neighbour 2x upsampling of a (c, h, w) tensor, cropped to ``shape``."""
    c, h, w = x.shape
    up = x[:, :, None, :, None].expand(c, h, 2, w, 2).reshape(c, 2 * h, 2 * w)
    return up[:, : shape[0], : shape[1]]


# Red-black sweeps on four sub-lattices. A tile's pixels are stored by (row, column)
# parity; with tiles starting on even coordinates, 00 and 11 are the red pixels
# (even y + x) and 01 and 10 the black ones. Sub-lattice pixel (i, j) of (p, q) is tile
# pixel (2 i + p, 2 j + q). For each sub-lattice: the part that is updated (everything
# but the tile's fixed outer ring), its up / down / left / right neighbours as
# (sub-lattice, (row, column) offset in the sub-lattice), and the edges to them, named by
# the edge's upper / left end: ("V", p, q) joins (p, q) to the pixel below, ("H", p, q)
# to the one on its right.
_SUBLATTICES = ((0, 0), (1, 1), (0, 1), (1, 0))
_A, _B = slice(1, None), slice(None, -1)
_UPDATED = {(0, 0): (_A, _A), (1, 1): (_B, _B), (0, 1): (_A, _B), (1, 0): (_B, _A)}
_NEIGHBOURS = {
    (0, 0): (((1, 0), (-1, 0)), ((1, 0), (0, 0)), ((0, 1), (0, -1)), ((0, 1), (0, 0))),
    (1, 1): (((0, 1), (0, 0)), ((0, 1), (1, 0)), ((1, 0), (0, 0)), ((1, 0), (0, 1))),
    (0, 1): (((1, 1), (-1, 0)), ((1, 1), (0, 0)), ((0, 0), (0, 0)), ((0, 0), (0, 1))),
    (1, 0): (((0, 0), (0, 0)), ((0, 0), (1, 0)), ((1, 1), (0, -1)), ((1, 1), (0, 0))),
}
_EDGES = {
    (0, 0): ((("V", 1, 0), (-1, 0)), (("V", 0, 0), (0, 0)), (("H", 0, 1), (0, -1)),
             (("H", 0, 0), (0, 0))),
    (1, 1): ((("V", 0, 1), (0, 0)), (("V", 1, 1), (0, 0)), (("H", 1, 0), (0, 0)),
             (("H", 1, 1), (0, 0))),
    (0, 1): ((("V", 1, 1), (-1, 0)), (("V", 0, 1), (0, 0)), (("H", 0, 0), (0, 0)),
             (("H", 0, 1), (0, 0))),
    (1, 0): ((("V", 0, 0), (0, 0)), (("V", 1, 0), (0, 0)), (("H", 1, 1), (0, -1)),
             (("H", 1, 0), (0, 0))),
}  # fmt: skip
# The other end of each edge: (sub-lattice, offset).
_EDGE_ENDS = {
    ("V", 0, 0): ((1, 0), (0, 0)), ("V", 0, 1): ((1, 1), (0, 0)),
    ("V", 1, 0): ((0, 0), (1, 0)), ("V", 1, 1): ((0, 1), (1, 0)),
    ("H", 0, 0): ((0, 1), (0, 0)), ("H", 1, 0): ((1, 1), (0, 0)),
    ("H", 0, 1): ((0, 0), (0, 1)), ("H", 1, 1): ((1, 0), (0, 1)),
}  # fmt: skip


def sweep_level(
    X,
    img,
    A,
    *,
    origin,
    full,
    n_iter,
    plan,
    tile=None,
    active=None,
    from_coarser=False,
    channels=None,
):
    """Run ``n_iter`` red-black sweeps of one pyramid level, tile by tile.

    Parameters
    ----------
    X : (2C, h, w) tensor
        Initial ``F`` and ``B`` stacked; the updated values are returned (a new tensor).
        With ``from_coarser``: the next coarser level, (2C, ceil(h / 2), ceil(w / 2)),
        whose nearest-neighbour upsampling is the initial value.
    img : (C, h, w) tensor
        Image at this level.
    A : (h, w) tensor
        Alpha at this level.
    origin : (int, int)
        Level coordinates of ``X[:, 0, 0]`` in the whole image; even.
    full : (int, int)
        Size of this level of the whole image (its edges are the image border).
    n_iter : int
        Sweeps.
    plan : Plan
    tile : int, optional
        Tile edge (even); ``None`` sweeps the whole array as one tile (dense).
    active : (nty, ntx) bool tensor, optional
        Tiles to sweep (default all); the others keep their values.
    from_coarser : bool
        ``X`` is the coarser level (upsampled straight into the work array).
    channels : int, optional
        Return only the first ``channels`` channels (``C``: ``F`` alone, for the finest
        level when ``B`` is not wanted), saving their upsampling and write-back.

    Notes
    -----
    Each tile is swept with a halo of ``2 n_iter`` pixels whose outer ring stays fixed:
    a ring pixel goes stale at the first half-sweep of its colour and its error moves
    one pixel per half-sweep, so after ``2 n_iter`` half-sweeps it is ``2 n_iter - 1``
    pixels in, short of the tile's own pixels. Each tile is gathered straight into
    four sub-lattices by (row, column) parity (clamped indices: replicate padding), so
    a half-sweep updates two quarter-size arrays from the other two, without masks.
    CPU float32 tensors go to the numba kernel (``KERNEL``), one tile at a time; the
    torch path sweeps batches of tiles (of about ``_BATCH`` pixels on the CPU).
    """
    import torch

    c2 = X.shape[0]
    h, w = A.shape
    dev = X.device
    if tile is None:  # one tile of even sides, halo 2 (the outer ring stays fixed)
        ty_, tx_, halo = h + h % 2, w + w % 2, 2
    else:
        ty_, tx_, halo = tile, tile, 2 * n_iter
    nty, ntx = -(-h // ty_), -(-w // tx_)
    if active is None:
        active = torch.ones((nty, ntx), dtype=torch.bool, device=dev)
    idx = active.nonzero()
    nout = c2 if channels is None else channels
    if idx.shape[0] == 0 or n_iter == 0:
        return (upsample(X, (h, w)) if from_coarser else X)[:nout]
    ti, tj = idx[:, 0], idx[:, 1]
    sy, sx = ty_ + 2 * halo, tx_ + 2 * halo  # even
    # The level padded to whole tiles; tile pixels past the level are swept but dropped.
    hp, wp = nty * ty_, ntx * tx_
    Xp = torch.empty((nout, hp, wp), dtype=X.dtype, device=dev)
    # Tiles read their initial values from X (never written) and write their interiors
    # into Xp.
    st = X.stride()
    if st[2] == 1 and st[1] >= X.shape[2] and st[0] >= st[1] * X.shape[1]:
        # Row-major with padding (a previous level's work array): read it in place.
        xs, xw = X.as_strided((c2, st[0]), (st[0], 1)), st[1]
    else:
        xs, xw = X.contiguous().view(c2, -1), X.shape[2]
    if _use_kernel(Xp, img, A):  # the fused numba kernel: the whole level in one call
        _kernel()(xs.numpy(), int(xw), bool(from_coarser), Xp.numpy(),
                  np.ascontiguousarray(img.numpy()), np.ascontiguousarray(A.numpy()),
                  active.cpu().numpy().astype(np.uint8), ty_, tx_, halo,
                  int(origin[0]), int(origin[1]), int(full[0]), int(full[1]), int(n_iter),
                  plan.eps, plan.omega, plan.relax(n_iter))  # fmt: skip
        return Xp[:, :h, :w]
    if from_coarser:  # nearest-neighbour upsampling, written once (hp, wp are even)
        hc, wc = min(X.shape[1], hp // 2), min(X.shape[2], wp // 2)
        up = Xp.view(nout, hp // 2, 2, wp // 2, 2)[:, :hc, :, :wc, :]
        up.copy_(X[:nout, :hc, None, :wc, None].expand(nout, hc, 2, wc, 2))
    else:
        Xp[:, :h, :w] = X[:nout]
    # Batches of about _BATCH swept pixels, whose work arrays stay in cache.
    per = max(1, _BATCH // (sy * sx)) if dev.type == "cpu" else ti.shape[0]
    for i in range(0, ti.shape[0], per):
        _sweep_tiles(xs, xw, from_coarser, Xp, img, A, ti[i : i + per], tj[i : i + per],
                     ty_, tx_, halo, origin, full, n_iter, plan)  # fmt: skip
    return Xp[:, :h, :w]


def _sweep_tiles(xs, xw, from_coarser, Xp, img, A, ti, tj, ty_, tx_, halo, origin, full, n_iter,
                 plan):  # fmt: skip
    """Gather, sweep and write back one batch of tiles (see :func:`sweep_level`).

    ``xs`` is the initial state flattened, ``xw`` its row length: the level itself, or
    with ``from_coarser`` the coarser level (a level pixel reads its parent).

    Every array of a sub-lattice is flat: the ``N`` tiles' ``ny x nx`` sub-lattice
    pixels one after another (``L`` of them), with a margin of ``nx + 1`` entries on
    each side, so that each neighbour of the whole batch is one shifted 1-D view and
    every operation runs over long contiguous rows (short rows of ``nx`` entries cost
    torch's CPU kernels a few times more per element). The fixed outer ring is swept
    too, with coefficients that keep it as it is (zero weights and gains, ``x`` kept
    whole); the reads across a tile's edge that such a sweep makes are multiplied by
    these zeros.
    """
    import torch
    import torch.nn.functional as F

    c2 = xs.shape[0]
    nout, hp, wp = Xp.shape
    c = c2 // 2
    h, w = A.shape
    dev, dt = Xp.device, Xp.dtype
    sy, sx = ty_ + 2 * halo, tx_ + 2 * halo
    nty, ntx = hp // ty_, wp // tx_
    # Level rows / columns of every tile pixel: (N, sy), (N, sx).
    ly = (ti * ty_ - halo)[:, None] + torch.arange(sy, device=dev)[None, :]
    lx = (tj * tx_ - halo)[:, None] + torch.arange(sx, device=dev)[None, :]
    ry, rx = ly.clamp(0, h - 1), lx.clamp(0, w - 1)
    if max(h * w, xs.shape[1]) < 2**31:  # 32-bit gather indices: half the index traffic
        ry, rx = ry.int(), rx.int()
    If, Af = img.reshape(c, -1), A.reshape(-1)
    eps, omega, relax = plan.eps, plan.omega, plan.relax(n_iter)
    ny, nx = sy // 2, sx // 2
    n = ti.shape[0]
    size = n * ny * nx  # L
    pad = nx + 1
    core = slice(pad, pad + size)

    def padded(index):  # margins read pixel 0 (any finite value does)
        return F.pad(index, (pad, pad))

    # Gathers: F and B, alpha (with margins), the image (core only).
    lat, al, im = {}, {}, {}
    for p, q in _SUBLATTICES:
        src = (ry[:, p::2, None] * w + rx[:, None, q::2]).reshape(-1)
        al[p, q] = Af.index_select(0, padded(src))
        im[p, q] = If.index_select(1, src)
        if from_coarser and lat:
            # All four sub-lattices start as the same parents: rows 2 i and 2 i + 1 of a
            # tile (which starts on an even row) have one parent, clamped or not, and
            # likewise the columns. A copy is cheaper than another gather.
            lat[p, q] = lat[0, 0].clone()
            continue
        if from_coarser:
            xsrc = ((ry[:, p::2, None] >> 1) * xw + (rx[:, None, q::2] >> 1)).reshape(-1)
        elif xw == w:
            xsrc = src
        else:
            xsrc = (ry[:, p::2, None] * xw + rx[:, None, q::2]).reshape(-1)
        lat[p, q] = xs.index_select(1, padded(xsrc))

    # Edge weights eps + omega |alpha_i - alpha_j|, once per edge: V[p, q] joins a pixel
    # of sub-lattice (p, q) to the one below it, H[p, q] to the one on its right (the
    # next tile row / column for p = 1 / q = 1: flat offset nx / 1).
    full_len = size + 2 * pad
    edges = {}
    for (kind, p, q), (other, (dy, dx)) in _EDGE_ENDS.items():
        off = dy * nx + dx
        e = torch.empty(full_len, dtype=dt, device=dev)
        d = torch.sub(al[p, q][: full_len - off], al[other][off:], out=e[: full_len - off])
        d.abs_().mul_(omega).add_(eps)
        e[full_len - off :] = eps  # (only read by the ring, whose weights are zeroed)
        edges[kind, p, q] = e
    # An edge leaving the image becomes a self-edge of weight eps (PyMatting clamps the
    # neighbour's coordinates, so the neighbour is the pixel itself): the edge is cut
    # and the pixel gets weight eps on itself.
    gy_all, gx_all = origin[0] + ly, origin[1] + lx
    border = (bool(gy_all.min() <= 0), bool(gy_all.max() >= full[0] - 1),
              bool(gx_all.min() <= 0), bool(gx_all.max() >= full[1] - 1))  # fmt: skip
    if border[0] or border[1]:
        for p in (0, 1):
            g = gy_all[:, p::2]
            cut = (g == -1) | (g == full[0] - 1)
            for q in (0, 1):
                edges["V", p, q][core].view(n, ny, nx).masked_fill_(cut[:, :, None], 0.0)
    if border[2] or border[3]:
        for q in (0, 1):
            g = gx_all[:, q::2]
            cut = (g == -1) | (g == full[1] - 1)
            for p in (0, 1):
                edges["H", p, q][core].view(n, ny, nx).masked_fill_(cut[:, None, :], 0.0)

    def coefficients(pq):
        rows, cols = _UPDATED[pq]
        a = al[pq][core]
        weights = [edges[e][pad + dy * nx + dx :][:size] for e, (dy, dx) in _EDGES[pq]]
        self_w = None
        if any(border):
            gy = gy_all[:, pq[0] :: 2][:, :, None]
            gx = gx_all[:, pq[1] :: 2][:, None, :]
            outside = (gy == 0, gy == full[0] - 1, gx == 0, gx == full[1] - 1)
            for out, edge in zip(outside, border, strict=True):
                if edge:
                    sw = out.to(dt).mul_(eps).expand(n, ny, nx)
                    self_w = sw if self_w is None else self_w + sw
            self_w = self_w.reshape(-1)
        total = weights[0] + weights[1]
        total += weights[2]
        total += weights[3]
        if self_w is not None:
            total += self_w
        a1 = 1.0 - a
        denom = total + a * a
        denom.addcmul_(a1, a1)
        # Over-relaxation x + r (x_gs - x) folded into the coefficients: the weights
        # give r F_bar, the residual divides it back out, and (1 - r) x is added last.
        # On the fixed ring all of it is zero and x is kept whole.
        scale = torch.reciprocal(total).mul_(relax)
        gain = torch.reciprocal(denom).mul_(relax)
        keep = torch.full((n, ny, nx), 1.0 - relax, dtype=dt, device=dev)
        for arr in (scale.view(n, ny, nx), gain.view(n, ny, nx), keep):
            fill = 1.0 if arr is keep else 0.0
            arr[:, 0 if rows.start else -1] = fill
            arr[:, :, 0 if cols.start else -1] = fill
        return {
            "w": [wd * scale for wd in weights],
            "s": None if self_w is None else self_w * scale,
            "a0": a / relax,
            "a1": a1 / relax,
            "g0": a * gain,
            "g1": a1.mul_(gain),
            "keep": keep.view(-1),
            "img": im[pq],
        }

    coef = {pq: coefficients(pq) for pq in _SUBLATTICES}

    def update(pq):
        co = coef[pq]
        views = [lat[src][:, pad + dy * nx + dx :][:, :size] for src, (dy, dx) in _NEIGHBOURS[pq]]
        m = co["w"][0] * views[0]
        for wd, v in zip(co["w"][1:], views[1:], strict=True):
            m.addcmul_(wd, v)
        target = lat[pq][:, core]
        if co["s"] is not None:
            m.addcmul_(co["s"], target)
        fm, bm = m[:c], m[c:]
        res = torch.addcmul(co["img"], co["a0"], fm, value=-1.0)
        res.addcmul_(co["a1"], bm, value=-1.0)
        fm.addcmul_(co["g0"], res)
        bm.addcmul_(co["g1"], res)
        m.addcmul_(co["keep"], target)
        torch.clamp(m, 0.0, 1.0, out=target)

    for _ in range(n_iter):
        for pq in _SUBLATTICES:  # red (00, 11), then black (01, 10)
            update(pq)

    # Write the tile interiors back into the (padded) level.
    grid = Xp.view(nout, nty, ty_ // 2, 2, ntx, tx_ // 2, 2)
    k0, k1 = halo // 2, (halo + ty_) // 2
    j0, j1 = halo // 2, (halo + tx_) // 2
    for (p, q), v in lat.items():
        v = v[:nout, core].view(nout, n, ny, nx)
        grid[:, :, :, p, :, :, q][:, ti, :, tj, :] = v[:, :, k0:k1, j0:j1].transpose(0, 1)


def _tile_any(mask, tile: int):
    """(h, w) bool -> (ceil(h / tile), ceil(w / tile)): does each tile hold a True."""
    import torch
    import torch.nn.functional as F

    h, w = mask.shape
    # As uint8, rows of tiles first (long contiguous rows): ~4x faster than bool any().
    m = F.pad(mask, (0, -w % tile, 0, -h % tile)).view(torch.uint8)
    r = m.view(m.shape[0] // tile, tile, m.shape[1]).amax(1)
    return r.view(r.shape[0], -1, tile).amax(2).bool()


def _grow(mask, r: int):
    """Grow an (h, w) bool mask by ``r`` pixels in each direction (square dilation)."""
    for axis in (0, 1):
        for _ in range(r):
            grown = mask.clone()
            n = mask.shape[axis]
            grown.narrow(axis, 1, n - 1).logical_or_(mask.narrow(axis, 0, n - 1))
            grown.narrow(axis, 0, n - 1).logical_or_(mask.narrow(axis, 1, n - 1))
            mask = grown
    return mask


def plan_tiles(frac, plan: Plan, levels: range, sizes, tiles=TILES, dense=True):
    """Tiling of each fine level: ``{k: (tile, active)}``, ``tile`` None for dense.

    From fine to coarse: on level 0 the pixels that must come out exact are those with
    ``0 < alpha < 1``. ``n`` sweeps read at most ``2 n`` pixels away, so on level k the
    needed pixels grown by ``2 n_k`` must be exact on entry; they are upsampled from
    their parents on level k + 1, which are that level's needed pixels. Each level is
    then covered by whichever tiling costs least (swept pixels times the measured cost
    per pixel of the tile edge): tiles of one of the edges in ``tiles`` (those holding
    a needed pixel, each with its halo) or, if ``dense``, one dense tile.
    """
    import torch.nn.functional as F

    out = {}
    need = frac
    for k in levels:
        n = plan.iterations[k]
        h, w = sizes[k]
        best = float("inf"), None, None
        if dense:
            px = (h + h % 2 + 4) * (w + w % 2 + 4)
            best = px * (_TILE_COST[None] if px > _BATCH else 1.0), None, None
        act, edge = None, 0
        for t in sorted(tiles):
            # Coarser tile grids from finer ones when the edges double (cheap).
            act = _tile_any(need, t) if act is None or t != 2 * edge else _tile_any(act, 2)
            edge = t
            cost = int(act.sum()) * (t + 4 * n) ** 2 * _TILE_COST.get(t, 1.0)
            if cost < best[0]:
                best = cost, t, act
        out[k] = best[1:]
        if k + 1 not in levels:
            break
        # The parents of the needed pixels grown by 2 n are among the parents of the
        # needed pixels grown by n on level k + 1 (cheaper there).
        m = F.pad(need, (0, w % 2, 0, h % 2))
        need = m[0::2, 0::2] | m[1::2, 0::2]  # (the four children, ~4x faster than any())
        need |= m[0::2, 1::2]
        need |= m[1::2, 1::2]
        need = _grow(need, n)
    return out


def solve_coarse(small: np.ndarray, plan: Plan, device: str) -> np.ndarray:
    """The global pass proper: levels L..G, dense, from the level-G image and alpha.

    Parameters
    ----------
    small : (hG, wG, C + 1) array of float32
        Level ``G`` of the image (subsampled) with alpha as the last channel.

    Returns
    -------
    fb : (2C, hG, wG) array of float32
        ``F`` and ``B`` stacked on level ``G``.
    """
    import torch

    with torch.inference_mode():
        return _solve_coarse_torch(to_tensor(small, device).permute(2, 0, 1), plan)


def _solve_coarse_torch(t, plan: Plan) -> np.ndarray:
    import torch

    c = t.shape[0] - 1
    pyramid = {plan.glevel: t.contiguous()}
    for k in range(plan.glevel + 1, plan.levels + 1):
        pyramid[k] = pyramid[k - 1][:, ::2, ::2].contiguous()
    img, alpha = pyramid[plan.glevel][:c], pyramid[plan.glevel][c]
    # Start from the mean colours of the (mostly) foreground and background pixels.
    means = []
    for sel in (alpha > 0.9, alpha < 0.1):
        n = int(sel.sum())
        means.append(img[:, sel].mean(1) if n else img.reshape(c, -1).mean(1))
    X = torch.cat(means)[:, None, None].to(torch.float32)
    for k in range(plan.levels, plan.glevel - 1, -1):  # coarse to fine
        level = pyramid[k]
        X = sweep_level(
            X if k < plan.levels else X.expand(2 * c, 1, 1),
            level[:c],
            level[c],
            origin=(0, 0),
            full=plan.size(k),
            n_iter=plan.iterations[k],
            plan=plan,
            from_coarser=k < plan.levels,
        )
    return X.cpu().numpy()
