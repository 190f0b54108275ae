"""Weight-free closed-form matting, solved matrix-free in torch (CPU or CUDA).

The model is the matting Laplacian of Levin, Lischinski and Weiss [1]_: in every
``(2r+1) x (2r+1)`` window ``w_k`` alpha is assumed to be an affine function of the
colour, ``alpha_i = a_k . I_i + b_k``, and minimising the fitting error with a
regulariser ``eps |a_k|^2`` gives the quadratic form ``alpha^T L alpha`` with

.. math::

    L_{ij} = \\sum_{k | i,j \\in w_k} \\left(\\delta_{ij} - \\frac{1}{|w|}\\left(1 +
             (I_i - \\mu_k)^T (\\Sigma_k + \\tfrac{\\epsilon}{|w|} I_3)^{-1} (I_j - \\mu_k)
             \\right)\\right).

We never build ``L``. Following He, Sun and Tang [2]_, the product ``L p`` is

.. math::

    (L p)_i = n_i p_i - \\Big(\\sum_{k \\ni i} a_k\\Big)^T I_i - \\sum_{k \\ni i} b_k,
    \\quad a_k = \\Delta_k\\big(\\overline{I p}_k - \\mu_k \\bar p_k\\big),
    \\quad b_k = \\bar p_k - a_k^T \\mu_k,

where ``Delta_k`` is the inverse regularised window covariance, bars are window means and
``n_i`` counts the windows containing pixel ``i``: every term is a box filter, so one
product costs O(pixels) whatever the window radius. Known pixels are hard constraints
(Dirichlet): we solve ``L_UU alpha_U = -L_UK alpha_K`` with preconditioned conjugate
gradients (:mod:`._stencil`), preconditioned by smoothed aggregation with the colour
channels in the coarse space (:mod:`._aggregation`; piecewise-constant multigrid with
``precond="mg"``).

Only windows lying entirely inside the array are used, as in Levin's reference code and
PyMatting's ``cf_laplacian``, so the operator matches theirs exactly.

References
----------
.. [1] A. Levin, D. Lischinski, Y. Weiss, "A Closed-Form Solution to Natural Image
       Matting", IEEE TPAMI 30(2), 2008. :doi:`10.1109/TPAMI.2007.1177`
.. [2] K. He, J. Sun, X. Tang, "Fast Matting Using Large Kernel Matting Laplacian
       Matrices", CVPR 2010. :doi:`10.1109/CVPR.2010.5539896`
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .._blocks import cut_ring
from ..trimap import FOREGROUND, UNKNOWN
from . import _stencil as _stencil_mod
from ._aggregation import SmoothedAggregation
from ._sparse_cf import solve_sparse, use_sparse
from ._stencil import (
    Multigrid,
    Stencil,
    cg,
    crop_to_unknown,
    restrict_to_unknown,
    shift,
    stencil_offsets,
)
from ._trim import check_trim_options, trim_array, trim_reach

__all__ = ["ClosedFormModel", "solve_closed_form", "laplacian_product"]


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum of ``x`` over the ``(2r+1)^2`` window around each pixel, zero outside.

    Separable shift-and-add for small radii (exact), cumulative sums otherwise.
    """
    h, w = x.shape[-2:]
    if r <= 4:
        xp = F.pad(x, (r, r, 0, 0))
        s = xp[..., :, 0:w].clone()
        for d in range(1, 2 * r + 1):
            s += xp[..., :, d : d + w]
        sp = F.pad(s, (0, 0, r, r))
        out = sp[..., 0:h, :].clone()
        for d in range(1, 2 * r + 1):
            out += sp[..., d : d + h, :]
        return out
    c = F.pad(x, (r + 1, r, 0, 0)).cumsum(-1)
    s = c[..., 2 * r + 1 :] - c[..., :w]
    c = F.pad(s, (0, 0, r + 1, r)).cumsum(-2)
    return c[..., 2 * r + 1 :, :] - c[..., :h, :]


