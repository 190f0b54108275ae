"""Tests for foreground estimation (napari_hrmatt.foreground)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt._foreground_solver import foreground_overlap, make_plan
from napari_hrmatt.foreground import estimate_foreground
from napari_hrmatt.image import as_float_alpha, as_float_image
from napari_hrmatt.sample import make_sample

from .conftest import has_cuda

# A global pass this small forces coarse level G = 2 and a fine pass on small images.
GLOBAL = 3000


def smooth_composite(shape=(120, 176), seed=0):
    """Known smooth F and B (the method's prior), the sample's hairy alpha.

    Returns ``(image, alpha, F, B)`` with image uint8, the others float32.
    """
    h, w = shape
    _, _, alpha = make_sample(shape, seed=seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    fg = np.stack(
        [0.85 + 0.1 * np.sin(yy / 17), 0.5 + 0.2 * np.cos(xx / 23), 0.2 + 0 * xx], -1
    ).astype(np.float32)
    bg = np.stack(
        [0.15 + 0 * xx, 0.35 + 0.15 * np.sin((xx + yy) / 13), 0.75 - 0.1 * np.cos(yy / 11)], -1
    ).astype(np.float32)
    a = alpha[..., None]
    image = np.rint(255 * (a * fg + (1 - a) * bg)).astype(np.uint8)
    return image, alpha, fg, bg


@pytest.fixture(scope="module")
def smooth():
    return smooth_composite()


@pytest.fixture(scope="module")
def hairy():
    # The sample itself: textured background and noisy foreground (harder).
    return make_sample((150, 230), seed=3, return_colors=True)


@pytest.fixture(scope="module")
def whole(hairy):
    image, _, alpha, _, _ = hairy
    return estimate_foreground(
        image, alpha, return_background=True, device="cpu", global_size=GLOBAL
    )


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("global_size", [GLOBAL, 1e6])
def test_reconstructs_image_and_finds_true_foreground(smooth, global_size):
    image, alpha, fg, bg = smooth
    F, B = estimate_foreground(
        image, alpha, return_background=True, device="cpu", global_size=global_size
    )
    for x in (F, B):
        assert x.shape == fg.shape and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 1
    a = alpha[..., None]
    err = np.abs(a * F + (1 - a) * B - image / 255.0)
    # The data term is fitted up to clipping and 8-bit rounding.
    assert err.mean() < 0.002 and np.percentile(err, 99) < 0.02
    sel = alpha > 0.1
    f_err = np.abs(F - fg)[sel].mean()
    naive = np.abs(image / 255.0 - fg)[sel].mean()
    # Measured 0.010 (naive F = image: 0.16).
    assert f_err < 0.02 and f_err < 0.25 * naive
    b_err = np.abs(B - bg)[alpha < 0.9].mean()
    assert b_err < 0.02


def test_hairy_sample_beats_naive_foreground(hairy, whole):
    image, _, alpha, fg, bg = hairy
    F, B = whole
    a = alpha[..., None]
    err = np.abs(a * F + (1 - a) * B - image / 255.0)
    assert err.mean() < 0.005 and np.percentile(err, 99) < 0.05
    sel = alpha > 0.1
    # Measured 0.057 against 0.134 for F = image (textured B, noisy F: harder).
    assert np.abs(F - fg)[sel].mean() < 0.6 * np.abs(image / 255.0 - fg)[sel].mean()


def test_close_to_pymatting(hairy):
    pymatting = pytest.importorskip("pymatting")
    image, _, alpha, fg, _ = hairy
    ours = estimate_foreground(image, alpha, device="cpu")
    ref = pymatting.estimate_foreground_ml(image / 255.0, alpha.astype(np.float64))
    sel = alpha > 0
    # Same cost, different sweeps (over-relaxed red-black vs raster order) and level
    # sizes: mean |difference| measured 0.015; errors 0.083 (ours), 0.088 (PyMatting).
    assert np.abs(ours - ref)[sel].mean() < 0.03
    ours_err = np.abs(ours - fg)[sel].mean()
    ref_err = np.abs(ref - fg)[sel].mean()
    assert ours_err < 1.1 * ref_err + 0.003


# --------------------------------------------------------------------------- chunking


def _max_diff(a, b, alpha):
    """Largest difference where the colours are defined: F where alpha > 0, B where < 1."""
    (fa, ba), (fb, bb) = a, b
    return max(np.abs(fa - fb)[alpha > 0].max(), np.abs(ba - bb)[alpha < 1].max())


@pytest.mark.parametrize("chunks", [40, 56, 100])
def test_chunked_equals_whole(hairy, whole, chunks):
    image, _, alpha, _, _ = hairy
    chunked = estimate_foreground(
        image, alpha, return_background=True, device="cpu", global_size=GLOBAL, chunks=chunks
    )
    # 150 x 230 is not a multiple of any of these chunk sizes.
    assert _max_diff(chunked, whole, alpha) < 1e-5


def test_too_small_overlap_leaves_seams(hairy, whole):
    image, _, alpha, _, _ = hairy
    plan = make_plan(alpha.shape, GLOBAL, 10, 2, 32, 1e-5, 1.0)
    assert plan.glevel == 2 and foreground_overlap(plan) == 12
    chunked = estimate_foreground(
        image, alpha, return_background=True, device="cpu", global_size=GLOBAL,
        chunks=40, overlap=4,
    )  # fmt: skip
    # Proves the chunked == whole test can fail: measured 1.9e-2.
    assert _max_diff(chunked, whole, alpha) > 1e-3


def test_dask_input_is_lazy_and_matches(hairy, whole):
    image, _, alpha, _, _ = hairy
    d_image = da.from_array(image, chunks=(37, 61, 3))
    d_alpha = da.from_array(alpha, chunks=(50, 45))
    F, B = estimate_foreground(
        d_image, d_alpha, return_background=True, device="cpu", global_size=GLOBAL, chunks=40
    )
    assert isinstance(F, da.Array) and isinstance(B, da.Array)
    assert F.shape == image.shape and F.dtype == np.float32
    F, B = da.compute(F, B)
    assert _max_diff((F, B), whole, alpha) < 1e-5
    eager = estimate_foreground(d_image, d_alpha, device="cpu", global_size=GLOBAL, compute=True)
    assert isinstance(eager, np.ndarray)
    lazy = estimate_foreground(image, alpha, device="cpu", global_size=GLOBAL, compute=False)
    assert isinstance(lazy, da.Array)


def _block_result(hairy, plan, tiles, monkeypatch, shrink=False):
    """The whole hairy sample as one block (so every image border is a block border),
    swept densely (``tiles=None``) or in tiles only (never a dense level)."""
    import napari_hrmatt.foreground as fg_mod
    from napari_hrmatt._foreground_solver import plan_tiles, solve_coarse

    image, _, alpha, _, _ = hairy
    block = np.concatenate([as_float_image(image), alpha[..., None]], axis=2)
    step = 1 << plan.glevel
    coarse = solve_coarse(block[::step, ::step], plan, "cpu")

    def tiled(frac, *args):
        if shrink:  # negative control: forget the needed pixels of the lower half
            frac = frac.clone()
            frac[frac.shape[0] // 2 :] = False
        return plan_tiles(frac, *args, dense=False)

    monkeypatch.setattr(fg_mod, "plan_tiles", tiled)
    return fg_mod.foreground_block(
        block, coarse=coarse, plan=plan, origin=(0, 0), return_background=True, tiles=tiles
    )


@pytest.mark.parametrize(
    ("n_finest", "n_big", "sweeps"),
    [(1, 2, (1, 2, 2)), (2, 2, (2, 2, 2)), (1, 3, (1, 3, 3)), ((1, 1), 2, (1, 1, 2))],
)
@pytest.mark.parametrize("tiles", [(16,), (32,), (16, 32, 64, 128)])
def test_banded_tiles_equal_dense_sweeps(hairy, n_finest, n_big, sweeps, tiles, monkeypatch):
    # Tiles with a 2 n halo, needed pixels propagated level by level: the pixels that
    # matter (F where alpha > 0, B where alpha < 1) equal sweeping every level whole.
    _, _, alpha, _, _ = hairy
    plan = make_plan(alpha.shape, 600, 10, n_big, 32, 1e-5, 1.0, 1.5, n_finest, 1.2)
    assert plan.glevel == 3 and plan.iterations[:3] == sweeps
    dense = _block_result(hairy, plan, None, monkeypatch)
    banded = _block_result(hairy, plan, tiles, monkeypatch)
    c = dense.shape[2] // 2
    split = ((dense[..., :c], dense[..., c:]), (banded[..., :c], banded[..., c:]))
    assert _max_diff(*split, alpha) < 1e-6


def test_banded_tiles_check_can_fail(hairy, monkeypatch):
    _, _, alpha, _, _ = hairy
    plan = make_plan(alpha.shape, 600, 10, 2, 32, 1e-5, 1.0, 1.5, 1)
    dense = _block_result(hairy, plan, None, monkeypatch)
    banded = _block_result(hairy, plan, (32,), monkeypatch, shrink=True)
    c = dense.shape[2] // 2
    split = ((dense[..., :c], dense[..., c:]), (banded[..., :c], banded[..., c:]))
    assert _max_diff(*split, alpha) > 1e-3


def test_finest_sweeps_option(smooth):
    image, alpha, _, _ = smooth
    one = estimate_foreground(image, alpha, device="cpu", global_size=GLOBAL)
    two = estimate_foreground(
        image, alpha, device="cpu", global_size=GLOBAL, n_finest_iterations=2
    )
    assert np.abs(one - two)[(alpha > 0) & (alpha < 1)].max() > 1e-4
    with pytest.raises(ValueError, match="sweeps"):
        estimate_foreground(image, alpha, device="cpu", n_finest_iterations=-1)
    with pytest.raises(ValueError, match="sweeps"):
        estimate_foreground(image, alpha, device="cpu", n_finest_iterations=(1, -1))


def test_finest_sweeps_per_level_and_their_relaxation(smooth):
    image, alpha, _, _ = smooth
    soft = (alpha > 0) & (alpha < 1)
    plan = make_plan(alpha.shape, GLOBAL, 10, 2, 32, 1e-5, 1.0, 1.5, (1, 1), 1.2)
    assert plan.iterations[:3] == (1, 1, 2)
    assert (plan.relax(1), plan.relax(2)) == (1.2, 1.5)
    assert make_plan(alpha.shape, GLOBAL, 10, 2, 32, 1e-5, 1.0, 1.5, 1).relax(1) == 1.5

    def run(**kw):
        return estimate_foreground(image, alpha, device="cpu", global_size=GLOBAL, **kw)

    default = run()
    # The defaults are one sweep on levels 0 and 1 at relaxation_once ...
    assert np.array_equal(default, run(n_finest_iterations=(1, 1), relaxation_once=1.2))
    # ... and each of the two changes the result.
    assert np.abs(default - run(n_finest_iterations=1))[soft].max() > 1e-4
    assert np.abs(default - run(relaxation_once=1.5))[soft].max() > 1e-4


# --------------------------------------------------------------------------- alpha 0 / 1


def test_known_regions(whole, hairy):
    image, _, alpha, _, _ = hairy
    F, B = whole
    img = as_float_image(image)
    np.testing.assert_array_equal(F[alpha == 1], img[alpha == 1])
    np.testing.assert_array_equal(B[alpha == 0], img[alpha == 0])
    assert np.isfinite(F).all() and np.isfinite(B).all()


@pytest.mark.parametrize("value", [0.0, 1.0])
@pytest.mark.parametrize("chunks", [40, 1024])
def test_constant_alpha(value, chunks):
    image, _, _ = make_sample((90, 110), seed=5)
    alpha = np.full(image.shape[:2], value, np.float32)
    F, B = estimate_foreground(
        image, alpha, return_background=True, device="cpu", global_size=GLOBAL, chunks=chunks
    )
    img = as_float_image(image)
    if value == 1:
        np.testing.assert_array_equal(F, img)
    else:
        np.testing.assert_array_equal(B, img)
        # F is undetermined: a smooth value in range, not garbage.
        assert np.isfinite(F).all() and F.min() >= 0 and F.max() <= 1


def test_binary_alpha_needs_no_solve(hairy):
    image, trimap, _, _, _ = hairy
    alpha = (trimap == 255).astype(np.float32)
    F = estimate_foreground(image, alpha, device="cpu", global_size=GLOBAL, chunks=40)
    np.testing.assert_array_equal(F[alpha == 1], as_float_image(image)[alpha == 1])


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("kind", ["uint8", "uint16", "float64", "grey"])
def test_input_types(smooth, kind):
    image, alpha, _, _ = smooth
    ref = estimate_foreground(image, alpha, device="cpu")
    if kind == "uint16":
        x, tol = image.astype(np.uint16) * 257, 1e-5
    elif kind == "float64":
        x, tol = image / 255.0, 1e-5
    elif kind == "grey":
        x, tol = image[..., 1], None
    else:
        x, tol = image, 0
    F = estimate_foreground(x, (alpha * 255).round().astype(np.uint8), device="cpu")
    assert F.dtype == np.float32
    if tol is None:
        assert F.shape == (*image.shape[:2], 1)
    else:
        assert F.shape == image.shape
        sel = alpha > 0
        # uint8 alpha moves values by up to half a grey level.
        assert np.abs(F - ref)[sel].mean() < 0.01


def test_rgba_image_drops_alpha_channel(smooth):
    image, alpha, _, _ = smooth
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], -1)
    with pytest.warns(UserWarning, match="alpha channel"):
        F = estimate_foreground(rgba, alpha, device="cpu")
    np.testing.assert_array_equal(F, estimate_foreground(image, alpha, device="cpu"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"alpha": np.zeros((10, 12), np.float32)}, "same pixels"),
        ({"alpha": np.full((20, 24), np.nan, np.float32)}, "NaN"),
        ({"alpha": np.full((20, 24), 1.5, np.float32)}, r"\[0, 1\]"),
        ({"alpha": np.zeros((20, 24), bool)}, "dtype"),
        ({"image": np.full((20, 24, 3), 2.0, np.float32)}, r"\[0, 1\]"),
        ({"chunks": 0}, "chunks"),
        ({"overlap": -1}, "overlap"),
        ({"global_size": 0}, "global_size"),
        ({"relaxation": 2.0}, "relaxation"),
        ({"relaxation_once": 0.0}, "relaxation_once"),
    ],
)
def test_bad_input(change, match):
    kwargs = {
        "image": np.zeros((20, 24, 3), np.uint8),
        "alpha": np.full((20, 24), 0.5, np.float32),
        "device": "cpu",
    }
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        estimate_foreground(kwargs.pop("image"), kwargs.pop("alpha"), **kwargs)


@pytest.mark.skipif(has_cuda(), reason="a CUDA device is present")
def test_cuda_without_gpu_is_a_clear_error(smooth):
    image, alpha, _, _ = smooth
    with pytest.raises(RuntimeError, match="CUDA"):
        estimate_foreground(image, alpha, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs CUDA")
def test_cuda_matches_cpu(hairy, whole):
    image, _, alpha, _, _ = hairy
    gpu = estimate_foreground(
        image, alpha, return_background=True, device="cuda", global_size=GLOBAL, chunks=40
    )
    assert _max_diff(gpu, whole, alpha) < 1e-4


@pytest.mark.parametrize("bad", [np.nan, 1.01, -0.01])
def test_bad_alpha_pixel_off_the_global_grid(bad):
    # The global pass reads every 2^G-th pixel only: the blocks validate the rest.
    alpha = np.full((64, 80), 0.5, np.float32)
    alpha[33, 47] = bad
    with pytest.raises(ValueError, match="NaN" if np.isnan(bad) else r"\[0, 1\]"):
        estimate_foreground(np.zeros((64, 80, 3), np.uint8), alpha, global_size=100,
                            chunks=32, device="cpu")  # fmt: skip


def test_alpha_dtypes_give_the_same_result(smooth):
    image, alpha, _, _ = smooth
    a8 = (alpha * 255).round().astype(np.uint8)
    for a in (a8, a8.astype(np.uint16) * np.uint16(257), a8 / 255.0):
        np.testing.assert_array_equal(
            estimate_foreground(image, a, device="cpu"),
            estimate_foreground(image, as_float_alpha(a), device="cpu"),
        )
    # Values a hair outside [0, 1] are clipped, as by as_float_alpha.
    a = np.where(alpha > 0.99, np.float32(1.0005), alpha)
    np.testing.assert_array_equal(
        estimate_foreground(image, a, device="cpu"),
        estimate_foreground(image, np.clip(a, 0, 1), device="cpu"),
    )
