"""The patch pass: one ``map_overlap`` of a per-block solver over full-resolution chunks.

Each block is grown by ``overlap`` pixels on its interior sides, solved at full
resolution with the global alpha as its initial guess and as a Dirichlet condition on
its cut edges, and trimmed back: the pixels we keep lie at least ``overlap`` pixels
from any cut, where the cut's influence has decayed (the chunked-vs-whole tests measure
that). Blocks without an unknown pixel return the trimap's alpha without touching the model.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from .global_pass import GlobalContext
from .trimap import UNKNOWN, known_alpha

__all__ = ["refine", "refine_block"]


def refine_block(
    block: np.ndarray,
    *,
    context: GlobalContext,
    origin: tuple[int, int],
    model="cf",
    device: str = "auto",
    model_options: tuple = (),
) -> np.ndarray:
    """Solve one (overlapped) block; numpy in, numpy out.

    Parameters
    ----------
    block : (h, w, C + 1) array of float32
        Image channels in [0, 1] followed by the canonical trimap as a float channel.
    context : GlobalContext
        Result of the global pass over the whole image.
    origin : (int, int)
        Full-resolution coordinates of ``block[0, 0]``.
    model : str or model object
    device : str

    Returns
    -------
    alpha : (h, w) array of float32 in [0, 1]
    """
    trimap = block[..., -1].astype(np.uint8)
    if not (trimap == UNKNOWN).any():
        return known_alpha(trimap)
    if isinstance(model, str):
        from .models import get_model

        model = get_model(model, device, **dict(model_options))
    h, w = trimap.shape
    y0, x0 = origin
    full_h, full_w = context.shape
    fixed = (y0 > 0, y0 + h < full_h, x0 > 0, x0 + w < full_w)
    coarse = context.alpha_at(y0, x0, h, w)
    return model.refine(block[..., :-1], trimap, coarse, fixed)


def _chunk_sizes(n: int, size: int, minimum: int) -> tuple[int, ...]:
    """Split ``n`` into chunks of ``size``; a last chunk smaller than ``minimum`` is merged.

    ``map_overlap`` needs every chunk at least as large as the overlap it lends.
    """
    size = max(size, minimum, 1)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) > 1 and sizes[-1] < minimum:
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes) or (n,)


def _block_task(block, *, starts, margins, block_info=None, **kwargs):
    # map_overlap hands us the grown block; recover where it sits in the full image.
    i, j = block_info[None]["chunk-location"][:2]
    origin = (
        starts[0][i] - (margins[0] if i > 0 else 0),
        starts[1][j] - (margins[1] if j > 0 else 0),
    )
    return refine_block(block, origin=origin, **kwargs)


def refine(
    image,
    trimap,
    context: GlobalContext,
    *,
    model="cf",
    chunks: int = 512,
    overlap: int | None = None,
    device: str = "auto",
    model_options: dict | None = None,
) -> da.Array:
    """Build the lazy full-resolution patch pass.

    Parameters
    ----------
    image : (H, W, C) array of float32 in [0, 1] (numpy or dask)
    trimap : (H, W) array of uint8 in {0, 128, 255} (numpy or dask)
    context : GlobalContext
        From :func:`napari_hrmatt.global_pass.global_pass` on the same image.
    model : str
        Model name; each worker process loads it once (cached).
    chunks : int
        Block size in pixels (before overlap).
    overlap : int, optional
        Overlap in pixels; by default derived from the model (``model.overlap(factor)``).
    device : str

    Returns
    -------
    alpha : (H, W) dask array of float32

    Notes
    -----
    Memory: each task holds one grown block, ``(chunks + 2 overlap)^2 (C + 1)`` float32
    values plus the solver's work arrays (about 40 float64 values per pixel for ``"cf"``).
    """
    from .models import get_model

    model_options = tuple(sorted((model_options or {}).items()))
    if overlap is None:
        name = model if isinstance(model, str) else model.name
        overlap = get_model(name, device, **dict(model_options)).overlap(context.factor)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1 pixel, got {chunks}")
    image = da.asarray(image)
    trimap = da.asarray(trimap)
    if image.shape[:2] != trimap.shape:
        raise ValueError(
            f"image {image.shape[:2]} and trimap {trimap.shape} differ in height/width"
        )
    h, w = trimap.shape
    stacked = da.concatenate([image.astype(np.float32), trimap[..., None].astype(np.float32)], 2)
    stacked = stacked.rechunk(
        (_chunk_sizes(h, chunks, overlap), _chunk_sizes(w, chunks, overlap), stacked.shape[2])
    )
    starts = tuple(tuple(int(s) for s in np.cumsum((0,) + c[:-1])) for c in stacked.chunks[:2])
    # An axis cut into a single block has no seam to hide (and may be thinner than overlap).
    margins = tuple(overlap if len(c) > 1 else 0 for c in stacked.chunks[:2])
    return da.map_overlap(
        _block_task,
        stacked,
        depth={0: margins[0], 1: margins[1], 2: 0},
        boundary="none",
        trim=True,
        drop_axis=2,
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
        starts=starts,
        margins=margins,
        # One graph key holds the context; every block task depends on it.
        context=dask.delayed(context, pure=True),
        model=model if isinstance(model, str) else model.name,
        device=device,
        model_options=model_options,
    )
