"""Trimap conventions, validation and conversions.

Two conventions exist and are converted explicitly, never guessed:

*File / grey trimaps* (PNG, TIFF, what alphamatting.com ships), 8-bit grey:
``0`` = background, ``255`` = foreground, any other value = unknown
(alphamatting.com uses 128). 16-bit files use ``0`` and ``65535`` the same way,
and float trimaps ``0.0`` and ``1.0`` (PyMatting's convention).

*Label trimaps* (what a napari ``Labels`` layer holds):
``0`` = unknown (unpainted), ``1`` = background, ``2`` = foreground.
Any other label value is an error.

Internally the engine works on the *canonical* trimap: ``uint8`` with exactly the
values ``0`` (background), ``128`` (unknown) and ``255`` (foreground).
"""

from __future__ import annotations

import numpy as np

from .image import is_dask

__all__ = [
    "BACKGROUND",
    "UNKNOWN",
    "FOREGROUND",
    "LABEL_UNKNOWN",
    "LABEL_BACKGROUND",
    "LABEL_FOREGROUND",
    "TrimapError",
    "canonical_trimap",
    "labels_to_trimap",
    "trimap_to_labels",
    "trimap_from_mask",
    "known_alpha",
]

# Canonical grey values.
BACKGROUND = 0
UNKNOWN = 128
FOREGROUND = 255

# Label values (napari Labels layer).
LABEL_UNKNOWN = 0
LABEL_BACKGROUND = 1
LABEL_FOREGROUND = 2


class TrimapError(ValueError):
    """A trimap that does not follow a documented convention."""


_CANONICAL_NAME = "hrmatt-canonical-trimap-"  # dask name prefix of converted trimaps
_CANONICAL_8BIT = np.full(256, UNKNOWN, np.uint8)
_CANONICAL_8BIT[0], _CANONICAL_8BIT[255] = BACKGROUND, FOREGROUND


def _canonical_block(t: np.ndarray, kind: str) -> np.ndarray:
    t = np.asarray(t)
    if kind == "uint8":
        return np.take(_CANONICAL_8BIT, t)  # one lookup pass
    out = np.full(t.shape, UNKNOWN, dtype=np.uint8)
    if kind == "labels":
        bad = (t != LABEL_UNKNOWN) & (t != LABEL_BACKGROUND) & (t != LABEL_FOREGROUND)
        if bad.any():
            vals = np.unique(t[bad])[:5].tolist()
            raise TrimapError(
                f"label trimap has values {vals} outside the convention "
                "0 = unknown, 1 = background, 2 = foreground; repaint them or "
                "pass a grey trimap (0 / 128 / 255) instead"
            )
        out[t == LABEL_BACKGROUND] = BACKGROUND
        out[t == LABEL_FOREGROUND] = FOREGROUND
        return out
    if kind == "float":
        if np.isnan(t).any():
            raise TrimapError("float trimap contains NaN; use 0 = background, 1 = foreground")
        if (t < 0).any() or (t > 1).any():
            raise TrimapError(
                "float trimap has values outside [0, 1]; use 0 = background, "
                "1 = foreground and values in between for unknown"
            )
        fg_value = 1.0
    elif kind == "uint16":
        fg_value = 65535
    else:  # uint8
        fg_value = 255
    out[t == 0] = BACKGROUND
    out[t == fg_value] = FOREGROUND
    return out


def _trimap_kind(trimap, labels: bool | None) -> str:
    dt = np.dtype(trimap.dtype)
    if labels:
        if dt.kind not in "iub":
            raise TrimapError(f"label trimap must hold integers, got dtype {dt}")
        return "labels"
    if dt == np.bool_:
        raise TrimapError(
            "boolean arrays are masks, not trimaps; make a trimap with "
            "napari_hrmatt.trimap_from_mask(mask, band=...)"
        )
    if dt.kind == "f":
        return "float"
    if dt == np.uint8:
        return "uint8"
    if dt == np.uint16:
        return "uint16"
    if dt.kind in "iu" and labels is None:
        # Integer arrays that are not 8/16-bit grey are label layers (napari gives int32/int64).
        return "labels"
    raise TrimapError(
        f"unsupported trimap dtype {dt}; use 8-bit grey (0 / 128 / 255), "
        "16-bit grey (0 / 65535), float in [0, 1], or integer labels (0 / 1 / 2)"
    )


