"""``hrmatt cutout IMAGE TRIMAP -o OUTPUT``: foreground colours, then a cut-out or composite."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_alpha_options, add_inputs_and_output, alpha_kwargs, engine_settings

# Block edge of the foreground pass (at least this; its sweeps reach far, see
# docs/foreground.md, so larger blocks waste less on overlap).
_FOREGROUND_CHUNKS = 1024


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Estimate the foreground colours of IMAGE (multi-level method of Germer et al. "
        "2020) from its alpha matte and write an RGBA cut-out, or, with --background, the "
        "object composited over a new background (RGB). The alpha is computed from TRIMAP "
        "as by 'hrmatt matte', or read from --alpha (e.g. the matte 'hrmatt matte' just "
        "wrote). Block by block: memory is bounded by the chunk size."
    )
    add_inputs_and_output(p, "the cut-out or composite")
    p.add_argument(
        "--alpha",
        metavar="ALPHA",
        help="use this alpha matte (file or Zarr store, same size) instead of computing it",
    )
    p.add_argument(
        "--background",
        metavar="IMAGE_OR_COLOUR",
        help="composite over this image (same size) or colour (name, #rrggbb, r,g,b) "
        "instead of writing a cut-out",
    )
    add_alpha_options(p)


def _background(value: str | None, inputs: list):
    """A background file (checked to exist, added to ``inputs``), a colour, or None."""
    from ..compose import parse_color
    from ..io import READ_EXTENSIONS, open_image

    if value is None:
        return None
    # A background is a file if it exists or looks like one, else a colour ("0.5,0.5,1").
    if Path(value).exists() or value.lower().endswith(READ_EXTENSIONS):
        if not Path(value).exists():
            raise FileNotFoundError(f"background {value!r} does not exist")
        inputs.append(value)
        return open_image(value)
    return parse_color(value)


def run(args: argparse.Namespace) -> int:
    from ..io import check_output_path, open_image, open_trimap, save_image
    from ..pipeline import Run, colour_outputs, drive

    inputs = [args.image, args.trimap] + ([args.alpha] if args.alpha else [])
    if args.alpha and not Path(args.alpha).exists():
        raise FileNotFoundError(f"alpha {args.alpha!r} does not exist")
    background = _background(args.background, inputs)
    kwargs = alpha_kwargs(args)
    # Refuse a bad output before any computing.
    check_output_path(args.output, inputs=inputs)
    image = open_image(args.image)
    trimap = open_trimap(args.trimap, labels=args.labels)
    for name, other in (("trimap", trimap), ("background", background)):
        if other is not None and other.ndim > 1 and other.shape[:2] != image.shape[:2]:
            raise ValueError(
                f"{name} is {other.shape[0]}x{other.shape[1]} but the image is "
                f"{image.shape[0]}x{image.shape[1]}; they must be the same size"
            )
    out_dir = Path(args.output).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    run = Run(progress_bar=not args.quiet, directory=out_dir)
    try:
        with engine_settings(args):
            if args.alpha:
                alpha = open_image(args.alpha)
            else:
                alpha = drive(run.alpha(image, trimap, labels=args.labels, **kwargs))
                alpha = alpha.finest(args.chunk)
            outputs = colour_outputs(
                image,
                alpha,
                cutout=background is None,
                background=background,
                chunks=max(args.chunk, _FOREGROUND_CHUNKS),
                device=args.device,
            )
            ((what, result),) = outputs.items()
            out = save_image(result, args.output, inputs=inputs, progress=not args.quiet)
    finally:
        run.discard()
    print(f"{what} written to {out}")
    return 0
