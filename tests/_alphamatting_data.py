"""A tiny alphamatting.com-shaped dataset made in code (shared by the bench and
alphamatting tests; never the real data)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def sample(seed: int, h: int = 36, w: int = 44):
    """A soft disc of one colour over a two-tone background: I = aF + (1 - a)B."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    alpha = np.clip((12 - r) / 5 + 0.5, 0, 1)
    fg = rng.uniform(0.5, 1.0, 3)
    bg = np.where((xx // 11 % 2)[..., None] == 0, rng.uniform(0, 0.4, 3), rng.uniform(0, 0.4, 3))
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return (image * 255).round().astype(np.uint8), (alpha * 255).round().astype(np.uint8)


def trimap_of(alpha8: np.ndarray, grow: int) -> np.ndarray:
    from scipy import ndimage as ndi

    unknown = (alpha8 > 0) & (alpha8 < 255)
    unknown = ndi.binary_dilation(unknown, iterations=grow)
    tri = np.where(alpha8 >= 128, 255, 0).astype(np.uint8)
    tri[unknown] = 128
    return tri


def palette_image(tri: np.ndarray) -> Image.Image:
    """A palette image whose indices are NOT the grey values of the trimap.

    Index 0 -> white, 1 -> grey 128, 2 -> black: reading the raw indices instead of
    converting would turn the foreground into background.
    """
    index = np.select([tri == 255, tri == 128], [0, 1], 2).astype(np.uint8)
    im = Image.frombytes("P", index.shape[::-1], index.tobytes())
    im.putpalette([255, 255, 255, 128, 128, 128, 0, 0, 0] + [0, 0, 0] * 253)
    return im


def make_dataset(root, names):
    """input/GT/Trimap1/Trimap2 PNGs in the alphamatting.com layout, palette trimaps."""
    for sub in ("input_training_lowres", "gt_training_lowres"):
        (root / sub).mkdir(parents=True)
    for k in (1, 2):
        (root / "trimap_training_lowres" / f"Trimap{k}").mkdir(parents=True)
    for i, name in enumerate(names):
        image, alpha = sample(i)
        Image.fromarray(image).save(root / "input_training_lowres" / f"{name}.png")
        # Stored as RGB with R = G = B, as the real GT files are.
        Image.fromarray(np.stack([alpha] * 3, -1)).save(
            root / "gt_training_lowres" / f"{name}.png"
        )
        for k in (1, 2):
            tri = palette_image(trimap_of(alpha, grow=k))
            tri.save(root / "trimap_training_lowres" / f"Trimap{k}" / f"{name}.png")
    return root
