"""An HDMatt-style matting network: a patch encoder-decoder with cross-patch context.

The network follows HDMatt [1]_ with LFPNet's [2]_ lesson of feeding a coarse,
long-range alpha to every patch:

- **Input** (7 channels per pixel): the RGB image (ImageNet-normalised), the trimap as
  fractions of (background, unknown, foreground) and a coarse alpha from the global
  pass (``2 coarse - 1``).
- **Encoder**: a small ResNet [3]_ (3x3 stem at full resolution, then three stride-2
  stages of basic residual blocks down to 1/8) followed by ASPP [4]_ (parallel
  dilated 3x3 convolutions). ASPP's image-level pooling branch is left out on purpose:
  a global average over the block would make every output depend on the whole block,
  so chunked and whole-image results would differ; long-range context comes from the
  cross-patch module instead.
- **Cross-Patch Context (CPC)**, HDMatt eq. 1-2: a pool of context patches is cut
  from the encoder features of a *context image* (the whole image, downsampled by
  the global pass). For a query position ``p`` the descriptor is the mean query key
  ``theta(x)`` over the unknown cells of a ``query_window`` neighbourhood; the score
  of context patch ``j`` is its correlation with the patch's mean key ``phi(c)``,
  which equals the mean of all pairwise correlations between the query's unknown
  features and the patch features (the correlation is bilinear). A softmax over the
  pool and a top-K (K = 3) select the context for ``p``.
- **Trimap-Guided Non-Local (TGNL)**, HDMatt eq. 3: the query key of every unknown
  position attends *separately* to the unknown, foreground and background cells of
  its K selected patches (a softmax per region, with the renormalised selection
  scores as a log prior), and the three propagated values are concatenated with the
  query features for the decoder. A region that is absent from the selected patches
  (HDMatt notes the case) contributes zeros. ``cpc="nonlocal"`` uses one plain
  softmax over all selected cells, ``cpc="none"`` drops the module (the ablation of
  HDMatt's Table 3).
- **Decoder**: bilinear x2 upsampling with skip connections at 1/4, 1/2 and 1/1 and a
  3x3 head whose output is added to the coarse alpha (clamped to [0, 1]); known pixels
  are copied from the trimap by :class:`HDMattModel`.

Unlike HDMatt, which selects context once per 320-pixel query patch, we select it
per query *position* from a sliding window. The result of a pixel then depends only
on its own neighbourhood and on the (fixed) context pool, never on where the engine
cut the blocks, which is what makes chunked results equal the whole-image result.

With the default :class:`HDMattConfig` the network has **799,857 parameters**
(3.2 MB in float32) and a receptive-field radius of **148 pixels**, measured as the
gradient footprint of one output cell (:func:`receptive_radius`), so blocks overlap by
**152 pixels** (the radius rounded up to the stride, 8). Both numbers are computed,
and checked by ``tests/test_hdmatt.py``.

The head predicts a correction to the coarse alpha (``coarse_residual``, zero at
initialisation), so an untrained network returns the global pass's answer and training
only has to learn what to change.

Weights trained by us ship in the package (``models/weights/hdmatt.pt``, registered as
``model="hdmatt"``); how they were trained and how they compare with the closed-form
solver on held-out photos is in ``docs/deep_model.md``.

References
----------
.. [1] H. Yu, N. Xu, Z. Huang, Y. Zhou, H. Shi, "High-Resolution Deep Image Matting",
       AAAI 2021. :doi:`10.1609/aaai.v35i4.16432`
.. [2] Q. Liu, H. Xie, S. Zhang, B. Zhong, R. Ji, "Long-Range Feature Propagating
       for Natural Image Matting", ACM MM 2021. :doi:`10.1145/3474085.3475203`
.. [3] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
       Recognition", CVPR 2016. :doi:`10.1109/CVPR.2016.90`
.. [4] L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution
       for Semantic Image Segmentation", arXiv:1706.05587, 2017.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..trimap import BACKGROUND, FOREGROUND, UNKNOWN, TrimapError, known_alpha

__all__ = [
    "CPC_MODES",
    "DEFAULT_WEIGHTS",
    "HDMattConfig",
    "HDMattModel",
    "HDMattNet",
    "MissingContextError",
    "WeightsError",
    "context_inputs",
    "count_parameters",
    "load_weights",
    "receptive_radius",
    "save_weights",
    "select_context",
    "trimap_fractions",
    "trimap_guided_attention",
]

#: Total stride of the encoder: block origins should be multiples of it.
STRIDE = 8
#: Input channels: RGB, trimap fractions (background, unknown, foreground), coarse alpha.
IN_CHANNELS = 7
CPC_MODES = ("none", "nonlocal", "tgnl")
WEIGHTS_FORMAT = "napari-hrmatt/hdmatt-weights"
WEIGHTS_VERSION = 1
#: Where the shipped weights will live once a trained file exists (none does yet).
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "hdmatt.pt"

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# Query positions processed at once by the attention (bounds memory on big blocks).
_ATTENTION_CHUNK = 4096


class WeightsError(ValueError):
    """A weights file that is not an HDMatt weights file or does not fit the network."""


class MissingContextError(RuntimeError):
    """The cross-patch module needs the global context, and none was passed."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HDMattConfig:
    """Architecture of :class:`HDMattNet` (everything needed to rebuild it).

    Attributes
    ----------
    widths : (int, int, int, int)
        Channels at 1/1 (stem), 1/2, 1/4 and 1/8.
    blocks : (int, int, int)
        Residual blocks at 1/2, 1/4 and 1/8.
    aspp_dilations : tuple of int
        Dilations of ASPP's 3x3 branches at 1/8 (a 1x1 branch is always present).
    aspp_width : int
        Channels per ASPP branch.
    decoder_widths : (int, int, int)
        Decoder channels at 1/4, 1/2 and 1/1.
    cpc : {"tgnl", "nonlocal", "none"}
        Cross-patch context with trimap-guided attention, with plain non-local
        attention, or no cross-patch context (HDMatt's ablation).
    top_k : int
        Context patches kept per query position (HDMatt's K).
    key_width, value_width : int
        Channels of the attention keys and values.
    context_patch : int
        Side of one context patch in 1/8 cells (4 cells = 32 context pixels).
    query_window : int
        Side (odd, in 1/8 cells) of the window whose unknown cells form a query
        position's descriptor.
    coarse_residual : bool
        Predict a correction to the coarse alpha (``coarse + head``, clamped to [0, 1]
        with a straight-through gradient; the head starts at zero, so an untrained
        network returns the coarse alpha) instead of alpha itself (``sigmoid(head)``).
    """

    widths: tuple[int, int, int, int] = (16, 32, 48, 96)
    blocks: tuple[int, int, int] = (1, 1, 2)
    aspp_dilations: tuple[int, ...] = (2, 4, 6)
    aspp_width: int = 48
    decoder_widths: tuple[int, int, int] = (64, 32, 16)
    cpc: str = "tgnl"
    top_k: int = 3
    key_width: int = 32
    value_width: int = 32
    context_patch: int = 4
    query_window: int = 5
    coarse_residual: bool = True

    def __post_init__(self):
        for f in fields(self):  # lists from JSON -> tuples, so the config stays hashable
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(int(v) for v in value))
        object.__setattr__(self, "coarse_residual", bool(self.coarse_residual))
        if len(self.widths) != 4 or len(self.blocks) != 3 or len(self.decoder_widths) != 3:
            raise ValueError(
                "widths needs 4 entries (1/1, 1/2, 1/4, 1/8), blocks 3 and decoder_widths 3; "
                f"got {self.widths}, {self.blocks}, {self.decoder_widths}"
            )
        if min(self.widths + self.decoder_widths + (self.aspp_width,)) < 1:
            raise ValueError("all widths must be positive")
        if self.cpc not in CPC_MODES:
            raise ValueError(f"cpc must be one of {CPC_MODES}, got {self.cpc!r}")
        if self.top_k < 1 or self.context_patch < 1:
            raise ValueError("top_k and context_patch must be at least 1")
        if self.query_window < 1 or self.query_window % 2 == 0:
            raise ValueError(f"query_window must be odd and positive, got {self.query_window}")

    @classmethod
    def from_dict(cls, d: dict | None) -> HDMattConfig:
        """Build from a (JSON) dict; unknown keys are an error, missing keys default."""
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown HDMatt architecture setting(s) {unknown}; "
                f"valid: {sorted(f.name for f in fields(cls))}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- inputs


