"""Make docs/images/foreground_before_after.png: why foreground colours matter.

The bundled generated sample (``napari_hrmatt.sample``, true alpha, F and B known) is
put on a new, plain background three ways, shown on a crop through the hair:

1. the input image;
2. naive: ``alpha I + (1 - alpha) B_new`` (the old teal background shows in the hair);
3. ``alpha F_est + (1 - alpha) B_new`` with ``F_est`` from ``estimate_foreground``;
4. the truth ``alpha F + (1 - alpha) B_new``.

The true alpha is used throughout so that the figure shows the foreground estimate
alone. Usage::

    .venv/bin/python benchmarks/figure_foreground.py [OUTPUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "docs" / "images" / "foreground_before_after.png"
NEW_BACKGROUND = (0.95, 0.93, 0.88)  # off-white paper


def main(argv=None) -> int:
    from napari_hrmatt import composite, estimate_foreground, make_sample

    argv = list(sys.argv[1:] if argv is None else argv)
    out = Path(argv[0]) if argv else OUTPUT
    image, _, alpha, fg, _ = make_sample((1536, 2048), seed=0, return_colors=True)
    fg_est = estimate_foreground(image, alpha, device="cpu")
    panels = {
        "input image": image / 255.0,
        "naive: F = image": composite(image, alpha, NEW_BACKGROUND),
        "estimated F": composite(fg_est, alpha, NEW_BACKGROUND),
        "true F": composite(fg, alpha, NEW_BACKGROUND),
    }
    soft = (alpha > 0) & (alpha < 1)
    err = {
        name: float(np.abs(panels[name] - panels["true F"])[soft].mean())
        for name in ("naive: F = image", "estimated F")
    }
    # A crop through the upper-left hair, magnified 2x (nearest) so strands show.
    y0, x0, size = 380, 700, 260
    scale, pad, label_h = 2, 8, 26
    tile = size * scale
    sheet = Image.new("RGB", (len(panels) * (tile + pad) + pad, tile + label_h + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, rgb) in enumerate(panels.items()):
        crop = np.rint(255 * np.clip(rgb[y0 : y0 + size, x0 : x0 + size], 0, 1))
        im = Image.fromarray(crop.astype(np.uint8)).resize((tile, tile), Image.Resampling.NEAREST)
        x = pad + i * (tile + pad)
        sheet.paste(im, (x, pad + label_h))
        text = name if name not in err else f"{name} (mean err {err[name]:.3f})"
        draw.text((x + 4, pad + 6), text, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"figure written to {out}")
    for name, value in err.items():
        print(f"mean |composite - truth| over 0 < alpha < 1, {name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
