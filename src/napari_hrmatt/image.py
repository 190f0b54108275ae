"""Image validation and conversion, shared by the engine, the patch pass and foreground."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["as_float_alpha", "as_float_image", "image_channels", "is_dask", "to_float"]


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (checked without importing dask)."""
    return type(x).__module__.startswith("dask.")


def _check_float_range(x: np.ndarray) -> np.ndarray:
    if np.isnan(x).any():
        raise ValueError(
            "image contains NaN values; replace them (e.g. np.nan_to_num) before matting"
        )
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if lo < 0 or hi > 1:
        raise ValueError(
            f"float image values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "rescale it (e.g. image / image.max()) or pass uint8/uint16 data"
        )
    return x


def as_float_image(image, *, check: bool = True):
    """Validate an image and return it as float32 in [0, 1], shape (H, W, C).

    Parameters
    ----------
    image : (H, W) or (H, W, C) array, C in {1, 2, 3, 4} (numpy or dask)
        Grey, grey + alpha, RGB or RGBA; uint8, uint16 or float in [0, 1].
        A trailing alpha channel is ignored (with a warning).
    check : bool
        Check float values for NaN and the [0, 1] range. For dask input the check runs
        block by block when the result is computed.

    Returns
    -------
    image : (H, W, 1) or (H, W, 3) array of float32
        Lazy when the input is.

    Examples
    --------
    >>> import numpy as np
    >>> as_float_image(np.full((2, 2), 255, np.uint8))[..., 0].tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    return to_float(image_channels(image, check=check, stacklevel=3))


def image_channels(image, *, check: bool = True, stacklevel: int = 2):
    """Validate an image; return (H, W, C), C in {1, 3}, keeping uint8/uint16 as they are.

    Float input becomes float32 (checked for NaN and [0, 1] when ``check``). Keeping
    integers lets the patch pass hold 8-bit data at a quarter of float32's memory.
    """
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            f"image must be (H, W) grey or (H, W, C) with C in 1-4 channels, got shape "
            f"{tuple(image.shape)}; for a stack, matte one plane at a time"
        )
    if image.shape[2] in (2, 4):
        warnings.warn(
            "the image's alpha channel is ignored; matting uses the colour channels only",
            UserWarning,
            stacklevel=stacklevel,
        )
        image = image[..., : image.shape[2] - 1]
    dt = np.dtype(image.dtype)
    if dt == np.uint8 or dt == np.uint16:
        return image
    if dt.kind == "f":
        image = image.astype(np.float32)
        if check:
            image = (
                image.map_blocks(_check_float_range, dtype=np.float32)
                if is_dask(image)
                else _check_float_range(image)
            )
        return image
    raise ValueError(
        f"unsupported image dtype {dt}; use uint8, uint16 or float with values in [0, 1]"
    )


def to_float(image):
    """uint8 / uint16 -> float32 in [0, 1]; float32 unchanged (numpy or dask)."""
    dt = np.dtype(image.dtype)
    if dt.kind == "u":
        return image.astype(np.float32) * np.float32(1.0 / np.iinfo(dt).max)
    return image


def _check_alpha_block(a: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """``a`` clipped to [0, 1] after checking it: two reductions and the clip."""
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if np.isnan(lo) or np.isnan(hi):  # min and max are NaN as soon as one value is
        raise ValueError("alpha contains NaN; pass a matte with values in [0, 1]")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"alpha values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "pass the matte from estimate_alpha or rescale it"
        )
    return np.clip(a, 0.0, 1.0, out=a if inplace else None)


def as_float_alpha(alpha):
    """Validate an alpha matte: (H, W) float32 in [0, 1], lazy when the input is."""
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[..., 0]
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be a 2D (H, W) matte, got shape {tuple(alpha.shape)}")
    dt = np.dtype(alpha.dtype)
    if dt == np.uint8 or dt == np.uint16:
        return alpha.astype(np.float32) * np.float32(1.0 / np.iinfo(dt).max)
    if dt.kind != "f":
        raise ValueError(f"unsupported alpha dtype {dt}; use float in [0, 1], uint8 or uint16")
    if is_dask(alpha):
        # not in place: a float32 input's chunks may be the caller's own memory
        return alpha.astype(np.float32).map_blocks(_check_alpha_block, dtype=np.float32)
    return _check_alpha_block(np.array(alpha, np.float32), inplace=True)  # one copy
