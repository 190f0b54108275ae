"""The napari "current view only" preview against a full-resolution run of the same view.

The preview (``MattingJob(preview=True)``) solves the visible part in one global pass of at
most ``PREVIEW_GLOBAL_SIZE`` pixels: at full resolution when the view is that small, else
downsampled. The comparison is the job a preview used to run: the same view matted at full
resolution (global pass of the same size, then the patch pass). Both on the generated
1536 x 2048 sample, in one process, alternating, after a warm-up; the ratio is the result::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_preview.py --repeat 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_hrmatt._job import MattingJob
from napari_hrmatt._widget import PREVIEW_GLOBAL_SIZE
from napari_hrmatt.pipeline import drive
from napari_hrmatt.sample import make_sample
from napari_hrmatt.trimap import trimap_to_labels

#: name -> (rows, cols) of the view: the gallery's zoom on the edge, and all of it
VIEWS = {
    "0.58 MP view on the edge": (slice(300, 1060), slice(250, 1010)),
    "whole 3.1 MP image (zoomed out)": (slice(None), slice(None)),
}


def _run(image, labels, preview: bool) -> tuple[float, tuple, int]:
    job = MattingJob(image, labels, labels=True, name="view", global_size=PREVIEW_GLOBAL_SIZE,
                     preview=preview, device="cpu")  # fmt: skip
    t0 = time.perf_counter()
    data, kwargs, _ = drive(job.steps())[0]
    seconds = time.perf_counter() - t0
    finest = np.asarray(data[0] if isinstance(data, list) else data)
    return (
        seconds,
        finest.shape,
        (kwargs["metadata"].get("napari_hrmatt_run") or {}).get("factor", 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median reported)")
    args = parser.parse_args()
    image, trimap, _ = make_sample((1536, 2048), seed=0)
    labels = trimap_to_labels(trimap)
    _run(image[:256, :256], labels[:256, :256], True)  # warm-up: imports, model
    print("| view | preview s (resolution) | full-resolution run s | ratio |")
    print("|---|---|---|---|")
    for name, (rows, cols) in VIEWS.items():
        times = {True: [], False: []}
        for _ in range(args.repeat):
            for preview in (True, False):
                seconds, shape, factor = _run(image[rows, cols], labels[rows, cols], preview)
                times[preview].append(seconds)
                if preview:
                    resolution = f"1/{factor}, {shape[1]} x {shape[0]}"
        quick, full = np.median(times[True]), np.median(times[False])
        print(f"| {name} | {quick:.1f} ({resolution}) | {full:.1f} | {quick / full:.2f} |")


if __name__ == "__main__":
    main()
