"""``hrmatt train``: train the HDMatt-style network, reproducibly from a config and a seed.

Data (never GT19-GT27)
    Every sample is a composite ``I = alpha F + (1 - alpha) B`` (Porter & Duff 1984)
    built on the fly from one of three sources:

    - ``lowres``: the alphamatting.com dev photos GT01-GT15 with their ground-truth
      alpha; the foreground colours ``F`` are estimated from the photo and its alpha
      (PyMatting's multi-level foreground estimation, Germer et al. 2020);
    - ``highres``: the same scenes' high-resolution ground-truth mattes (the fine
      hair), with the low-resolution ``F`` upsampled (semi-synthetic, like
      ``benchmarks/composites.py``);
    - ``procedural``: generated mattes (strands and fur along soft bodies, blurred
      shapes, semi-transparent layers) with smooth colour fields.

    Backgrounds ``B`` are photos from ``bench-data`` (BSDS500, Kodak24, pxhere). GT16-GT18
    are held aside for validation (model selection); GT19-GT27 are refused everywhere.

Augmentation (HDMatt / HOP)
    Square crops of 320/480/640 source pixels around unknown pixels, resized to the
    training size with a random interpolation (bilinear, bicubic, Lanczos, box,
    Hamming) for every resize; horizontal flips; trimaps by eroding the definite
    foreground and background by random radii; a coarse alpha made by downsampling the
    truth 2-16x and degrading it (blur, shift, gamma, noise, blotches), standing in for
    the global pass; a context image 2-4x the crop around it for the cross-patch module.

Loss (HDMatt eq. 4)
    Alpha-prediction loss plus composition loss (Xu et al. 2017) over the unknown
    region, both Charbonnier, weighted by the engine's linear blending ramp from the
    crop border (:func:`border_ramp`): the engine trims or fades block borders, so
    predictions near a crop's edge, made without their context, count less.

Reproducibility
    Sample ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` and the network
    is initialised from ``seed``, so a run is a function of its config; checkpoints
    (``last.pt``, ``best.pt``) hold the model, optimiser and step, and a run resumes
    where it stopped. Each run appends a record (config, steps, time, hardware,
    validation errors) to ``OUT/runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

# The fixed split of the alphamatting.com set is defined once, in napari_hrmatt.bench.
from .bench import DEV as DEV_IMAGES
from .bench import HELDOUT as HELDOUT_IMAGES

__all__ = [
    "DEV_IMAGES",
    "PRESETS",
    "TrainConfig",
    "TrainingSamples",
    "border_ramp",
    "configure_parser",
    "degrade_coarse",
    "export_weights",
    "make_trimap",
    "matting_loss",
    "procedural_background",
    "procedural_matte",
    "run",
    "train",
    "validate",
]

#: ``shared/bench-data`` next to the repository checkout (the default ``--data-dir``).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "bench-data"
CHECKPOINT_FORMAT = "napari-hrmatt/hdmatt-checkpoint"
SOURCES = ("lowres", "highres", "procedural")
# Settings a resumed run may change without invalidating the checkpoint.
_OPERATIONAL = {"steps", "num_workers", "ckpt_every", "val_every", "log_every"}

# PIL resampling filters for HOP's random interpolation (values of Image.Resampling).
_FILTERS = (2, 3, 1, 4, 5)  # bilinear, bicubic, lanczos, box, hamming


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in every checkpoint and log).

    Attributes
    ----------
    arch : dict
        :class:`~napari_hrmatt.models.hdmatt.HDMattConfig` fields (defaults if empty).
    seed : int
    steps, batch_size : int
    size : int
        Training crop side after resizing (pixels, multiple of 8).
    crop_sizes : tuple of int
        Source crop sides, resized to ``size`` (HDMatt: 320/480/640).
    context_size : int
        Side of the context image the context pool is cut from (multiple of 8).
    context_scale : (float, float)
        The context region is this many crop sides wide (clipped to the source).
    sources : dict
        Sampling weights of ``lowres``, ``highres`` and ``procedural`` sources.
    train_images, val_images : tuple of str
        Disjoint subsets of GT01-GT18.
    val_trimaps : tuple of int
        alphamatting.com trimaps used for validation (1 and/or 2).
    backgrounds : tuple of str
        Folders of ``data_dir`` with background photos; empty = generated backgrounds.
    procedural_size : int
        Side of a generated matte (pixels).
    trimap_band : (float, float)
        Range of the erosion radii making the unknown band, as fractions of ``size``.
    coarse_factor : (float, float)
        Range of the downsampling factor of the simulated coarse alpha.
    p_no_coarse : float
        Probability that the coarse alpha is only the trimap (0.5 where unknown).
    noise : float
        Largest standard deviation of Gaussian noise added to the composite.
    lr, min_lr, warmup, weight_decay, grad_clip : float, float, int, float, float
        AdamW with linear warm-up and cosine decay to ``min_lr`` at ``steps``.
    comp_weight : float
        Weight of the composition loss.
    ramp : int
        Width (pixels at ``size``) of the linear loss ramp at the crop border (the
        engine's blending ramp spans ``2 overlap``; at 320-px crops that would leave
        almost no full-weight pixel, so the width is set for the crop).
    num_workers : int
        Data-loading processes.
    amp : bool
        bfloat16 autocast on CUDA.
    ckpt_every, val_every, log_every : int
        Steps between checkpoints, validations (0 = only at the end) and log lines.
    """

    arch: dict = field(default_factory=dict)
    seed: int = 0
    steps: int = 10000
    batch_size: int = 16
    size: int = 320
    crop_sizes: tuple[int, ...] = (320, 480, 640)
    context_size: int = 256
    context_scale: tuple[float, float] = (2.0, 4.0)
    sources: dict = field(
        default_factory=lambda: {"lowres": 0.3, "highres": 0.4, "procedural": 0.3}
    )
    train_images: tuple[str, ...] = DEV_IMAGES[:15]
    val_images: tuple[str, ...] = DEV_IMAGES[15:]
    val_trimaps: tuple[int, ...] = (1, 2)
    backgrounds: tuple[str, ...] = ("bsds500-images", "kodak24", "pxhere-backgrounds")
    procedural_size: int = 640
    trimap_band: tuple[float, float] = (0.015, 0.1)
    coarse_factor: tuple[float, float] = (2.0, 16.0)
    p_no_coarse: float = 0.1
    noise: float = 0.01
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    comp_weight: float = 1.0
    ramp: int = 64
    num_workers: int = 14
    amp: bool = True
    ckpt_every: int = 500
    val_every: int = 2000
    log_every: int = 50

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work (or would leak held-out data)."""
        for name in ("train_images", "val_images"):
            bad = [n for n in getattr(self, name) if n not in DEV_IMAGES]
            if bad:
                held = [n for n in bad if n in HELDOUT_IMAGES]
                why = (
                    f"{held} are the held-out test images (GT19-GT27): never train or "
                    "validate on them"
                    if held
                    else "unknown names"
                )
                raise ValueError(f"{name} may only name GT01-GT18: {bad}: {why}")
        both = sorted(set(self.train_images) & set(self.val_images))
        if both:
            raise ValueError(f"{both} are in both train_images and val_images; keep them disjoint")
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown or not any(v > 0 for v in self.sources.values()):
            raise ValueError(f"sources must weight some of {SOURCES}, got {self.sources}")
        if min(self.sources.values()) < 0:
            raise ValueError(f"source weights must be >= 0, got {self.sources}")
        for name in ("size", "context_size"):
            v = getattr(self, name)
            if v < 16 or v % 8:
                raise ValueError(f"{name} must be a multiple of 8, at least 16; got {v}")
        if not self.crop_sizes or min(self.crop_sizes) < 8:
            raise ValueError(f"crop_sizes must be positive pixel sizes, got {self.crop_sizes}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if any(t not in (1, 2) for t in self.val_trimaps):
            raise ValueError(f"val_trimaps are alphamatting.com Trimap1/2, got {self.val_trimaps}")

    def to_dict(self) -> dict:
        """JSON-able dict (tuples become lists)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            valid = sorted(f.name for f in fields(cls))
            raise ValueError(f"unknown training setting(s) {unknown}; valid: {valid}")
        return cls(**d)


