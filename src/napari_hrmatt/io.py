"""Read images and trimaps as dask arrays; write alpha mattes and images block by block.

Formats, chosen by the file extension:

======================  =======  =====  ===========================================
extension               read     write  notes
======================  =======  =====  ===========================================
``.png``                yes      yes    8/16-bit grey, grey+alpha, RGB, RGBA
``.jpg``, ``.jpeg``     yes      no     lossy: never for trimaps or mattes
``.tif``, ``.tiff``     yes      yes    read lazily (level 0 of series 0); written
                                        tiled 256 x 256, zlib, BigTIFF when large
``.zarr``, ``.ome.zarr``  yes    yes    plain Zarr array or OME-Zarr; written as
                                        OME-Zarr 0.5 (Zarr v3) with a pyramid
======================  =======  =====  ===========================================

Reading returns lazy dask arrays ``(H, W)`` or ``(H, W, C)`` (channels last) in the
file's own dtype. PNG and JPEG cannot be decoded by region, so they are decoded once,
whole, into memory and wrapped; use TIFF or Zarr for images larger than memory.

Writing streams: TIFF and PNG are computed one block-row at a time and written as
the rows arrive, Zarr is written with one ``compute`` of all blocks; memory stays at
about one block-row (TIFF, PNG) or one block per worker (Zarr). Every writer writes
into a hidden sibling ``.<name>.partial-<pid>`` and renames it into place only when
complete, so an interrupted run never leaves an output that looks finished.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import struct
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "check_output_path",
    "open_image",
    "open_trimap",
    "save_alpha",
    "save_image",
]

READ_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".zarr", ".ome.zarr")
WRITE_EXTENSIONS = (".png", ".tif", ".tiff", ".zarr", ".ome.zarr")

_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".zarr": "zarr",
}

_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "zarr": "Zarr"}

# Default edge of the dask chunks of an opened image, in pixels (rounded to whole
# storage chunks): big enough that per-task overhead is small, small enough that a
# block of a 4-channel float image is a few tens of MB.
_READ_CHUNK = 1024
# TIFF tile edge (must be a multiple of 16).
_TIFF_TILE = 256
# Largest Zarr chunk edge taken over from the dask chunking of the data.
_MAX_ZARR_CHUNK = 4096


# --------------------------------------------------------------------------- paths


def _format_of(path: Path, supported: tuple[str, ...], action: str) -> str:
    """``"png"``, ``"jpeg"``, ``"tiff"`` or ``"zarr"`` for ``path``, else ValueError."""
    name = path.name.lower()
    fmt = "zarr" if name.endswith(".ome.zarr") else _FORMATS.get(path.suffix.lower())
    if (
        fmt is None
        and action == "read"
        and any(part.lower().endswith(".zarr") for part in path.parts[:-1])
    ):
        fmt = "zarr"  # an array inside a Zarr store, e.g. image.zarr/0
    if fmt is None or not any(ext in supported for ext, f in _FORMATS.items() if f == fmt):
        raise ValueError(
            f"cannot {action} {str(path)!r}: unsupported file extension "
            f"{path.suffix or '(none)'!r}; supported: {', '.join(supported)}"
        )
    return fmt


def _is_zarr_store(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray"))


def check_output_path(path, *, inputs: Iterable = ()) -> Path:
    """Check that ``path`` can be written; raise before any computing happens.

    Parameters
    ----------
    path : str or Path
        Output path; its extension picks the format (see :data:`WRITE_EXTENSIONS`).
    inputs : iterable of str or Path
        Files or Zarr stores the result is computed from. The output may not be one
        of them, lie inside one (a Zarr directory), or contain one.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        Unsupported extension, output equal to (or inside, or containing) an input, or
        an existing destination of the wrong kind (a directory where a file goes, a
        non-Zarr directory where a Zarr store goes).
    """
    path = Path(path)
    fmt = _format_of(path, WRITE_EXTENSIONS, "write")
    out = path.resolve()
    for item in inputs:
        if item is None:
            continue
        inp = Path(item).resolve()
        same = out == inp
        if not same and out.exists() and inp.exists():
            same = os.path.samefile(out, inp)
        if same:
            raise ValueError(
                f"refusing to overwrite the input {str(item)!r} with the output "
                f"{str(path)!r}; choose another output path"
            )
        if inp in out.parents:
            raise ValueError(
                f"refusing to write {str(path)!r} inside the input {str(item)!r}; "
                "choose an output outside it"
            )
        if out in inp.parents:
            raise ValueError(
                f"refusing to write {str(path)!r}: replacing it would delete the input "
                f"{str(item)!r} inside it; choose another output path"
            )
    if path.is_dir() and fmt != "zarr":
        raise ValueError(f"cannot write {str(path)!r}: it is an existing directory")
    if fmt == "zarr" and path.exists():
        if not path.is_dir():
            raise ValueError(f"cannot write Zarr {str(path)!r}: an existing file is in the way")
        if any(path.iterdir()) and not _is_zarr_store(path):
            raise ValueError(
                f"refusing to replace {str(path)!r}: it is a non-empty directory but not a "
                "Zarr store; choose another output path"
            )
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def _atomic_output(path: Path, cancel: threading.Event | None = None):
    """Yield a hidden sibling path to write into; move it onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the partial output is deleted and
    the exception re-raised; ``cancel`` is set first so that writer threads still
    running stop before touching the disk again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        if cancel is not None:
            cancel.set()
        _remove(tmp)
        raise
    if tmp.is_dir():
        # Directories cannot be replaced in one step: move the old store aside, move
        # the new one in (two renames, no copying), then delete the old one. ``path``
        # is never a half-written store, at worst briefly absent.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        _remove(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


