"""Semi-synthetic high-resolution composites from the alphamatting.com training set.

The alphamatting.com high-resolution *photos* are not available to us, but the
high-resolution ground-truth *mattes* (2080-3694 px wide) and trimaps are. A
composite keeps the real matte, which carries all the fine structure (hair, fur,
holes), and builds the colours around it::

    I = alpha_hr * F + (1 - alpha_hr) * B

- ``alpha_hr``: the real high-resolution ground truth;
- ``F``: foreground colours estimated from the *low-resolution* photo and its
  ground truth (PyMatting's multi-level foreground estimation, Germer et al. 2020),
  bilinearly upsampled: smooth, so the colours are only approximately real;
- ``B``: a real high-resolution background photo (pxhere, CC0) resized to cover the
  frame and centre-cropped.

These images are therefore **semi-synthetic**: the matte is real, the colour statistics
are plausible but simplified (no motion blur, no colour spill, a blurred foreground).
Every report built on them says so. The data are read from ``shared/bench-data`` at run
time and never copied into the repository.

Usage (writes PNGs for inspection; nothing is needed on disk by the experiment)::

    .venv/bin/python benchmarks/composites.py /tmp/composites --images GT01 GT04
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "KIND",
    "Composite",
    "DATA_DIR",
    "backgrounds",
    "composite",
    "fit_background",
    "has_data",
    "upsample",
    "estimate_lowres_foreground",
    "make_composite",
    "resize",
]

KIND = "semi-synthetic"
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "bench-data"

# Large files are fine: these are the benchmark inputs, read once.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True, eq=False)
class Composite:
    """One semi-synthetic high-resolution matting problem.

    Attributes
    ----------
    name : str
        Source image (``"GT01"``...).
    image : (H, W, 3) array of uint8
        ``round(255 * (alpha F + (1 - alpha) B))``.
    alpha : (H, W) array of float32 in [0, 1]
        The real high-resolution ground truth.
    trimap : (H, W) array of uint8 in {0, 128, 255}
        The real high-resolution trimap.
    foreground : (H, W, 3) array of float32 in [0, 1]
    background : (H, W, 3) array of float32 in [0, 1]
    background_name : str
    kind : str
        Always ``"semi-synthetic"``.
    """

    name: str
    image: np.ndarray
    alpha: np.ndarray
    trimap: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    background_name: str
    kind: str = KIND


def has_data(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds the alphamatting.com set; says so on stderr if not."""
    if (Path(data_dir) / "alphamatting-training").is_dir():
        return True
    print(f"no benchmark data in {data_dir}; skipping", file=sys.stderr)
    return False


def backgrounds(data_dir: Path = DATA_DIR) -> list[Path]:
    """The high-resolution background photos, sorted by name."""
    folder = Path(data_dir) / "pxhere-backgrounds"
    return sorted(p for p in folder.glob("*.jpg") if p.is_file())


