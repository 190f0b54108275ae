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

from ._blocks import BlockGrid, share_cores
from ._cells import CELL_BACKGROUND, CELL_FOREGROUND, CELL_MIXED, CELL_UNKNOWN
from .global_pass import GlobalContext
from .image import to_float
from .models import DEFAULT_MODEL
from .trimap import UNKNOWN, known_alpha

__all__ = ["block_kinds", "refine", "refine_block"]


def refine_block(
    block: np.ndarray,
    *,
    context: GlobalContext,
    origin: tuple[int, int],
    model=DEFAULT_MODEL,
    device: str = "auto",
    model_options: tuple = (),
) -> np.ndarray:
    """Solve one (overlapped) block; numpy in, numpy out.

    Parameters
    ----------
    block : (h, w, C + 1) array of uint8, uint16 or float32
        Image channels (integers at full scale, or float in [0, 1]) followed by the
        canonical trimap (0 / 128 / 255) as one more channel of the same dtype.
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
    image = to_float(block[..., :-1])
    if isinstance(model, str):
        from .models import get_model

        model = get_model(model, device, **dict(model_options))
    share_cores()
    h, w = trimap.shape
    y0, x0 = origin
    full_h, full_w = context.shape
    fixed = (y0 > 0, y0 + h < full_h, x0 > 0, x0 + w < full_w)
    coarse = context.alpha_at(y0, x0, h, w)
    if getattr(model, "uses_context", False):
        return model.refine(image, trimap, coarse, fixed, context=context, origin=origin)
    return model.refine(image, trimap, coarse, fixed)


def _block_task(block, *, grid: BlockGrid, block_info=None, **kwargs):
    # map_overlap hands us the grown block; recover where it sits in the full image.
    origin, _ = grid.locate_info(block_info)
    return refine_block(block, origin=origin, **kwargs)


def refine(
    image,
    trimap,
    context: GlobalContext,
    *,
    model=DEFAULT_MODEL,
    chunks: int = 512,
    overlap: int | None = None,
    device: str = "auto",
    model_options: dict | None = None,
    stitch: str = "trim",
) -> da.Array:
    """Build the lazy full-resolution patch pass.

    Parameters
    ----------
    image : (H, W, C) array of uint8, uint16, or float32 in [0, 1] (numpy or dask)
        Integer images stay integers in the graph (a quarter of float32's memory for
        8-bit data) and are scaled inside each block.
    trimap : (H, W) array of uint8 in {0, 128, 255} (numpy or dask)
    context : GlobalContext
        From :func:`napari_hrmatt.global_pass.global_pass` on the same image.
    model : str or model object
        A registered name (each worker process loads and caches its own instance), or a
        model object (e.g. ``HDMattModel.from_network(net)``), used as given.
    chunks : int
        Block size in pixels (before overlap).
    overlap : int, optional
        Overlap in pixels; by default derived from the model (``model.overlap(factor)``).
    device : str
    stitch : {"trim", "blend"}
        ``"trim"`` keeps each block's core (pixels at least ``overlap`` from any cut);
        ``"blend"`` cross-fades neighbouring blocks with linear ramps over the ``2 overlap``
        pixels they share (HDMatt's stitching). See docs/engine.md for the measurements.

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
    if isinstance(model, str):
        model_obj = get_model(model, device, **dict(model_options))
        # The graph holds the name: each worker process loads (and caches) its own copy.
        graph_model = model
    else:
        if model_options:
            raise ValueError("model_options apply to a model name, not to a model object")
        model_obj = model
        # An in-memory model travels in the graph once, as one key.
        graph_model = dask.delayed(model, pure=False)
    if overlap is None:
        overlap = model_obj.overlap(context.factor)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1 pixel, got {chunks}")
    if stitch not in ("trim", "blend"):
        raise ValueError(f"stitch must be 'trim' or 'blend', got {stitch!r}")
    image = da.asarray(image)
    trimap = da.asarray(trimap)
    if image.shape[:2] != trimap.shape:
        raise ValueError(
            f"image {image.shape[:2]} and trimap {trimap.shape} differ in height/width"
        )
    h, w = trimap.shape
    dtype = image.dtype if image.dtype in (np.uint8, np.uint16) else np.float32
    stacked = da.concatenate([image.astype(dtype), trimap[..., None].astype(dtype)], 2)
    # blending needs room for a ramp on both sides of every core
    minimum = 2 * overlap if stitch == "blend" else overlap
    grid = BlockGrid.plan((h, w), chunks, overlap, minimum)
    stacked = stacked.rechunk(grid.chunks + (stacked.shape[2],))
    margins = grid.margins
    kwargs = {
        "grid": grid,
        # One graph key holds the context; every block task depends on it.
        "context": dask.delayed(context, pure=True),
        "model": graph_model,
        "device": device,
        "model_options": model_options,
    }
    if stitch == "trim" or not any(margins):
        solved = da.map_overlap(
            _block_task,
            stacked,
            depth=grid.depth(),
            boundary="none",
            trim=True,
            drop_axis=2,
            dtype=np.float32,
            meta=np.empty((0, 0), np.float32),
            **kwargs,
        )
        return _skip_known_blocks(solved, trimap, grid, context)
    # Blend: solve the grown blocks and keep them whole (dask's map_overlap cannot combine
    # trim=False with drop_axis, so the overlap is explicit) ...
    grown = da.overlap.overlap(stacked, depth=grid.depth(), boundary="none")
    solved = grown.map_blocks(
        _block_task, drop_axis=2, dtype=np.float32, meta=np.empty((0, 0), np.float32), **kwargs
    )
    # ... then each output core reads `overlap` pixels of its neighbours' grown blocks and
    # cross-fades them.
    padded = da.overlap.overlap(solved, depth={0: margins[0], 1: margins[1]}, boundary="none")
    return padded.map_blocks(
        _blend_task,
        chunks=stacked.chunks[:2],
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
        margins=margins,
        counts=tuple(len(c) for c in grid.chunks),
    )


def block_kinds(grid: BlockGrid, context: GlobalContext) -> dict | None:
    """Which blocks of ``grid`` need no solve, from the global pass's cell kinds.

    Returns ``{(i, j): kind}`` for every block whose grown window (all that its task
    reads) has no unknown pixel: :data:`~napari_hrmatt._cells.CELL_BACKGROUND` or
    :data:`~napari_hrmatt._cells.CELL_FOREGROUND` when all its cells are, else
    :data:`~napari_hrmatt._cells.CELL_MIXED`. None when the context has no cell kinds.
    """
    kinds = context.cell_kinds
    if kinds is None:
        return None
    f = context.factor
    out = {}
    for i, j in grid:
        rows, cols = grid.grown(i, j)
        k = kinds[
            rows.start // f : (rows.stop - 1) // f + 1, cols.start // f : (cols.stop - 1) // f + 1
        ]
        if (k == CELL_UNKNOWN).any():
            continue
        if (k == CELL_BACKGROUND).all():
            out[i, j] = CELL_BACKGROUND
        elif (k == CELL_FOREGROUND).all():
            out[i, j] = CELL_FOREGROUND
        else:
            out[i, j] = CELL_MIXED
    return out


def _constant(shape, value):
    return np.full(shape, value, np.float32)


def _skip_known_blocks(solved: da.Array, trimap: da.Array, grid: BlockGrid, context):
    """``solved`` with the blocks that have no unknown pixel replaced by cheap tasks.

    Such a block's task would read its grown image and trimap block and return the
    trimap's 0 / 1 (``refine_block``); here it is a constant block, or the 0 / 1 of the
    trimap chunk alone (mixed known cells), so its image is never read: once the graph
    is optimised (culled), only the blocks with unknown pixels read the image.
    """
    known = block_kinds(grid, context)
    if not known:
        return solved
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "hrmatt-blocks-" + tokenize(solved.name, sorted(known.items()))
    cores = trimap.rechunk(grid.chunks)
    layer = {}
    for i, j in grid:
        shape = (grid.chunks[0][i], grid.chunks[1][j])
        kind = known.get((i, j))
        if kind is None:
            layer[name, i, j] = (solved.name, i, j)  # an alias: the solved block
        elif kind == CELL_MIXED:
            layer[name, i, j] = (known_alpha, (cores.name, i, j))
        else:
            layer[name, i, j] = (_constant, shape, 1.0 if kind == CELL_FOREGROUND else 0.0)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[solved, cores])
    return da.Array(graph, name, chunks=grid.chunks, dtype=np.float32, meta=solved._meta)


