"""Open images and trimaps lazily as dask arrays: PNG/JPEG (Pillow), TIFF, Zarr and OME-Zarr."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from ._paths import _FORMAT_NAMES, READ_EXTENSIONS, format_of
from .ome import read_multiscales

__all__ = ["open_image", "open_trimap"]

# Default edge of the dask chunks of an opened image, in pixels (rounded to whole
# storage chunks): big enough that per-task overhead is small, small enough that a
# block of a 4-channel float image is a few tens of MB.
_READ_CHUNK = 1024


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


def _open_zarr(path: Path, chunks):
    import dask.array as da
    import zarr

    node = zarr.open(str(path), mode="r")
    letters = None
    if isinstance(node, zarr.Group):
        found = read_multiscales(node)
        if found is None:
            names = sorted(node.array_keys())
            raise ValueError(
                f"{path}: a Zarr group without OME-Zarr multiscales metadata; open one of "
                f"its arrays instead ({', '.join(str(path / n) for n in names) or 'none'})"
            )
        letters = "".join(a[:1].upper() for a in found.axes)
        node = node[found.levels[0].path]
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
    >>> from napari_hrmatt.io import save_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.tif"
    >>> _ = save_image(np.eye(3, dtype=np.uint8) * 255, path)
    >>> open_image(path).compute().tolist()
    [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    """
    import dask.array as da

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    fmt = format_of(path, READ_EXTENSIONS, "read")
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
    from ..trimap import TrimapError

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
    from ..trimap import TrimapError, canonical_trimap

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
