"""estimate_alpha end to end: chunked == whole, properties, laziness, bad input, distributed."""

import warnings

import dask
import dask.array as da
import numpy as np
import pytest

from napari_hrmatt import TrimapError, estimate_alpha
from napari_hrmatt._blocks import iter_blocks
from napari_hrmatt.global_pass import global_pass
from napari_hrmatt.image import as_float_image

TIGHT = {"tol": 1e-7, "maxiter": 2000}
# The engine's seams, stitching and block skipping are checked with "cf" (its cut-edge
# options and small overlap; the bounds below are its); the default model, "ifm", has the
# same checks at its own derived overlap in tests/test_ifm.py.
CF = "cf"


@pytest.fixture(scope="module")
def whole(scene):
    image, trimap, _ = scene
    # One block covering the image: the converged full-resolution closed-form solution.
    return estimate_alpha(
        image, trimap, model=CF, chunks=10_000, global_size=800, model_options=TIGHT
    )


def _chunked(scene, overlap, **options):
    image, trimap, _ = scene
    # 37 does not divide 96 x 128: uneven chunks; global pass at factor 4.
    return estimate_alpha(
        image,
        trimap,
        model=CF,
        chunks=37,
        overlap=overlap,
        global_size=800,
        model_options={**TIGHT, **options},
    )


def test_chunked_equals_whole_at_derived_overlap(scene, whole):
    """Stated tolerance: mean |chunked - whole| < 3e-3 and max < 0.15 (alpha units), for
    the default (free) cut edge and for the pinned ring.

    The remaining difference sits on sub-pixel strands near block cuts, where the
    4x-downsampled global alpha (the prior, or the pinned ring) is least accurate.
    """
    for options in ({}, {"cut_edge": "pinned"}):
        diff = np.abs(_chunked(scene, None, **options) - whole)
        assert diff.mean() < 3e-3
        assert diff.max() < 0.15


@pytest.mark.parametrize("overlap", [0, 2])
def test_too_small_overlap_shows_seams(scene, whole, overlap):
    """The same comparison fails when the overlap is too small: the test can catch seams
    (pinned ring; the free edge's tighter bound is checked below)."""
    diff = np.abs(_chunked(scene, overlap, cut_edge="pinned") - whole)
    assert diff.mean() >= 3e-3


def test_free_cut_edges_beat_the_pinned_ring(scene, whole):
    """cut_edge="free" (the default: no ring, the prior carries the global alpha): mean
    < 3e-4 and max < 0.03 at the derived overlap, smaller seams than the pinned ring, and
    a 2-px overlap still fails that mean bound."""
    pinned = np.abs(_chunked(scene, None, cut_edge="pinned") - whole)
    free = np.abs(_chunked(scene, None) - whole)
    assert np.array_equal(free, np.abs(_chunked(scene, None, cut_edge="free") - whole))
    assert free.mean() < 3e-4 and free.max() < 0.03
    assert pinned.mean() > 2 * free.mean() and pinned.max() > free.max()
    assert np.abs(_chunked(scene, 2) - whole).mean() >= 3e-4


def test_blend_stitching_matches_whole(scene, whole):
    """Linear-ramp blending (HDMatt's stitching) is also seam-free at the derived overlap;
    trimming measured better (docs/engine.md), so it stays the default."""
    image, trimap, _ = scene
    blended = estimate_alpha(
        image, trimap, model=CF, chunks=37, global_size=800, model_options=TIGHT, stitch="blend"
    )
    diff = np.abs(blended - whole)
    assert diff.mean() < 3e-3 and diff.max() < 0.15


@pytest.mark.parametrize(("i", "n"), [(0, 3), (1, 3), (2, 3), (0, 1)])
def test_blend_ramps_are_a_partition_of_unity(i, n):
    from napari_hrmatt.patch_pass import _ramp_sources

    core, d = 40, 8
    total = sum(w for w, _ in _ramp_sources(i, n, core, d))
    np.testing.assert_allclose(total, 1.0)


def test_alpha_properties(scene):
    image, trimap, gt = scene
    alpha = estimate_alpha(image, trimap, chunks=48, global_size=3000)
    assert alpha.shape == trimap.shape and alpha.dtype == np.float32
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 1).all()
    unknown = trimap == 128
    # Quality: no worse (within 5 %) than PyMatting's closed form on the same input.
    pymatting = pytest.importorskip("pymatting")
    reference = pymatting.estimate_alpha_cf(image.astype(np.float64), trimap / 255.0)
    ours, theirs = np.abs(alpha - gt)[unknown].mean(), np.abs(reference - gt)[unknown].mean()
    assert ours <= 1.05 * theirs


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.float32),
        lambda x: x.astype(np.float64),
        lambda x: np.round(x * 255).astype(np.uint8),
        lambda x: np.round(x * 65535).astype(np.uint16),
        lambda x: x[..., 1],  # grey
    ],
    ids=["float32", "float64", "uint8", "uint16", "grey"],
)
def test_dtypes_and_shapes(scene, convert):
    image, trimap, gt = scene
    alpha = estimate_alpha(convert(image), trimap, chunks=64, global_size=3000)
    assert alpha.shape == trimap.shape and alpha.dtype == np.float32
    # closed form on this scene: ~0.10 in colour, ~0.14 in grey (PyMatting: 0.106 colour)
    grey = convert(image).ndim == 2
    assert np.abs(alpha - gt)[trimap == 128].mean() < (0.16 if grey else 0.12)