#: Named starting points; ``--config`` and ``--set`` apply on top.
PRESETS: dict[str, dict] = {
    # One GPU (H100/H200 with 16 CPU cores): batch 16 at 320 px; data-bound.
    "gpu": {},
    # A few CPU cores: smaller crops, small batches; for smoke runs and slow training.
    "cpu": {
        "size": 160,
        "crop_sizes": [160, 240, 320],
        "context_size": 128,
        "batch_size": 4,
        "steps": 3000,
        "procedural_size": 480,
        "num_workers": 1,
        "amp": False,
        "ramp": 32,
        "warmup": 100,
        "ckpt_every": 100,
        "val_every": 1000,
        "log_every": 10,
    },
    # Tests and plumbing checks: a tiny network on generated data only.
    "tiny": {
        "arch": {
            "widths": [4, 8, 8, 12],
            "blocks": [1, 1, 1],
            "aspp_dilations": [2],
            "aspp_width": 4,
            "decoder_widths": [8, 8, 4],
            "key_width": 8,
            "value_width": 8,
            "context_patch": 2,
            "query_window": 3,
        },
        "size": 64,
        "crop_sizes": [64, 96, 128],
        "context_size": 64,
        "batch_size": 2,
        "steps": 20,
        "sources": {"procedural": 1.0},
        "train_images": [],
        "val_images": [],
        "backgrounds": [],
        "procedural_size": 192,
        "num_workers": 0,
        "amp": False,
        "ramp": 8,
        "warmup": 0,
        "ckpt_every": 10,
        "val_every": 0,
        "log_every": 5,
    },
}


