"""The global pass: solve a downsampled copy of the whole image once.

HDMatt (Yu et al. 2021) and LFPNet (Liu et al. 2021) both observe that a patch
cannot see far enough by itself: an unknown region wider than a patch, or a patch whose
known pixels are all far away, has nothing to propagate from. The global pass gives
every patch that missing long-range context. We downsample image and trimap by an
integer factor ``f`` to about ``global_size`` pixels (area averaging, read block by
block so memory stays bounded), solve the whole small problem once, and keep the small
alpha. :meth:`GlobalContext.alpha_at` upsamples any full-resolution window of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from ._cells import CELL_MIXED, cell_kinds, cell_means, known_counts
from ._threads import solver_threads
from .models import DEFAULT_MODEL
from .trimap import BACKGROUND, FOREGROUND, UNKNOWN, TrimapError

__all__ = [
    "GlobalContext",
    "downsample_factor",
    "downsample_inputs",
    "global_pass",
    "solve_global",
    "update_global",
]


@dataclass(frozen=True, eq=False)
class GlobalContext:
    """Long-range context for the patch pass.

    Attributes
    ----------
    alpha : (h, w) array of float32
        Alpha of the downsampled problem; pixel ``(i, j)`` covers full-resolution
        pixels ``[i*f, (i+1)*f) x [j*f, (j+1)*f)``.
    factor : int
        The integer downsampling factor ``f``.
    shape : (int, int)
        Full-resolution ``(H, W)``.
    trimap : (h, w) array of uint8
        The downsampled trimap the alpha was solved under.
    has_unknown : bool
        Whether the full-resolution trimap has any unknown pixel.
    extras : dict
        Model-specific context (e.g. features for a deep model).
    cell_kinds : (h, w) array of uint8, optional
        What the full-resolution trimap holds in every cell (exact, from the pixel
        counts: :func:`napari_hrmatt._cells.cell_kinds`); the patch pass skips the
        image of blocks whose cells hold no unknown pixel. None: unknown (every block
        reads its inputs).
    """

    alpha: np.ndarray
    factor: int
    shape: tuple[int, int]
    trimap: np.ndarray
    has_unknown: bool = True
    extras: dict = field(default_factory=dict)
    cell_kinds: np.ndarray | None = None

    def alpha_at(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Bilinearly upsampled global alpha over full-res rows ``y0:y0+h``, cols ``x0:x0+w``."""
        f = self.factor
        if f == 1:
            return self.alpha[y0 : y0 + h, x0 : x0 + w].copy()
        rows = _linear_weights(np.arange(y0, y0 + h), f, self.alpha.shape[0])
        cols = _linear_weights(np.arange(x0, x0 + w), f, self.alpha.shape[1])
        (r0, r1, wr), (c0, c1, wc) = rows, cols
        # Interpolate along x on the few low-res rows the window needs, then along y:
        # the same arithmetic as on the full grid, with two full-size gathers, not four.
        lo = int(r0[0])
        a = self.alpha[lo : int(r1[-1]) + 1]
        across = a[:, c0] * (1 - wc) + a[:, c1] * wc
        top, bot = across[r0 - lo], across[r1 - lo]
        return (top * (1 - wr[:, None]) + bot * wr[:, None]).astype(np.float32)

    def cells(self, y0: int, x0: int, h: int, w: int) -> tuple[slice, slice]:
        """The cells of :attr:`alpha` that :meth:`alpha_at` reads for the same window."""
        f = self.factor
        if f == 1:
            return slice(y0, y0 + h), slice(x0, x0 + w)
        out = []
        for start, n, size in ((y0, h, self.alpha.shape[0]), (x0, w, self.alpha.shape[1])):
            i0, i1, _ = _linear_weights(np.array([start, start + n - 1]), f, size)
            out.append(slice(int(i0[0]), int(i1[1]) + 1))
        return out[0], out[1]


def _linear_weights(coords: np.ndarray, f: int, n: int):
    # Full-res pixel centre y + 0.5 sits at low-res coordinate (y + 0.5) / f - 0.5.
    u = np.clip((coords + 0.5) / f - 0.5, 0, n - 1)
    i0 = np.floor(u).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (u - i0).astype(np.float32)


def downsample_factor(shape: tuple[int, int], global_size: float) -> int:
    """Smallest integer factor that brings ``shape`` to at most ``global_size`` pixels."""
    if global_size <= 0:
        raise ValueError(f"global_size must be positive (pixels), got {global_size}")
    return max(1, math.ceil(math.sqrt(shape[0] * shape[1] / global_size)))


