"""The napari loop in pictures (docs/napari.md) and its numbers: paint, preview, run, re-run.

Run from the repository root (needs the ``napari`` extra and a display; on a headless
machine use Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/gallery.py
    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/gallery.py --measure

The gallery (default) opens the bundled sample (768 x 1024, for speed) in a shown
viewer, drives the widgets as a user would and saves four window screenshots to
``docs/images/``: painting a trimap with the legend and buttons, a "current view only"
preview over a zoomed region, the layers after two runs (the second replaced the
first), and the dock after a long status line (its width is printed before/after).

``--measure`` runs on the full 1536 x 2048 sample: a "current view only" preview and a
full run in the same process, then three full runs with the resident memory (RSS)
after each, and again after closing the result layers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def _pump(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _run(matting, timeout: float = 1800) -> float:
    """Press Run and wait for the result; returns the seconds it took."""
    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    matting.run()
    while matting.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - start > timeout:
            matting.cancel()
            raise SystemExit(f"matting did not finish within {timeout} s")
    if not matting.status.value.startswith("done"):
        raise SystemExit(f"matting failed: {matting.status.value}")
    return time.perf_counter() - start


def _rss_mb() -> str:
    """Resident memory now, and the peak so far (what the issue's numbers were)."""
    import resource

    import psutil

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return f"{psutil.Process().memory_info().rss / 2**20:.0f} MB (peak {peak:.0f} MB)"


def _viewer(shape, size):
    import tempfile

    import napari

    from napari_hrmatt import _widget
    from napari_hrmatt._sample_data import make_sample_data

    # Default settings, and the user's remembered ones left alone.
    settings = Path(tempfile.mkdtemp(prefix="hrmatt-gallery-")) / "matting.json"
    _widget.settings_path = lambda: settings

    viewer = napari.Viewer(show=True, title="napari-hrmatt")
    viewer.window.resize(*size)
    for data, kwargs, layer_type in make_sample_data(tuple(shape)):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    tools_dock, tools = viewer.window.add_plugin_dock_widget("napari-hrmatt", "Trimap tools")
    dock, matting = viewer.window.add_plugin_dock_widget(
        "napari-hrmatt", "Alpha matting", tabify=True
    )
    matting.image.value = viewer.layers["hrmatt sample"]
    matting.trimap.value = viewer.layers["hrmatt sample trimap"]
    matting.device.value = "cpu"
    return viewer, (tools_dock, tools), (dock, matting)


def _zoom_on_edge(viewer, shape) -> None:
    """Centre the camera on the sample's upper-left fur edge, zoomed so ~1/9 shows."""
    h, w = shape
    viewer.reset_view()
    viewer.camera.center = (0.3 * h, 0.33 * w)
    viewer.camera.zoom = viewer.camera.zoom * 3
    _pump(0.5)


def gallery(args) -> None:

    shape = tuple(args.shape)
    viewer, (tools_dock, tools), (dock, matting) = _viewer(shape, args.size)
    matting.replace.value = True
    matting.view_only.value = False
    out = args.output
    out.mkdir(parents=True, exist_ok=True)

    # 1. Painting: a new empty trimap, a few strokes of each class, the tools in front.
    viewer.layers["hrmatt sample trimap"].visible = False
    tools.image.value = viewer.layers["hrmatt sample"]
    layer = tools.new_trimap()
    h, w = shape
    step = layer.brush_size
    for y in range(0, h, step):  # strokes as a user paints them, brush-wide rows
        for x in range(0, w, step):
            inside = ((y - 0.55 * h) / (0.17 * h)) ** 2 + ((x - 0.5 * w) / (0.15 * w)) ** 2
            if inside < 1:
                layer.paint((y, x), 2, refresh=False)
            elif x < 0.08 * w or x > 0.92 * w or y < 0.06 * h:
                layer.paint((y, x), 1, refresh=False)
    layer.refresh()
    tools.trimap.value = layer
    tools.paint_bg.clicked()
    viewer.reset_view()
    _pump(0.5)
    tools_dock.show()
    tools_dock.raise_()
    _pump(1.0)
    viewer.screenshot(str(out / "napari-paint.png"), canvas_only=False)
    print(f"brush size {layer.brush_size} px on a {w} x {h} image")
    del viewer.layers[layer.name]
    viewer.layers["hrmatt sample trimap"].visible = True

    # 2. Preview of a zoomed region.
    dock.raise_()
    _zoom_on_edge(viewer, shape)
    matting.view_only.value = True
    seconds = _run(matting)
    print(f"preview (current view only): {seconds:.1f} s")
    viewer.camera.zoom = viewer.camera.zoom / 1.8  # the preview's edges in view
    _pump(1.0)
    viewer.screenshot(str(out / "napari-preview.png"), canvas_only=False)
    del viewer.layers["hrmatt sample (view) alpha"]

    # 3. Two full runs: the second replaces the first (same place in the layer list).
    matting.view_only.value = False
    viewer.reset_view()
    first = _run(matting)
    matting.global_size.value = 0.5
    second = _run(matting)
    names = [ly.name for ly in viewer.layers]
    print(f"two full runs: {first:.1f} s, {second:.1f} s; layers: {names}")
    viewer.layers["hrmatt sample trimap"].visible = False
    viewer.layers.selection.active = viewer.layers["hrmatt sample alpha"]
    _pump(1.0)
    viewer.screenshot(str(out / "napari-two-runs.png"), canvas_only=False)

    # 4. A long status line does not widen the dock.
    canvas = viewer.window._qt_viewer.canvas.native
    before = dock.width(), canvas.width()
    from napari_hrmatt._widget_parts import set_status

    set_status(
        matting.status,
        "done: added "
        + ", ".join(f"hrmatt sample (view) {k} alpha, cutout, composite" for k in range(4)),
    )
    _pump(1.0)
    after = dock.width(), canvas.width()
    print(f"dock/canvas width before a long status {before}, after {after}")
    viewer.screenshot(str(out / "napari-long-status.png"), canvas_only=False)
    for name in ("paint", "preview", "two-runs", "long-status"):
        print(f"wrote {out / f'napari-{name}.png'}")
    viewer.close()


def measure(args) -> None:
    from napari_hrmatt._widget_parts import release_memory

    shape = tuple(args.shape)
    viewer, _, (dock, matting) = _viewer(shape, args.size)
    matting.replace.value = False  # three separate results, as the issue measured
    print(f"sample {shape[1]} x {shape[0]}; RSS at start {_rss_mb()}")
    _zoom_on_edge(viewer, shape)
    matting.view_only.value = True
    rows, cols = matting._visible_slices(viewer.layers["hrmatt sample"], shape)
    seconds = _run(matting)
    px = (rows.stop - rows.start) * (cols.stop - cols.start)
    print(
        f"preview: {seconds:.1f} s for {px / 1e6:.2f} MP "
        f"({100 * px / (shape[0] * shape[1]):.0f} % of the image)"
    )
    del viewer.layers["hrmatt sample (view) alpha"]
    matting.view_only.value = False
    for k in range(3):
        seconds = _run(matting)
        print(f"full run {k + 1}: {seconds:.1f} s, RSS {_rss_mb()}")
    for layer in [ly for ly in viewer.layers if "alpha" in ly.name and "truth" not in ly.name]:
        viewer.layers.remove(layer)
    _pump(1.0)
    print(f"after closing the result layers: RSS {_rss_mb()}")
    release_memory()
    print(f"after release_memory() again: RSS {_rss_mb()}")
    viewer.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=IMAGES)
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1000), metavar=("W", "H"))
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--measure", action="store_true", help="timings and memory instead")
    args = parser.parse_args(argv)
    if args.shape is None:
        args.shape = (1536, 2048) if args.measure else (768, 1024)
    (measure if args.measure else gallery)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
