"""Trim vs linear-ramp blend: chunked result against the whole-image solve.

Synthetic scenes from tests/conftest.py (96 x 128, sub-pixel strands), uneven 37-px chunks,
global pass at factor 4, tight solver tolerance. Prints mean / max |chunked - whole| per
overlap and stitching mode. Usage: ``.venv/bin/python benchmarks/bench_stitching.py``
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import make_scene  # noqa: E402

from napari_hrmatt import estimate_alpha  # noqa: E402

TIGHT = {"tol": 1e-7, "maxiter": 2000}


def main() -> None:
    print("| seed | overlap | stitch | mean | max |\n|---|---|---|---|---|")
    for seed in (0, 1):
        image, trimap, _ = make_scene(seed=seed)
        whole = estimate_alpha(image, trimap, chunks=10_000, global_size=800, model_options=TIGHT)
        for overlap in (None, 8, 2):
            for stitch in ("trim", "blend"):
                alpha = estimate_alpha(
                    image,
                    trimap,
                    chunks=37,
                    overlap=overlap,
                    global_size=800,
                    model_options=TIGHT,
                    stitch=stitch,
                )
                d = np.abs(alpha - whole)
                label = "derived" if overlap is None else overlap
                print(f"| {seed} | {label} | {stitch} | {d.mean():.1e} | {d.max():.3f} |")


if __name__ == "__main__":
    main()
