"""One option vocabulary for every ``hrmatt`` subcommand: argument types and option groups.

The same option means the same thing, with the same validation, wherever it appears
(``--device auto|cpu|cuda|cuda:N``, ``--chunk``, ``--workers``...).
"""

from __future__ import annotations

import argparse
import contextlib
import re

from .._default_model import DEFAULT_MODEL

__all__ = [
    "add_alpha_options",
    "add_inputs_and_output",
    "add_device",
    "device",
    "engine_settings",
    "megapixels",
    "non_negative_float",
    "non_negative_int",
    "positive_int",
    "alpha_kwargs",
]


def _whole_number(text: str, minimum: int, condition: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {condition}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0, "0 or more")


def add_inputs_and_output(parser: argparse.ArgumentParser, output: str) -> None:
    """``IMAGE TRIMAP -o OUTPUT`` (``output``: what OUTPUT holds, for the help)."""
    parser.add_argument("image", metavar="IMAGE", help="image file or Zarr store")
    parser.add_argument("trimap", metavar="TRIMAP", help="trimap file (same height and width)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help=f"where to write {output}: .png, .tif/.tiff, .zarr or .ome.zarr",
    )


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def megapixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected megapixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA exists is checked later)."""
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device,
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the model computes (default: auto = CUDA when available)",
    )


def add_alpha_options(parser: argparse.ArgumentParser) -> None:
    """The options of the alpha engine (model, blocks, global pass, device, workers)."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="matting model: ifm (information flow, default), cf (closed-form), hdmatt (network)",
    )
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the model, repeatable: e.g. weights=my.pt for hdmatt "
        "(your own trained weights), tol=1e-4 for cf",
    )
    parser.add_argument(
        "--chunk",
        type=positive_int,
        default=512,
        metavar="N",
        help="block size of the full-resolution pass in pixels (default: 512)",
    )
    parser.add_argument(
        "--overlap",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="block overlap in pixels (default: derived from the model)",
    )
    parser.add_argument(
        "--global-size",
        type=megapixels,
        default=1.0,
        metavar="MP",
        help="working size of the global pass in megapixels (default: 1.0)",
    )
    add_device(parser)
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="blocks computed in parallel (dask threads; default: one per CPU core); "
        "each gets cores/N torch threads",
    )
    parser.add_argument(
        "--labels",
        action="store_true",
        help="the trimap file holds labels (0 unknown, 1 background, 2 foreground)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def alpha_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`napari_hrmatt.estimate_alpha` from the alpha options."""
    from ..models import parse_options

    return {
        "model": args.model,
        "model_options": parse_options(args.model_option) or None,
        "chunks": args.chunk,
        "overlap": args.overlap,
        "global_size": args.global_size * 1e6,
        "device": args.device,
    }


def engine_settings(args: argparse.Namespace, *, local: bool = True):
    """dask settings for the run (a context manager).

    ``--workers`` sets the worker count of the threads scheduler: block tasks share the
    cores out among themselves (``_blocks.share_cores``), so the worker count is all dask
    needs. A ``local`` run (no dask.distributed client) gets the threads scheduler as
    its function and rechunking by tasks (what dask picks without a client), unless the
    dask configuration already sets them: left unset, or set by name, dask imports
    ``distributed`` (when installed) to look for a client, ~0.2 s of every
    ``hrmatt matte`` (docs/engine.md, "Whole process at 5-8 MP").
    """
    import dask
    import dask.threaded

    settings = {}
    if local and dask.config.get("scheduler", None) is None:
        settings["scheduler"] = dask.threaded.get  # the function "threads" names
    if local and dask.config.get("array.rechunk.method", None) is None:
        settings["array.rechunk.method"] = "tasks"
    if getattr(args, "workers", None) is not None:
        settings.update(scheduler=dask.threaded.get, num_workers=args.workers)
    return dask.config.set(settings) if settings else contextlib.nullcontext()