def _area_downsample(x: da.Array, f: int, scale: float = 1.0, need=None) -> da.Array:
    """Mean over ``f x f`` cells of a dask array (H, W[, C]) times ``scale``; edges padded
    by replication. float32. ``need``: see :func:`napari_hrmatt._cells.cell_means`."""
    if f == 1:
        x = x.astype(np.float32)
        return x * np.float32(scale) if scale != 1 else x
    return cell_means(x, f, scale, need)


def _scale(dtype) -> float:
    """Factor to [0, 1]: 1 / the maximum of an unsigned integer dtype, else 1."""
    dt = np.dtype(dtype)
    return 1.0 / np.iinfo(dt).max if dt.kind == "u" else 1.0


def downsample_inputs(image, trimap, *, global_size: float = 1_000_000):
    """The lazy inputs of the global pass: ``(small_image, fractions, factor)``.

    ``small_image`` is the ``f x f`` area mean of the image (float in [0, 1]; an
    integer image is scaled by its dtype's maximum), ``fractions`` the fractions of
    foreground and background pixels in every cell (last axis), both dask arrays;
    computing them reads the inputs once, block by block. Split from
    :func:`global_pass` so that a caller can compute them in the same pass as other
    reads of the inputs (the run store fingerprints its blocks in it).
    """
    h, w = trimap.shape
    f = downsample_factor((h, w), global_size)
    t = da.asarray(trimap)
    if f == 1:
        fractions = da.stack([t == FOREGROUND, t == BACKGROUND], axis=-1).astype(np.float32)
    else:
        fractions = cell_means(t, f, prepare=known_counts, channels=2)
    image = da.asarray(image)
    return _area_downsample(image, f, _scale(image.dtype)), fractions, f


def global_pass(
    image,
    trimap,
    *,
    model=DEFAULT_MODEL,
    global_size: float = 1_000_000,
    device: str = "auto",
) -> GlobalContext:
    """Solve the whole image at low resolution once (eagerly) and return the context.

    Parameters
    ----------
    image : (H, W, C) array of uint8, uint16, or float32 in [0, 1] (numpy or dask)
        As returned by :func:`napari_hrmatt.image.image_channels` (integers are
        averaged as integers and scaled to [0, 1]) or :func:`~napari_hrmatt.image.as_float_image`.
    trimap : (H, W) array of uint8 in {0, 128, 255} (numpy or dask)
        Canonical trimap (:func:`napari_hrmatt.trimap.canonical_trimap`).
    model : str or model object
        Name from :func:`napari_hrmatt.list_models` or a model instance.
    global_size : float
        Working size of the global pass in pixels (default about 1 megapixel).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    GlobalContext

    Raises
    ------
    TrimapError
        If the trimap has no known pixel (nothing to propagate from), or its known
        regions are too small to survive downsampling to ``global_size``.

    Notes
    -----
    Reads image and trimap once, block by block (peak memory ~ a few chunks plus the
    ``global_size`` copy); solving costs about as much as one ``global_size`` image.
    """
    if isinstance(model, str):
        from .models import get_model

        model = get_model(model, device)
    reach = getattr(model, "global_reach", lambda: None)()
    small_image, fractions, f = downsample_inputs(image, trimap, global_size=global_size)
    if reach is None or f == 1:
        small_image, fractions = da.compute(small_image, fractions)
    else:
        # The model reads the image only within `reach` cells of the unknown cells:
        # read the trimap first, then only the image chunks under those cells.
        from scipy import ndimage

        fractions = fractions.compute()
        need = cell_kinds(fractions, f) >= CELL_MIXED  # the cells the small trimap may
        if need.any():  # leave unknown (known but not all one kind), grown by `reach`
            need = ndimage.binary_dilation(need, np.ones((3, 3), bool), iterations=reach)
        image = da.asarray(image)
        small_image = _area_downsample(image, f, _scale(image.dtype), need).compute()
    return solve_global(
        small_image,
        fractions,
        factor=f,
        shape=trimap.shape,
        model=model,
        global_size=global_size,
        device=device,
    )


