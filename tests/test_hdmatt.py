"""Tests for the HDMatt-style network (models/hdmatt); its training code: test_training.py.

Everything runs on tiny randomly initialised networks and generated data; no weights,
no downloads, no bench data.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_hrmatt import patch_pass  # noqa: E402
from napari_hrmatt.global_pass import GlobalContext  # noqa: E402
from napari_hrmatt.models import (  # noqa: E402
    _REGISTRY,
    get_model,
    hdmatt,  # noqa: E402
    list_models,
    register_model,
)
from napari_hrmatt.models.hdmatt import (  # noqa: E402
    CPC_MODES,
    HDMattConfig,
    HDMattModel,
    HDMattNet,
    MissingContextError,
    WeightsError,
    count_parameters,
    load_weights,
    receptive_radius,
    save_weights,
    select_context,
    trimap_fractions,
    trimap_guided_attention,
)
from napari_hrmatt.training import PRESETS  # noqa: E402

from .conftest import make_scene  # noqa: E402

TINY = PRESETS["tiny"]["arch"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run ~20x faster on one thread than on two on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(cpc="tgnl", seed=0) -> HDMattNet:
    """A tiny network in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = HDMattNet({**TINY, "cpc": cpc})
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
    # The residual head starts at zero (output == coarse alpha): give it weights so
    # the tests see the whole network.
    torch.nn.init.normal_(net.decoder.head.weight, std=0.3, generator=g)
    return net.eval()


def test_untrained_residual_network_returns_the_coarse_alpha():
    torch.manual_seed(0)
    net = HDMattNet(TINY).eval()
    image, fractions, coarse = random_inputs(1, 40, 48)
    coarse = coarse * 1.4 - 0.2  # some values outside [0, 1]: clamped
    pool = net.context_pool(image, fractions, coarse)
    out = net(image, fractions, coarse, pool)
    assert torch.equal(out, coarse.clamp(0, 1))


def test_residual_clamp_passes_gradient_where_coarse_is_saturated():
    net = tiny_net("none")
    with torch.no_grad():
        net.decoder.head.bias.fill_(-10.0)  # coarse + head < 0 at every pixel: all clamped
    image, fractions, _ = random_inputs(1, 32, 32)
    coarse = torch.zeros(1, 1, 32, 32)  # coarse says 0 everywhere ...
    out = net.train()(image, fractions, coarse)
    assert (out == 0).all()
    ((out - 0.5) ** 2).sum().backward()  # ... the truth says 0.5
    # A plain clamp would give zero gradient here; the straight-through one pushes up.
    assert net.decoder.head.bias.grad.item() < 0


def test_sigmoid_head_variant_still_available():
    torch.manual_seed(0)
    net = HDMattNet({**TINY, "coarse_residual": False}).eval()
    image, fractions, coarse = random_inputs(1, 40, 48)
    pool = net.context_pool(image, fractions, coarse)
    out = net(image, fractions, coarse, pool)
    assert out.shape == (1, 1, 40, 48) and not torch.equal(out, coarse)
    assert (out > 0).all() and (out < 1).all()


