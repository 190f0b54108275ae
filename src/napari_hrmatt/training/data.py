"""Training samples: composites ``I = alpha F + (1 - alpha) B`` built on the fly.

Sources (Porter & Duff 1984 compositing; never GT19-GT27)
    - ``lowres``: the alphamatting.com dev photos with their ground-truth alpha; the
      foreground colours ``F`` are estimated from the photo and its alpha (multi-level
      foreground estimation, Germer et al. 2020);
    - ``highres``: the same scenes' high-resolution ground-truth mattes (the fine
      hair), with the low-resolution ``F`` upsampled (semi-synthetic, like
      ``benchmarks/composites.py``);
    - ``procedural``: generated mattes (strands and fur along soft bodies, blurred
      shapes, semi-transparent layers) with smooth colour fields.

    Backgrounds ``B`` are photos from folders of the data directory, or generated.

Augmentation (HDMatt / HOP)
    Square crops around unknown pixels, resized to the training size with a random
    interpolation for every resize; horizontal flips; trimaps by eroding the definite
    foreground and background by random radii; a coarse alpha made by downsampling the
    truth and degrading it (blur, shift, gamma, noise, blotches), standing in for the
    global pass; a context image around the crop for the cross-patch module.

Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import alphamatting
from .config import DEV_IMAGES, SOURCES, TrainConfig

__all__ = [
    "TrainingSamples",
    "degrade_coarse",
    "make_trimap",
    "procedural_background",
    "procedural_matte",
]

# PIL resampling filters for HOP's random interpolation (values of Image.Resampling).
_FILTERS = (2, 3, 1, 4, 5)  # bilinear, bicubic, lanczos, box, hamming
#: How to give the data folder (the error message when it is needed and missing).
NEED_DATA = "pass data_dir (hrmatt train --data-dir DIR, or set HRMATT_DATA_DIR)"


# --------------------------------------------------------------------------- generated data


def _smooth_field(rng, size: int, cells: int, channels: int = 3) -> np.ndarray:
    """Smooth random colours: a ``cells x cells`` grid upsampled bicubically, in [0, 1]."""
    from PIL import Image

    grid = (rng.uniform(0, 1, (cells, cells, channels)) * 255).astype(np.uint8)
    img = Image.fromarray(grid.squeeze(-1) if channels == 1 else grid)
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255.0


def procedural_background(rng, size: int) -> np.ndarray:
    """A generated background: smooth colours, texture and a few blurred shapes.

    Returns
    -------
    (size, size, 3) array of uint8
    """
    from PIL import Image, ImageDraw, ImageFilter

    base = _smooth_field(rng, size, int(rng.integers(2, 6)))
    base += 0.15 * (_smooth_field(rng, size, int(rng.integers(8, 32))) - 0.5)
    img = Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 8))):
        x0, y0 = rng.uniform(-0.2, 1, 2) * size
        w, h = rng.uniform(0.05, 0.5, 2) * size
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
    return np.asarray(img)


def procedural_matte(rng, size: int, *, supersample: int = 2):
    """A generated alpha matte and its foreground colours.

    A star-shaped body (sharp, or blurred into a soft shape), strands of hair or fur
    growing out of its boundary (0.5-1.5 px wide after antialiasing by
    ``supersample``), and sometimes a semi-transparent layer.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
    supersample : int
        Drawing resolution factor (box-filtered down: antialiased thin strands).

    Returns
    -------
    alpha : (size, size) array of float32 in [0, 1]
    foreground : (size, size, 3) array of uint8
    """
    from PIL import Image, ImageDraw, ImageFilter

    n = size * supersample
    kind = rng.choice(["hair", "fur", "soft", "glass"])
    cx, cy = rng.uniform(0.3, 0.7, 2) * n
    radius = rng.uniform(0.12, 0.32) * n
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    wobble = sum(
        rng.uniform(0, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 7)
    )
    r_theta = radius * (1 + wobble)
    body = Image.new("L", (n, n), 0)
    opacity = 1.0 if kind != "glass" else rng.uniform(0.25, 0.85)
    ImageDraw.Draw(body).polygon(
        list(zip(cx + r_theta * np.cos(theta), cy + r_theta * np.sin(theta), strict=True)),
        fill=int(255 * opacity),
    )
    blur = rng.uniform(4, 30) if kind == "soft" else rng.uniform(0, 1.5)
    layers = [np.asarray(body.filter(ImageFilter.GaussianBlur(blur * supersample)), np.float32)]
    n_strands = {"hair": (40, 300), "fur": (200, 800), "soft": (0, 20), "glass": (0, 40)}[kind]
    for _ in range(3):  # a few layers combined by max, so crossing strands add up sensibly
        layer = Image.new("L", (n, n), 0)
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(*n_strands)) // 3):
            t = rng.uniform(0, 2 * np.pi)
            k = int(t / (2 * np.pi) * len(theta)) % len(theta)
            start = rng.uniform(0.7, 1.0) * r_theta[k]
            x, y = cx + start * np.cos(t), cy + start * np.sin(t)
            angle = t + rng.normal(0, 0.5)
            length = rng.uniform(0.03, 0.12 if kind == "fur" else 0.4) * n
            steps = int(rng.integers(6, 20))
            pts = [(x, y)]
            for _ in range(steps):
                angle += rng.normal(0, 0.25)
                x += length / steps * np.cos(angle)
                y += length / steps * np.sin(angle)
                pts.append((x, y))
            width = int(rng.integers(1, 2 * supersample)) if kind != "fur" else 1
            draw.line(pts, fill=int(255 * rng.uniform(0.35, 1.0)), width=width, joint="curve")
        layers.append(np.asarray(layer, np.float32))
    if kind != "glass" and rng.random() < 0.3:  # a semi-transparent veil
        veil = Image.new("L", (n, n), 0)
        x0, y0 = rng.uniform(0.1, 0.6, 2) * n
        w, h = rng.uniform(0.1, 0.4, 2) * n
        ImageDraw.Draw(veil).ellipse(
            [x0, y0, x0 + w, y0 + h], fill=int(255 * rng.uniform(0.2, 0.7))
        )
        layers.append(
            np.asarray(veil.filter(ImageFilter.GaussianBlur(2 * supersample)), np.float32)
        )
    alpha = Image.fromarray(np.max(layers, axis=0) / 255.0)
    alpha = np.clip(np.asarray(alpha.resize((size, size), Image.Resampling.BOX)), 0, 1)
    colours = _smooth_field(rng, size, int(rng.integers(2, 5)))
    colours += 0.08 * (_smooth_field(rng, size, int(rng.integers(16, 64))) - 0.5)
    return alpha.astype(np.float32), (np.clip(colours, 0, 1) * 255).astype(np.uint8)


def make_trimap(alpha: np.ndarray, radius_fg: float, radius_bg: float) -> np.ndarray:
    """Trimap by eroding the definite foreground and background of a matte.

    Parameters
    ----------
    alpha : (H, W) array of float in [0, 1]
    radius_fg, radius_bg : float
        Erosion radii (pixels) of ``alpha == 1`` and ``alpha == 0``; what they remove,
        plus every fractional pixel, becomes unknown.

    Returns
    -------
    (H, W) array of uint8 in {0, 128, 255}
    """
    from scipy import ndimage as ndi

    from ..trimap import BACKGROUND, FOREGROUND, UNKNOWN

    fg = alpha >= 1 - 1 / 255
    bg = alpha <= 1 / 255
    trimap = np.full(alpha.shape, UNKNOWN, np.uint8)
    # distance_transform_edt: distance to the nearest pixel outside the region.
    trimap[fg & (ndi.distance_transform_edt(fg) > radius_fg)] = FOREGROUND
    trimap[bg & (ndi.distance_transform_edt(bg) > radius_bg)] = BACKGROUND
    return trimap


def degrade_coarse(alpha: np.ndarray, rng) -> np.ndarray:
    """Make a low-resolution alpha look like a global-pass estimate: blur, a sub-pixel
    shift, a gamma change, noise and a few wrong blotches.

    Parameters
    ----------
    alpha : (h, w) array of float in [0, 1]

    Returns
    -------
    (h, w) array of float32 in [0, 1]
    """
    from scipy import ndimage as ndi

    a = ndi.gaussian_filter(alpha.astype(np.float32), rng.uniform(0, 1.0))
    a = ndi.shift(a, rng.uniform(-0.5, 0.5, 2), order=1, mode="nearest")
    a = np.clip(a, 0, 1) ** rng.uniform(0.7, 1.4)
    a = a + rng.normal(0, rng.uniform(0, 0.05), a.shape)
    h, w = a.shape
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.poisson(1.0))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.5, 0.15 * max(h, w) + 1)
        a += rng.uniform(-0.5, 0.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(a, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- real data


@dataclass(eq=False)
class _Source:
    """One matte to crop from: alpha (PIL ``L`` or ``F``) and foreground (PIL ``RGB``)."""

    name: str
    alpha: object
    foreground: object
    unknown: np.ndarray  # (n, 2) int32 (y, x) of fractional-alpha pixels

    @property
    def shape(self) -> tuple[int, int]:
        return self.alpha.size[1], self.alpha.size[0]


def _unknown_pixels(alpha: np.ndarray, rng, limit: int = 20000) -> np.ndarray:
    yx = np.argwhere((alpha > 0.02) & (alpha < 0.98)).astype(np.int32)
    if len(yx) > limit:
        yx = yx[rng.choice(len(yx), limit, replace=False)]
    return yx


def _estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colours of a photo given its true alpha (Germer et al. 2020).

    PyMatting's ``estimate_foreground_ml`` where installed (fast on CPU), else our own
    implementation of the same method, :func:`napari_hrmatt.foreground.estimate_foreground`.

    Returns
    -------
    (H, W, 3) array of uint8
    """
    try:
        from pymatting import estimate_foreground_ml
    except ImportError:
        from ..foreground import estimate_foreground

        fg = estimate_foreground(image, alpha, device="auto")
    else:
        fg = estimate_foreground_ml(image / 255.0, alpha / 255.0)
    return (np.clip(fg, 0, 1) * 255 + 0.5).astype(np.uint8)


