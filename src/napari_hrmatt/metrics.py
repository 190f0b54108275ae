"""Matting errors as the matting literature reports them: SAD, MSE, Grad and Conn.

The definitions follow the evaluation code released with Deep Image Matting
(Xu et al., CVPR 2017), which implements the gradient and connectivity errors of
Rhemann et al., "A Perceptually Motivated Online Benchmark for Image Matting"
(CVPR 2009). All four are computed only where the trimap is *unknown*, on mattes
scaled to ``[0, 1]``:

============  ==============================================================
``sad``       :math:`\\sum_U |\\alpha - \\alpha^*| / 1000`
``mse``       :math:`\\frac{1}{|U|} \\sum_U (\\alpha - \\alpha^*)^2`
              (papers print it multiplied by 1000)
``grad``      :math:`\\sum_U (|\\nabla \\hat\\alpha| - |\\nabla \\hat\\alpha^*|)^2 / 1000`,
              first-order Gaussian-derivative filters, :math:`\\sigma = 1.4`, on
              min-max-normalised mattes :math:`\\hat\\alpha`
``conn``      :math:`\\sum_U |\\varphi(\\alpha) - \\varphi(\\alpha^*)| / 1000`
============  ==============================================================

where :math:`U` is the set of unknown pixels and :math:`\\alpha^*` the ground truth.

Inputs are numpy or dask arrays. ``uint8`` mattes are divided by 255 and ``uint16``
by 65535; float mattes must already lie in ``[0, 1]``. SAD, MSE and Grad stream
over dask inputs block by block; Conn needs the connected components of the
whole image and loads dask inputs into memory (see its Notes).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .image import is_dask
from .trimap import UNKNOWN, canonical_trimap

__all__ = ["sad", "mse", "gradient_error", "connectivity_error", "evaluate"]

# Every metric except MSE is divided by this, as in the DIM code and the
# alphamatting.com tables, so that typical values are 1-100 per image.
_NORM = 1000.0


def _to_unit(x, name: str):
    """Float64 view of a matte in [0, 1] (lazy for dask); no range check yet."""
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2D (H, W) matte, got shape {tuple(x.shape)}; "
            "convert colour images to one channel first"
        )
    dt = np.dtype(x.dtype)
    if dt == np.uint8:
        return x.astype(np.float64) / 255.0
    if dt == np.uint16:
        return x.astype(np.float64) / 65535.0
    if dt.kind == "f":
        return x.astype(np.float64)
    raise ValueError(
        f"{name} has dtype {dt}; use float in [0, 1], uint8 (0-255) or uint16 (0-65535)"
    )


def _range_stats(x):
    """(min, max, has_nan) of a matte, as numbers or lazy dask scalars."""
    if is_dask(x):
        import dask.array as da

        return x.min(), x.max(), da.isnan(x).any()
    return x.min(), x.max(), bool(np.isnan(x).any())


def _check_range(name: str, lo: float, hi: float, has_nan: bool) -> None:
    if has_nan:
        raise ValueError(f"{name} contains NaN; every pixel needs an alpha value in [0, 1]")
    # A hair of float slack: solvers return float32 that may overshoot by an ulp.
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; "
            "clip it (np.clip(alpha, 0, 1)) or pass uint8/uint16"
        )


def _prepare(alpha, gt, trimap):
    """Scale both mattes to float64 in [0, 1] and build the unknown-pixel mask.

    Returns ``(a, g, mask, lazy, checks)``: ``mask`` is a bool array (``None`` means
    every pixel counts); ``checks`` are the (min, max, nan) statistics to validate,
    still lazy for dask so they can be computed in the same pass as the metric.
    """
    if tuple(alpha.shape) != tuple(gt.shape):
        raise ValueError(
            f"alpha has shape {tuple(alpha.shape)} but gt has shape {tuple(gt.shape)}; "
            "they must match"
        )
    a = _to_unit(alpha, "alpha")
    g = _to_unit(gt, "gt")
    mask = None
    if trimap is not None:
        t = canonical_trimap(trimap)
        if tuple(t.shape) != tuple(a.shape):
            raise ValueError(
                f"trimap has shape {tuple(t.shape)} but the mattes have shape "
                f"{tuple(a.shape)}; they must match"
            )
        mask = t == UNKNOWN
    lazy = any(is_dask(x) for x in (a, g, mask) if x is not None)
    if lazy:
        import dask.array as da

        a = da.asarray(a)
        chunks = a.chunks
        g = da.asarray(g).rechunk(chunks)
        if mask is not None:
            mask = da.asarray(mask).rechunk(chunks)
    checks = {"alpha": _range_stats(a), "gt": _range_stats(g)}
    return a, g, mask, lazy, checks


def _finish(values, checks, lazy):
    """Compute lazy values (one pass) and validate the input ranges."""
    if lazy:
        import dask

        values, checks = dask.compute(values, checks)
    for name, (lo, hi, has_nan) in checks.items():
        _check_range(name, float(lo), float(hi), bool(has_nan))
    return values


def _masked_sum(err, mask):
    if mask is None:
        return err.sum()
    if is_dask(err):
        import dask.array as da

        return da.where(mask, err, 0.0).sum()
    return err[mask].sum()


def _count(mask, shape):
    if mask is None:
        return math.prod(shape)
    return mask.sum()


def sad(alpha, gt, trimap=None) -> float:
    """Sum of absolute differences over the unknown region, divided by 1000.

    .. math:: \\mathrm{SAD} = \\frac{1}{1000} \\sum_{p \\in U} |\\alpha_p - \\alpha^*_p|

    Parameters
    ----------
    alpha : (H, W) array of float in [0, 1], uint8 or uint16 (numpy or dask)
        Estimated matte. Integer mattes are scaled by their dtype's maximum.
    gt : (H, W) array of float in [0, 1], uint8 or uint16 (numpy or dask)
        Ground-truth matte.
    trimap : (H, W) array, optional
        Any documented trimap convention (see
        :func:`napari_hrmatt.trimap.canonical_trimap`); only unknown pixels count.
        ``None`` counts every pixel.

    Returns
    -------
    float
        Streams block by block for dask inputs.

    Examples
    --------
    >>> import numpy as np
    >>> sad(np.full((10, 100), 0.5), np.zeros((10, 100)))
    0.5
    """
    a, g, mask, lazy, checks = _prepare(alpha, gt, trimap)
    total = _finish(_masked_sum(abs(a - g), mask), checks, lazy)
    return float(total) / _NORM


def mse(alpha, gt, trimap=None) -> float:
    """Mean squared error over the unknown region.

    .. math:: \\mathrm{MSE} = \\frac{1}{|U|} \\sum_{p \\in U} (\\alpha_p - \\alpha^*_p)^2

    Not divided by 1000: the matting literature prints ``1000 * mse``.

    Parameters
    ----------
    alpha, gt : (H, W) arrays of float in [0, 1], uint8 or uint16 (numpy or dask)
        Estimated and ground-truth mattes.
    trimap : (H, W) array, optional
        Only unknown pixels count; ``None`` counts every pixel.

    Returns
    -------
    float
        ``0.0`` when there is no unknown pixel (nothing to evaluate; mmeval does
        the same). Streams block by block for dask inputs.

    Examples
    --------
    >>> import numpy as np
    >>> mse(np.full((2, 2), 0.5), np.zeros((2, 2)))
    0.25
    """
    a, g, mask, lazy, checks = _prepare(alpha, gt, trimap)
    total, n = _finish((_masked_sum((a - g) ** 2, mask), _count(mask, a.shape)), checks, lazy)
    n = int(n)
    return float(total) / n if n else 0.0


# ---------------------------------------------------------------------------
# Gradient error
# ---------------------------------------------------------------------------


def _gauss_derivative_kernels(sigma: float, epsilon: float = 1e-2):
    """1D factors of the DIM ``gaussgradient`` filter.

    The DIM code builds a 2D kernel ``hx[i, j] = G(i) * G'(j)`` (Gaussian across
    rows, its derivative along columns) on ``[-h, h]^2`` with the half size
    ``h = ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon)))`` (where the Gaussian
    drops below ``epsilon`` of its peak), normalised to unit Frobenius norm, and
    ``hy = hx.T``. The kernel is separable; the norm of an outer product is the
    product of the norms, so each factor is normalised on its own.
    """
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    dgauss = -x * gauss / sigma**2
    return gauss / np.linalg.norm(gauss), dgauss / np.linalg.norm(dgauss), half


def _gradient_magnitude(a: np.ndarray, sigma: float) -> np.ndarray:
    """|grad a| with the DIM Gaussian-derivative filters and replicated borders."""
    from scipy import ndimage as ndi

    gauss, dgauss, _ = _gauss_derivative_kernels(sigma)
    # Correlation rather than the DIM code's convolution flips the sign of the
    # (odd) derivative kernel only, which the magnitude does not see.
    smooth_rows = ndi.correlate1d(a, gauss, axis=0, mode="nearest")
    gx = ndi.correlate1d(smooth_rows, dgauss, axis=1, mode="nearest")
    smooth_cols = ndi.correlate1d(a, gauss, axis=1, mode="nearest")
    gy = ndi.correlate1d(smooth_cols, dgauss, axis=0, mode="nearest")
    return np.hypot(gx, gy)


def _grad_sq_diff(a, g, a_min, a_scale, g_min, g_scale, sigma):
    ga = _gradient_magnitude((a - a_min) * a_scale, sigma)
    gg = _gradient_magnitude((g - g_min) * g_scale, sigma)
    return (ga - gg) ** 2


def _minmax_scale(lo: float, hi: float) -> float:
    # A constant matte has zero gradient whatever it is scaled by; 0 avoids 0/0.
    return 1.0 / (hi - lo) if hi > lo else 0.0


def gradient_error(alpha, gt, trimap=None, *, sigma: float = 1.4) -> float:
    """Gradient error (Rhemann et al. 2009) over the unknown region, divided by 1000.

    .. math::
        \\mathrm{Grad} = \\frac{1}{1000} \\sum_{p \\in U}
        \\left(|\\nabla \\hat\\alpha|_p - |\\nabla \\hat\\alpha^*|_p\\right)^2,
        \\qquad \\hat\\alpha = \\frac{\\alpha - \\min \\alpha}{\\max \\alpha - \\min \\alpha}

    Each matte is min-max normalised over the whole image (MATLAB ``mat2gray``),
    then differentiated with first-order Gaussian-derivative filters of standard
    deviation ``sigma`` (the DIM ``gaussgradient``: a 9 x 9 kernel for
    ``sigma = 1.4``, unit Frobenius norm, replicated borders).

    Parameters
    ----------
    alpha, gt : (H, W) arrays of float in [0, 1], uint8 or uint16 (numpy or dask)
        Estimated and ground-truth mattes.
    trimap : (H, W) array, optional
        Only unknown pixels count; ``None`` counts every pixel.
    sigma : float
        Standard deviation of the Gaussian, in pixels.

    Returns
    -------
    float

    Notes
    -----
    Like the DIM code, the known pixels of ``alpha`` are used as given (they enter
    the gradient near the unknown band and the min-max normalisation); pass a
    matte that keeps the trimap's known values, as matting solvers do.

    Dask inputs are processed in two streaming passes: one for the global
    minimum and maximum, then ``map_overlap`` with a halo of the kernel's half
    size (4 pixels for ``sigma = 1.4``) and ``boundary="nearest"``, which
    reproduces the replicated borders exactly.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.linspace(0, 1, 64)[None, :].repeat(8, axis=0)
    >>> gradient_error(a, a)
    0.0
    >>> gradient_error(a, 0.5 * a)  # min-max normalisation removes the scale
    0.0
    """
    a, g, mask, lazy, checks = _prepare(alpha, gt, trimap)
    if lazy:
        import dask

        # First streaming pass: the global min / max the normalisation needs.
        (checks,) = dask.compute(checks)
    _finish(None, checks, False)
    (a_lo, a_hi, _), (g_lo, g_hi, _) = checks["alpha"], checks["gt"]
    a_lo, a_hi, g_lo, g_hi = (float(v) for v in (a_lo, a_hi, g_lo, g_hi))
    kernel = functools.partial(
        _grad_sq_diff,
        a_min=a_lo,
        a_scale=_minmax_scale(a_lo, a_hi),
        g_min=g_lo,
        g_scale=_minmax_scale(g_lo, g_hi),
        sigma=sigma,
    )
    if lazy:
        import dask.array as da

        half = _gauss_derivative_kernels(sigma)[2]
        err = da.map_overlap(
            kernel,
            a,
            g,
            depth=half,
            boundary="nearest",
            dtype=np.float64,
            meta=np.empty((0, 0), np.float64),
        )
        total = _masked_sum(err, mask).compute()
    else:
        total = _masked_sum(kernel(a, g), mask)
    return float(total) / _NORM


# ---------------------------------------------------------------------------
# Connectivity error
# ---------------------------------------------------------------------------


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """Largest 4-connected component of a boolean image (empty if none).

    Ties go to the component met first in raster order, as MATLAB's ``max`` over
    ``bwconncomp`` sizes does.
    """
    from scipy import ndimage as ndi

    # scipy's default 2D structuring element is the 4-neighbourhood cross.
    labels, n = ndi.label(binary)
    if n == 0:
        return np.zeros(binary.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # label 0 is the background
    return labels == int(np.argmax(sizes))


def connectivity_error(alpha, gt, trimap=None, *, step: float = 0.1, theta: float = 0.15) -> float:
    """Connectivity error (Rhemann et al. 2009) over the unknown region, divided by 1000.

    For thresholds :math:`t_i = i \\cdot` ``step`` (``0, 0.1, ..., 1``), let
    :math:`\\Omega_i` be the largest 4-connected component of
    :math:`(\\alpha \\ge t_i) \\wedge (\\alpha^* \\ge t_i)`. Each pixel gets the level
    :math:`l_p = t_{i-1}` of the first :math:`i \\ge 1` with :math:`p \\notin \\Omega_i`
    (the last threshold at which it was still connected to the source region), or
    :math:`l_p = 1` if it stays connected throughout. Then

    .. math::
        d_p = \\alpha_p - l_p, \\qquad
        \\varphi_p(\\alpha) = 1 - d_p \\, [d_p \\ge \\theta], \\qquad
        \\mathrm{Conn} = \\frac{1}{1000} \\sum_{p \\in U} |\\varphi_p(\\alpha) -
        \\varphi_p(\\alpha^*)|

    with the same :math:`l` for both mattes and :math:`\\theta = 0.15`: only
    pixels whose alpha exceeds their connection level by at least ``theta`` count
    as disconnected.

    Parameters
    ----------
    alpha, gt : (H, W) arrays of float in [0, 1], uint8 or uint16 (numpy or dask)
        Estimated and ground-truth mattes.
    trimap : (H, W) array, optional
        Only unknown pixels count; ``None`` counts every pixel.
    step : float
        Threshold spacing; ``1 / step`` must be an integer.
    theta : float
        Minimum excess over the connection level for a pixel to count.

    Returns
    -------
    float

    Notes
    -----
    The thresholds are computed as ``i / n`` (``n = 1 / step``), so they are the
    exact decimals that MATLAB's ``0:0.1:1`` gives; ``np.arange(0, 1.1, 0.1)``
    (used by mmeval) gives 0.30000000000000004 etc., which differs only for
    pixels lying exactly on a threshold.

    Connected components are global, so dask inputs are **computed into memory**:
    this needs about ``40 * H * W`` bytes (two float64 mattes, the level map and
    one int32 label image), e.g. 4 GB for a 10 000 x 10 000 matte. Compute the
    metric on a crop when that is too much.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1.0, 0.0, 1.0]])
    >>> connectivity_error(a, a)
    0.0
    """
    n_steps = round(1 / step)
    if n_steps < 1 or not math.isclose(n_steps * step, 1.0):
        raise ValueError(f"1 / step must be a positive integer, got step={step}")
    a, g, mask, lazy, checks = _prepare(alpha, gt, trimap)
    if lazy:
        import dask

        a, g, mask, checks = dask.compute(a, g, mask, checks)
    _finish(None, checks, False)

    thresholds = np.arange(n_steps + 1) / n_steps
    level = np.full(a.shape, -1.0)
    for i in range(1, n_steps + 1):
        omega = _largest_component((a >= thresholds[i]) & (g >= thresholds[i]))
        # Pixels leaving the source component at t_i were last connected at t_{i-1}.
        level[(level == -1) & ~omega] = thresholds[i - 1]
    level[level == -1] = 1.0

    def phi(x):
        d = x - level
        return 1.0 - d * (d >= theta)

    err = np.abs(phi(a) - phi(g))
    return float(_masked_sum(err, mask)) / _NORM


def evaluate(alpha, gt, trimap=None) -> dict[str, float]:
    """All four errors at once.

    Parameters
    ----------
    alpha, gt : (H, W) arrays of float in [0, 1], uint8 or uint16
        Estimated and ground-truth mattes.
    trimap : (H, W) array, optional
        Only unknown pixels count; ``None`` counts every pixel.

    Returns
    -------
    dict
        ``{"sad": ..., "mse": ..., "grad": ..., "conn": ...}``; ``mse`` is not
        multiplied by 1000.
    """
    return {
        "sad": sad(alpha, gt, trimap),
        "mse": mse(alpha, gt, trimap),
        "grad": gradient_error(alpha, gt, trimap),
        "conn": connectivity_error(alpha, gt, trimap),
    }
