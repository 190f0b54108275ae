"""Tests for the network of models/hdmatt (network.py, context.py, layers.py, config.py).

Everything runs on tiny randomly initialised networks and generated data; no weights,
no downloads, no bench data. ``tiny_net`` and ``random_inputs`` are shared with the other
tests/test_hdmatt*.py files.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_hrmatt.models.hdmatt import (
    CPC_MODES,
    CrossPatchContext,
    HDMattConfig,
    HDMattNet,
    MissingContextError,
    count_parameters,
    receptive_radius,
    select_context,
    trimap_fractions,
    trimap_guided_attention,
)
from napari_hrmatt.training import PRESETS  # noqa: E402

DEEP_MODEL_DOC = Path(__file__).parents[1] / "docs" / "deep_model.md"
#: The architecture of the training preset "tiny".
TINY = PRESETS["tiny"]["arch"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def random_inputs(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    codes = torch.tensor([0, 128, 255], dtype=torch.uint8)
    trimap = codes[torch.randint(0, 3, (b, 1, h, w), generator=g)]
    coarse = torch.rand(b, 1, h, w, generator=g)
    return image, trimap_fractions(trimap), coarse


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


def test_docs_state_the_computed_numbers():
    """The parameter count, radius and overlap of the default architecture in
    docs/deep_model.md are the computed ones."""
    doc = DEEP_MODEL_DOC.read_text(encoding="utf-8")
    row = re.search(r"^\| `\"tgnl\"` \(default\) \|.*$", doc, re.MULTILINE)[0]
    params = int(re.search(r"\| ([\d,]+) \(", row)[1].replace(",", ""))
    radius, overlap = (int(v) for v in re.findall(r"\| (\d+) px", row))
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
    cpc = CrossPatchContext(channels, cfg)
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