# --------------------------------------------------------------------------- reading


def _spatial_chunks(shape, storage, chunks) -> tuple:
    """Dask chunks for an (H, W[, C]) array: ``chunks`` if given, else whole storage
    chunks adding up to about ``_READ_CHUNK`` pixels per side."""
    if chunks is not None:
        if isinstance(chunks, int):
            chunks = (chunks, chunks)
        chunks = tuple(chunks)[:2]
        return chunks + (-1,) * (len(shape) - 2)
    out = []
    for n, c in zip(shape[:2], storage[:2], strict=True):
        c = max(1, min(int(c), n))
        out.append(min(n, max(1, round(_READ_CHUNK / c)) * c))
    return tuple(out) + (-1,) * (len(shape) - 2)


@contextlib.contextmanager
def _no_pixel_limit(image_module):
    """Lift Pillow's decompression-bomb limit (~179 MP) while reading a file the user
    chose: images that large are what this package is for."""
    limit = image_module.MAX_IMAGE_PIXELS
    image_module.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        image_module.MAX_IMAGE_PIXELS = limit


def _read_pil(path: Path) -> np.ndarray:
    """Decode a PNG/JPEG into (H, W[, C]) numpy in a sensible dtype."""
    from PIL import Image, ImageOps

    with _no_pixel_limit(Image), Image.open(path) as im:
        grey_alpha16 = False
        if im.format == "PNG":
            with open(path, "rb") as f:
                depth, colour_type = f.read(26)[24:26]  # from the IHDR chunk
            if depth == 16 and colour_type in (2, 4, 6):
                warnings.warn(
                    f"{path}: Pillow reads 16-bit colour PNG at 8 bits per channel; "
                    "save it as TIFF to keep the full precision",
                    UserWarning,
                    stacklevel=4,
                )
                grey_alpha16 = colour_type == 4  # Pillow gives RGBA for it
        im = ImageOps.exif_transpose(im)  # camera JPEGs: the orientation the user sees
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "PA":
            im = im.convert("RGBA")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            im = im.convert("RGB")
        elif mode in ("La", "RGBa"):
            im = im.convert(mode.upper())  # un-premultiply
        arr = np.array(im)
    if grey_alpha16 and arr.ndim == 3 and arr.shape[-1] == 4:
        arr = np.ascontiguousarray(arr[..., [0, 3]])
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)  # native byte order
    elif mode == "I":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ValueError(f"{path}: 32-bit integer image with values outside 0-65535")
        arr = arr.astype(np.uint16)
    return arr


