"""The benchmark scripts' model arguments (issue #11's HR checks run them with ifm)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from tests.conftest import make_scene

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(_DIR))  # the scripts import their siblings (composites, _harness)
    try:
        spec = importlib.util.spec_from_file_location(f"hrmatt_bench_{name}", _DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(_DIR))


def test_hdmatt_experiment_runs_the_model_it_is_given():
    """(c) and (d) with ifm on an image smaller than ifm's overlap (the scripts' warm-up
    case), and cf and ifm give different mattes, so the argument reaches the solver."""
    exp = _load("bench_hdmatt_experiment")
    image, trimap, _ = make_scene(height=48, width=56, seed=0)
    kw = {"global_size": 1e6, "chunks": 32, "options": {}}
    out = {}
    for model in ("cf", "ifm"):
        for variant in ("patches", "ours"):
            alpha = exp.RUNNERS[variant](image, trimap, model=model, **kw)
            assert alpha.shape == trimap.shape and np.isfinite(alpha).all()
            out[model, variant] = alpha
    assert np.abs(out["cf", "ours"] - out["ifm", "ours"]).max() > 1e-3


def test_cost_table_ratios_against_cf():
    hr = _load("bench_models_hr")
    base = {"image": "GT04", "width": 10, "height": 10, "status": "ok", "unknown_px": 500_000}
    rows = [
        dict(base, method="hrmatt-cf", cpu_s=2.0),
        dict(base, method="hrmatt-ifm", cpu_s=7.0),
        dict(base, image="GT05", method="hrmatt-ifm", cpu_s=1.0),  # no cf row: no ratio
    ]
    lines = hr.cost_table(rows).splitlines()[2:]
    assert lines[0].endswith("| 2.0 | 4.0 | 1.00 |")
    assert lines[1].endswith("| 7.0 | 14.0 | 3.50 |")
    assert lines[2].endswith("| 1.0 | 2.0 | - |")
