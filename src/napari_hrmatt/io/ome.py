"""OME-Zarr: read multiscale metadata, build the 2 x 2-mean pyramid, write a Zarr image.

One reader of the metadata (:func:`read_multiscales`, used by :func:`open_image` and the
napari reader) and one pyramid builder (:func:`build_pyramid`, used by the ``.zarr``
writer here and by the napari widget's result store), so that every pyramid this
package makes has the same levels and the same odd-edge rule.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Level",
    "Multiscale",
    "build_pyramid",
    "halve",
    "read_multiscales",
    "write_multiscales",
    "write_ome_zarr",
]

# Largest Zarr chunk edge taken over from the dask chunking of the data.
_MAX_ZARR_CHUNK = 4096


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Level:
    """One dataset of a multiscale: its path in the group and its pixel geometry.

    ``scale`` and ``translation`` have one entry per axis of :attr:`Multiscale.axes`
    (1 and 0 where the file gives none).
    """

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]


@dataclass(frozen=True)
class Multiscale:
    """The first multiscale of an OME-Zarr group: axis names and levels, finest first."""

    axes: tuple[str, ...]
    levels: tuple[Level, ...]


def read_multiscales(group) -> Multiscale | None:
    """The first multiscale image of an OME-Zarr group, or None if it has none.

    Parameters
    ----------
    group : zarr.Group
        OME-NGFF 0.5 (metadata under ``"ome"``) or 0.4 (at the top level).

    Returns
    -------
    multiscale : Multiscale or None
        Axis names as stored (``("c", "y", "x")``; ``("y", "x")`` when the file names
        none, as before OME-NGFF 0.4: callers check it against the array's ``ndim``),
        and per level its path, scale and translation.
    """
    attrs = dict(group.attrs)
    meta = attrs.get("ome", attrs)
    multiscales = meta.get("multiscales")
    if not multiscales:
        return None
    ms = multiscales[0]
    axes = tuple(a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", ()))
    axes = axes or ("y", "x")
    levels = []
    for dataset in ms["datasets"]:
        scale, translation = (1.0,) * len(axes), (0.0,) * len(axes)
        for t in dataset.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                scale = tuple(float(v) for v in t["scale"])
            elif t.get("type") == "translation":
                translation = tuple(float(v) for v in t["translation"])
        levels.append(Level(str(dataset["path"]), scale, translation))
    return Multiscale(axes, tuple(levels))


def _level_transforms(index: int, colour: bool) -> list[dict]:
    # Level i averages 2^i x 2^i pixels of level 0: its pixel 0 is centred at (2^i - 1) / 2.
    s = float(2**index)
    lead = [1.0] if colour else []
    lead_t = [0.0] if colour else []
    return [
        {"type": "scale", "scale": lead + [s, s]},
        {"type": "translation", "translation": lead_t + [(s - 1) / 2] * 2},
    ]


def write_multiscales(group, n_levels: int, *, colour: bool, name: str) -> None:
    """Write OME-NGFF 0.5 multiscales metadata for arrays ``"0"`` .. ``n_levels - 1``.

    Axes ``c, y, x`` (``colour``) or ``y, x``; level ``i`` has scale ``2^i`` and the
    translation of :func:`build_pyramid`'s pixel centres.
    """
    from ome_zarr.format import FormatV05

    with warnings.catch_warnings():
        # ome_zarr.writer instantiates its deprecated Scaler at import; not our concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_multiscales_metadata

    axes = (["c"] if colour else []) + ["y", "x"]
    datasets = [
        {"path": str(i), "coordinateTransformations": _level_transforms(i, colour)}
        for i in range(n_levels)
    ]
    axes_meta = [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes]
    write_multiscales_metadata(group, datasets, fmt=FormatV05(), axes=axes_meta, name=name)


# --------------------------------------------------------------------------- blocks


def _meta(array, dtype) -> np.ndarray:
    """An empty numpy array of ``array``'s dimensionality: dask's ``meta``, so that it
    never calls a block function on a dummy array to find out."""
    return np.empty((0,) * array.ndim, dtype)


def _write_block(block: np.ndarray, target, cancel: threading.Event | None, block_info=None):
    """Store one dask block into the Zarr array ``target``; returns a 1-element marker."""
    if cancel is not None and cancel.is_set():
        raise RuntimeError("write cancelled")
    location = block_info[0]["array-location"]
    target[tuple(slice(a, b) for a, b in location)] = block
    return np.zeros((1,) * block.ndim, np.uint8)


def _store(array, target, cancel: threading.Event | None, progress: bool, desc: str) -> None:
    """Write all blocks of ``array`` into ``target`` in one dask compute.

    Each block is written by the task that computes it (so nothing but a 1-byte marker
    per block is gathered), with the blocks aligned on the Zarr chunk grid so that no
    two tasks touch the same chunk. ``da.store`` does the same; a marker array of our
    own gives the progress bar keys it can count. ``cancel`` (a thread event) only works
    with the local schedulers: it cannot travel to a dask.distributed worker, so pass
    None there.
    """
    import dask.array as da

    from .._blocks import BlockProgress

    marker = da.map_blocks(
        functools.partial(_write_block, target=target, cancel=cancel),
        array,
        dtype=np.uint8,
        chunks=tuple((1,) * len(c) for c in array.chunks),
        meta=np.empty((0,) * array.ndim, np.uint8),
    )
    with BlockProgress(marker, enabled=progress, desc=desc):
        # A single block would be fused into the final task and never be counted.
        marker.compute(optimize_graph=marker.npartitions > 1)


def _aligned(array, edge: int):
    """Rechunk the last two (y, x) axes so every chunk starts on a multiple of ``edge``."""
    new = list(array.chunks)
    changed = False
    for axis in (array.ndim - 2, array.ndim - 1):
        starts = np.cumsum((0,) + array.chunks[axis][:-1])
        if (starts % edge).any():
            n = array.shape[axis]
            new[axis] = (edge,) * (n // edge) + ((n % edge,) if n % edge else ())
            changed = True
    if array.ndim == 3 and len(array.chunks[0]) > 1:
        new[0], changed = (array.shape[0],), True
    return array.rechunk(tuple(new)) if changed else array


# --------------------------------------------------------------------------- pyramid


def halve(block: np.ndarray) -> np.ndarray:
    """2 x 2 mean over the last two axes; an odd edge is padded by replication.

    An edge of ``n`` pixels becomes ``ceil(n / 2)``: the last pixel of an odd edge is
    averaged with itself, so no pixel is dropped and the coarse level covers the whole
    image. Integers are rounded to the nearest value, floats keep their dtype.
    """
    h, w = block.shape[-2:]
    if h % 2 or w % 2:
        pad = [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)]
        block = np.pad(block, pad, mode="edge")
        h, w = block.shape[-2:]
    cells = block.reshape(*block.shape[:-2], h // 2, 2, w // 2, 2)
    mean = cells.mean(axis=(-3, -1), dtype=np.float64)
    if block.dtype.kind == "f":
        return mean.astype(block.dtype)
    return np.rint(mean).astype(block.dtype)


def build_pyramid(
    group,
    *,
    channel_axis: int | None = None,
    max_side: int,
    progress: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[int]:
    """Add levels ``"1"``, ``"2"``, ... to a Zarr group holding level ``"0"``.

    A generator: it yields the index of each level once that level is stored, so
    that a GUI can report progress (and stop between levels); consume it whole
    (``for _ in build_pyramid(...): pass``) to build all levels.

    Parameters
    ----------
    group : zarr.Group
        Writable; its array ``"0"`` is the full resolution, ``(H, W)`` or with one
        channel axis.
    channel_axis : int, optional
        Position of the channel axis in the arrays (``0`` for OME-NGFF ``c, y, x``,
        ``2`` for ``H, W, C``); the other two axes are y and x.
    max_side : int
        Stop when the longer of y and x is at most this (no level is added to an
        array already that small).
    progress : bool
        Show a progress bar over the blocks of each level on stderr.
    cancel : threading.Event, optional
        When set, the blocks still to be written raise instead.

    Yields
    ------
    index : int
        The level just stored (1, 2, ...).

    Notes
    -----
    Level ``i + 1`` is the 2 x 2 mean of level ``i`` (:func:`halve`), read back from
    the store block by block, so each level costs one read of the one before and
    memory stays at one block per worker. Odd edges: an edge of ``n`` pixels becomes
    ``ceil(n / 2)``, its last pixel the mean of the last fine pixel with itself
    (replication), so level ``i`` covers the whole image with pixels of ``2^i``
    level-0 pixels whose pixel 0 is centred at ``(2^i - 1) / 2``. Each level keeps
    the chunk shape of level 0 (clipped to its size), dtype and dimension names.
    """
    import dask.array as da

    level = group["0"]
    ndim = level.ndim
    if channel_axis is not None:
        channel_axis %= ndim
    yx = [a for a in range(ndim) if a != channel_axis]
    names = getattr(level.metadata, "dimension_names", None)
    chunks = tuple(level.chunks)
    index = 0
    while max(level.shape[a] for a in yx) > max_side:
        index += 1
        shape = tuple((n + 1) // 2 if a in yx else n for a, n in enumerate(level.shape))
        chunk = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
        # Source blocks of twice the target chunk: each output block is one target
        # chunk (no two tasks share a chunk) and only the image's own last row or
        # column can be odd.
        src = da.from_zarr(
            level, chunks=tuple(2 * c if a in yx else -1 for a, c in enumerate(chunk))
        )
        if channel_axis is not None:
            src = da.moveaxis(src, channel_axis, 0)  # halve works on the last two axes
        coarse = src.map_blocks(
            halve,
            dtype=src.dtype,
            meta=_meta(src, src.dtype),
            chunks=tuple(src.chunks[:-2])
            + tuple(tuple((n + 1) // 2 for n in c) for c in src.chunks[-2:]),
        )
        if channel_axis is not None:
            coarse = da.moveaxis(coarse, 0, channel_axis)
        stored = group.create_array(
            str(index),
            shape=shape,
            chunks=chunk,
            dtype=level.dtype,
            fill_value=0,
            **({"dimension_names": names} if names else {}),
        )
        _store(coarse, stored, cancel, progress, f"pyramid level {index}")
        level = stored
        yield index


# --------------------------------------------------------------------------- writing


def write_ome_zarr(
    array,
    target: Path,
    *,
    edge: int | None,
    pyramid: bool,
    progress: bool,
    cancel: threading.Event,
    name: str,
) -> None:
    """Write a dask ``(H, W[, C])`` array as an OME-Zarr 0.5 image (Zarr v3) at ``target``.

    Level 0 is stored in one dask compute with chunks of ``edge`` pixels (by default
    the data's own chunk size, at most 4096), channels first as OME-NGFF wants; with
    ``pyramid`` :func:`build_pyramid` adds levels down to one chunk; then the
    multiscales metadata (axes, scale and translation per level) is written.
    """
    import zarr

    colour = array.ndim == 3
    if colour:
        array = array.transpose(2, 0, 1)  # OME-NGFF: c before y, x
    if edge is None:
        # Take over the data's own chunking when it is a regular grid (no rechunk).
        edge = max(16, min(_MAX_ZARR_CHUNK, array.chunks[-2][0], array.chunks[-1][0]))
    array = _aligned(array, edge)
    group = zarr.open_group(str(target), mode="w", zarr_format=3)
    axes = (["c"] if colour else []) + ["y", "x"]
    chunk = tuple(min(edge, n) for n in array.shape[-2:])
    stored = group.create_array(
        "0",
        shape=array.shape,
        chunks=((array.shape[0],) if colour else ()) + chunk,
        dtype=array.dtype,
        dimension_names=axes,
        fill_value=0,
    )
    _store(array, stored, cancel, progress, "blocks")
    n_levels = 1
    if pyramid:
        for index in build_pyramid(
            group,
            channel_axis=0 if colour else None,
            max_side=edge,
            progress=progress,
            cancel=cancel,
        ):
            n_levels = index + 1
    write_multiscales(group, n_levels, colour=colour, name=name)