def make_config(preset: str = "gpu", overrides: dict | None = None) -> TrainConfig:
    """A preset with ``overrides`` applied (``arch`` is merged key by key)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    d = TrainConfig().to_dict()
    for layer in (PRESETS[preset], overrides or {}):
        for k, v in layer.items():
            d[k] = {**d[k], **v} if k == "arch" and isinstance(v, dict) else v
    return TrainConfig.from_dict(d)


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

    from .trimap import BACKGROUND, FOREGROUND, UNKNOWN

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
        try:
            from .foreground import estimate_foreground
        except ImportError as exc:  # pragma: no cover - one of the two is always there
            raise RuntimeError(
                "training on alphamatting.com images needs foreground colours: install "
                "pymatting, or train on generated mattes only "
                "(--set 'sources={\"procedural\": 1}')"
            ) from exc
        fg = estimate_foreground(image, alpha, device="auto")
    else:
        fg = estimate_foreground_ml(image / 255.0, alpha / 255.0)
    return (np.clip(fg, 0, 1) * 255 + 0.5).astype(np.uint8)


def _load_real_sources(config: TrainConfig, data_dir: Path, cache_dir: Path | None):
    from PIL import Image

    from .bench import find_dataset

    Image.MAX_IMAGE_PIXELS = None
    root = find_dataset(data_dir)
    rng = np.random.default_rng([config.seed, 2**31])
    out: dict[str, list[_Source]] = {"lowres": [], "highres": []}
    for name in config.train_images:
        assert name in DEV_IMAGES  # TrainConfig.validate refuses held-out names
        with Image.open(root / "input_training_lowres" / f"{name}.png") as im:
            photo = np.asarray(im.convert("RGB"))
        with Image.open(root / "gt_training_lowres" / f"{name}.png") as im:
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
            with Image.open(root / "gt_training_highres" / f"{name}.png") as im:
                alpha_hr = im.convert("L")
            a = np.asarray(alpha_hr, np.float32) / 255
            out["highres"].append(_Source(name, alpha_hr, fg, _unknown_pixels(a, rng)))
    return out


def _background_paths(config: TrainConfig, data_dir: Path | None) -> list[Path]:
    paths: list[Path] = []
    for folder in config.backgrounds:
        if data_dir is None:
            raise FileNotFoundError(f"background folder {folder!r} needs --data-dir")
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
        ``shared/bench-data``; needed for real sources and photo backgrounds.
    cache_dir : Path, optional
        Where estimated foreground colours are cached between runs.
    """

    def __init__(self, config: TrainConfig, data_dir=None, *, cache_dir=None):
        self.config = config
        self.data_dir = None if data_dir is None else Path(data_dir)
        real = any(config.sources.get(k, 0) > 0 for k in ("lowres", "highres"))
        if real and self.data_dir is None:
            raise FileNotFoundError(
                "lowres/highres sources need the alphamatting.com data: pass --data-dir"
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


# --------------------------------------------------------------------------- loss


def border_ramp(size: int, ramp: int, *, device=None):
    """Loss weights rising linearly from the crop border: ``min(1, (d + 0.5) / ramp)``.

    The same linear ramp as the engine's blended stitching (``stitch="blend"`` in
    :func:`napari_hrmatt.patch_pass.refine`, where ``ramp = 2 overlap``), ``d`` being
    the distance in pixels from the nearest crop edge.

    Returns
    -------
    (1, 1, size, size) tensor of float32 in (0, 1]
    """
    import torch

    i = torch.arange(size, device=device, dtype=torch.float32)
    d = torch.minimum(i, size - 1 - i)
    d = torch.minimum(d[:, None], d[None, :])
    return ((d + 0.5) / max(ramp, 1)).clamp(max=1.0)[None, None]


def matting_loss(pred, alpha, image, fg, bg, unknown, weight, *, comp_weight=1.0, eps=1e-6):
    """HDMatt eq. 4: alpha-prediction loss + composition loss over the unknown region.

    Both terms are Charbonnier distances (``sqrt(x^2 + eps^2)``, Xu et al. 2017)
    averaged over the unknown pixels with the per-pixel ``weight``.

    Parameters
    ----------
    pred, alpha : (B, 1, H, W) tensors
        Predicted and true alpha.
    image, fg, bg : (B, 3, H, W) tensors
        Composite and its true foreground and background.
    unknown : (B, 1, H, W) tensor of bool or float
    weight : (1 or B, 1, H, W) tensor
        E.g. :func:`border_ramp`.
    comp_weight : float

    Returns
    -------
    loss : scalar tensor
    parts : dict of float
        ``alpha`` and ``comp`` terms.
    """

    def charbonnier(x):
        return (x * x + eps * eps).sqrt()

    w = unknown.float() * weight
    norm = w.sum().clamp_min(1.0)
    l_alpha = (w * charbonnier(pred - alpha)).sum() / norm
    comp = pred * fg + (1 - pred) * bg
    l_comp = (w * charbonnier(comp - image).mean(1, keepdim=True)).sum() / norm
    loss = l_alpha + comp_weight * l_comp
    return loss, {"alpha": float(l_alpha.detach()), "comp": float(l_comp.detach())}


def _learning_rate(config: TrainConfig, step: int) -> float:
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * t))