def random_inputs(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    codes = torch.tensor([0, 128, 255], dtype=torch.uint8)
    trimap = codes[torch.randint(0, 3, (b, 1, h, w), generator=g)]
    coarse = torch.rand(b, 1, h, w, generator=g)
    return image, trimap_fractions(trimap), coarse


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("cpc", CPC_MODES)
def test_forward_shapes(cpc):
    net = tiny_net(cpc)
    image, fractions, coarse = random_inputs(2, 44, 52)  # not multiples of 8
    ctx = random_inputs(1, 40, 56, seed=1)
    with torch.no_grad():
        pool = net.context_pool(*ctx)
        alpha = net(image, fractions, coarse, pool)
    assert (pool is None) == (cpc == "none")
    assert alpha.shape == (2, 1, 44, 52)
    assert torch.isfinite(alpha).all() and alpha.min() >= 0 and alpha.max() <= 1
    assert alpha.std() > 1e-3  # not a constant


def test_config_checks():
    with pytest.raises(ValueError, match="cpc"):
        HDMattConfig(cpc="attention")
    with pytest.raises(ValueError, match="odd"):
        HDMattConfig(query_window=4)
    with pytest.raises(ValueError, match="unknown HDMatt"):
        HDMattConfig.from_dict({"width": 3})
    cfg = HDMattConfig.from_dict(json.loads(json.dumps(HDMattConfig().to_dict())))
    assert cfg == HDMattConfig()


def test_network_needs_pool_with_cpc():
    net = tiny_net("tgnl")
    with pytest.raises(MissingContextError, match="context pool"):
        net(*random_inputs(1, 16, 16))


def test_module_docstring_states_computed_numbers():
    """The parameter count, radius and overlap in the docstring are the computed ones."""
    doc = hdmatt.__doc__
    params = int(re.search(r"\*\*([\d,]+) parameters\*\*", doc)[1].replace(",", ""))
    radius = int(re.search(r"radius of \*\*(\d+) pixels\*\*", doc)[1])
    overlap = int(re.search(r"overlap by\s+\*\*(\d+) pixels\*\*", doc)[1])
    assert count_parameters(HDMattNet()) == params
    assert receptive_radius(HDMattConfig()) == radius
    assert overlap == 8 * math.ceil(radius / 8)


# --------------------------------------------------------------------------- CPC / TGNL


def test_select_context_orders_and_renormalises():
    scores = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    weights, index = select_context(scores, 3)
    assert index.tolist() == [[1, 3, 4]]
    assert torch.allclose(weights.sum(-1), torch.ones(1))
    assert (weights[0, :-1] >= weights[0, 1:]).all()


def _identity_cpc(channels=8, top_k=3):
    cfg = HDMattConfig(**{**TINY, "key_width": channels, "top_k": top_k, "query_window": 3})
    cpc = hdmatt.CrossPatchContext(channels, cfg)
    with torch.no_grad():
        for conv in (cpc.query_key, cpc.context_key):
            conv.weight.copy_(torch.eye(channels)[:, :, None, None])
            conv.bias.zero_()
    return cpc


def test_cpc_picks_most_correlated_patch():
    """Context patch j* carries the feature of the query's unknown region; a decoy
    patch carries the (stronger) feature of the query's *known* region. CPC must pick
    j* first: the descriptor uses unknown cells only."""
    c, p = 8, 2
    cpc = _identity_cpc(c)
    basis = torch.eye(c)
    # Context: a 4 x 4 grid of 2 x 2-cell patches (patch k at row k // 4, column k % 4)
    # of weak random features; patch 5 matches the query, patch 2 half matches, and
    # patch 11 (the decoy) matches the query's known cells, strongly.
    g = torch.Generator().manual_seed(0)
    ctx = 0.1 * torch.randn(1, c, 8, 8, generator=g)

    def put(k, feature):
        i, j = divmod(k, 4)
        ctx[0, :, i * p : (i + 1) * p, j * p : (j + 1) * p] = feature[:, None, None]

    target, near, decoy = 5, 2, 11
    put(target, basis[5])
    put(near, 0.6 * basis[5] + 0.8 * basis[1])
    put(decoy, 5 * basis[3])
    regions = torch.zeros(1, 3, 8, 8)
    regions[:, 1] = 1  # all unknown
    pool = cpc.pool(ctx, regions)
    # Query: unknown cells look like basis[5]; known cells look like basis[3] (decoy).
    query = basis[3, :, None, None].expand(c, 6, 6).clone()[None] * 5
    unknown = torch.zeros(1, 1, 6, 6)
    unknown[..., 2:4, 2:4] = 1
    query[0, :, 2:4, 2:4] = basis[5, :, None, None]
    weights, index = cpc.select(query, unknown, pool)
    centre = index.reshape(6, 6, -1)[2:4, 2:4]
    assert (centre[..., 0] == target).all()
    assert (centre[..., 1] == near).all()  # then the half match
    assert decoy not in centre
    assert torch.allclose(weights.sum(-1), torch.ones(1))


def _random_pool(p=4, length=4, ck=8, cv=6, regions=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, p, length, ck, generator=g)
    values = torch.randn(1, p, length, cv, generator=g)
    if regions is None:
        regions = torch.rand(1, p, length, 3, generator=g)
        regions = regions / regions.sum(-1, keepdim=True)
    return keys, values, regions


@pytest.mark.parametrize("missing", [0, 2, (0, 2)], ids=["no-bg", "no-fg", "unknown-only"])
def test_tgnl_with_a_region_missing_from_the_context(missing):
    """HDMatt notes contexts without foreground or background: the missing region's
    branch gives zeros, the others stay finite, and gradients stay finite too."""
    keys, values, regions = _random_pool()
    regions[..., list(np.atleast_1d(missing))] = 0
    regions = regions / regions.sum(-1, keepdim=True)
    query = torch.randn(1, 5, 8, requires_grad=True)
    weights, index = select_context(torch.randn(1, 5, 4), 3)
    out = trimap_guided_attention(query, keys, values, regions, index, weights)
    assert out.shape == (1, 5, 18) and torch.isfinite(out).all()
    parts = dict(zip(["unknown", "fg", "bg"], out.split(6, -1), strict=True))
    for gone in np.atleast_1d(missing):
        name = {0: "bg", 2: "fg"}[int(gone)]
        assert (parts[name] == 0).all()
    assert parts["unknown"].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


def test_tgnl_single_region_equals_plain_non_local():
    """With only unknown cells in the context, TGNL's unknown branch is the plain
    non-local attention (and the known branches are zero)."""
    regions = torch.zeros(1, 4, 4, 3)
    regions[..., 1] = 1
    keys, values, regions = _random_pool(regions=regions)
    query = torch.randn(1, 7, 8)
    weights, index = select_context(torch.randn(1, 7, 4), 3)
    guided = trimap_guided_attention(query, keys, values, regions, index, weights)
    plain = trimap_guided_attention(query, keys, values, regions, index, weights, guided=False)
    assert torch.allclose(guided[..., :6], plain, atol=1e-6)
    assert (guided[..., 6:] == 0).all()


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


# --------------------------------------------------------------------------- weights


def test_save_load_round_trip(tmp_path):
    net = tiny_net("tgnl", seed=4)
    path = save_weights(net, tmp_path / "w.pt", meta={"steps": 7})
    loaded, meta = load_weights(path)
    assert meta == {"steps": 7} and loaded.config == net.config
    # The file is plain tensors and values: torch's safe loader reads it.
    assert torch.load(path, weights_only=True)["format"] == hdmatt.WEIGHTS_FORMAT
    inputs = random_inputs(1, 40, 40)
    with torch.no_grad():
        pool = net.context_pool(*random_inputs(1, 32, 32, seed=1))
        pool2 = loaded.context_pool(*random_inputs(1, 32, 32, seed=1))
        assert torch.equal(net(*inputs, pool), loaded(*inputs, pool2))
    model = HDMattModel(device="cpu", weights=str(path), coarse="none")
    image, trimap, _ = make_scene(40, 48, seed=5)
    expected = _model(net).global_alpha(image, trimap)
    np.testing.assert_array_equal(model.global_alpha(image, trimap), expected)


def test_missing_and_mismatched_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="hrmatt train"):
        HDMattModel(device="cpu", weights=tmp_path / "nope.pt")
    path = save_weights(tiny_net(), tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["arch"]["widths"] = [4, 8, 8, 16]  # record no longer matches the tensors
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an HDMatt weights file"):
        load_weights(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(tmp_path / "junk.pt")


def test_never_registered_without_weights():
    """The network is only exposed as a model once trained weights ship."""
    if "hdmatt" in list_models():
        assert hdmatt.DEFAULT_WEIGHTS.is_file()


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