def _ramp_sources(i: int, n: int, core: int, d: int):
    """Per-axis sources of one blended core: (weights over the core, padded-block indices).

    The padded block along this axis is ``[d of block i-1][grown block i][d of block i+1]``
    (the outer parts only where a neighbour exists); block ``i``'s grown part starts ``d``
    before its core. In the ``2d`` pixels straddling a cut the two blocks' weights ramp
    linearly and sum to one, so no normalisation is needed.
    """
    y = np.arange(core)
    top = d if i > 0 else 0  # rows of block i-1 in front of the grown block
    own_start = top + (d if i > 0 else 0)  # padded index of core row 0 in block i
    grown = core + (d if i > 0 else 0) + (d if i < n - 1 else 0)
    ramp = (np.arange(d) + 0.5) / (2 * d)  # over the first half of the 2d zone, rising
    sources = []
    w_self = np.ones(core)
    if i > 0:  # zone [s - d, s + d): core rows [0, d)
        w_prev = np.zeros(core)
        w_prev[:d] = 0.5 - ramp
        w_self[:d] = 0.5 + ramp
        sources.append((w_prev, np.clip(y, 0, d - 1)))
    if i < n - 1:  # zone [e - d, e + d): core rows [core - d, core)
        w_next = np.zeros(core)
        w_next[core - d :] = ramp
        w_self[core - d :] = 1 - ramp
        sources.append((w_next, top + grown + np.clip(y - (core - d), 0, d - 1)))
    sources.append((w_self, own_start + y))
    return sources


def _blend_task(padded, *, margins, counts, block_info=None):
    loc = block_info[None]["chunk-location"]
    shape = block_info[None]["chunk-shape"]
    ys = (
        _ramp_sources(loc[0], counts[0], shape[0], margins[0])
        if margins[0]
        else [(np.ones(shape[0]), np.arange(shape[0]))]
    )
    xs = (
        _ramp_sources(loc[1], counts[1], shape[1], margins[1])
        if margins[1]
        else [(np.ones(shape[1]), np.arange(shape[1]))]
    )
    out = np.zeros(shape, np.float32)
    for wy, iy in ys:
        for wx, ix in xs:
            out += (wy[:, None] * wx[None, :]).astype(np.float32) * padded[np.ix_(iy, ix)]
    return out
