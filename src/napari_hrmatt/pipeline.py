"""The steps of a run, shared by ``hrmatt cutout`` and the napari job.

alpha (computed by the engine, or given) -> stored once -> foreground colours ->
cut-out / composite. The alpha is read twice by the foreground pass (its global pass
and its blocks), so it is computed once into a :class:`ResultStore` — numpy up to
:data:`IN_MEMORY_PIXELS` pixels, a temporary Zarr store above that — and never
recomputed.

Every step is a generator that yields :class:`Progress` and returns its result, so the
same code runs under a progress bar in the terminal (:func:`drive`) and in a napari
thread worker, which may stop between blocks (cancel).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .models import DEFAULT_MODEL

__all__ = [
    "IN_MEMORY_PIXELS",
    "Progress",
    "ResultStore",
    "Run",
    "colour_outputs",
    "drive",
    "to_uint8",
]

# Results with more pixels than this (about 67 MP, 256 MiB of float32 alpha) go to a
# temporary Zarr store instead of a numpy array.
IN_MEMORY_PIXELS = 64 * 2**20

# Pyramid levels are added until both sides fit in this many pixels (a typical OpenGL
# texture limit is 4096-16384; 2048 keeps the coarsest level cheap to draw).
PYRAMID_MAX_SIDE = 2048

_TEMP_DIRS: list[Path] = []


@atexit.register
def _remove_temp_dirs() -> None:  # pragma: no cover - runs at interpreter exit
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Progress:
    """One step of a run: ``done`` of ``total`` blocks, and what is being computed.

    ``step`` is ``(done, total)`` within the current step (``description``: "alpha",
    "cutout", ...), None while a step has no blocks to count (the global pass).
    """

    done: int
    total: int
    description: str
    step: tuple[int, int] | None = None


class ResultStore:
    """Destination of a block-by-block computation: numpy, or a temporary Zarr store.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    dtype : numpy dtype
    chunks : (2,) tuple of int
        Row/column block size of the computation (the Zarr chunk size).
    in_memory_pixels : int, optional
        Results with at most this many pixels (``H * W``) are kept in numpy;
        default :data:`IN_MEMORY_PIXELS`.
    directory : path, optional
        Where the temporary Zarr store is made (default :func:`tempfile.gettempdir`,
        i.e. ``TMPDIR``).

    Notes
    -----
    A Zarr store is deleted by :meth:`discard` or when Python exits.
    """

    def __init__(
        self,
        shape: Sequence[int],
        dtype,
        chunks: Sequence[int],
        *,
        in_memory_pixels: int | None = None,
        directory=None,
    ) -> None:
        limit = IN_MEMORY_PIXELS if in_memory_pixels is None else in_memory_pixels
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path: Path | None = None
        if self.shape[0] * self.shape[1] <= limit:
            self._array = np.zeros(self.shape, self.dtype)
            return
        import zarr

        self.path = Path(tempfile.mkdtemp(prefix="napari-hrmatt-", suffix=".zarr", dir=directory))
        _TEMP_DIRS.append(self.path)
        self._group = zarr.open_group(str(self.path), mode="w")
        zchunks = tuple(int(c) for c in chunks[:2]) + self.shape[2:]
        self._array = self._group.create_array(
            "0", shape=self.shape, chunks=zchunks, dtype=self.dtype, fill_value=0
        )

    @property
    def array(self):
        """The finest level as a writable array: numpy, or the Zarr array."""
        return self._array

    @property
    def in_memory(self) -> bool:
        """True when the result is a numpy array."""
        return self.path is None

    def __setitem__(self, index, block: np.ndarray) -> None:
        self._array[index] = block

    def pyramid_steps(self) -> Iterator[int]:
        """Build the pyramid levels of a Zarr store, yielding after each level.

        The levels come from :func:`napari_hrmatt.io.ome.build_pyramid` (the one
        pyramid builder, also behind saved OME-Zarr files): 2 x 2 means computed block
        by block from the stored level, odd edges rounded up. Nothing happens for an
        in-memory store.
        """
        if self.in_memory:
            return
        from .io.ome import build_pyramid

        channel_axis = 2 if len(self.shape) == 3 else None
        yield from build_pyramid(self._group, channel_axis=channel_axis, max_side=PYRAMID_MAX_SIDE)

    def data(self):
        """The result: a numpy array, or a list of lazy dask levels (finest first)."""
        if self.in_memory:
            return self._array
        import dask.array as da

        levels = sorted(int(k) for k in self._group.array_keys())
        return [da.from_zarr(self._group[str(k)]) for k in levels]

    def finest(self, chunks: int):
        """The finest level as a lazy dask array (blocks of ``chunks``)."""
        import dask.array as da

        if self.in_memory:
            return da.from_array(self._array, chunks=(chunks, chunks) + self.shape[2:])
        return da.from_zarr(self._array)

    def discard(self) -> None:
        """Free the memory or delete the temporary Zarr store."""
        self._array = None
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class Run:
    """Block counting and result stores of one run (alpha, then colour outputs).

    Parameters
    ----------
    interactive : bool
        Compute a few blocks at a time and yield after each block (so a GUI can
        cancel between blocks); otherwise hand each array to dask in one go (faster,
        full parallelism) and yield once it is stored.
    pyramid : bool
        Give Zarr-backed results a multiscale pyramid (for display).
    progress_bar : bool
        Show a tqdm bar on stderr per stored array (not interactive runs).
    batch, in_memory_pixels, directory
        See :func:`napari_hrmatt._blocks.iter_blocks` and :class:`ResultStore`.
    """

    interactive: bool = False
    pyramid: bool = False
    progress_bar: bool = False
    batch: int | None = None
    in_memory_pixels: int | None = None
    directory: str | Path | None = None
    stores: list[ResultStore] = field(default_factory=list)
    done: int = 0
    total: int = 0

    def store(self, key: str, arr, dtype) -> Generator[Progress, None, ResultStore]:
        """Compute the lazy array ``arr`` into a new :class:`ResultStore`."""
        import dask.array as da

        from ._blocks import BlockProgress, iter_blocks

        # Channels in one block: a block is then exactly one chunk of the store.
        arr = arr.rechunk(dict.fromkeys(range(2, arr.ndim), -1))
        blocks = arr.npartitions
        self.total += blocks
        store = ResultStore(
            arr.shape,
            dtype,
            arr.chunksize,
            in_memory_pixels=self.in_memory_pixels,
            directory=self.directory,
        )
        self.stores.append(store)
        if self.interactive:
            for n, (index, block) in enumerate(iter_blocks(arr, batch=self.batch), 1):
                store[index] = block
                self.done += 1
                yield Progress(self.done, self.total, key, (n, blocks))
        else:
            if not store.in_memory:
                # One dask block per Zarr chunk, so parallel writers never share a chunk.
                arr = arr.rechunk(store.array.chunks)
            with BlockProgress(arr, enabled=self.progress_bar, desc=key):
                da.store(arr, store.array, lock=False)
            self.done += blocks
            yield Progress(self.done, self.total, key, (blocks, blocks))
        if self.pyramid:
            for _ in store.pyramid_steps():
                yield Progress(self.done, self.total, f"{key}: pyramid", (blocks, blocks))
        return store

    def alpha(self, image, trimap, **engine) -> Generator[Progress, None, ResultStore]:
        """Global pass, then the alpha blocks into a store (``engine``: estimate_alpha's)."""
        from .engine import estimate_alpha

        yield Progress(self.done, self.total, "global pass")
        if self.interactive:
            # The global pass runs eagerly inside estimate_alpha: run it in a helper
            # thread and yield while it works, so a GUI shows it and can cancel.
            alpha = yield from self._waiting(
                lambda: estimate_alpha(image, trimap, compute=False, **engine), "global pass"
            )
        else:
            alpha = estimate_alpha(image, trimap, compute=False, **engine)
        return (yield from self.store("alpha", alpha, np.float32))

    def preview(self, image, trimap, **settings) -> Generator[Progress, None, tuple]:
        """:func:`preview_alpha` as a step (in a helper thread when interactive)."""
        yield Progress(self.done, self.total, "global pass")
        if self.interactive:
            return (yield from self._waiting(lambda: preview_alpha(image, trimap, **settings),
                                             "global pass"))  # fmt: skip
        return preview_alpha(image, trimap, **settings)

    def _waiting(self, fn, description: str, poll: float = 0.25):
        """Run ``fn()`` in a daemon thread, yielding Progress every ``poll`` seconds.

        If the caller stops iterating (cancel), the thread finishes on its own and its
        result is dropped: a solve in torch cannot be interrupted.
        """
        import threading

        box: dict = {}

        def target():
            try:
                box["value"] = fn()
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"hrmatt {description}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(poll)
            if thread.is_alive():
                yield Progress(self.done, self.total, description)
        if "error" in box:
            raise box.pop("error")
        return box.pop("value")

    def discard(self) -> None:
        """Delete every result (after a cancel or an error)."""
        for store in self.stores:
            store.discard()
        self.stores.clear()


def colour_outputs(image, alpha, *, cutout=False, background=None, **foreground) -> dict:
    """Lazy float outputs from an image and its (stored) alpha.

    Parameters
    ----------
    image, alpha : dask arrays
    cutout : bool
        Add ``"cutout"``: RGBA, estimated foreground colours + alpha.
    background : colour or (H, W[, C]) array, optional
        Add ``"composite"``: the foreground over this background.
    **foreground
        Passed to :func:`napari_hrmatt.estimate_foreground` (``device``, ``chunks``).
    """
    from .compose import composite
    from .compose import cutout as make_cutout
    from .foreground import estimate_foreground

    fg = estimate_foreground(image, alpha, compute=False, **foreground)
    out = {}
    if cutout:
        out["cutout"] = make_cutout(image, alpha, foreground=fg)
    if background is not None:
        out["composite"] = composite(fg, alpha, background)
    return out


def preview_alpha(
    image,
    trimap,
    *,
    global_size: float,
    labels: bool | None = None,
    model=DEFAULT_MODEL,
    model_options: dict | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray, int]:
    """A quick look: the global pass alone, at about ``global_size`` pixels.

    The image and trimap are downsampled by the global pass's integer factor ``f`` and
    solved once, with no patch pass. When they fit ``global_size`` (``f = 1``) that *is*
    the full-resolution solve; otherwise the alpha is the coarse one every block of a full
    run starts from. For a GUI preview of what is on screen.

    Returns
    -------
    alpha : (h, w) float32
        Pixel ``(i, j)`` covers full-resolution pixels ``[i f, (i + 1) f) x [j f, (j + 1) f)``.
    small_image : (h, w, C) float32
        The image at the same resolution (for foreground colours).
    factor : int
        ``f``.
    """
    import dask.array as da

    from .global_pass import downsample_inputs, solve_global
    from .image import image_channels
    from .models import get_model
    from .trimap import canonical_trimap

    # integers stay integers: the global pass sums them exactly, as in estimate_alpha
    img = image_channels(image, stacklevel=3)
    tri = canonical_trimap(trimap, labels=labels)
    if img.shape[:2] != tri.shape:
        raise ValueError(
            f"image is {img.shape[0]}x{img.shape[1]} but trimap is {tri.shape[0]}x"
            f"{tri.shape[1]} (height x width); they must cover the same pixels"
        )
    small_image, fractions, f = downsample_inputs(img, tri, global_size=global_size)
    small_image, fractions = da.compute(small_image, fractions)
    model_obj = (
        get_model(model, device, **(model_options or {})) if isinstance(model, str) else model
    )
    context = solve_global(
        small_image,
        fractions,
        factor=f,
        shape=tri.shape,
        model=model_obj,
        global_size=global_size,
        device=device,
    )
    return context.alpha, np.asarray(small_image, np.float32), f


def to_uint8(arr):
    """Float in [0, 1] -> uint8 (lazily); integer arrays pass through."""
    if np.dtype(arr.dtype).kind == "f":
        return (arr.clip(0, 1) * 255 + 0.5).astype(np.uint8)
    return arr


def drive(steps: Generator, on_progress: Callable[[Progress], None] | None = None):
    """Run a step generator to its end, calling ``on_progress`` on every step; its result."""
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(step)
