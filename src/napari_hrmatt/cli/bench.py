"""``hrmatt bench DATA_DIR``: score models against PyMatting on alphamatting.com."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._options import add_device, non_negative_float, positive_int


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from ..alphamatting import SPLITS

    parser.description = (
        "Score our models and PyMatting's solvers on the alphamatting.com lowres training "
        "set: SAD, MSE, Grad, Conn (unknown region, DIM conventions), time and peak RSS."
    )
    parser.add_argument(
        "data_dir",
        type=Path,
        help="folder holding input_training_lowres/, gt_training_lowres/ and "
        "trimap_training_lowres/ (or its parent with alphamatting-training/)",
    )
    parser.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default="all",
        help="dev = GT01-GT18, heldout = GT19-GT27 (default: all)",
    )
    parser.add_argument("--trimap", type=int, choices=(1, 2), default=1, help="Trimap1 or 2")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="hrmatt-<model> and/or pymatting-{cf,knn,lkm,rw,lbdm} (default: all "
        "available); hrmatt-<model>:key=value,... passes model options, e.g. "
        "hrmatt-hdmatt:weights=my.pt",
    )
    parser.add_argument("--images", nargs="+", metavar="GTnn", help="only these images")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N images per split"
    )
    parser.add_argument("--out", type=Path, help="write per-image results to this CSV")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="add the rows of earlier --out files (same trimap and images; methods not "
        "run now) to the table and the CSV, e.g. to add a model without re-running PyMatting",
    )
    parser.add_argument(
        "--timeout",
        type=non_negative_float,
        default=600.0,
        metavar="SECONDS",
        help="seconds per image before a method is stopped and dropped (default 600)",
    )
    add_device(parser)
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every method in this process (faster start; peak memory then "
        "includes what earlier methods left behind)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """0 on success, 1 if any image failed; bad arguments or data raise (exit 2)."""
    from .. import bench
    from ..alphamatting import find_dataset

    root = find_dataset(args.data_dir)
    methods = args.methods or bench.available_methods()
    bench.check_methods(methods)
    names = bench.select_images(
        root, args.split, args.trimap, images=args.images, limit=args.limit
    )
    merged = bench.read_merged(args.merge or (), args.trimap, names, methods)
    rows = bench.run_benchmark(
        root,
        methods,
        names,
        trimap=args.trimap,
        device=args.device,
        timeout=args.timeout,
        isolate=not args.no_isolate,
        progress=not args.quiet,
    )
    rows += merged
    probes = sorted({r["memory_probe"] for r in rows if r.get("memory_probe")})
    print(
        f"alphamatting.com lowres, Trimap{args.trimap}, {len(names)} images; "
        f"errors over the unknown region (MSE x1e3); peak RSS per call from "
        f"{'/'.join(probes) or '-'}{', in-process' if args.no_isolate else ''}"
        + (f"; {len(merged)} rows merged from {len(args.merge)} CSV file(s)" if merged else "")
        + "\n"
    )
    print(bench.format_table(bench.summarize(rows)))
    for r in rows:
        if r.get("status") != "ok":
            print(
                f"{r['method']} {r['image']}: {r['status']}: {r.get('error', '')}", file=sys.stderr
            )
    if args.out is not None:
        bench.write_csv(rows, args.out)
        print(f"\nper-image results: {args.out}")
    return 1 if any(r.get("status") == "error" for r in rows) else 0