class _TiffSource:
    """Region reader over level 0 of series 0 of a TIFF, for ``da.from_array``.

    Every read opens the file and reads only the tiles/strips it needs (through
    tifffile's Zarr store), so the object holds no open file: it pickles (dask
    distributed) and is thread-safe.
    """

    def __init__(self, path: Path):
        import tifffile
        import zarr

        self.path = str(path)
        stat = path.stat()
        self._stamp = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with tifffile.TiffFile(self.path) as tf:
            series = tf.series[0]
            self.axes = series.axes.upper().replace("S", "C")  # samples are channels
            self.shape = tuple(series.levels[0].shape)
            self.dtype = np.dtype(series.levels[0].dtype)
            with series.aszarr(level=0) as store:
                self.storage_chunks = tuple(zarr.open_array(store, mode="r").chunks)
        self.ndim = len(self.shape)

    def __dask_tokenize__(self):
        return ("napari_hrmatt.io._TiffSource", *self._stamp)

    def __getitem__(self, key):
        import tifffile
        import zarr

        with (
            tifffile.TiffFile(self.path) as tf,
            tf.series[0].aszarr(level=0) as store,
        ):
            return np.asarray(zarr.open_array(store, mode="r")[key])


def _image_axes(shape: tuple, letters: str | None, path: Path) -> tuple[int, int, int | None]:
    """Positions ``(y, x, c)`` in a raw array; ``c`` is None for grey.

    Axis names (TIFF ``"YXS"``, OME ``c, y, x``) are used when known; otherwise
    ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` with C <= 4. Other axes must be
    singletons (a ``t``/``z`` of one plane): a stack is an error, not a guess.
    """
    ndim = len(shape)
    if letters and "Y" in letters and "X" in letters:
        y, x = letters.index("Y"), letters.index("X")
    elif ndim == 2 or (ndim == 3 and shape[-1] <= 4):
        y, x = 0, 1
    elif ndim == 3 and shape[0] <= 4:
        y, x = 1, 2
    else:
        y = x = -1
    others = [i for i in range(ndim) if i not in (y, x) and shape[i] != 1]
    if y < 0 or len(others) > 1 or (others and shape[others[0]] > 4):
        raise ValueError(
            f"{path}: expected a 2D image or one with at most 4 channels, got shape "
            f"{tuple(shape)}{f' (axes {letters})' if letters else ''}; for a stack, "
            "save one plane per file"
        )
    return y, x, (others[0] if others else None)


def _as_image(arr, y: int, x: int, c: int | None):
    """Reorder a raw dask array to (H, W[, C]), dropping singleton axes."""
    keep = [y, x] + ([c] if c is not None else [])
    drop = [i for i in range(arr.ndim) if i not in keep]
    arr = arr.transpose(*drop, *keep)
    return arr[(0,) * len(drop)] if drop else arr


def _raw_chunks(shape, storage, y, x, chunks) -> tuple:
    cy, cx = _spatial_chunks((shape[y], shape[x]), (storage[y], storage[x]), chunks)
    raw = [-1] * len(shape)
    raw[y], raw[x] = cy, cx
    return tuple(raw)


def _open_tiff(path: Path, chunks):
    import dask.array as da

    src = _TiffSource(path)
    y, x, c = _image_axes(src.shape, src.axes, path)
    arr = da.from_array(
        src,
        chunks=_raw_chunks(src.shape, src.storage_chunks, y, x, chunks),
        lock=False,
        meta=np.empty((0,) * src.ndim, src.dtype),
    )
    return _as_image(arr, y, x, c)


def _ome_axes(group) -> tuple[str, str] | None:
    """(path of the finest dataset, axis letters) of an OME-Zarr group, or None."""
    attrs = dict(group.attrs)
    meta = attrs.get("ome", attrs)  # 0.5 nests under "ome", 0.4 does not
    multiscales = meta.get("multiscales")
    if not multiscales:
        return None
    ms = multiscales[0]
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", [])]
    return ms["datasets"][0]["path"], "".join(a[:1].upper() for a in axes)


