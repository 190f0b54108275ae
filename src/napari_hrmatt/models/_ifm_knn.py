"""KNN-matting flow for information-flow matting (:mod:`.ifm`, option ``sigma_knn``).

After Chen, Li and Tang, "KNN Matting" (CVPR 2012; TPAMI 2013): every unknown pixel ``p``
is linked to its ``k_knn`` nearest pixels ``q`` (unknown or known) in the feature space
``[colour, knn_xy * x / xy_scale, knn_xy * y / xy_scale]`` (a weak spatial term: the
neighbours may lie far apart in the image) and the energy gains

    sigma_knn * sum_{(p, q)} w_pq (alpha_p - alpha_q)^2,

a graph Laplacian over those edges (listed from ``p``: an edge found from both ends counts
twice, i.e. ``W + W^T``). An edge to a known pixel pulls ``p`` towards that pixel's value,
like a soft label. ``w_pq`` is 1 (``knn_kernel="binary"``, as KNN matting's usual set-up)
or ``max(1 - |f_p - f_q|_2 / sqrt(C + 2), 0)`` (``"kernel"``: the paper's
``1 - |X(i) - X(j)| / C_norm`` with a fixed bound).

Where the neighbours come from (docs/ifm.md): in the **global pass** the whole array being
solved (a k-d tree, :class:`scipy.spatial.cKDTree`, over every pixel of the solved crop;
queries for the unknown pixels only); in a **block** the window of ``search`` pixels of the
other non-local flows (:func:`._knn.window_knn`), so a block's rows stay those of a
whole-image solve at the derived overlap and the overlap does not grow. The edges join the
intra-unknown edge lists of :class:`._ifm_nonlocal._NonLocal` (same Laplacian form; edges to known
pixels go to ``b`` and the diagonal there), so the CG operator, its numba product and the
coarse correction need no change.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _knn
from ._knn import window_knn

__all__ = ["knn_features", "knn_edges", "KNN_KERNELS"]

KNN_KERNELS = ("binary", "kernel")


def knn_features(image: torch.Tensor, xy: torch.Tensor, opts: dict) -> torch.Tensor:
    """``(C + 2, H, W)`` float64 features ``[colour, knn_xy y / s, knn_xy x / s]`` from the
    image and ``xy`` = ``[y / s, x / s]``, the positions :func:`.ifm.ifm_system` built."""
    return torch.cat([image.to(torch.float64), xy.to(torch.float64) * opts["knn_xy"]])


def knn_edges(
    image: torch.Tensor, xy: torch.Tensor, rows: torch.Tensor, opts: dict, *, whole: bool
):
    """Neighbours and weights of the KNN flow for the unknown pixels (row-major order).

    ``xy``: ``[y, x] / xy_scale`` of every pixel; ``rows``: the flat indices of the unknown
    pixels. Returns ``(index, weight)``, both ``(N, k_knn)``: flat indices of the neighbours (a
    missing one, in a window with fewer than ``k_knn`` other pixels, points at the query
    itself with weight 0) and ``sigma_knn * w_pq`` in float64. ``whole=True``: candidates
    are all pixels of the array (k-d tree); otherwise those within ``search`` pixels.
    """
    c, h, w = image.shape
    k = opts["k_knn"]
    feat = knn_features(image, xy, opts)
    n = rows.numel()
    if n == 0:
        empty = torch.zeros((0, k), dtype=torch.int64, device=image.device)
        return empty, empty.to(torch.float64)
    if whole:
        points = np.ascontiguousarray(feat.reshape(c + 2, -1).T.cpu().numpy())  # the tree's copy
        index = _tree_knn(points, rows.cpu().numpy(), k, eps=opts.get("knn_eps", 0.0))
        index = torch.as_tensor(index, device=image.device)
    else:
        unknown = torch.zeros(h * w, dtype=torch.bool, device=image.device)
        unknown[rows] = True
        unknown = unknown.reshape(h, w)
        index, _ = window_knn(feat.float(), unknown, torch.ones_like(unknown), k, opts["search"])
    ok = index >= 0
    index = torch.where(ok, index, rows[:, None])
    flat = feat.reshape(c + 2, -1)
    if opts["knn_kernel"] == "kernel":
        dist = (flat[:, index] - flat[:, rows][:, :, None]).pow(2).sum(0).sqrt()
        weight = (1 - dist / np.sqrt(c + 2)).clamp(min=0)
    else:
        weight = torch.ones(index.shape, dtype=torch.float64, device=image.device)
    return index, weight * ok * opts["sigma_knn"]


def _tree_knn(points: np.ndarray, queries: np.ndarray, k: int, eps: float = 0.0) -> np.ndarray:
    """The ``k`` nearest of all ``points`` to ``points[queries]`` (itself excluded),
    ``-1`` where fewer than ``k`` other points exist; ordered by (distance, index). A tie
    at the ``k``-th place goes to whichever pixel the tree returns (deterministic for a
    given input). ``eps > 0``: the tree's approximate search (the ``j``-th neighbour
    returned is within ``1 + eps`` times the true ``j``-th distance). Memory: the tree
    (about 16 bytes per point on top of ``points``) and the output; queries run in
    batches of :data:`_BATCH`."""
    from scipy.spatial import cKDTree

    m, nq = points.shape[0], len(queries)
    kq = min(k + 1, m)
    tree = cKDTree(points, leafsize=64, balanced_tree=False, compact_nodes=False)
    # Queries in the tree's order of the points (the order of its leaves): consecutive
    # queries visit the same nodes, the cache stays warm (GT04 0.5 MP: 0.56 -> 0.44 s with
    # leafsize 64, was 32). The same answers: each query's result does not depend on
    # the others.
    rank = np.empty(m, np.int64)
    rank[tree.indices] = np.arange(m)
    order = np.argsort(rank[queries], kind="stable")
    out = np.empty((nq, k), np.int64)
    for start in range(0, nq, _BATCH):  # batches bound the temporaries
        sel = order[start : start + _BATCH]
        out[sel] = _nearest_others(tree, points, queries[sel], k, kq, eps)
    return out


#: Queries per k-d tree batch: temporaries of about ``_BATCH * (k + 1) * 40`` bytes.
_BATCH = 1 << 16


def _nearest_others(tree, points, queries, k, kq, eps):
    dist, idx = tree.query(points[queries], k=kq, eps=eps, workers=1)
    dist, idx = dist.reshape(len(queries), kq), idx.reshape(len(queries), kq)
    if kq > 1:
        # The tree returns each row by distance. A row with no equal distances and the
        # query itself first is already in (distance, index) order with the query where
        # the general path below drops it: its answer is ``idx[:, 1:]`` (the same numbers;
        # GT04 0.5 MP: 98 % of the rows, the sort and masking 0.17 -> 0.03 s).
        out = np.empty((len(queries), kq - 1), np.int64)
        if _knn.BACKEND == "auto":  # the same in one numba pass
            from ._ifm_kernels import tree_rows_kernel

            simple = np.empty(len(queries), bool)
            idx = np.ascontiguousarray(idx, np.int64)
            tree_rows_kernel(dist, idx, np.ascontiguousarray(queries, np.int64), out, simple)
        else:
            simple = (idx[:, 0] == queries) & (np.diff(dist, axis=1) > 0).all(1)
            out[simple] = idx[simple, 1:]
        if not simple.all():
            rest = ~simple
            out[rest] = _ordered_others(dist[rest], idx[rest], queries[rest], kq)
        if kq - 1 < k:
            out = np.concatenate([out, np.full((len(queries), k - kq + 1), -1, np.int64)], 1)
        return out
    return _ordered_others(dist, idx, queries, kq, k)


def _ordered_others(dist, idx, queries, kq, k=None):
    """Per row, the ``kq`` candidates ordered by (distance, index), the query itself (or
    else the last) dropped; padded with -1 to ``k`` columns if given."""
    k = kq - 1 if k is None else k
    # Order by (distance, index) so that the result does not depend on the tree's layout.
    order = np.lexsort((idx, dist), axis=1) if kq > 1 else np.zeros_like(idx)
    idx = np.take_along_axis(idx, order, 1)
    # Drop the query itself (distance 0; if duplicates of its features exist it may not
    # be first), else the farthest candidate.
    is_self = idx == queries[:, None]
    drop = np.where(is_self.any(1), is_self.argmax(1), kq - 1)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(len(queries)), drop] = False
    out = idx[keep].reshape(len(queries), kq - 1)
    if kq - 1 < k:
        out = np.concatenate([out, np.full((len(queries), k - kq + 1), -1, np.int64)], 1)
    return out
