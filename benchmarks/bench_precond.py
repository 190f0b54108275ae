"""The global closed-form solve with each preconditioner, in-process, against PyMatting CF.

For every image (alphamatting.com lowres photo with Trimap2, or ``--scribble``: known
pixels only on two-pixel strokes every 20 rows), each method runs in its own process
(``_harness.run_child``) pinned by the caller, and reports:

- ``mg``: ``solve_closed_form(precond="mg")`` (2x2 piecewise-constant multigrid, with the
  coarse-to-fine cascade), ``sa``: ``solve_closed_form(precond="sa")`` (smoothed
  aggregation with a [1, R, G, B] coarse space, no cascade), both at the global pass's
  default tolerance (3e-5) and float32;
- ``pymatting``: ``pymatting.estimate_alpha_cf`` on the same input;
- CPU seconds of the solve alone (``time.process_time``: imports and reading excluded),
  fine-level CG iterations (all levels of the cascade in brackets), SAD over the unknown
  pixels, peak RSS of the process and its RSS before the solve (imports included).

Use dev images (GT01-GT18) for tuning; held-out ones (GT19-GT27) only to report.

Usage::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_precond.py --images GT13 GT04
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import peak_rss_mb, run_child, run_if_child  # noqa: E402
from bench_speed import _lowres, _scribble  # noqa: E402
from composites import DATA_DIR  # noqa: E402


def _inputs(name: str, scribble: bool):
    image, tri, gt = _lowres(name, DATA_DIR)
    if scribble:
        tri = _scribble(gt)
    return image.astype(np.float64) / 255.0, tri, gt


def _child(method: str, name: str, scribble: str) -> None:
    image, tri, gt = _inputs(name, scribble == "1")
    before = peak_rss_mb()
    iterations: list[int] = []
    if method == "pymatting":
        import pymatting

        t = time.process_time()
        alpha = pymatting.estimate_alpha_cf(image, tri / 255.0)
        cpu = time.process_time() - t
    else:
        import torch

        from napari_hrmatt.models import closed_form

        torch.set_num_threads(1)
        pcg = closed_form._pcg

        def counting(*args, **kwargs):
            out = pcg(*args, **kwargs)
            iterations.append(out[1])
            return out

        closed_form._pcg = counting
        im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
        t = time.process_time()
        alpha = closed_form.solve_closed_form(
            im, torch.as_tensor(tri), tol=3e-5, precond=method
        ).numpy()
        cpu = time.process_time() - t
    sad = float(np.abs(alpha - gt)[tri == 128].sum() / 1000)
    print(
        json.dumps(
            {
                "cpu": cpu,
                "iterations": iterations,
                "sad": sad,
                "peak_mb": peak_rss_mb(),
                "before_mb": before,
                "unknown": int((tri == 128).sum()),
            }
        )
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=["GT13", "GT04", "GT08", "GT01"])
    parser.add_argument("--methods", nargs="+", default=["mg", "sa", "pymatting"])
    parser.add_argument("--scribble", action="store_true", help="stroke trimaps")
    args = parser.parse_args(argv)
    print("image    method     unknown   CPU s   CG it (all levels)   SAD     peak MB (before)")
    for name in args.images:
        for method in args.methods:
            r = run_child(__file__, "_child", method, name, "1" if args.scribble else "0")
            its = r["iterations"]
            it = f"{its[-1]} ({sum(its)})" if its else "-"
            print(
                f"{name:8s} {method:9s} {r['unknown']:8d} {r['cpu']:7.2f}   {it:18s} "
                f"{r['sad']:7.3f}  {r['peak_mb']:6.0f} ({r['before_mb']:.0f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    if not run_if_child(sys.argv[1:], {"_child": _child}):
        sys.exit(main())