def _read(path: Path, mode: str) -> np.ndarray:
    # Many alphamatting.com PNGs are palette images: always convert.
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def upsample(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (h, w[, C]) float image to ``shape`` = (H, W); float32."""
    from skimage.transform import resize

    out_shape = tuple(shape) + x.shape[2:]
    return resize(x.astype(np.float32), out_shape, order=1, anti_aliasing=False).astype(np.float32)


def fit_background(background: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scale a photo to cover ``shape`` (keeping its aspect ratio) and centre-crop it.

    Parameters
    ----------
    background : (h, w, 3) array of uint8
    shape : (H, W)

    Returns
    -------
    (H, W, 3) array of float32 in [0, 1]
    """
    h, w = background.shape[:2]
    big_h, big_w = shape
    scale = max(big_h / h, big_w / w)
    new_h, new_w = max(big_h, round(h * scale)), max(big_w, round(w * scale))
    resized = np.asarray(
        Image.fromarray(background).resize((new_w, new_h), Image.Resampling.BICUBIC)
    )
    y0, x0 = (new_h - big_h) // 2, (new_w - big_w) // 2
    return resized[y0 : y0 + big_h, x0 : x0 + big_w].astype(np.float32) / 255.0


def composite(alpha: np.ndarray, foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The compositing equation ``I = alpha F + (1 - alpha) B`` (Porter & Duff 1984).

    Parameters
    ----------
    alpha : (H, W) array of float in [0, 1]
    foreground, background : (H, W, 3) arrays of float in [0, 1]

    Returns
    -------
    (H, W, 3) array of float32 in [0, 1]
    """
    a = alpha.astype(np.float32)[..., None]
    return (a * foreground + (1 - a) * background).astype(np.float32)


def estimate_lowres_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colours of a low-resolution photo given its true alpha.

    Uses :func:`pymatting.estimate_foreground_ml` (Germer et al., "Fast Multi-Level
    Foreground Estimation", ICPR 2020), which also extrapolates smooth colours into
    the background region, so the upsampled F is defined wherever alpha_hr > 0.

    Parameters
    ----------
    image : (h, w, 3) array of uint8
    alpha : (h, w) array of uint8

    Returns
    -------
    (h, w, 3) array of float32 in [0, 1]
    """
    from pymatting import estimate_foreground_ml

    fg = estimate_foreground_ml(image.astype(np.float64) / 255.0, alpha.astype(np.float64) / 255.0)
    return np.clip(fg, 0.0, 1.0).astype(np.float32)


def make_composite(
    name: str,
    *,
    data_dir: Path = DATA_DIR,
    background: Path | None = None,
    trimap: int = 1,
) -> Composite:
    """Build the semi-synthetic high-resolution composite of one alphamatting.com image.

    Parameters
    ----------
    name : str
        ``"GT01"`` ... ``"GT27"`` (use GT01-GT18 for anything you tune on).
    data_dir : Path
        ``shared/bench-data`` (holding ``alphamatting-training/`` and
        ``pxhere-backgrounds/``).
    background : Path, optional
        Background photo; by default one of the pxhere photos, chosen by the image
        number so that every run uses the same pairs.
    trimap : {1, 2}
        Which high-resolution trimap to return.

    Returns
    -------
    Composite
    """
    root = Path(data_dir) / "alphamatting-training"
    if not root.is_dir():
        raise FileNotFoundError(f"no alphamatting-training folder in {data_dir}")
    image_lr = _read(root / "input_training_lowres" / f"{name}.png", "RGB")
    alpha_lr = _read(root / "gt_training_lowres" / f"{name}.png", "L")
    alpha = _read(root / "gt_training_highres" / f"{name}.png", "L").astype(np.float32) / 255.0
    tri = _read(root / "trimap_training_highres" / f"Trimap{trimap}" / f"{name}.png", "L")
    from napari_hrmatt.trimap import canonical_trimap

    tri = canonical_trimap(tri)
    if background is None:
        choices = backgrounds(data_dir)
        if not choices:
            raise FileNotFoundError(f"no background photos in {data_dir}/pxhere-backgrounds")
        background = choices[int(name[-2:]) % len(choices)]
    fg = upsample(estimate_lowres_foreground(image_lr, alpha_lr), alpha.shape)
    bg = fit_background(_read(Path(background), "RGB"), alpha.shape)
    image = np.round(composite(alpha, fg, bg) * 255).astype(np.uint8)
    return Composite(
        name=name,
        image=image,
        alpha=alpha,
        trimap=tri,
        foreground=fg,
        background=bg,
        background_name=Path(background).name,
    )


def resize(comp: Composite, megapixels: float):
    """The composite's image, trimap and alpha at about ``megapixels`` (never enlarged).

    Box filter for the image and alpha (area averages, as a camera at that resolution
    would see them), nearest neighbour for the trimap.

    Returns
    -------
    image : (h, w, 3) uint8; trimap : (h, w) uint8; alpha : (h, w) float32 in [0, 1]
    """
    h, w = comp.alpha.shape
    s = min(1.0, (megapixels * 1e6 / (h * w)) ** 0.5)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    image = np.asarray(Image.fromarray(comp.image).resize(size, Image.Resampling.BOX))
    alpha = np.asarray(Image.fromarray(comp.alpha).resize(size, Image.Resampling.BOX))
    trimap = np.asarray(Image.fromarray(comp.trimap).resize(size, Image.Resampling.NEAREST))
    return image, trimap, np.clip(alpha, 0, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs (outside the repository)")
    parser.add_argument("--images", nargs="+", default=["GT01"])
    parser.add_argument("--trimap", type=int, choices=(1, 2), default=1)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if not has_data(args.data_dir):
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        c = make_composite(name, data_dir=args.data_dir, trimap=args.trimap)
        Image.fromarray(c.image).save(args.out / f"{name}_{KIND}_image.png")
        Image.fromarray(np.round(c.alpha * 255).astype(np.uint8)).save(
            args.out / f"{name}_alpha.png"
        )
        Image.fromarray(c.trimap).save(args.out / f"{name}_trimap{args.trimap}.png")
        print(f"{name}: {c.image.shape[1]}x{c.image.shape[0]} over {c.background_name} ({KIND})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
