"""What determines a training run: :class:`TrainConfig`, the named presets, the data split.

A run is a function of its config and seed; the config is saved in every checkpoint
and run record. Training and validation images are subsets of the alphamatting.com
dev images (:data:`napari_hrmatt.alphamatting.DEV`); the held-out images are refused
here, once, for every user of the config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

# The fixed split of the alphamatting.com set is defined once, in alphamatting.py.
from ..alphamatting import DEV as DEV_IMAGES
from ..alphamatting import HELDOUT as HELDOUT_IMAGES

__all__ = ["DEV_IMAGES", "PRESETS", "SOURCES", "TrainConfig", "make_config"]

SOURCES = ("lowres", "highres", "procedural")
# Settings a resumed run may change without invalidating the checkpoint.
OPERATIONAL = {"steps", "num_workers", "ckpt_every", "val_every", "log_every"}


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
