"""The network as a matting model of the engine: :class:`HDMattModel`.

It implements the model protocol of :mod:`napari_hrmatt.models` (``global_alpha``,
``refine``, ``overlap``, ``context_extras``). The coarse alpha the network refines comes
from the closed-form solver in ``global_alpha`` and from the engine's global pass (the
upsampled global alpha) in ``refine``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...trimap import BACKGROUND, FOREGROUND, UNKNOWN, known_alpha
from ..closed_form import ClosedFormModel
from .config import STRIDE
from .context import MissingContextError
from .network import HDMattNet, context_inputs, receptive_radius, trimap_fractions
from .weights import DEFAULT_WEIGHTS, load_weights

__all__ = ["HDMattModel"]


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
        alpha). Chosen over a smaller coarse solve on the dev validation images
        GT16-GT18, which it beat on SAD and Grad (numbers in docs/deep_model.md).
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
            return _closed_form_prior(image, trimap, self.coarse_size, self.device)
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


def _closed_form_prior(image, trimap, size: float, device) -> np.ndarray:
    """The closed-form alpha of a copy of at most ``size`` pixels, upsampled to ``trimap``.

    The coarse problem is the one the engine's global pass builds: area averages over
    ``f x f`` cells (edges replicated), a cell known only when all its pixels are (by
    majority when that leaves no known cell), bilinear upsampling between cell centres.
    No known cell at this size: no prior (the trimap's known pixels only).
    """
    h, w = trimap.shape
    f = max(1, math.ceil(math.sqrt(h * w / size)))
    im = np.asarray(image, np.float32)
    im = im[..., None] if im.ndim == 2 else im
    x = np.concatenate(
        [im, (trimap == FOREGROUND)[..., None], (trimap == BACKGROUND)[..., None]], -1
    )
    if f > 1:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), np.float32))[None]
        t = F.avg_pool2d(F.pad(t, (0, -w % f, 0, -h % f), mode="replicate"), f)
        x = t[0].numpy().transpose(1, 2, 0)
    small_image, fg, bg = np.ascontiguousarray(x[..., :-2]), x[..., -2], x[..., -1]
    small_trimap = np.full(fg.shape, UNKNOWN, np.uint8)
    small_trimap[fg >= 1] = FOREGROUND
    small_trimap[bg >= 1] = BACKGROUND
    if (small_trimap == UNKNOWN).all():  # known regions thinner than a cell
        small_trimap[fg > 0.5] = FOREGROUND
        small_trimap[bg > 0.5] = BACKGROUND
        if (small_trimap == UNKNOWN).all():
            return known_alpha(trimap)
    if (small_trimap == UNKNOWN).any():
        alpha = ClosedFormModel(device=str(device)).global_alpha(small_image, small_trimap)
    else:
        alpha = np.where(small_trimap == FOREGROUND, 1.0, fg)
    alpha = np.asarray(alpha, np.float32)
    if f == 1:
        return alpha
    # Pixel centre y + 0.5 sits at cell coordinate (y + 0.5) / f - 0.5, clamped at the
    # edges: torch's bilinear upsampling by f without corner alignment.
    a = F.interpolate(torch.from_numpy(alpha)[None, None], scale_factor=f, mode="bilinear")
    return a[0, 0, :h, :w].numpy()
