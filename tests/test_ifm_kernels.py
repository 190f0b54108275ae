"""ifm's fused CPU kernels against what they replaced: the one-pass colour-mixture +
intra-U search against the two window searches and brute force (ties included), the
window search with sparse candidates, and the numba coarse set-up against the scipy
products it replaced."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from napari_hrmatt.models._knn import cm_uu_knn, window_knn
from napari_hrmatt.models.ifm import InformationFlowModel, solve_ifm

from .conftest import make_scene
from .test_ifm import _brute_knn


def test_window_knn_numba_with_sparse_candidates():
    """Window rows without candidates are skipped and scanned only between their first and
    last candidate (the trimming's known pixels): still the brute-force neighbours."""
    rng = np.random.default_rng(11)
    feat = rng.random((3, 16, 21))
    candidate = np.zeros((16, 21), bool)
    candidate[:, :3] = True  # a known band at the left
    candidate[5:7, 14] = True  # and a few isolated pixels
    candidate[12, 19] = True
    query = ~candidate
    index, _ = window_knn(
        torch.as_tensor(feat), torch.as_tensor(query), [torch.as_tensor(candidate)], 3, 4,
        backend="auto",
    )[0]  # fmt: skip
    expected = _brute_knn(feat, query, candidate, 3, 4)
    assert (expected == -1).all(1).any() and (expected >= 0).all(1).any()
    np.testing.assert_array_equal(index.numpy(), expected)


@pytest.mark.parametrize("ngroups", [2, 3])
def test_window_knn_numba_groups_with_few_candidates(ngroups):
    """Each group has its own k-th distance: one group with fewer than k candidates in
    most windows (its limit stays inf) next to dense ones, integer features (exact ties):
    every group's neighbours are still the brute force's. Two groups take the kernel's
    select path, three its gather path."""
    rng = np.random.default_rng(20 + ngroups)
    feat = rng.integers(0, 3, (3, 14, 17)).astype(np.float32)
    query = rng.random((14, 17)) < 0.4
    rest = ~query
    sparse = rest & (rng.random((14, 17)) < 0.06)
    dense = rest & ~sparse
    groups = [sparse, dense] if ngroups == 2 else [sparse, dense & (rng.random((14, 17)) < 0.5)]
    if ngroups == 3:
        groups.append(dense & ~groups[1])
    got = window_knn(
        torch.as_tensor(feat), torch.as_tensor(query), [torch.as_tensor(g) for g in groups],
        4, 3, backend="auto",
    )  # fmt: skip
    short = (got[0][0].numpy() < 0).any(1)
    assert short.mean() > 0.5  # the sparse group leaves most buffers unfilled
    for (index, _), g in zip(got, groups, strict=True):
        np.testing.assert_array_equal(index.numpy(), _brute_knn(feat, query, g, 4, 3))


def _cm_uu_features(colour, scale):
    """ifm's two search features (float32): [colour, y/s, x/s] and [colour, y/20s, x/20s]."""
    h, w = colour.shape[1:]
    yy, xx = np.mgrid[:h, :w]
    xy = np.stack([yy, xx]).astype(np.float64) / scale
    return [torch.as_tensor(np.concatenate([colour, xy / f])).float() for f in (1.0, 20.0)]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("radius", [2, 4])
def test_fused_cm_uu_search_equals_separate_searches(radius, ties):
    """The one-pass colour-mixture + intra-U search == the two window searches (numba and
    torch) == brute force; with integer colours there are many exact ties in distance."""
    rng = np.random.default_rng(10 + radius + 2 * ties)
    colour = rng.integers(0, 3, (3, 12, 15)) / 2.0 if ties else rng.random((3, 12, 15))
    unknown = rng.random((12, 15)) < 0.45
    f_cm, f_uu = _cm_uu_features(colour, 4.0 if ties else 7.0)  # 4: exact positions
    u = torch.as_tensor(unknown)
    (cm, cm_d), (uu, uu_d) = cm_uu_knn(f_cm, f_uu, u, 6, 4, radius, backend="auto")
    if ties:  # equal distances within a buffer, in both searches
        for d in (cm_d, uu_d):
            d = d.numpy()
            assert ((d[:, 1:] == d[:, :-1]) & np.isfinite(d[:, 1:])).any()
    everything = np.ones_like(unknown)
    np.testing.assert_array_equal(
        cm.numpy(), _brute_knn(f_cm.double().numpy(), unknown, everything, 6, radius)
    )
    np.testing.assert_array_equal(
        uu.numpy(), _brute_knn(f_uu.double().numpy(), unknown, unknown, 4, radius)
    )
    # torch's product form rounds distances in float32: compared where there are no ties.
    for backend in ("auto",) if ties else ("auto", "torch"):
        sep = [
            window_knn(f_cm, u, torch.ones_like(u), 6, radius, backend=backend),
            window_knn(f_uu, u, u, 4, radius, backend=backend),
        ]
        for (index, dist2), (i2, d2) in zip(((cm, cm_d), (uu, uu_d)), sep, strict=True):
            np.testing.assert_array_equal(index.numpy(), i2.numpy())
            if backend == "auto":  # the same float64 sums, stored in float32
                np.testing.assert_array_equal(dist2.numpy(), d2.numpy())
    # Not fusable (positions not separable): the two searches, same result.
    f_bad = f_uu.clone()
    f_bad[3, 0, 0] += 1
    (c2, _), (u2, _) = cm_uu_knn(f_cm, f_bad, u, 6, 4, radius, backend="auto")
    np.testing.assert_array_equal(c2.numpy(), cm.numpy())
    expected = window_knn(f_bad, u, u, 4, radius, backend="auto")[0]
    np.testing.assert_array_equal(u2.numpy(), expected.numpy())


@pytest.mark.parametrize(
    ("guess", "channels"),
    [((0.5, 0.5), 3), ((1.0, 1.0), 3), ((2.0, 3.0), 3), ((np.inf, np.inf), 3), ((1.0, 1.0), 1),
     ((2.0, 3.0), 4)],
)  # fmt: skip
def test_fused_cm_uu_search_guessed_caps(monkeypatch, guess, channels):
    """The search's guessed caps (from the previous queries' k-th distances times a factor)
    give the brute-force neighbours whether the guess holds or not: below 1 nearly every
    query is searched again without a cap, at 1 some are; integer colours (exact ties, also
    at the cap) and sparse unknowns (intra-U buffers that stay short even without a cap);
    three colour channels take the kernel's one-pass distance loop, 1 and 4 the general
    one."""
    from napari_hrmatt.models import _ifm_kernels

    monkeypatch.setattr(_ifm_kernels, "GUESS_CM", guess[0])
    monkeypatch.setattr(_ifm_kernels, "GUESS_UU", guess[1])
    rng = np.random.default_rng(31)
    colour = rng.integers(0, 4, (channels, 18, 23)) / 3.0
    colour[:, :, 12:] = rng.random((channels, 18, 11))  # a part without ties
    unknown = rng.random((18, 23)) < 0.5
    unknown[:5] = rng.random((5, 23)) < 0.08
    f_cm, f_uu = _cm_uu_features(colour, 4.0)
    (cm, cm_d), (uu, uu_d) = cm_uu_knn(f_cm, f_uu, torch.as_tensor(unknown), 6, 4, 3,
                                       backend="auto")  # fmt: skip
    everything = np.ones_like(unknown)
    np.testing.assert_array_equal(
        cm.numpy(), _brute_knn(f_cm.double().numpy(), unknown, everything, 6, 3)
    )
    expected_uu = _brute_knn(f_uu.double().numpy(), unknown, unknown, 4, 3)
    np.testing.assert_array_equal(uu.numpy(), expected_uu)
    assert (expected_uu < 0).any() and (expected_uu >= 0).all(1).any()
    for d, f in zip((cm_d.numpy(), uu_d.numpy()), guess, strict=True):
        kth = d[:, -1].astype(np.float64)
        redo = kth[1:] > f * kth[:-1]  # where the cap was too low (float32 k-th: a sketch)
        if f == 0.5:
            assert redo.mean() > 0.7
        elif f == 1.0:
            assert 0.2 < redo.mean() < 0.8


def _aggregate_python(indptr, indices):
    """Greedy aggregation of a symmetric graph (CSR, sorted rows) as first written (the
    numba kernel's reference): pass 1, a node with all neighbours free forms an aggregate
    with them; pass 2, a left-over node joins its first neighbour's pass-1 aggregate;
    pass 3, the rest with their free neighbours."""
    n = indptr.size - 1
    agg = np.full(n, -1, np.int64)
    count = 0
    for i in range(n):
        nb = indices[indptr[i] : indptr[i + 1]]
        if agg[i] < 0 and (agg[nb] < 0).all():
            agg[i] = agg[nb] = count
            count += 1
    first = agg.copy()
    for i in np.flatnonzero(first < 0):
        nb = indices[indptr[i] : indptr[i + 1]]
        hit = nb[first[nb] >= 0]
        if hit.size:
            agg[i] = first[hit[0]]
    for i in range(n):
        if agg[i] < 0:
            nb = indices[indptr[i] : indptr[i + 1]]
            agg[i] = count
            agg[nb[agg[nb] < 0]] = count
            count += 1
    return agg, count


def _galerkin_scipy(op, nl, unknown, shift):
    """The coarse set-up as first written (scipy.sparse products), the reference of
    ``CoarseCorrection``'s one-pass kernels: aggregates and ``T^T A T``."""
    from napari_hrmatt.models._aggregation import stencil_to_csr

    flat = np.flatnonzero(unknown.reshape(-1))
    n = flat.size
    gid = np.full(unknown.size, -1, dtype=np.int64)
    gid[flat] = np.arange(n)
    cm_r, cm_c = gid[nl.cm_rows.numpy()], gid[nl.cm_index.numpy()]
    cm_w = nl.cm_w.numpy().astype(np.float64)
    m = cm_c.shape[0]
    edge = (cm_c >= 0) & (cm_c != cm_r[:, None])
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(edge.sum(1), out=indptr[1:])
    g = sp.csr_matrix((np.ones(indptr[-1]), cm_c[edge], indptr), shape=(n, n))
    g = (g + g.T).tocsr()
    # Sorted rows: pass 2 of the aggregation (a left-over pixel joins its first
    # neighbouring aggregate) takes the lowest-numbered neighbour.
    g.sort_indices()
    agg, nc = _aggregate_python(g.indptr, g.indices)
    t = sp.csr_matrix((np.ones(n), agg, np.arange(n + 1)), shape=(n, nc))
    s = stencil_to_csr(op, unknown).astype(np.float64)
    ac = (t.T @ (s @ t)).tocsr()
    cols = np.concatenate([cm_r[:, None], cm_c], 1)
    vals = np.concatenate([np.ones((m, 1)), -cm_w], 1)
    keep = cols >= 0
    mptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=mptr[1:])
    mt = sp.csr_matrix((vals[keep], agg[cols[keep]], mptr), shape=(m, nc))
    ac = ac + float(nl.sigma_cm) * (mt.T @ mt)
    up, uq, uw = nl.uu_p.numpy(), nl.uu_q.numpy(), nl.uu_w.numpy().astype(np.float64)
    deg = np.bincount(up, uw, minlength=unknown.size) + np.bincount(uq, uw, minlength=unknown.size)
    gp, gq = gid[up], gid[uq]
    both = (gp >= 0) & (gq >= 0)
    wc = sp.csr_matrix((uw[both], (agg[gp[both]], agg[gq[both]])), shape=(nc, nc))
    diag = deg[flat] + shift.numpy().astype(np.float64).reshape(-1)[flat]
    ac = ac - wc - wc.T + sp.diags(np.bincount(agg, diag, minlength=nc))
    return agg, nc, ac