def training_step(net, optimizer, batch, config: TrainConfig, *, device=None, amp=False) -> dict:
    """One optimisation step on a collated batch (tensors from :class:`TrainingSamples`)."""
    import torch

    from .models.hdmatt import trimap_fractions

    device = device or next(net.parameters()).device
    b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    net.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(amp)):
        pool = net.context_pool(b["ctx_image"], b["ctx_fractions"], b["ctx_coarse"])
        pred = net(b["image"], trimap_fractions(b["trimap"]), b["coarse"], pool)
    loss, parts = matting_loss(
        pred.float(),
        b["alpha"],
        b["image"],
        b["fg"],
        b["bg"],
        b["trimap"] == 128,
        border_ramp(config.size, config.ramp, device=device),
        comp_weight=config.comp_weight,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    return {"loss": float(loss.detach()), **parts}


# --------------------------------------------------------------------------- checkpoints


def _save(path: Path, payload: dict) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, device) -> dict:
    import torch

    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an hrmatt training checkpoint")
    return payload


def _hardware(device) -> dict:
    import torch

    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


#: Pixels of the coarse closed-form solve in :func:`validate`.
VAL_COARSE_SIZE = 65536


def validate(net, config: TrainConfig, data_dir, *, device="cpu") -> dict:
    """Errors of the network on the held-aside dev images (``config.val_images``).

    Runs the full inference path of :class:`~napari_hrmatt.models.hdmatt.HDMattModel`
    (coarse closed-form solve, context pool, network) on the lowres photos with
    alphamatting.com Trimap1/2, and averages SAD, MSE, Grad and Conn
    (:func:`napari_hrmatt.metrics.evaluate`).

    Returns
    -------
    dict
        ``sad``, ``mse``, ``grad``, ``conn`` means, ``n`` and ``per_image`` rows.
    """
    from .bench import find_dataset, load_sample
    from .metrics import evaluate
    from .models.hdmatt import HDMattModel

    if not config.val_images:
        return {}
    root = find_dataset(data_dir)
    was_training = net.training
    # A 64k-pixel coarse solve (not the inference default, 1e6): cheaper, and the rule
    # every recorded run (docs/training-runs.jsonl) selected its best.pt by.
    model = HDMattModel.from_network(net, device, coarse_size=VAL_COARSE_SIZE)
    rows = []
    try:
        for name in config.val_images:
            assert name in DEV_IMAGES
            for t in config.val_trimaps:
                image, trimap, gt = load_sample(root, name, t)
                alpha = model.global_alpha(image.astype(np.float32) / 255, trimap)
                rows.append({"image": name, "trimap": t, **evaluate(alpha, gt, trimap)})
    finally:
        net.train(was_training)
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("sad", "mse", "grad", "conn")}
    return {**means, "n": len(rows), "per_image": rows}