def _cf_stencil(
    image: torch.Tensor,
    radius: int,
    eps: float,
    *,
    dtype=torch.float64,
    strip: int | None = None,
    rows: np.ndarray | None = None,
) -> Stencil:
    """Explicit closed-form matting Laplacian, offsets up to ``2 * radius``.

    Built in float64 strip by strip (``strip`` rows plus a ``2 * radius`` halo: every
    coefficient of a pixel depends only on windows within ``radius`` of it), so the
    float64 temporaries stay small; the result is stored in ``dtype``. With ``rows``
    (an (H, W) bool array: the pixels whose rows of the operator are needed, e.g. the
    unknown ones), each strip is built only between the first and last column holding
    such a pixel (plus the same halo); the coefficients elsewhere are left zero. Strips
    are 128 rows by default, 32 with ``rows`` (narrower strips follow the unknown
    pixels more closely: the blocks of a 5 MP dev composite built in 1.3 s CPU against
    1.8 s as whole 128-row strips; docs/engine.md, "Whole process at 5-8 MP").
    On the CPU the numba kernel ``_cf_kernels.cf_stencil`` builds the same coefficients
    (at the ``rows`` pixels only); the torch code below is the CUDA path.
    """
    if _stencil_mod._numba_ok(image) and dtype in (torch.float32, torch.float64):
        c, h, w = image.shape
        need = np.ones((h, w), bool) if rows is None else np.ascontiguousarray(rows, bool)
        coef = torch.zeros(((4 * radius + 1) ** 2, h, w), dtype=dtype)
        im = np.ascontiguousarray(image.detach().numpy(), dtype=np.float64)
        _stencil_mod.numba_kernels().cf_stencil(im, radius, float(eps), need, 32, coef.numpy())
        return Stencil(coef, 2 * radius)
    strip = strip or (128 if rows is None else 32)
    c, h, w = image.shape
    r = radius
    valid = torch.zeros((h, w), dtype=torch.float64, device=image.device)
    if h > 2 * r and w > 2 * r:
        valid[r : h - r, r : w - r] = 1
    new = torch.empty if rows is None else torch.zeros
    coef = new(((4 * r + 1) ** 2, h, w), dtype=dtype, device=image.device)
    for y0 in range(0, h, strip):
        y1 = min(y0 + strip, h)
        x0, x1 = 0, w
        if rows is not None:
            cols = np.flatnonzero(rows[y0:y1].any(0))
            if cols.size == 0:
                continue
            x0, x1 = int(cols[0]), int(cols[-1]) + 1
        lo, hi = max(y0 - 2 * r, 0), min(y1 + 2 * r, h)
        left, right = max(x0 - 2 * r, 0), min(x1 + 2 * r, w)
        part = _cf_stencil_part(
            image[:, lo:hi, left:right].to(torch.float64), valid[lo:hi, left:right], r, eps
        )
        coef[:, y0:y1, x0:x1] = part[:, y0 - lo : y1 - lo, x0 - left : x1 - left]
    return Stencil(coef, 2 * r)