def test_cm_aggregate_kernel_equals_aggregation_of_the_symmetrised_graph():
    """The aggregation straight from the colour-mixture lists (unsorted, with repeats,
    self loops and known neighbours) == the aggregation of scipy's ``g + g.T`` with sorted
    rows; sparse lists leave pixels to passes 2 and 3."""
    from napari_hrmatt.models._ifm_coarse import cm_aggregate_kernel

    rng = np.random.default_rng(5)
    for n, k, p_missing in ((300, 6, 0.2), (500, 3, 0.6), (40, 2, 0.9)):
        cm_c = rng.integers(0, n, (n, k))
        cm_c[rng.random((n, k)) < p_missing] = -1
        cm_c[:5, 0] = np.arange(5)  # self loops
        cm_c[5:10, 1] = cm_c[5:10, 0]  # repeats
        edge = (cm_c >= 0) & (cm_c != np.arange(n)[:, None])
        g = sp.csr_matrix((np.ones(edge.sum()), (np.nonzero(edge)[0], cm_c[edge])), (n, n))
        g = (g + g.T).tocsr()
        g.sort_indices()
        want, count = _aggregate_python(g.indptr, g.indices)
        agg = np.empty(n, np.int64)
        assert cm_aggregate_kernel(cm_c, agg) == count
        np.testing.assert_array_equal(agg, want)


