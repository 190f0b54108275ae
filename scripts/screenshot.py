"""Re-create the napari screenshot in the docs: the widgets docked, the alpha layer shown.

Run from the repository root (needs the ``napari`` extra and a display; on a
headless machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py

It opens the bundled sample (768 x 1024 by default, for speed), docks
"Trimap tools" and "Alpha matting", runs the matting through the widget (the
same thread worker a user starts with the button), shows image, trimap and
alpha matte side by side and saves the whole window to
``docs/images/napari-hrmatt.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "napari-hrmatt.png"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1000), metavar=("W", "H"))
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=(768, 1024),
        metavar=("H", "W"),
        help="sample size (File > Open Sample gives 1536 x 2048; smaller is quicker on CPU)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for matting")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_hrmatt._sample_data import make_sample_data

    viewer = napari.Viewer(show=True, title="napari-hrmatt")
    viewer.window.resize(*args.size)
    for data, kwargs, layer_type in make_sample_data(tuple(args.shape)):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget("napari-hrmatt", "Trimap tools")
    dock, matting = viewer.window.add_plugin_dock_widget(
        "napari-hrmatt", "Alpha matting", tabify=True
    )
    matting.image.value = viewer.layers["hrmatt sample"]
    matting.trimap.value = viewer.layers["hrmatt sample trimap"]

    start = time.perf_counter()
    matting.run()
    while matting.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)
        if time.perf_counter() - start > args.timeout:
            matting.cancel()
            raise SystemExit(f"matting did not finish within {args.timeout} s")
    if "hrmatt sample alpha" not in viewer.layers:
        raise SystemExit(f"matting failed: {matting.status.value}")
    print(f"matting took {time.perf_counter() - start:.1f} s")

    # Grid view, two layers per cell from the bottom of the layer list:
    # [image, trimap over it] above [alpha matte].
    del viewer.layers["hrmatt sample alpha (ground truth)"]
    alpha = viewer.layers["hrmatt sample alpha"]
    viewer.layers.selection.active = alpha
    viewer.canvas.grid.stride = 2
    viewer.canvas.grid.shape = (2, 1)  # stacked: the canvas is taller than wide
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    dock.raise_()  # the matting tab in front
    for _ in range(20):  # let the canvas draw
        QApplication.processEvents()
        time.sleep(0.05)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False)
    print(f"wrote {args.output}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
