"""The napari Run button's job, without Qt: one image/trimap pair -> result layers.

:class:`MattingJob` runs the steps of :mod:`napari_hrmatt.pipeline` (the same steps as
``hrmatt cutout``) interactively: it yields :class:`~napari_hrmatt.pipeline.Progress`
after the global pass and after every block, so the widget's thread worker can cancel
between blocks, and returns LayerDataTuples (:mod:`napari_hrmatt._layers`).

Memory model: layer data is never turned into one big numpy array. Image and trimap
layers are wrapped with :func:`napari_hrmatt._layers.as_dask` (a view, no copy); the
alpha is computed block by block into a :class:`~napari_hrmatt.pipeline.ResultStore`
(numpy up to :data:`~napari_hrmatt.pipeline.IN_MEMORY_PIXELS`, else a temporary Zarr
pyramid that napari shows lazily), and the colour outputs read that stored alpha.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import pipeline
from ._layers import Geometry, alpha_layer, as_dask, composite_layer, cutout_layer
from .models import DEFAULT_MODEL
from .pipeline import Progress, Run, colour_outputs, to_uint8

__all__ = ["Failure", "JobError", "MattingJob", "Progress"]


class JobError(Exception):
    """An unexpected error inside a :class:`MattingJob` (not bad input)."""


@dataclass
class Failure:
    """A run that stopped on bad input; ``message`` is shown to the user."""

    message: str


@dataclass
class MattingJob:
    """Matting of one image/trimap pair, run step by step (e.g. in a napari thread worker).

    Call :meth:`steps` and iterate it: it yields :class:`Progress` after the global
    pass and after every computed block (so a caller can cancel between blocks),
    and returns a list of LayerDataTuples, or a :class:`Failure` for bad input.
    If the iteration is abandoned, call :meth:`discard` to free the partial result.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array-like
        Image layer data (numpy, dask, zarr); wrapped lazily, never copied whole.
    trimap : (H, W) array-like
        Trimap layer data.
    labels : bool
        True for a label trimap (0 unknown, 1 background, 2 foreground), False
        for a grey one (0 / 128 / 255).
    name : str
        Base name of the output layers.
    geometry : Geometry
        Scale/translate of the outputs (the source image's, shifted for a crop).
    model, device, chunks, overlap, global_size, model_options
        Passed to :func:`napari_hrmatt.estimate_alpha` (``overlap=None`` lets the
        model choose).
    cutout : bool
        Also compute foreground colours and add an RGBA cutout layer.
    background : (3,) tuple of float in [0, 1], optional
        Colour for a composite preview layer (foreground over this colour).
    batch : int, optional
        Blocks computed at a time (default: one per CPU core).
    in_memory_pixels : int, optional
        See :class:`napari_hrmatt.pipeline.ResultStore`.
    preview : bool
        A quick look instead of a run: the global pass alone at ``global_size``
        (:func:`napari_hrmatt.pipeline.preview_alpha`), full resolution only where the
        image fits it; the layers get the coarser geometry and ``info["factor"]``.
    store : path, optional
        A run store (:mod:`napari_hrmatt.runstore`) the alpha is computed into and kept
        in. Give the same path to the next job on the same image and trimap: only the
        blocks an edit changed are computed again (progress counts only those). A
        store from other settings (chunk size, model, a cropped view) is recomputed.
        The caller owns it: :meth:`discard` leaves it in place.
    info : dict, optional
        What makes this run (image and trimap names, settings), kept in the output
        layers' ``metadata["napari_hrmatt_run"]``.
    """

    image: Any
    trimap: Any
    labels: bool
    name: str
    geometry: Geometry = field(default_factory=Geometry)
    model: str = DEFAULT_MODEL
    device: str = "auto"
    chunks: int = 512
    overlap: int | None = None
    global_size: int = 1_000_000
    model_options: dict | None = None
    cutout: bool = False
    background: tuple[float, float, float] | None = None
    batch: int | None = None
    in_memory_pixels: int | None = None
    preview: bool = False
    store: Any = None
    info: dict | None = None
    #: what the run store did (:class:`napari_hrmatt.runstore.RunReport`), with ``store``
    report: Any = field(default=None, init=False, repr=False)
    _run: Run | None = field(default=None, init=False, repr=False)
    _inner: Iterator | None = field(default=None, init=False, repr=False)

    @property
    def plan(self) -> list[str]:
        """The steps this job will go through, in order (``Progress.description``)."""
        return (
            (["global pass"] if self.preview else ["global pass", "alpha"])
            + (["cutout"] if self.cutout else [])
            + (["composite"] if self.background is not None else [])
        )

    def steps(self) -> Iterator[Progress]:
        """Run the job; yields :class:`Progress`, returns layers or a :class:`Failure`."""
        self._inner = inner = self._steps()
        try:
            return (yield from inner)
        except (ValueError, OSError) as exc:
            # Bad input (TrimapError is a ValueError) or an unreadable/unwritable
            # file: a message for the user, not a traceback.
            self.discard()
            return Failure(str(exc))
        except RuntimeError as exc:
            # superqt's generator worker swallows a RuntimeError (it takes it for
            # a deleted Qt object) and never reports "finished"; re-raise it as a
            # JobError so napari shows it and the widget resets.
            self.discard()
            raise JobError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.discard()
            raise

    def _steps(self) -> Iterator[Progress]:
        from .models import resolve_device

        try:
            resolve_device(self.device)
        except RuntimeError as exc:  # CUDA asked for but not available
            raise ValueError(str(exc)) from None

        self._run = run = Run(
            interactive=True,
            pyramid=True,
            batch=self.batch,
            in_memory_pixels=self.in_memory_pixels,
        )
        image = as_dask(self.image, self.chunks)
        trimap = as_dask(self.trimap, self.chunks)
        engine = {
            "model": self.model,
            "chunks": self.chunks,
            "overlap": self.overlap,
            "global_size": self.global_size,
            "device": self.device,
            "labels": self.labels,
            "model_options": self.model_options,
        }
        geometry, info = self.geometry, self.info
        if self.preview:
            settings = {k: engine[k] for k in ("model", "global_size", "device", "labels")}
            settings["model_options"] = engine["model_options"]
            alpha, small, f = yield from run.preview(image, trimap, **settings)
            results = {"alpha": alpha}
            image, finest = as_dask(small, self.chunks), as_dask(alpha, self.chunks)
            geometry = geometry.coarser(f)
            info = {**(info or {}), "factor": f}
        elif self.store is None:
            alpha = yield from run.alpha(image, trimap, **engine)
            results = {"alpha": alpha.data()}
            finest = alpha.finest(self.chunks)
        else:
            from .runstore import SettingsMismatch, open_run, run_steps

            batch = self.batch or os.cpu_count() or 1
            try:
                self.report = yield from run_steps(
                    image, trimap, self.store, batch=batch, **engine
                )
            except SettingsMismatch:  # a cache for the widget: recompute, never refuse
                self.report = yield from run_steps(
                    image, trimap, self.store, batch=batch, force=True, **engine
                )
            levels = open_run(self.store)
            # Multiscale only where the pipeline's own results would be (larger images).
            small = max(levels[0].shape) <= pipeline.PYRAMID_MAX_SIDE
            results = {"alpha": levels[0] if small or len(levels) == 1 else levels}
            finest = levels[0]
        if self.cutout or self.background is not None:
            # Foreground colours read the alpha just stored (never recompute it).
            background = None
            if self.background is not None:
                background = np.asarray(self.background, np.float32)
            outputs = colour_outputs(
                image,
                finest,
                cutout=self.cutout,
                background=background,
            )
            for key, arr in outputs.items():
                store = yield from run.store(key, to_uint8(arr), np.uint8)
                results[key] = store.data()

        g = geometry
        layers = [alpha_layer(results["alpha"], name=f"{self.name} alpha", geometry=g, run=info)]
        if "cutout" in results:
            layers.append(
                cutout_layer(results["cutout"], name=f"{self.name} cutout", geometry=g, run=info)
            )
        if "composite" in results:
            name = f"{self.name} composite"
            layers.append(composite_layer(results["composite"], name=name, geometry=g, run=info))
        run.stores.clear()  # the layers own the results now
        return layers

    def discard(self) -> None:
        """Delete partial results (after a cancel or an error).

        A run store is kept (its finished blocks are the next run's head start), but a
        cancelled run lets go of it now: closing the stopped steps releases its lock.
        """
        inner, self._inner = self._inner, None
        if inner is not None:
            with contextlib.suppress(ValueError):  # still executing: it ends by itself
                inner.close()
        if self._run is not None:
            self._run.discard()
