"""The ``hrmatt`` command line.

Arguments are parsed before anything heavy is imported (numpy, dask, torch, the
engine), so ``hrmatt --help`` and argument errors are instant.

Subcommands:

* ``hrmatt matte IMAGE TRIMAP -o OUTPUT``: compute an alpha matte, block by block.
* ``hrmatt sample DIR``: write the bundled (generated) sample image and trimap.
* Commands provided by other modules, listed in :data:`PLUGIN_COMMANDS`: a module
  defines ``configure_parser(parser)`` and ``run(args) -> int`` and is imported only
  when its command is run.

Every bad input (missing or unreadable file, unsupported extension, shape mismatch,
trimap outside the conventions, NaN in an image, unusable device) ends with one line
``hrmatt: error: <message>`` on stderr and exit status 2; Ctrl-C ends with status 130
and leaves no partial output.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys

__all__ = ["PLUGIN_COMMANDS", "build_parser", "main"]

#: Subcommands implemented elsewhere: name -> (module, one-line help). The module must
#: define ``configure_parser(parser)`` and ``run(args) -> int``; a command whose module
#: is missing or lacks them is simply not offered.
PLUGIN_COMMANDS: dict[str, tuple[str, str]] = {
    "bench": (
        "napari_hrmatt.bench",
        "score models against PyMatting on the alphamatting.com training set",
    ),
    "cutout": (
        "napari_hrmatt.foreground",
        "estimate the foreground colours and write a cut-out (RGBA) image",
    ),
    "train": (
        "napari_hrmatt.train",
        "train the HDMatt-style network (see docs/deep_model.md)",
    ),
}

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _megapixels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected megapixels, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 1536x2048, got {text!r}")
    h, w = int(match[1]), int(match[2])
    if min(h, w) < 16:
        raise argparse.ArgumentTypeError(f"the sample must be at least 16x16, got {h}x{w}")
    return h, w


def _plugin_available(module: str) -> bool:
    """Whether ``module`` exists and defines ``configure_parser`` and ``run``.

    Decided from its source text so that listing commands imports nothing.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return False
    try:
        with open(spec.origin, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return False
    return all(
        re.search(rf"^def {name}\(", source, re.MULTILINE) for name in ("configure_parser", "run")
    )


def _add_matte(sub) -> None:
    p = sub.add_parser(
        "matte",
        help="compute the alpha matte of IMAGE from TRIMAP",
        description=(
            "Compute the alpha matte of IMAGE (PNG, JPEG, TIFF, Zarr/OME-Zarr; grey, RGB "
            "or RGBA) from TRIMAP: a downsampled global solve, then a full-resolution "
            "pass over overlapping blocks. The output format follows OUTPUT's extension."
        ),
        epilog=(
            "Trimap files are grey: 0 = background, 255 (65535 for 16-bit, 1.0 for float) "
            "= foreground, anything else unknown. With --labels: 0 = unknown, "
            "1 = background, 2 = foreground. Memory is bounded by the chunk size times "
            "the number of workers, whatever the image size."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="image file or Zarr store")
    p.add_argument("trimap", metavar="TRIMAP", help="trimap file (same height and width)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="where to write the alpha: .png, .tif/.tiff, .zarr or .ome.zarr",
    )
    p.add_argument("--model", default="cf", help="matting model (default: cf, closed-form)")
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the model, repeatable: e.g. weights=my.pt for hdmatt "
        "(your own trained weights), tol=1e-4 for cf",
    )
    p.add_argument(
        "--chunk",
        type=_positive_int,
        default=512,
        metavar="N",
        help="block size of the full-resolution pass in pixels (default: 512)",
    )
    p.add_argument(
        "--overlap",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="block overlap in pixels (default: derived from the model)",
    )
    p.add_argument(
        "--global-size",
        type=_megapixels,
        default=1.0,
        metavar="MP",
        help="working size of the global pass in megapixels (default: 1.0)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model computes (default: auto = CUDA when available)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="blocks computed in parallel (dask threads; default: one per CPU core); "
        "each gets cores/N torch threads",
    )
    p.add_argument(
        "--bit-depth",
        type=int,
        choices=(8, 16),
        default=None,
        help="bits per sample of the written alpha (default: 8 for PNG/TIFF, float32 for Zarr)",
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="the trimap file holds labels (0 unknown, 1 background, 2 foreground)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(_run=_run_matte)


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="write the bundled sample image and trimap (generated, no download)",
        description=(
            "Write sample_image.png (RGB) and sample_trimap.png (grey 0/128/255) into DIR: "
            "a synthetic furry object with thin strands and a soft veil."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="folder to write into (created)")
    p.add_argument(
        "--size",
        type=_size,
        default=(1536, 2048),
        metavar="HxW",
        help="height x width in pixels (default: 1536x2048)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(_run=_run_sample)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``hrmatt`` parser.

    Parameters
    ----------
    command : str, optional
        The subcommand about to run. Only a plugin command named here has its module
        imported (to add its arguments); the others are listed by name and help only.
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hrmatt",
        description="Alpha matting for images of any size, block by block.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_matte(sub)
    _add_sample(sub)
    for name, (module, help_text) in PLUGIN_COMMANDS.items():
        if not _plugin_available(module):
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            mod = importlib.import_module(module)
            mod.configure_parser(p)
            p.set_defaults(_run=mod.run)
    return parser


def _error(message: str) -> int:
    print(f"hrmatt: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run_matte(args: argparse.Namespace) -> int:
    import dask

    from .engine import estimate_alpha
    from .io import check_output_path, open_image, open_trimap, save_alpha
    from .models import parse_options

    inputs = (args.image, args.trimap)
    options = parse_options(args.model_option)
    # Refuse a bad output before the (eager, possibly long) global pass.
    check_output_path(args.output, inputs=inputs)
    settings: dict = {}
    if args.workers is not None:
        import torch

        settings = {"scheduler": "threads", "num_workers": args.workers}
        # Blocks run in parallel threads: share the cores out instead of
        # oversubscribing them with cores x workers torch threads.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    with dask.config.set(settings):
        image = open_image(args.image)
        trimap = open_trimap(args.trimap, labels=args.labels)
        alpha = estimate_alpha(
            image,
            trimap,
            model=args.model,
            model_options=options or None,
            chunks=args.chunk,
            overlap=args.overlap,
            global_size=args.global_size * 1e6,
            device=args.device,
            compute=False,
        )
        out = save_alpha(
            alpha,
            args.output,
            inputs=inputs,
            bit_depth=args.bit_depth,
            progress=not args.quiet,
        )
    print(f"alpha written to {out}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    from .sample import write_sample

    image_path, trimap_path = write_sample(args.directory, shape=args.size, seed=args.seed)
    print(f"image written to {image_path}")
    print(f"trimap written to {trimap_path}")
    print(f"next: hrmatt matte {image_path} {trimap_path} -o alpha.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``hrmatt`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("hrmatt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        # ValueError covers TrimapError; RuntimeError an unusable --device.
        return _error(str(exc) or type(exc).__name__)
    except OSError as exc:  # permission denied, disk full: not the input's fault
        print(f"hrmatt: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
