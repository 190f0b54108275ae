"""The alphamatting.com training set: its file layout and the fixed DEV / HELDOUT split.

The 27 training images of Rhemann et al. (CVPR 2009) are split once, here, for every
user in the package (``hrmatt bench``, ``hrmatt train``, the benchmarks): GT01-GT18
are the development images (free to tune and train on), GT19-GT27 are held out
(evaluate and report only; training refuses them).

Expected layout (the alphamatting.com zips)::

    DATA_DIR/                     (or DATA_DIR/alphamatting-training/)
      input_training_lowres/GT01.png ...
      gt_training_lowres/GT01.png ...
      gt_training_highres/GT01.png ...         (training's highres source only)
      trimap_training_lowres/Trimap1/GT01.png ...
      trimap_training_lowres/Trimap2/GT01.png ...
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "DEV",
    "HELDOUT",
    "SPLITS",
    "find_dataset",
    "list_samples",
    "load_sample",
    "sample_paths",
    "split_of",
]

DEV = tuple(f"GT{i:02d}" for i in range(1, 19))
HELDOUT = tuple(f"GT{i:02d}" for i in range(19, 28))
SPLITS = {"dev": DEV, "heldout": HELDOUT, "all": DEV + HELDOUT}

INPUT = "input_training_lowres"
GT = "gt_training_lowres"
GT_HIGHRES = "gt_training_highres"
TRIMAP = "trimap_training_lowres"


def find_dataset(data_dir) -> Path:
    """The alphamatting.com training folder inside ``data_dir`` (or ``data_dir`` itself).

    Raises
    ------
    FileNotFoundError
        With a message saying which folders were expected.
    """
    data_dir = Path(data_dir)
    for root in (data_dir, data_dir / "alphamatting-training"):
        if (root / INPUT).is_dir() and (root / GT).is_dir() and (root / TRIMAP).is_dir():
            return root
    raise FileNotFoundError(
        f"no alphamatting.com training data in {data_dir}: expected the folders "
        f"{INPUT}/, {GT}/ and {TRIMAP}/Trimap1|Trimap2/ there or in "
        f"{data_dir / 'alphamatting-training'} (download the lowres training zips from "
        "http://www.alphamatting.com/datasets.php)"
    )


def split_of(name: str) -> str:
    """``"dev"`` for GT01-GT18, ``"heldout"`` otherwise."""
    return "dev" if name in DEV else "heldout"


def sample_paths(root: Path, name: str, trimap: int = 1) -> tuple[Path, Path, Path]:
    """The input, trimap and ground-truth files of one image (lowres) under ``root``."""
    root = Path(root)
    return (
        root / INPUT / f"{name}.png",
        root / TRIMAP / f"Trimap{trimap}" / f"{name}.png",
        root / GT / f"{name}.png",
    )


def list_samples(root: Path, split: str = "all", trimap: int = 1) -> list[str]:
    """Names (``"GT01"``...) of the split whose input, trimap and GT files all exist."""
    return [n for n in SPLITS[split] if all(p.is_file() for p in sample_paths(root, n, trimap))]


def load_sample(root: Path, name: str, trimap: int = 1):
    """Read one image, its trimap and its ground truth.

    Returns
    -------
    image : (H, W, 3) array of uint8
    trimap : (H, W) array of uint8 in {0, 128, 255}
    gt : (H, W) array of uint8
    """
    from PIL import Image

    from .trimap import canonical_trimap

    img_p, tri_p, gt_p = sample_paths(root, name, trimap)
    # Many of these PNGs are palette images: convert, never read raw indices.
    with Image.open(img_p) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(tri_p) as im:
        tri = canonical_trimap(np.asarray(im.convert("L")))
    with Image.open(gt_p) as im:
        gt = np.asarray(im.convert("L"))
    if not (image.shape[:2] == tri.shape == gt.shape):
        raise ValueError(
            f"{name}: input {image.shape[:2]}, trimap {tri.shape} and GT {gt.shape} differ"
        )
    return image, tri, gt
