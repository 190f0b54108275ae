"""Write images and alpha mattes block by block, atomically: PNG, TIFF, Zarr/OME-Zarr."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ._paths import WRITE_EXTENSIONS, atomic_output, check_output_path, format_of
from ._png import write_png
from .ome import _meta, write_ome_zarr
from .readers import _spatial_chunks

__all__ = ["save_alpha", "save_image"]

# TIFF tile edge (must be a multiple of 16).
_TIFF_TILE = 256


# --------------------------------------------------------------------------- conversion


def _quantize(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float in [0, 1] -> round(x * max) as ``dtype`` (uint8/uint16) or float32."""
    x = np.asarray(block)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if np.isnan(lo) or np.isnan(hi):  # min and max are NaN as soon as one value is
        raise ValueError("cannot save an image with NaN values")
    # Tolerate rounding noise from the solver, reject real range errors.
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"float data to save must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "rescale it or save integer data"
        )
    if dtype.kind == "f" and x.dtype == np.float32 and lo >= 0 and hi <= 1:
        return x  # already what is stored: no copy
    x = np.clip(x, 0, 1)
    if dtype.kind == "f":
        return x.astype(np.float32)
    return np.rint(x * np.iinfo(dtype).max).astype(dtype)


def _rescale_int(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """uint8 <-> uint16 with 0 -> 0 and max -> max (x * 257, round(x / 257))."""
    if dtype == np.uint16:
        return block.astype(np.uint16) * np.uint16(257)
    return np.rint(block / 257.0).astype(np.uint8)


def _prepare(array, fmt: str, bit_depth: int | None, chunks):
    """Validate and convert to the stored dtype; returns a dask (H, W[, C]) array."""
    import dask.array as da

    if bit_depth not in (None, 8, 16):
        raise ValueError(f"bit_depth must be 8 or 16 (or None), got {bit_depth!r}")
    if not isinstance(array, da.Array):
        if not all(hasattr(array, a) for a in ("shape", "dtype", "__getitem__")):
            array = np.asarray(array)  # lists and the like
        # numpy, or array-likes read by region (zarr.Array, h5py): never loaded whole
        array = da.from_array(
            array, chunks=_spatial_chunks(array.shape, (1024, 1024), chunks), name=False
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[-1] <= 4)):
        raise ValueError(
            f"can only save (H, W) or (H, W, C) arrays with C <= 4, got shape {tuple(array.shape)}"
        )
    if 0 in array.shape:
        raise ValueError(f"cannot save an empty array of shape {tuple(array.shape)}")
    dt = np.dtype(array.dtype)
    if dt == np.bool_:
        array, dt = array.astype(np.uint8) * np.uint8(255), np.dtype(np.uint8)
    if dt.kind == "f":
        if bit_depth is None:
            target = np.dtype(np.float32) if fmt == "zarr" else np.dtype(np.uint8)
        else:
            target = np.dtype(np.uint8 if bit_depth == 8 else np.uint16)
        return array.map_blocks(_quantize, target, dtype=target, meta=_meta(array, target))
    if dt in (np.uint8, np.uint16):
        want = dt if bit_depth is None else np.dtype(np.uint8 if bit_depth == 8 else np.uint16)
        if want != dt:
            array = array.map_blocks(_rescale_int, want, dtype=want, meta=_meta(array, want))
        return array
    raise ValueError(
        f"cannot save dtype {dt}: use uint8, uint16, bool, or float with values in [0, 1]"
    )


# --------------------------------------------------------------------------- streaming


def _iter_block_rows(array, progress: bool, desc: str = "blocks") -> Iterator[np.ndarray]:
    """Compute ``array`` one block-row at a time, top to bottom (memory: one row)."""
    import dask

    if array.ndim == 3:
        array = array.rechunk({2: -1})
    per_row = len(array.chunks[1])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=array.npartitions, desc=desc, unit="block")
    try:
        for i in range(len(array.chunks[0])):
            (rows,) = dask.compute(array.blocks[i])
            if bar is not None:
                bar.update(per_row)
            yield np.asarray(rows)
    finally:
        if bar is not None:
            bar.close()


