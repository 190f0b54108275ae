"""Plugin logic without Qt: layer geometry, result storage, the matting job.

Everything here takes and returns plain arrays, dicts and napari *LayerDataTuples*
``(data, kwargs, layer_type)``; nothing imports Qt, so it is testable without a
display. :mod:`napari_hrmatt._widget` wires it to buttons.

Memory model
------------
Layer data is never turned into one big numpy array here. Image and trimap layers
are wrapped with :func:`dask.array.from_array` (a view, no copy); the engine builds
a lazy alpha; :class:`MattingJob` computes it block by block
(:func:`napari_hrmatt.engine.iter_blocks`) into a :class:`ResultStore`, which is
a numpy array for results up to :data:`IN_MEMORY_PIXELS` pixels and a temporary
Zarr group with a multiscale pyramid above that, shown lazily by napari.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .trimap import LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_UNKNOWN

__all__ = [
    "IN_MEMORY_PIXELS",
    "Failure",
    "JobError",
    "Progress",
    "TRIMAP_COLORS",
    "Geometry",
    "MattingJob",
    "ResultStore",
    "alpha_layer",
    "as_dask",
    "cutout_layer",
    "composite_layer",
    "crop_to_view",
    "image_data",
    "layer_geometry",
    "trimap_layer",
]

# Results with more pixels than this (about 67 MP, 256 MiB of float32 alpha) go to
# a temporary Zarr pyramid instead of a numpy array.
IN_MEMORY_PIXELS = 64 * 2**20

# Trimap label colours (RGBA in [0, 1]). Unknown is transparent so the image shows
# through where nothing is painted (and the eraser, label 0, means "unknown");
# background is blue, foreground orange; any other value (not a trimap label) is
# magenta so mistakes are visible before matting refuses them.
TRIMAP_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    LABEL_UNKNOWN: (0.0, 0.0, 0.0, 0.0),
    LABEL_BACKGROUND: (0.16, 0.42, 1.0, 1.0),
    LABEL_FOREGROUND: (1.0, 0.55, 0.05, 1.0),
    None: (1.0, 0.0, 1.0, 1.0),
}

# Pyramid levels are added until both sides fit in this many pixels (a typical
# OpenGL texture limit is 4096-16384; 2048 keeps the coarsest level cheap to draw).
_PYRAMID_MAX_SIDE = 2048

_TEMP_DIRS: list[Path] = []


@atexit.register
def _remove_temp_dirs() -> None:  # pragma: no cover - runs at interpreter exit
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Geometry:
    """World placement of the 2D (row, column) plane of a layer.

    Attributes
    ----------
    scale : (2,) tuple of float
        World units per pixel along rows and columns.
    translate : (2,) tuple of float
        World position of pixel (0, 0).
    """

    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)

    def shifted(self, row: int, col: int) -> Geometry:
        """Geometry of a crop whose top-left pixel is ``(row, col)`` of this layer."""
        return Geometry(
            self.scale,
            (
                self.translate[0] + row * self.scale[0],
                self.translate[1] + col * self.scale[1],
            ),
        )

    def kwargs(self) -> dict[str, tuple[float, float]]:
        """``scale`` and ``translate`` as layer keyword arguments."""
        return {"scale": self.scale, "translate": self.translate}


def layer_geometry(layer) -> Geometry:
    """Scale and translate of the last two (displayed row/column) axes of a layer."""
    scale = tuple(float(s) for s in layer.scale[-2:])
    translate = tuple(float(t) for t in layer.translate[-2:])
    return Geometry(scale, translate)


def image_data(layer) -> tuple[Any, tuple[int, int]]:
    """Full-resolution data of a 2D grey or RGB(A) image layer, without copying it.

    Parameters
    ----------
    layer : napari.layers.Image
        A 2D grey layer, or an RGB(A) layer (``layer.rgb``). For a multiscale
        layer the finest level is used.

    Returns
    -------
    data : (H, W) or (H, W, C) array-like
        The layer's own array (numpy, dask, zarr, ...), not a copy.
    shape : (2,) tuple of int
        ``(H, W)``.

    Raises
    ------
    ValueError
        For stacks and volumes (more than two spatial axes).
    """
    data = layer.data[0] if layer.multiscale else layer.data
    spatial = data.shape[:-1] if layer.rgb else data.shape
    if len(spatial) != 2:
        raise ValueError(
            f"image layer {layer.name!r} has shape {tuple(data.shape)}: matting needs a "
            "2D grey or RGB(A) image; for a stack, add the plane you want as its own layer"
        )
    return data, (int(spatial[0]), int(spatial[1]))


def as_dask(data, chunks: int):
    """Wrap array-like layer data as a dask array without reading it.

    Dask arrays are returned unchanged (already lazy). Anything else (numpy,
    zarr, a memory map) is wrapped with :func:`dask.array.from_array`, which only
    slices it block by block when the graph runs.

    Parameters
    ----------
    data : (H, W) or (H, W, C) array-like
    chunks : int
        Block side along rows and columns; channels stay in one block.
    """
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    block = (chunks, chunks) + (-1,) * (data.ndim - 2)
    meta = np.empty((0,) * data.ndim, dtype=data.dtype)
    # dask.array.from_array copies anything with a ``.copy`` method (numpy arrays,
    # memory maps) before slicing it; _SliceReader hides ``copy`` so a layer's
    # array is only read block by block, never duplicated.
    return da.from_array(_SliceReader(data), chunks=block, asarray=True, meta=meta, name=False)


class _SliceReader:
    """Minimal array-like view (shape, dtype, slicing) of layer data, for dask."""

    def __init__(self, data) -> None:
        self._data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        return np.asarray(self._data[index])


def crop_to_view(
    corner_pixels: np.ndarray, shape: tuple[int, int], *, margin: int = 0
) -> tuple[slice, slice]:
    """Row/column slices of the part of a layer visible on the canvas.

    Parameters
    ----------
    corner_pixels : (2, >=2) array
        Top-left and bottom-right visible pixels in full-resolution data
        coordinates (napari's ``layer.corner_pixels``, scaled to level 0).
    shape : (2,) tuple of int
        ``(H, W)`` of the layer.
    margin : int
        Extra pixels on every side, so the matting of the view has some context.

    Raises
    ------
    ValueError
        When no pixel of the layer is in view.
    """
    lo = np.floor(np.asarray(corner_pixels[0][-2:], float)).astype(int) - margin
    hi = np.ceil(np.asarray(corner_pixels[1][-2:], float)).astype(int) + 1 + margin
    lo = np.clip(lo, 0, shape)
    hi = np.clip(hi, 0, shape)
    if np.any(hi - lo < 2):
        raise ValueError("the image is not in view: pan or zoom to it, or untick 'view only'")
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


# --------------------------------------------------------------------------- layers


def trimap_layer(labels, *, name: str, geometry: Geometry | None = None) -> tuple:
    """LayerDataTuple for a label trimap (0 unknown, 1 background, 2 foreground).

    Parameters
    ----------
    labels : (H, W) array of uint8 in {0, 1, 2}
        numpy (editable with the brush) or dask/zarr (large trimaps).
    name : str
    geometry : Geometry, optional
        Scale/translate, usually those of the image the trimap belongs to.
    """
    kwargs = {
        "name": name,
        "colormap": dict(TRIMAP_COLORS),
        "opacity": 0.5,
        "metadata": {"napari_hrmatt": "trimap"},
        **(geometry or Geometry()).kwargs(),
    }
    return labels, kwargs, "labels"


def _multiscale_kwargs(data) -> dict[str, bool]:
    return {"multiscale": isinstance(data, list)}


def alpha_layer(alpha, *, name: str, geometry: Geometry | None = None) -> tuple:
    """LayerDataTuple for an alpha matte: grey colormap, contrast limits (0, 1).

    Parameters
    ----------
    alpha : (H, W) array of float32 in [0, 1], or a list of them (a pyramid,
        finest first)
    name : str
    geometry : Geometry, optional
        Scale/translate of the source image, so the matte overlays it exactly.
    """
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": (0.0, 1.0),
        "metadata": {"napari_hrmatt": "alpha"},
        **_multiscale_kwargs(alpha),
        **(geometry or Geometry()).kwargs(),
    }
    return alpha, kwargs, "image"


def cutout_layer(rgba, *, name: str, geometry: Geometry | None = None) -> tuple:
    """LayerDataTuple for an RGBA cutout (uint8, straight alpha), or a pyramid of them."""
    kwargs = {
        "name": name,
        "rgb": True,
        "metadata": {"napari_hrmatt": "cutout"},
        **_multiscale_kwargs(rgba),
        **(geometry or Geometry()).kwargs(),
    }
    return rgba, kwargs, "image"


def composite_layer(rgb, *, name: str, geometry: Geometry | None = None) -> tuple:
    """LayerDataTuple for an RGB composite preview (uint8), or a pyramid of them."""
    kwargs = {
        "name": name,
        "rgb": True,
        "metadata": {"napari_hrmatt": "composite"},
        **_multiscale_kwargs(rgb),
        **(geometry or Geometry()).kwargs(),
    }
    return rgb, kwargs, "image"


# --------------------------------------------------------------------------- storage


class ResultStore:
    """Destination of a block-by-block computation: numpy, or a temporary Zarr pyramid.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    dtype : numpy dtype
    chunks : (2,) tuple of int
        Row/column block size of the computation (the Zarr chunk size).
    in_memory_pixels : int, optional
        Results with at most this many pixels (``H * W``) are kept in numpy;
        default :data:`IN_MEMORY_PIXELS`.

    Notes
    -----
    A Zarr store lives in a fresh directory under :func:`tempfile.gettempdir`
    (set ``TMPDIR`` to move it) and is deleted by :meth:`discard` or when Python
    exits; save the layer with the plugin's writer to keep it.
    """

    def __init__(
        self,
        shape: Sequence[int],
        dtype,
        chunks: Sequence[int],
        *,
        in_memory_pixels: int | None = None,
    ) -> None:
        limit = IN_MEMORY_PIXELS if in_memory_pixels is None else in_memory_pixels
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path: Path | None = None
        if self.shape[0] * self.shape[1] <= limit:
            self._array = np.zeros(self.shape, self.dtype)
            return
        import zarr

        self.path = Path(tempfile.mkdtemp(prefix="napari-hrmatt-", suffix=".zarr"))
        _TEMP_DIRS.append(self.path)
        self._group = zarr.open_group(str(self.path), mode="w")
        zchunks = tuple(int(c) for c in chunks[:2]) + self.shape[2:]
        self._array = self._group.create_array(
            "0", shape=self.shape, chunks=zchunks, dtype=self.dtype, fill_value=0
        )

    @property
    def array(self):
        """The finest level as a writable array: numpy, or the Zarr array."""
        return self._array

    @property
    def in_memory(self) -> bool:
        """True when the result is a numpy array."""
        return self.path is None

    def __setitem__(self, index, block: np.ndarray) -> None:
        self._array[index] = block

    def pyramid_steps(self) -> Iterator[int]:
        """Build the pyramid levels of a Zarr store, yielding after each level.

        Each level is a 2 x 2 mean of the previous one, computed block by block
        from the stored level (never the whole array in memory). Nothing happens
        for an in-memory store.
        """
        if self.in_memory:
            return
        import dask.array as da

        level, name = self._array, 0
        while max(level.shape[:2]) > _PYRAMID_MAX_SIDE:
            src = da.from_zarr(level)
            axes = {0: 2, 1: 2}
            coarse = da.coarsen(np.mean, src.astype(np.float32), axes, trim_excess=True)
            if self.dtype.kind in "ui":
                coarse = da.round(coarse)
            coarse = coarse.astype(self.dtype)
            name += 1
            level = self._group.create_array(
                str(name),
                shape=coarse.shape,
                chunks=level.chunks,
                dtype=self.dtype,
                fill_value=0,
            )
            # One dask block per Zarr chunk: parallel writers never share a chunk
            # (a shared chunk would be a read-modify-write race).
            da.store(coarse.rechunk(level.chunks), level, lock=False)
            yield name

    def data(self):
        """The result: a numpy array, or a list of lazy dask levels (finest first)."""
        if self.in_memory:
            return self._array
        import dask.array as da

        levels = sorted(int(k) for k in self._group.array_keys())
        return [da.from_zarr(self._group[str(k)]) for k in levels]

    def discard(self) -> None:
        """Free the memory or delete the temporary Zarr store."""
        self._array = None
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- the job


class JobError(Exception):
    """An unexpected error inside a :class:`MattingJob` (not bad input)."""


@dataclass
class Failure:
    """A run that stopped on bad input; ``message`` is shown to the user."""

    message: str


@dataclass
class Progress:
    """One step of a :class:`MattingJob` (what the progress bar shows)."""

    done: int
    total: int
    description: str


@dataclass
class MattingJob:
    """Matting of one image/trimap pair, run step by step (e.g. in a napari thread worker).

    Call :meth:`steps` and iterate it: it yields :class:`Progress` after the global
    pass and after every computed block (so a caller can cancel between blocks),
    and returns a list of LayerDataTuples, or a :class:`Failure` for bad input.
    If the iteration is abandoned, call :meth:`discard` to free the partial result.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array-like
        Image layer data (numpy, dask, zarr); wrapped lazily, never copied whole.
    trimap : (H, W) array-like
        Trimap layer data.
    labels : bool
        True for a label trimap (0 unknown, 1 background, 2 foreground), False
        for a grey one (0 / 128 / 255).
    name : str
        Base name of the output layers.
    geometry : Geometry
        Scale/translate of the outputs (the source image's, shifted for a crop).
    model, device, chunks, overlap, global_size, model_options
        Passed to :func:`napari_hrmatt.engine.estimate_alpha` (``overlap=None``
        lets the model choose).
    cutout : bool
        Also compute foreground colours and add an RGBA cutout layer (needs
        :mod:`napari_hrmatt.foreground`).
    background : (3,) tuple of float in [0, 1], optional
        Colour for a composite preview layer (foreground over this colour).
    batch : int, optional
        Blocks computed at a time (default: the engine's).
    in_memory_pixels : int, optional
        See :class:`ResultStore`.
    """

    image: Any
    trimap: Any
    labels: bool
    name: str
    geometry: Geometry = field(default_factory=Geometry)
    model: str = "cf"
    device: str = "auto"
    chunks: int = 512
    overlap: int | None = None
    global_size: int = 1_000_000
    model_options: dict | None = None
    cutout: bool = False
    background: tuple[float, float, float] | None = None
    batch: int | None = None
    in_memory_pixels: int | None = None
    _stores: list[ResultStore] = field(default_factory=list, init=False, repr=False)
    _done: int = field(default=0, init=False, repr=False)
    _total: int = field(default=0, init=False, repr=False)

    def steps(self) -> Iterator[Progress]:
        """Run the job; yields :class:`Progress`, returns layers or a :class:`Failure`."""
        try:
            return (yield from self._steps())
        except (ValueError, OSError) as exc:
            # Bad input (TrimapError is a ValueError) or an unreadable/unwritable
            # file: a message for the user, not a traceback.
            self.discard()
            return Failure(str(exc))
        except RuntimeError as exc:
            # superqt's generator worker swallows a RuntimeError (it takes it for
            # a deleted Qt object) and never reports "finished"; re-raise it as a
            # JobError so napari shows it and the widget resets.
            self.discard()
            raise JobError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.discard()
            raise

    def _steps(self) -> Iterator[Progress]:
        from .engine import estimate_alpha
        from .models import resolve_device

        try:
            resolve_device(self.device)
        except RuntimeError as exc:  # CUDA asked for but not available
            raise ValueError(str(exc)) from None

        image = as_dask(self.image, self.chunks)
        trimap = as_dask(self.trimap, self.chunks)
        yield Progress(0, 1, "global pass")
        alpha = estimate_alpha(
            image,
            trimap,
            model=self.model,
            chunks=self.chunks,
            overlap=self.overlap,
            global_size=self.global_size,
            device=self.device,
            labels=self.labels,
            compute=False,
            model_options=self.model_options,
        )
        results = {}
        yield Progress(0, alpha.npartitions, "matting")
        results["alpha"] = yield from self._compute("alpha", alpha, np.float32)
        if self.cutout or self.background is not None:
            # Foreground colours read the alpha just stored (never recompute it).
            stored = results["alpha"]
            stored_alpha = as_dask(stored[0] if isinstance(stored, list) else stored, self.chunks)
            for key, arr in self._foreground_work(image, stored_alpha):
                results[key] = yield from self._compute(key, arr, np.uint8)

        g = self.geometry
        layers = [alpha_layer(results["alpha"], name=f"{self.name} alpha", geometry=g)]
        if "cutout" in results:
            layers.append(cutout_layer(results["cutout"], name=f"{self.name} cutout", geometry=g))
        if "composite" in results:
            layers.append(
                composite_layer(results["composite"], name=f"{self.name} composite", geometry=g)
            )
        self._stores.clear()  # the layers own the results now
        return layers

    def _compute(self, key: str, arr, dtype) -> Iterator[Progress]:
        """Compute a lazy array block by block into a new store; returns its data."""
        from ._blocks import iter_blocks

        # Channels in one block: a block is then exactly one chunk of the store.
        arr = arr.rechunk(dict.fromkeys(range(2, arr.ndim), -1))
        self._total += arr.npartitions
        store = ResultStore(
            arr.shape, dtype, arr.chunksize, in_memory_pixels=self.in_memory_pixels
        )
        self._stores.append(store)
        for index, block in iter_blocks(arr, batch=self.batch):
            store[index] = block
            self._done += 1
            yield Progress(self._done, self._total, key)
        for _ in store.pyramid_steps():
            yield Progress(self._done, self._total, f"{key}: pyramid")
        return store.data()

    def _foreground_work(self, image, alpha) -> list:
        """Lazy ``(name, uint8 array)`` pairs for the cutout and composite layers."""
        from . import foreground

        fg = foreground.estimate_foreground(image, alpha)
        work = []
        if self.cutout:
            work.append(("cutout", _to_uint8(foreground.cutout(image, alpha, foreground=fg))))
        if self.background is not None:
            bg = np.asarray(self.background, np.float32)
            work.append(("composite", _to_uint8(foreground.composite(fg, alpha, bg))))
        return work

    def discard(self) -> None:
        """Delete partial results (after a cancel or an error)."""
        for store in self._stores:
            store.discard()
        self._stores.clear()


def _to_uint8(arr):
    """Float in [0, 1] -> uint8 (lazily); integer arrays pass through."""
    if np.dtype(arr.dtype).kind == "f":
        return (arr.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return arr
