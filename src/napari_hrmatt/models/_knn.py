"""Windowed k-nearest-neighbour search and locally-linear-embedding weights, in torch.

Used by the information-flow model (:mod:`.ifm`). Neighbours of a pixel are searched in a
feature space (colour plus scaled position) but only among the pixels of a
``(2R+1) x (2R+1)`` window around it: the candidate set of a pixel then depends on the
image within ``R`` pixels only, never on how the image was cut into blocks, which is
what lets a block grown by at least ``R`` reproduce the rows of a whole-image solve.

On CPU tensors both functions run numba kernels (:mod:`._ifm_kernels`, imported on first
use): per query, a loop over the window's candidates keeping the ``k`` best in a sorted
buffer (float64 distances, ties to the earlier pixel in row-major order); per query, a
C x C solve (the Woodbury form of the LLE system). On CUDA (or with ``backend="torch"``,
which the tests use to keep that path tested on CPU) the search is tiled brute force in
torch: queries are taken ``tile x tile`` at a time against the candidates of the tile
grown by ``R``, so memory is ``O(tile^2 (tile + 2R)^2)`` whatever the image size, and the
work is dense matrix products and ``topk``. Both give the same neighbours up to
near-ties (the torch product form rounds distances in float32) and the same weights up
to rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from .._kernel_choice import numba_wanted

__all__ = ["window_knn", "cm_uu_knn", "lle_weights", "use_numba"]

#: ``"auto"``: numba kernels for CPU tensors, torch for CUDA; ``"torch"``: torch always.
#: The default follows ``HRMATT_KERNELS`` (:mod:`.._kernel_choice`).
BACKEND = "auto" if numba_wanted() else "torch"


def use_numba(t: torch.Tensor, backend: str | None = None) -> bool:
    """Whether the numba kernels serve tensor ``t`` (CPU, and the backend not "torch")."""
    backend = BACKEND if backend is None else backend
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend must be 'auto' or 'torch', got {backend!r}")
    return backend == "auto" and t.device.type == "cpu"


def window_knn(
    feat: torch.Tensor,
    query: torch.Tensor,
    candidate: torch.Tensor | list[torch.Tensor],
    k: int,
    radius: int,
    *,
    tile: int = 8,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``k`` nearest candidates of every query pixel within a square window.

    Parameters
    ----------
    feat : (D, H, W) tensor of float
        Feature vector of every pixel.
    query : (H, W) tensor of bool
        Pixels to find neighbours for.
    candidate : (H, W) tensor of bool, or a list of them
        Pixels that may be neighbours (a pixel is never its own neighbour). With a list,
        one search per mask sharing the distance computation (e.g. foreground and
        background candidates) and a list of results.
    k : int
        Neighbours per query.
    radius : int
        Candidates of pixel ``(i, j)`` lie in ``|dy| <= radius`` and ``|dx| <= radius``.
    tile : int
        Queries per tile side of the torch path (memory and speed knob only: the result
        does not depend on it, up to ties in distance).
    backend : {None, "auto", "torch"}
        ``None``: the module's :data:`BACKEND`; ``"auto"``: numba on CPU tensors.

    Returns
    -------
    index : (N, k) tensor of int64
        Flat (row-major) index of each neighbour of the ``N`` query pixels (in row-major
        order), ``-1`` where fewer than ``k`` candidates lie in the window.
    dist2 : (N, k) tensor of float
        Squared feature distances, ascending; ``inf`` where ``index`` is ``-1``.
    """
    groups = candidate if isinstance(candidate, (list, tuple)) else [candidate]
    d, h, w = feat.shape
    dev = feat.device
    qpos = torch.nonzero(query.reshape(-1)).squeeze(1)
    n = qpos.numel()
    out = [
        (
            torch.full((n, k), -1, dtype=torch.int64, device=dev),
            torch.full((n, k), float("inf"), dtype=feat.dtype, device=dev),
        )
        for _ in groups
    ]
    if n == 0 or k == 0:
        return out if isinstance(candidate, (list, tuple)) else out[0]
    if use_numba(feat, backend):
        out = _window_knn_numba(feat, qpos, groups, k, radius)
        return out if isinstance(candidate, (list, tuple)) else out[0]
    flat = feat.reshape(d, -1)
    label = torch.zeros((h, w), dtype=torch.int8, device=dev)  # 1 + group of a candidate
    for g, mask in enumerate(groups):
        label[mask] = g + 1
    # Row of each query in the output: queries are numbered in row-major order.
    order = torch.full((h * w,), -1, dtype=torch.int64, device=dev)
    order[qpos] = torch.arange(n, device=dev)
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            qy, qx = torch.nonzero(query[y0:y1, x0:x1], as_tuple=True)
            if qy.numel() == 0:
                continue
            cy0, cy1 = max(y0 - radius, 0), min(y1 + radius, h)
            cx0, cx1 = max(x0 - radius, 0), min(x1 + radius, w)
            lab = label[cy0:cy1, cx0:cx1]
            qy, qx = qy.int() + y0, qx.int() + x0
            q = (qy * w + qx).long()
            fq = flat[:, q].T
            rows = order[q]
            for g, (index, dist2) in enumerate(out):
                cy, cx = torch.nonzero(lab == g + 1, as_tuple=True)
                if cy.numel() == 0:
                    continue
                cy, cx = cy.int() + cy0, cx.int() + cx0
                c = (cy * w + cx).long()
                fc = flat[:, c].T
                dd = torch.addmm((fc * fc).sum(1)[None, :], fq, fc.T, alpha=-2)
                dd += (fq * fq).sum(1)[:, None]
                dd.clamp_(min=0)
                far = (qy[:, None] - cy[None, :]).abs_() > radius
                far |= (qx[:, None] - cx[None, :]).abs_() > radius
                far |= q[:, None] == c[None, :]
                dd.masked_fill_(far, float("inf"))
                kk = min(k, c.numel())
                val, arg = torch.topk(dd, kk, dim=1, largest=False, sorted=True)
                index[rows, :kk] = torch.where(torch.isinf(val), -1, c[arg])
                dist2[rows, :kk] = val
    return out if isinstance(candidate, (list, tuple)) else out[0]