def solve_global(
    small_image: np.ndarray,
    fractions: np.ndarray,
    *,
    factor: int,
    shape: tuple[int, int],
    model=DEFAULT_MODEL,
    global_size: float = 1_000_000,
    device: str = "auto",
) -> GlobalContext:
    """Solve the downsampled problem (the computed :func:`downsample_inputs`)."""
    from .models import get_model

    h, w = shape
    f = factor
    small_image = np.asarray(small_image).astype(np.float32)
    small_trimap, has_unknown = _small_trimap(fractions, global_size, f)
    fg = fractions[..., 0]
    if isinstance(model, str):
        model = get_model(model, device)
    if has_unknown and (small_trimap == UNKNOWN).any():
        # Only the cores nobody else is using: a parallel region waits for its slowest
        # thread, so one busy core would stall every step of the solve (_threads.py).
        with solver_threads():
            alpha = model.global_alpha(small_image, small_trimap)
    else:
        alpha = np.where(small_trimap == FOREGROUND, 1.0, fg).astype(np.float32)
    return _context(model, small_image, small_trimap, alpha, f, (h, w), has_unknown, fractions)


def update_global(
    context: GlobalContext,
    small_image: np.ndarray,
    fractions: np.ndarray,
    changed: np.ndarray,
    *,
    model,
    global_size: float = 1_000_000,
    margin: int = 48,
    max_fraction: float = 0.25,
) -> GlobalContext | None:
    """The context after a local edit of the inputs, re-solved only around the edit.

    ``changed`` (low-resolution cells whose downsampled inputs differ from the ones
    ``context`` was solved from) is boxed and grown by ``margin`` cells; the model
    re-solves that box with the old alpha pinned around it (``model.update_global``).
    Returns None (solve it all) when the model cannot, or the box covers more than
    ``max_fraction`` of the cells.

    Notes
    -----
    The effect of an edit on the closed-form solution decays away from it, slowest along
    an unknown band (no known pixel there to screen it). On the test scene solved as a
    global problem, with part of its band painted foreground (alpha moved by up to 0.76),
    the largest error of the windowed solve against a full one fell from 0.22 at a
    margin of 8 cells to 0.017 at 24, 3e-3 at 32 and 7e-4 at 48 (docs/engine.md).
    """
    if not hasattr(model, "update_global") or not changed.any():
        return None
    small_trimap, has_unknown = _small_trimap(fractions, global_size, context.factor)
    if not (has_unknown and context.has_unknown and (small_trimap == UNKNOWN).any()):
        return None
    ys, xs = np.nonzero(changed)
    n, m = changed.shape
    box = (
        slice(max(0, ys.min() - margin), min(n, ys.max() + 1 + margin)),
        slice(max(0, xs.min() - margin), min(m, xs.max() + 1 + margin)),
    )
    if (box[0].stop - box[0].start) * (box[1].stop - box[1].start) > max_fraction * n * m:
        return None
    small_image = np.asarray(small_image, np.float32)
    with solver_threads():
        alpha = model.update_global(small_image, small_trimap, context.alpha, box)
    return _context(
        model,
        small_image,
        small_trimap,
        alpha,
        context.factor,
        context.shape,
        has_unknown,
        fractions,
    )


def _context(
    model, small_image, small_trimap, alpha, f, shape, has_unknown, fractions
) -> GlobalContext:
    # Models that read more than the coarse alpha (e.g. a deep model's pool of context
    # patches) build it here, once per image.
    extras = (
        model.context_extras(small_image, small_trimap, alpha)
        if hasattr(model, "context_extras")
        else {}
    )
    return GlobalContext(
        alpha=np.asarray(alpha, np.float32),
        factor=f,
        shape=tuple(shape),
        trimap=small_trimap,
        has_unknown=has_unknown,
        extras=extras,
        cell_kinds=cell_kinds(np.asarray(fractions), f),
    )


def _small_trimap(fractions: np.ndarray, global_size: float, f: int):
    """The low-resolution trimap from fg/bg fractions, and whether any pixel is unknown."""
    fg, bg = fractions[..., 0], fractions[..., 1]
    if fg.max() == 0 and bg.max() == 0:
        raise TrimapError(
            "the trimap has no known pixel (everything is unknown), so there is nothing to "
            "propagate from; paint some definite foreground and background"
        )
    has_unknown = bool(((fg + bg) < 1).any())
    small_trimap = np.full(fg.shape, UNKNOWN, np.uint8)
    small_trimap[fg >= 1] = FOREGROUND
    small_trimap[bg >= 1] = BACKGROUND
    if not ((small_trimap == FOREGROUND).any() or (small_trimap == BACKGROUND).any()):
        # Known regions thinner than one cell: fall back to majority votes.
        small_trimap[fg > 0.5] = FOREGROUND
        small_trimap[bg > 0.5] = BACKGROUND
        if (small_trimap == UNKNOWN).all():
            raise TrimapError(
                f"the known regions of the trimap are too thin to be seen at the global "
                f"working size ({global_size:.3g} px, factor {f}); raise global_size"
            )
    return small_trimap, has_unknown
