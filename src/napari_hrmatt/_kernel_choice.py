"""Which CPU kernels run: the fused numba kernels (default) or plain torch operations.

The solver's hot loops on the CPU (the closed-form stencil and its preconditioner, the
information-flow searches and products, the foreground sweeps) run as numba kernels; CUDA
always runs the torch operations. ``HRMATT_KERNELS=torch`` in the environment makes the
CPU run the torch operations too: slower, but without numba's one-off compile (a few
seconds on the first run after an install) and useful to tell a numba problem from ours.
Each module keeps its own switch (``_foreground_solver.KERNEL``, ``models._stencil.USE_NUMBA``,
``models._knn.BACKEND``), which tests set directly; this only gives their defaults.
"""

from __future__ import annotations

import os

_CHOICES = ("numba", "torch")


def numba_wanted() -> bool:
    """Whether ``HRMATT_KERNELS`` (unset: ``numba``) asks for the numba kernels on CPU."""
    value = os.environ.get("HRMATT_KERNELS", "numba").strip().lower() or "numba"
    if value not in _CHOICES:
        raise ValueError(
            f"HRMATT_KERNELS must be 'numba' or 'torch', got {value!r}: unset it or pick one"
        )
    return value == "numba"
