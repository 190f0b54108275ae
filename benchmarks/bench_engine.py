"""Engine benchmark: napari-hrmatt (cf; `scale --model`) against PyMatting's estimate_alpha_cf.

Two parts, each printing a markdown table with ratios measured in the same run:

``quality``  semi-synthetic composites (real alphamatting.com high-resolution mattes GT01-GT18,
             see benchmarks/composites.py) resized to 0.3, 1, 2.5 and 5 megapixels: wall time,
             peak RSS and SAD against the ground truth for both methods.
``scale``    a synthetic image of 100 megapixels and of ~1 gigapixel (31k x 31k) with a thin
             unknown band, Zarr in -> Zarr out: wall time, peak RSS, unknown pixels.

Every measurement runs in a fresh subprocess that reports its own peak resident memory
(``VmHWM`` from /proc/self/status, imports included) and the wall time of the solve alone
(after a small warm-up solve, so numba compilation and torch start-up are not counted).

Usage::

    .venv/bin/python benchmarks/bench_engine.py quality --images GT01 GT02 GT04
    .venv/bin/python benchmarks/bench_engine.py scale --megapixels 100 1000
    .venv/bin/python benchmarks/bench_engine.py scale --megapixels 100 --model ifm
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import peak_rss_mb, run_child, run_if_child  # noqa: E402
from composites import DATA_DIR, has_data, make_composite, resize  # noqa: E402

# ---------------------------------------------------------------- child processes


def _child_solve(method: str, npz: str, out: str, options: str) -> None:
    if os.environ.get("HRMATT_BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["HRMATT_BENCH_THREADS"]))
    data = np.load(npz)
    image, trimap = data["image"], data["trimap"]
    opts = json.loads(options)
    if method == "hrmatt":
        from napari_hrmatt import estimate_alpha

        def run(im, tri):
            return estimate_alpha(im, tri, **opts)
    elif method == "pymatting":
        from pymatting import estimate_alpha_cf

        def run(im, tri):
            return estimate_alpha_cf(im.astype(np.float64) / 255.0, tri / 255.0)
    else:
        raise SystemExit(f"unknown method {method}")
    # warm-up on a small problem: JIT compilation (every numba signature a real solve
    # uses, see napari_hrmatt.bench._warmup_problem), thread pools
    from napari_hrmatt.bench import _warmup_problem

    run(*_warmup_problem())
    t0 = time.perf_counter()
    alpha = run(image, trimap)
    seconds = time.perf_counter() - t0
    np.save(out, np.asarray(alpha, np.float32))
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def _child_scale(image_zarr: str, trimap_zarr: str, out_zarr: str, options: str) -> None:
    from napari_hrmatt import estimate_alpha, open_image, open_trimap, save_alpha

    opts = json.loads(options)
    t0, c0 = time.perf_counter(), time.process_time()
    alpha = estimate_alpha(open_image(image_zarr), open_trimap(trimap_zarr), **opts)
    t_global = time.perf_counter() - t0
    save_alpha(alpha, out_zarr, pyramid=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "global_seconds": t_global,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


# ---------------------------------------------------------------- quality part


def quality(args) -> int:
    if args.threads:
        # Same thread budget for both methods (torch, numba, BLAS), set before they load.
        for var in ("HRMATT_BENCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # fmt: skip
            os.environ[var] = str(args.threads)
    if not has_data(args.data):
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.images:
            comp = make_composite(name, data_dir=args.data)
            for mp in args.sizes:
                image, trimap, gt = resize(comp, mp)
                npz = os.path.join(tmp, "problem.npz")
                np.savez(npz, image=image, trimap=trimap)
                unknown = trimap == 128
                row = {"image": name, "mp": image.shape[0] * image.shape[1] / 1e6}
                for method in args.methods:
                    out = os.path.join(tmp, f"{method}.npy")
                    if method == "pymatting" and mp > args.pymatting_max_mp:
                        continue
                    res = run_child(__file__, "_solve", method, npz, out, json.dumps({}))
                    alpha = np.load(out)
                    res["sad"] = float(np.abs(alpha - gt)[unknown].sum() / 1000)
                    row[method] = res
                rows.append(row)
                print(_row_text(row), file=sys.stderr, flush=True)
    print(_quality_table(rows))
    return 0


def _row_text(row):
    parts = [f"{row['image']} {row['mp']:.2f} MP"]
    for m in ("hrmatt", "pymatting"):
        if m in row:
            r = row[m]
            parts.append(f"{m}: {r['seconds']:.1f}s {r['peak_rss_mb']:.0f}MB SAD {r['sad']:.2f}")
    return " | ".join(parts)


def _quality_table(rows) -> str:
    lines = [
        "| composite (semi-synthetic) | MP | hrmatt s | PyMatting s | time ratio | "
        "hrmatt MB | PyMatting MB | RSS ratio | hrmatt SAD | PyMatting SAD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        h, p = row.get("hrmatt"), row.get("pymatting")

        def cell(d, key, fmt):
            return format(d[key], fmt) if d else "-"

        ratio_t = f"{h['seconds'] / p['seconds']:.2f}x" if h and p else "-"
        ratio_m = f"{h['peak_rss_mb'] / p['peak_rss_mb']:.2f}x" if h and p else "-"
        lines.append(
            f"| {row['image']} | {row['mp']:.2f} | {cell(h, 'seconds', '.1f')} | "
            f"{cell(p, 'seconds', '.1f')} | {ratio_t} | {cell(h, 'peak_rss_mb', '.0f')} | "
            f"{cell(p, 'peak_rss_mb', '.0f')} | {ratio_m} | {cell(h, 'sad', '.2f')} | "
            f"{cell(p, 'sad', '.2f')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- scale part


def _scene_block(block_info=None, *, shape, band, kind):
    """One block of a synthetic scene: a wavy disc of foreground over a textured background.

    The edge is soft over ~2 px; the trimap's unknown band is ``2 * band`` px wide.
    """
    (y0, y1), (x0, x1) = block_info[None]["array-location"][:2]
    h, w = shape
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cy, cx, radius = h / 2, w / 2, 0.4 * min(h, w)
    theta = np.arctan2(yy - cy, xx - cx)
    edge = radius * (1 + 0.02 * np.sin(12 * theta))
    d = np.hypot(yy - cy, xx - cx) - edge  # signed distance to the edge (approx.)
    if kind == "trimap":
        t = np.where(d < 0, 255, 0).astype(np.uint8)
        t[np.abs(d) <= band] = 128
        return t
    alpha = np.clip(0.5 - d / 2, 0, 1)[..., None]
    fg = np.stack([0.85 + 0 * xx, 0.6 + 0.1 * np.sin(yy / 37), 0.3 + 0 * xx], -1)
    bg = np.stack(
        [0.3 + 0.15 * np.sin(xx / 23) * np.cos(yy / 29), 0.45 + 0 * xx, 0.7 + 0 * xx], -1
    )
    return np.round(255 * (alpha * fg + (1 - alpha) * bg)).astype(np.uint8)


def _write_scene(folder: Path, side: int, band: int, chunk: int = 1024):
    import dask.array as da

    shape = (side, side)
    image = da.map_blocks(
        _scene_block,
        chunks=(da.core.normalize_chunks(chunk, shape) + ((3,),)),
        dtype=np.uint8,
        shape=shape,
        band=band,
        kind="image",
        meta=np.empty((0, 0, 0), np.uint8),
    )
    trimap = da.map_blocks(
        _scene_block,
        chunks=da.core.normalize_chunks(chunk, shape),
        dtype=np.uint8,
        shape=shape,
        band=band,
        kind="trimap",
        meta=np.empty((0, 0), np.uint8),
    )
    image.to_zarr(str(folder / "image.zarr"), overwrite=True)
    trimap.to_zarr(str(folder / "trimap.zarr"), overwrite=True)
    return int((trimap == 128).sum().compute())


def scale(args) -> int:
    rows = []
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from napari_hrmatt.models import parse_options

    opts = {"chunks": args.chunk, "model": args.model}
    if args.model_option:
        opts["model_options"] = parse_options(args.model_option)
    for mp in args.megapixels:
        side = int(round((mp * 1e6) ** 0.5))
        for band in args.bands:
            folder = workdir / f"scene-{side}-{band}"
            folder.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            unknown = _write_scene(folder, side, band)
            t_make = time.perf_counter() - t0
            res = run_child(
                __file__,
                "_scale",
                str(folder / "image.zarr"),
                str(folder / "trimap.zarr"),
                str(folder / "alpha.zarr"),
                json.dumps(opts),
            )
            res.update(side=side, band=band, unknown=unknown, make_seconds=t_make)
            rows.append(res)
            print(json.dumps(res), file=sys.stderr, flush=True)
            if not args.keep:
                import shutil

                shutil.rmtree(folder)
    print(f"model {args.model}, options {opts.get('model_options', 'default')}")
    print(
        "| image | unknown px | wall s | of which global pass s | µs per unknown px | "
        "CPU s | peak RSS MB |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['side']} x {r['side']} ({r['side'] ** 2 / 1e6:.0f} MP), band {2 * r['band']} px"
            f" | {r['unknown'] / 1e6:.2f} M | {r['seconds']:.0f} | {r['global_seconds']:.0f} | "
            f"{1e6 * r['seconds'] / max(r['unknown'], 1):.1f} | {r['cpu_seconds']:.0f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if run_if_child(argv, {"_solve": _child_solve, "_scale": _child_scale}):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    q = sub.add_parser("quality", help="composites at several sizes vs PyMatting")
    q.add_argument("--data", type=Path, default=DATA_DIR)
    q.add_argument("--images", nargs="+", default=["GT01", "GT04", "GT13"])
    q.add_argument("--sizes", nargs="+", type=float, default=[0.3, 1.0, 2.5, 5.0])
    q.add_argument("--methods", nargs="+", default=["hrmatt", "pymatting"])
    q.add_argument("--pymatting-max-mp", type=float, default=5.0)
    q.add_argument(
        "--threads", type=int, default=0,
        help="threads per method (torch, numba, BLAS); default: each library's own",
    )  # fmt: skip
    s = sub.add_parser("scale", help="synthetic 100 MP / 1 GP Zarr in -> Zarr out")
    s.add_argument("--megapixels", nargs="+", type=float, default=[100, 1000])
    s.add_argument("--bands", nargs="+", type=int, default=[4])
    s.add_argument("--chunk", type=int, default=1024)
    s.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hrmatt-scale"))
    s.add_argument("--keep", action="store_true")
    s.add_argument("--model", default="cf", help="registered model (cf, ifm, ...)")
    s.add_argument(
        "--model-option", nargs="*", default=[], metavar="KEY=VALUE", help="the model's options"
    )
    args = parser.parse_args(argv)
    return quality(args) if args.part == "quality" else scale(args)


if __name__ == "__main__":
    sys.exit(main())
