"""Small synthetic data and checks shared by the tests/test_io_*.py files."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

RNG = np.random.default_rng(7)


def _alpha(shape=(83, 121), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _quantized(x: np.ndarray, dtype) -> np.ndarray:
    return np.rint(x * np.iinfo(dtype).max).astype(dtype)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _failing(shape=(90, 100), chunks=30, bad_block=(1, 2), exc=None):
    """A float dask array whose block ``bad_block`` raises ``exc`` when computed."""
    exc = RuntimeError("boom") if exc is None else exc

    def block(x, block_info=None):
        if tuple(block_info[0]["chunk-location"]) == bad_block:
            raise exc
        return x

    return da.zeros(shape, np.float32, chunks=chunks).map_blocks(block, dtype=np.float32)
