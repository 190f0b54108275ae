"""Training the HDMatt-style network, reproducibly from a config and a seed.

- :mod:`.config`: :class:`TrainConfig`, the presets, the dev-only image split;
- :mod:`.data`: composites built on the fly (:class:`TrainingSamples`) and generated mattes;
- :mod:`.loss`: HDMatt eq. 4 with the engine's border ramp;
- :mod:`.loop`: :func:`train` (checkpoints, resume, validation, run records) and
  :func:`export_weights`.

The command line is ``hrmatt train`` (:mod:`napari_hrmatt.cli.train`); the recipe and
the recorded runs are in ``docs/deep_model.md``.
"""

from .config import DEV_IMAGES, PRESETS, SOURCES, TrainConfig, make_config
from .data import (
    TrainingSamples,
    degrade_coarse,
    make_trimap,
    procedural_background,
    procedural_matte,
)
from .loop import (
    CHECKPOINT_FORMAT,
    VAL_COARSE_SIZE,
    export_weights,
    train,
    training_step,
    validate,
)
from .loss import border_ramp, matting_loss

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEV_IMAGES",
    "PRESETS",
    "SOURCES",
    "VAL_COARSE_SIZE",
    "TrainConfig",
    "TrainingSamples",
    "border_ramp",
    "degrade_coarse",
    "export_weights",
    "make_config",
    "make_trimap",
    "matting_loss",
    "procedural_background",
    "procedural_matte",
    "train",
    "training_step",
    "validate",
]
