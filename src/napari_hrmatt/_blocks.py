"""Block geometry and block-level plumbing shared by every block engine.

The alpha patch pass, the foreground fine pass and the napari job all cut an image into
the same kind of grid: chunks of ``size`` pixels, each grown by a margin on its interior
sides, solved, and trimmed back. This module holds that geometry once
(:class:`BlockGrid`), plus the pieces around it: torch threads per dask worker
(:func:`share_cores`), a progress callback over output blocks (:class:`BlockProgress`)
and batched block iteration for interactive use (:func:`iter_blocks`).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import dask
import numpy as np
from dask.callbacks import Callback

__all__ = ["BlockGrid", "BlockProgress", "chunk_sizes", "cut_ring", "iter_blocks", "share_cores"]


def chunk_sizes(n: int, size: int, minimum: int) -> tuple[int, ...]:
    """Split ``n`` into chunks of ``size``; a last chunk smaller than ``minimum`` is merged.

    ``map_overlap`` needs every chunk at least as large as the overlap it lends.
    """
    size = max(size, minimum, 1)
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) > 1 and sizes[-1] < minimum:
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes) or (n,)


@dataclass(frozen=True)
class BlockGrid:
    """Chunks of a 2-D image and the margin each block is grown by on its interior sides.

    Attributes
    ----------
    chunks : (rows, cols)
        Chunk sizes along each axis (dask's ``chunks`` convention).
    margins : (int, int)
        Overlap per axis; 0 along an axis cut into a single chunk (no seam to hide, and
        the image may be thinner than the overlap there).
    """

    chunks: tuple[tuple[int, ...], tuple[int, ...]]
    margins: tuple[int, int]

    @classmethod
    def plan(cls, shape, size: int, depth: int, minimum: int | None = None) -> BlockGrid:
        """Chunks of ``size`` over ``shape[:2]``, grown by ``depth``.

        ``minimum`` (default ``depth``) is the smallest chunk allowed; a smaller last
        chunk is merged into its neighbour.
        """
        minimum = depth if minimum is None else minimum
        chunks = tuple(chunk_sizes(int(n), int(size), int(minimum)) for n in shape[:2])
        margins = tuple(int(depth) if len(c) > 1 else 0 for c in chunks)
        return cls(chunks, margins)  # type: ignore[arg-type]

    @property
    def starts(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """First row (column) of every chunk."""
        return tuple(tuple(int(s) for s in np.cumsum((0,) + c[:-1])) for c in self.chunks)

    @property
    def shape(self) -> tuple[int, int]:
        return sum(self.chunks[0]), sum(self.chunks[1])

    def depth(self, extra_axes: int = 1) -> dict[int, int]:
        """``depth`` argument of ``map_overlap``/``overlap`` (0 on trailing axes)."""
        return {0: self.margins[0], 1: self.margins[1], **{2 + k: 0 for k in range(extra_axes)}}

    def locate(self, i: int, j: int) -> tuple[tuple[int, int], tuple[slice, slice]]:
        """Where grown block ``(i, j)`` starts in the image, and its core inside it.

        Returns ``origin`` (full-resolution row, column of the grown block's first pixel)
        and ``keep`` (slices of the grown block that are the chunk itself).
        """
        top = self.margins[0] if i > 0 else 0
        left = self.margins[1] if j > 0 else 0
        y, x = self.starts[0][i], self.starts[1][j]
        keep = (
            slice(top, top + self.chunks[0][i]),
            slice(left, left + self.chunks[1][j]),
        )
        return (y - top, x - left), keep

    def locate_info(self, block_info) -> tuple[tuple[int, int], tuple[slice, slice]]:
        """:meth:`locate` for the block a ``map_blocks`` task receives (``block_info``)."""
        i, j = block_info[None]["chunk-location"][:2]
        return self.locate(i, j)

    def core(self, i: int, j: int) -> tuple[slice, slice]:
        """Image region of chunk ``(i, j)`` itself."""
        y, x = self.starts[0][i], self.starts[1][j]
        return slice(y, y + self.chunks[0][i]), slice(x, x + self.chunks[1][j])

    def grown(self, i: int, j: int) -> tuple[slice, slice]:
        """Image region of grown block ``(i, j)`` (the chunk plus its margins)."""
        (y0, x0), _ = self.locate(i, j)
        h, w = self.shape
        y1 = min(h, self.starts[0][i] + self.chunks[0][i] + self.margins[0])
        x1 = min(w, self.starts[1][j] + self.chunks[1][j] + self.margins[1])
        return slice(y0, y1), slice(x0, x1)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Block indices ``(i, j)`` in row-major order."""
        return itertools.product(range(len(self.chunks[0])), range(len(self.chunks[1])))


def cut_ring(shape: tuple[int, ...], sides) -> np.ndarray:
    """Boolean ``(H, W)`` mask of a block's outermost pixels on the cut ``sides``.

    ``sides`` is ``(top, bottom, left, right)``: True where the block was cut from a larger
    image (a model pins its unknown pixels there to the global alpha), False at the
    image's own edges.
    """
    top, bottom, left, right = sides
    ring = np.zeros(shape[:2], bool)
    ring[0, :] |= bool(top)
    ring[-1, :] |= bool(bottom)
    ring[:, 0] |= bool(left)
    ring[:, -1] |= bool(right)
    return ring


def share_cores() -> None:
    """Give this worker thread ``cores // dask workers`` torch threads (1 by default).

    dask already runs one block per core; letting each block's torch ops spawn a thread
    per core as well oversubscribes the CPU, and OpenMP's spinning threads then cost far
    more than they give (docs/engine.md, "Threads"). OpenMP thread counts are per calling
    thread, so the main thread (the global pass) keeps all cores.
    """
    if threading.current_thread() is threading.main_thread():
        return
    import torch
    from dask.system import CPU_COUNT  # respects CPU affinity and cgroup limits

    workers = dask.config.get("num_workers", None) or CPU_COUNT
    threads = max(1, CPU_COUNT // int(workers))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class BlockProgress(Callback):
    """A tqdm bar (stderr) over the output blocks of ``array`` while dask computes it.

    Use as a context manager around ``compute``/``store`` of a graph that contains
    ``array``. ``callback(done, total)`` is called after every finished block too.
    """

    def __init__(self, array, *, enabled: bool = True, callback=None, desc="blocks"):
        super().__init__()
        self._name = array.name
        self._total = array.npartitions
        self._enabled = enabled
        self._on_block = callback
        self._desc = desc
        self._bar = None
        self.done = 0

    def _start(self, dsk):
        if self._enabled and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total, desc=self._desc, unit="block", leave=True)

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(key, tuple) and key and key[0] == self._name:
            self.done += 1
            if self._bar is not None:
                self._bar.update(1)
            if self._on_block is not None:
                self._on_block(self.done, self._total)

    def __exit__(self, exc_type, *args):
        if self._bar is not None:
            if exc_type is None:
                # a single-block array is fused into dask's final task: count it here
                self._bar.update(self._total - self._bar.n)
            self._bar.close()
            self._bar = None
        return super().__exit__(exc_type, *args)


def iter_blocks(array, *, batch: int | None = None) -> Iterator:
    """Compute a dask array a few blocks at a time, in row-major order.

    Parameters
    ----------
    array : dask array
    batch : int, optional
        Blocks computed together (in parallel); default: the number of CPU cores.

    Yields
    ------
    slices : tuple of slice
        Where the block sits in ``array``.
    block : numpy array

    Notes
    -----
    Between batches the caller may stop (cancel) or write the blocks somewhere; memory
    holds one batch. Overlapping inputs are re-read for each batch, so this is meant for
    interactive use and progress; :func:`dask.array.store` is cheaper in bulk.
    """
    batch = batch or os.cpu_count() or 1
    bounds = [np.cumsum((0,) + c) for c in array.chunks]
    indices = itertools.product(*(range(len(c)) for c in array.chunks))
    while True:
        group = list(itertools.islice(indices, batch))
        if not group:
            return
        blocks = dask.compute(*(array.blocks[idx] for idx in group))
        for idx, block in zip(group, blocks, strict=True):
            slices = tuple(
                slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, idx, strict=True)
            )
            yield slices, block
