"""The KNN-matting flow of ifm (``sigma_knn``, models/_ifm_knn.py): its matrix against a
direct dense construction, the whole-image k-d tree search against brute force, chunked ==
whole with the flow on (the solve against scipy's spsolve with it: tests/test_ifm.py)."""

import numpy as np
import pytest
import torch

from napari_hrmatt import estimate_alpha
from napari_hrmatt.models import get_model

from .test_ifm import TIGHT, _brute_knn, _features, _system, tiny  # noqa: F401 (fixture)


@pytest.mark.parametrize("kernel", ["binary", "kernel"])
@pytest.mark.parametrize("knn_whole", [False, True])
def test_knn_flow_matches_dense(tiny, knn_whole, kernel):  # noqa: F811 (the fixture)
    """The KNN-matting flow: k_knn nearest pixels (any label) in [colour, knn_xy xy / s],
    whole image (global pass) or the ``search`` window (blocks), Laplacian of W + W^T.
    The exact tree search (``knn_eps=0``; the default 1 is approximate, tested below)."""
    image, trimap = tiny
    options = {"sigma_knn": 0.3, "k_knn": 4, "knn_xy": 0.5, "knn_kernel": kernel, "knn_eps": 0.0}
    (_, nl, _, _), opts = _system(
        image, trimap, knn_whole=knn_whole, sigma_cm=0.0, sigma_uu=0.0, **options
    )
    feat = _features(image, opts["xy_scale"], 0.5)
    flat = feat.reshape(5, -1).T
    unknown = trimap == 128
    radius = 10_000 if knn_whole else opts["search"]
    nbs = _brute_knn(feat, unknown, np.ones_like(unknown), 4, radius)
    w = np.zeros((trimap.size, trimap.size))
    for p, nb in zip(np.flatnonzero(unknown), nbs, strict=True):
        for q in nb[nb >= 0]:
            d = np.sqrt(((flat[p] - flat[q]) ** 2).sum())
            w[p, q] = 0.3 * (max(1 - d / np.sqrt(5), 0) if kernel == "kernel" else 1.0)
    sym = w + w.T
    assert (sym[np.ix_(unknown.ravel(), ~unknown.ravel())] > 0).any()  # edges to known pixels
    np.testing.assert_allclose(nl.dense(), np.diag(sym.sum(1)) - sym, atol=1e-9)


def test_knn_tree_search_matches_brute_force(monkeypatch):
    """The whole-image search (k-d tree): the k nearest others in (distance, index) order,
    the query itself left out even among exact duplicates; a tie at the k-th place may go
    to either pixel (the tree's choice), so there only the distances are compared."""
    from napari_hrmatt.models import _ifm_knn
    from napari_hrmatt.models._ifm_knn import _tree_knn

    monkeypatch.setattr(_ifm_knn, "_BATCH", 50)  # several batches
    rng = np.random.default_rng(3)
    points = rng.random((300, 5))
    points[200:210] = points[100:110]  # exact duplicates: distance 0 to another pixel
    points[250:260] = np.round(points[250:260], 1)  # near-ties
    queries = np.union1d(rng.choice(300, 120, replace=False), np.arange(100, 110))
    got = _tree_knn(points, queries, 6)
    exact = 0
    for q, row in zip(queries, got, strict=True):
        d = ((points - points[q]) ** 2).sum(1)
        d[q] = np.inf
        expected = np.lexsort((np.arange(300), d))[:7]
        assert q not in row
        np.testing.assert_allclose(d[row], d[expected[:6]], rtol=0, atol=1e-15)
        if d[expected[5]] < d[expected[6]]:  # no tie at the boundary: the same pixels
            np.testing.assert_array_equal(row, expected[:6])
            exact += 1
    assert exact > 100
    few = _tree_knn(points[:4], np.arange(4), 6)  # fewer points than k + 1
    assert (few[:, 3:] == -1).all() and (few[:, :3] >= 0).all()


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_knn_tree_fast_rows_equal_general_path(backend, monkeypatch):
    """``_nearest_others`` takes rows without equal distances (query first) as the tree
    returns them (numba: ``tree_rows_kernel``; numpy with ``backend="torch"``): the same
    answer as ordering every row by (distance, index)."""
    from scipy.spatial import cKDTree

    from napari_hrmatt.models import _knn
    from napari_hrmatt.models._ifm_knn import _nearest_others, _ordered_others

    monkeypatch.setattr(_knn, "BACKEND", backend)

    rng = np.random.default_rng(7)
    points = rng.random((500, 5))
    points[300:340] = points[100:140]  # duplicates: the general path for those rows
    points[400:450] = np.round(points[400:450], 1)
    queries = np.arange(0, 500, 2)
    tree = cKDTree(points, leafsize=16)
    for eps in (0.0, 1.0):
        got = _nearest_others(tree, points, queries, 6, 7, eps)
        dist, idx = tree.query(points[queries], k=7, eps=eps)
        np.testing.assert_array_equal(got, _ordered_others(dist, idx, queries, 7))
    assert not (queries[:, None] == got).any()


