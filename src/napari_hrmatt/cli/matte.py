"""``hrmatt matte IMAGE TRIMAP -o OUTPUT``: compute an alpha matte, block by block."""

from __future__ import annotations

import argparse
import contextlib
import os

from ._options import add_alpha_options, add_inputs_and_output, alpha_kwargs, engine_settings


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compute the alpha matte of IMAGE (PNG, JPEG, TIFF, Zarr/OME-Zarr; grey, RGB "
        "or RGBA) from TRIMAP: a downsampled global solve, then a full-resolution "
        "pass over overlapping blocks. The output format follows OUTPUT's extension."
    )
    p.epilog = (
        "Trimap files are grey: 0 = background, 255 (65535 for 16-bit, 1.0 for float) "
        "= foreground, anything else unknown. With --labels: 0 = unknown, "
        "1 = background, 2 = foreground. Memory is bounded by the chunk size times "
        "the number of workers, whatever the image size. A .zarr/.ome.zarr output is a "
        "resumable run: the same command again computes only the blocks that are missing "
        "or whose inputs changed (after an interruption, or a trimap edit); PNG and TIFF "
        "are written whole each time."
    )
    add_inputs_and_output(p, "the alpha")
    add_alpha_options(p)
    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 16),
        default=None,
        help="bits per sample of the written alpha (default: 8 for PNG/TIFF, float32 for Zarr)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="Zarr output: recompute every block, even those the store already holds",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="run on this dask.distributed scheduler (default: $DASK_SCHEDULER_ADDRESS "
        "if set, else local threads); the output must be on a file system the workers "
        "share",
    )


def run(args: argparse.Namespace) -> int:
    from ..io import check_output_path, open_image, open_trimap

    inputs = (args.image, args.trimap)
    kwargs = alpha_kwargs(args)
    # Refuse a bad output before the (eager, possibly long) global pass.
    out = check_output_path(args.output, inputs=inputs)
    address = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address and args.workers is not None:
        raise ValueError("--workers applies to local runs; on a cluster its workers decide")
    resumable = out.name.lower().endswith(".zarr")
    with _cluster(address), engine_settings(args, local=address is None):
        image = open_image(args.image)
        trimap = open_trimap(args.trimap, labels=args.labels)
        if resumable:
            from ..runstore import matte_to_store

            report = matte_to_store(
                image,
                trimap,
                out,
                bit_depth=args.bit_depth,
                force=args.force,
                progress=not args.quiet,
                **kwargs,
            )
            for note in report.notes:
                print(note)
            print(report.summary())
        else:
            from ..engine import estimate_alpha
            from ..io import save_alpha

            alpha = estimate_alpha(image, trimap, compute=False, **kwargs)
            out = save_alpha(
                alpha, out, inputs=inputs, bit_depth=args.bit_depth, progress=not args.quiet
            )
    print(f"alpha written to {out}")
    return 0


@contextlib.contextmanager
def _cluster(address: str | None):
    """A dask.distributed client for the run (dask then computes on it), or nothing."""
    if not address:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs the 'distributed' package") from None
    try:
        client = Client(address, timeout="5s")
    except OSError as exc:
        raise ValueError(f"cannot reach the dask scheduler at {address!r}: {exc}") from None
    with client:
        yield client