def _load_real_sources(config: TrainConfig, data_dir: Path, cache_dir: Path | None):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    root = alphamatting.find_dataset(data_dir)
    rng = np.random.default_rng([config.seed, 2**31])
    out: dict[str, list[_Source]] = {"lowres": [], "highres": []}
    for name in config.train_images:
        assert name in DEV_IMAGES  # TrainConfig.validate refuses held-out names
        photo_path, _, gt_path = alphamatting.sample_paths(root, name)
        with Image.open(photo_path) as im:
            photo = np.asarray(im.convert("RGB"))
        with Image.open(gt_path) as im:
            alpha_lr = im.convert("L")
        cached = None if cache_dir is None else Path(cache_dir) / f"foreground_{name}.png"
        if cached is not None and cached.is_file():
            with Image.open(cached) as im:
                fg = im.convert("RGB")
        else:
            fg = Image.fromarray(_estimate_foreground(photo, np.asarray(alpha_lr)))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                fg.save(cached)
        if config.sources.get("lowres", 0) > 0:
            a = np.asarray(alpha_lr, np.float32) / 255
            out["lowres"].append(_Source(name, alpha_lr, fg, _unknown_pixels(a, rng)))
        if config.sources.get("highres", 0) > 0:
            with Image.open(root / alphamatting.GT_HIGHRES / f"{name}.png") as im:
                alpha_hr = im.convert("L")
            a = np.asarray(alpha_hr, np.float32) / 255
            out["highres"].append(_Source(name, alpha_hr, fg, _unknown_pixels(a, rng)))
    return out


