"""Layer geometry and LayerDataTuples, without Qt.

Everything here takes and returns plain arrays, dicts and napari *LayerDataTuples*
``(data, kwargs, layer_type)``: where a layer sits (scale/translate, the crop in view),
how layer data is wrapped lazily (:func:`as_dask`, never a copy), and how results are
shown (colormaps, contrast limits, multiscale). The run itself is in
:mod:`napari_hrmatt._job`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .trimap import LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_UNKNOWN

__all__ = [
    "OUTPUT_ROLES",
    "RUN_KEY",
    "TRIMAP_CLASSES",
    "TRIMAP_COLORS",
    "Geometry",
    "alpha_layer",
    "as_dask",
    "cutout_layer",
    "composite_layer",
    "crop_to_view",
    "image_data",
    "is_output",
    "layer_geometry",
    "trimap_layer",
]

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

# Names of the trimap labels: a ``features`` table, so napari's status bar names the
# class under the cursor ("class: foreground") and the widgets can show a legend.
TRIMAP_CLASSES: dict[int, str] = {
    LABEL_UNKNOWN: "unknown",
    LABEL_BACKGROUND: "background",
    LABEL_FOREGROUND: "foreground",
}

# ``metadata["napari_hrmatt"]`` of the layers a run adds. Layers carrying one of these
# are the plugin's own outputs: never offered as a trimap, replaced by the next run.
OUTPUT_ROLES = ("alpha", "cutout", "composite")
# ``metadata["napari_hrmatt_run"]``: what made an output (image, trimap, settings).
RUN_KEY = "napari_hrmatt_run"


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

    def coarser(self, factor: int) -> Geometry:
        """Geometry of this layer downsampled by ``factor`` (each pixel the mean of a
        ``factor x factor`` cell starting at pixel 0): centred on its cell."""
        return Geometry(
            (self.scale[0] * factor, self.scale[1] * factor),
            (
                self.translate[0] + self.scale[0] * (factor - 1) / 2,
                self.translate[1] + self.scale[1] * (factor - 1) / 2,
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
        "features": {
            "index": list(TRIMAP_CLASSES),
            "class": list(TRIMAP_CLASSES.values()),
        },
        "metadata": {"napari_hrmatt": "trimap"},
        **(geometry or Geometry()).kwargs(),
    }
    return labels, kwargs, "labels"


def _multiscale_kwargs(data) -> dict[str, bool]:
    return {"multiscale": isinstance(data, list)}


def _metadata(role: str, run: dict | None) -> dict:
    return {"napari_hrmatt": role, **({RUN_KEY: dict(run)} if run else {})}


def is_output(layer) -> bool:
    """True for a layer that a matting run added (alpha, cutout, composite)."""
    return getattr(layer, "metadata", {}).get("napari_hrmatt") in OUTPUT_ROLES


def alpha_layer(
    alpha, *, name: str, geometry: Geometry | None = None, run: dict | None = None
) -> tuple:
    """LayerDataTuple for an alpha matte: grey colormap, contrast limits (0, 1).

    Parameters
    ----------
    alpha : (H, W) array of float32 in [0, 1], or a list of them (a pyramid,
        finest first)
    name : str
    geometry : Geometry, optional
        Scale/translate of the source image, so the matte overlays it exactly.
    run : dict, optional
        What made it (image and trimap names, settings), kept in
        ``metadata["napari_hrmatt_run"]`` (and in the OME-Zarr attributes when saved).
    """
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": (0.0, 1.0),
        "metadata": _metadata("alpha", run),
        **_multiscale_kwargs(alpha),
        **(geometry or Geometry()).kwargs(),
    }
    return alpha, kwargs, "image"


def cutout_layer(
    rgba, *, name: str, geometry: Geometry | None = None, run: dict | None = None
) -> tuple:
    """LayerDataTuple for an RGBA cutout (uint8, straight alpha), or a pyramid of them."""
    kwargs = {
        "name": name,
        "rgb": True,
        "metadata": _metadata("cutout", run),
        **_multiscale_kwargs(rgba),
        **(geometry or Geometry()).kwargs(),
    }
    return rgba, kwargs, "image"


def composite_layer(
    rgb, *, name: str, geometry: Geometry | None = None, run: dict | None = None
) -> tuple:
    """LayerDataTuple for an RGB composite preview (uint8), or a pyramid of them."""
    kwargs = {
        "name": name,
        "rgb": True,
        "metadata": _metadata("composite", run),
        **_multiscale_kwargs(rgb),
        **(geometry or Geometry()).kwargs(),
    }
    return rgb, kwargs, "image"
