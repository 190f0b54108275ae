"""Closed-form matting on the unknown pixels only: a sparse direct solve for thin bands.

The stencil path of :mod:`.closed_form` works on the bounding box of a block's unknown
pixels. When the unknown pixels are a thin band crossing the block (the usual trimap of a
huge image: a few pixels around an object's edge), that box is almost the whole block
while the unknown pixels are 1-2 % of it, and building the 25 coefficient images, the
preconditioner and every CG vector over the box costs ~100x the work that matters.

Here only the windows that touch an unknown pixel are visited (gathered, not strided):
their centred colours, regularised covariances and the ``(2r+1)^2 x (2r+1)^2`` window
matrices give the entries of ``L_UU`` (kept as a sparse matrix over the unknown pixels)
and of ``L_UK x_K`` (folded into the right-hand side). The system

    (L_UU + prior I) x_U = -L_UK x_K + prior target_U

is then solved directly (SuperLU). The matrix is the same as the stencil path's (the same
windows, the same per-window terms, built in float64), so the result is the stencil
path's converged solution: the two differ by the stencil path's CG tolerance.

A thin band is a quasi one-dimensional graph, so the factor stays sparse; wide unknown
regions fill in, which is why :func:`use_sparse` keeps this path to few, sparsely spread
unknown pixels (the stencil path with its multigrid preconditioner is the one for those).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

__all__ = ["SPARSE_MAX_FILL", "SPARSE_MAX_UNKNOWN", "solve_sparse", "use_sparse"]

#: Largest number of unknown pixels solved by the sparse direct path. A ring of unknown
#: pixels in a 1296 x 1296 block (docs/engine.md): 12 px thick (30 k pixels) 0.87 s and
#: 550 MB peak against the stencil path's 2.36 s and 553 MB; 20 px thick (50 k pixels)
#: 2.48 s and 783 MB against 3.74 s and 596 MB: above ~30 k the factor's fill costs more
#: memory than the stencil path.
SPARSE_MAX_UNKNOWN = 32_000
#: Largest fraction of the unknown pixels' bounding box that they may fill for the sparse
#: path (above it the box is mostly unknown and the stencil path wastes little).
SPARSE_MAX_FILL = 0.15


def use_sparse(n_unknown: int, box_area: int) -> bool:
    """Whether a solve of ``n_unknown`` pixels in a box of ``box_area`` takes this path."""
    return 0 < n_unknown <= SPARSE_MAX_UNKNOWN and n_unknown <= SPARSE_MAX_FILL * box_area


def _window_terms(colours: np.ndarray, eps: float) -> np.ndarray:
    """Per-window matrices ``delta_ab - (1 + e_a^T Delta e_b) / |w|`` (float64).

    ``colours`` is ``(windows, |w|, C)``; ``e`` the colours centred on the window mean,
    ``Delta`` the inverse of the window covariance plus ``eps / |w|`` (as the stencil).
    """
    n_win = colours.shape[1]
    c = colours.shape[2]
    e = colours - colours.mean(axis=1, keepdims=True)
    cov = np.einsum("kac,kad->kcd", e, e) / n_win + (eps / n_win) * np.eye(c)
    delta = np.linalg.inv(cov)
    v = np.einsum("kac,kcd,kbd->kab", e, delta, e, optimize=True)
    return np.eye(n_win) - (1.0 + v) / n_win


def solve_sparse(
    image: np.ndarray,
    unknown: np.ndarray,
    x: np.ndarray,
    *,
    radius: int,
    eps: float,
    prior: float = 0.0,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """Alpha of the unknown pixels (a copy of ``x`` with them solved).

    Parameters
    ----------
    image : (H, W, C) array of float in [0, 1]
    unknown : (H, W) bool array
        Pixels to solve; every other pixel is a Dirichlet condition with its value in ``x``.
    x : (H, W) array of float
        Known values (the unknown pixels' values are ignored).
    radius, eps : int, float
        Window radius and regularisation of the colour-line model. Only windows lying
        entirely inside the array are used, as in the stencil path.
    prior, target : float, (H, W) array
        Soft prior ``prior * |x_U - target_U|^2`` added to the energy.

    Returns
    -------
    alpha : (H, W) array of float64 (not clipped)
    """
    h, w = unknown.shape
    r = int(radius)
    side = 2 * r + 1
    out = np.array(x, dtype=np.float64)
    flat_u = np.flatnonzero(unknown.reshape(-1))
    n = flat_u.size
    if n == 0:
        return out
    # Window centres whose window touches an unknown pixel and lies inside the array.
    centres = ndimage.binary_dilation(unknown, structure=np.ones((side, side), bool))
    inside = np.zeros((h, w), bool)
    inside[r : h - r, r : w - r] = True
    k = np.flatnonzero((centres & inside).reshape(-1))
    offsets = np.array([dy * w + dx for dy in range(-r, r + 1) for dx in range(-r, r + 1)])
    pix = k[:, None] + offsets[None, :]  # (windows, |w|) flat pixel indices
    img = np.ascontiguousarray(image).reshape(h * w, -1)
    terms = _window_terms(img[pix].astype(np.float64), eps)  # (windows, |w|, |w|)
    ids = np.full(h * w, -1, dtype=np.int64)
    ids[flat_u] = np.arange(n)
    rows = np.broadcast_to(ids[pix][:, :, None], terms.shape)
    cols_pix = np.broadcast_to(pix[:, None, :], terms.shape)
    keep = rows >= 0  # rows of unknown pixels only
    rows, cols_pix, vals = rows[keep], cols_pix[keep], terms[keep]
    cols = ids[cols_pix]
    uu = cols >= 0
    a = sp.csc_matrix((vals[uu], (rows[uu], cols[uu])), shape=(n, n))
    b = -np.bincount(rows[~uu], weights=vals[~uu] * out.reshape(-1)[cols_pix[~uu]], minlength=n)
    if prior > 0:
        a = a + prior * sp.identity(n, format="csc")
        b = b + prior * np.asarray(target, np.float64).reshape(-1)[flat_u]
    lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A")
    out.reshape(-1)[flat_u] = lu.solve(b)
    return out
