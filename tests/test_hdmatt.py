"""Tests for the HDMatt model on the engine (models/hdmatt/model.py); the network and weights
format: test_hdmatt_network.py, test_hdmatt_weights.py; training: test_training.py.

Everything runs on tiny randomly initialised networks and generated data; no weights,
no downloads, no bench data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_hrmatt import patch_pass  # noqa: E402
from napari_hrmatt.global_pass import GlobalContext, global_pass  # noqa: E402
from napari_hrmatt.models import (  # noqa: E402
    _REGISTRY,
    get_model,
    hdmatt,  # noqa: E402
    list_models,
    register_model,
)
from napari_hrmatt.models.closed_form import ClosedFormModel  # noqa: E402
from napari_hrmatt.models.hdmatt import (  # noqa: E402
    HDMattModel,
    MissingContextError,
    load_weights,
    receptive_radius,
    save_weights,
)

from .conftest import make_scene  # noqa: E402
from .test_hdmatt_network import tiny_net  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- model


def _model(net, **options):
    return HDMattModel.from_network(net, "cpu", **{"coarse": "none", **options})


@pytest.mark.parametrize("cpc", ["tgnl", "none"])
def test_global_alpha_tiles_equal_whole_at_derived_overlap(cpc, monkeypatch):
    net = tiny_net(cpc)
    image, trimap, _ = make_scene(136, 168, seed=3)
    whole = _model(net, tile=4096).global_alpha(image, trimap)
    tiled_model = _model(net, tile=48)
    assert tiled_model.overlap(1) == 8 * math.ceil(receptive_radius(net.config) / 8)
    tiled = tiled_model.global_alpha(image, trimap)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    # The test can fail: with too little overlap the tiles disagree.
    monkeypatch.setattr(tiled_model, "overlap", lambda factor: 16)
    assert np.abs(tiled_model.global_alpha(image, trimap) - whole).max() > 1e-2


def test_refine_copies_known_pixels_and_skips_known_blocks():
    net = tiny_net("none")
    model = _model(net)
    image, trimap, _ = make_scene(48, 64, seed=2)
    coarse = np.full(trimap.shape, 0.5, np.float32)
    alpha = model.refine(image, trimap, coarse)
    assert alpha.dtype == np.float32 and alpha.shape == trimap.shape
    assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 1).all()
    assert alpha.min() >= 0 and alpha.max() <= 1
    grey = model.refine(image[..., :1], trimap, coarse)  # grey images run too
    assert grey.shape == trimap.shape
    known = np.where(trimap == 128, 255, trimap).astype(np.uint8)
    model.net = None  # a block without unknown pixels must not touch the network
    np.testing.assert_array_equal(model.refine(image, known, coarse), known / 255.0)


def test_refine_with_cpc_needs_the_global_context():
    model = _model(tiny_net("tgnl"))
    image, trimap, _ = make_scene(32, 32, seed=2)
    with pytest.raises(MissingContextError, match="global context"):
        model.refine(image, trimap, np.full(trimap.shape, 0.5, np.float32))


@pytest.mark.parametrize("coarse_size", [1e6, 2000], ids=["full-res", "factor-2"])
def test_coarse_prior_is_the_closed_form_global_pass(coarse_size):
    """coarse="cf": the prior is the engine's closed-form global pass at coarse_size, upsampled.
    An untrained residual network returns its coarse input, so global_alpha shows it."""
    from napari_hrmatt.trimap import known_alpha

    net = tiny_net("none")
    torch.nn.init.zeros_(net.decoder.head.weight)  # untrained: output == coarse input
    model = _model(net, coarse="cf", coarse_size=coarse_size)
    image, trimap, _ = make_scene(60, 72, seed=9)
    context = global_pass(image, trimap, model=ClosedFormModel(), global_size=coarse_size)
    expected = np.where(trimap == 128, context.alpha_at(0, 0, *trimap.shape), known_alpha(trimap))
    assert (context.factor > 1) == (coarse_size < 60 * 72)
    # 5e-5: the engine sums cells in float64, the model's avg_pool in float32, and the
    # solve (relative residual 3e-5) carries that rounding into alpha.
    np.testing.assert_allclose(model.global_alpha(image, trimap), expected, atol=5e-5)
    # The test can fail: without the prior the output is 0 in the unknown region.
    assert np.abs(_model(net).global_alpha(image, trimap) - expected).max() > 0.05


def test_coarse_prior_falls_back_to_the_trimap_when_too_coarse():
    """Known regions thinner than a coarse cell: the engine's global pass refuses; the
    model uses no prior (0 in the unknown region) instead of failing."""
    from napari_hrmatt.trimap import TrimapError, known_alpha

    net = tiny_net("none")
    torch.nn.init.zeros_(net.decoder.head.weight)  # untrained: output == coarse input
    model = _model(net, coarse="cf", coarse_size=100)
    image, _, _ = make_scene(64, 64, seed=9)
    trimap = np.full((64, 64), 128, np.uint8)
    trimap[0], trimap[32] = 0, 255  # one-pixel lines: under half of every 7x7 cell
    with pytest.raises(TrimapError):
        global_pass(image, trimap, model=ClosedFormModel(), global_size=100)
    np.testing.assert_array_equal(model.global_alpha(image, trimap), known_alpha(trimap))


# --------------------------------------------------------------------------- engine


@pytest.fixture
def registered(tmp_path):
    """Register tiny saved networks under test names; removed afterwards."""
    names = []

    def add(cpc):
        name = f"hdmatt-test-{cpc}"
        path = save_weights(tiny_net(cpc, seed=6), tmp_path / f"{cpc}.pt")
        register_model(name, "napari_hrmatt.models.hdmatt:HDMattModel")
        names.append(name)
        return name, {"weights": str(path), "coarse": "none"}

    yield add
    for name in names:
        _REGISTRY.pop(name, None)
    get_model.cache_clear()


def _context(model, image, trimap, factor=2):
    """A global context as the engine builds it: downsampled image, its alpha, extras."""
    h, w = trimap.shape
    hs, ws = h // factor, w // factor
    small = image[: hs * factor, : ws * factor].reshape(hs, factor, ws, factor, -1).mean((1, 3))
    t = trimap[: hs * factor : factor, : ws * factor : factor]
    alpha = model.global_alpha(small, t)
    return GlobalContext(
        alpha=alpha,
        factor=factor,
        shape=(h, w),
        trimap=t,
        extras=model.context_extras(small, t, alpha),
    )


@pytest.mark.parametrize("cpc", ["none", "tgnl"])
def test_patch_pass_chunked_equals_whole(cpc, registered):
    """Through napari_hrmatt.patch_pass.refine: blocks that do not divide the image,
    the derived overlap, equal to a single block; and unequal with too little overlap."""
    name, options = registered(cpc)
    model = get_model(name, "cpu", **options)
    image, trimap, _ = make_scene(200, 264, seed=7)
    context = _context(model, image, trimap)

    def patches(chunks, overlap=None):
        return patch_pass.refine(
            image,
            trimap,
            context,
            model=name,
            chunks=chunks,
            overlap=overlap,
            device="cpu",
            model_options=options,
        ).compute(scheduler="synchronous")

    try:
        whole = patches(4096)
    except MissingContextError:
        pytest.skip(
            "patch_pass.refine_block does not pass context=/origin= to models with "
            "uses_context yet (see docs/deep_model.md, 'Wiring')"
        )
    chunked = patches(72)  # grown to the overlap (96): blocks of 96/104 x 96/96/72
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert np.abs(patches(72, overlap=16) - whole).max() > 1e-2


def test_patch_pass_unaligned_origin_is_realigned():
    """``origin`` off the 8-pixel grid: the block is padded back onto the grid, so
    its pixels agree with the whole-image result away from the cut."""
    net = tiny_net("none")
    model = _model(net)
    image, trimap, _ = make_scene(160, 160, seed=8)
    coarse = np.full(trimap.shape, 0.5, np.float32)
    whole = model.refine(image, trimap, coarse)
    y0 = 13  # a cut off the grid
    block = model.refine(image[y0:], trimap[y0:], coarse[y0:], origin=(y0, 0))
    keep = model.overlap(1)
    np.testing.assert_allclose(block[keep:], whole[y0 + keep :], atol=1e-5)
    # Without the origin the encoder's grid is shifted and the pixels differ.
    shifted = model.refine(image[y0:], trimap[y0:], coarse[y0:])
    assert np.abs(shifted[keep:] - whole[y0 + keep :]).max() > 1e-3


# --------------------------------------------------------------------------- shipped weights


def test_shipped_weights_load_offline_and_are_trained():
    """The packaged file loads with weights_only=True and records a real training run."""
    assert "hdmatt" in list_models()
    net, meta = load_weights(hdmatt.DEFAULT_WEIGHTS)
    assert meta["steps"] > 0 and meta["validation"]["sad"] > 0
    assert set(meta["train_images"]).isdisjoint({f"GT{i}" for i in range(19, 28)})
    assert hdmatt.DEFAULT_WEIGHTS.stat().st_size < 20e6
    # Trained: the residual head is no longer the zero it starts from.
    assert net.decoder.head.weight.abs().max() > 0


def test_shipped_model_through_the_engine_chunked_equals_whole():
    """estimate_alpha(model="hdmatt"): the patch pass at the derived overlap equals a
    single block, alpha in [0, 1], known pixels exact."""
    from napari_hrmatt import estimate_alpha

    image, trimap, _ = make_scene(120, 160, seed=2)
    opts = {"global_size": 120 * 160 / 4, "device": "cpu"}  # factor 2: a real patch pass
    whole = estimate_alpha(image, trimap, model="hdmatt", chunks=4096, **opts)
    chunked = estimate_alpha(image, trimap, model="hdmatt", chunks=56, **opts)
    assert np.abs(chunked - whole).max() < 1e-4
    assert whole.min() >= 0 and whole.max() <= 1
    np.testing.assert_array_equal(whole[trimap == 0], 0)
    np.testing.assert_array_equal(whole[trimap == 255], 1)


def test_model_options_are_read_from_the_model_class():
    from napari_hrmatt.models import model_options

    assert {"weights", "coarse_size", "tile"} <= set(model_options("hdmatt"))
    assert {"prior", "tol", "maxiter"} <= set(model_options("cf"))
    assert "weights" not in model_options("cf")
    with pytest.raises(ValueError, match="has no option"):
        get_model("hdmatt", "cpu", prior=1e-3)


def test_from_network_uses_the_constructor_defaults():
    model = HDMattModel.from_network(tiny_net("none"))
    assert model.coarse_size == 1e6 and model.tile == 1024 and model.context_size == 262144
    assert HDMattModel.from_network(tiny_net("none"), coarse_size=4096).coarse_size == 4096


def test_missing_user_weights_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no HDMatt weights file"):
        get_model("hdmatt", "cpu", weights=str(tmp_path / "nope.pt"))
