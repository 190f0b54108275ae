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
(Dirichlet): we solve ``L_UU alpha_U = -L_UK alpha_K`` with Jacobi-preconditioned
conjugate gradients, warm-started from a coarser solution.

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

from ..trimap import BACKGROUND, FOREGROUND, UNKNOWN

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


class _Laplacian:
    """Matrix-free closed-form matting Laplacian of one image (C, H, W), float64."""

    def __init__(self, image: torch.Tensor, radius: int, eps: float):
        c, h, w = image.shape
        r = radius
        n_win = (2 * r + 1) ** 2
        self.image, self.r, self.n_win = image, r, n_win
        valid = torch.zeros((h, w), dtype=image.dtype, device=image.device)
        if h > 2 * r and w > 2 * r:
            valid[r : h - r, r : w - r] = 1
        self.valid = valid
        mu = _box(image, r) / n_win
        outer = (image[:, None] * image[None, :]).reshape(c * c, h, w)
        cov = _box(outer, r).reshape(c, c, h, w) / n_win - mu[:, None] * mu[None, :]
        eye = torch.eye(c, dtype=image.dtype, device=image.device)
        cov = cov.permute(2, 3, 0, 1) + (eps / n_win) * eye
        # Invalid window centres get an identity covariance (harmless) and are masked.
        cov[valid == 0] = eye
        delta = torch.linalg.inv(cov).permute(2, 3, 0, 1) * valid  # (C, C, H, W)
        self.mu, self.delta = mu, delta
        self.count = _box(valid[None], r)[0]  # n_i: windows containing pixel i

    def diagonal(self) -> torch.Tensor:
        """``L_ii``, for the Jacobi preconditioner."""
        im, mu, delta, r, n = self.image, self.mu, self.delta, self.r, self.n_win
        dmu = torch.einsum("ijhw,jhw->ihw", delta, mu)
        mdm = (mu * dmu).sum(0, keepdim=True)
        c = im.shape[0]
        sums = _box(torch.cat([delta.reshape(c * c, *im.shape[1:]), dmu, mdm]), r)
        s_delta = sums[: c * c].reshape(c, c, *im.shape[1:])
        s_dmu, s_mdm = sums[c * c : c * c + c], sums[-1]
        quad = torch.einsum("ihw,ijhw,jhw->hw", im, s_delta, im) - 2 * (im * s_dmu).sum(0) + s_mdm
        return self.count - (self.count + quad) / n

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        im, r, n = self.image, self.r, self.n_win
        c = im.shape[0]
        means = _box(torch.cat([p[None], im * p]), r) / n
        p_bar, ip_bar = means[0], means[1:]
        a = torch.einsum("ijhw,jhw->ihw", self.delta, ip_bar - self.mu * p_bar)
        b = (p_bar - (a * self.mu).sum(0)) * self.valid
        sums = _box(torch.cat([a, b[None]]), r)
        return self.count * p - (sums[:c] * im).sum(0) - sums[c]


def laplacian_product(image: np.ndarray, p: np.ndarray, *, radius: int = 1, eps: float = 1e-7):
    """``L @ p`` for the closed-form matting Laplacian of ``image`` (for tests and experts).

    Parameters
    ----------
    image : (H, W, C) array of float in [0, 1]
    p : (H, W) array of float
    """
    im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0)), dtype=torch.float64)
    return _Laplacian(im, radius, eps)(torch.as_tensor(p, dtype=torch.float64)).numpy()


def _pcg(op: _Laplacian, x: torch.Tensor, unknown: torch.Tensor, maxiter: int, tol: float):
    """Jacobi-preconditioned CG on the unknown pixels; known pixels of ``x`` stay fixed."""
    u = unknown.to(x.dtype)
    # Right-hand side -L_UK x_K, used only for the relative stopping criterion.
    b_norm = torch.linalg.vector_norm(op(x * (1 - u)) * u)
    res = -op(x) * u
    diag = op.diagonal()
    m_inv = torch.where((u > 0) & (diag > 0), 1.0 / diag.clamp_min(1e-30), torch.zeros_like(diag))
    z = m_inv * res
    p = z.clone()
    rz = (res * z).sum()
    threshold = tol * max(float(b_norm), 1e-30)
    it = 0
    for it in range(1, maxiter + 1):  # noqa: B007 - the count is reported
        ap = op(p) * u
        pap = (p * ap).sum()
        if pap <= 0:
            break
        step = rz / pap
        x = x + step * p
        res = res - step * ap
        if float(torch.linalg.vector_norm(res)) <= threshold:
            break
        z = m_inv * res
        rz_new = (res * z).sum()
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it


def _pool_trimap(t: torch.Tensor) -> torch.Tensor:
    """Halve a trimap: known only where all four children agree."""
    fg = (t == FOREGROUND).to(torch.float64)[None, None]
    bg = (t == BACKGROUND).to(torch.float64)[None, None]
    fg = F.avg_pool2d(fg, 2, ceil_mode=True)[0, 0]
    bg = F.avg_pool2d(bg, 2, ceil_mode=True)[0, 0]
    out = torch.full(fg.shape, UNKNOWN, dtype=torch.uint8, device=t.device)
    out[fg >= 1] = FOREGROUND
    out[bg >= 1] = BACKGROUND
    return out


