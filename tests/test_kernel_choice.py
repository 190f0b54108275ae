"""HRMATT_KERNELS chooses the CPU kernels: numba (default) or torch for everything."""

import os
import subprocess
import sys

import pytest

from napari_hrmatt._kernel_choice import numba_wanted

_SCRIPT = """
import sys
import numpy as np
from napari_hrmatt import _foreground_solver
from napari_hrmatt.foreground import estimate_foreground
from napari_hrmatt.models import _knn, _stencil
from napari_hrmatt.models.closed_form import ClosedFormModel

print(_foreground_solver.KERNEL, _stencil.USE_NUMBA, _knn.BACKEND)
rng = np.random.default_rng(0)
image = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
trimap = np.zeros((40, 48), np.uint8)
trimap[:, 24:] = 255
trimap[:, 18:30] = 128
alpha = ClosedFormModel().global_alpha(image, trimap)
np.asarray(estimate_foreground(image, alpha))
print("numba" in sys.modules)
"""


def _run(value):
    env = {**os.environ, "HRMATT_KERNELS": value, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=False
    )


def test_torch_kernels_never_import_numba():
    proc = _run("torch")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["torch", "False", "torch", "False"]


def test_default_uses_numba():
    proc = _run("")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["numba", "True", "auto", "True"]


def test_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HRMATT_KERNELS", "cuda")
    with pytest.raises(ValueError, match="HRMATT_KERNELS must be 'numba' or 'torch'"):
        numba_wanted()