def test_rgba_alpha_channel_ignored_with_warning(scene):
    image, trimap, _ = scene
    rgba = np.concatenate([image, np.zeros_like(image[..., :1])], -1)
    with pytest.warns(UserWarning, match="alpha channel is ignored"):
        a = estimate_alpha(rgba, trimap, chunks=64, global_size=3000)
    np.testing.assert_array_equal(a, estimate_alpha(image, trimap, chunks=64, global_size=3000))


def test_no_unknown_passes_through_without_model(scene, monkeypatch):
    image, _, gt = scene
    trimap = np.where(gt > 0.5, 255, 0).astype(np.uint8)
    from napari_hrmatt.models.closed_form import ClosedFormModel

    def boom(*args, **kwargs):
        raise AssertionError("the model must not run without unknown pixels")

    monkeypatch.setattr(ClosedFormModel, "refine", boom)
    monkeypatch.setattr(ClosedFormModel, "global_alpha", boom)
    alpha = estimate_alpha(image, trimap, model=CF, chunks=40)
    np.testing.assert_array_equal(alpha, trimap / 255.0)


def test_blocks_without_unknown_skip_the_model(scene, monkeypatch):
    image, trimap, _ = scene
    trimap = trimap.copy()
    trimap[:, :40] = 0  # the left blocks become fully known
    from napari_hrmatt.models.closed_form import ClosedFormModel

    calls = []
    original = ClosedFormModel.refine

    def counting(self, image_block, *args, **kwargs):
        calls.append(image_block.shape)
        return original(self, image_block, *args, **kwargs)

    monkeypatch.setattr(ClosedFormModel, "refine", counting)
    lazy = estimate_alpha(
        image, trimap, model=CF, chunks=32, overlap=4, global_size=3000, compute=False
    )
    lazy.compute(scheduler="sync")
    assert 0 < len(calls) < lazy.npartitions


class _ConstantModel:
    """A model object named like a registered one: the engine must use it as given."""

    name = "cf"

    def __init__(self, value):
        self.value = value
        self.refined = 0

    def global_alpha(self, image, trimap):
        return np.where(trimap == 128, self.value, trimap / 255.0).astype(np.float32)

    def refine(self, image, trimap, coarse, fixed_border):
        self.refined += 1
        return np.where(trimap == 128, self.value, trimap / 255.0).astype(np.float32)

    def overlap(self, factor):
        return 8


@pytest.mark.parametrize("global_size", [1e9, 2000])  # global pass only; with a patch pass
def test_a_model_object_is_used_as_given(scene, global_size):
    image, trimap, _ = scene
    model = _ConstantModel(0.25)
    alpha = estimate_alpha(image, trimap, model=model, global_size=global_size, chunks=40)
    np.testing.assert_allclose(alpha[trimap == 128], 0.25)
    assert (model.refined > 0) == (global_size < image.shape[0] * image.shape[1])
    with pytest.raises(ValueError, match="model object"):
        estimate_alpha(image, trimap, model=model, model_options={"eps": 1e-6})


def test_constant_image_gives_flat_alpha_between_known_values():
    image = np.full((40, 60, 3), 0.5, np.float32)
    trimap = np.full((40, 60), 128, np.uint8)
    trimap[:, :5] = 255
    alpha = estimate_alpha(image, trimap, chunks=25, global_size=600)
    # Nothing distinguishes the unknown pixels from the only known value: alpha = 1.
    np.testing.assert_allclose(alpha, 1.0, atol=1e-3)


def test_dask_in_dask_out_and_matches_numpy(scene):
    image, trimap, _ = scene
    lazy = estimate_alpha(
        da.from_array(image, chunks=(50, 45, 3)),
        da.from_array(trimap, chunks=30),
        chunks=48,
        global_size=3000,
    )
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32
    eager = estimate_alpha(image, trimap, chunks=48, global_size=3000)
    np.testing.assert_allclose(lazy.compute(), eager, atol=1e-6)
    assert isinstance(estimate_alpha(image, trimap, compute=False), da.Array)


def test_label_trimap_equivalent(scene):
    image, trimap, _ = scene
    labels = np.select([trimap == 0, trimap == 255], [1, 2], 0).astype(np.int32)
    np.testing.assert_allclose(
        estimate_alpha(image, labels, chunks=64, global_size=3000),
        estimate_alpha(image, trimap, chunks=64, global_size=3000),
        atol=1e-6,
    )


