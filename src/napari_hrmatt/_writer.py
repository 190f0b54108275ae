"""napari writers: image layers (alpha, cutout) and trimaps, through :mod:`napari_hrmatt.io`.

* ``write_image``: an image layer to OME-Zarr (``.ome.zarr`` / ``.zarr``, with a
  multiscale pyramid), TIFF (tiled) or PNG, streamed block by block by
  :func:`napari_hrmatt.io.save_image`. Float data must lie in [0, 1] (an alpha
  matte, a cutout); it stays float32 in Zarr, becomes 16-bit in TIFF (alpha keeps
  its precision) and 8-bit in PNG (what other tools expect). Integer data keeps
  its dtype.
* ``write_trimap``: a label trimap layer (0 unknown, 1 background,
  2 foreground) to a grey PNG with 0 / 128 / 255, the file convention.
  Only ``.png`` is registered, so saving other label layers as TIFF still goes
  to napari's own writer; the Trimap tools widget exports TIFF as well.

For a multiscale layer the finest level is written (the pyramid is rebuilt).

Zarr output keeps the layer's placement: its scale and translate go into the OME-Zarr
``coordinateTransformations`` (so the reader puts it back where it was), and what made
a result (``metadata["napari_hrmatt"]`` and ``["napari_hrmatt_run"]``: image, trimap,
settings) into the group attribute ``"napari_hrmatt"``. PNG and TIFF files store
neither (a reopened PNG/TIFF sits at the origin with pixel size 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_image", "write_trimap"]


def _finest(data: Any, meta: dict):
    if meta.get("multiscale") or isinstance(data, list | tuple):
        return data[0]
    return data


def _bit_depth(data, path: str) -> int | None:
    # Float TIFFs become 16-bit (an 8-bit alpha loses its soft edges' precision);
    # Zarr keeps float32 and PNG becomes 8-bit (save_image's defaults).
    if np.dtype(data.dtype).kind == "f" and path.lower().endswith((".tif", ".tiff")):
        return 16
    return None


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write one image layer; returns the list of written paths (npe2 writer hook).

    Parameters
    ----------
    path : str
        Ends in ``.ome.zarr``, ``.zarr``, ``.tif``, ``.tiff`` or ``.png``.
    data : (H, W) or (H, W, C) array (numpy or dask), or a list of them (multiscale)
        uint8, uint16, or float in [0, 1].
    meta : dict
        Layer attributes from napari (``multiscale`` is used).
    """
    from .io import save_image

    data = _finest(data, meta)
    save_image(data, path, bit_depth=_bit_depth(data, path), pyramid=True)
    if path.lower().endswith(".zarr"):
        _annotate_zarr(path, meta)
    return [str(Path(path))]


def _annotate_zarr(path: str, meta: dict) -> None:
    """Put the layer's scale/translate and its napari-hrmatt metadata into the group."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)  # OME-NGFF 0.5 nests under "ome"
    scale = [float(v) for v in meta.get("scale", (1.0, 1.0))[-2:]]
    translate = [float(v) for v in meta.get("translate", (0.0, 0.0))[-2:]]
    for dataset in ome["multiscales"][0]["datasets"]:
        for t in dataset.get("coordinateTransformations", []):
            # Level transforms are in full-resolution pixels: map them to the world.
            if t.get("type") == "scale":
                t["scale"][-2:] = [t["scale"][-2] * scale[0], t["scale"][-1] * scale[1]]
            elif t.get("type") == "translation":
                t["translation"][-2:] = [
                    translate[0] + t["translation"][-2] * scale[0],
                    translate[1] + t["translation"][-1] * scale[1],
                ]
    update = {"ome": ome} if "ome" in attrs else dict(ome)
    ours = {k: v for k, v in (meta.get("metadata") or {}).items() if k.startswith("napari_hrmatt")}
    if ours:
        # JSON only (numbers, strings, lists): anything else is stored as its text.
        update["napari_hrmatt"] = json.loads(json.dumps(ours, default=str))
    group.attrs.update(update)


def write_trimap(path: str, data: Any, meta: dict) -> list[str]:
    """Write a label trimap layer as a grey 0 / 128 / 255 file (npe2 writer hook).

    Raises
    ------
    napari_hrmatt.TrimapError
        For labels other than 0 (unknown), 1 (background), 2 (foreground).
    """
    from ._layers import as_dask
    from .io import save_image
    from .trimap import labels_to_trimap

    data = _finest(data, meta)
    save_image(labels_to_trimap(as_dask(data, 1024)), path)
    return [str(Path(path))]
