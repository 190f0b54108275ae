"""The ``hrmatt`` command line.

Arguments are parsed before anything heavy is imported (numpy, dask, torch, the
engine), so ``hrmatt --help`` and argument errors are instant: every subcommand lives in
its own module of this package, listed in :data:`COMMANDS`, and only the module of the
command being run is imported. A subcommand module defines ``HELP`` (one line),
``configure_parser(parser)`` and ``run(args) -> int``.

Every bad input (missing or unreadable file, unsupported extension, shape mismatch,
trimap outside the conventions, NaN in an image, unusable device) ends with one line
``hrmatt: error: <message>`` on stderr and exit status 2; Ctrl-C ends with status 130
and leaves no partial output.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand name -> (module, one-line help). Kept here, not in the modules, so that
#: listing the commands imports none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "matte": ("napari_hrmatt.cli.matte", "compute the alpha matte of IMAGE from TRIMAP"),
    "cutout": (
        "napari_hrmatt.cli.cutout",
        "estimate the foreground colours and write a cut-out (RGBA) or a composite",
    ),
    "sample": (
        "napari_hrmatt.cli.sample",
        "write the bundled sample image and trimap (generated, no download)",
    ),
    "bench": (
        "napari_hrmatt.cli.bench",
        "score models against PyMatting on the alphamatting.com training set",
    ),
    "train": (
        "napari_hrmatt.cli.train",
        "train the HDMatt-style network (see docs/deep_model.md)",
    ),
}

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``hrmatt`` parser.

    Parameters
    ----------
    command : str, optional
        The subcommand about to run: only its module is imported (to add its
        arguments); the others are listed by name and help only.
    """
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hrmatt",
        description="Alpha matting for images of any size, block by block.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            mod = importlib.import_module(module)
            mod.configure_parser(p)
            p.set_defaults(_run=mod.run)
    return parser


def error(message: str) -> int:
    """Print ``hrmatt: error: message`` on stderr; returns the bad-input exit status."""
    print(f"hrmatt: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    """Run ``hrmatt`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    from .._threads import use_passive_wait

    use_passive_wait()  # before anything imports torch (docs/engine.md, "Threads")
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
        return error(str(exc) or type(exc).__name__)
    except OSError as exc:  # permission denied, disk full: not the input's fault
        print(f"hrmatt: error: {exc}", file=sys.stderr)
        return 1