def _row_bands(rows: Iterable[np.ndarray], height: int) -> Iterator[np.ndarray]:
    """Regroup row blocks of any heights into bands of exactly ``height`` rows."""
    pending: list[np.ndarray] = []
    have = 0
    for block in rows:
        pending.append(block)
        have += block.shape[0]
        if have < height:
            continue
        buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
        stop = (have // height) * height
        for y in range(0, stop, height):
            yield buf[y : y + height]
        pending = [buf[stop:]] if stop < have else []
        have -= stop
    if have:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def _tiff_tiles(bands: Iterable[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    # Row-major over the tile grid, as TIFF stores them; tifffile zero-pads edge tiles.
    for band in bands:
        for x in range(0, width, tile):
            yield np.ascontiguousarray(band[:, x : x + tile])


def _write_tiff(array, target: Path, progress: bool) -> None:
    import tifffile

    h, w = array.shape[:2]
    c = array.shape[2] if array.ndim == 3 else 1
    dtype = np.dtype(array.dtype)
    kwargs: dict = {"photometric": "rgb" if c >= 3 else "minisblack"}
    if c in (2, 4):
        kwargs["extrasamples"] = ("unassalpha",)
    if c == 2:
        kwargs["planarconfig"] = "contig"
    try:
        import imagecodecs  # noqa: F401

        compression = "zstd"
    except ImportError:
        compression = "zlib"
    tiles = _tiff_tiles(_row_bands(_iter_block_rows(array, progress), _TIFF_TILE), w, _TIFF_TILE)
    tifffile.imwrite(
        target,
        data=tiles,
        shape=array.shape,
        dtype=dtype,
        tile=(_TIFF_TILE, _TIFF_TILE),
        compression=compression,
        # Classic TIFF addresses 4 GB; decide on the uncompressed size to be safe.
        bigtiff=h * w * c * dtype.itemsize > 2**31,
        metadata=None,
        **kwargs,
    )


# --------------------------------------------------------------------------- saving


def save_image(
    array,
    path,
    *,
    inputs: Iterable = (),
    bit_depth: int | None = None,
    pyramid: bool = True,
    progress: bool = False,
    chunks: int | None = None,
) -> Path:
    """Write an image, streamed block by block, atomically.

    Parameters
    ----------
    array : (H, W) or (H, W, C) array (numpy or dask), C <= 4
        uint8, uint16, bool (written 0 / 255), or float in [0, 1] (NaN or values
        outside [0, 1] raise while writing; rounding noise of 1e-3 is clipped).
        C = 2 is grey + alpha, 3 RGB, 4 RGBA.
    path : str or Path
        ``.png``, ``.tif``/``.tiff``, ``.zarr`` or ``.ome.zarr``. Parent directories
        are created.
    inputs : iterable of str or Path
        Paths the data was computed from; writing onto, into or over one of them is
        refused.
    bit_depth : {None, 8, 16}
        Stored bits per sample. ``None``: float data becomes uint8 in PNG/TIFF and
        stays float32 in Zarr (no precision lost); integer data keeps its dtype.
        8 or 16: float data is stored as ``round(x * 255)`` or ``round(x * 65535)``
        in every format, integers are rescaled between 8 and 16 bits (``x * 257``).
    pyramid : bool
        Zarr only: add 2x-downsampled levels (2 x 2 means) down to one chunk, by
        :func:`napari_hrmatt.io.ome.build_pyramid` (odd edges: ``ceil(n / 2)``).
    progress : bool
        Show a progress bar over blocks on stderr.
    chunks : int, optional
        Zarr chunk edge (pixels); by default the data's own chunk size, at most 4096.
        For numpy input, also the block size it is computed in.

    Returns
    -------
    path : Path
        The written path.

    Raises
    ------
    ValueError
        Before computing anything: unsupported extension or dtype, a shape that is not
        an image, the output equal to / inside / containing an input, a destination
        of the wrong kind. While writing: float values outside [0, 1] or NaN (the
        partial output is removed).

    Notes
    -----
    Both ``.zarr`` and ``.ome.zarr`` are written as OME-Zarr 0.5 (Zarr v3): a group
    with arrays ``0`` (full resolution), ``1``, ... (each half the size of the one
    before), axes ``y, x`` or ``c, y, x`` (colour channel-first, per OME-NGFF),
    scale and translation per level. Level 0 is computed in one dask compute, every
    block stored by the task that makes it; the pyramid is built from what was
    stored. Memory: one block per worker.

    TIFF: tiled 256 x 256, zstd (with imagecodecs) or zlib, BigTIFF above 2 GB
    uncompressed; no pyramid. PNG: streamed too (adaptive filtering, zlib level 6),
    any of 8/16-bit grey, grey+alpha, RGB, RGBA. TIFF and PNG compute the data one
    block-row at a time, so memory is one block-row (block height x width); graph
    pieces shared across rows (input reads in an overlap) are computed once per row.

    An existing output is replaced only when the new one is complete: the data goes
    to ``.<name>.partial-<pid>`` beside it first, which is removed on any error or
    interruption.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> alpha = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    >>> out = save_image(alpha, pathlib.Path(tempfile.mkdtemp()) / "alpha.png")
    >>> open_image(out).compute()[0].tolist()
    [0, 23, 46, 70]
    """
    path = check_output_path(path, inputs=inputs)
    fmt = format_of(path, WRITE_EXTENSIONS, "write")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks must be a positive number of pixels, got {chunks!r}")
    data = _prepare(array, fmt, bit_depth, chunks)
    cancel = threading.Event()
    with atomic_output(path, cancel) as tmp:
        if fmt == "png":
            write_png(_iter_block_rows(data, progress), tmp, data.shape, data.dtype)
        elif fmt == "tiff":
            _write_tiff(data, tmp, progress)
        else:
            write_ome_zarr(
                data,
                tmp,
                edge=chunks,
                pyramid=pyramid,
                progress=progress,
                # a thread event cannot travel to dask.distributed workers
                cancel=cancel if _local_scheduler() else None,
                name=path.name,
            )
    return path


def _local_scheduler() -> bool:
    """Whether dask computes in this process (no dask.distributed client is active)."""
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):
        return True
    return False


def save_alpha(alpha, path, **kwargs) -> Path:
    """Write an alpha matte; :func:`save_image` for (H, W) data.

    Parameters
    ----------
    alpha : (H, W) array (numpy or dask) of float32 in [0, 1], or uint8/uint16
        As returned by :func:`napari_hrmatt.estimate_alpha` (lazy is best: it is
        computed while being written).
    path : str or Path
        ``.png``, ``.tif``/``.tiff``, ``.zarr`` or ``.ome.zarr``.
    **kwargs
        ``inputs``, ``bit_depth``, ``pyramid``, ``progress``, ``chunks`` as in
        :func:`save_image`. PNG and TIFF get 8 bits unless ``bit_depth=16``; Zarr
        keeps float32 unless a bit depth is given.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        If ``alpha`` is not 2D, or for the reasons of :func:`save_image`.
    """
    shape = tuple(alpha.shape)
    if len(shape) == 3 and shape[-1] == 1:
        alpha = alpha[..., 0]
    elif len(shape) != 2:
        raise ValueError(f"alpha must be 2D (H, W), got shape {shape}")
    return save_image(alpha, path, **kwargs)