def trimap_fractions(trimap: torch.Tensor) -> torch.Tensor:
    """One-hot (background, unknown, foreground) channels of a canonical trimap.

    Parameters
    ----------
    trimap : (B, 1, H, W) or (H, W) tensor of uint8 in {0, 128, 255}

    Returns
    -------
    (B, 3, H, W) tensor of float32
    """
    if trimap.ndim == 2:
        trimap = trimap[None, None]
    t = trimap.to(torch.int16)
    return torch.cat([t == BACKGROUND, t == UNKNOWN, t == FOREGROUND], 1).float()


def network_input(image: torch.Tensor, fractions: torch.Tensor, coarse: torch.Tensor):
    """Stack the 7 input channels (normalised image, trimap fractions, coarse alpha).

    Parameters
    ----------
    image : (B, 3, H, W) tensor of float in [0, 1]
    fractions : (B, 3, H, W) tensor of float in [0, 1]
        Trimap as fractions of (background, unknown, foreground).
    coarse : (B, 1, H, W) tensor of float in [0, 1]

    Returns
    -------
    (B, 7, H, W) tensor of float32
    """
    mean = image.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(_STD).view(1, 3, 1, 1)
    return torch.cat([(image - mean) / std, fractions, 2 * coarse - 1], 1)


def context_inputs(image, fractions, coarse, max_pixels: float):
    """Area-downsample a context image (and its trimap and coarse alpha) to at most
    ``max_pixels`` pixels, keeping its aspect ratio.

    Trimap fractions are averaged too, so a context cell that straddles the edge of
    the unknown band counts partly as unknown and partly as known.

    Parameters
    ----------
    image : (B, 3, H, W) tensor of float in [0, 1]
    fractions : (B, 3, H, W) tensor of float in [0, 1]
    coarse : (B, 1, H, W) tensor of float in [0, 1]
    max_pixels : float

    Returns
    -------
    image, fractions, coarse : tensors of size ``(h, w)`` with ``h w <= max_pixels``
    """
    h, w = image.shape[-2:]
    f = max(1.0, math.sqrt(h * w / max_pixels))
    if f == 1.0:
        return image, fractions, coarse
    size = (max(1, int(h / f)), max(1, int(w / f)))
    x = torch.cat([image, fractions, coarse], 1)
    x = F.interpolate(x, size=size, mode="area")
    return x[:, :3], x[:, 3:6], x[:, 6:7]