def _cf_stencil_part(image: torch.Tensor, valid: torch.Tensor, radius: int, eps: float):
    """Stencil coefficients of one strip (float64); ``valid`` marks usable window centres.

    Every window ``k`` adds ``delta_ab - (1 + e_a^T Delta_k e_b) / |w|`` to the entry of
    its pixels ``k + a`` and ``k + b``, with ``e_a = I_{k+a} - mu_k``. Computing the
    centred colours ``e_a`` first keeps every term O(1), so the coefficients can later
    be used in float32 (the factorised box-filter form cancels terms of size 1/eps).
    """
    c, h, w = image.shape
    r = radius
    n_win = (2 * r + 1) ** 2
    mu = _box(image, r) / n_win
    centred = [shift(image, dy, dx) - mu for dy, dx in stencil_offsets(r)]  # e_a, at window k
    cov = torch.empty((c, c, h, w), dtype=image.dtype, device=image.device)
    for i in range(c):  # (C, C, H, W), symmetric: each entry once, no (C, C) temporaries
        for j in range(i, c):
            v = centred[0][i] * centred[0][j]
            for e in centred[1:]:
                v.addcmul_(e[i], e[j])
            cov[i, j] = v
            cov[j, i] = v
    cov /= n_win
    eye = torch.eye(c, dtype=image.dtype, device=image.device)
    cov = cov.permute(2, 3, 0, 1) + (eps / n_win) * eye
    cov[valid == 0] = eye  # windows sticking out of the array are not used
    # Contiguous (C, C, H, W): the products below on a permuted view were half the time.
    delta = torch.linalg.inv(cov).permute(2, 3, 0, 1).contiguous()
    projected = []  # Delta_k e_b, channel by channel (no (C, C, H, W) temporaries)
    for e in centred:
        p = delta[:, 0] * e[0]
        for j in range(1, c):
            p.addcmul_(delta[:, j], e[j])
        projected.append(p)
    offsets = stencil_offsets(2 * r)
    index = {d: i for i, d in enumerate(offsets)}
    coef = torch.zeros((len(offsets), h, w), dtype=image.dtype, device=image.device)
    window = stencil_offsets(r)
    for a, (ay, ax) in enumerate(window):
        for b in range(a, len(window)):
            by, bx = window[b]
            v = centred[a][0] * projected[b][0]  # = e_b^T Delta e_a too: Delta is symmetric
            for i in range(1, c):
                v.addcmul_(centred[a][i], projected[b][i])
            term = v.add_(1).mul_(-1.0 / n_win)  # delta_ab - (1 + v) / |w|, at window k
            if a == b:
                term += 1.0
            term *= valid
            # row k + a, column (k + a) + (b - a); and, by symmetry, row k + b, column k + a
            _add_shifted(coef[index[(by - ay, bx - ax)]], term, ay, ax)
            if b != a:
                _add_shifted(coef[index[(ay - by, ax - bx)]], term, by, bx)
    return coef


def _add_shifted(out: torch.Tensor, x: torch.Tensor, dy: int, dx: int) -> None:
    """``out[i, j] += x[i - dy, j - dx]`` where that lies inside (``+= shift(x, -dy, -dx)``
    without the zero-filled copy)."""
    h, w = x.shape[-2:]
    yd, ys = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xd, xs = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[..., yd, xd] += x[..., ys, xs]


def laplacian_product(image: np.ndarray, p: np.ndarray, *, radius: int = 1, eps: float = 1e-7):
    """``L @ p`` for the closed-form matting Laplacian of ``image`` (for tests and experts).

    Parameters
    ----------
    image : (H, W, C) array of float in [0, 1]
    p : (H, W) array of float
    """
    im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0)), dtype=torch.float64)
    return _cf_stencil(im, radius, eps)(torch.as_tensor(p, dtype=torch.float64)).numpy()


def _pcg(
    op: Stencil,
    x: torch.Tensor,
    unknown: torch.Tensor,
    maxiter: int,
    tol: float,
    prior: float = 0.0,
    target: torch.Tensor | None = None,
    *,
    precond: str = "mg",
    image: torch.Tensor | None = None,
):
    """Solve ``L_UU x_U = -L_UK x_K`` by preconditioned CG; ``x`` holds both.

    With ``prior > 0``: ``(L_UU + prior I) x_U = -L_UK x_K + prior target_U``, i.e. the
    closed-form energy plus ``prior * |x - target|^2`` over the unknown pixels.
    ``precond``: ``"sa"`` (:class:`._aggregation.SmoothedAggregation`; ``image`` holds
    the colours of the same grid) or ``"mg"`` (:class:`._stencil.Multigrid`).
    """
    u = unknown.to(x.dtype)
    b = -op(x * (1 - u)) * u
    if prior > 0:
        b = b + prior * target.to(x.dtype) * u
        op.coef[op.center] += prior  # before the multigrid set-up, so it sees it too
    a_uu = restrict_to_unknown(op, unknown)  # in place: op is not used again
    m = SmoothedAggregation(a_uu, unknown, image) if precond == "sa" else Multigrid(a_uu)
    y, it = cg(a_uu, lambda r: m(r) * u, b, x * u, maxiter, tol)
    return x * (1 - u) + y * u, it