def _window_knn_numba(feat, qpos, groups, k, radius):
    from ._ifm_kernels import candidate_runs_kernel, window_knn_kernel

    d, h, w = feat.shape
    label = np.zeros((h, w), np.int8)
    for g, mask in enumerate(groups):
        label[mask.cpu().numpy()] = g + 1
    f = np.ascontiguousarray(feat.detach().cpu().numpy(), np.float32)
    n, ng = qpos.numel(), len(groups)
    index = np.full((ng, n, k), -1, np.int64)
    dist2 = np.full((ng, n, k), np.inf, np.float32)
    qp = np.ascontiguousarray(qpos.cpu().numpy(), np.int64)
    first, last = np.empty((h, w), np.int32), np.empty((h, w), np.int32)
    candidate_runs_kernel(label, first, last)
    window_knn_kernel(f, label, first, last, qp, ng, k, radius, index, dist2)
    return [
        (torch.from_numpy(index[g]), torch.from_numpy(dist2[g]).to(feat.dtype)) for g in range(ng)
    ]


def cm_uu_knn(feat_cm, feat_uu, unknown, k_cm, k_uu, radius, *, backend=None):
    """The colour-mixture and intra-U searches of ifm, in one pass where possible.

    Equal to ``window_knn(feat_cm, unknown, all pixels, k_cm, radius)`` and
    ``window_knn(feat_uu, unknown, unknown, k_uu, radius)`` (the same neighbours, ties
    included, and distances), returned as the pair of their results. On CPU (numba), when
    both feature stacks are ``[colour, y, x]`` with the same colours and separable
    positions (row ``y`` depends on the row only, ``x`` on the column only: the case of
    ifm's features), one kernel visits every window once and computes each candidate's
    colour distance once for both searches
    (:func:`._ifm_kernels.cm_uu_knn_kernel`); otherwise (CUDA, torch backend, other
    features) the two searches run one after the other.
    """
    if use_numba(feat_cm, backend) and min(k_cm, k_uu) > 0 and _fusable(feat_cm, feat_uu):
        from ._ifm_kernels import GUESS_CM, GUESS_UU, cm_uu_knn_kernel

        c = feat_cm.shape[0] - 2
        h, w = unknown.shape
        col = np.ascontiguousarray(feat_cm[:c].detach().numpy(), np.float32)
        pos = np.zeros((4, max(h, w)), np.float32)
        for g, f in enumerate((feat_cm, feat_uu)):
            pos[2 * g, :h] = f[c, :, 0].numpy()
            pos[2 * g + 1, :w] = f[c + 1, 0, :].numpy()
        unk = np.ascontiguousarray(unknown.numpy(), bool)
        qpos = np.flatnonzero(unk.reshape(-1)).astype(np.int64)
        n = qpos.size
        out = []  # every entry is written by the kernel
        for k in (k_cm, k_uu):
            out += [np.empty((n, k), np.int64), np.empty((n, k), np.float32)]
        cm_uu_knn_kernel(col, pos, unk, qpos, radius, GUESS_CM, GUESS_UU, *out)
        pairs = [(torch.from_numpy(out[i]), torch.from_numpy(out[i + 1])) for i in (0, 2)]
        return [(i, d.to(feat_cm.dtype)) for i, d in pairs]
    everything = torch.ones_like(unknown)
    return [
        window_knn(feat_cm, unknown, everything, k_cm, radius, backend=backend),
        window_knn(feat_uu, unknown, unknown, k_uu, radius, backend=backend),
    ]