def canonical_trimap(trimap, *, labels: bool | None = None):
    """Convert a trimap in any documented convention to the canonical one.

    Parameters
    ----------
    trimap : (H, W) array (numpy or dask)
        8-bit grey (0 = background, 255 = foreground, else unknown), 16-bit grey
        (0 / 65535), float in [0, 1] (0 / 1), or integer labels
        (0 = unknown, 1 = background, 2 = foreground).
    labels : bool, optional
        Force the label convention (``True``) or the grey one (``False``).
        By default, ``uint8``/``uint16``/float arrays are grey trimaps and other
        integer dtypes (``int32``, ``int64`` as napari uses) are labels.

    Returns
    -------
    trimap : (H, W) array of uint8 in {0, 128, 255}
        Lazy (dask) when the input is.

    Raises
    ------
    TrimapError
        For values outside the chosen convention, NaN, a boolean mask, or a
        trimap that is not 2D.

    Examples
    --------
    >>> import numpy as np
    >>> canonical_trimap(np.array([[0, 100, 255]], dtype=np.uint8)).tolist()
    [[0, 128, 255]]
    >>> canonical_trimap(np.array([[0, 1, 2]]), labels=True).tolist()
    [[128, 0, 255]]
    """
    if trimap.ndim == 3 and trimap.shape[-1] in (3, 4):
        # Grey stored as RGB(A) (common for PNG exports): take the first channel
        # only if every channel agrees, else it is not a trimap.
        if is_dask(trimap):
            trimap = trimap.rechunk({2: -1}).map_blocks(
                _grey_from_rgb,
                drop_axis=2,
                dtype=trimap.dtype,
                meta=np.empty((0, 0), trimap.dtype),
            )
        else:
            trimap = _grey_from_rgb(np.asarray(trimap))
    if trimap.ndim != 2:
        raise TrimapError(f"trimap must be 2D (H, W), got shape {tuple(trimap.shape)}")
    kind = _trimap_kind(trimap, labels)
    if is_dask(trimap):
        if kind == "uint8" and str(trimap.name).startswith(_CANONICAL_NAME):
            return trimap  # already canonical (grey is idempotent): no second pass
        from dask.base import tokenize

        return trimap.map_blocks(
            _canonical_block,
            kind,
            dtype=np.uint8,
            meta=np.empty((0, 0), np.uint8),
            name=_CANONICAL_NAME + tokenize(trimap, kind),
        )
    return _canonical_block(trimap, kind)


def _grey_from_rgb(t: np.ndarray) -> np.ndarray:
    rgb = t[..., :3]
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise TrimapError(
            "trimap has colour channels that differ; save it as a single-channel grey image"
        )
    return rgb[..., 0]


def labels_to_trimap(labels):
    """Convert a label trimap (0 unknown, 1 background, 2 foreground) to grey 0/128/255.

    Examples
    --------
    >>> import numpy as np
    >>> labels_to_trimap(np.array([[1, 0, 2]])).tolist()
    [[0, 128, 255]]
    """
    return canonical_trimap(labels, labels=True)


def _labels_block(t: np.ndarray) -> np.ndarray:
    out = np.full(t.shape, LABEL_UNKNOWN, dtype=np.uint8)
    out[t == BACKGROUND] = LABEL_BACKGROUND
    out[t == FOREGROUND] = LABEL_FOREGROUND
    return out


def trimap_to_labels(trimap):
    """Convert a grey trimap (any documented grey convention) to labels 0/1/2.

    Examples
    --------
    >>> import numpy as np
    >>> trimap_to_labels(np.array([[0, 128, 255]], dtype=np.uint8)).tolist()
    [[1, 0, 2]]
    """
    t = canonical_trimap(trimap, labels=False)
    if is_dask(t):
        return t.map_blocks(_labels_block, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    return _labels_block(t)


def trimap_from_mask(mask, band: int = 10):
    """Make a trimap from a binary mask with an unknown band around its edge.

    Parameters
    ----------
    mask : (H, W) array of bool (or 0 / non-zero)
        Foreground mask.
    band : int
        Half-width of the unknown band in pixels: the ``band`` pixels nearest to the
        mask edge on each side become unknown (a band ``2 * band`` pixels wide).

    Returns
    -------
    trimap : (H, W) array of uint8 in {0, 128, 255}

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((1, 9), bool); m[0, 4:] = True
    >>> trimap_from_mask(m, band=2).tolist()
    [[0, 0, 128, 128, 128, 128, 255, 255, 255]]
    """
    from scipy import ndimage as ndi

    if band < 0:
        raise ValueError(f"band must be >= 0, got {band}")
    mask = np.asarray(mask) != 0
    if mask.ndim != 2:
        raise TrimapError(f"mask must be 2D (H, W), got shape {mask.shape}")
    trimap = np.where(mask, FOREGROUND, BACKGROUND).astype(np.uint8)
    if band == 0:
        return trimap
    # Exact Euclidean distances on both sides of the edge.
    d_in = ndi.distance_transform_edt(mask)
    d_out = ndi.distance_transform_edt(~mask)
    trimap[(mask & (d_in <= band)) | (~mask & (d_out <= band))] = UNKNOWN
    return trimap


def known_alpha(trimap: np.ndarray) -> np.ndarray:
    """Alpha implied by a canonical trimap: 0 / 1 where known, 0.5 where unknown (float32)."""
    trimap = np.asarray(trimap)
    if trimap.dtype == np.uint8:
        return np.take(_KNOWN_ALPHA, trimap)  # one lookup pass
    a = np.full(trimap.shape, 0.5, dtype=np.float32)
    a[trimap == BACKGROUND] = 0.0
    a[trimap == FOREGROUND] = 1.0
    return a


_KNOWN_ALPHA = np.full(256, 0.5, np.float32)
_KNOWN_ALPHA[BACKGROUND], _KNOWN_ALPHA[FOREGROUND] = 0.0, 1.0
