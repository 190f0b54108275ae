"""Shared fixtures: small seeded synthetic scenes, generated in code."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny networks run ~20x faster on one thread than
    on two on a loaded machine (use with ``pytest.mark.usefixtures``)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_scene(height=96, width=128, seed=0, band=4):
    """A composite with a wavy soft edge and thin semi-transparent strands.

    Returns ``(image, trimap, alpha)``: float32 (H, W, 3) in [0, 1], canonical uint8
    trimap (0 / 128 / 255) and the true alpha (float64).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    alpha = np.clip((xx - width / 2 - 10 * np.sin(yy / 9)) / 12 + 0.5, 0, 1)
    for k in range(4):
        x0 = rng.uniform(15, width - 15)
        strand = 0.8 * np.exp(-((xx - x0 - 6 * np.sin(yy / 11 + k)) ** 2) / 1.5)
        alpha = np.maximum(alpha, strand)
    fg = np.stack([0.9 + 0 * xx, 0.55 + 0.25 * np.sin(yy / 7), 0.25 + 0 * xx], -1)
    bg = np.stack([0.25 + 0.2 * np.sin(xx / 5) * np.cos(yy / 6), 0.4 + 0 * xx, 0.75 + 0 * xx], -1)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    image = np.clip(image + rng.normal(0, 0.01, image.shape), 0, 1).astype(np.float32)
    unknown = ndi.binary_dilation((alpha > 0.02) & (alpha < 0.98), iterations=band)
    trimap = np.where(unknown, 128, np.where(alpha > 0.5, 255, 0)).astype(np.uint8)
    return image, trimap, alpha


@pytest.fixture(scope="session")
def scene():
    return make_scene()


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()
