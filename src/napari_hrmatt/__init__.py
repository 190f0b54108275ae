"""napari-hrmatt: alpha matting for images too large for memory.

The scripting API. Importing this package imports neither torch, napari nor Qt:
every name below is loaded on first use.

Examples
--------
>>> import numpy as np
>>> from napari_hrmatt import estimate_alpha
>>> image = np.zeros((32, 32, 3), np.float32)
>>> trimap = np.full((32, 32), 128, np.uint8); trimap[:, :4] = 0; trimap[:, -4:] = 255
>>> alpha = estimate_alpha(image, trimap)
>>> alpha.shape, alpha.dtype
((32, 32), dtype('float32'))
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, PEP 562)
_EXPORTS = {
    "estimate_alpha": "engine",
    "global_pass": "global_pass",
    "GlobalContext": "global_pass",
    "refine": "patch_pass",
    "refine_block": "patch_pass",
    "get_model": "models",
    "list_models": "models",
    "register_model": "models",
    "open_image": "io",
    "open_trimap": "io",
    "save_alpha": "io",
    "save_image": "io",
    "canonical_trimap": "trimap",
    "labels_to_trimap": "trimap",
    "trimap_to_labels": "trimap",
    "trimap_from_mask": "trimap",
    "TrimapError": "trimap",
    "make_sample": "sample",
    "estimate_foreground": "foreground",
    "cutout": "compose",
    "composite": "compose",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'napari_hrmatt' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
