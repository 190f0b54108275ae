"""Does global context make patch-wise matting as good as a whole-image solve?

The seed papers of this project (HDMatt, Yu et al. AAAI 2021; LFPNet, Liu et al.
2021) argue that high-resolution matting cannot be done by (b) downsampling or
(c) independent patches, but that patches *with* long-range context can. We measure
that claim with our closed-form solver (``--model cf``, the default; ``--model ifm`` for
information-flow matting) on semi-synthetic high-resolution composites
(real HR alphamatting.com mattes, see ``benchmarks/composites.py``) of dev images:

(a) ``whole``     whole-image solve at full resolution (where it fits in memory):
                  ``global_pass`` with ``global_size >= H * W`` (factor 1);
(b) ``downsample`` solve a ~1 MP copy, upsample bilinearly (``global_pass`` +
                  ``GlobalContext.alpha_at``), known pixels from the trimap;
(c) ``patches``   the same full-resolution tiles and overlap as (d), each solved on its
                  own with nothing but its own trimap (``model.global_alpha`` per tile,
                  free borders, no global alpha): tiles without a known pixel stay 0.5;
(d) ``ours``      ``estimate_alpha``: global pass at ~1 MP + patch pass with the global
                  alpha as initial guess and as the Dirichlet condition on every cut.

Each (image, variant) runs in a fresh process; time and peak RSS (``VmHWM``, reset
before the call) are measured around the call only, as in ``hrmatt bench``. Errors
(SAD, MSE, Grad, Conn over the unknown region of the HR trimap) against the real HR
alpha. Use dev images only (GT01-GT18).

Run (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/bench_hdmatt_experiment.py \\
        --images GT01 GT04 GT13 --out /tmp/hdmatt.csv
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "a": "whole",
    "b": "downsample",
    "c": "patches",
    "d": "ours",
}


# --------------------------------------------------------------------------- variants


def _known(trimap: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    alpha = np.array(alpha, np.float32)
    alpha[trimap == 0] = 0.0
    alpha[trimap == 255] = 1.0
    return alpha


def _model(name, options):
    from napari_hrmatt.models import get_model

    return get_model(name, "auto", **options)


def run_whole(image, trimap, *, model, global_size, chunks, options):
    from napari_hrmatt.global_pass import global_pass
    from napari_hrmatt.image import as_float_image

    h, w = trimap.shape
    ctx = global_pass(
        as_float_image(image), trimap, model=_model(model, options), global_size=h * w
    )
    assert ctx.factor == 1
    return _known(trimap, ctx.alpha)


def run_downsample(image, trimap, *, model, global_size, chunks, options):
    from napari_hrmatt.global_pass import global_pass
    from napari_hrmatt.image import as_float_image

    h, w = trimap.shape
    ctx = global_pass(
        as_float_image(image), trimap, model=_model(model, options), global_size=global_size
    )
    return _known(trimap, ctx.alpha_at(0, 0, h, w))


def _patch_alone(block, *, model, options):
    """Solve one grown tile with only its own trimap (no global alpha, free borders)."""
    tri = block[..., -1].astype(np.uint8)
    unknown = tri == 128
    alpha = np.where(tri == 255, 1.0, np.where(unknown, 0.5, 0.0)).astype(np.float32)
    if not unknown.any() or unknown.all():
        # Nothing to solve, or nothing to propagate from: a tile inside a wide
        # unknown band is exactly where naive patches have no information.
        return alpha
    solver = _model(model, dict(options))
    return np.asarray(solver.global_alpha(block[..., :-1], tri), np.float32)


def run_patches(image, trimap, *, model, global_size, chunks, options):
    import dask.array as da

    from napari_hrmatt.global_pass import downsample_factor
    from napari_hrmatt.image import as_float_image

    h, w = trimap.shape
    # Same tiles and overlap as the patch pass of (d), for a like-for-like comparison.
    overlap = _model(model, options).overlap(downsample_factor((h, w), global_size))
    img = as_float_image(image)
    stacked = np.concatenate([img, trimap[..., None].astype(np.float32)], axis=2)
    size = max(chunks, overlap)
    x = da.from_array(stacked, chunks=(size, size, stacked.shape[2]))
    alpha = da.map_overlap(
        _patch_alone,
        x,
        depth={0: min(overlap, h), 1: min(overlap, w), 2: 0},  # the warm-up's 64-px crop
        boundary="none",
        trim=True,
        drop_axis=2,
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
        model=model,
        options=tuple(sorted(options.items())),
    )
    return _known(trimap, alpha.compute())


def run_ours(image, trimap, *, model, global_size, chunks, options):
    from napari_hrmatt.engine import estimate_alpha

    return estimate_alpha(
        image,
        trimap,
        model=model,
        chunks=chunks,
        global_size=global_size,
        model_options=options or None,
    )


RUNNERS = {
    "whole": run_whole,
    "downsample": run_downsample,
    "patches": run_patches,
    "ours": run_ours,
}


# --------------------------------------------------------------------------- worker


def _worker(variant, npz, model, global_size, chunks, options, conn):
    try:
        from napari_hrmatt.bench import measure
        from napari_hrmatt.metrics import evaluate

        data = np.load(npz)
        image, trimap, gt = data["image"], data["trimap"], data["alpha"]
        # Warm-up on a tiny crop: imports and first-call costs stay out of the timing.
        RUNNERS[variant](
            image[:64, :64],
            trimap[:64, :64],
            model=model,
            global_size=1e6,
            chunks=64,
            options=options,
        )
        alpha, stats = measure(
            RUNNERS[variant],
            image,
            trimap,
            model=model,
            global_size=global_size,
            chunks=chunks,
            options=options,
        )
        stats.update(evaluate(np.clip(alpha, 0, 1), gt, trimap), status="ok")
        conn.send(stats)
    except Exception as exc:
        conn.send({"status": "error", "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def run_variant(variant, npz, *, model="cf", global_size, chunks, options, timeout) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_worker, args=(variant, npz, model, global_size, chunks, options, child)
    )
    t0 = time.perf_counter()
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            return {"status": "timeout", "error": f"over {timeout:g} s"}
        try:
            return parent.recv()
        except EOFError:
            proc.join(5)
            return {"status": "error", "error": f"worker died (exit {proc.exitcode}); OOM?"}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
        print(f"    {variant}: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)


# --------------------------------------------------------------------------- report

COLS = [
    ("SAD", "sad", 1, "{:.1f}"),
    ("MSE x1e3", "mse", 1000, "{:.2f}"),
    ("Grad", "grad", 1, "{:.1f}"),
    ("Conn", "conn", 1, "{:.1f}"),
    ("time (s)", "time_s", 1, "{:.0f}"),
    ("CPU (s)", "cpu_s", 1, "{:.0f}"),
    ("peak RSS (MB)", "peak_rss_mb", 1, "{:.0f}"),
]


def _fmt(row, key, scale, fmt):
    v = row.get(key)
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v * scale)


def format_rows(rows) -> str:
    head = "| image | size | variant | " + " | ".join(c[0] for c in COLS) + " | status |"
    lines = [head, "|---|---|---|" + "---:|" * len(COLS) + "---|"]
    for r in rows:
        cells = " | ".join(_fmt(r, *c[1:]) for c in COLS)
        lines.append(
            f"| {r['image']} | {r['size']} | ({r['letter']}) {r['variant']} | {cells} "
            f"| {r['status']} |"
        )
    return "\n".join(lines)


def format_means(rows) -> str:
    """Means over the images where every variant succeeded, plus (d) relative to (a)."""
    images = sorted({r["image"] for r in rows})
    complete = [i for i in images if all(r["status"] == "ok" for r in rows if r["image"] == i)]
    lines = [
        f"Means over {len(complete)} image(s) where every variant ran: {', '.join(complete)}",
        "",
        "| variant | " + " | ".join(c[0] for c in COLS) + " |",
        "|---|" + "---:|" * len(COLS),
    ]
    means = {}
    for letter, variant in VARIANTS.items():
        sel = [r for r in rows if r["variant"] == variant and r["image"] in complete]
        if not sel:
            continue
        m = {k: float(np.mean([r[k] for r in sel])) for _, k, _, _ in COLS[:-1]}
        m["peak_rss_mb"] = float(np.max([r["peak_rss_mb"] for r in sel]))
        means[variant] = m
        lines.append(
            f"| ({letter}) {variant} | " + " | ".join(_fmt(m, *c[1:]) for c in COLS) + " |"
        )
    if "whole" in means and "ours" in means:
        lines.append("")
        for key in ("sad", "mse", "grad", "conn"):
            a, d = means["whole"][key], means["ours"][key]
            lines.append(f"- (d) vs (a) {key}: {100 * (d - a) / a:+.2f}%")
    return "\n".join(lines)


def _write_csv(rows, path) -> None:
    import csv

    keys = ["image", "size", "letter", "variant", "sad", "mse", "grad", "conn", "time_s", "cpu_s"]
    keys += ["peak_rss_mb", "delta_rss_mb", "status", "error"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=["GT01", "GT04", "GT13"])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list("abcd"))
    parser.add_argument("--trimap", type=int, choices=(1, 2), default=1)
    parser.add_argument("--global-size", type=float, default=1e6)
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument(
        "--max-whole-mp",
        type=float,
        default=12.0,
        help="skip (a) above this many megapixels (does not fit)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per variant")
    parser.add_argument(
        "--crop", type=int, help="use a central CROP x CROP window (smoke tests only)"
    )
    parser.add_argument("--out", type=Path, help="CSV of all rows")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--model", default="cf", help="registered model for every variant (cf, ifm, ...)"
    )
    parser.add_argument(
        "--model-options",
        default="",
        metavar="K=V,...",
        help="the model's options for every variant, e.g. tol=1e-6,maxiter=2000",
    )
    args = parser.parse_args(argv)
    import composites
    from napari_hrmatt.alphamatting import DEV
    from napari_hrmatt.models import parse_options

    options = parse_options(filter(None, args.model_options.split(",")))
    data_dir = args.data_dir or composites.DATA_DIR
    if not composites.has_data(data_dir):
        return 0
    bad = [n for n in args.images if n not in DEV]
    if bad:
        print(f"{bad} are not dev images (GT01-GT18); refusing to tune on them", file=sys.stderr)
        return 2

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.images:
            c = composites.make_composite(name, data_dir=data_dir, trimap=args.trimap)
            image, trimap, alpha = c.image, c.trimap, c.alpha
            if args.crop:
                h, w = trimap.shape
                y0, x0 = max(0, (h - args.crop) // 2), max(0, (w - args.crop) // 2)
                win = np.s_[y0 : y0 + args.crop, x0 : x0 + args.crop]
                image, trimap, alpha = image[win], trimap[win], alpha[win]
            h, w = trimap.shape
            npz = Path(tmp) / f"{name}.npz"
            np.savez(npz, image=image, trimap=trimap, alpha=alpha)
            unknown = int((trimap == 128).sum())
            print(
                f"{name}: {w}x{h} ({h * w / 1e6:.1f} MP, {unknown / 1e6:.2f} MP unknown), "
                f"{c.kind} over {c.background_name}",
                file=sys.stderr,
            )
            del c, image, trimap, alpha
            for letter in args.variants:
                variant = VARIANTS[letter]
                row = {"image": name, "size": f"{w}x{h}", "letter": letter, "variant": variant}
                if variant == "whole" and h * w / 1e6 > args.max_whole_mp:
                    row.update(status="skipped", error=f"over {args.max_whole_mp} MP")
                else:
                    row.update(
                        run_variant(
                            variant,
                            npz,
                            model=args.model,
                            global_size=args.global_size,
                            chunks=args.chunks,
                            options=options,
                            timeout=args.timeout,
                        )
                    )
                rows.append(row)
                if args.out:  # rewritten after every variant: a long run keeps its rows
                    _write_csv(rows, args.out)
    print(
        f"HDMatt experiment on {composites.KIND} HR composites, Trimap{args.trimap}, "
        f"model {args.model}, "
        f"global_size {args.global_size:.3g} px, chunks {args.chunks}, "
        f"solver options {options or 'default'}\n"
    )
    print(format_rows(rows))
    print()
    print(format_means(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