def solve_closed_form(
    image: torch.Tensor,
    trimap: torch.Tensor,
    init: torch.Tensor | None = None,
    *,
    radius: int = 1,
    eps: float = 1e-7,
    maxiter: int = 2000,
    tol: float = 1e-6,
    coarsest: int = 32,
) -> torch.Tensor:
    """Closed-form alpha of one image, coarse-to-fine when no initial guess is given.

    Parameters
    ----------
    image : (C, H, W) float64 tensor in [0, 1]
    trimap : (H, W) uint8 tensor in {0, 128, 255}
    init : (H, W) float64 tensor, optional
        Initial alpha for the unknown pixels. Without it, the problem is first solved
        on a 2x smaller copy (recursively, down to ``coarsest`` pixels) and upsampled:
        CG then only has to fix high frequencies, which it does fast.

    Returns
    -------
    alpha : (H, W) float64 tensor in [0, 1]
    """
    h, w = trimap.shape
    unknown = trimap == UNKNOWN
    known = trimap == FOREGROUND
    if init is None:
        if min(h, w) >= 2 * coarsest:
            small = F.avg_pool2d(image[None], 2, ceil_mode=True)[0]
            small_t = _pool_trimap(trimap)
            if (small_t != UNKNOWN).any():
                coarse = solve_closed_form(
                    small,
                    small_t,
                    radius=radius,
                    eps=eps,
                    maxiter=maxiter,
                    tol=tol,
                    coarsest=coarsest,
                )
                init = F.interpolate(
                    coarse[None, None], size=(h, w), mode="bilinear", align_corners=False
                )[0, 0]
        if init is None:
            init = torch.full((h, w), 0.5, dtype=image.dtype, device=image.device)
    x = torch.where(unknown, init.to(image.dtype), known.to(image.dtype))
    if unknown.any():
        x, _ = _pcg(_Laplacian(image, radius, eps), x, unknown, maxiter, tol)
    return x.clamp_(0, 1)


def _crop_to_unknown(unknown: np.ndarray, margin: int):
    """Bounding box of the unknown pixels grown by ``margin`` (slices), or None."""
    rows = np.flatnonzero(unknown.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(unknown.any(0))
    h, w = unknown.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)),
    )


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
        Conjugate-gradient limits per solve (relative residual ``tol``).
    """

    name = "cf"

    def __init__(self, device="cpu", radius=1, eps=1e-7, maxiter=2000, tol=1e-6):
        self.device = torch.device(device)
        self.radius, self.eps, self.maxiter, self.tol = int(radius), float(eps), maxiter, tol
        self.dtype = torch.float64

    def _tensors(self, image: np.ndarray, trimap: np.ndarray):
        im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        return (
            im.to(device=self.device, dtype=self.dtype),
            torch.as_tensor(np.ascontiguousarray(trimap)).to(self.device),
        )

    def global_alpha(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        im, t = self._tensors(image, trimap)
        alpha = solve_closed_form(
            im, t, radius=self.radius, eps=self.eps, maxiter=self.maxiter, tol=self.tol
        )
        return alpha.float().cpu().numpy()

    def refine(self, image, trimap, coarse, fixed_border=(False, False, False, False)):
        trimap = np.array(trimap, dtype=np.uint8)  # a copy: the border ring is edited below
        # Interior cuts: the outermost ring of unknown pixels takes the global alpha as a
        # Dirichlet condition, which is how the block hears about the rest of the image.
        top, bottom, left, right = fixed_border
        ring = np.zeros(trimap.shape, bool)
        ring[0, :] |= top
        ring[-1, :] |= bottom
        ring[:, 0] |= left
        ring[:, -1] |= right
        alpha = np.where(trimap == UNKNOWN, coarse, trimap / 255.0).astype(np.float64)
        ring &= trimap == UNKNOWN
        trimap[ring] = FOREGROUND  # "known", with the value taken from `alpha` below
        unknown = trimap == UNKNOWN
        box = _crop_to_unknown(unknown, 2 * self.radius)
        if box is None:
            return alpha.astype(np.float32)
        im, t = self._tensors(image[box], trimap[box])
        init = torch.as_tensor(alpha[box], dtype=self.dtype, device=self.device)
        # Known pixels (0, 1 or the pinned ring) keep their values in `init`.
        x, _ = _pcg(
            _Laplacian(im, self.radius, self.eps), init, t == UNKNOWN, self.maxiter, self.tol
        )
        alpha[box] = x.clamp_(0, 1).cpu().numpy()
        return alpha.astype(np.float32)

    def overlap(self, factor: int) -> int:
        """Overlap for seam-free stitching, derived from the solver's reach.

        A block's edge ring is pinned to the global alpha, which is only accurate to
        about one low-resolution pixel (``factor`` full-resolution pixels); the error of a
        Dirichlet condition decays into a Laplace-type solution over a few times its own
        wavelength, so we keep ``4 * factor`` pixels plus the window support ``2r`` in the
        trimmed margin (checked by the chunked-vs-whole test).
        """
        return int(8 * math.ceil((4 * max(factor, 1) + 2 * self.radius) / 8))