def _append_jsonl(paths, record: dict) -> None:
    line = json.dumps(record, sort_keys=True)
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as f:
            f.write(line + "\n")


def train(
    config: TrainConfig,
    out_dir,
    *,
    data_dir=None,
    device: str = "auto",
    resume: bool = True,
    time_limit: float | None = None,
    log_paths=(),
    verbose: bool = True,
) -> dict:
    """Train (or continue training) the network; returns the run record.

    Parameters
    ----------
    config : TrainConfig
    out_dir : str or Path
        Run folder: ``last.pt``, ``best.pt``, ``cache/``, ``runs.jsonl``.
    data_dir : Path, optional
        ``shared/bench-data``.
    device : str
    resume : bool
        Continue from ``out_dir/last.pt`` if it exists (its config must match, except
        steps, workers and the logging/checkpoint intervals).
    time_limit : float, optional
        Seconds; stop cleanly (checkpoint and record) once exceeded, so runs can be
        chained in short sessions.
    log_paths : sequence of Path
        More JSONL files to append the run record to (``out_dir/runs.jsonl`` always).
    verbose : bool
        Progress lines on stderr.

    Returns
    -------
    dict
        The run record written to the JSONL logs.
    """
    import torch

    from .models import resolve_device
    from .models.hdmatt import HDMattNet, count_parameters

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(resolve_device(device))
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    torch.manual_seed(config.seed)
    net = HDMattNet(config.arch).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best, elapsed_before = 0, None, 0.0
    last = out / "last.pt"
    if resume and last.is_file():
        state = _load_checkpoint(last, dev)
        old = {k: v for k, v in state["config"].items() if k not in _OPERATIONAL}
        new = {k: v for k, v in config.to_dict().items() if k not in _OPERATIONAL}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"{last} was trained with a different config ({diff} differ); use another "
                "--out folder, the same settings, or --restart"
            )
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, elapsed_before = state["step"], state.get("best"), state.get("elapsed", 0.0)
    start_step = step
    data_dir = None if data_dir is None else Path(data_dir)
    samples = TrainingSamples(config, data_dir, cache_dir=out / "cache")
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=config.batch_size,
        sampler=range(step * config.batch_size, config.steps * config.batch_size),
        num_workers=config.num_workers,
        pin_memory=dev.type == "cuda",
    )
    amp = config.amp and dev.type == "cuda"

    def checkpoint(path, with_optimizer=True):
        _save(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "version": 1,
                "step": step,
                "config": config.to_dict(),
                "model": net.state_dict(),
                "optimizer": opt.state_dict() if with_optimizer else None,
                "best": best,
                "elapsed": elapsed_before + time.monotonic() - t0,
            },
        )

    def run_validation():
        nonlocal best
        if not (config.val_images and data_dir is not None):
            return None
        metrics = validate(net, config, data_dir, device=dev)
        summary = {k: metrics[k] for k in ("sad", "mse", "grad", "conn")} | {"step": step}
        if best is None or summary["sad"] < best["sad"]:
            best = summary
            checkpoint(out / "best.pt", with_optimizer=False)
        if verbose:
            print(f"validation at step {step}: {summary}", file=sys.stderr)
        return metrics

    stopped, recent, val, val_step = "done", [], None, None
    if verbose:
        print(
            f"hrmatt train: {count_parameters(net):,} parameters on {dev}, steps "
            f"{start_step}->{config.steps}, batch {config.batch_size} at {config.size} px",
            file=sys.stderr,
        )
    try:
        for batch in loader:
            if step >= config.steps:
                break
            for group in opt.param_groups:
                group["lr"] = _learning_rate(config, step)
            recent.append(training_step(net, opt, batch, config, device=dev, amp=amp))
            recent = recent[-max(config.log_every, 1) :]
            step += 1
            if verbose and config.log_every and step % config.log_every == 0:
                mean = {k: np.mean([r[k] for r in recent]) for k in recent[0]}
                rate = (time.monotonic() - t0) / max(step - start_step, 1)
                print(
                    f"step {step}/{config.steps} loss {mean['loss']:.4f} (alpha "
                    f"{mean['alpha']:.4f}, comp {mean['comp']:.4f}) {rate:.2f} s/step",
                    file=sys.stderr,
                )
            if config.ckpt_every and step % config.ckpt_every == 0:
                checkpoint(last)
            if config.val_every and step % config.val_every == 0:
                val, val_step = run_validation(), step
            if time_limit is not None and time.monotonic() - t0 > time_limit:
                stopped = "time-limit"
                break
        if step >= config.steps and val_step != step:
            val, val_step = run_validation() or val, step
    except BaseException as exc:
        stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {exc!r}"
        raise
    finally:
        checkpoint(last)
        record = {
            "run": str(out.resolve()),
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - t0, 1),
            "start_step": start_step,
            "end_step": step,
            "target_steps": config.steps,
            "stopped": stopped,
            "train_loss": (
                {k: float(np.mean([r[k] for r in recent])) for k in recent[0]} if recent else None
            ),
            "validation": (
                {k: val[k] for k in ("sad", "mse", "grad", "conn", "n")} if val else None
            ),
            "best": best,
            "parameters": count_parameters(net),
            "hardware": _hardware(dev),
            "data_dir": None if data_dir is None else str(data_dir),
            "config": config.to_dict(),
        }
        _append_jsonl([out / "runs.jsonl", *log_paths], record)
    return record


