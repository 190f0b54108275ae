"""Model registry: every matting model plugs into the same global-pass / patch-pass engine.

A model is a class with this interface (see :class:`MattingModel`)::

    name: str
    global_alpha(image, trimap) -> alpha       # the whole low-resolution problem, once
    refine(image, trimap, coarse, fixed_border) -> alpha   # one full-resolution block
    overlap(factor) -> int                     # block overlap the model needs, in pixels

Models are created by name with :func:`get_model`, which caches one instance per
``(name, device)`` in each process (so a dask worker loads a model once).
"""

from __future__ import annotations

import functools
import importlib
from typing import Protocol

import numpy as np

from .._default_model import DEFAULT_MODEL

__all__ = [
    "DEFAULT_MODEL",
    "MattingModel",
    "get_model",
    "list_models",
    "model_options",
    "parse_options",
    "register_model",
    "resolve_device",
]

# name -> "module:Class", imported on first use so the registry never imports torch eagerly.
_REGISTRY: dict[str, str] = {
    "cf": "napari_hrmatt.models.closed_form:ClosedFormModel",
    # Trained by us on CPU (docs/deep_model.md). An option, not the default: better than
    # "cf" on the held-out lowres photos, worse on held-out high-resolution composites.
    "hdmatt": "napari_hrmatt.models.hdmatt:HDMattModel",
    # Information-flow matting (Aksoy et al. 2017), docs/ifm.md: the default
    # (DEFAULT_MODEL), see there for the bars it is measured against.
    "ifm": "napari_hrmatt.models.ifm:InformationFlowModel",
}


class MattingModel(Protocol):
    """What the engine needs from a model."""

    name: str

    def global_alpha(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """Solve a whole (downsampled) image; ``image`` (H, W, C) float32, ``trimap`` uint8."""

    def refine(
        self,
        image: np.ndarray,
        trimap: np.ndarray,
        coarse: np.ndarray,
        fixed_border: tuple[bool, bool, bool, bool],
    ) -> np.ndarray:
        """Solve one full-resolution block given the upsampled global alpha ``coarse``.

        ``fixed_border`` says which sides (top, bottom, left, right) of the block are
        interior cuts of a larger image rather than the image border.
        """

    def overlap(self, factor: int) -> int:
        """Overlap (pixels) a block needs for seam-free stitching at downsampling ``factor``."""

    # Optional: ``context_extras(small_image, small_trimap, small_alpha) -> dict`` builds
    # model-specific context once in the global pass (kept in ``GlobalContext.extras``);
    # a model with ``uses_context = True`` then receives ``context=`` and ``origin=`` in
    # ``refine``.


def register_model(name: str, target: str) -> None:
    """Register a model class under ``name``; ``target`` is ``"package.module:Class"``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:Class', got {target!r}")
    _REGISTRY[name] = target
    get_model.cache_clear()


def list_models() -> list[str]:
    """Names accepted by :func:`get_model` (and ``model=`` everywhere)."""
    return sorted(_REGISTRY)


def resolve_device(device: str | None = "auto") -> str:
    """Turn ``"auto"`` into ``"cuda"`` when a CUDA device is usable, else ``"cpu"``."""
    import torch

    device = "auto" if device is None else str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was asked for but torch sees no CUDA device; "
            "use device='cpu' or 'auto'"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def parse_options(items) -> dict:
    """``["weights=a.pt", "tol=1e-4"]`` -> ``{"weights": "a.pt", "tol": 0.0001}``.

    Values that read as integers or floats become numbers; the rest stay strings.
    A ``ValueError`` names an item that is not ``key=value``.
    """
    options: dict = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise ValueError(f"model option {item!r} is not key=value")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        options[key.strip()] = value
    return options


def _model_class(name: str):
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def model_options(name: str) -> list[str]:
    """Names of the options ``get_model(name, ..., **options)`` accepts (sorted)."""
    import inspect

    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    params = inspect.signature(_model_class(name).__init__).parameters.values()
    return sorted(
        p.name
        for p in params
        if p.name not in ("self", "device") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _takes_any_option(name: str) -> bool:
    import inspect

    params = inspect.signature(_model_class(name).__init__).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


@functools.lru_cache(maxsize=8)
def _load(name: str, device: str, options: tuple) -> MattingModel:
    # Checked here, once per (model, device, options): get_model runs once per block.
    bad = sorted(set(dict(options)) - set(model_options(name)))
    if bad and not _takes_any_option(name):
        raise ValueError(
            f"model {name!r} has no option(s) {bad}; its options: {model_options(name)}"
        )
    return _model_class(name)(device=device, **dict(options))


def get_model(name: str = DEFAULT_MODEL, device: str = "auto", **options) -> MattingModel:
    """Create (or fetch from the per-process cache) the model called ``name``.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Where the model computes; ``"auto"`` picks CUDA when available.
    **options
        Model-specific settings (hashable values), e.g. ``eps``/``radius`` for ``"cf"``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    return _load(name, resolve_device(device), tuple(sorted(options.items())))


get_model.cache_clear = _load.cache_clear  # type: ignore[attr-defined]