def _fusable(feat_cm, feat_uu) -> bool:
    """Float32 ``[colour, y, x]`` stacks of one image with the same colours and separable
    positions (what :func:`cm_uu_knn`'s kernel assumes)."""
    if feat_cm.shape != feat_uu.shape or feat_cm.shape[0] < 3:
        return False
    if feat_cm.dtype != torch.float32 or feat_uu.dtype != torch.float32:
        return False
    c = feat_cm.shape[0] - 2
    if not torch.equal(feat_cm[:c], feat_uu[:c]):
        return False
    return all(
        bool((f[c] == f[c, :, :1]).all()) and bool((f[c + 1] == f[c + 1, :1, :]).all())
        for f in (feat_cm, feat_uu)
    )


def lle_weights(
    colour: torch.Tensor,
    index: torch.Tensor,
    points: torch.Tensor,
    reg: float,
    *,
    batch: int = 32768,
    backend: str | None = None,
) -> torch.Tensor:
    """Locally-linear-embedding weights of Roweis and Saul.

    For every query ``p`` the weights minimise ``|c_p - sum_q w_q c_q|^2 + reg |w|^2``
    subject to ``sum_q w_q = 1``: with the local Gram matrix
    ``G_ab = (c_a - c_p) . (c_b - c_p)`` the solution is ``w = (G + reg I)^-1 1``
    normalised to sum 1. Missing neighbours (``index == -1``) get weight 0.

    Parameters
    ----------
    colour : (C, H*W) tensor
        Colour of every pixel (flat).
    index : (N, K) tensor of int64
        Neighbours (flat indices, ``-1`` = none).
    points : (N,) tensor of int64
        Flat index of each query.
    reg : float
        Tikhonov regulariser (needed: ``K`` exceeds the colour dimension).
    batch, backend
        Queries per batch of the torch path; backend as in :func:`window_knn`.
    """
    n, k = index.shape
    if use_numba(colour, backend):
        from ._ifm_kernels import lle_kernel

        out = np.zeros((n, k), np.float64)
        c = np.ascontiguousarray(colour.detach().cpu().numpy(), np.float64)
        idx = np.ascontiguousarray(index.cpu().numpy(), np.int64)
        pts = np.ascontiguousarray(points.cpu().numpy(), np.int64)
        lle_kernel(c, idx, pts, float(reg), out)
        return torch.from_numpy(out)
    out = torch.zeros((n, k), dtype=torch.float64, device=colour.device)
    eye = torch.eye(k, dtype=torch.float64, device=colour.device)
    for s in range(0, n, batch):
        idx = index[s : s + batch]
        ok = idx >= 0
        nb = colour[:, idx.clamp(min=0)].permute(1, 2, 0).double()  # (n, K, C)
        e = nb - colour[:, points[s : s + batch]].T.double()[:, None, :]
        e = e * ok[..., None]
        g = e @ e.transpose(1, 2) + reg * eye
        # A missing neighbour is decoupled (identity row) and its weight zeroed below.
        g = torch.where((ok[:, :, None] & ok[:, None, :]) | eye.bool(), g, 0.0)
        # G + reg I is symmetric positive definite: a Cholesky solve.
        wt = torch.cholesky_solve(ok.double()[..., None], torch.linalg.cholesky(g))[..., 0] * ok
        total = wt.sum(1, keepdim=True)
        out[s : s + batch] = torch.where(total.abs() > 1e-12, wt / total, 0.0)
    return out


def uu_edges(fq: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, sigma: float, *,
             backend=None):  # fmt: skip
    """ifm's intra-U edges: ``(index, sigma * max(1 - |f_p - f_q|_1, 0))`` for the
    neighbours ``index`` (N, K) of the pixels ``rows`` (N,), ``fq`` (C, H W) the features;
    a missing neighbour (-1) points at its query with weight 0. On CPU one numba pass
    (:func:`._ifm_kernels.uu_weights_kernel`, float64 features), else torch."""
    if use_numba(fq, backend) and fq.dtype == torch.float64:  # no (C, N, K) temporaries
        from ._ifm_kernels import uu_weights_kernel

        index_np = np.ascontiguousarray(index.numpy(), np.int64)
        out_index, out_w = np.empty_like(index_np), np.empty(index_np.shape, np.float64)
        uu_weights_kernel(
            fq.numpy(), np.ascontiguousarray(rows.numpy(), np.int64), index_np, float(sigma),
            out_index, out_w,
        )  # fmt: skip
        return torch.from_numpy(out_index), torch.from_numpy(out_w)
    ok = index >= 0
    index = torch.where(ok, index, rows[:, None])
    l1 = (fq[:, index] - fq[:, rows][:, :, None]).abs().sum(0)
    return index, (1 - l1).clamp(min=0) * ok * sigma