def solve_closed_form(
    image: torch.Tensor,
    trimap: torch.Tensor,
    init: torch.Tensor | None = None,
    *,
    radius: int = 1,
    eps: float = 1e-7,
    maxiter: int = 1000,
    tol: float = 1e-5,
    dtype=torch.float32,
    cascade: int | None = None,
    precond: str = "sa",
) -> torch.Tensor:
    """Closed-form alpha of one whole image.

    Parameters
    ----------
    image : (C, H, W) tensor of float in [0, 1]
    trimap : (H, W) tensor of uint8 in {0, 128, 255}
    init : (H, W) tensor, optional
        Initial alpha of the unknown pixels (default 0.5, or the cascade's guess).
    radius, eps : int, float
        Window radius and regularisation of the colour-line model.
    maxiter, tol : int, float
        Preconditioned CG stops when the residual drops below ``tol`` times the
        right-hand side, or after ``maxiter`` iterations.
    dtype : torch dtype
        Working precision of the solve (the stencil is always built in float64).
    cascade : int, optional
        Number of coarser problems solved first (each halving the size, area-averaged
        image, a cell known only where all of its pixels are) whose upsampled alpha is
        the initial guess of the next finer one. Default: as many as keep the coarsest
        one above ``CASCADE_MIN_UNKNOWN`` unknown pixels with ``precond="mg"``, none with
        ``"sa"`` (its iteration count hardly depends on the start). Ignored when ``init``
        is given.
    precond : {"sa", "mg"}
        Preconditioner: smoothed aggregation with a colour-aware coarse space, or
        piecewise-constant multigrid (see :func:`_pcg`).

    Returns
    -------
    alpha : (H, W) tensor of ``dtype`` in [0, 1]

    Notes
    -----
    Only the bounding box of the unknown pixels grown by ``2 radius`` is solved: every
    window touching an unknown pixel lies inside it, so the result is the same as for
    the whole array.
    """
    _check_precond(precond, ("sa", "mg"))
    unknown = trimap == UNKNOWN
    x = (trimap == FOREGROUND).to(dtype)
    n_unknown = int(unknown.sum())
    if n_unknown == 0:
        return x
    if init is None:
        if cascade is None:
            cascade = 0
            while precond == "mg" and n_unknown >> (2 * (cascade + 1)) >= CASCADE_MIN_UNKNOWN:
                cascade += 1
        if cascade > 0 and min(trimap.shape) >= 8 * (2 * radius + 1):
            init = _cascade_guess(
                image,
                trimap,
                radius=radius,
                eps=eps,
                maxiter=maxiter,
                tol=tol * CASCADE_TOL_FACTOR,
                dtype=dtype,
                cascade=cascade - 1,
                precond=precond,
            )
    if init is not None:
        x = torch.where(unknown, init.to(dtype), x)
    else:
        x[unknown] = 0.5
    box = crop_to_unknown(unknown.cpu().numpy(), 2 * radius)
    xb, _ = _pcg(
        _cf_stencil(
            image[:, box[0], box[1]], radius, eps, dtype=dtype, rows=unknown[box].cpu().numpy()
        ),
        x[box].contiguous(),
        unknown[box],
        maxiter,
        tol,
        precond=precond,
        image=image[:, box[0], box[1]],
    )
    x[box] = xb
    return x.clamp_(0, 1)


#: The cascade stops halving once the next coarser problem would have fewer unknown
#: pixels than this (below it one multigrid-CG solve is cheap anyway).
CASCADE_MIN_UNKNOWN = 40_000
#: Tolerance of the cascade's coarse solves relative to ``tol``. Looser guesses cost
#: fine iterations and quality (GT13 lowres: factor 10 gave SAD 19.0, factor 1 18.1,
#: no cascade 19.2, PyMatting 18.7; docs/engine.md).
CASCADE_TOL_FACTOR = 1.0