def _background_paths(config: TrainConfig, data_dir: Path | None) -> list[Path]:
    paths: list[Path] = []
    for folder in config.backgrounds:
        if data_dir is None:
            raise FileNotFoundError(f"background folder {folder!r} needs {NEED_DATA}")
        found = sorted(
            p
            for p in (Path(data_dir) / folder).rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if not found:
            raise FileNotFoundError(
                f"no background photos (.jpg/.png) in {Path(data_dir) / folder}"
            )
        paths += found
    return paths


# --------------------------------------------------------------------------- samples


def _render(image, box, size: int, resample: int, scale=(1.0, 1.0)) -> np.ndarray:
    """Resize the ``box`` (x0, y0, x1, y1) of a PIL image to ``size x size``.

    ``scale`` maps box coordinates to the image's own (x, y) pixels, e.g. from a
    high-resolution alpha to its low-resolution foreground; the box is clipped to the
    image (rounding can overshoot by a hair).
    """
    w, h = image.size
    sx, sy = scale
    b = (
        min(max(box[0] * sx, 0.0), w),
        min(max(box[1] * sy, 0.0), h),
        min(max(box[2] * sx, 0.0), w),
        min(max(box[3] * sy, 0.0), h),
    )
    out = np.asarray(image.resize((size, size), resample, box=b), np.float32)
    return out / 255.0 if image.mode in ("L", "RGB") else np.clip(out, 0, 1)


class TrainingSamples:
    """Map-style dataset: sample ``i`` is a function of ``(config.seed, i)`` only.

    Each sample is a dict of float32 arrays (channels first): ``image`` (3, S, S),
    ``trimap`` (1, S, S) uint8, ``alpha``, ``coarse`` (1, S, S), ``fg``, ``bg``
    (3, S, S) and the context ``ctx_image`` (3, C, C), ``ctx_fractions`` (3, C, C),
    ``ctx_coarse`` (1, C, C), with ``S = config.size`` and ``C = config.context_size``.

    Parameters
    ----------
    config : TrainConfig
    data_dir : Path, optional
        The data folder: the alphamatting.com training set (or its parent) and the
        background folders; needed for real sources and photo backgrounds.
    cache_dir : Path, optional
        Where estimated foreground colours are cached between runs.
    """

    def __init__(self, config: TrainConfig, data_dir=None, *, cache_dir=None):
        self.config = config
        self.data_dir = None if data_dir is None else Path(data_dir)
        real = any(config.sources.get(k, 0) > 0 for k in ("lowres", "highres"))
        if real and self.data_dir is None:
            raise FileNotFoundError(
                f"lowres/highres sources need the alphamatting.com data: {NEED_DATA}"
            )
        if real and not config.train_images:
            raise ValueError("lowres/highres sources need train_images (GT01-GT18)")
        self.real = _load_real_sources(config, self.data_dir, cache_dir) if real else {}
        self.backgrounds = _background_paths(config, self.data_dir)
        names = [k for k in SOURCES if config.sources.get(k, 0) > 0]
        p = np.array([config.sources[k] for k in names], float)
        self._kinds, self._p = names, p / p.sum()

    def __len__(self) -> int:
        return self.config.steps * self.config.batch_size

    def _source(self, kind: str, rng) -> _Source:
        from PIL import Image

        if kind == "procedural":
            size = self.config.procedural_size
            alpha, fg = procedural_matte(rng, size)
            return _Source(
                "procedural",
                Image.fromarray(alpha),
                Image.fromarray(fg),
                _unknown_pixels(alpha, rng),
            )
        pool = self.real[kind]
        return pool[int(rng.integers(len(pool)))]

    def _background(self, rng, need: int):
        from PIL import Image

        if not self.backgrounds:
            return Image.fromarray(procedural_background(rng, max(256, min(need, 1024))))
        path = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        with Image.open(path) as im:
            if im.format == "JPEG" and max(im.size) > 2 * need:
                im.draft("RGB", (max(need, im.size[0] // 8), max(need, im.size[1] // 8)))
            photo = im.convert("RGB")
        if rng.random() < 0.5:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return photo

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        from PIL import Image

        cfg = self.config
        rng = np.random.default_rng([cfg.seed, int(index)])
        s, cs = cfg.size, cfg.context_size
        src = self._source(str(rng.choice(self._kinds, p=self._p)), rng)
        h, w = src.shape
        c = float(min(int(rng.choice(cfg.crop_sizes)), h, w))
        # Query crop around a fractional-alpha pixel, jittered; context region around it.
        if len(src.unknown):
            cy, cx = src.unknown[int(rng.integers(len(src.unknown)))] + rng.uniform(
                -c / 4, c / 4, 2
            )
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        qy0, qx0 = np.clip(cy - c / 2, 0, h - c), np.clip(cx - c / 2, 0, w - c)
        r = float(min(rng.uniform(*cfg.context_scale) * c, h, w))
        ry0 = np.clip(qy0 + c / 2 - r / 2, max(0.0, qy0 + c - r), min(h - r, qy0))
        rx0 = np.clip(qx0 + c / 2 - r / 2, max(0.0, qx0 + c - r), min(w - r, qx0))
        qbox = (qx0, qy0, qx0 + c, qy0 + c)
        rbox = (rx0, ry0, rx0 + r, ry0 + r)
        fg_scale = (
            src.foreground.size[0] / src.alpha.size[0],
            src.foreground.size[1] / src.alpha.size[1],
        )

        def interp() -> int:
            return _FILTERS[int(rng.integers(len(_FILTERS)))]

        alpha_q = _render(src.alpha, qbox, s, interp())
        fg_q = _render(src.foreground, qbox, s, interp(), fg_scale)
        alpha_c2 = _render(src.alpha, rbox, 2 * cs, interp())
        fg_c = _render(src.foreground, rbox, cs, interp(), fg_scale)
        # Background: one placement of a photo under the whole context region.
        photo = self._background(rng, int(2 * cs))
        pw, ph = photo.size
        k = min(pw / r, ph / r) * rng.uniform(0.6, 1.0)
        bx0, by0 = rng.uniform(0, pw - r * k), rng.uniform(0, ph - r * k)

        def photo_box(box):
            return (bx0 + (box[0] - rx0) * k, by0 + (box[1] - ry0) * k,
                    bx0 + (box[2] - rx0) * k, by0 + (box[3] - ry0) * k)  # fmt: skip

        bg_q = _render(photo, photo_box(qbox), s, interp())
        bg_c = _render(photo, photo_box(rbox), cs, interp())
        # Trimaps: erosion radii drawn in query pixels, converted for the context.
        band = rng.uniform(*cfg.trimap_band, 2) * s
        trimap_q = make_trimap(alpha_q, *band)
        to_ctx = (2 * cs / r) * (c / s)
        trimap_c2 = make_trimap(alpha_c2, *(band * to_ctx))
        onehot = np.stack([trimap_c2 == v for v in (0, 128, 255)], 0).astype(np.float32)
        ctx_fractions = onehot.reshape(3, cs, 2, cs, 2).mean((2, 4))
        alpha_c = alpha_c2.reshape(cs, 2, cs, 2).mean((1, 3))
        # Coarse alpha: the truth over the context region at 1/f, degraded, upsampled.
        f = math.exp(rng.uniform(*np.log(cfg.coarse_factor)))
        n = max(4, round(r / f))
        low = degrade_coarse(_render(src.alpha, rbox, n, Image.Resampling.BOX), rng)
        low_img = Image.fromarray(low)
        lq = (
            (qx0 - rx0) * n / r,
            (qy0 - ry0) * n / r,
            (qx0 - rx0 + c) * n / r,
            (qy0 - ry0 + c) * n / r,
        )
        coarse_q = _render(low_img, lq, s, Image.Resampling.BILINEAR)
        coarse_c = _render(low_img, (0, 0, n, n), cs, Image.Resampling.BILINEAR)
        if rng.random() < cfg.p_no_coarse:
            coarse_q = np.where(trimap_q == 128, 0.5, trimap_q / 255.0).astype(np.float32)
            coarse_c = (ctx_fractions[2] + 0.5 * ctx_fractions[1]).astype(np.float32)

        def compose(a, fg, bg):
            img = a[..., None] * fg + (1 - a[..., None]) * bg
            img = img + rng.normal(0, rng.uniform(0, cfg.noise), img.shape)
            return np.round(np.clip(img, 0, 1) * 255) / 255  # 8-bit, like real photos

        sample = {
            "image": compose(alpha_q, fg_q, bg_q).transpose(2, 0, 1),
            "trimap": trimap_q[None],
            "alpha": alpha_q[None],
            "coarse": coarse_q[None],
            "fg": fg_q.transpose(2, 0, 1),
            "bg": bg_q.transpose(2, 0, 1),
            "ctx_image": compose(alpha_c, fg_c, bg_c).transpose(2, 0, 1),
            "ctx_fractions": ctx_fractions,
            "ctx_coarse": coarse_c[None],
        }
        flip = rng.random() < 0.5
        out = {}
        for key, v in sample.items():
            v = v[..., ::-1] if flip else v
            out[key] = np.ascontiguousarray(v, np.uint8 if key == "trimap" else np.float32)
        return out
