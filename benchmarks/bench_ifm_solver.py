"""Information-flow matting vs closed-form: CG iterations and cost against problem size.

One dev photo (alphamatting.com lowres, GT01-GT18 only) is resized by each ``--scales``
factor (bilinear image, nearest trimap) and solved whole by ``"cf"`` and ``"ifm"``
(``global_alpha``, i.e. one solve of the unknown region's bounding box) in this process,
one after the other, so the time ratio compares the two on the same core and load.
Prints, per size: unknown megapixels, CG iterations and seconds of each model, and the
ratio of seconds per unknown megapixel (ifm / cf). Iterations are read by wrapping the
solvers' CG functions.

Run (from the repository root)::

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_ifm_solver.py \\
        --image GT04 --scales 0.5 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from napari_hrmatt.bench import find_dataset, load_sample
from napari_hrmatt.image import to_float
from napari_hrmatt.models import closed_form, get_model, ifm, parse_options
from napari_hrmatt.trimap import UNKNOWN, canonical_trimap


def _counting(module, name, log):
    solve = getattr(module, name)

    def wrapped(*args, **kwargs):
        x, it = solve(*args, **kwargs)
        log.append(it)
        return x, it

    setattr(module, name, wrapped)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/bench-data")
    parser.add_argument("--image", default="GT04", help="a dev image, GT01-GT18")
    parser.add_argument("--trimap", type=int, default=1)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--options", nargs="*", default=[], help="ifm options, key=value")
    args = parser.parse_args(argv)
    options = parse_options(args.options)
    if int(args.image.removeprefix("GT")) > 18:
        parser.error("use a dev image (GT01-GT18): GT19-GT27 are held out")
    image, trimap = load_sample(find_dataset(args.data), args.image, args.trimap)[:2]
    image, trimap = to_float(image), canonical_trimap(trimap)
    iters: list[int] = []
    _counting(closed_form, "_pcg", iters)
    _counting(ifm, "cg", iters)  # ifm calls _stencil.cg through its module namespace
    models = {"cf": get_model("cf", "cpu"), "ifm": get_model("ifm", "cpu", **options)}
    print("| scale | image MP | unknown MP | cf iters | cf s | ifm iters | ifm s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scale in args.scales:
        im = np.clip(ndi.zoom(image, (scale, scale, 1), order=1), 0, 1).astype(np.float32)
        tri = ndi.zoom(trimap, scale, order=0)
        unknown_mp = (tri == UNKNOWN).sum() / 1e6
        row = {}
        for name, model in models.items():
            iters.clear()
            start = time.perf_counter()
            model.global_alpha(im, tri)
            row[name] = (iters[-1], time.perf_counter() - start)
        ratio = row["ifm"][1] / row["cf"][1]
        print(
            f"| {scale:g} | {im.shape[0] * im.shape[1] / 1e6:.2f} | {unknown_mp:.3f} | "
            f"{row['cf'][0]} | {row['cf'][1]:.1f} | {row['ifm'][0]} | {row['ifm'][1]:.1f} | "
            f"{ratio:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
