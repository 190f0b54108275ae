"""A bundled sample generated in code: a furry object on a textured background.

The sample is synthetic so the package ships no image data and needs no download.
It is built to exercise what makes matting hard at high resolution:

* a solid body (alpha = 1) with a slightly wobbly, anti-aliased outline;
* hundreds of thin curved strands ("hair" or "fur", about one pixel wide,
  partly transparent and fading towards their tips) growing out of the body;
* a semi-transparent soft veil (smoke-like, alpha between about 0.1 and 0.6);
* foreground colours ``F`` that differ from the textured background ``B``, so
  that a halo of the old background is visible when ``F`` is not estimated.

Everything is vectorised numpy / ``scipy.ndimage`` driven by one seeded
:class:`numpy.random.Generator`, so a given ``(shape, seed)`` always gives the
same arrays, and the default 1536 x 2048 (3.1 MP) sample takes well under a
second to make.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_sample", "write_sample", "SAMPLE_IMAGE_NAME", "SAMPLE_TRIMAP_NAME"]

SAMPLE_IMAGE_NAME = "sample_image.png"
SAMPLE_TRIMAP_NAME = "sample_trimap.png"

# Alpha values closer than this to 0 or 1 are snapped, so "known" trimap pixels
# hold exactly 0 or 1 (the tails of the blurs below never reach exactly 0).
_SNAP = 1.0 / 512.0


def _interp_matrix(n: int, nodes: int, cell: float) -> np.ndarray:
    """(n, nodes) matrix of normalised Gaussian weights from grid nodes to pixels."""
    pos = np.arange(n, dtype=np.float32)[:, None] / cell
    k = np.exp(-0.5 * ((pos - np.arange(nodes, dtype=np.float32)[None, :] + 1.0) / 0.7) ** 2)
    return k / k.sum(axis=1, keepdims=True)


def _smooth_noise(rng: np.random.Generator, shape, cell: float, channels: int = 1) -> np.ndarray:
    """Smooth random field in [-1, 1], correlation length about ``cell`` pixels.

    White noise on a coarse grid, interpolated separably with Gaussian weights:
    two small matrix products, so it is cheap at any size.
    """
    h, w = shape
    gh, gw = int(np.ceil(h / cell)) + 3, int(np.ceil(w / cell)) + 3
    ry, rx = _interp_matrix(h, gh, cell), _interp_matrix(w, gw, cell)
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        # Interpolation averages ~2 nodes per axis; rescale back to unit spread.
        out[..., c] = ry @ (grid @ rx.T) * 1.6
    return np.clip(out / 2.0, -1.0, 1.0)


def _splat(h: int, w: int, y: np.ndarray, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Bilinear splat of weighted points into an (h, w) density image."""
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy = (y - y0).astype(np.float64)
    fx = (x - x0).astype(np.float64)
    dens = np.zeros(h * w, np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            dens += np.bincount(
                (yy[ok] * w + xx[ok]), weights=(weight * wy * wx)[ok], minlength=h * w
            )
    return dens.reshape(h, w)


def make_sample(
    shape: tuple[int, int] = (1536, 2048), *, seed: int = 0, return_colors: bool = False
):
    """Generate the sample image, its trimap and the ground-truth alpha.

    Parameters
    ----------
    shape : (int, int)
        ``(height, width)`` in pixels; at least 16 x 16. Features scale with
        ``min(shape)`` except the strand width, which stays about one pixel
        (fine structure is the point of a high-resolution sample).
    seed : int
        Seed of the random generator; same ``(shape, seed)``, same arrays.
    return_colors : bool
        Also return the true foreground and background colours.

    Returns
    -------
    image : (H, W, 3) array of uint8
        ``round(255 * (alpha * F + (1 - alpha) * B))``.
    trimap : (H, W) array of uint8 in {0, 128, 255}
        Canonical trimap: pixels with ``0 < alpha < 1`` dilated by a band of
        ``max(2, min(H, W) // 200)`` pixels are unknown (128); the rest is 0
        where alpha is 0 and 255 where alpha is 1.
    alpha : (H, W) array of float32 in [0, 1]
        Ground-truth matte; exactly 0 or 1 wherever the trimap is known.
    foreground, background : (H, W, 3) arrays of float32 in [0, 1]
        Only with ``return_colors=True``: the true ``F`` and ``B``.

    Notes
    -----
    Cost is a few linear passes over the image (spline upsampling, two small
    Gaussian blurs, a max filter).

    Examples
    --------
    >>> image, trimap, alpha = make_sample((64, 96), seed=1)
    >>> image.shape, image.dtype, trimap.dtype, alpha.dtype
    ((64, 96, 3), dtype('uint8'), dtype('uint8'), dtype('float32'))
    >>> sorted(set(trimap.ravel().tolist())) == [0, 128, 255]
    True
    """
    from scipy import ndimage as ndi

    if len(tuple(shape)) != 2 or min(int(n) for n in shape) < 16:
        raise ValueError(f"shape must be (height, width) with both >= 16, got {shape!r}")
    h, w = (int(n) for n in shape)
    rng = np.random.default_rng(seed)
    s = min(h, w)  # feature scale in pixels
    # Broadcasting coordinates: (H, 1) and (1, W).
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]

    # --- solid body: an ellipse whose radius wobbles with the angle --------------
    cy, cx = 0.56 * h, 0.5 * w
    ay, ax = 0.25 * s, 0.3 * s
    n_harm = 5
    amp = rng.uniform(0.02, 0.06, n_harm) / np.arange(1, n_harm + 1)
    phase = rng.uniform(0, 2 * np.pi, n_harm)
    harm = np.arange(2, n_harm + 2)

    def radius(theta):
        # Relative radius r(theta) of the body outline (1 = plain ellipse).
        r = np.ones_like(theta)
        for a_k, m_k, p_k in zip(amp, harm, phase, strict=True):
            r += float(a_k) * np.sin(float(m_k) * theta + float(p_k))
        return r

    dy, dx = (yy - cy) / ay, (xx - cx) / ax
    rho = np.sqrt(dy * dy + dx * dx)
    theta = np.arctan2(dy, dx)
    # Signed distance (approximately, in pixels) to the outline; 1-pixel ramp.
    dist = (rho - radius(theta)) * min(ay, ax)
    body = np.clip(0.5 - dist, 0.0, 1.0)
    del dy, dx, rho, theta, dist

    # --- strands: smooth random curves grown from the outline -------------------
    perimeter = np.pi * (ay + ax)
    n_strands = max(12, int(perimeter / 3))
    length = rng.uniform(0.06, 0.2, n_strands) * s + 4.0  # pixels
    t0 = rng.uniform(0, 2 * np.pi, n_strands)
    r0 = radius(t0) * rng.uniform(0.93, 0.99, n_strands)  # rooted just inside the body
    root_y = cy + ay * r0 * np.sin(t0)
    root_x = cx + ax * r0 * np.cos(t0)
    # Heading starts along the outward normal of the ellipse, then bends with a
    # random curvature that itself drifts linearly along the strand.
    normal = np.arctan2(np.sin(t0) / ay, np.cos(t0) / ax)
    phi0 = normal + rng.normal(0, 0.35, n_strands)
    k0 = rng.normal(0, 1.5, n_strands) / length
    k1 = rng.normal(0, 3.0, n_strands) / length**2
    step = 0.5
    n_steps = int(np.ceil(length.max() / step)) + 1
    arc = np.arange(n_steps, dtype=np.float64)[None, :] * step  # (1, n_steps)
    phi = phi0[:, None] + k0[:, None] * arc + 0.5 * k1[:, None] * arc**2
    py = root_y[:, None] + np.cumsum(step * np.sin(phi), axis=1)
    px = root_x[:, None] + np.cumsum(step * np.cos(phi), axis=1)
    frac = arc / length[:, None]
    opacity = rng.uniform(0.35, 1.0, n_strands)[:, None]
    # Each sample carries the ink of `step` pixels of strand, tapering to the tip.
    weight = np.where(frac <= 1.0, step * opacity * np.clip(1.2 * (1.0 - frac), 0, 1), 0.0)
    keep = weight > 0
    dens = _splat(h, w, py[keep], px[keep], weight[keep]).astype(np.float32)
    dens = ndi.gaussian_filter(dens, 0.6, truncate=3.0)
    # Coverage from ink density: overlapping strands saturate instead of exceeding 1.
    hair = 1.0 - np.exp(-2.5 * dens)
    del dens

    # --- soft veil: smooth noise inside a smooth blob, alpha up to ~0.6 ---------
    vy, vx = cy - 0.28 * s, cx + 0.36 * s
    # Compactly supported bump (1 - r^2)^2, so the veil ends inside the frame.
    r2 = ((yy - vy) / (0.2 * s)) ** 2 + ((xx - vx) / (0.28 * s)) ** 2
    blob = np.clip(1.0 - r2, 0.0, 1.0) ** 2
    veil = 0.6 * blob * (0.55 + 0.45 * _smooth_noise(rng, (h, w), 0.05 * s + 2)[..., 0])
    veil = np.clip(veil, 0.0, 1.0)
    del blob, r2

    # Layers composite as independent coverages.
    alpha = 1.0 - (1.0 - body) * (1.0 - hair) * (1.0 - veil)
    alpha[alpha < _SNAP] = 0.0
    alpha[alpha > 1.0 - _SNAP] = 1.0
    alpha = alpha.astype(np.float32)

    # --- colours ----------------------------------------------------------------
    # Foreground: warm fur tones varying smoothly, a bluish-white veil, and some
    # fine grain on the body; background: cool colour field, fine texture and
    # diagonal stripes, so B really differs from F everywhere.
    fg_base = np.array([0.78, 0.52, 0.25], np.float32)
    fg = fg_base + 0.18 * _smooth_noise(rng, (h, w), 0.08 * s + 2, 3)
    fg = fg + 0.05 * rng.standard_normal((h, w, 1), dtype=np.float32) * body[..., None]
    veil_col = np.array([0.97, 0.93, 0.88], np.float32)
    share = (veil / np.maximum(alpha, 1e-6))[..., None] * (1.0 - body[..., None])
    share = np.clip(share * (1.0 - hair[..., None]), 0.0, 1.0)
    fg = fg * (1.0 - share) + veil_col * share
    fg = np.clip(fg, 0.0, 1.0).astype(np.float32)

    bg_base = np.array([0.2, 0.45, 0.55], np.float32)
    bg = bg_base + 0.25 * _smooth_noise(rng, (h, w), 0.15 * s + 2, 3)
    stripes = 0.08 * np.sin((xx + 0.6 * yy) * (2 * np.pi / max(6.0, 0.02 * s)))
    bg = bg + stripes[..., None] + 0.04 * rng.standard_normal((h, w, 1), dtype=np.float32)
    bg = np.clip(bg, 0.0, 1.0).astype(np.float32)
    del xx, yy, stripes

    a3 = alpha[..., None]
    image = np.rint(255.0 * (a3 * fg + (1.0 - a3) * bg)).astype(np.uint8)

    # --- trimap -----------------------------------------------------------------
    band = max(2, s // 200)
    mixed = (alpha > 0.0) & (alpha < 1.0)
    unknown = ndi.maximum_filter(mixed, size=2 * band + 1)
    trimap = np.where(alpha >= 1.0, 255, 0).astype(np.uint8)
    trimap[unknown] = 128

    if return_colors:
        return image, trimap, alpha, fg, bg
    return image, trimap, alpha


def write_sample(
    directory: str | Path, *, shape: tuple[int, int] = (1536, 2048), seed: int = 0
) -> tuple[Path, Path]:
    """Write the sample image and trimap as PNG files into ``directory``.

    Parameters
    ----------
    directory : str or Path
        Created if missing. Existing sample files in it are overwritten.
    shape, seed
        As in :func:`make_sample`.

    Returns
    -------
    image_path, trimap_path : Path
        ``directory / "sample_image.png"`` (RGB, 8-bit) and
        ``directory / "sample_trimap.png"`` (grey, 8-bit, 0 / 128 / 255).
    """
    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image, trimap, _ = make_sample(shape, seed=seed)
    image_path = directory / SAMPLE_IMAGE_NAME
    trimap_path = directory / SAMPLE_TRIMAP_NAME
    # compress_level=1: these are throw-away working files; speed beats size.
    Image.fromarray(image).save(image_path, compress_level=1)
    Image.fromarray(trimap).save(trimap_path, compress_level=1)
    return image_path, trimap_path
