"""HDMatt's Cross-Patch Context module: context selection and trimap-guided attention.

A pool of context patches is cut from the encoder features of a *context image* (the
whole image, downsampled by the global pass). For a query position ``p`` the descriptor
is the mean query key ``theta(x)`` over the unknown cells of a ``query_window``
neighbourhood; the score of context patch ``j`` is its correlation with the patch's mean
key ``phi(c)``, which equals the mean of all pairwise correlations between the query's
unknown features and the patch features (the correlation is bilinear). A softmax over
the pool and a top-K select the context for ``p`` (HDMatt eq. 1-2).

Trimap-Guided Non-Local attention (TGNL, HDMatt eq. 3): the query key of every unknown
position attends *separately* to the unknown, foreground and background cells of its K
selected patches (a softmax per region, with the renormalised selection scores as a log
prior), and the three propagated values are concatenated with the query features. A
region that is absent from the selected patches (HDMatt notes the case) contributes
zeros. ``cpc="nonlocal"`` uses one plain softmax over all selected cells.

Unlike HDMatt, which selects context once per query patch, we select it per query
*position* from a sliding window, so a pixel's result never depends on where the engine
cut the blocks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_bn

if TYPE_CHECKING:
    from .config import HDMattConfig

__all__ = [
    "CrossPatchContext",
    "MissingContextError",
    "select_context",
    "trimap_guided_attention",
]

# Query positions processed at once by the attention (bounds memory on big blocks).
_ATTENTION_CHUNK = 4096


class MissingContextError(RuntimeError):
    """The cross-patch module needs the global context, and none was passed."""


def select_context(scores: torch.Tensor, k: int):
    """Context selection of HDMatt eq. 2: softmax over the pool, top-K, renormalised.

    Parameters
    ----------
    scores : (..., P) tensor
        Correlation of a query with each of the ``P`` pool patches (``-inf`` for
        patches that must never be chosen).
    k : int
        Patches to keep (at most ``P``).

    Returns
    -------
    weights : (..., K) tensor of float, summing to 1
        Softmax probabilities of the kept patches, renormalised over the K.
    index : (..., K) tensor of int64
        Their pool indices, most correlated first.
    """
    prob = scores.softmax(-1)
    top, index = prob.topk(min(k, prob.shape[-1]), dim=-1)
    return top / top.sum(-1, keepdim=True).clamp_min(1e-30), index


def trimap_guided_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    regions: torch.Tensor,
    index: torch.Tensor,
    weights: torch.Tensor,
    *,
    guided: bool = True,
) -> torch.Tensor:
    """Attention of query positions to the cells of their selected context patches.

    With ``guided`` (TGNL, HDMatt eq. 3) each query attends separately to the unknown,
    foreground and background cells, ``o_r = sum_j softmax_j(q . k_j + log s_j + log
    w_rj) v_j`` over cells ``j`` with region weight ``w_rj > 0`` (the fraction of the
    cell in region ``r``; ``s_j`` is the selection weight of the cell's patch), and the
    three results are concatenated. A region with no cell gives zeros, not NaN.
    Without ``guided`` it is one plain non-local softmax over all valid cells.

    Parameters
    ----------
    query : (B, N, Ck) tensor
        Keys of the query positions.
    keys : (B, P, L, Ck) tensor
    values : (B, P, L, Cv) tensor
        Keys and values of the ``L`` cells of each of the ``P`` pool patches.
    regions : (B, P, L, 3) tensor of float in [0, 1]
        Fractions of (background, unknown, foreground) of every cell (0 = padding).
    index, weights : (B, N, K) tensors
        Selected patches and their weights, from :func:`select_context`.
    guided : bool

    Returns
    -------
    (B, N, 3 Cv) tensor if ``guided`` (unknown, foreground, background), else (B, N, Cv)
    """
    b, n, ck = query.shape
    length = keys.shape[2]
    scale = 1.0 / math.sqrt(ck)
    batch = torch.arange(b, device=query.device)[:, None, None]
    outputs = []
    for n0 in range(0, n, _ATTENTION_CHUNK):
        idx = index[:, n0 : n0 + _ATTENTION_CHUNK]
        m = idx.shape[1]
        k_sel = keys[batch, idx].reshape(b, m, -1, ck)
        v_sel = values[batch, idx].reshape(b, m, -1, values.shape[-1])
        r_sel = regions[batch, idx].reshape(b, m, -1, 3)
        prior = weights[:, n0 : n0 + _ATTENTION_CHUNK].clamp_min(1e-12).log()
        logits = torch.einsum("bnc,bnmc->bnm", query[:, n0 : n0 + m], k_sel) * scale
        logits = logits + prior.repeat_interleave(length, -1)
        # TGNL: unknown, foreground, background cells separately; plain: all valid cells.
        masks = (r_sel[..., 1], r_sel[..., 2], r_sel[..., 0]) if guided else (r_sel.sum(-1),)
        parts = []
        for w in masks:
            masked = logits.masked_fill(w <= 0, float("-inf"))
            top = masked.amax(-1, keepdim=True).detach()
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            # exp(l - max) * w is the softmax numerator with a log(w) prior; empty
            # regions have a zero denominator and a zero numerator: output 0.
            a = torch.exp(masked - top) * w
            out = torch.einsum("bnm,bnmc->bnc", a, v_sel)
            parts.append(out / a.sum(-1, keepdim=True).clamp_min(1e-12))
        outputs.append(torch.cat(parts, -1))
    return torch.cat(outputs, 1)


class CrossPatchContext(nn.Module):
    """HDMatt's Cross-Patch Context module (context selection + TGNL), per position.

    Parameters
    ----------
    channels : int
        Channels of the 1/8 encoder features (query and context alike).
    config : HDMattConfig
    """

    def __init__(self, channels: int, config: HDMattConfig):
        super().__init__()
        self.guided = config.cpc == "tgnl"
        self.top_k, self.patch, self.window = (
            config.top_k,
            config.context_patch,
            config.query_window,
        )
        self.query_key = nn.Conv2d(channels, config.key_width, 1)  # theta
        self.context_key = nn.Conv2d(channels, config.key_width, 1)  # phi
        self.context_value = nn.Conv2d(channels, config.value_width, 1)  # g
        parts = 3 if self.guided else 1
        self.fuse = conv_bn(channels + parts * config.value_width, channels, k=1)

    def pool(self, features: torch.Tensor, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut context features into the pool of ``context_patch``-cell patches.

        Parameters
        ----------
        features : (B, C, h, w) tensor
            Encoder features of the context image at 1/8.
        regions : (B, 3, h, w) tensor
            Trimap fractions per cell (zero on padding).

        Returns
        -------
        dict of tensors
            ``keys`` (B, P, L, Ck), ``values`` (B, P, L, Cv), ``regions`` (B, P, L, 3),
            ``desc`` (B, P, Ck) mean key per patch and ``valid`` (B, P) bool.
        """
        p = self.patch
        x = torch.cat([self.context_key(features), self.context_value(features), regions], 1)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % p, 0, -h % p))  # zero regions: padding cells never attended
        b, c, h, w = x.shape
        x = (
            x.reshape(b, c, h // p, p, w // p, p)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(b, -1, p * p, c)
        )
        ck = self.context_key.out_channels
        keys, values, reg = x[..., :ck], x[..., ck:-3], x[..., -3:]
        valid = reg.sum(-1)  # (B, P, L): 1 for image cells, 0 for padding
        desc = (keys * valid[..., None]).sum(2) / valid.sum(2).clamp_min(1e-6)[..., None]
        return {
            "keys": keys,
            "values": values,
            "regions": reg,
            "desc": desc,
            "valid": valid.sum(2) > 0,
        }

    def select(self, query_keys, unknown, pool):
        """Context selection (HDMatt eq. 1-2) for every query position.

        Parameters
        ----------
        query_keys : (B, Ck, H, W) tensor
            ``theta`` of the 1/8 query features.
        unknown : (B, 1, H, W) tensor
            Fraction of unknown pixels in every cell.
        pool : dict
            From :meth:`pool`, batch B.

        Returns
        -------
        weights, index : (B, H W, K) tensors
            From :func:`select_context`, positions in row-major order.
        """
        b, ck, h, w = query_keys.shape
        # Eq. 1: the mean correlation between the query's unknown features and a context
        # patch is the dot product of their mean keys (correlation is bilinear). The
        # query is the window around each position, so the choice stays local.
        r = self.window // 2
        num = F.avg_pool2d(query_keys * unknown, self.window, 1, r)
        den = F.avg_pool2d(unknown, self.window, 1, r)
        desc = num / den.clamp_min(1e-6)
        scores = torch.einsum("bchw,bpc->bhwp", desc, pool["desc"]) / math.sqrt(ck)
        scores = scores.masked_fill(~pool["valid"][:, None, None, :], float("-inf"))
        return select_context(scores.reshape(b, h * w, -1), self.top_k)

    def forward(self, features, unknown, pool):
        """Add cross-patch context to the 1/8 query features.

        Parameters
        ----------
        features : (B, C, H, W) tensor
        unknown : (B, 1, H, W) tensor
            Fraction of unknown pixels in every 1/8 cell.
        pool : dict
            From :meth:`pool` (batch 1 is broadcast over B).

        Returns
        -------
        (B, C, H, W) tensor
        """
        b, _, h, w = features.shape
        pool = {k: v.expand(b, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in pool.items()}
        q = self.query_key(features)
        weights, index = self.select(q, unknown, pool)
        out = trimap_guided_attention(
            q.flatten(2).transpose(1, 2),
            pool["keys"],
            pool["values"],
            pool["regions"],
            index,
            weights,
            guided=self.guided,
        )
        out = out.transpose(1, 2).reshape(b, -1, h, w) * (unknown > 0)  # unknown queries only
        return self.fuse(torch.cat([features, out], 1))
