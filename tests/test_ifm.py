"""Information-flow matting: each flow against a direct dense construction, the windowed
neighbour search against brute force, the solve against scipy's sparse direct solver,
chunked == whole through the engine, and option checking."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from napari_hrmatt import estimate_alpha
from napari_hrmatt.models import _knn, get_model
from napari_hrmatt.models._ifm_nonlocal import _NonLocal
from napari_hrmatt.models._knn import lle_weights, window_knn
from napari_hrmatt.models._trim import trim_distances, trim_patch
from napari_hrmatt.models.ifm import InformationFlowModel, ifm_system, solve_ifm

from .conftest import has_cuda, make_scene

# Small windows keep the tiny problems non-trivial (some queries lack candidates).
SMALL = {"search": 4, "search_known": 5, "xy_scale": 20.0}


@pytest.fixture(scope="module")
def tiny():
    """A 14 x 17 image of random colours (no ties in distance) and a ragged band trimap."""
    rng = np.random.default_rng(7)
    image = rng.random((14, 17, 3))
    trimap = np.zeros((14, 17), np.uint8)
    trimap[:, 11:] = 255
    trimap[:, 5:11] = 128
    trimap[3:6, 3:5] = 128
    trimap[9, 12] = 128
    return image, trimap


def _system(image, trimap, knn_whole=False, **options):
    opts = dict(InformationFlowModel(**{**SMALL, **options}).opts, knn_whole=knn_whole)
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy(), dtype=torch.float64)
    return ifm_system(im, torch.as_tensor(trimap), opts), opts


def _brute_knn(feat, query, candidate, k, radius):
    """Nearest candidates per query pixel (row-major) in the window, plain numpy."""
    h, w = query.shape
    flat = feat.reshape(feat.shape[0], -1).T
    out = []
    for p in np.flatnonzero(query):
        py, px = divmod(p, w)
        cands = [
            q
            for q in np.flatnonzero(candidate)
            if q != p and abs(q // w - py) <= radius and abs(q % w - px) <= radius
        ]
        d = ((flat[cands] - flat[p]) ** 2).sum(1)
        order = np.argsort(d, kind="stable")[:k]
        out.append([cands[i] for i in order] + [-1] * (k - len(order)))
    return np.array(out, dtype=np.int64).reshape(-1, k)


def _lle(colour, p, nbs, reg):
    nbs = [q for q in nbs if q >= 0]
    e = colour[nbs] - colour[p]
    wt = np.linalg.solve(e @ e.T + reg * np.eye(len(nbs)), np.ones(len(nbs)))
    return dict(zip(nbs, wt / wt.sum(), strict=True))


def _features(image, scale, xy_weight=1.0):
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    return np.concatenate([np.moveaxis(image, -1, 0), xy_weight * np.stack([yy, xx]) / scale])


@pytest.mark.parametrize(("backend", "tile"), [("torch", 3), ("torch", 8), ("auto", 8)])
@pytest.mark.parametrize("radius", [2, 5])
def test_window_knn_matches_brute_force(radius, tile, backend):
    """Both backends (numba on CPU by default, torch as on CUDA) against brute force."""
    rng = np.random.default_rng(radius)
    feat = rng.random((5, 13, 19))
    query = rng.random((13, 19)) < 0.4
    candidate = rng.random((13, 19)) < 0.5
    index, dist2 = window_knn(
        torch.as_tensor(feat), torch.as_tensor(query), torch.as_tensor(candidate), 6, radius,
        tile=tile, backend=backend,
    )  # fmt: skip
    expected = _brute_knn(feat, query, candidate, 6, radius)
    np.testing.assert_array_equal(index.numpy(), expected)
    assert np.isinf(dist2.numpy()[expected < 0]).all()
    flat = feat.reshape(5, -1).T
    q = np.flatnonzero(query)[:, None]
    direct = ((flat[np.maximum(expected, 0)] - flat[q]) ** 2).sum(-1)
    ok = expected >= 0
    np.testing.assert_allclose(dist2.numpy()[ok], direct[ok], rtol=1e-5, atol=1e-6)
    # Grouped search (shared distances) equals separate searches.
    groups = window_knn(
        torch.as_tensor(feat), torch.as_tensor(query),
        [torch.as_tensor(candidate), torch.as_tensor(~candidate)], 6, radius, tile=tile,
        backend=backend,
    )  # fmt: skip
    np.testing.assert_array_equal(groups[0][0].numpy(), expected)
    np.testing.assert_array_equal(
        groups[1][0].numpy(), _brute_knn(feat, query, ~candidate, 6, radius)
    )


def test_window_knn_numba_breaks_ties_in_scan_order():
    """Equal distances: the numba search keeps the earlier (row-major) candidate, like the
    stable brute force; duplicated features make many exact ties."""
    rng = np.random.default_rng(5)
    feat = rng.integers(0, 3, (3, 11, 12)).astype(np.float32)
    query = rng.random((11, 12)) < 0.5
    candidate = np.ones((11, 12), bool)
    index, _ = window_knn(
        torch.as_tensor(feat), torch.as_tensor(query), torch.as_tensor(candidate), 5, 3,
        backend="auto",
    )  # fmt: skip
    np.testing.assert_array_equal(index.numpy(), _brute_knn(feat, query, candidate, 5, 3))


def test_lle_weights_numba_matches_torch():
    """The per-query Cholesky kernel against the batched torch solve, with missing
    neighbours (-1) and a query without any."""
    rng = np.random.default_rng(2)
    colour = torch.as_tensor(rng.random((3, 200)))
    points = torch.as_tensor(rng.choice(200, 40, replace=False))
    index = torch.as_tensor(rng.integers(0, 200, (40, 9)))
    index[::3, -4:] = -1
    index[5] = -1
    got = lle_weights(colour, index, points, 1e-3, backend="auto")
    expected = lle_weights(colour, index, points, 1e-3, backend="torch")
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.sum(1).numpy()[np.arange(40) != 5], 1.0)
    assert (got[5] == 0).all() and (got[::3, -4:] == 0).all()


def test_numba_and_torch_backends_solve_alike(monkeypatch):
    """The whole model (trimming, searches, LLE, non-local product) on either backend.

    Solved far past the default tolerance, so the bound measures the two systems, not
    where CG happened to stop (at the default 3e-5 they differ by ~1.5e-4, here ~1.4e-6)."""
    image, trimap, _ = make_scene(40, 52, seed=3, band=3)
    model = InformationFlowModel(**SMALL, tol=1e-9)
    numba_alpha = model.global_alpha(image, trimap)
    monkeypatch.setattr(_knn, "BACKEND", "torch")
    torch_alpha = model.global_alpha(image, trimap)
    assert np.abs(numba_alpha - torch_alpha).max() < 2e-5


def test_colour_mixture_flow_matches_dense(tiny):
    image, trimap = tiny
    (_, nl, _, _), opts = _system(image, trimap, sigma_uu=0.0, sigma_cm=0.7, sigma_knn=0.0)
    unknown = (trimap == 128).ravel()
    colour = image.reshape(-1, 3)
    nbs = _brute_knn(_features(image, opts["xy_scale"]), trimap == 128, trimap >= 0, 20, 4)
    n = unknown.size
    rows = np.zeros((unknown.sum(), n))  # rows p in U of (I - W)
    for r, (p, nb) in enumerate(zip(np.flatnonzero(unknown), nbs, strict=True)):
        rows[r, p] = 1
        for q, wq in _lle(colour, p, nb, opts["lle_reg"]).items():
            rows[r, q] -= wq
    np.testing.assert_allclose(nl.dense(), 0.7 * rows.T @ rows, atol=1e-9)


def test_intra_unknown_flow_matches_dense(tiny):
    image, trimap = tiny
    (_, nl, _, _), opts = _system(image, trimap, sigma_cm=0.0, sigma_uu=0.3, sigma_knn=0.0)
    feat = _features(image, opts["xy_scale"], 1 / 20)
    flat = feat.reshape(5, -1).T
    nbs = _brute_knn(feat, trimap == 128, trimap == 128, 5, 4)
    w = np.zeros((trimap.size, trimap.size))
    for p, nb in zip(np.flatnonzero(trimap == 128), nbs, strict=True):
        for q in nb[nb >= 0]:
            w[p, q] = 0.3 * max(1 - np.abs(flat[p] - flat[q]).sum(), 0)
    sym = w + w.T
    np.testing.assert_allclose(nl.dense(), np.diag(sym.sum(1)) - sym, atol=1e-9)


def test_known_to_unknown_flow_matches_direct(tiny):
    image, trimap = tiny
    (_, _, eta, alpha_ku), opts = _system(image, trimap, sigma_ku=0.2)
    feat = _features(image, opts["xy_scale"])
    colour = image.reshape(-1, 3)
    unknown = trimap == 128
    f_nb = _brute_knn(feat, unknown, trimap == 255, 7, 5)
    b_nb = _brute_knn(feat, unknown, trimap == 0, 7, 5)
    exp_eta, exp_alpha = np.zeros(trimap.size), np.zeros(trimap.size)
    for p, fn, bn in zip(np.flatnonzero(unknown), f_nb, b_nb, strict=True):
        if fn[0] < 0 or bn[0] < 0:
            continue  # no foreground or no background pixel in the window: no K-to-U flow
        wt = _lle(colour, p, np.concatenate([fn, bn]), opts["lle_reg"])
        fw = np.array([wt[q] for q in fn if q >= 0])
        bw = np.array([wt[q] for q in bn if q >= 0])
        f_col = (np.abs(fw)[:, None] * colour[fn[fn >= 0]]).sum(0) / np.abs(fw).sum()
        b_col = (np.abs(bw)[:, None] * colour[bn[bn >= 0]]).sum(0) / np.abs(bw).sum()
        exp_eta[p] = 0.2 * min(((f_col - b_col) ** 2).sum() / 3, 1)
        exp_alpha[p] = np.clip(fw.sum(), 0, 1)
    assert (exp_eta > 0).sum() > 10 and (exp_eta[unknown.ravel()] == 0).any()
    np.testing.assert_allclose(eta.numpy().ravel(), exp_eta, atol=1e-9)
    np.testing.assert_allclose(alpha_ku.numpy().ravel(), exp_alpha, atol=1e-9)


def test_local_flow_is_the_matting_laplacian(tiny):
    pymatting = pytest.importorskip("pymatting")
    image, trimap = tiny
    (stencil, _, _, _), opts = _system(image, trimap, sigma_l=0.4)
    eye = torch.eye(trimap.size, dtype=torch.float64)
    dense = torch.stack([stencil(e.reshape(trimap.shape)).ravel() for e in eye], 1).numpy()
    expected = 0.4 * pymatting.cf_laplacian(image, epsilon=opts["eps"], radius=1).toarray()
    np.testing.assert_allclose(dense, expected, atol=1e-9 * np.abs(expected).max())


def test_float32_local_stencil_is_the_float64_one_rounded(tiny):
    """``stencil_dtype=float32`` (solve_ifm's on CPU with float32 CG) stores the float64
    coefficients rounded once; a float32 solve stays within float32 CG's reach of the
    float64 one."""
    image, trimap = tiny
    (s64, *_), opts = _system(image, trimap)
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy(), dtype=torch.float64)
    s32 = ifm_system(im, torch.as_tensor(trimap), opts, stencil_dtype=torch.float32)[0]
    assert s32.coef.dtype == torch.float32 and torch.equal(s32.coef, s64.coef.float())
    x = torch.as_tensor(np.where(trimap == 128, 0.5, trimap / 255.0))
    runs = [
        solve_ifm(im, torch.as_tensor(trimap), x, dict(opts, tol=1e-6), dtype=dt)[0]
        for dt in (torch.float32, torch.float64)
    ]
    np.testing.assert_allclose(runs[0].double().numpy(), runs[1].numpy(), rtol=0, atol=1e-4)


def _dense_problem(image, trimap, **options):
    (stencil, nl, eta, alpha_ku), opts = _system(image, trimap, **options)
    eye = torch.eye(trimap.size, dtype=torch.float64)
    a = torch.stack([stencil(e.reshape(trimap.shape)).ravel() + nl(e) for e in eye], 1).numpy()
    a += np.diag(eta.numpy().ravel())
    return a, eta.numpy().ravel() * alpha_ku.numpy().ravel(), opts


KNN_ON = {"sigma_knn": 0.2, "k_knn": 4, "knn_xy": 0.1}


@pytest.mark.parametrize(
    "knn",
    [{"sigma_knn": 0.0}, KNN_ON, {**KNN_ON, "knn_whole": True}],
    ids=["no-knn", "knn-window", "knn-whole"],
)
@pytest.mark.parametrize("coarse", ["cm", "none"])
@pytest.mark.parametrize("prior", [0.0, 0.05])
def test_solve_matches_scipy_spsolve(tiny, prior, coarse, knn):
    image, trimap = tiny
    a, rhs, opts = _dense_problem(image, trimap, coarse=coarse, **knn)
    u = (trimap == 128).ravel()
    known = np.where(u, 0.0, trimap.ravel() / 255.0)
    target = np.random.default_rng(1).random(trimap.size)
    a_uu = sp.csr_matrix(a[np.ix_(u, u)] + prior * np.eye(u.sum()))
    b = -a[np.ix_(u, ~u)] @ known[~u] + rhs[u] + prior * target[u]
    expected = known.copy()
    expected[u] = spla.spsolve(a_uu, b)
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy())
    x = torch.as_tensor(np.where(u, target, known).reshape(trimap.shape))
    got, it = solve_ifm(
        im, torch.as_tensor(trimap), x, dict(opts, tol=1e-12, maxiter=5000),
        prior=prior, target=x, dtype=torch.float64,
    )  # fmt: skip
    assert 0 < it < 5000
    np.testing.assert_allclose(got.numpy().ravel(), expected, atol=1e-8)


@pytest.mark.parametrize("prior", [0.0, 0.05])
def test_coarse_matrix_is_the_galerkin_product(tiny, prior, monkeypatch):
    """coarse="cm" factorises T^T A T for the CG operator A (the dense A_UU + prior I)."""
    from napari_hrmatt.models import _ifm_coarse

    built = []

    class Recording(_ifm_coarse.CoarseCorrection):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(_ifm_coarse, "CoarseCorrection", Recording)
    image, trimap = tiny
    a, _, opts = _dense_problem(image, trimap, coarse="cm")
    u = (trimap == 128).ravel()
    a_uu = a[np.ix_(u, u)] + prior * np.eye(u.sum())
    im = torch.as_tensor(np.moveaxis(image, -1, 0).copy())
    x = torch.as_tensor(np.where(u, 0.5, trimap.ravel() / 255.0).reshape(trimap.shape))
    solve_ifm(im, torch.as_tensor(trimap), x, opts, prior=prior, target=x, dtype=torch.float64)
    (cc,) = built
    n = int(u.sum())
    assert 1 < cc.nc < n  # aggregates of several pixels, more than one of them
    t = sp.csr_matrix((np.ones(n), (np.arange(n), cc.agg)), shape=(n, cc.nc)).toarray()
    v = np.random.default_rng(3).standard_normal(cc.nc)
    np.testing.assert_allclose(cc.lu.solve(t.T @ a_uu @ t @ v), v, rtol=1e-9, atol=1e-9)
    # The correction applied to a grid vector: T (T^T A T)^-1 T^T r at the unknown pixels.
    r = np.random.default_rng(4).standard_normal(trimap.size) * u
    rt = torch.as_tensor(r.reshape(trimap.shape))
    got = cc.add_to(rt, torch.zeros_like(rt)).numpy().ravel()
    expected = t @ np.linalg.solve(t.T @ a_uu @ t, t.T @ r[u])
    np.testing.assert_allclose(got[u], expected, rtol=1e-9, atol=1e-12)
    assert not got[~u].any()


def test_patch_tol_scale_reaches_the_block_solves_only(monkeypatch):
    """The block solves (refine) stop at patch_tol_scale * tol, the global one at tol."""
    from napari_hrmatt.models import ifm

    seen = []
    real = ifm.solve_ifm

    def recording(image, trimap, x, opts, **kw):
        seen.append(opts["tol"])
        return real(image, trimap, x, opts, **kw)

    monkeypatch.setattr(ifm, "solve_ifm", recording)
    image, trimap, _ = make_scene(32, 40, seed=1)
    for scale, block_tol in ((None, 3e-4), (1.0, 1e-4), (20.0, 2e-3)):
        options = {"tol": 1e-4} if scale is not None else {}
        if scale is not None:
            options["patch_tol_scale"] = scale
        model = InformationFlowModel(trim="none", **options)
        model.refine(image, trimap, model.global_alpha(image, trimap))
        assert seen[-2] == model.opts["tol"]
        assert seen[-1] == pytest.approx(block_tol, rel=1e-12)


def test_coarse_option_plumbing():
    assert InformationFlowModel().opts["coarse"] == "cm"
    assert get_model("ifm", "cpu", coarse="none").opts["coarse"] == "none"


@pytest.mark.parametrize(("options", "block"), [({}, "none"), ({"patch_coarse": "cm"}, "cm")])
def test_patch_coarse_reaches_the_block_solves_only(monkeypatch, options, block):
    """The global solve uses ``coarse`` ("cm"), the blocks' ``patch_coarse``."""
    from napari_hrmatt.models import ifm

    seen = []
    real = ifm._coarse_correction

    def recording(opts, *args):
        seen.append(opts["coarse"])
        return real(opts, *args)

    monkeypatch.setattr(ifm, "_coarse_correction", recording)
    image, trimap, _ = make_scene(32, 40, seed=1)
    model = InformationFlowModel(trim="none", **options)
    model.refine(image, trimap, model.global_alpha(image, trimap))
    assert seen == ["cm", block]


def test_flows_beat_closed_form_on_the_synthetic_scene():
    """Not a benchmark, a sanity check that the flows help where they should: on a
    composite whose foreground/background colours repeat, ifm's error is below cf's."""
    image, trimap, truth = make_scene(64, 80, seed=2)
    unknown = trimap == 128
    err = {}
    for name in ("cf", "ifm"):
        alpha = get_model(name, "cpu").global_alpha(image, trimap)
        err[name] = np.abs(alpha - truth)[unknown].mean()
    assert err["ifm"] < err["cf"]


TIGHT = {
    "tol": 1e-7, "maxiter": 3000, "search": 6, "search_known": 8, "trim": "none", "sigma_ku": 0.05
}  # fmt: skip


@pytest.fixture(scope="module")
def whole(scene):
    image, trimap, _ = scene
    return estimate_alpha(
        image, trimap, model="ifm", chunks=10_000, global_size=800, model_options=TIGHT
    )


def _chunked(scene, overlap):
    image, trimap, _ = scene
    return estimate_alpha(
        image, trimap, model="ifm", chunks=37, overlap=overlap, global_size=800,
        model_options=TIGHT,
    )  # fmt: skip


def test_chunked_equals_whole_at_derived_overlap(scene, whole):
    """Same stated tolerance as for "cf" (tests/test_engine.py): mean < 3e-3, max < 0.15."""
    assert get_model("ifm", "cpu", **TIGHT).overlap(4) == 24
    diff = np.abs(_chunked(scene, None) - whole)
    assert diff.mean() < 3e-3
    assert diff.max() < 0.15


@pytest.mark.parametrize("coarse", [{"coarse": "none"}, {"patch_coarse": "cm"}])
def test_chunked_without_coarse_correction_equals_whole(scene, whole, coarse):
    """coarse / patch_coarse change the preconditioner only: chunked (without the coarse
    correction anywhere, or with it in the blocks too) == the default whole solve."""
    image, trimap, _ = scene
    chunked = estimate_alpha(
        image, trimap, model="ifm", chunks=37, global_size=800,
        model_options={**TIGHT, **coarse},
    )  # fmt: skip
    diff = np.abs(chunked - whole)
    assert diff.mean() < 3e-3
    assert diff.max() < 0.15


@pytest.mark.parametrize("overlap", [0, 2])
def test_too_small_overlap_shows_seams(scene, whole, overlap):
    diff = np.abs(_chunked(scene, overlap) - whole)
    assert diff.mean() >= 3e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k_cm": 0}, "k_cm must be an integer >= 1"),
        ({"k_uu": 2.5}, "k_uu must be an integer >= 1"),
        ({"search": -1}, "search must be an integer >= 0"),
        ({"sigma_ku": -0.1}, "sigma_ku must be a number >= 0"),
        ({"lle_reg": 0}, "lle_reg must be a number > 0"),
        ({"xy_scale": "wide"}, "xy_scale must be a number > 0"),
        ({"prior": float("nan")}, "prior must be a number >= 0"),
        ({"dtype": "float16"}, "dtype must be 'float32' or 'float64'"),
        ({"trim": "edge"}, "trim must be one of"),
        ({"trim_close": -1}, "trim_close must be a number >= 0"),
        ({"trim_far": "far"}, "trim_far must be a number >= 0"),
        ({"trim_search": 2.0}, "trim_search must be an integer >= 0"),
        ({"trim_reg": 0}, "trim_reg must be a number > 0"),
        ({"trim_close": 1.0, "trim_far": 0.5}, "trim_far .* must be >= trim_close"),
        ({"coarse": "amg"}, "coarse must be one of \\('cm', 'none'\\), got 'amg'"),
        ({"patch_tol_scale": 0}, "patch_tol_scale must be a number > 0"),
        ({"patch_coarse": "amg"}, "patch_coarse must be one of \\('cm', 'none'\\), got 'amg'"),
        ({"sigma_knn": -1}, "sigma_knn must be a number >= 0"),
        ({"k_knn": 0}, "k_knn must be an integer >= 1"),
        ({"knn_xy": "near"}, "knn_xy must be a number >= 0"),
        ({"knn_kernel": "soft"}, "knn_kernel must be one of \\('binary', 'kernel'\\), got 'soft'"),
        ({"knn_patch": "on"}, "knn_patch must be one of \\('window', 'off'\\), got 'on'"),
        ({"knn_eps": -0.5}, "knn_eps must be a number >= 0"),
        ({"knn_eps": float("inf")}, "knn_eps must be a number >= 0"),
    ],
)
def test_bad_options_are_one_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        InformationFlowModel(**options)


