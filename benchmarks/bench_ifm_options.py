"""Ablation of information-flow matting options on the alphamatting.com lowres photos.

Runs ``hrmatt bench``'s measurement (:func:`napari_hrmatt.bench.run_benchmark`) for every
``--methods`` entry on Trimap1 and Trimap2 of one split and prints, per method, the mean
SAD / MSE x1e3 / Grad / Conn / seconds per image over each trimap and over both (the
defaults of ``"ifm"`` were chosen on ``--split dev`` by the lowest mean SAD over both
trimaps, Grad breaking ties). Per-image rows go to ``--out`` (one CSV per trimap) and
earlier CSVs can be summarised without re-running with ``--csv``.

Run (from the repository root; one core; ~20-40 s per image and method)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_ifm_options.py \\
        ../shared/bench-data --split dev --methods hrmatt-ifm:trim=none,sigma_ku=0.05 \\
        hrmatt-ifm:trim=none hrmatt-ifm hrmatt-cf --out /tmp/ifm_ablation
    .venv/bin/python benchmarks/bench_ifm_options.py --csv /tmp/ifm_ablation_t1.csv \\
        /tmp/ifm_ablation_t2.csv                     # the table again from the CSVs

``--trim-stats`` instead measures the trimming alone (no solve, a few seconds per image):
per ``trim_close`` / ``trim_far`` pair, the share of unknown pixels it makes known and their
own error against the ground truth (SAD per image, share off by more than 0.1); the pairs
are ``--trim-close`` x ``--trim-far`` (default 0.1 0.25 0.5 1 x 0.9 2 4)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_ifm_options.py \\
        ../shared/bench-data --split dev --trim-stats --trim-close 0.25 0.3 --trim-far 0.6 0.9
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from napari_hrmatt.alphamatting import DEV, HELDOUT, find_dataset, load_sample
from napari_hrmatt.bench import read_csv, run_benchmark, write_csv

CLOSE, FAR = (0.1, 0.25, 0.5, 1.0), (0.9, 2.0, 4.0)

#: Best PyMatting dev means (18 photos x Trimap1+2) per metric, docs/benchmarks.md: SAD and
#: Conn LBDM, MSE x1e3 and Grad KNN. Issue #11's dev rule (docs/ifm.md) scores a
#: configuration by the largest ratio of its dev means to these (lower is better).
PYMATTING_DEV_BEST = {"sad": 5.61, "mse": 17.86, "grad": 4.91, "conn": 5.18}


def trim_stats(root, names, radius: int, reg: float, close=CLOSE, far=FAR) -> str:
    """What patch trimming alone does on ``names`` x Trimap1/2, per threshold pair
    (``close`` x ``far``, pairs with ``far >= close``)."""
    import torch

    from napari_hrmatt.models._trim import trim_distances

    acc = {}
    for name in names:
        for trimap in (1, 2):
            image, tri, gt = load_sample(root, name, trimap)
            im = torch.as_tensor(np.moveaxis(image, -1, 0).copy()).double() / 255
            rows, d_f, d_b = (
                a.numpy() for a in trim_distances(im, torch.as_tensor(tri), radius=radius, reg=reg)
            )
            g = gt.astype(np.float64).ravel()[rows] / 255
            for c in close:
                for f in (f for f in far if f >= c):
                    fg, bg = (d_f < c) & (d_b > f), (d_b < c) & (d_f > f)
                    a = acc.setdefault((c, f), np.zeros(4))
                    a += (
                        fg.sum() + bg.sum(),
                        rows.size,
                        ((1 - g[fg]).sum() + g[bg].sum()) / 1000,
                        (g[fg] < 0.9).sum() + (g[bg] > 0.1).sum(),
                    )
    lines = [
        f"trim_search={radius}, trim_reg={reg:g}, {len(names)} images x Trimap1+2",
        "| trim_close | trim_far | trimmed share | SAD of trimmed / image | off by > 0.1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for (c, f), (n, total, sad, bad) in acc.items():
        lines.append(
            f"| {c:g} | {f:g} | {n / total:.3f} | {sad / (2 * len(names)):.3f} | "
            f"{bad / max(n, 1):.4f} |"
        )
    return "\n".join(lines)


def table(rows: list[dict], score: bool = False) -> str:
    """Markdown table: per method, means over Trimap1, Trimap2 and both. With ``score``,
    two more columns on the 1+2 rows: the dev rule's score (max over the metrics of the mean
    / :data:`PYMATTING_DEV_BEST`) and the time per image over the first method's."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = "| method | trimap | images | SAD | MSE x1e3 | Grad | Conn | time / image (s) |"
    rule = "|---|---|---:|---:|---:|---:|---:|---:|"
    if score:
        head += " score (max ratio) | time / first |"
        rule += "---:|---:|"
    lines = [head, rule]
    first_time = None
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        for label, keep in (("1", {1}), ("2", {2}), ("1+2", {1, 2})):
            sel = [r for r in mine if int(r["trimap"]) in keep]
            ok = [r for r in sel if r.get("status") == "ok"]
            if not sel:
                continue
            means = [
                float(np.mean([r[k] for r in ok])) * s if ok else math.nan
                for k, s in (("sad", 1), ("mse", 1e3), ("grad", 1), ("conn", 1), ("time_s", 1))
            ]
            count = f"{len(ok)}/{len(sel)}" if len(ok) != len(sel) else str(len(ok))
            cells = " | ".join(f"{m:.2f}" for m in means[:4]) + f" | {means[4]:.1f}"
            if score:
                extra = " | |"
                if label == "1+2":
                    best = PYMATTING_DEV_BEST.values()
                    ratios = [m / b for m, b in zip(means[:4], best, strict=True)]
                    first_time = means[4] if first_time is None else first_time
                    worst = ["SAD", "MSE", "Grad", "Conn"][int(np.argmax(ratios))]
                    extra = f" | {max(ratios):.3f} ({worst}) | {means[4] / first_time:.2f}"
                cells += extra
            lines.append(f"| {method} | {label} | {count} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", help="bench-data folder (not needed with --csv)")
    parser.add_argument("--split", choices=["dev", "heldout"], default="dev")
    parser.add_argument("--methods", nargs="+", default=["hrmatt-ifm", "hrmatt-cf"])
    parser.add_argument("--images", nargs="+", help="only these images (of the split)")
    parser.add_argument("--out", help="write <out>_t1.csv and <out>_t2.csv")
    parser.add_argument("--csv", nargs="+", help="summarise these earlier CSVs instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trim-stats", action="store_true", help="the trimming alone")
    parser.add_argument(
        "--score", action="store_true", help="add the dev rule's score and the time ratio"
    )
    parser.add_argument("--trim-search", type=int, default=20)
    parser.add_argument("--trim-reg", type=float, default=1e-4)
    parser.add_argument(
        "--trim-close", type=float, nargs="+", default=CLOSE, help="with --trim-stats"
    )
    parser.add_argument("--trim-far", type=float, nargs="+", default=FAR, help="with --trim-stats")
    args = parser.parse_args(argv)
    if args.trim_stats:
        names = args.images or (DEV if args.split == "dev" else HELDOUT)
        root = find_dataset(args.data_dir)
        close, far = args.trim_close, args.trim_far
        print(trim_stats(root, names, args.trim_search, args.trim_reg, close, far))
        return

    if args.csv:
        rows = [r for path in args.csv for r in read_csv(path)]
    else:
        if args.data_dir is None:
            parser.error("data_dir is needed unless --csv is given")
        root = find_dataset(args.data_dir)
        names = args.images or (DEV if args.split == "dev" else HELDOUT)
        rows = []
        for trimap in (1, 2):
            part = run_benchmark(
                root, args.methods, names, trimap=trimap, device=args.device, isolate=False
            )
            if args.out:
                write_csv(part, f"{args.out}_t{trimap}.csv")
            rows += part
    print(table(rows, score=args.score))


if __name__ == "__main__":
    main()
