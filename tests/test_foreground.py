"""Tests for foreground estimation, cutouts and composites (napari_hrmatt.foreground)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt.foreground import (
    _plan,
    composite,
    cutout,
    estimate_foreground,
    foreground_overlap,
    parse_color,
)
from napari_hrmatt.image import as_float_image
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
    plan = _plan(alpha.shape, GLOBAL, 10, 2, 32, 1e-5, 1.0)
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


# --------------------------------------------------------------------------- cutout


@pytest.mark.parametrize("lazy", [False, True])
def test_cutout(smooth, lazy):
    image, alpha, _, _ = smooth
    F = estimate_foreground(image, alpha, device="cpu")
    a = da.from_array(alpha, chunks=50) if lazy else alpha
    rgba = cutout(image, a, foreground=F)
    assert isinstance(rgba, da.Array) == lazy
    rgba = np.asarray(rgba)
    assert rgba.shape == (*alpha.shape, 4) and rgba.dtype == np.float32
    np.testing.assert_array_equal(rgba[..., :3], F)
    np.testing.assert_array_equal(rgba[..., 3], alpha)
    # Without a foreground, cutout estimates it.
    np.testing.assert_array_equal(cutout(image, alpha, device="cpu"), rgba)


def test_cutout_of_grey_is_rgba(smooth):
    image, alpha, _, _ = smooth
    rgba = cutout(image[..., 0], alpha, device="cpu")
    assert rgba.shape == (*alpha.shape, 4)
    np.testing.assert_array_equal(rgba[..., 0], rgba[..., 2])


# --------------------------------------------------------------------------- composite


@pytest.mark.parametrize(
    ("value", "rgb"),
    [
        ("white", (1, 1, 1)),
        ("Black", (0, 0, 0)),
        ("#00ff00", (0, 1, 0)),
        ("#f00", (1, 0, 0)),
        ("0, 0, 255", (0, 0, 1)),
        ((0, 255, 0), (0, 1, 0)),
        ([0.5, 0.25, 1.0], (0.5, 0.25, 1.0)),
        (np.array([1.0, 1.0, 0.0], np.float32), (1, 1, 0)),
    ],
)
def test_parse_color(value, rgb):
    np.testing.assert_allclose(parse_color(value), rgb, atol=1e-6)


@pytest.mark.parametrize("value", ["chartreuse-ish", "#12345", (1, 2), (0, 0, 300), "1,2"])
def test_parse_color_rejects(value):
    with pytest.raises(ValueError, match="colour"):
        parse_color(value)


def test_composite_over_colour_and_image(smooth):
    image, alpha, fg, bg = smooth
    out = composite(fg, alpha, "white")
    a = alpha[..., None]
    np.testing.assert_allclose(out, a * fg + (1 - a), atol=1e-6)
    # Over the true background it rebuilds the image; as uint8, too.
    np.testing.assert_allclose(composite(fg, alpha, bg), image / 255.0, atol=0.5 / 255 + 1e-6)
    again = composite(fg, alpha, np.rint(bg * 255).astype(np.uint8))
    np.testing.assert_allclose(again, image / 255.0, atol=1 / 255 + 1e-6)
    lazy = composite(da.from_array(fg, chunks=40), alpha, (255, 255, 255))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), out, atol=1e-6)


def test_composite_estimated_foreground_removes_the_halo(smooth):
    image, alpha, fg, _ = smooth
    new_bg = (0.0, 1.0, 0.0)
    truth = composite(fg, alpha, new_bg)
    naive = composite(image, alpha, new_bg)
    ours = composite(estimate_foreground(image, alpha, device="cpu"), alpha, new_bg)
    soft = (alpha > 0) & (alpha < 1)
    assert np.abs(ours - truth)[soft].mean() < 0.3 * np.abs(naive - truth)[soft].mean()


def test_composite_grey_foreground_and_bad_background(smooth):
    image, alpha, _, _ = smooth
    out = composite(image[..., 0], alpha, "red")
    assert out.shape == (*alpha.shape, 3)
    with pytest.raises(ValueError, match="same size"):
        composite(image, alpha, np.zeros((5, 5, 3), np.uint8))


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    from napari_hrmatt.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), shape=(64, 96), seed=2)


@pytest.mark.parametrize(
    ("name", "background", "channels"),
    [
        ("cut.png", None, 4),
        ("cut.tif", None, 4),
        ("cut.zarr", None, 4),
        ("comp.png", "white", 3),
        ("comp.tif", "#336699", 3),
        ("comp2.png", "0.5,0.5,1", 3),
    ],
)
def test_cli_cutout(sample_files, tmp_path, name, background, channels, capsys):
    from napari_hrmatt.cli import main
    from napari_hrmatt.io import open_image

    image_path, trimap_path = sample_files
    out = tmp_path / name
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "--quiet"]
    argv += ["--device", "cpu"] + (["--background", background] if background else [])
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    written = open_image(out).compute()
    assert written.shape == (64, 96, channels)
    if channels == 4:
        _, trimap, _ = make_sample((64, 96), seed=2)
        # Known pixels keep their alpha exactly (Zarr keeps float32, PNG/TIFF 8 bits).
        top = 255 if written.dtype == np.uint8 else 1.0
        np.testing.assert_array_equal(written[..., 3][trimap == 255], top)
        np.testing.assert_array_equal(written[..., 3][trimap == 0], 0)
    # No temporary files are left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_cutout_alpha_through_temporary_zarr(sample_files, tmp_path, monkeypatch):
    import napari_hrmatt.foreground as fg_module
    from napari_hrmatt.cli import main
    from napari_hrmatt.io import open_image

    image_path, trimap_path = sample_files
    in_memory = tmp_path / "mem" / "cut.png"
    argv = ["cutout", str(image_path), str(trimap_path), "--quiet", "--device", "cpu"]
    assert main([*argv, "-o", str(in_memory)]) == 0
    # Alphas above this size go through a temporary Zarr store: same result, no leftovers.
    monkeypatch.setattr(fg_module, "_ALPHA_IN_MEMORY", 0)
    on_disk = tmp_path / "disk" / "cut.png"
    assert main([*argv, "-o", str(on_disk)]) == 0
    np.testing.assert_array_equal(open_image(on_disk).compute(), open_image(in_memory).compute())
    assert [p.name for p in on_disk.parent.iterdir()] == ["cut.png"]


def test_cli_cutout_background_image(sample_files, tmp_path):
    from napari_hrmatt.cli import main
    from napari_hrmatt.io import open_image, save_image

    image_path, trimap_path = sample_files
    bg = tmp_path / "bg.png"
    save_image(np.zeros((64, 96, 3), np.uint8), bg)
    out = tmp_path / "comp.png"
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "--background", str(bg)]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    written = open_image(out).compute()
    _, trimap, _ = make_sample((64, 96), seed=2)
    np.testing.assert_array_equal(written[trimap == 0], 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--background", "not-a-colour"], "colour"),
        (["--background", "missing.png"], "does not exist"),
        (["--chunk", "0"], ""),
    ],
)
def test_cli_cutout_bad_input(sample_files, tmp_path, extra, message, capsys):
    from napari_hrmatt.cli import main

    image_path, trimap_path = sample_files
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(tmp_path / "o.png")]
    assert main([*argv, *extra, "--quiet", "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cli_cutout_refuses_to_overwrite_input(sample_files, capsys):
    from napari_hrmatt.cli import main

    image_path, trimap_path = sample_files
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(image_path), "--quiet"]
    assert main(argv) == 2
    assert "refusing" in capsys.readouterr().err
