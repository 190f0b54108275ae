"""Profile the scale benchmark's child on a kept scene: where the seconds of a run go.

Runs what ``bench_engine.py scale`` times (``estimate_alpha`` on the Zarr scene, then
``save_alpha`` to Zarr), under cProfile with dask's synchronous scheduler (so that the
profile sees every task), and prints the two phases' wall times and the top functions.

Usage (after ``bench_engine.py scale --megapixels 100 --bands 4 --keep``)::

    PYTHONPATH=src OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python \\
        benchmarks/profile_scale.py /tmp/hrmatt-scale/scene-10000-4 [--no-profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path


def run(scene: Path, out: Path) -> None:
    from napari_hrmatt import estimate_alpha, open_image, open_trimap, save_alpha

    t0 = time.perf_counter()
    alpha = estimate_alpha(
        open_image(scene / "image.zarr"), open_trimap(scene / "trimap.zarr"), chunks=1024
    )
    t1 = time.perf_counter()
    save_alpha(alpha, out, pyramid=False)
    t2 = time.perf_counter()
    print(f"global pass {t1 - t0:.2f} s, patch pass + writing {t2 - t1:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", type=Path, help="a kept scene folder (image.zarr, trimap.zarr)")
    parser.add_argument("--no-profile", action="store_true", help="time the phases only")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    import dask

    dask.config.set(scheduler="synchronous")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "alpha.zarr"
        if args.no_profile:
            run(args.scene, out)
            return
        prof = cProfile.Profile()
        prof.runcall(run, args.scene, out)
        shutil.rmtree(out, ignore_errors=True)
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