def _pad_to_stride(x: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = -h % STRIDE, -w % STRIDE
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x


# --------------------------------------------------------------------------- layers


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, relu=True):
    layers = [
        nn.Conv2d(
            cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, bias=False
        ),
        # BatchNorm: in eval mode it is a per-channel affine map, so it keeps every
        # output local (GroupNorm/InstanceNorm would couple all pixels of a block).
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, channels), _conv_bn(channels, channels, relu=False)
        )

    def forward(self, x):
        return F.relu(x + self.body(x))


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        _conv_bn(cin, cout, stride=2), *[_BasicBlock(cout) for _ in range(blocks)]
    )


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling without the image-pooling branch (see module notes)."""

    def __init__(self, channels: int, width: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn(channels, width, k=1)]
            + [_conv_bn(channels, width, dilation=d) for d in dilations]
        )
        self.project = _conv_bn(width * len(self.branches), channels, k=1)

    def forward(self, x):
        return self.project(torch.cat([b(x) for b in self.branches], 1))


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
        self.fuse = _conv_bn(channels + parts * config.value_width, channels, k=1)

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


class _Decoder(nn.Module):
    def __init__(self, config: HDMattConfig):
        super().__init__()
        w0, w1, w2, w3 = config.widths
        d2, d1, d0 = config.decoder_widths
        self.block2 = nn.Sequential(_conv_bn(w3 + w2, d2), _conv_bn(d2, d2))
        self.block1 = nn.Sequential(_conv_bn(d2 + w1, d1), _conv_bn(d1, d1))
        self.block0 = nn.Sequential(_conv_bn(d1 + w0 + IN_CHANNELS, d0), _conv_bn(d0, d0))
        self.head = nn.Conv2d(d0, 1, 3, padding=1)

    def forward(self, x, s2, s1, s0, inp):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x = self.block2(torch.cat([up(x), s2], 1))
        x = self.block1(torch.cat([up(x), s1], 1))
        x = self.block0(torch.cat([up(x), s0, inp], 1))
        return self.head(x)


class HDMattNet(nn.Module):
    """The network: encoder + ASPP, cross-patch context, decoder with skips.

    Parameters
    ----------
    config : HDMattConfig or dict, optional

    Examples
    --------
    >>> import torch
    >>> net = HDMattNet({"widths": [4, 8, 8, 16], "blocks": [1, 1, 1],
    ...                  "decoder_widths": [8, 8, 4], "aspp_width": 4}).eval()
    >>> img, coarse = torch.rand(1, 3, 40, 48), torch.rand(1, 1, 40, 48)
    >>> tri = trimap_fractions(torch.full((1, 1, 40, 48), 128, dtype=torch.uint8))
    >>> pool = net.context_pool(img, tri, coarse)
    >>> net(img, tri, coarse, pool).shape
    torch.Size([1, 1, 40, 48])
    """

    def __init__(self, config: HDMattConfig | dict | None = None):
        super().__init__()
        if not isinstance(config, HDMattConfig):
            config = HDMattConfig.from_dict(config)
        self.config = config
        w0, w1, w2, w3 = config.widths
        self.stem = nn.Sequential(_conv_bn(IN_CHANNELS, w0), _conv_bn(w0, w0))
        self.down1 = _stage(w0, w1, config.blocks[0])
        self.down2 = _stage(w1, w2, config.blocks[1])
        self.down3 = _stage(w2, w3, config.blocks[2])
        self.aspp = _ASPP(w3, config.aspp_width, config.aspp_dilations)
        self.cpc = CrossPatchContext(w3, config) if config.cpc != "none" else None
        self.decoder = _Decoder(config)
        for m in self.modules():
            # He et al. 2015 initialisation keeps the signal's variance through the ReLUs
            # (PyTorch's default shrinks it layer by layer).
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if config.coarse_residual:
            # Zero head: the untrained network returns the coarse alpha, and training
            # starts from the global pass's answer instead of from noise.
            nn.init.zeros_(self.decoder.head.weight)
            nn.init.zeros_(self.decoder.head.bias)

    def _encode(self, x):
        s0 = self.stem(x)
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        return s0, s1, s2, self.aspp(self.down3(s2))

    def context_pool(self, image, fractions, coarse) -> dict[str, torch.Tensor] | None:
        """Encode a context image into the pool of context patches (``None`` without CPC).

        Parameters
        ----------
        image : (B, 3, h, w) tensor of float in [0, 1]
        fractions : (B, 3, h, w) tensor
            Trimap fractions (background, unknown, foreground).
        coarse : (B, 1, h, w) tensor of float in [0, 1]
        """
        if self.cpc is None:
            return None
        x = _pad_to_stride(network_input(image, fractions, coarse))
        regions = F.avg_pool2d(_pad_to_stride(fractions, mode="constant"), STRIDE)
        return self.cpc.pool(self._encode(x)[3], regions)

    def forward_stacked(self, x, unknown, pool=None):
        """Forward from the stacked input (:func:`network_input`), sides multiples of 8.

        Parameters
        ----------
        x : (B, 7, H, W) tensor
        unknown : (B, 1, H / 8, W / 8) tensor
            Fraction of unknown pixels per 1/8 cell.
        pool : dict, optional
            Required when the network has a CPC module.

        Returns
        -------
        (B, 1, H, W) tensor: the head's output (alpha logits, or the correction to the
        coarse alpha with ``coarse_residual``)
        """
        s0, s1, s2, s3 = self._encode(x)
        if self.cpc is not None:
            if pool is None:
                raise MissingContextError(
                    "this network has a cross-patch context module: pass the context pool "
                    "(HDMattNet.context_pool of the downsampled whole image)"
                )
            s3 = self.cpc(s3, unknown, pool)
        return self.decoder(s3, s2, s1, s0, x)

    def forward(self, image, fractions, coarse, pool=None):
        """Alpha of a query block (before known pixels are copied from the trimap).

        Parameters
        ----------
        image : (B, 3, H, W) tensor of float in [0, 1]
        fractions : (B, 3, H, W) tensor
            Trimap fractions (background, unknown, foreground).
        coarse : (B, 1, H, W) tensor of float in [0, 1]
            Coarse alpha from the global pass.
        pool : dict, optional
            :meth:`context_pool` of the context image; required with CPC.

        Returns
        -------
        (B, 1, H, W) tensor of float in [0, 1]
        """
        h, w = image.shape[-2:]
        x = _pad_to_stride(network_input(image, fractions, coarse))
        unknown = F.avg_pool2d(x[:, 4:5], STRIDE)
        out = self.forward_stacked(x, unknown, pool)[..., :h, :w]
        if not self.config.coarse_residual:
            return torch.sigmoid(out)
        raw = coarse + out
        # Clamp to [0, 1] with a straight-through gradient: where the coarse alpha is
        # saturated (0 or 1) but wrong, the loss still moves the correction.
        return raw + (raw.clamp(0, 1) - raw).detach()


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- receptive field

_RADIUS_CACHE: dict[HDMattConfig, int] = {}


def _analytic_radius(config: HDMattConfig) -> int:
    """Upper estimate of the receptive-field radius from the layer list (sizes the probe)."""
    r = 2  # stem: two 3x3 convolutions at full resolution
    for level, blocks in enumerate(config.blocks):
        stride_in = 2**level
        r += stride_in + blocks * 4 * stride_in  # strided conv, then 2 convs per block
    r += STRIDE * max(config.aspp_dilations, default=1)
    if config.cpc != "none":
        r += STRIDE * (config.query_window // 2)
    return r + 8 + 8 + 4 + 4 + 2 + 2 + 1  # upsampling and decoder convolutions, head


def _reach(net: HDMattNet, size: int, seed: int, axis: int) -> int:
    """How far (pixels) the gradient of one 8x8 output cell reaches along ``axis``.

    The probe is a strip ``size`` long along ``axis`` and 32 pixels across: cutting the
    other direction short removes no path along ``axis``, so the reach is exact there.
    """
    g = torch.Generator().manual_seed(seed)
    shape = [32, 32]
    shape[axis] = size
    x = torch.randn(1, IN_CHANNELS, *shape, generator=g, requires_grad=True)
    unknown = torch.ones(1, 1, shape[0] // STRIDE, shape[1] // STRIDE)
    pool = None
    if net.cpc is not None:
        with torch.no_grad():
            ctx = torch.randn(1, IN_CHANNELS, 64, 64, generator=g)
            regions = torch.rand(1, 3, 8, 8, generator=g)
            pool = net.cpc.pool(net._encode(ctx)[3], regions / regions.sum(1, keepdim=True))
    out = net.forward_stacked(x, unknown, pool)
    c = [(n // STRIDE // 2) * STRIDE for n in shape]  # a stride-aligned cell: all phases
    out[0, 0, c[0] : c[0] + STRIDE, c[1] : c[1] + STRIDE].sum().backward()
    reached = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1 - axis) > 0).flatten()
    # From the far side of the cell: conservative by less than one cell.
    return int(max(c[axis] + STRIDE - 1 - reached.min(), reached.max() - c[axis]))


def receptive_radius(config: HDMattConfig | dict | None = None) -> int:
    """Receptive-field radius of the network in pixels, measured, not assumed.

    A randomly initialised network of this architecture (eval mode, a random context
    pool, every cell unknown) is run on random input and the gradient of one 8x8
    output cell is traced back: the farthest input pixel with a non-zero gradient,
    along rows and along columns, is the radius. The gradient of the farthest row is
    a sum over many paths and random Gaussian inputs, so a ReLU that happens to be off
    cannot hide it; the probe is sized from the layer list and grows until the
    footprint stays clear of its ends. Cached per configuration.

    Parameters
    ----------
    config : HDMattConfig or dict, optional

    Returns
    -------
    int
        Pixels; an output pixel depends on inputs at most this far away (Chebyshev).
    """
    if not isinstance(config, HDMattConfig):
        config = HDMattConfig.from_dict(config)
    if config in _RADIUS_CACHE:
        return _RADIUS_CACHE[config]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = HDMattNet(config).eval()
        # A zero head (coarse_residual) passes no gradient: probe with a random one.
        nn.init.normal_(net.decoder.head.weight)
    size = STRIDE * math.ceil((2 * _analytic_radius(config) + 64) / STRIDE)
    while True:
        reach = max(_reach(net, size, 0, axis) for axis in (0, 1))
        if reach < size // 2 - 2 * STRIDE:
            break
        size *= 2
    _RADIUS_CACHE[config] = reach
    return reach


# --------------------------------------------------------------------------- weights


def save_weights(net: HDMattNet, path, *, meta: dict | None = None) -> Path:
    """Write a weights file that :func:`load_weights` reads with ``weights_only=True``.

    The file holds only tensors and plain Python values: the format tag, the
    architecture (:meth:`HDMattConfig.to_dict`), the state dict and ``meta`` (training
    record: steps, data, validation errors...).

    Parameters
    ----------
    net : HDMattNet
    path : str or Path
    meta : dict, optional
        JSON-like values only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "arch": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_weights(path, *, map_location="cpu") -> tuple[HDMattNet, dict]:
    """Load a network from a weights file written by :func:`save_weights`.

    Parameters
    ----------
    path : str or Path
    map_location : str or torch.device

    Returns
    -------
    net : HDMattNet
        In eval mode, on ``map_location``.
    meta : dict

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    WeightsError
        Not an HDMatt weights file, unsafe to unpickle, or not matching its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no HDMatt weights file at {path}; train one with `hrmatt train` and export it "
            "(see docs/deep_model.md), then pass weights=PATH"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path} could not be read as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); is it a training checkpoint "
            "or another program's file? Export weights with `hrmatt train --export`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{path} is not an HDMatt weights file (expected format {WEIGHTS_FORMAT!r}); "
            "export one from a training run with `hrmatt train --out RUN --export FILE`"
        )
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(
            f"{path} has weights format version {payload.get('version')}, this napari-hrmatt "
            f"reads version {WEIGHTS_VERSION}"
        )
    try:
        net = HDMattNet(HDMattConfig.from_dict(payload["arch"]))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: invalid architecture record: {exc}") from exc
    state = payload["state_dict"]
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{path} does not match its architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {shapes[:5]} (first 5 of each shown)"
        )
    net.load_state_dict(state)
    return net.to(map_location).eval(), payload.get("meta", {})


# --------------------------------------------------------------------------- model


def _as_tensors(image: np.ndarray, trimap: np.ndarray, coarse: np.ndarray, device):
    im = np.asarray(image, np.float32)
    if im.ndim == 2:
        im = im[..., None]
    if im.shape[-1] == 1:  # grey: the network was trained on RGB
        im = np.repeat(im, 3, -1)
    img = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)[:3]))[None].to(device)
    tri = trimap_fractions(torch.from_numpy(np.ascontiguousarray(trimap, np.uint8))).to(device)
    c = torch.from_numpy(np.ascontiguousarray(coarse, np.float32))[None, None].to(device)
    return img, tri, c


class HDMattModel:
    """The HDMatt-style network as a :class:`~napari_hrmatt.models.MattingModel`.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (resolved by ``get_model``).
    weights : str or Path, optional
        A weights file from ``hrmatt train --export``; by default the file shipped in
        the package (:data:`DEFAULT_WEIGHTS`).
    tile : int
        Tile size (pixels) of :meth:`global_alpha`, which runs the network over the
        global image tile by tile with the derived overlap (the result equals one
        whole-image pass; only memory changes).
    coarse : {"cf", "none"}
        Coarse alpha that :meth:`global_alpha` feeds the network: the closed-form
        solver on a ``coarse_size`` copy, upsampled (LFPNet's long-range prior), or
        none (0.5 in the unknown region).
    coarse_size : float
        Pixels of the coarse solve (default 1e6: for images up to 1 MP, e.g. the
        engine's global pass, the network refines the full-resolution closed-form
        alpha). Chosen on the dev validation images GT16-GT18: SAD 8.48 / Grad 5.32 at
        1e6 against 9.48 / 6.10 at 65536 (docs/deep_model.md).
    context_size : float
        Pixels of the context image the pool of context patches is cut from.

    Notes
    -----
    :meth:`refine` needs the global context (the pool of context patches cut from the
    downsampled whole image) when the network has a CPC module: the engine passes
    ``context=`` and ``origin=`` to models with ``uses_context = True``, and fills
    ``context.extras`` with :meth:`context_extras` after the global pass.
    """

    name = "hdmatt"
    uses_context = True

    def __init__(
        self,
        device="cpu",
        weights=None,
        tile: int = 1024,
        coarse: str = "cf",
        coarse_size: float = 1e6,
        context_size: float = 262144,
    ):
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        net, meta = load_weights(path, map_location=device)
        self._setup(net, device, tile, coarse, coarse_size, context_size, meta)

    @classmethod
    def from_network(cls, net: HDMattNet, device="cpu", **options) -> HDMattModel:
        """Wrap an in-memory network (training validation, tests); the constructor's
        defaults apply to the options not given."""
        import inspect

        self = cls.__new__(cls)
        options.pop("weights", None)
        params = inspect.signature(cls.__init__).parameters
        settings = {
            k: params[k].default for k in ("tile", "coarse", "coarse_size", "context_size")
        }
        settings.update(options)
        self._setup(net.to(device).eval(), device, meta={}, **settings)
        return self

    def _setup(self, net, device, tile, coarse, coarse_size, context_size, meta):
        if coarse not in ("cf", "none"):
            raise ValueError(f"coarse must be 'cf' or 'none', got {coarse!r}")
        self.device = torch.device(device)
        self.net = net
        self.meta = meta
        self.tile = max(STRIDE, int(tile) // STRIDE * STRIDE)
        self.coarse, self.coarse_size, self.context_size = coarse, coarse_size, context_size
        self._pool_cache: tuple[int, dict] | None = None

    # -- protocol -------------------------------------------------------------

    def overlap(self, factor: int) -> int:
        """Block overlap: the measured receptive-field radius, rounded up to the stride.

        Independent of ``factor``: the coarse alpha enters pixel by pixel and the
        context pool is the same for every block, so a pixel's output depends only
        on inputs within the receptive field. Rounding to the stride keeps block
        origins on the encoder's 8-pixel grid when chunks are multiples of 8.
        """
        return STRIDE * math.ceil(receptive_radius(self.net.config) / STRIDE)

    def global_alpha(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """Alpha of the whole (downsampled) image: coarse solve, context pool, network.

        Parameters
        ----------
        image : (H, W, C) array of float32 in [0, 1]
        trimap : (H, W) array of uint8 in {0, 128, 255}

        Returns
        -------
        (H, W) array of float32 in [0, 1]
        """
        trimap = np.asarray(trimap, np.uint8)
        coarse = self._coarse_alpha(image, trimap)
        pool = self._pool(image, trimap, coarse)
        return self._tiled(image, trimap, coarse, pool)

    def context_extras(self, image: np.ndarray, trimap: np.ndarray, alpha: np.ndarray) -> dict:
        """The pool of context patches of the global image, for ``GlobalContext.extras``.

        Computed once per image after the global pass (``alpha`` is its result, used as
        the context's coarse channel) so that every block reuses it.
        """
        pool = self._pool(image, np.asarray(trimap, np.uint8), np.asarray(alpha, np.float32))
        if pool is None:
            return {}
        return {"hdmatt_pool": {k: v.cpu().numpy() for k, v in pool.items()}}

    def refine(
        self,
        image: np.ndarray,
        trimap: np.ndarray,
        coarse: np.ndarray,
        fixed_border=(False, False, False, False),
        *,
        context=None,
        origin: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Alpha of one full-resolution block.

        Parameters
        ----------
        image : (h, w, C) array of float32 in [0, 1]
        trimap : (h, w) array of uint8 in {0, 128, 255}
        coarse : (h, w) array of float32
            The global alpha upsampled to this block.
        fixed_border : (bool, bool, bool, bool)
            Unused: the engine trims ``overlap`` pixels at every cut, which covers the
            network's receptive field.
        context : GlobalContext, optional
            Needed with CPC: its ``extras["hdmatt_pool"]`` (from :meth:`context_extras`)
            or ``extras["image"]`` (the downsampled image) supplies the context pool.
        origin : (int, int), optional
            Full-resolution position of ``block[0, 0]``; when it is not on the 8-pixel
            grid the block is padded on the top/left to put it back on the grid.

        Returns
        -------
        (h, w) array of float32 in [0, 1]; known pixels exactly 0 or 1.
        """
        trimap = np.asarray(trimap, np.uint8)
        if not (trimap == UNKNOWN).any():
            return known_alpha(trimap)
        pool = self._pool_from_context(context)
        oy, ox = (0, 0) if origin is None else (int(origin[0]) % STRIDE, int(origin[1]) % STRIDE)
        if oy or ox:
            pad = ((oy, 0), (ox, 0))
            image = np.pad(image, pad + ((0, 0),) * (image.ndim - 2), mode="edge")
            trimap, coarse = np.pad(trimap, pad, mode="edge"), np.pad(coarse, pad, mode="edge")
        alpha = self._predict(image, trimap, coarse, pool)[oy:, ox:]
        trimap = trimap[oy:, ox:]
        return np.where(trimap == UNKNOWN, alpha, known_alpha(trimap)).astype(np.float32)

    # -- internals ------------------------------------------------------------

    def _coarse_alpha(self, image, trimap) -> np.ndarray:
        if self.coarse == "cf" and (trimap == UNKNOWN).any():
            from ..global_pass import global_pass
            from .closed_form import ClosedFormModel

            try:
                ctx = global_pass(
                    image,
                    trimap,
                    model=ClosedFormModel(device=str(self.device)),
                    global_size=self.coarse_size,
                )
                return ctx.alpha_at(0, 0, *trimap.shape)
            except TrimapError:
                pass  # known regions too thin for the coarse size: no prior
        return known_alpha(trimap)

    def _pool(self, image, trimap, coarse):
        if self.net.cpc is None:
            return None
        img, tri, c = _as_tensors(image, trimap, coarse, self.device)
        img, tri, c = context_inputs(img, tri, c, self.context_size)
        with torch.inference_mode():
            return self.net.context_pool(img, tri, c)

    def _pool_from_context(self, context):
        if self.net.cpc is None:
            return None
        extras = getattr(context, "extras", None) or {}
        if "hdmatt_pool" in extras:
            return {
                k: torch.as_tensor(v, device=self.device) for k, v in extras["hdmatt_pool"].items()
            }
        if "image" in extras:
            # One pool per GlobalContext object (every block of an image shares it).
            if self._pool_cache is None or self._pool_cache[0] != id(context):
                pool = self._pool(extras["image"], context.trimap, context.alpha)
                self._pool_cache = (id(context), pool)
            return self._pool_cache[1]
        raise MissingContextError(
            "the hdmatt network needs the global context in refine(): the engine must pass "
            "context=GlobalContext (with extras from HDMattModel.context_extras, or the "
            "downsampled image as extras['image']); see docs/deep_model.md"
        )

    def _predict(self, image, trimap, coarse, pool) -> np.ndarray:
        img, tri, c = _as_tensors(image, trimap, coarse, self.device)
        with torch.inference_mode():
            return self.net(img, tri, c, pool)[0, 0].float().cpu().numpy()

    def _tiled(self, image, trimap, coarse, pool) -> np.ndarray:
        """Network over the whole image tile by tile; equal to one whole-image pass."""
        h, w = trimap.shape
        out = known_alpha(trimap)
        ov = self.overlap(1)
        t = self.tile
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                if not (trimap[y0:y1, x0:x1] == UNKNOWN).any():
                    continue
                # Grown tile: origins stay multiples of 8 (t and ov are).
                gy0, gx0 = max(y0 - ov, 0), max(x0 - ov, 0)
                gy1, gx1 = min(y1 + ov, h), min(x1 + ov, w)
                a = self._predict(
                    image[gy0:gy1, gx0:gx1],
                    trimap[gy0:gy1, gx0:gx1],
                    coarse[gy0:gy1, gx0:gx1],
                    pool,
                )
                tile = a[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
                tri = trimap[y0:y1, x0:x1]
                out[y0:y1, x0:x1] = np.where(tri == UNKNOWN, tile, out[y0:y1, x0:x1])
        return out.astype(np.float32)