@pytest.mark.parametrize(("prior", "row_capacity"), [(0.0, 16), (0.05, 16), (0.0, 1)])
def test_coarse_setup_kernels_equal_the_scipy_setup(prior, row_capacity, monkeypatch):
    """The one-pass numba set-up gives the aggregates and the coarse matrix of the scipy
    products it replaced (the reference above), on a scene with known neighbours in the
    colour-mixture lists and repeated aggregates in a row; with one entry per row at
    first the kernel's output grows many times (real images grow it: GT04 ~56 per row)."""
    from napari_hrmatt.models import _ifm_coarse

    monkeypatch.setattr(_ifm_coarse.CoarseCorrection, "ROW_CAPACITY", row_capacity)

    built = []

    class Recording(_ifm_coarse.CoarseCorrection):
        def __init__(self, *args):
            super().__init__(*args)
            # The reference now: solve_ifm turns nl's weights to float32 after the set-up.
            built.append((self, _galerkin_scipy(*args)))

    monkeypatch.setattr(_ifm_coarse, "CoarseCorrection", Recording)
    image, trimap, _ = make_scene(48, 56, seed=3)
    opts = InformationFlowModel(search=6, xy_scale=40.0, trim="none").opts
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy(), dtype=torch.float64)
    u = trimap == 128
    x = torch.as_tensor(np.where(u, 0.5, trimap / 255.0))
    solve_ifm(im, torch.as_tensor(trimap), x, opts, prior=prior, target=x)
    ((cc, (agg, nc, ac)),) = built
    assert 1 < nc < u.sum() // 4
    np.testing.assert_array_equal(cc.agg, agg)
    assert cc.nc == nc
    diff = abs(cc.matrix - ac).max()
    assert diff <= 1e-12 * abs(ac).max()  # the same sums in another order
    # The symmetric-mode LU (minimum degree on A + A^T, no pivoting) solves as scipy's
    # default LU (COLAMD, partial pivoting) of the reference matrix does; the one used
    # (float32: CG's dtype here) to float32's precision.
    rhs = np.random.default_rng(0).standard_normal(nc)
    expected = spla.splu(sp.csc_matrix(ac)).solve(rhs)
    scale = abs(expected).max()
    got = _ifm_coarse.factorize(ac).solve(rhs)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * scale)
    assert cc.dtype == np.float32 and cc.lu.solve(rhs.astype(np.float32)).dtype == np.float32
    # The correction added in place (CG's two-level preconditioner) == the correction
    # (added to zeros) plus x.
    r, x = (torch.as_tensor(np.random.default_rng(s).random(u.shape), dtype=torch.float32)
            for s in (1, 2))  # fmt: skip
    want = x + cc.add_to(r, torch.zeros_like(x))
    assert (want != x).any()
    assert cc.add_to(r, x) is x and torch.equal(x, want)
    np.testing.assert_allclose(cc.lu.solve(rhs.astype(np.float32)), expected, rtol=0,
                               atol=1e-4 * scale)  # fmt: skip


