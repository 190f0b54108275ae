"""``hrmatt sample DIR``: write the generated sample image and trimap."""

from __future__ import annotations

import argparse
import re


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 1536x2048, got {text!r}")
    h, w = int(match[1]), int(match[2])
    if min(h, w) < 16:
        raise argparse.ArgumentTypeError(f"the sample must be at least 16x16, got {h}x{w}")
    return h, w


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write sample_image.png (RGB) and sample_trimap.png (grey 0/128/255) into DIR: "
        "a synthetic furry object with thin strands and a soft veil."
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


def run(args: argparse.Namespace) -> int:
    from ..sample import write_sample

    image_path, trimap_path = write_sample(args.directory, shape=args.size, seed=args.seed)
    print(f"image written to {image_path}")
    print(f"trimap written to {trimap_path}")
    print(f"next: hrmatt matte {image_path} {trimap_path} -o alpha.png")
    return 0
