"""``hrmatt train --out RUN``: train the HDMatt-style network (resumable, logged).

The data folder (the alphamatting.com training set and the background photo folders)
is given with ``--data-dir`` or, when that is absent, the environment variable
``HRMATT_DATA_DIR``; presets that train on real photos stop with one clear error
without it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ._options import add_device, non_negative_float, non_negative_int, positive_int

#: Environment variable naming the data folder when ``--data-dir`` is not given.
DATA_ENV = "HRMATT_DATA_DIR"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from ..training.config import PRESETS

    parser.description = (
        "Train the HDMatt-style network on composites of the alphamatting.com dev images "
        "(GT01-GT18 only) and generated mattes; resumable, logged to OUT/runs.jsonl. "
        "See docs/deep_model.md."
    )
    parser.add_argument("--out", type=Path, help="run folder (checkpoints, cache, runs.jsonl)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="starting config (default: gpu when CUDA is available, else cpu)",
    )
    parser.add_argument("--config", type=Path, help="JSON file of settings applied on the preset")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='override one setting, e.g. --set lr=5e-4 --set \'arch={"cpc": "none"}\'',
    )
    parser.add_argument("--steps", type=positive_int, metavar="N", help="total steps of the run")
    parser.add_argument("--seed", type=non_negative_int, metavar="N")
    parser.add_argument(
        "--workers", type=non_negative_int, metavar="N", help="data-loading processes"
    )
    add_device(parser)
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="torch CPU threads (on a busy CPU, 1 thread can be much faster than several)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get(DATA_ENV) or None,
        metavar="DIR",
        help="the data folder: alphamatting-training/ (or its folders) and the background "
        f"folders (default: ${DATA_ENV}); needed unless training on generated data only",
    )
    parser.add_argument(
        "--time-limit",
        type=non_negative_float,
        metavar="SECONDS",
        help="stop cleanly after this long (checkpoint + log); rerun to continue",
    )
    parser.add_argument("--restart", action="store_true", help="ignore OUT/last.pt")
    parser.add_argument(
        "--log", type=Path, action="append", default=[], help="also append the run record here"
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="WEIGHTS",
        help="write the weights file from OUT/best.pt (else last.pt) and exit",
    )
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _resolve_config(args: argparse.Namespace):
    from ..training import make_config

    preset = args.preset
    if preset is None:
        import torch

        preset = "gpu" if torch.cuda.is_available() else "cpu"
    overrides: dict = {}
    if args.config is not None:
        try:
            overrides.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read --config {args.config}: {exc}") from exc
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=JSON, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value  # a bare string
    for key, value in (("steps", args.steps), ("seed", args.seed), ("num_workers", args.workers)):
        if value is not None:
            overrides[key] = value
    return make_config(preset, overrides)


def run(args: argparse.Namespace) -> int:
    """Bad arguments or data raise ValueError / FileNotFoundError (exit 2)."""
    from ..training import export_weights, train

    config = _resolve_config(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    if args.out is None:
        raise ValueError("--out RUN_FOLDER is required (checkpoints and logs go there)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.export is not None:
        path = export_weights(args.out, args.export)
        print(f"weights written to {path}")
        return 0
    record = train(
        config,
        args.out,
        data_dir=args.data_dir,
        device=args.device,
        resume=not args.restart,
        time_limit=args.time_limit,
        log_paths=args.log,
        verbose=not args.quiet,
    )
    print(
        f"steps {record['start_step']}->{record['end_step']} of {record['target_steps']} "
        f"({record['stopped']}, {record['seconds']} s); record appended to "
        f"{Path(args.out) / 'runs.jsonl'}"
    )
    return 0