def _cascade_guess(image, trimap, *, cascade, **solve):
    """Solve the half-size problem and upsample its alpha (bilinear) to ``trimap``'s size."""
    h, w = trimap.shape
    pad = (0, w % 2, 0, h % 2)
    small = F.avg_pool2d(F.pad(image[None], pad, mode="replicate"), 2)[0]
    known = torch.stack([trimap == FOREGROUND, trimap != UNKNOWN]).to(torch.float32)
    known = F.avg_pool2d(F.pad(known[None], pad, mode="replicate"), 2)[0]
    fg, kn = known[0], known[1]
    small_trimap = torch.full(fg.shape, UNKNOWN, dtype=torch.uint8, device=trimap.device)
    small_trimap[(kn >= 1) & (fg >= 1)] = FOREGROUND
    small_trimap[(kn >= 1) & (fg <= 0)] = 0
    alpha = solve_closed_form(small.to(image.dtype), small_trimap, cascade=cascade, **solve)
    up = F.interpolate(alpha[None, None].float(), scale_factor=2, mode="bilinear")
    return up[0, 0, :h, :w]


def _check_precond(precond, allowed):
    if precond not in allowed:
        raise ValueError(f"precond must be one of {list(allowed)}, got {precond!r}")


class ClosedFormModel:
    """Closed-form matting (Levin et al. 2008) solved matrix-free with PCG in torch.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already resolved by ``get_model``).
    radius : int
        Window radius ``r`` of the local colour-line model (window ``(2r+1)^2``).
    eps : float
        Regularisation epsilon of the colour-line model (PyMatting's default, 1e-7).
    maxiter, tol : int, float
        Preconditioned CG limits per solve (relative residual ``tol``, default 3e-5).
        The blocks start from the global alpha with it as a prior: at 3e-5 they end
        within 0.004 of a 1e-6 solve (mean 1e-5) on a 5 MP dev composite, SAD unchanged
        (docs/engine.md, "Whole process at 5-8 MP").
    global_tol : float, optional
        Relative residual of the global pass's whole-image solve (``solve_closed_form``);
        default ``tol``: 3e-5 matched PyMatting's SAD on the dev photos (docs/engine.md,
        "Performance").
    precond : {"sa", "mg"}
        Preconditioner of CG. ``"sa"`` (default): smoothed aggregation whose coarse space
        carries the colour channels as well as the constant (the local near-null space of
        the matting Laplacian, ``alpha = a . I + b``), so the iteration count stays small
        on textured images; its set-up (a sparse matrix, a direct factor of the coarsest
        level) costs some time and memory up front. ``"mg"``: piecewise-constant 2 x 2
        multigrid, no set-up to speak of, but many more iterations (docs/engine.md,
        "Colour-aware coarse spaces").
    dtype : {"float32", "float64"}
        Working precision of CG (the stencil is built in float64 either way).
    prior : float
        Weight ``lambda`` of the global alpha as a soft prior in the patch pass: each
        block minimises ``a^T L a + lambda |a - a_global|^2`` over its unknown pixels
        (a screened problem: the global alpha decides structure larger than about
        ``1 / sqrt(lambda)`` pixels, the full-resolution Laplacian the finer detail).
        The default, 1e-3 (about 30 px), was chosen on semi-synthetic 6-8 MP composites
        of dev images at the engine's default downsampling (factor 3), see
        docs/benchmarks.md; 0 solves the plain closed-form problem in each block, with
        the global alpha only as initial guess and border condition. Unused in the
        global pass.
    cut_edge : {"free", "pinned"} or None
        What a patch-pass block does at its cuts (its sides inside the image).
        ``"free"`` (needs ``prior > 0``): nothing, windows beyond the cut are left out and
        the prior carries the global alpha. ``"pinned"``: the outermost ring of unknown
        pixels is a Dirichlet condition at the global alpha. The pinned ring forces the
        global alpha's error (up to ~0.3 on strands at factor 3) onto the block's edge,
        from where it decays over ~10-20 px into the kept pixels; the free edge makes
        seams 2-4x smaller at the same overlap for a few per cent more CG iterations
        (docs/engine.md, "Seams"). Default ``None``: ``"free"`` when ``prior > 0``,
        ``"pinned"`` with ``prior=0`` (a free edge needs the prior).
    trim : {"none", "patch"}
        Trimap trimming before every solve (Aksoy et al. 2017's patch-based trimming,
        :mod:`._trim`, shared with ``"ifm"``): confident unknown pixels become known.
        Default ``"none"`` (docs/benchmarks.md, "Trimap trimming for cf").
    trim_close, trim_far, trim_search, trim_reg : float, float, int, float
        The trimming's thresholds, search half-size and patch covariance regulariser,
        meaning as for ``"ifm"`` (defaults 0.25, 0.9, 40, 1e-4; ``"ifm"``'s
        ``trim_search`` default is 20).
    """

    name = "cf"

    def __init__(
        self,
        device="cpu",
        radius=1,
        eps=1e-7,
        maxiter=1000,
        tol=3e-5,
        dtype="float32",
        prior=1e-3,
        global_tol=None,
        precond="sa",
        trim="none",
        trim_close=0.25,
        trim_far=0.9,
        trim_search=40,
        trim_reg=1e-4,
        cut_edge=None,
    ):
        self.device = torch.device(device)
        self.radius, self.eps, self.maxiter, self.tol = int(radius), float(eps), maxiter, tol
        self.global_tol = float(tol) if global_tol is None else float(global_tol)
        self.dtype = getattr(torch, dtype)
        if not float(prior) >= 0:
            raise ValueError(f"prior must be 0 or more, got {prior!r}")
        self.prior = float(prior)
        if cut_edge is None:
            cut_edge = "free" if self.prior > 0 else "pinned"
        if cut_edge not in ("free", "pinned") or (cut_edge == "free" and self.prior == 0):
            raise ValueError(
                f"cut_edge must be 'free' (needs prior > 0) or 'pinned', got {cut_edge!r}"
            )
        self.cut_edge = cut_edge
        _check_precond(precond, ("sa", "mg"))
        self.precond = precond
        self.trim_opts = check_trim_options(trim, trim_close, trim_far, trim_search, trim_reg)

    def _trimmed(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """``trimap`` after trimming (a copy); unchanged with ``trim="none"``."""
        return trim_array(image, trimap, self.trim_opts, self.device)

    def _tensors(self, image: np.ndarray, trimap: np.ndarray):
        im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        return (
            im.to(device=self.device, dtype=torch.float64),
            torch.as_tensor(np.ascontiguousarray(trimap)).to(self.device),
        )

    def global_alpha(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        trimap = self._trimmed(image, np.asarray(trimap, dtype=np.uint8))
        im, t = self._tensors(image, trimap)
        alpha = solve_closed_form(
            im,
            t,
            radius=self.radius,
            eps=self.eps,
            maxiter=self.maxiter,
            tol=self.global_tol,
            dtype=self.dtype,
            precond=self.precond,
        )
        return alpha.float().cpu().numpy()

    def refine(self, image, trimap, coarse, fixed_border=(False, False, False, False)):
        trimap = np.array(trimap, dtype=np.uint8)  # a copy: the border ring is edited below
        # Trimming first, so that the pinned ring below is not taken for known pixels.
        trimap = self._trimmed(image, trimap)
        alpha = np.where(trimap == UNKNOWN, coarse, trimap / 255.0).astype(np.float64)
        if self.cut_edge == "pinned":
            # Interior cuts: the outermost ring of unknown pixels takes the global alpha as
            # a Dirichlet condition, which is how the block hears about the rest of the image.
            ring = cut_ring(trimap.shape, fixed_border) & (trimap == UNKNOWN)
            trimap[ring] = FOREGROUND  # "known", with the value taken from `alpha` below
        # "free": no condition on the cut; the prior (the global alpha) is how the block
        # hears about the rest of the image, and windows beyond the cut are left out.
        unknown = trimap == UNKNOWN
        box = crop_to_unknown(unknown, 2 * self.radius)
        if box is None:
            return alpha.astype(np.float32)
        sub = unknown[box]
        if self.device.type == "cpu" and use_sparse(int(sub.sum()), sub.size):
            # A thin band across the block: solve its pixels only (exact, see _sparse_cf).
            x = solve_sparse(
                image[box], sub, alpha[box], radius=self.radius, eps=self.eps,
                prior=self.prior, target=alpha[box],
            )  # fmt: skip
            alpha[box] = np.clip(x, 0, 1)
            return alpha.astype(np.float32)
        im, t = self._tensors(image[box], trimap[box])
        init = torch.as_tensor(alpha[box], dtype=self.dtype, device=self.device)
        # Known pixels (0, 1 or the pinned ring) keep their values in `init`.
        x, _ = _pcg(
            _cf_stencil(im, self.radius, self.eps, dtype=self.dtype, rows=unknown[box]),
            init.to(self.dtype),
            t == UNKNOWN,
            self.maxiter,
            self.tol,
            prior=self.prior,
            target=init,
            precond=self.precond,
            image=im,
        )
        alpha[box] = x.clamp_(0, 1).cpu().numpy()
        return alpha.astype(np.float32)

    def update_global(self, image, trimap, alpha, box) -> np.ndarray:
        """The global alpha after an edit inside ``box``: re-solved there, kept elsewhere.

        ``alpha`` (the previous global alpha) outside ``box`` and on its interior edge
        ring is a Dirichlet condition; inside, the previous alpha warm-starts CG. No
        prior (this is the global problem). Used by run stores after a local trimap edit.
        """
        rows, cols = box
        h, w = trimap.shape
        # Trimmed on the box grown by the trimming's reach: the same labels as whole-image
        # trimming inside the box.
        r = trim_reach(self.trim_opts)
        grown = (
            slice(max(rows.start - r, 0), min(rows.stop + r, h)),
            slice(max(cols.start - r, 0), min(cols.stop + r, w)),
        )
        inner = (
            slice(rows.start - grown[0].start, rows.stop - grown[0].start),
            slice(cols.start - grown[1].start, cols.stop - grown[1].start),
        )
        sub = self._trimmed(image[grown], np.array(trimap[grown], dtype=np.uint8))[inner]
        sub = np.array(sub, dtype=np.uint8)
        unknown = sub == UNKNOWN
        init = np.where(unknown, alpha[box], sub / 255.0)
        ring = cut_ring(sub.shape, (rows.start > 0, rows.stop < h, cols.start > 0, cols.stop < w))
        sub[ring & unknown] = FOREGROUND  # "known", its value taken from `init`
        out = np.array(alpha, np.float32)
        if not (sub == UNKNOWN).any():
            out[box] = init
            return out
        im, t = self._tensors(image[box], sub)
        x0 = torch.as_tensor(init, dtype=self.dtype, device=self.device)
        stencil = _cf_stencil(im, self.radius, self.eps, dtype=self.dtype, rows=sub == UNKNOWN)
        x, _ = _pcg(
            stencil,
            x0,
            t == UNKNOWN,
            self.maxiter,
            self.global_tol,
            precond=self.precond,
            image=im,
        )
        out[box] = x.clamp_(0, 1).cpu().numpy()
        return out

    def global_reach(self) -> int | None:
        """How far (in pixels of the global problem) the global solve reads the image
        around the pixels the small trimap leaves unknown: the windows touching them
        (``2r``) plus the trimming's reach. None (read it all) with ``precond="mg"``,
        whose coarse-to-fine cascade averages the image farther out."""
        if self.precond != "sa":
            return None
        return 2 * self.radius + trim_reach(self.trim_opts)

    def overlap(self, factor: int) -> int:
        """Overlap for seam-free stitching, derived from the solver's reach.

        A block's edge sees the global alpha (through the prior, or as a pinned ring),
        which is only accurate to about one low-resolution pixel (``factor`` full-resolution
        pixels); an edge error decays into a Laplace-type solution over a few times its own
        wavelength, so we keep ``4 * factor`` pixels plus the window support ``2r`` in the
        trimmed margin (checked by the chunked-vs-whole tests; measured on full-resolution
        crops in docs/engine.md, "Seams"). With ``trim`` on, the labels of those pixels
        depend on the image ``trim_search + 1`` pixels farther.
        """
        reach = 2 * self.radius + trim_reach(self.trim_opts)
        return int(8 * math.ceil((4 * max(factor, 1) + reach) / 8))
