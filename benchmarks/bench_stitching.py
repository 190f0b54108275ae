"""Seams: the chunked result against the whole-image solve (same global pass).

Default: synthetic scenes from tests/conftest.py (96 x 128, sub-pixel strands), uneven 37-px
chunks, global pass at factor 4, tight solver tolerance; trim vs linear-ramp blend per
overlap. Prints mean / max |chunked - whole| per overlap and stitching mode::

    .venv/bin/python benchmarks/bench_stitching.py

``--hr GTnn``: a full-resolution crop (``--crop`` px square, the one with the most
unknown pixels) of a dev semi-synthetic HR composite (``composites.py``), for each ``--models``:
``estimate_alpha`` with ``--chunks`` px blocks (derived overlap, trim) against the same call
with one block, both after the same global pass (``--global-size``). Prints the mean of
|d| over the trimap's unknown pixels (bar 5e-4) and its max within 2 px of a cut between
blocks (bar 2/255) and anywhere::

    .venv/bin/python benchmarks/bench_stitching.py --hr GT04 --models cf ifm

``--options`` replaces the default ``tol=1e-7 maxiter=2000`` (repeat them); cf's cut edge
is one of them: ``--models cf --options tol=1e-7 maxiter=2000 cut_edge=pinned`` for the
pinned ring (the default is ``free``, docs/engine.md "Seams").
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.conftest import make_scene  # noqa: E402

from napari_hrmatt import estimate_alpha  # noqa: E402
from napari_hrmatt.models import parse_options  # noqa: E402

TIGHT = {"tol": 1e-7, "maxiter": 2000}


def synthetic() -> None:
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


def hr_crop(name, side, data_dir=None):
    """The ``side`` x ``side`` full-resolution window of the composite with the most unknown
    pixels."""
    import composites
    from napari_hrmatt.alphamatting import DEV

    if name not in DEV:
        raise SystemExit(f"{name} is not a dev image (GT01-GT18)")
    c = composites.make_composite(name, data_dir=data_dir or composites.DATA_DIR, trimap=1)
    h, w = c.trimap.shape
    # the window (on a 32-px grid) with the most unknown pixels
    s = np.pad(np.cumsum(np.cumsum(c.trimap == 128, 0), 1), ((1, 0), (1, 0)))
    ys = np.arange(0, max(h - side, 0) + 1, 32)
    xs = np.arange(0, max(w - side, 0) + 1, 32)
    y1, x1 = np.minimum(ys + side, h), np.minimum(xs + side, w)
    count = s[y1][:, x1] - s[ys][:, x1] - s[y1][:, xs] + s[ys][:, xs]
    iy, ix = np.unravel_index(np.argmax(count), count.shape)
    y0, x0 = int(ys[iy]), int(xs[ix])
    win = np.s_[y0 : y0 + side, x0 : x0 + side]
    return c.image[win], c.trimap[win], (y0, x0, h, w)


def hr(args) -> None:
    image, trimap, (y0, x0, h, w) = hr_crop(args.hr, args.crop)
    unknown = trimap == 128
    cuts = np.zeros(trimap.shape, bool)
    for axis in (0, 1):
        for c in range(args.chunks, trimap.shape[axis], args.chunks):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(max(c - 2, 0), c + 2)
            cuts[tuple(sl)] = True
    print(
        f"{args.hr} Trimap1 composite, crop {trimap.shape[1]}x{trimap.shape[0]} at "
        f"({x0}, {y0}) of {w}x{h}, {unknown.mean():.0%} unknown; global_size "
        f"{args.global_size:g}, chunks {args.chunks}, options {args.options or 'default'}\n"
    )
    print(
        "| model | overlap | mean d over unknown | max d at cuts (+-2 px) | max d | "
        "CPU s whole | CPU s chunked |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    from napari_hrmatt.global_pass import downsample_factor
    from napari_hrmatt.models import get_model

    for model in args.models:
        options = parse_options(args.options)
        factor = downsample_factor(trimap.shape, args.global_size)
        derived = get_model(model, "cpu", **options).overlap(factor)
        kw = {"model": model, "global_size": args.global_size, "model_options": options or None}
        c0 = time.process_time()
        whole = estimate_alpha(image, trimap, chunks=10 * args.crop, **kw)
        c1 = time.process_time()
        for overlap in args.overlaps:  # "derived" or px; a too-small one shows what a seam is
            ov = None if overlap == "derived" else int(overlap)
            c2 = time.process_time()
            chunked = estimate_alpha(image, trimap, chunks=args.chunks, overlap=ov, **kw)
            c3 = time.process_time()
            d = np.abs(np.asarray(chunked, np.float64) - whole)
            at_cuts = d[cuts & unknown].max() if (cuts & unknown).any() else 0.0
            label = f"{derived} (derived)" if ov is None else ov
            print(
                f"| {model} | {label} | {d[unknown].mean():.1e} | {at_cuts:.4f} | "
                f"{d.max():.4f} | {c1 - c0:.0f} | {c3 - c2:.0f} |",
                flush=True,
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hr", metavar="GTnn", help="a dev composite (GT01-GT18)")
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--chunks", type=int, default=384)
    parser.add_argument("--global-size", type=float, default=1.2e5)
    parser.add_argument("--models", nargs="+", default=["cf", "ifm"])
    parser.add_argument("--overlaps", nargs="+", default=["derived", "0"])
    parser.add_argument("--options", nargs="*", default=["tol=1e-7", "maxiter=2000"])
    args = parser.parse_args(argv)
    if args.hr:
        hr(args)
    else:
        synthetic()


if __name__ == "__main__":
    main()
