"""napari reader: trimap files as label layers, OME-Zarr results as multiscale images.

What this reader claims (it is deliberately conservative, so it never takes a
photo away from napari's own reader):

* **Trimaps**: ``.png``, ``.tif`` or ``.tiff`` files whose *file name* contains
  ``trimap`` (any case, e.g. ``GT01_trimap.png``, ``trimap-2.tif``), holding a
  single grey channel (or RGB with equal channels) of 8 or 16 bits. They open as
  a Labels layer in the plugin's convention: 0 unknown, 1 background,
  2 foreground. The grey convention is 0 = background, 255 (65535) =
  foreground, anything else unknown; a file whose values are all in {0, 1, 2}
  with at least one 1 or 2 was saved in the label convention (e.g. napari's own
  labels writer) and is read as labels. Other images are left to other readers.
* **Zarr / OME-Zarr** directories (``*.zarr``, ``*.ome.zarr``) written by
  :func:`napari_hrmatt.io.save_image` (alpha mattes, cutouts): an OME-Zarr
  multiscale group with 2D ``y, x`` (optionally ``c``) axes opens as a
  multiscale image layer with the stored pixel scale; a plain 2D or (H, W, C)
  Zarr array as an image. Groups with time or z axes are left to other readers.
  The stored scale/translation place the layer; the group attribute
  ``"napari_hrmatt"`` (written by :mod:`napari_hrmatt._writer`) becomes the
  layer's metadata.

Data stays lazy (dask) except small trimaps, which are loaded into numpy so the
brush can edit them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import _layers, pipeline

__all__ = ["get_reader", "read_trimap", "read_zarr"]

TRIMAP_SUFFIXES = (".png", ".tif", ".tiff")
_TRIMAP_NAME = re.compile("trimap", re.IGNORECASE)


def _single_path(path: str | Sequence[str]) -> str | None:
    if isinstance(path, list | tuple):
        return str(path[0]) if len(path) == 1 else None
    return str(path)


def is_trimap_path(path: str | Path) -> bool:
    """True for a PNG/TIFF file whose name contains "trimap" (any case)."""
    p = Path(path)
    return p.suffix.lower() in TRIMAP_SUFFIXES and bool(_TRIMAP_NAME.search(p.name))


def _is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and p.name.lower().endswith(".zarr")


def get_reader(path: str | Sequence[str]) -> Callable | None:
    """npe2 reader hook: the reading function for ``path``, or None if not ours."""
    single = _single_path(path)
    if single is None:
        return None
    p = Path(single)
    if is_trimap_path(p) and p.is_file():
        return read_trimap
    if _is_zarr_dir(p) and _zarr_layout(p) is not None:
        return read_zarr
    return None


# --------------------------------------------------------------------------- trimaps


def read_trimap(path: str | Sequence[str]) -> list[tuple]:
    """Read a trimap file as a label trimap layer (0 unknown, 1 background, 2 foreground).

    Parameters
    ----------
    path : str
        A grey PNG or TIFF (see the module docstring for the conventions).

    Returns
    -------
    layers : list of one LayerDataTuple
        ``(labels, kwargs, "labels")``: labels is (H, W) uint8, numpy up to
        :data:`napari_hrmatt.pipeline.IN_MEMORY_PIXELS` pixels, else lazy dask.

    Raises
    ------
    napari_hrmatt.TrimapError
        For colour images with differing channels, stacks, or float files out of range.
    """
    from .io import open_image
    from .trimap import TrimapError, canonical_trimap, trimap_to_labels

    path = _single_path(path)
    raw = open_image(path)
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        rgb = raw[..., :3]
        # Grey saved as RGB (palette PNGs, exports): accept only identical channels.
        if bool((rgb != rgb[..., :1]).any().compute()):
            raise TrimapError(
                f"{path}: the trimap has colour channels that differ; "
                "save it as a single-channel grey image (0 / 128 / 255)"
            )
        raw = raw[..., 0]
    if raw.ndim != 2:
        raise TrimapError(f"{path}: a trimap is 2D (H, W), got shape {tuple(raw.shape)}")
    labels_convention = False
    if np.dtype(raw.dtype).kind in "iu":
        # One pass over the (small, 8-bit) file decides the convention: values in
        # {0, 1, 2} with some 1 or 2 can only be a label trimap; a grey trimap
        # uses 255 (or 65535) for foreground and mid-grey for unknown.
        vmax = int(raw.max().compute())
        labels_convention = vmax in (1, 2)
    grey = canonical_trimap(raw, labels=labels_convention)  # 0 / 128 / 255, lazy
    labels = trimap_to_labels(grey)
    if raw.shape[0] * raw.shape[1] <= pipeline.IN_MEMORY_PIXELS:
        labels = np.asarray(labels.compute())
    return [_layers.trimap_layer(labels, name=Path(path).stem)]


# --------------------------------------------------------------------------- zarr


def _zarr_layout(p: Path):
    """Describe a Zarr directory we can show, or None.

    Returns ``("array", None)`` for a plain 2D / (H, W, C) array, or
    ``("multiscale", multiscale)`` (:class:`napari_hrmatt.io.ome.Multiscale`) for an
    OME-Zarr group with y/x (and c) axes.
    """
    import zarr

    from .io.ome import read_multiscales

    try:
        node = zarr.open(str(p), mode="r")
    except Exception:  # not a zarr store at all (or unreadable): not ours
        return None
    if isinstance(node, zarr.Array):
        ok = node.ndim == 2 or (node.ndim == 3 and node.shape[-1] <= 4)
        return ("array", None) if ok else None
    ms = read_multiscales(node)
    if ms is None or sorted(ms.axes) not in (["x", "y"], ["c", "x", "y"]):
        return None
    return "multiscale", ms


def read_zarr(path: str | Sequence[str]) -> list[tuple]:
    """Read a (OME-)Zarr image written by :func:`napari_hrmatt.io.save_image`.

    Returns
    -------
    layers : list of one LayerDataTuple
        An image layer: multiscale (a list of lazy dask levels, finest first)
        for OME-Zarr, with the stored pixel scale and translation of level 0;
        RGB(A) when there is a channel axis of 3 or 4.
    """
    import dask.array as da
    import zarr

    path = _single_path(path)
    p = Path(path)
    layout = _zarr_layout(p)
    if layout is None:
        raise ValueError(
            f"{path} is not a 2D Zarr array or OME-Zarr image with y/x axes; "
            "open it with another reader"
        )
    kind, ms = layout
    name = p.name[: -len(".ome.zarr")] if p.name.lower().endswith(".ome.zarr") else p.stem
    if kind == "array":
        levels = [da.from_zarr(str(p))]
        geometry = _layers.Geometry()
    else:
        group = zarr.open_group(str(p), mode="r")
        axes = ms.axes
        yx = [axes.index("y"), axes.index("x")]
        levels = []
        for dataset in ms.levels:
            level = da.from_zarr(group[dataset.path])
            if "c" in axes:  # OME-NGFF puts channels before y, x; napari wants them last
                level = da.moveaxis(level, axes.index("c"), -1)
            levels.append(level)
        scale, translate = ms.levels[0].scale, ms.levels[0].translation
        geometry = _layers.Geometry(
            (scale[yx[0]], scale[yx[1]]), (translate[yx[0]], translate[yx[1]])
        )
    data = levels if len(levels) > 1 else levels[0]
    first = levels[0]
    kwargs = {"name": name, "multiscale": len(levels) > 1, **geometry.kwargs()}
    if kind != "array":
        # What made a result saved by the plugin's writer (image, trimap, settings).
        ours = dict(zarr.open_group(str(p), mode="r").attrs).get("napari_hrmatt")
        if isinstance(ours, dict):
            kwargs["metadata"] = dict(ours)
    if first.ndim == 3:
        kwargs["rgb"] = first.shape[-1] in (3, 4)
    if first.ndim == 2:
        kwargs["colormap"] = "gray"
        kind_ = np.dtype(first.dtype)
        if kind_.kind in "ui":
            kwargs["contrast_limits"] = (0, int(np.iinfo(kind_).max))
        elif kind_.kind == "f":
            kwargs["contrast_limits"] = (0.0, 1.0)
    return [(data, kwargs, "image")]
