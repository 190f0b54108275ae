"""The weight-free solver against PyMatting (same Laplacian, same epsilon and window)."""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from napari_hrmatt.models import get_model, list_models, resolve_device
from napari_hrmatt.models.closed_form import _cf_stencil, laplacian_product, solve_closed_form

from .conftest import has_cuda, make_scene

pymatting = pytest.importorskip("pymatting")


@pytest.fixture(scope="module")
def small():
    image, trimap, alpha = make_scene(40, 52, seed=3, band=3)
    return image.astype(np.float64), trimap, alpha


@pytest.mark.parametrize("radius", [1, 2])
def test_laplacian_product_equals_pymatting_matrix(small, radius):
    image, _, _ = small
    p = np.random.default_rng(0).random(image.shape[:2])
    L = pymatting.cf_laplacian(image, epsilon=1e-7, radius=radius)
    expected = (L @ p.ravel()).reshape(p.shape)
    got = laplacian_product(image, p, radius=radius, eps=1e-7)
    np.testing.assert_allclose(got, expected, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("radius", [1, 2])
def test_stencil_built_for_some_rows_is_exact_there(radius):
    """``rows=`` builds each strip only over the columns holding a needed pixel: at those
    pixels every coefficient equals the whole build (strips cut across, masks touching
    the array's edges and strips without a needed pixel included)."""
    rng = np.random.default_rng(1)
    image = torch.tensor(rng.random((3, 70, 90)))
    rows = np.zeros((70, 90), bool)
    rows[5:20, 30:34] = True  # one strip, narrow columns
    rows[33:36, 0:3] = True  # at the left edge, across the strip boundary at 32
    rows[40:60, 85:] = True  # the right edge; the strip of rows 64-69 needs nothing
    rows[50, 40] = True
    whole = _cf_stencil(image, radius, 1e-5, strip=32).coef
    part = _cf_stencil(image, radius, 1e-5, rows=rows).coef
    assert torch.equal(part[:, torch.as_tensor(rows)], whole[:, torch.as_tensor(rows)])
    assert not part[:, 64:].any()  # skipped strip: left zero
    assert not part[:, 5:20, 40:80].any()  # outside a strip's columns: left zero


def test_converged_solve_agrees_with_pymatting_cf(small):
    """Tolerance: 2e-3 max abs. PyMatting's known pixels are soft constraints
    (lambda = 100), ours are hard; the converged difference is ~1e-3 or less."""
    image, trimap, _ = small
    ours = solve_closed_form(
        torch.tensor(np.moveaxis(image, -1, 0)),
        torch.tensor(trimap),
        tol=1e-10,
        maxiter=3000,
        dtype=torch.float64,
    ).numpy()
    theirs = pymatting.estimate_alpha_cf(image, trimap / 255.0)
    assert np.abs(ours - theirs).max() < 2e-3
    assert np.abs(ours - theirs).mean() < 1e-4


def test_default_float32_solve_is_close_to_converged(small):
    image, trimap, _ = small
    im, t = torch.tensor(np.moveaxis(image, -1, 0)), torch.tensor(trimap)
    exact = solve_closed_form(im, t, tol=1e-10, maxiter=3000, dtype=torch.float64).numpy()
    fast = solve_closed_form(im, t).numpy()  # defaults: float32, tol 1e-5
    assert fast.dtype == np.float32
    assert np.abs(fast - exact).mean() < 2e-3


def test_registry():
    assert "cf" in list_models()
    assert get_model("cf", "cpu") is get_model("cf", "cpu")  # cached per process
    with pytest.raises(ValueError, match="unknown model"):
        get_model("nope")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


@pytest.mark.skipif(has_cuda(), reason="checks the no-GPU error")
def test_cuda_request_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device")
def test_cuda_matches_cpu(small):
    image, trimap, _ = small
    cpu = get_model("cf", "cpu").global_alpha(image.astype(np.float32), trimap)
    gpu = get_model("cf", "cuda").global_alpha(image.astype(np.float32), trimap)
    assert np.abs(cpu - gpu).max() < 1e-3


@pytest.mark.parametrize("prior", [0.05, 2.0])
def test_prior_solves_the_screened_problem(small, prior):
    """refine(prior=lambda) solves (L_UU + lambda I) a_U = -L_UK a_K + lambda g_U:
    checked against a dense solve with PyMatting's Laplacian matrix."""
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap, _ = small
    g = np.random.default_rng(1).random(trimap.shape)  # the "global alpha"
    model = ClosedFormModel(tol=1e-12, maxiter=3000, dtype="float64", prior=prior)
    got = model.refine(image, trimap, g.astype(np.float32))
    L = pymatting.cf_laplacian(image, epsilon=1e-7, radius=1).toarray()
    u = (trimap == 128).ravel()
    known = np.where(trimap == 255, 1.0, 0.0).ravel()
    a_u = np.linalg.solve(
        L[u][:, u] + prior * np.eye(u.sum()), -L[u][:, ~u] @ known[~u] + prior * g.ravel()[u]
    )
    expected = known.copy()
    expected[u] = np.clip(a_u, 0, 1)
    np.testing.assert_allclose(got.ravel(), expected, atol=2e-5)  # float32 result


def test_prior_zero_is_the_plain_solve_and_negative_is_refused(small):
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap, _ = small
    g = np.full(trimap.shape, 0.5, np.float32)
    im, t = torch.tensor(np.moveaxis(image, -1, 0)), torch.tensor(trimap)
    plain = solve_closed_form(im, t, torch.tensor(g), tol=1e-8).numpy()
    zero = ClosedFormModel(tol=1e-8, prior=0.0).refine(image, trimap, g)
    np.testing.assert_allclose(zero, plain, atol=1e-4)  # float32, cropped box
    default = ClosedFormModel(tol=1e-8).refine(image, trimap, g)
    assert 1e-5 < np.abs(default - zero).mean() < 0.05  # the default prior (1e-3) acts
    strong = ClosedFormModel(tol=1e-8, prior=1e4).refine(image, trimap, g)
    assert np.abs(strong - g)[trimap == 128].max() < 1e-2  # the prior wins
    with pytest.raises(ValueError, match="prior must be 0 or more"):
        ClosedFormModel(prior=-1)


def test_cascade_and_crop_reach_the_same_solution():
    """The cascade only changes the initial guess and the crop only drops rows and
    columns no window of an unknown pixel reaches: converged, all agree."""
    image, trimap, _ = make_scene(72, 96, seed=5, band=6)
    trimap = trimap.copy()
    trimap[:, :20] = 0  # a wide known margin, so the crop is a real crop
    im, t = torch.tensor(np.moveaxis(image, -1, 0)).double(), torch.tensor(trimap)
    kw = {"tol": 1e-10, "maxiter": 3000, "dtype": torch.float64}
    plain = solve_closed_form(im, t, cascade=0, **kw).numpy()
    cascaded = solve_closed_form(im, t, cascade=2, **kw).numpy()
    np.testing.assert_allclose(cascaded, plain, atol=1e-6)
    theirs = pymatting.estimate_alpha_cf(image.astype(np.float64), trimap / 255.0)
    assert np.abs(plain - theirs).mean() < 1e-3  # the crop did not change the problem


def test_thread_policy():
    from napari_hrmatt._threads import free_cores, solver_threads

    assert free_cores(load=0.0, cores=2) == 2
    assert free_cores(load=1.2, cores=2) == 1
    assert free_cores(load=9.0, cores=2) == 1
    before = torch.get_num_threads()
    with solver_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be 1 or more"), solver_threads(0):
        pass


# --- smoothed aggregation (issue 12) ---------------------------------------------------


def _textured(height, width, seed, channels=3):
    """A soft edge over a strongly textured background, unknown everywhere but a frame:
    the case where piecewise-constant multigrid needs many CG iterations."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    alpha = np.clip((xx - width / 2 - 8 * np.sin(yy / 7)) / 20 + 0.5, 0, 1)
    fg = 0.5 + 0.4 * np.sin(yy[..., None] / (3 + np.arange(channels)))
    bg = ndi.gaussian_filter(rng.random((height, width, channels)), (2, 2, 0))
    bg = (bg - bg.min()) / (bg.max() - bg.min())  # correlated texture, full contrast
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    trimap = np.full((height, width), 128, np.uint8)
    trimap[:, :3], trimap[:, -3:] = 0, 255
    return image, trimap


def _sa_stencil(image, trimap):
    from napari_hrmatt.models._stencil import restrict_to_unknown
    from napari_hrmatt.models.closed_form import _cf_stencil

    im = torch.tensor(np.moveaxis(image, -1, 0)).double()
    op = _cf_stencil(im, 1, 1e-7, dtype=torch.float64)
    unknown = torch.tensor(trimap == 128)
    return im, restrict_to_unknown(op, unknown), unknown


def test_sa_preconditioner_is_symmetric_and_positive():
    from napari_hrmatt.models._aggregation import SmoothedAggregation

    image, trimap = _textured(60, 70, seed=1)
    im, op, unknown = _sa_stencil(image, trimap)
    sa = SmoothedAggregation(op, unknown, im, coarsest=100)
    assert sa.levels >= 2  # a real multilevel cycle, not just the direct solve
    rng = np.random.default_rng(0)
    u = unknown.double()
    for _ in range(3):
        x, y = (torch.tensor(rng.standard_normal(trimap.shape)) * u for _ in range(2))
        xmy, ymx = float((x * sa(y) * u).sum()), float((y * sa(x) * u).sum())
        assert xmy == pytest.approx(ymx, rel=1e-9, abs=1e-12)
        assert float((x * sa(x) * u).sum()) > 0


def _iterations(image, trimap, precond, tol=1e-6):
    from napari_hrmatt.models.closed_form import _cf_stencil, _pcg

    im = torch.tensor(np.moveaxis(image, -1, 0)).double()
    unknown = torch.tensor(trimap == 128)
    op = _cf_stencil(im, 1, 1e-7, dtype=torch.float64)  # _pcg restricts it itself
    x = torch.tensor(trimap == 255).double()
    x[unknown] = 0.5
    return _pcg(op, x, unknown, 5000, tol, precond=precond, image=im)


def test_sa_needs_far_fewer_iterations_than_mg_on_texture():
    image, trimap = _textured(90, 100, seed=2)
    x_sa, it_sa = _iterations(image, trimap, "sa")
    x_mg, it_mg = _iterations(image, trimap, "mg")
    assert it_sa * 3 < it_mg, (it_sa, it_mg)
    assert np.abs((x_sa - x_mg).numpy()).max() < 1e-3  # same problem, tol 1e-6


@pytest.mark.parametrize(
    "case", ["textured", "tiny_region", "one_pixel", "flat_colour", "grey", "two_channels"]
)
def test_sa_and_mg_reach_the_same_solution(case):
    image, trimap = _textured(64, 80, seed=3)
    if case == "tiny_region":
        trimap = np.where(trimap == 128, 0, trimap).astype(np.uint8)
        trimap[30:33, 40:43] = 128
    elif case == "one_pixel":
        trimap = np.where(trimap == 128, 0, trimap).astype(np.uint8)
        trimap[20, 50] = 128
    elif case == "flat_colour":  # every aggregate constant: colour vectors dropped
        image = np.full_like(image, 0.4)
        image[:, 40:] = 0.7
    elif case == "grey":
        image = image.mean(-1, keepdims=True)
    elif case == "two_channels":
        image = image[..., :2]
    im, t = torch.tensor(np.moveaxis(image, -1, 0)), torch.tensor(trimap)
    kw = {"tol": 1e-11, "maxiter": 5000, "dtype": torch.float64}
    sa = solve_closed_form(im, t, precond="sa", **kw).numpy()
    mg = solve_closed_form(im, t, precond="mg", cascade=0, **kw).numpy()
    assert np.isfinite(sa).all()
    np.testing.assert_allclose(sa, mg, atol=1e-6)


def test_sa_with_prior_in_refine_matches_mg():
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap = _textured(64, 72, seed=4)
    coarse = np.full(trimap.shape, 0.5)
    kw = {"tol": 1e-11, "dtype": "float64", "maxiter": 5000}
    sa = ClosedFormModel(precond="sa", **kw).refine(image, trimap, coarse)
    mg = ClosedFormModel(precond="mg", **kw).refine(image, trimap, coarse)
    np.testing.assert_allclose(sa, mg, atol=1e-5)


def test_bad_precond_is_refused():
    from napari_hrmatt.models import parse_options
    from napari_hrmatt.models.closed_form import ClosedFormModel

    assert ClosedFormModel(**parse_options(["precond=mg"])).precond == "mg"
    assert ClosedFormModel().precond == "sa"
    with pytest.raises(ValueError, match="precond must be one of"):
        ClosedFormModel(precond="amg")
    image, trimap = _textured(20, 20, seed=0)
    with pytest.raises(ValueError, match="precond must be one of"):
        im = torch.tensor(np.moveaxis(image, -1, 0))
        solve_closed_form(im, torch.tensor(trimap), precond="x")


def test_trim_option_plumbing_and_validation():
    from napari_hrmatt.models.closed_form import ClosedFormModel

    plain = ClosedFormModel()
    assert plain.trim_opts["trim"] == "none"  # default unchanged
    assert plain.overlap(1) == 8  # 4 + 2r
    trimmed = get_model("cf", "cpu", trim="patch", trim_search=4)
    assert trimmed.trim_opts == {
        "trim": "patch", "trim_search": 4, "trim_close": 0.25, "trim_far": 0.9, "trim_reg": 1e-4
    }  # fmt: skip
    assert trimmed.overlap(1) == 16 and trimmed.overlap(4) == 24  # 4 f + 2 + (4 + 1)
    for bad in (
        {"trim": "yes"},
        {"trim_search": -1},
        {"trim_search": 2.5},
        {"trim_close": -0.1},
        {"trim_reg": 0},
        {"trim_far": float("nan")},
        {"trim_close": 1.0, "trim_far": 0.5},
    ):
        with pytest.raises(ValueError, match="trim"):
            ClosedFormModel(**bad)


def test_trimmed_pixels_are_exact_in_cf():
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap, _ = make_scene(48, 64, seed=4)
    model = ClosedFormModel(trim="patch", trim_search=6)
    trimmed = model._trimmed(image, trimap)
    changed = trimmed != trimap
    assert changed.any() and (trimap[changed] == 128).all()
    assert (trimmed == 128).any()  # something is left to solve
    for alpha in (
        model.global_alpha(image, trimap),
        model.refine(image, trimap, np.full(trimap.shape, 0.5, np.float32)),
    ):
        np.testing.assert_array_equal(alpha[trimap != 128], trimap[trimap != 128] / 255.0)
        np.testing.assert_array_equal(alpha[changed], trimmed[changed] / 255.0)
    # Off, the same pixels are solved, not labelled.
    assert not np.array_equal(
        ClosedFormModel().global_alpha(image, trimap)[changed], trimmed[changed] / 255.0
    )


def test_update_global_with_trim_matches_whole_trimming():
    """update_global trims on its box grown by the trimming's reach: the labels inside
    the box are those of whole-image trimming, so a re-solve of the whole image as box
    gives the global alpha, and trimmed pixels inside a sub-box are exact."""
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap, _ = make_scene(48, 64, seed=4)
    model = ClosedFormModel(trim="patch", trim_search=6)
    trimmed = model._trimmed(image, trimap)
    prev = np.full(trimap.shape, 0.5, np.float32)
    box = (slice(10, 40), slice(12, 50))
    out = model.update_global(image, trimap, prev, box)
    changed = (trimmed != trimap)[box]
    assert changed.any()
    np.testing.assert_array_equal(out[box][changed], trimmed[box][changed] / 255.0)
    np.testing.assert_array_equal(
        np.delete(out, np.s_[10:40], 0), np.delete(prev, np.s_[10:40], 0)
    )


def test_chunked_equals_whole_with_trimming(scene):
    """At the derived overlap (which adds trim_search + 1): mean < 1e-3, max < 0.05;
    measured 1.9e-5 and 0.0030 (default free cut edge; 1.0e-4 and 0.021 pinned), against
    8.6e-4 and 0.077 (pinned 1.3e-3 and 0.14) at plain cf's overlap of 8."""
    from napari_hrmatt import estimate_alpha

    image, trimap, _ = scene
    options = {"tol": 1e-7, "maxiter": 2000, "trim": "patch", "trim_search": 4}
    model = get_model("cf", "cpu", **options)
    assert (model._trimmed(image, trimap) != trimap).sum() > 100  # trimming does trim
    run = {"model": "cf", "global_size": 800, "model_options": options}
    whole = estimate_alpha(image, trimap, chunks=10_000, **run)
    diff = np.abs(estimate_alpha(image, trimap, chunks=37, **run) - whole)
    assert diff.mean() < 1e-3
    assert diff.max() < 0.05
    # Without the trimming's reach (overlap 8 = plain cf's) blocks trim differently:
    # the max bound above fails.
    short = np.abs(estimate_alpha(image, trimap, chunks=37, overlap=8, **run) - whole)
    assert short.max() > 0.05


def test_cut_edge_options():
    from napari_hrmatt.models.closed_form import ClosedFormModel

    assert ClosedFormModel().cut_edge == "free"  # the default with the prior (1e-3)
    assert ClosedFormModel(prior=0).cut_edge == "pinned"  # a free edge needs the prior
    assert ClosedFormModel(cut_edge="pinned").cut_edge == "pinned"
    with pytest.raises(ValueError, match="needs prior > 0"):
        ClosedFormModel(prior=0, cut_edge="free")
    with pytest.raises(ValueError, match="cut_edge"):
        ClosedFormModel(cut_edge="soft")


def _thin_band(size=120, seed=5):
    """A diagonal soft edge with a 3-px unknown band: few unknowns in a full-size box."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    d = (xx - yy + 4 * np.sin(yy / 9)) / np.sqrt(2)
    alpha = np.clip(0.5 - d / 2, 0, 1)
    fg = np.stack([0.9 + 0 * xx, 0.5 + 0.3 * np.sin(yy / 7), 0.2 + 0 * xx], -1)
    bg = ndi.gaussian_filter(rng.random((size, size, 3)), (2, 2, 0))
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    trimap = np.where(np.abs(d) <= 1.5, 128, np.where(d < 0, 255, 0)).astype(np.uint8)
    return image, trimap


@pytest.mark.parametrize(("prior", "cut_edge"), [(1e-3, "free"), (0.5, "free"), (1e-3, "pinned")])
def test_sparse_path_solves_the_same_screened_problem(prior, cut_edge, monkeypatch):
    """A thin band takes the sparse direct path (only the windows touching unknown pixels);
    it is checked against a dense solve with PyMatting's matrix and against the stencil
    path (CG) on the same block, with free and with pinned cut edges."""
    from napari_hrmatt.models import _sparse_cf
    from napari_hrmatt.models.closed_form import ClosedFormModel

    image, trimap = _thin_band()
    u = (trimap == 128).ravel()
    assert _sparse_cf.use_sparse(int(u.sum()), trimap.size)
    calls = []
    solve = _sparse_cf.solve_sparse
    monkeypatch.setattr(
        "napari_hrmatt.models.closed_form.solve_sparse",
        lambda *a, **k: calls.append(1) or solve(*a, **k),
    )
    g = np.random.default_rng(1).random(trimap.shape).astype(np.float32)
    model = ClosedFormModel(
        tol=1e-12, maxiter=5000, dtype="float64", prior=prior, cut_edge=cut_edge
    )
    got = model.refine(image, trimap, g, (True, False, True, False))
    assert calls == [1]
    # the same problem densely: a pinned ring (cut top and left edges) is known; a free
    # edge is the block's own border (only windows inside it, as PyMatting's matrix)
    pinned = trimap.copy()
    ring = np.zeros(trimap.shape, bool)
    if cut_edge == "pinned":
        ring[0, :] = ring[:, 0] = True
    ring &= trimap == 128
    pinned[ring] = 255
    known = np.where(ring, g, trimap / 255.0).ravel()
    uu = (pinned == 128).ravel()
    L = pymatting.cf_laplacian(image, epsilon=1e-7, radius=1).tocsr()  # sparse: 14 400 px
    rows = L[np.flatnonzero(uu)]
    rhs = -(rows[:, np.flatnonzero(~uu)] @ known[~uu]) + prior * g.ravel()[uu]
    a_u = np.linalg.solve(rows[:, np.flatnonzero(uu)].toarray() + prior * np.eye(uu.sum()), rhs)
    expected = known.copy()
    expected[uu] = np.clip(a_u, 0, 1)
    np.testing.assert_allclose(got.ravel(), expected, atol=2e-5)
    monkeypatch.setattr(_sparse_cf, "SPARSE_MAX_FILL", 0.0)  # the stencil path
    stencil = model.refine(image, trimap, g, (True, False, True, False))
    assert calls == [1]
    np.testing.assert_allclose(got, stencil, atol=2e-5)


def test_sparse_path_is_only_for_sparse_unknowns():
    from napari_hrmatt.models._sparse_cf import use_sparse

    assert use_sparse(1000, 100_000)
    assert not use_sparse(0, 100_000)
    assert not use_sparse(50_000, 100_000)  # a box mostly unknown: the stencil path
    assert not use_sparse(100_000, 10_000_000)  # too many for a direct factor