def test_patch_stats_kernel_equals_torch_statistics():
    """The trimming's 3x3 patch statistics in one numba pass == ``patch_statistics``."""
    from napari_hrmatt.models._trim import patch_statistics
    from napari_hrmatt.models._trim_kernels import patch_stats_kernel

    rng = np.random.default_rng(4)
    for c, h, w in ((3, 13, 17), (3, 1, 5), (1, 4, 2)):
        image = torch.as_tensor(rng.random((c, h, w)))
        mu, cov = patch_statistics(image, 1e-3)
        m, s = np.empty((h * w, c)), np.empty((h * w, c, c))
        patch_stats_kernel(image.numpy(), 1e-3, m, s)
        np.testing.assert_allclose(m, mu.reshape(c, -1).T.numpy(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(s, cov.reshape(-1, c, c).numpy(), rtol=0, atol=1e-14)


def test_uu_weights_kernel_equals_torch_formula():
    """ifm_system's intra-U edges (numba, one pass) against its torch formula (CUDA's):
    the same neighbours and weights (missing ones at the row itself, weight 0)."""
    from napari_hrmatt.models._ifm_kernels import uu_weights_kernel
    from napari_hrmatt.models.ifm import _valid

    rng = np.random.default_rng(9)
    fq = torch.as_tensor(rng.random((5, 400)) * 0.5)  # some l1 > 1: clamped
    rows = torch.as_tensor(np.sort(rng.choice(400, 150, replace=False)))
    index = torch.as_tensor(rng.integers(0, 400, (150, 6)))
    index[rng.random((150, 6)) < 0.1] = -1
    ok = index >= 0
    q = _valid(index, rows)
    l1 = (fq[:, q] - fq[:, rows][:, :, None]).abs().sum(0)
    expected = (1 - l1).clamp(min=0) * ok * 0.01
    out_index, out_w = np.empty((150, 6), np.int64), np.empty((150, 6))
    uu_weights_kernel(fq.numpy(), rows.numpy(), index.numpy(), 0.01, out_index, out_w)
    assert (~ok).any() and (expected == 0).sum() > (~ok).sum() and (expected > 0).any()
    np.testing.assert_array_equal(out_index, q.numpy())
    np.testing.assert_allclose(out_w, expected.numpy(), rtol=1e-15, atol=0)
    # The front end (ifm_system's) on either backend: the same edges.
    from napari_hrmatt.models._knn import uu_edges

    for backend in ("auto", "torch"):
        got_index, got_w = uu_edges(fq, rows, index, 0.01, backend=backend)
        np.testing.assert_array_equal(got_index.numpy(), q.numpy())
        np.testing.assert_allclose(got_w.numpy(), expected.numpy(), rtol=1e-15, atol=0)


def test_nonlocal_diagonal_kernel_equals_index_add():
    """``_NonLocal.diagonal`` on CPU (numba, float64) against its index_add formula (the
    torch backend, CUDA's): the same sums, missing neighbours (weight 0) included."""
    from napari_hrmatt.models._ifm_nonlocal import _NonLocal

    rng = np.random.default_rng(12)
    n, m, k, ku = 80, 30, 5, 4
    rows = torch.as_tensor(np.sort(rng.choice(n, m, replace=False)))
    cm_index = torch.as_tensor(rng.integers(0, n, (m, k)))
    cm_index[::3, -1] = rows[::3]
    cm_w = torch.as_tensor(rng.standard_normal((m, k)))
    cm_w[::3, -1] = 0
    uu_index = torch.as_tensor(rng.integers(0, n, (m, ku)))
    uu_w = torch.as_tensor(rng.random((m, ku)))
    args = (n, 0.8, rows, cm_index, cm_w, rows, uu_index, uu_w)
    got = _NonLocal(*args, backend="auto")
    expected = _NonLocal(*args, backend="torch").diagonal(torch.float64)
    assert got._numba is not None
    np.testing.assert_allclose(got.diagonal(torch.float64), expected, rtol=1e-15, atol=0)
    assert got.diagonal(torch.float32).dtype == torch.float32  # torch formula there