@pytest.mark.parametrize(("n", "size", "minimum"), [(100, 37, 24), (74, 37, 40), (10, 512, 24)])
def test_chunk_sizes_cover_and_respect_minimum(n, size, minimum):
    from napari_hrmatt._blocks import chunk_sizes

    sizes = chunk_sizes(n, size, minimum)
    assert sum(sizes) == n
    assert len(sizes) == 1 or min(sizes) >= minimum


def test_iter_blocks_covers_the_array():
    x = da.arange(7 * 11, chunks=3).reshape(7, 11).rechunk((3, 4))
    out = np.zeros((7, 11), int)
    for slices, block in iter_blocks(x, batch=2):
        out[slices] = block
    np.testing.assert_array_equal(out, np.arange(77).reshape(7, 11))


def test_global_context_upsampling_is_aligned():
    image = np.zeros((64, 64, 1), np.float32)
    trimap = np.full((64, 64), 128, np.uint8)
    trimap[:, :8] = 0
    trimap[:, -8:] = 255
    ctx = global_pass(image, trimap, global_size=256)  # factor 4
    assert ctx.factor == 4 and ctx.alpha.shape == (16, 16)
    up = ctx.alpha_at(0, 0, 64, 64)
    assert up.shape == (64, 64)
    # alpha_at of a window equals the same window of the full upsampling
    np.testing.assert_allclose(ctx.alpha_at(10, 20, 7, 9), up[10:17, 20:29], atol=1e-6)


# ---- bad input: one clear error each -------------------------------------------


@pytest.mark.parametrize(
    ("image", "trimap", "error", "message"),
    [
        (np.zeros((10, 12, 3)), np.zeros((10, 13), np.uint8), ValueError, "same pixels"),
        (np.zeros((10, 12, 3)), np.full((10, 12), 7, np.int32), TrimapError, "convention"),
        (np.zeros((10, 12, 3)), np.full((10, 12), 128, np.uint8), TrimapError, "no known"),
        (np.full((10, 12, 3), np.nan), np.zeros((10, 12), np.uint8), ValueError, "NaN"),
        (np.full((10, 12, 3), 2.0), np.zeros((10, 12), np.uint8), ValueError, r"\[0, 1\]"),
        (np.zeros((10, 12, 5)), np.zeros((10, 12), np.uint8), ValueError, "channels"),
        (np.zeros((10, 12), np.int8), np.zeros((10, 12), np.uint8), ValueError, "dtype"),
    ],
    ids=["shape", "labels", "all-unknown", "nan", "range", "channels", "dtype"],
)
def test_bad_input(image, trimap, error, message):
    with pytest.raises(error, match=message):
        estimate_alpha(image, trimap)


def test_nan_in_dask_image_is_reported_before_any_output(scene):
    image, trimap, _ = scene
    bad = image.copy()
    bad[50, 60, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        estimate_alpha(da.from_array(bad, chunks=32), trimap)  # raised in the global pass


def test_image_smaller_than_one_chunk(scene):
    image, trimap, _ = scene
    alpha = estimate_alpha(image[:20, :30], trimap[:20, :30], chunks=512)
    assert alpha.shape == (20, 30)


@pytest.mark.parametrize("shape", [(7, 300), (300, 7), (5, 6)])
def test_image_thinner_than_the_overlap(shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape + (3,)).astype(np.float32)
    trimap = np.full(shape, 128, np.uint8)
    trimap[:, :2], trimap[:, -2:] = 0, 255
    alpha = estimate_alpha(image, trimap, chunks=64, overlap=16, global_size=1000)
    assert alpha.shape == shape and np.isfinite(alpha).all()


def test_as_float_image_scaling():
    assert as_float_image(np.array([[65535]], np.uint16))[0, 0, 0] == 1.0
    assert as_float_image(np.zeros((3, 4))).shape == (3, 4, 1)


# ---- distributed ---------------------------------------------------------------


def test_same_graph_runs_on_a_local_cluster(scene):
    distributed = pytest.importorskip("distributed")
    image, trimap, _ = scene
    expected = estimate_alpha(image, trimap, chunks=48, global_size=3000)
    lazy = estimate_alpha(
        da.from_array(image, chunks=(48, 48, 3)),
        da.from_array(trimap, chunks=48),
        chunks=48,
        global_size=3000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cluster start-up chatter (ports, resources)
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            result = client.compute(lazy).result()
            # each worker process loaded the model at most once (lru_cache)
            loads = client.run(
                lambda: (
                    __import__("napari_hrmatt.models", fromlist=["_load"])
                    ._load.cache_info()
                    .currsize
                )
            )
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert all(n <= 1 for n in loads.values())
    assert dask.config.get("scheduler", None) in (None, "threads", "dask.distributed")
