"""benchmarks/gpu_check.py without a GPU: one clear message, exit status 0."""

import importlib.util
from pathlib import Path

import pytest

from .conftest import has_cuda

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(has_cuda(), reason="checks the no-GPU path")
def test_gpu_check_without_cuda_says_so(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and "|" not in out  # nothing measured


def test_gpu_check_scene_has_an_unknown_band():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image, trimap, alpha = module.scene(0.05, band=16)
    assert image.shape[:2] == trimap.shape == alpha.shape
    assert abs(image.shape[0] * image.shape[1] - 50_000) < 500
    assert set(map(int, set(trimap.ravel().tolist()))) == {0, 128, 255}
    soft = (alpha > 0) & (alpha < 1)
    assert (trimap[soft] == 128).mean() > 0.95  # the soft edge lies in the band