def test_knn_tree_search_approximate_bound():
    """``knn_eps > 0``: each neighbour found is within ``1 + eps`` of the true one at its
    rank (scipy's guarantee), the query itself never among them; the option reaches the
    tree through ``knn_edges``."""
    from napari_hrmatt.models._ifm_knn import _tree_knn, knn_edges

    rng = np.random.default_rng(5)
    points = rng.random((400, 5))
    queries = np.sort(rng.choice(400, 150, replace=False))
    eps = 1.0
    got = _tree_knn(points, queries, 6, eps=eps)
    for q, row in zip(queries, got, strict=True):
        d = np.sqrt(((points - points[q]) ** 2).sum(1))
        d[q] = np.inf
        assert q not in row and len(set(row)) == 6
        assert (d[row] <= (1 + eps) * np.sort(d)[:6] + 1e-12).all()
    image = torch.as_tensor(rng.random((3, 12, 14)))
    xy = torch.as_tensor(rng.random((2, 12, 14)))
    rows = torch.arange(0, 168, 3)
    opts = {"k_knn": 5, "knn_xy": 0.1, "knn_kernel": "binary", "sigma_knn": 1.0}
    exact, _ = knn_edges(image, xy, rows, {**opts, "knn_eps": 0.0}, whole=True)
    approx, _ = knn_edges(image, xy, rows, {**opts, "knn_eps": 3.0}, whole=True)
    assert not torch.equal(exact, approx)  # a loose bound finds other neighbours here


@pytest.mark.parametrize("knn_patch", ["window", "off"])
def test_chunked_equals_whole_with_knn_flow(scene, knn_patch):
    """With ``knn_patch="window"`` the KNN flow searches the ``search`` window in the
    blocks, with ``"off"`` the blocks leave it out: either way the derived overlap (not
    grown by it) gives chunked == whole (the global pass, whole-image search, is shared
    by both)."""
    image, trimap, _ = scene
    opts = {**TIGHT, "sigma_knn": 0.01, "knn_xy": 0.1, "knn_patch": knn_patch}
    model = get_model("ifm", "cpu", **opts)
    assert model.overlap(4) == 24
    assert model._patch_opts()["sigma_knn"] == (0.01 if knn_patch == "window" else 0.0)
    run = {"model": "ifm", "global_size": 800, "model_options": opts}
    whole = estimate_alpha(image, trimap, chunks=10_000, **run)
    diff = np.abs(estimate_alpha(image, trimap, chunks=37, **run) - whole)
    assert diff.mean() < 3e-3
    assert diff.max() < 0.15
    if knn_patch == "window":
        plain = estimate_alpha(image, trimap, chunks=10_000, model="ifm", global_size=800,
                               model_options={**TIGHT, "sigma_knn": 0.0})  # fmt: skip
        assert np.abs(plain - whole).mean() > 1e-3  # the flow is on in the blocks


@pytest.mark.parametrize("coarse", ["cm", "none"])
def test_background_only_band_solves_to_zero(tiny, coarse):  # noqa: F811 (the fixture)
    """An unknown band bordered by background only has b = 0: alpha is exactly 0, at once
    (CG used to iterate to maxiter and, with the coarse correction, return NaN)."""
    from napari_hrmatt.models.ifm import solve_ifm

    image, trimap = tiny
    trimap = np.where(trimap == 255, 0, trimap).astype(np.uint8)
    _, opts = _system(image, trimap, coarse=coarse)
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy())
    x = torch.as_tensor(np.where(trimap == 128, 0.5, 0.0))
    got, it = solve_ifm(im, torch.as_tensor(trimap), x, opts, dtype=torch.float64)
    assert it == 0
    assert np.array_equal(got.numpy(), np.zeros(trimap.shape))
    alpha = get_model("ifm", "cpu", coarse=coarse).global_alpha(image, trimap)
    assert np.isfinite(alpha).all() and not alpha.any()
