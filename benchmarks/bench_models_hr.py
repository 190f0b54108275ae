"""Models side by side on semi-synthetic high-resolution composites.

``hrmatt bench`` scores methods on the alphamatting.com *lowres* photos; this script
scores the same method names (``hrmatt-<model>[:key=value,...]`` and ``pymatting-*``)
on the semi-synthetic HR composites of ``benchmarks/composites.py`` (real HR mattes,
estimated foreground colours, real background photos), resized to ``--megapixels``:
SAD, MSE, Grad, Conn over the HR trimap's unknown region, wall time and peak RSS, and
(second table) CPU seconds per megapixel of unknown pixels with the ratio to ``hrmatt-cf``.

Each (image, method) runs in a fresh process (``_harness.run_child``): time and
``VmHWM`` are measured around the call only, after a warm-up on a tiny problem.
``hrmatt-*`` methods run through :func:`napari_hrmatt.engine.estimate_alpha` with its
defaults (global pass at 1 MP + patch pass in 512-px blocks), so at 2 MP and more the
patch pass is part of what is measured.

The held-out images GT19-GT27 are the default: this is an evaluation script, nothing
here tunes anything (the cost table, e.g. on dev GT04, is not a quality result). Run (from
the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_models_hr.py \\
        --methods hrmatt-cf hrmatt-hdmatt pymatting-cf --megapixels 2 --out /tmp/hr.csv
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_models_hr.py \\
        --methods hrmatt-cf hrmatt-ifm --images GT04 --megapixels 3    # cost, ifm / cf
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import run_child, run_if_child  # noqa: E402
from napari_hrmatt.alphamatting import HELDOUT  # noqa: E402


def _child_solve(method: str, npz: str, out: str) -> None:
    from napari_hrmatt.bench import _warmup_problem, estimate, measure

    data = np.load(npz)
    # stdout carries the result line; PyMatting prints warnings there.
    with contextlib.redirect_stdout(sys.stderr):
        estimate(method, *_warmup_problem())
        alpha, stats = measure(estimate, method, data["image"], data["trimap"])
    np.save(out, np.asarray(alpha, np.float32))
    print(json.dumps(stats))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if run_if_child(argv, {"_solve": _child_solve}):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["hrmatt-cf", "pymatting-cf"])
    parser.add_argument("--images", nargs="+", default=list(HELDOUT))
    parser.add_argument("--megapixels", type=float, default=2.0)
    parser.add_argument("--trimap", type=int, choices=(1, 2), default=1)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, help="CSV of every (image, method)")
    parser.add_argument(
        "--merge", nargs="+", type=Path, default=[], metavar="CSV",
        help="add the rows of earlier --out files (other methods, same images) to the table",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import composites
    from napari_hrmatt.bench import format_table, read_csv, summarize, write_csv
    from napari_hrmatt.metrics import evaluate

    data_dir = args.data_dir or composites.DATA_DIR
    if not composites.has_data(data_dir):
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.images:
            comp = composites.make_composite(name, data_dir=data_dir, trimap=args.trimap)
            image, trimap, gt = composites.resize(comp, args.megapixels)
            del comp
            npz = os.path.join(tmp, "problem.npz")
            np.savez(npz, image=image, trimap=trimap)
            split = "heldout" if name in HELDOUT else "dev"
            for method in args.methods:
                row = {
                    "method": method,
                    "image": name,
                    "split": f"{split} HR",
                    "trimap": args.trimap,
                }
                row.update(height=trimap.shape[0], width=trimap.shape[1])
                row.update(unknown_px=int((trimap == 128).sum()))
                out = os.path.join(tmp, "alpha.npy")
                try:
                    row.update(run_child(__file__, "_solve", method, npz, out))
                    row.update(evaluate(np.load(out).astype(np.float64), gt, trimap), status="ok")
                except RuntimeError as exc:
                    row.update(status="error", error=str(exc)[-300:])
                rows.append(row)
                print(
                    f"{name} {trimap.shape[1]}x{trimap.shape[0]} {method}: "
                    + (f"SAD {row['sad']:.2f} {row['time_s']:.1f} s" if row["status"] == "ok"
                       else row["status"]),
                    file=sys.stderr,
                    flush=True,
                )  # fmt: skip
                if args.out:
                    write_csv(rows, args.out)
    for path in args.merge:
        rows += [
            r for r in read_csv(path)
            if r["image"] in args.images and r["method"] not in args.methods
        ]  # fmt: skip
    if args.out:
        write_csv(rows, args.out)
    print(
        f"{composites.KIND} HR composites at {args.megapixels:g} MP, Trimap{args.trimap}, "
        f"{len(args.images)} images; errors over the unknown region (MSE x1e3)\n"
    )
    print(format_table(summarize(rows)))
    print()
    print(cost_table(rows))
    return 0


def cost_table(rows) -> str:
    """CPU seconds per megapixel of unknown pixels, per (image, method), and the ratio to
    ``hrmatt-cf`` measured in the same run (CPU time, all threads: comparable on a loaded
    machine, where wall time is not)."""
    lines = [
        "| image | size | unknown MP | method | CPU s | CPU s / unknown MP | / cf |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    ok = [r for r in rows if r.get("status") == "ok" and r.get("cpu_s") not in (None, "")]
    for r in ok:
        mp = max(int(r["unknown_px"]), 1) / 1e6
        cf = [c for c in ok if c["image"] == r["image"] and c["method"] == "hrmatt-cf"]
        ratio = f"{float(r['cpu_s']) / float(cf[0]['cpu_s']):.2f}" if cf else "-"
        lines.append(
            f"| {r['image']} | {r['width']}x{r['height']} | {mp:.2f} | {r['method']} | "
            f"{float(r['cpu_s']):.1f} | {float(r['cpu_s']) / mp:.1f} | {ratio} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