def export_weights(run_dir, dest, *, which: str = "best") -> Path:
    """Write the shipping weights file from a run's ``best.pt`` (else ``last.pt``).

    The file (:func:`napari_hrmatt.models.hdmatt.save_weights`) holds the architecture,
    the state dict and a training record (steps, seed, images, validation errors,
    receptive field); :class:`~napari_hrmatt.models.hdmatt.HDMattModel` loads it with
    ``weights_only=True``.
    """
    import torch

    from .models.hdmatt import HDMattNet, count_parameters, receptive_radius, save_weights

    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.is_file() and which == "best":
        path = run_dir / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected best.pt or last.pt)")
    state = _load_checkpoint(path, torch.device("cpu"))
    config = TrainConfig.from_dict(state["config"])
    net = HDMattNet(config.arch)
    net.load_state_dict(state["model"])
    meta = {
        "checkpoint": path.name,
        "steps": state["step"],
        "seed": config.seed,
        "train_images": list(config.train_images),
        "val_images": list(config.val_images),
        "sources": config.sources,
        "validation": state.get("best"),
        "parameters": count_parameters(net),
        "receptive_radius": receptive_radius(net.config),
        "config": config.to_dict(),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return save_weights(net, dest, meta=meta)


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` arguments to ``parser`` (a subparser of ``hrmatt``)."""
    parser.description = (
        "Train the HDMatt-style network on composites of the alphamatting.com dev images "
        "(GT01-GT18 only) and generated mattes; resumable, logged to OUT/runs.jsonl. "
        "See docs/deep_model.md."
    )
    parser.add_argument("--out", type=Path, help="run folder (checkpoints, cache, runs.jsonl)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="starting config (default: gpu when CUDA is available, else cpu)",
    )
    parser.add_argument("--config", type=Path, help="JSON file of settings applied on the preset")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='override one setting, e.g. --set lr=5e-4 --set \'arch={"cpc": "none"}\'',
    )
    parser.add_argument("--steps", type=int, help="total steps of the run")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int, help="data-loading processes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (on a busy CPU, 1 thread can be much faster than several)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None,
        help="shared/bench-data (alphamatting-training/ and the background folders)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop cleanly after this long (checkpoint + log); rerun to continue",
    )
    parser.add_argument("--restart", action="store_true", help="ignore OUT/last.pt")
    parser.add_argument(
        "--log", type=Path, action="append", default=[], help="also append the run record here"
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="WEIGHTS",
        help="write the weights file from OUT/best.pt (else last.pt) and exit",
    )
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _resolve_config(args) -> TrainConfig:
    preset = args.preset
    if preset is None:
        import torch

        preset = "gpu" if torch.cuda.is_available() else "cpu"
    overrides: dict = {}
    if args.config is not None:
        try:
            overrides.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read --config {args.config}: {exc}") from exc
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=JSON, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value  # a bare string
    for key, value in (("steps", args.steps), ("seed", args.seed), ("num_workers", args.workers)):
        if value is not None:
            overrides[key] = value
    return make_config(preset, overrides)


def run(args: argparse.Namespace) -> int:
    """Run ``hrmatt train``; 0 on success, 2 for bad arguments or data."""
    from .models.hdmatt import WeightsError

    try:
        config = _resolve_config(args)
        if args.print_config:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        if args.out is None:
            raise ValueError("--out RUN_FOLDER is required (checkpoints and logs go there)")
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(1, args.threads))
        if args.export is not None:
            path = export_weights(args.out, args.export)
            print(f"weights written to {path}")
            return 0
        record = train(
            config,
            args.out,
            data_dir=args.data_dir,
            device=args.device,
            resume=not args.restart,
            time_limit=args.time_limit,
            log_paths=args.log,
            verbose=not args.quiet,
        )
    except (ValueError, FileNotFoundError, RuntimeError, WeightsError) as exc:
        print(f"hrmatt train: {exc}", file=sys.stderr)
        return 2
    print(
        f"steps {record['start_step']}->{record['end_step']} of {record['target_steps']} "
        f"({record['stopped']}, {record['seconds']} s); record appended to "
        f"{Path(args.out) / 'runs.jsonl'}"
    )
    return 0


def main(argv=None) -> int:
    """``python -m napari_hrmatt.train ...`` (until ``hrmatt train`` is wired)."""
    parser = configure_parser(argparse.ArgumentParser(prog="hrmatt train"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
