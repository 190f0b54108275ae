"""The weights file format: save, load and validate; where the shipped weights live.

A weights file is a ``torch.save`` of plain tensors and values only (so it loads with
``weights_only=True``, without unpickling code): a format tag and version, the
architecture record (:class:`~.config.HDMattConfig`), the state dict and a training
record (``meta``).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .config import HDMattConfig
from .network import HDMattNet

__all__ = [
    "DEFAULT_WEIGHTS",
    "WEIGHTS_FORMAT",
    "WEIGHTS_VERSION",
    "WeightsError",
    "load_weights",
    "save_weights",
]

WEIGHTS_FORMAT = "napari-hrmatt/hdmatt-weights"
WEIGHTS_VERSION = 1
#: The weights trained by us, shipped as package data (``models/weights/hdmatt.pt``).
DEFAULT_WEIGHTS = Path(__file__).parent.parent / "weights" / "hdmatt.pt"


class WeightsError(ValueError):
    """A weights file that is not an HDMatt weights file or does not fit the network."""


def save_weights(net: HDMattNet, path, *, meta: dict | None = None) -> Path:
    """Write a weights file that :func:`load_weights` reads with ``weights_only=True``.

    The file holds only tensors and plain Python values: the format tag, the
    architecture (:meth:`HDMattConfig.to_dict`), the state dict and ``meta`` (training
    record: steps, data, validation errors...).

    Parameters
    ----------
    net : HDMattNet
    path : str or Path
    meta : dict, optional
        JSON-like values only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "arch": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_weights(path, *, map_location="cpu") -> tuple[HDMattNet, dict]:
    """Load a network from a weights file written by :func:`save_weights`.

    Parameters
    ----------
    path : str or Path
    map_location : str or torch.device

    Returns
    -------
    net : HDMattNet
        In eval mode, on ``map_location``.
    meta : dict

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    WeightsError
        Not an HDMatt weights file, unsafe to unpickle, or not matching its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no HDMatt weights file at {path}; train one with `hrmatt train` and export it "
            "(see docs/deep_model.md), then pass weights=PATH"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path} could not be read as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); is it a training checkpoint "
            "or another program's file? Export weights with `hrmatt train --export`"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{path} is not an HDMatt weights file (expected format {WEIGHTS_FORMAT!r}); "
            "export one from a training run with `hrmatt train --out RUN --export FILE`"
        )
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(
            f"{path} has weights format version {payload.get('version')}, this napari-hrmatt "
            f"reads version {WEIGHTS_VERSION}"
        )
    try:
        net = HDMattNet(HDMattConfig.from_dict(payload["arch"]))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: invalid architecture record: {exc}") from exc
    state = payload["state_dict"]
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{path} does not match its architecture: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {shapes[:5]} (first 5 of each shown)"
        )
    net.load_state_dict(state)
    return net.to(map_location).eval(), payload.get("meta", {})
