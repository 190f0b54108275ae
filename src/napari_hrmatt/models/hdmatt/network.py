"""The network: a patch encoder-decoder with cross-patch context (HDMatt-style).

The network follows HDMatt [1]_ with LFPNet's [2]_ lesson of feeding a coarse,
long-range alpha to every patch:

- **Input** (7 channels per pixel): the RGB image (ImageNet-normalised), the trimap as
  fractions of (background, unknown, foreground) and a coarse alpha from the global
  pass (``2 coarse - 1``).
- **Encoder**: a small ResNet [3]_ (3x3 stem at full resolution, then three stride-2
  stages of basic residual blocks down to 1/8) followed by ASPP [4]_ (parallel
  dilated 3x3 convolutions, without the image-level pooling branch: see
  :class:`~.layers.ASPP`).
- **Cross-Patch Context (CPC)** and **Trimap-Guided Non-Local (TGNL)** attention,
  HDMatt eq. 1-3, at 1/8 (:mod:`.context`); ``cpc="none"`` drops the module (the
  ablation of HDMatt's Table 3).
- **Decoder**: bilinear x2 upsampling with skip connections at 1/4, 1/2 and 1/1 and a
  3x3 head whose output is added to the coarse alpha (clamped to [0, 1]); known pixels
  are copied from the trimap by :class:`~.model.HDMattModel`.

A pixel's output depends only on its own neighbourhood (the receptive field, measured by
:func:`receptive_radius`) and on the fixed context pool, never on where the engine cut the
blocks: that is what makes chunked results equal the whole-image result. The parameter
count and receptive radius of the default and ablation architectures are in
``docs/deep_model.md`` (checked by a test).

The head predicts a correction to the coarse alpha (``coarse_residual``, zero at
initialisation), so an untrained network returns the global pass's answer and training
only has to learn what to change.

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

import torch
import torch.nn.functional as F
from torch import nn

from ...trimap import BACKGROUND, FOREGROUND, UNKNOWN
from .config import IN_CHANNELS, STRIDE, HDMattConfig
from .context import CrossPatchContext, MissingContextError
from .layers import ASPP, conv_bn, stage

__all__ = [
    "HDMattNet",
    "context_inputs",
    "count_parameters",
    "network_input",
    "receptive_radius",
    "trimap_fractions",
]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


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


class _Decoder(nn.Module):
    def __init__(self, config: HDMattConfig):
        super().__init__()
        w0, w1, w2, w3 = config.widths
        d2, d1, d0 = config.decoder_widths
        self.block2 = nn.Sequential(conv_bn(w3 + w2, d2), conv_bn(d2, d2))
        self.block1 = nn.Sequential(conv_bn(d2 + w1, d1), conv_bn(d1, d1))
        self.block0 = nn.Sequential(conv_bn(d1 + w0 + IN_CHANNELS, d0), conv_bn(d0, d0))
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
        self.stem = nn.Sequential(conv_bn(IN_CHANNELS, w0), conv_bn(w0, w0))
        self.down1 = stage(w0, w1, config.blocks[0])
        self.down2 = stage(w1, w2, config.blocks[1])
        self.down3 = stage(w2, w3, config.blocks[2])
        self.aspp = ASPP(w3, config.aspp_width, config.aspp_dilations)
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
