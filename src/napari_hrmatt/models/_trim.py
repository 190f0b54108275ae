"""Patch-based trimap trimming, a pre-processing step of information-flow matting.

Aksoy, Aydin and Pollefeys (CVPR 2017) shrink the unknown region before solving: an
unknown pixel whose neighbourhood looks like a foreground neighbourhood and not like any
background one (or the reverse) is labelled known. Written from the paper's description:

- every pixel is described by the normal distribution of the colours of its 3x3 patch
  (mean ``mu`` and covariance ``S``, plus ``reg * I`` so that flat patches stay proper);
- for an unknown pixel ``p`` the candidates are the ``k`` foreground and ``k`` background
  pixels nearest to ``p`` in patch-mean colour within a ``(2 radius + 1)^2`` window
  (:func:`._knn.window_knn`, so the result depends on the image within ``radius + 1``
  pixels only: blocks grown by that much trim exactly like the whole image);
- ``d_F`` and ``d_B`` are the smallest Bhattacharyya distances between ``p``'s patch
  distribution and its foreground and background candidates' (``inf`` without candidates);
- ``p`` becomes foreground if ``d_F < close`` and ``d_B > far``, background if
  ``d_B < close`` and ``d_F > far``, and stays unknown otherwise.

Only unknown pixels can change; known pixels are never touched.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..trimap import BACKGROUND, FOREGROUND, UNKNOWN
from ._knn import use_numba, window_knn
from ._stencil import crop_to_unknown

__all__ = [
    "patch_statistics", "bhattacharyya", "trim_distances", "trim_patch", "TRIMS",
    "check_trim_options", "trim_reach", "trim_array",
]  # fmt: skip


def patch_statistics(image: torch.Tensor, reg: float):
    """Mean (C, H, W) and covariance (H, W, C, C) of each pixel's 3x3 patch.

    Patches are cut at the array border (the mean is over the pixels inside it).
    """
    c, h, w = image.shape
    x = image[None].double()

    def box(t):
        return F.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)

    mu = box(x)[0]
    outer = (x[:, :, None] * x[:, None]).reshape(1, c * c, h, w)
    second = box(outer)[0].reshape(c, c, h, w)
    cov = second - mu[:, None] * mu[None]
    cov = cov.permute(2, 3, 0, 1) + reg * torch.eye(c, dtype=x.dtype, device=x.device)
    return mu, cov


def bhattacharyya(mu1, cov1, mu2, cov2):
    """Bhattacharyya distance of normal distributions (batched over leading dims)."""
    s = 0.5 * (cov1 + cov2)
    d = (mu1 - mu2)[..., None]
    maha = (d.transpose(-1, -2) @ torch.linalg.solve(s, d))[..., 0, 0]
    logdet = torch.logdet(s) - 0.5 * (torch.logdet(cov1) + torch.logdet(cov2))
    return maha / 8 + logdet / 2


def trim_distances(
    image: torch.Tensor, trimap: torch.Tensor, *, radius: int, reg: float, k: int = 3
):
    """Flat indices of the unknown pixels and their distances ``d_F``, ``d_B``.

    See the module docstring; ``inf`` where no candidate lies in the window.
    """
    unknown = trimap == UNKNOWN
    rows = torch.nonzero(unknown.reshape(-1)).squeeze(1)
    c, h, w = image.shape
    fused = use_numba(image)
    if fused:  # the statistics in one pass, in the layout the distance kernel reads
        from ._trim_kernels import min_bhattacharyya_kernel, patch_stats_kernel

        m = np.empty((h * w, c), np.float64)
        s = np.empty((h * w, c, c), np.float64)
        patch_stats_kernel(np.ascontiguousarray(image.double().numpy()), float(reg), m, s)
        mu = torch.from_numpy(m).T.reshape(c, h, w)
    else:
        mu, cov = patch_statistics(image, reg)
    groups = window_knn(
        mu.float().contiguous(), unknown, [trimap == FOREGROUND, trimap == BACKGROUND], k, radius
    )
    if fused:
        r = rows.numpy()
        logdet = np.full(h * w, np.nan)  # filled as needed, shared by both groups
        dist = []
        for index, _ in groups:
            out = np.empty(r.shape[0], np.float64)
            min_bhattacharyya_kernel(m, s, r, np.ascontiguousarray(index.numpy()), logdet, out)
            dist.append(torch.from_numpy(out))
        return rows, dist[0], dist[1]
    mu_flat, cov_flat = mu.reshape(c, -1).T, cov.reshape(-1, c, c)
    mu_p, cov_p = mu_flat[rows][:, None], cov_flat[rows][:, None]
    dist = []
    for index, _ in groups:
        ok = index >= 0
        q = torch.where(ok, index, rows[:, None])
        db = bhattacharyya(mu_p, cov_p, mu_flat[q], cov_flat[q])
        dist.append(torch.where(ok, db, math.inf).min(1).values)
    return rows, dist[0], dist[1]


def trim_patch(
    image: torch.Tensor,
    trimap: torch.Tensor,
    *,
    close: float,
    far: float,
    radius: int,
    reg: float,
    k: int = 3,
) -> torch.Tensor:
    """The trimap with confidently explained unknown pixels made known (a new tensor).

    Parameters
    ----------
    image : (C, H, W) tensor in [0, 1]
    trimap : (H, W) tensor of uint8
    close, far : float
        Bhattacharyya thresholds (see the module docstring).
    radius : int
        Half-size of the window searched for known patches.
    reg : float
        Added to every patch covariance's diagonal.
    k : int
        Candidates per side compared by Bhattacharyya distance.
    """
    out = trimap.clone()
    if not bool((trimap == UNKNOWN).any()):
        return out
    rows, d_f, d_b = trim_distances(image, trimap, radius=radius, reg=reg, k=k)
    to_fg = (d_f < close) & (d_b > far)
    to_bg = (d_b < close) & (d_f > far)
    flat = out.reshape(-1)
    flat[rows[to_fg]] = FOREGROUND
    flat[rows[to_bg]] = BACKGROUND
    return out


TRIMS = ("none", "patch")


def check_trim_options(trim, close, far, search, reg) -> dict:
    """Validated trimming options of a model (``trim``, ``trim_close`` ... as a dict)."""
    if trim not in TRIMS:
        raise ValueError(f"trim must be one of {TRIMS}, got {trim!r}")
    if isinstance(search, bool) or not isinstance(search, (int, np.integer)) or search < 0:
        raise ValueError(f"trim_search must be an integer >= 0, got {search!r}")
    opts = {"trim": trim, "trim_search": int(search)}
    for key, value, low in (
        ("trim_close", close, 0),
        ("trim_far", far, 0),
        ("trim_reg", reg, None),
    ):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and (v > 0 if low is None else v >= low)):
            kind = "a number > 0" if low is None else "a number >= 0"
            raise ValueError(f"{key} must be {kind}, got {value!r}")
        opts[key] = v
    if opts["trim_far"] < opts["trim_close"]:
        raise ValueError(
            f"trim_far ({far!r}) must be >= trim_close ({close!r}): a pixel "
            "cannot be close to one side and far from both"
        )
    return opts


def trim_reach(opts: dict) -> int:
    """Pixels a trimmed label depends on: 3x3 patches of known pixels ``trim_search`` away."""
    return opts["trim_search"] + 1 if opts["trim"] != "none" else 0


def trim_array(image, trimap, opts: dict, device):
    """Numpy front end of :func:`trim_patch` for the models: ``trimap`` (H, W uint8) after
    trimming with ``opts`` (see :func:`check_trim_options`), a copy, computed on the
    bounding box of the unknown pixels grown by :func:`trim_reach`; ``trimap`` itself
    with ``trim="none"``. ``image`` is (H, W, C) float."""
    if opts["trim"] == "none":
        return trimap
    box = crop_to_unknown(trimap == UNKNOWN, trim_reach(opts))
    if box is None:
        return trimap
    im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image[box], -1, 0)))
    im = im.to(device=device, dtype=torch.float64)
    t = torch.as_tensor(np.ascontiguousarray(trimap[box])).to(device)
    t = trim_patch(
        im, t, close=opts["trim_close"], far=opts["trim_far"], radius=opts["trim_search"],
        reg=opts["trim_reg"],
    )  # fmt: skip
    out = trimap.copy()
    out[box] = t.cpu().numpy()
    return out
