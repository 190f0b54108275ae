"""``hrmatt matte IMAGE TRIMAP -o OUTPUT``: compute an alpha matte, block by block."""

from __future__ import annotations

import argparse

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
        "the number of workers, whatever the image size."
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


def run(args: argparse.Namespace) -> int:
    from ..engine import estimate_alpha
    from ..io import check_output_path, open_image, open_trimap, save_alpha

    inputs = (args.image, args.trimap)
    kwargs = alpha_kwargs(args)
    # Refuse a bad output before the (eager, possibly long) global pass.
    check_output_path(args.output, inputs=inputs)
    with engine_settings(args):
        image = open_image(args.image)
        trimap = open_trimap(args.trimap, labels=args.labels)
        alpha = estimate_alpha(image, trimap, compute=False, **kwargs)
        out = save_alpha(
            alpha,
            args.output,
            inputs=inputs,
            bit_depth=args.bit_depth,
            progress=not args.quiet,
        )
    print(f"alpha written to {out}")
    return 0