def _open_zarr(path: Path, chunks):
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    letters = None
    if isinstance(node, zarr.Group):
        found = _ome_axes(node)
        if found is None:
            names = sorted(node.array_keys())
            raise ValueError(
                f"{path}: a Zarr group without OME-Zarr multiscales metadata; open one of "
                f"its arrays instead ({', '.join(str(path / n) for n in names) or 'none'})"
            )
        dataset, letters = found
        node = node[dataset]
        if len(letters) != node.ndim:
            letters = None
    y, x, c = _image_axes(node.shape, letters, path)
    arr = da.from_zarr(node, chunks=_raw_chunks(node.shape, node.chunks, y, x, chunks))
    return _as_image(arr, y, x, c)


def open_image(path, *, chunks=None):
    """Open an image file lazily as a dask array.

    Parameters
    ----------
    path : str or Path
        ``.png``, ``.jpg``/``.jpeg``, ``.tif``/``.tiff`` or ``.zarr``/``.ome.zarr``
        (a plain Zarr array, an OME-Zarr multiscale group, or an array inside a store).
    chunks : int or (int, int), optional
        Dask chunk size (rows, columns). By default whole storage chunks adding up to
        about 1024 pixels per side.

    Returns
    -------
    image : (H, W) or (H, W, C) dask array, C <= 4, in the file's dtype
        Channels last. Palette images become RGB (RGBA with transparency), 1-bit
        images uint8 0/255, 16-bit grey PNGs uint16.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unsupported extension, an unreadable or corrupt file, or an array that is not
        a 2D image (e.g. a stack of planes).

    Notes
    -----
    TIFF: level 0 of series 0 (the full resolution of a pyramid, the first image of a
    multi-series file); ``(C, H, W)`` with C <= 4 (planar RGB, ImageJ channels) is
    moved to ``(H, W, C)``. Reads are by region, so the image need not fit in memory.
    OME-Zarr: the finest dataset of the first multiscale; singleton ``t``/``z`` axes
    are dropped and ``c`` moved last. PNG/JPEG are decoded whole (in memory).
    PNG with 16-bit colour is read by Pillow, which keeps only 8 bits per channel.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> _ = save_image(np.eye(3, dtype=np.uint8) * 255, path)
    >>> open_image(path).compute().tolist()
    [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    """
    import dask.array as da

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    fmt = _format_of(path, READ_EXTENSIONS, "read")
    try:
        if fmt in ("png", "jpeg"):
            if not path.is_file():
                raise ValueError("not a file")
            arr = _read_pil(path)
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            return da.from_array(
                arr, chunks=_spatial_chunks(arr.shape, arr.shape, chunks), name=False
            )
        if fmt == "tiff":
            return _open_tiff(path, chunks)
        return _open_zarr(path, chunks)
    except (ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        # The file exists, so any of these means it is corrupt or not what its
        # extension says (e.g. a Zarr directory without metadata).
        message = str(exc)
        if message.startswith(str(path)):
            raise ValueError(message) from exc
        raise ValueError(
            f"cannot read {str(path)!r} as {_FORMAT_NAMES[fmt]}: {message or type(exc).__name__} "
            f"(supported: {', '.join(READ_EXTENSIONS)})"
        ) from exc


def _grey_block(block: np.ndarray) -> np.ndarray:
    from .trimap import TrimapError

    rgb = block[..., :3]
    if (rgb != rgb[..., :1]).any():
        raise TrimapError(
            "trimap has colour channels that differ; save it as a single-channel grey "
            "image (0 = background, 255 = foreground, anything else = unknown)"
        )
    return np.ascontiguousarray(block[..., 0])


def open_trimap(path, *, chunks=None, labels: bool = False):
    """Open a trimap file lazily as a canonical trimap.

    Parameters
    ----------
    path : str or Path
        A grey file (PNG, TIFF, Zarr): 0 = background, 255 (65535 for 16-bit, 1.0 for
        float) = foreground, anything else = unknown. RGB(A) files whose colour
        channels are equal (grey saved as colour) are accepted; the alpha channel of
        grey+alpha or RGBA files is ignored.
    chunks : int or (int, int), optional
        As in :func:`open_image`.
    labels : bool
        The file holds a label trimap instead (0 = unknown, 1 = background,
        2 = foreground; any other value is an error).

    Returns
    -------
    trimap : (H, W) dask array of uint8 in {0, 128, 255}

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`open_image`.
    napari_hrmatt.TrimapError
        A dtype or shape that is no trimap. Values outside the convention (float
        outside [0, 1], labels other than 0/1/2, colour channels that differ) raise
        when the blocks are computed.
    """
    from .trimap import TrimapError, canonical_trimap

    raw = open_image(path, chunks=chunks)
    if raw.ndim == 3:
        c = raw.shape[-1]
        if c in (3, 4):
            raw = raw.rechunk({2: -1}).map_blocks(
                _grey_block, drop_axis=2, dtype=raw.dtype, meta=np.empty((0, 0), raw.dtype)
            )
        elif c in (1, 2):
            raw = raw[..., 0]  # grey (+ alpha)
    try:
        return canonical_trimap(raw, labels=labels)
    except TrimapError as exc:
        raise TrimapError(f"{path}: {exc}") from exc


# --------------------------------------------------------------------------- conversion


def _meta(array, dtype) -> np.ndarray:
    """An empty numpy array of ``array``'s dimensionality: dask's ``meta``, so that it
    never calls a block function on a dummy array to find out."""
    return np.empty((0,) * array.ndim, dtype)


def _quantize(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float in [0, 1] -> round(x * max) as ``dtype`` (uint8/uint16) or float32."""
    x = np.asarray(block)
    if np.isnan(x).any():
        raise ValueError("cannot save an image with NaN values")
    # Tolerate rounding noise from the solver, reject real range errors.
    if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(
            f"float data to save must lie in [0, 1], got [{float(x.min()):.4g}, "
            f"{float(x.max()):.4g}]; rescale it or save integer data"
        )
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


def _png_chunk(f, tag: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)))
    f.write(tag)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)) & 0xFFFFFFFF))


def _png_filter(raw: np.ndarray, prior: np.ndarray, bpp: int) -> np.ndarray:
    """Filter scanlines (PNG spec, section 9), choosing per line the filter whose
    output has the smallest sum of absolute signed bytes (the spec's heuristic).

    ``raw`` is (rows, bytes) uint8, ``prior`` the line above the first (zeros at the
    top of the image). Encoding reads only unfiltered bytes, so unlike decoding it
    vectorises over whole lines: Paeth included.
    """
    x = raw.astype(np.int16)
    b = np.concatenate([prior[None].astype(np.int16), x[:-1]])  # above
    a = np.zeros_like(x)  # left (bpp bytes back)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)  # above-left
    c[:, bpp:] = b[:, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    # filter types 0 none, 1 sub, 2 up, 4 paeth (3, average, rarely wins)
    candidates = np.stack([x, x - a, x - b, x - paeth]).astype(np.uint8)
    score = np.abs(candidates.view(np.int8).astype(np.int32)).sum(axis=2)
    best = score.argmin(axis=0)
    out = np.empty((x.shape[0], x.shape[1] + 1), np.uint8)
    out[:, 0] = np.array([0, 1, 2, 4], np.uint8)[best]
    out[:, 1:] = candidates[best, np.arange(x.shape[0])]
    return out


def _write_png(array, target: Path, progress: bool) -> None:
    h, w = array.shape[:2]
    c = array.shape[2] if array.ndim == 3 else 1
    depth = np.dtype(array.dtype).itemsize * 8
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]  # grey, grey+alpha, RGB, RGBA
    bpp = c * depth // 8
    line = w * bpp
    # Filter in slabs of ~0.5 MB of scanlines: bounded temporaries for any width.
    slab = max(1, 2**19 // line)
    compressor = zlib.compressobj(6)
    prior = np.zeros(line, np.uint8)
    with open(target, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
        for rows in _iter_block_rows(array, progress):
            if depth == 16:
                rows = rows.astype(">u2")  # PNG is big-endian
            raw = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], line)
            for y in range(0, raw.shape[0], slab):
                part = raw[y : y + slab]
                data = compressor.compress(_png_filter(part, prior, bpp).tobytes())
                prior = part[-1]
                if data:
                    _png_chunk(f, b"IDAT", data)
        _png_chunk(f, b"IDAT", compressor.flush())
        _png_chunk(f, b"IEND", b"")


def _write_block(block: np.ndarray, target, cancel: threading.Event, block_info=None):
    """Store one dask block into the Zarr array ``target``; returns a 1-element marker."""
    if cancel.is_set():
        raise RuntimeError("write cancelled")
    location = block_info[0]["array-location"]
    target[tuple(slice(a, b) for a, b in location)] = block
    return np.zeros((1,) * block.ndim, np.uint8)


def _store(array, target, cancel: threading.Event, progress: bool, desc: str) -> None:
    """Write all blocks of ``array`` into ``target`` in one dask compute.

    Each block is written by the task that computes it (so nothing but a 1-byte marker
    per block is gathered), with the blocks aligned on the Zarr chunk grid so that no
    two tasks touch the same chunk. ``da.store`` does the same; a marker array of our
    own gives the progress bar keys it can count.
    """
    import dask.array as da

    from ._blocks import BlockProgress

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


def _halve(block: np.ndarray) -> np.ndarray:
    """2 x 2 mean over the last two axes; an odd edge is padded by replication."""
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


def _write_zarr(
    array, target: Path, edge: int | None, pyramid: bool, progress: bool, cancel, name: str
):
    import dask.array as da
    import zarr
    from ome_zarr.format import FormatV05

    with warnings.catch_warnings():
        # ome_zarr.writer instantiates its deprecated Scaler at import; not our concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_multiscales_metadata

    colour = array.ndim == 3
    if colour:
        array = array.transpose(2, 0, 1)  # OME-NGFF: c before y, x
    if edge is None:
        # Take over the data's own chunking when it is a regular grid (no rechunk).
        edge = max(16, min(_MAX_ZARR_CHUNK, array.chunks[-2][0], array.chunks[-1][0]))
    array = _aligned(array, edge)
    group = zarr.open_group(str(target), mode="w", zarr_format=3)
    axes = (["c"] if colour else []) + ["y", "x"]
    axes_meta = [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes]
    datasets = []
    level, path = array, "0"
    for index in range(64):
        chunk = tuple(min(edge, n) for n in level.shape[-2:])
        stored = group.create_array(
            path,
            shape=level.shape,
            chunks=((level.shape[0],) if colour else ()) + chunk,
            dtype=level.dtype,
            dimension_names=axes,
            fill_value=0,
        )
        desc = "blocks" if index == 0 else f"pyramid level {index}"
        _store(level, stored, cancel, progress, desc)
        s = float(2**index)
        # Level i averages 2^i x 2^i pixels: its pixel 0 is centred at (2^i - 1) / 2.
        datasets.append(
            {
                "path": path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": ([1.0] if colour else []) + [s, s]},
                    {
                        "type": "translation",
                        "translation": ([0.0] if colour else []) + [(s - 1) / 2] * 2,
                    },
                ],
            }
        )
        h, w = level.shape[-2:]
        if not pyramid or max(h, w) <= edge:
            break
        # The next level is computed from the level just stored (read back lazily),
        # never from the full-resolution graph: each level costs one read of the last.
        lead = (level.shape[0],) if colour else ()
        src = da.from_zarr(stored, chunks=lead + (2 * edge, 2 * edge))
        level = src.map_blocks(
            _halve,
            dtype=src.dtype,
            meta=_meta(src, src.dtype),
            chunks=tuple(src.chunks[:-2])
            + tuple(tuple((n + 1) // 2 for n in c) for c in src.chunks[-2:]),
        )
        path = str(index + 1)
    write_multiscales_metadata(group, datasets, fmt=FormatV05(), axes=axes_meta, name=name)


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
        Zarr only: add 2x-downsampled levels (2 x 2 means) down to one chunk.
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
    fmt = _format_of(path, WRITE_EXTENSIONS, "write")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks must be a positive number of pixels, got {chunks!r}")
    data = _prepare(array, fmt, bit_depth, chunks)
    cancel = threading.Event()
    with _atomic_output(path, cancel) as tmp:
        if fmt == "png":
            _write_png(data, tmp, progress)
        elif fmt == "tiff":
            _write_tiff(data, tmp, progress)
        else:
            _write_zarr(data, tmp, chunks, pyramid, progress, cancel, name=path.name)
    return path


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