def test_registry_and_unknown_option():
    assert get_model("ifm", "cpu").name == "ifm"
    with pytest.raises(ValueError, match="has no option"):
        get_model("ifm", "cpu", window=3)


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    image, trimap, _ = make_scene(40, 52, seed=3, band=3)
    cpu = get_model("ifm", "cpu").global_alpha(image, trimap)
    gpu = get_model("ifm", "cuda").global_alpha(image, trimap)
    assert np.abs(cpu - gpu).max() < 1e-3


# Trimap trimming (trim="patch", models/_trim.py).


def _np_patch_stats(image, reg):
    """3x3 patch mean and covariance per pixel, cut at the border, plain numpy."""
    h, w, c = image.shape
    mu, cov = np.zeros((h, w, c)), np.zeros((h, w, c, c))
    for i in range(h):
        for j in range(w):
            patch = image[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].reshape(-1, c)
            mu[i, j] = patch.mean(0)
            d = patch - mu[i, j]
            cov[i, j] = d.T @ d / len(patch) + reg * np.eye(c)
    return mu, cov


def _np_bhattacharyya(m1, s1, m2, s2):
    s = (s1 + s2) / 2
    d = m1 - m2
    return d @ np.linalg.solve(s, d) / 8 + 0.5 * np.log(
        np.linalg.det(s) / np.sqrt(np.linalg.det(s1) * np.linalg.det(s2))
    )


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_trim_distances_match_direct(tiny, backend, monkeypatch):
    monkeypatch.setattr(_knn, "BACKEND", backend)
    image, trimap = tiny
    reg, radius = 1e-3, 4
    rows, d_f, d_b = trim_distances(
        torch.as_tensor(np.moveaxis(image, -1, 0).copy()), torch.as_tensor(trimap),
        radius=radius, reg=reg, k=3,
    )  # fmt: skip
    mu, cov = _np_patch_stats(image, reg)
    feat = np.moveaxis(mu, -1, 0)
    unknown = trimap == 128
    np.testing.assert_array_equal(rows.numpy(), np.flatnonzero(unknown))
    mu, cov = mu.reshape(-1, 3), cov.reshape(-1, 3, 3)
    for label, got in ((255, d_f), (0, d_b)):
        nbs = _brute_knn(feat, unknown, trimap == label, 3, radius)
        for p, nb, value in zip(np.flatnonzero(unknown), nbs, got.numpy(), strict=True):
            ds = [_np_bhattacharyya(mu[p], cov[p], mu[q], cov[q]) for q in nb if q >= 0]
            assert value == pytest.approx(min(ds, default=np.inf), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(("close", "far"), [(0.5, 1.0), (3.0, 3.0)])
def test_trim_changes_only_confident_unknown_pixels(tiny, close, far):
    image, trimap = tiny
    im, t = torch.as_tensor(np.moveaxis(image, -1, 0).copy()), torch.as_tensor(trimap)
    out = trim_patch(im, t, close=close, far=far, radius=4, reg=1e-3).numpy()
    rows, d_f, d_b = (a.numpy() for a in trim_distances(im, t, radius=4, reg=1e-3))
    known = trimap != 128
    np.testing.assert_array_equal(out[known], trimap[known])  # known pixels stay exact
    got = out.ravel()[rows]
    expected = np.where((d_f < close) & (d_b > far), 255, 128)
    expected = np.where((d_b < close) & (d_f > far), 0, expected)
    np.testing.assert_array_equal(got, expected)
    assert (got != 128).any() and (got == 128).any()  # the case is not trivial


def test_trim_is_local_to_its_reach(tiny):
    """A crop grown by trim_search + 1 trims its interior exactly like the whole image."""
    image, trimap = tiny
    radius = 3

    def trim(im, t):
        im = torch.as_tensor(np.moveaxis(im, -1, 0).copy())
        return trim_patch(im, torch.as_tensor(t), close=3.0, far=3.0, radius=radius, reg=1e-3)

    whole = trim(image, trimap).numpy()
    inner = (slice(5, 9), slice(6, 11))
    for grow, same in ((radius + 1, True), (0, False)):
        box = (slice(5 - grow, 9 + grow), slice(6 - grow, 11 + grow))
        crop = trim(image[box], trimap[box]).numpy()
        part = crop[grow : crop.shape[0] - grow, grow : crop.shape[1] - grow]
        assert np.array_equal(part, whole[inner]) == same


def test_trimmed_pixels_are_exact_in_the_model():
    image, trimap, _ = make_scene(48, 64, seed=4)
    model = InformationFlowModel(trim="patch", **SMALL)
    trimmed = model._trimmed(image, trimap)
    alpha = model.global_alpha(image, trimap)
    changed = trimmed != trimap
    assert changed.any() and (trimap[changed] == 128).all()
    np.testing.assert_array_equal(alpha[trimap != 128], trimap[trimap != 128] / 255.0)
    np.testing.assert_array_equal(alpha[changed], trimmed[changed] / 255.0)


TRIM = {**TIGHT, "trim": "patch", "trim_search": 4}


def test_chunked_equals_whole_with_trimming(scene):
    image, trimap, _ = scene
    model = get_model("ifm", "cpu", **TRIM)
    assert (model._trimmed(image, trimap) != trimap).sum() > 100  # trimming does trim
    assert model.overlap(1) == 24 and model.overlap(4) == 32  # 4 f + 8 + (4 + 1)
    run = {"model": "ifm", "global_size": 800, "model_options": TRIM}
    whole = estimate_alpha(image, trimap, chunks=10_000, **run)
    diff = np.abs(estimate_alpha(image, trimap, chunks=37, **run) - whole)
    assert diff.mean() < 3e-3
    assert diff.max() < 0.15


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nonlocal_csr_product_matches_the_gather_formula(dtype, backend):
    """The CSR products of ``_NonLocal`` (torch) and its numba kernel (rows with repeated
    columns: missing neighbours point at the query with weight 0) equal the plain gather
    / index_add formula."""
    rng = np.random.default_rng(3)
    n, m, k, ku = 60, 25, 6, 3
    rows = torch.as_tensor(np.sort(rng.choice(n, m, replace=False)))
    cm_index = torch.as_tensor(rng.integers(0, n, (m, k)))
    cm_index[::4, -2:] = rows[::4, None]  # "missing" neighbours, weight 0 below
    cm_w = torch.as_tensor(rng.random((m, k)))
    cm_w[::4, -2:] = 0
    uu_index = torch.as_tensor(rng.integers(0, n, (m, ku)))
    uu_w = torch.as_tensor(rng.random((m, ku)))
    nl = _NonLocal(n, 0.7, rows, cm_index, cm_w, rows, uu_index, uu_w, backend=backend)
    assert (nl._numba is not None) == (backend == "auto")
    x = torch.as_tensor(rng.random(n))
    r = 0.7 * (x[rows] - (cm_w * x[cm_index]).sum(1))
    expected = torch.zeros(n, dtype=torch.float64).index_add_(0, rows, r)
    expected.index_add_(0, cm_index.reshape(-1), (-cm_w * r[:, None]).reshape(-1))
    p, q = rows[:, None].expand_as(uu_index).reshape(-1), uu_index.reshape(-1)
    d = uu_w.reshape(-1) * (x[p] - x[q])
    expected.index_add_(0, p, d).index_add_(0, q, -d)
    got = nl.to(dtype)(x.to(dtype))
    assert got.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(got.double().numpy(), expected.numpy(), atol=tol, rtol=tol)
    # Intra-U rows other than the colour-mixture rows (here: the same edges listed in
    # reverse row order) take the kernel's separate loop: the same product.
    other = _NonLocal(n, 0.7, rows, cm_index, cm_w, rows.flip(0), uu_index.flip(0),
                      uu_w.flip(0), backend=backend).to(dtype)  # fmt: skip
    np.testing.assert_allclose(other(x.to(dtype)).double().numpy(), expected.numpy(),
                               atol=tol, rtol=tol)  # fmt: skip
    # The CG operator in one pass (numba) or torch: (base + N x + shift x) mask.
    base, shift = (torch.as_tensor(rng.standard_normal(n)) for _ in range(2))
    mask = torch.as_tensor(rng.random(n) < 0.7).double()
    total = nl.apply_sum(*(t.to(dtype).reshape(6, 10) for t in (x, base, shift, mask)))
    assert total.dtype == dtype and total.shape == (6, 10)
    expected = (base + expected + shift * x) * mask
    np.testing.assert_allclose(total.double().numpy().ravel(), expected, atol=tol, rtol=tol)


def test_numba_is_imported_on_first_use_only():
    """``import numba`` costs ~0.6 s: the ifm modules import their kernels lazily."""
    import subprocess
    import sys

    code = (
        "import sys, napari_hrmatt, napari_hrmatt.models.ifm, napari_hrmatt.models._trim; "
        "from napari_hrmatt.models import get_model; get_model('ifm', 'cpu'); "
        "print('NUMBA', 'numba' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "NUMBA False" in result.stdout
