"""Widget tests: trimap tools and the matting panel in a real napari viewer.

Need napari, Qt and a display: run under Xvfb (``xvfb-run -a pytest ...``); Qt's
offscreen platform has no OpenGL context, so adding a layer fails there.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("qtpy")

from napari_hrmatt import pipeline  # noqa: E402
from napari_hrmatt._layers import as_dask  # noqa: E402
from napari_hrmatt.engine import estimate_alpha  # noqa: E402
from napari_hrmatt.sample import make_sample  # noqa: E402
from napari_hrmatt.trimap import trimap_from_mask, trimap_to_labels  # noqa: E402

pytestmark = pytest.mark.napari

SCALE, TRANSLATE = (0.5, 2.0), (10.0, -4.0)
TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def settings_file(tmp_path, monkeypatch):
    """Widgets remember settings in a temporary file, never the user's config dir."""
    from napari_hrmatt import _widget

    path = tmp_path / "config" / "matting.json"
    monkeypatch.setattr(_widget, "settings_path", lambda: path, raising=False)
    return path


@pytest.fixture(scope="module")
def sample():
    image, trimap, alpha = make_sample((96, 128), seed=5)
    return image, trimap_to_labels(trimap), alpha


@pytest.fixture
def viewer(make_napari_viewer, sample):
    v = make_napari_viewer()
    image, labels, _ = sample
    v.add_image(image, name="photo", rgb=True, scale=SCALE, translate=TRANSLATE)
    return v


@pytest.fixture
def notifications(monkeypatch):
    """Messages passed to napari's show_error / show_info by the widgets."""
    from napari_hrmatt import _trimap_widget, _widget, _widget_parts

    seen = {"error": [], "info": []}
    for module in (_widget, _widget_parts, _trimap_widget):
        for kind in ("error", "info"):
            monkeypatch.setattr(module, f"show_{kind}", seen[kind].append, raising=False)
    return seen


def add_trimap(viewer, labels, name="photo trimap"):
    return viewer.add_labels(labels, name=name, scale=SCALE, translate=TRANSLATE)


def matting_widget(viewer, trimap_layer, **values):
    from napari_hrmatt._widget import MattingWidget

    w = MattingWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = viewer.layers["photo"]
    w.trimap.value = trimap_layer
    w.device.value = "cpu"
    for key, value in values.items():
        getattr(w, key).value = value
    return w


def record_statuses(monkeypatch):
    """Every status line the widgets show, in order."""
    from napari_hrmatt import _widget

    seen, real = [], _widget.set_status

    def record(label, text):
        seen.append(text)
        real(label, text)

    monkeypatch.setattr(_widget, "set_status", record)
    return seen


def wait_done(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)


# --------------------------------------------------------------------------- trimap tools


def test_new_trimap_matches_image_and_has_class_colours(viewer):
    from napari_hrmatt._trimap_widget import TrimapWidget

    w = TrimapWidget(viewer)
    w.image.value = viewer.layers["photo"]
    layer = w.new_trimap()
    assert isinstance(layer, napari.layers.Labels)
    assert layer.data.shape == (96, 128) and not layer.data.any()
    np.testing.assert_allclose(layer.scale, SCALE)
    np.testing.assert_allclose(layer.translate, TRANSLATE)
    cmap = layer.colormap
    assert cmap.map(np.array([0]))[0][3] == 0  # unknown: transparent
    bg, fg = cmap.map(np.array([1]))[0], cmap.map(np.array([2]))[0]
    assert bg[3] == fg[3] == 1 and not np.allclose(bg, fg)
    assert layer.selected_label == 2 and w.trimap.value is layer


def test_new_large_trimap_is_a_paintable_zarr_array(viewer, monkeypatch):
    from napari_hrmatt._trimap_widget import TrimapWidget

    monkeypatch.setattr(pipeline, "IN_MEMORY_PIXELS", 0)
    w = TrimapWidget(viewer)
    w.image.value = viewer.layers["photo"]
    layer = w.new_trimap()
    assert type(layer.data).__module__.startswith("zarr")
    layer.paint((40, 50), 1, refresh=False)
    assert layer.data[40, 50] == 1 and layer.data[0, 0] == 0


def test_trimap_from_labels_mask_has_band(viewer):
    from napari_hrmatt._trimap_widget import TrimapWidget

    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:90] = 3  # any non-zero label is foreground
    viewer.add_labels(mask, name="mask", scale=SCALE, translate=TRANSLATE)
    w = TrimapWidget(viewer)
    w.mask.value = viewer.layers["mask"]
    w.band.value = 4
    layer = w.trimap_from_mask()
    t = layer.data
    assert t[50, 65] == 2 and t[5, 5] == 1  # deep inside / far outside
    assert t[30, 65] == 0 and t[29, 65] == 0  # the band straddles the edge
    np.testing.assert_array_equal(t, trimap_to_labels(trimap_from_mask(mask > 0, band=4)))
    np.testing.assert_allclose(layer.scale, SCALE)


def test_trimap_from_shapes_uses_image_pixel_grid(viewer):
    from napari_hrmatt._trimap_widget import TrimapWidget

    # A rectangle drawn in world coordinates over the scaled image.
    rows, cols = (20, 60), (30, 100)  # image pixels
    world = [
        [TRANSLATE[0] + r * SCALE[0], TRANSLATE[1] + c * SCALE[1]]
        for r, c in [
            (rows[0], cols[0]),
            (rows[0], cols[1]),
            (rows[1], cols[1]),
            (rows[1], cols[0]),
        ]
    ]
    viewer.add_shapes([np.array(world)], shape_type="rectangle", name="outline")
    w = TrimapWidget(viewer)
    w.image.value = viewer.layers["photo"]
    w.mask.value = viewer.layers["outline"]
    w.band.value = 3
    t = w.trimap_from_mask().data
    assert t.shape == (96, 128)
    assert t[40, 65] == 2 and t[5, 5] == 1 and t[90, 120] == 1
    assert t[20, 65] == 0 and t[40, 30] == 0  # band on the drawn edges


def test_import_export_trimap_round_trip(viewer, sample, tmp_path, notifications):
    from napari_hrmatt._trimap_widget import TrimapWidget

    _, labels, _ = sample
    layer = add_trimap(viewer, labels)
    w = TrimapWidget(viewer)
    w.trimap.value = layer
    w.export_path.value = tmp_path / "out_trimap.png"
    assert w.export_trimap() == tmp_path / "out_trimap.png"
    w.image.value = viewer.layers["photo"]
    w.import_path.value = tmp_path / "out_trimap.png"
    imported = w.import_trimap()
    assert imported is not None, notifications
    np.testing.assert_array_equal(imported.data, labels)
    np.testing.assert_allclose(imported.scale, SCALE)  # placed on the matching image


# --------------------------------------------------------------------------- matting


def test_matting_adds_alpha_layer(viewer, sample, qtbot):
    image, labels, true_alpha = sample
    before = len(viewer.layers)
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64)
    w.run()
    assert w.worker is not None and not w.run_button.enabled
    wait_done(qtbot, w)
    assert len(viewer.layers) == before + 2
    alpha = viewer.layers["photo alpha"]
    assert isinstance(alpha, napari.layers.Image)
    np.testing.assert_allclose(alpha.scale, SCALE)
    np.testing.assert_allclose(alpha.translate, TRANSLATE)
    assert tuple(alpha.contrast_limits) == (0.0, 1.0)
    assert alpha.colormap.name == "gray"
    expected = estimate_alpha(
        as_dask(image, 64),
        as_dask(labels, 64),
        chunks=64,
        labels=True,
        device="cpu",
        compute=True,
    )
    np.testing.assert_array_equal(np.asarray(alpha.data), expected)
    unknown = labels == 0
    assert np.abs(np.asarray(alpha.data) - true_alpha)[unknown].mean() < 0.1
    assert w.run_button.enabled and not w.cancel_button.enabled
    assert w.status.value.startswith("done")


def test_matting_with_the_deep_model(viewer, sample, qtbot):
    """The shipped network is offered and runs from the widget like the solver."""
    image, labels, true_alpha = sample
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64)
    assert "hdmatt" in w.model.choices
    w.model.value = "hdmatt"
    w.run()
    wait_done(qtbot, w)
    alpha = np.asarray(viewer.layers["photo alpha"].data)
    expected = estimate_alpha(image, labels, model="hdmatt", chunks=64, labels=True, device="cpu")
    np.testing.assert_allclose(alpha, expected, atol=1e-6)
    assert np.abs(alpha - true_alpha)[labels == 0].mean() < 0.15


def test_own_weights_file_is_passed_and_checked(viewer, sample, qtbot, notifications, tmp_path):
    image, labels, _ = sample
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64)
    assert w.weights.native.isHidden()  # (viewer not shown: ask Qt, not .visible)
    w.model.value = "hdmatt"
    assert not w.weights.native.isHidden()
    w.weights.value = tmp_path / "mine.pt"  # does not exist
    before = len(viewer.layers)
    w.run()
    if w.worker is not None:
        wait_done(qtbot, w)
    assert len(viewer.layers) == before
    assert any("no HDMatt weights file" in m for m in notifications["error"])
    w.model.value = "cf"
    assert w.weights.native.isHidden() and w._model_options() is None


def test_matting_large_result_is_lazy_multiscale(viewer, sample, qtbot, monkeypatch):
    monkeypatch.setattr(pipeline, "IN_MEMORY_PIXELS", 0)
    monkeypatch.setattr(pipeline, "PYRAMID_MAX_SIDE", 64)
    _, labels, _ = sample
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64)
    w.run()
    wait_done(qtbot, w)
    alpha = viewer.layers["photo alpha"]
    assert alpha.multiscale and len(alpha.data) == 2
    assert alpha.data[0].shape == (96, 128) and type(alpha.data[0]).__module__.startswith("dask")
    np.testing.assert_allclose(alpha.scale, SCALE)


def test_cancel_mid_run_adds_no_layer(viewer, sample, qtbot, notifications, monkeypatch):
    monkeypatch.setattr(pipeline, "IN_MEMORY_PIXELS", 0)  # so a temp store exists to clean up
    _, labels, _ = sample
    before = len(viewer.layers)
    # 3 x 4 blocks; results kept side by side, so no run store: a temporary result store
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=32, replace=False)
    w.batch = 1  # one block per step, so the run can stop between blocks
    seen, stores = [], []
    show_progress = w._on_progress

    def cancel_after_first_block(step):
        show_progress(step)
        seen.append(step)
        if step.description == "alpha" and not stores:
            stores.extend(w.job._run.stores)
            w.cancel()

    w._on_progress = cancel_after_first_block
    w.run()
    wait_done(qtbot, w)
    assert len(viewer.layers) == before + 1  # only the trimap we added
    assert "photo alpha" not in viewer.layers
    blocks = [s for s in seen if s.description == "alpha"]
    assert 1 <= len(blocks) < blocks[0].total  # stopped before the end
    assert stores and not stores[0].path.exists()  # partial result deleted
    assert w.status.value == "cancelled" and w.run_button.enabled
    assert any("cancelled" in m for m in notifications["info"])


def test_cancelled_run_resumes_from_its_run_store(viewer, sample, qtbot, notifications):
    """With "replace" (a run store), a cancelled run keeps its blocks for the next run."""
    _, labels, _ = sample
    # "cf": its small overlap keeps 3 x 4 blocks of 32 px (block mechanics, any model)
    w = matting_widget(viewer, add_trimap(viewer, labels), model="cf", chunk=32)
    w.batch = 1
    show_progress = w._on_progress

    def cancel_after_two_blocks(step):
        show_progress(step)
        if step.description == "alpha" and step.step == (2, 12):
            w.cancel()

    w._on_progress = cancel_after_two_blocks
    w.run()
    wait_done(qtbot, w)
    assert w.status.value == "cancelled" and "photo alpha" not in viewer.layers
    w._on_progress = show_progress
    w.run()
    wait_done(qtbot, w)
    found = re.search(r"recomputed (\d+) of 12 alpha blocks", w.status.value)
    assert found and 9 <= int(found.group(1)) <= 10, w.status.value  # 1 in flight
    assert "photo alpha" in viewer.layers


def test_view_only_preview_matches_crop(make_napari_viewer, sample, qtbot, notifications):
    image, labels, _ = sample
    # Shown (under Xvfb), so the canvas draws and layers know what is visible.
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="photo", rgb=True, scale=SCALE, translate=TRANSLATE)
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64, view_only=True)
    # Centre the camera on pixel (48, 64) and zoom in so only part of the image shows.
    viewer.scene.camera.center = (TRANSLATE[0] + 48 * SCALE[0], TRANSLATE[1] + 64 * SCALE[1])
    viewer.scene.camera.zoom = 12
    qtbot.wait(200)
    rows, cols = w._visible_slices(viewer.layers["photo"], (96, 128))
    assert 0 < rows.stop - rows.start < 96 or 0 < cols.stop - cols.start < 128
    w.run()
    wait_done(qtbot, w)
    assert w.status.value.startswith("done"), notifications
    preview = viewer.layers["photo (view) alpha"]
    assert preview.data.shape == (rows.stop - rows.start, cols.stop - cols.start)
    np.testing.assert_allclose(
        preview.translate,
        (TRANSLATE[0] + rows.start * SCALE[0], TRANSLATE[1] + cols.start * SCALE[1]),
    )
    # The view fits the preview's pixel budget: one full-resolution solve of the crop.
    crop = estimate_alpha(image[rows, cols], labels[rows, cols], labels=True, device="cpu")
    np.testing.assert_array_equal(np.asarray(preview.data), crop)
    assert "resolution" not in w.status.value


def test_zoomed_out_preview_is_a_coarse_solve_placed_on_its_cells(
    make_napari_viewer, sample, qtbot, notifications, monkeypatch
):
    """A view larger than the preview budget is matted downsampled, in one pass, and the
    layer sits on the cells it averages (scale x f, centred)."""
    from napari_hrmatt import _widget
    from napari_hrmatt.pipeline import preview_alpha

    monkeypatch.setattr(_widget, "PREVIEW_GLOBAL_SIZE", 3000)  # the 96 x 128 view: f = 2
    image, labels, _ = sample
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="photo", rgb=True, scale=SCALE, translate=TRANSLATE)
    w = matting_widget(viewer, add_trimap(viewer, labels), view_only=True, cutout=True)
    viewer.reset_view()
    qtbot.wait(200)
    rows, cols = w._visible_slices(viewer.layers["photo"], (96, 128))
    w.run()
    wait_done(qtbot, w)
    expected, _, f = preview_alpha(
        image[rows, cols], labels[rows, cols], labels=True, global_size=3000, device="cpu"
    )
    assert f > 1 and f"1/{f} resolution" in w.status.value, w.status.value
    alpha = viewer.layers["photo (view) alpha"]
    np.testing.assert_array_equal(np.asarray(alpha.data), expected)
    np.testing.assert_allclose(alpha.scale, np.multiply(SCALE, f))
    origin = np.add(TRANSLATE, np.multiply(SCALE, (rows.start, cols.start)))
    np.testing.assert_allclose(alpha.translate, origin + np.multiply(SCALE, (f - 1) / 2))
    cutout = viewer.layers["photo (view) cutout"]
    assert cutout.data.shape == (*expected.shape, 4)
    np.testing.assert_allclose(cutout.scale, alpha.scale)
    assert alpha.metadata["napari_hrmatt_run"]["factor"] == f


# --------------------------------------------------------------------------- bad input


def test_no_trimap_layer_notifies(viewer, notifications):
    from napari_hrmatt._widget import MattingWidget

    w = MattingWidget(viewer)
    w.image.value = viewer.layers["photo"]
    assert w.trimap.value is None
    assert w.run() is None
    assert w.worker is None
    assert len(notifications["error"]) == 1 and "no trimap layer" in notifications["error"][0]


def test_shape_mismatch_notifies(viewer, sample, notifications):
    _, labels, _ = sample
    w = matting_widget(viewer, add_trimap(viewer, labels[:80]))
    assert w.run() is None
    (message,) = notifications["error"]
    assert "80 x 128" in message and "96 x 128" in message


def test_wrong_label_values_notify_without_layer(viewer, sample, qtbot, notifications):
    _, labels, _ = sample
    bad = labels.copy()
    bad[:10, :10] = 5
    before = len(viewer.layers)
    w = matting_widget(viewer, add_trimap(viewer, bad))
    w.run()
    wait_done(qtbot, w)
    (message,) = notifications["error"]
    assert "outside the convention" in message and "[5]" in message
    assert len(viewer.layers) == before + 1
    assert w.status.value == "failed" and w.run_button.enabled


# --------------------------------------------------------------------------- plugin


def test_widgets_and_sample_load_through_npe2(make_napari_viewer):
    v = make_napari_viewer()
    _, matting = v.window.add_plugin_dock_widget("napari-hrmatt", "Alpha matting")
    _, tools = v.window.add_plugin_dock_widget("napari-hrmatt", "Trimap tools")
    assert type(matting).__name__ == "MattingWidget" and type(tools).__name__ == "TrimapWidget"
    v.open_sample("napari-hrmatt", "fur")
    assert [ly.name for ly in v.layers][:2] == ["hrmatt sample", "hrmatt sample trimap"]
    assert matting.image.value is v.layers["hrmatt sample"]
    assert matting.trimap.value is v.layers["hrmatt sample trimap"]


def test_closed_widget_stops_listening_to_layers(viewer, qtbot):
    from napari_hrmatt._widget import MattingWidget

    w = MattingWidget(viewer)
    calls = []
    w.reset_choices = lambda *a: calls.append(a)  # what layer events trigger
    destroyed = []
    w.native.destroyed.connect(destroyed.append)
    w.native.deleteLater()  # what closing the dock widget does
    qtbot.waitUntil(lambda: bool(destroyed), timeout=5000)
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="late")
    assert calls == []


# --------------------------------------------------------------------------- issue 14: bugs


class _Recorder:
    """Wraps napari's progress class: records (n, total) after every update, and at close."""

    def __init__(self, monkeypatch, on_description=None):
        import napari.utils

        real = napari.utils.progress
        self.updates, self.closed = [], []
        recorder = self

        class Recording(real):
            def update(self, n=1):
                super().update(n)
                recorder.updates.append((self.n, self.total))

            def set_description(self, desc):
                super().set_description(desc)
                if on_description is not None:
                    on_description()

            def close(self):
                recorder.closed.append((self.n, self.total))
                super().close()

        monkeypatch.setattr(napari.utils, "progress", Recording)


def test_progress_bar_survives_reentrant_updates(viewer, sample, monkeypatch):
    """Bug 1: pbar updates process Qt events, so queued steps arrive inside the handler."""
    from napari_hrmatt.pipeline import Progress

    _, labels, _ = sample
    w = matting_widget(viewer, add_trimap(viewer, labels))
    w.job = w.make_job()  # plan: global pass, alpha
    w.worker = object()  # "running"
    queue = [Progress(k, 12, "alpha", (k, 12)) for k in range(2, 13)]

    def deliver_queued():  # what QApplication.processEvents() does with queued signals
        if queue:
            w._on_progress(queue.pop(0))

    rec = _Recorder(monkeypatch, on_description=deliver_queued)
    w._on_progress(Progress(1, 12, "alpha", (1, 12)))
    assert not queue
    ns = [n for n, _ in rec.updates]
    assert ns == sorted(ns), ns  # never backwards
    assert {total for _, total in rec.updates} == {200}  # fixed up front
    assert ns[-1] == 200  # the last step (alpha 12/12) is shown
    assert w.status.value == "alpha 12/12"
    w.worker = None
    w._on_finished()
    assert rec.closed[0] == (200, 200)


def test_progress_total_is_known_up_front_with_colour_outputs(viewer, sample, qtbot, monkeypatch):
    """Bug 1: with cutout and composite the bar's total never grows, and it ends full."""
    _, labels, _ = sample
    rec = _Recorder(monkeypatch)
    w = matting_widget(viewer, add_trimap(viewer, labels), model="cf", chunk=32, cutout=True)
    w.composite.value = "white"
    w.batch = 1
    statuses = record_statuses(monkeypatch)
    w.run()
    wait_done(qtbot, w)
    assert {"photo alpha", "photo cutout", "photo composite"} <= {ly.name for ly in viewer.layers}
    totals = {total for _, total in rec.updates}
    assert totals == {400}, totals  # global pass, alpha, cutout, composite
    ns = [n for n, _ in rec.updates]
    assert ns == sorted(ns)
    assert rec.closed[0] == (400, 400)
    # Gap 9: one vocabulary, step names and per-step counts.
    assert any(s.startswith("global pass (") for s in statuses), statuses
    assert "alpha 1/12" in statuses and "alpha 12/12" in statuses
    assert any(s.startswith("cutout ") for s in statuses)
    assert not any("blocks" in s or "matting:" in s for s in statuses)
    assert statuses[-1].startswith("done in") and "alpha, cutout, composite" in statuses[-1]


def test_long_status_does_not_widen_the_dock(make_napari_viewer, sample):
    """Bug 2: a long status line wraps inside the dock instead of widening it."""
    from qtpy.QtWidgets import QApplication

    from napari_hrmatt._widget import MattingWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1600, 1000)
    w = MattingWidget(viewer)
    dock = viewer.window.add_dock_widget(w, area="right")
    for _ in range(5):
        QApplication.processEvents()
    width, canvas = dock.width(), viewer.window._qt_viewer.canvas.native.width()
    w.status.value = "done: added " + ", ".join(
        f"a rather long image name {k} alpha" for k in range(8)
    )
    for _ in range(5):
        QApplication.processEvents()
    assert dock.width() <= width + 2, (width, dock.width())
    assert viewer.window._qt_viewer.canvas.native.width() >= canvas - 2


def test_import_without_a_file_says_so(viewer, notifications):
    """Bug 4: no file chosen is not "trimap file '.' does not exist"."""
    from napari_hrmatt._trimap_widget import TrimapWidget

    w = TrimapWidget(viewer)
    w.image.value = viewer.layers["photo"]
    before = len(viewer.layers)
    assert w.import_trimap() is None
    (message,) = notifications["error"]
    assert "no trimap file chosen" in message and "'.'" not in message
    assert len(viewer.layers) == before


# --------------------------------------------------------------------------- issue 14: gaps


def test_second_run_replaces_the_first_and_records_its_inputs(viewer, sample, qtbot):
    """Gap 1: results replace the previous run's (in place); metadata says what made them."""
    _, labels, _ = sample
    trimap = add_trimap(viewer, labels)
    w = matting_widget(viewer, trimap, chunk=64)
    w.run()
    wait_done(qtbot, w)
    first = viewer.layers["photo alpha"]
    viewer.layers.move(viewer.layers.index(first), 0)  # the user moved it to the bottom
    w.global_size.value = 0.05
    w.run()
    wait_done(qtbot, w)
    names = [ly.name for ly in viewer.layers]
    assert names.count("photo alpha") == 1 and "photo alpha [1]" not in names, names
    second = viewer.layers["photo alpha"]
    assert second is not first and names.index("photo alpha") == 0  # took its place
    run = second.metadata["napari_hrmatt_run"]
    assert second.metadata["napari_hrmatt"] == "alpha"
    assert run["image"] == "photo" and run["trimap"] == "photo trimap"
    assert run["model"] == "ifm" and run["chunks"] == 64 and run["global_size"] == 50_000
    assert run["view"] is None and run["seconds"] > 0
    # Untick "replace": results pile up on purpose.
    w.replace.value = False
    w.run()
    wait_done(qtbot, w)
    assert "photo alpha [1]" in viewer.layers


def test_rerun_after_painting_recomputes_only_the_touched_blocks(viewer, sample, qtbot):
    """The panel keeps a run store per image and trimap: an edit reruns only its blocks."""
    image, labels, _ = sample
    trimap = add_trimap(viewer, labels.copy())
    w = matting_widget(viewer, trimap, model="cf", chunk=32, global_size=0.01)
    w.run()
    wait_done(qtbot, w)
    assert "recomputed" not in w.status.value  # the first run computes everything
    # Paint a corner of the background unknown (as the brush would), then run again.
    trimap.data[2:12, 2:12] = 0
    trimap.refresh()
    w.run()
    wait_done(qtbot, w)
    found = re.search(r"recomputed (\d+) of 12 alpha blocks", w.status.value)
    assert found and 1 <= int(found.group(1)) <= 2, w.status.value
    edited = labels.copy()
    edited[2:12, 2:12] = 0
    fresh = estimate_alpha(image, edited, labels=True, model="cf", chunks=32, global_size=10_000)
    data = viewer.layers["photo alpha"].data
    alpha = np.asarray(data[0] if viewer.layers["photo alpha"].multiscale else data)
    diff = np.abs(alpha - fresh)[edited == 0]
    assert diff.mean() < 1e-3 and diff.max() < 2 / 255


def test_trimap_layer_painting_help(make_napari_viewer, sample):
    """Gap 3: named labels, F / B / U keys, the widget's paint buttons, scaled brush."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_hrmatt._trimap_widget import TrimapWidget
    from napari_hrmatt._widget_parts import brush_size

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((600, 1200), np.uint8), name="photo")
    w = TrimapWidget(viewer)
    w.image.value = viewer.layers["photo"]
    layer = w.new_trimap()
    assert list(layer.features["class"]) == ["unknown", "background", "foreground"]
    assert layer.brush_size == brush_size((600, 1200)) == 15
    assert brush_size((1536, 2048)) == 26
    assert "foreground (F)" in w.legend.value and "background (B)" in w.legend.value
    # Keys, through Qt, on the selected trimap layer.
    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_B)
    assert (layer.selected_label, layer.mode) == (1, "paint")
    QTest.keyClick(canvas, Qt.Key.Key_U)
    assert layer.selected_label == 0
    QTest.keyClick(canvas, Qt.Key.Key_F)
    assert layer.selected_label == 2
    # Buttons.
    viewer.layers.selection.active = viewer.layers["photo"]
    w.paint_bg.clicked()
    assert viewer.layers.selection.active is layer and layer.selected_label == 1
    w.opacity.value = 0.3
    assert layer.opacity == pytest.approx(0.3)
    # A trimap opened by the reader (not made by the widget) gets the keys too.
    from napari_hrmatt._layers import trimap_layer

    data, kwargs, _ = trimap_layer(np.zeros((600, 1200), np.uint8), name="read trimap")
    other = viewer.add_labels(data, **kwargs)
    viewer.layers.selection.active = other
    other.mode = "pan_zoom"
    canvas.setFocus()
    QTest.keyClick(canvas, Qt.Key.Key_B)
    assert other.selected_label == 1 and other.brush_size == 15


def test_every_control_has_a_tooltip(viewer):
    """Gap 5: tooltips everywhere, a line per model, a help link."""
    from magicgui.widgets import Label

    from napari_hrmatt._trimap_widget import TrimapWidget
    from napari_hrmatt._widget import MODEL_HELP, MattingWidget

    for w in (MattingWidget(viewer), TrimapWidget(viewer)):
        missing = [c.name or c.label for c in w if not isinstance(c, Label) and not c.tooltip]
        assert not missing, (type(w).__name__, missing)
    w = MattingWidget(viewer)
    assert w.model.value == "ifm" and w.model_help.value == MODEL_HELP["ifm"]
    w.model.value = "hdmatt"
    assert w.model_help.value == MODEL_HELP["hdmatt"]
    assert "napari.md" in w.help.value


def test_settings_are_remembered_and_reset(viewer, settings_file):
    """Gap 4: a new panel (or a new session) starts from the last settings."""
    from napari_hrmatt._widget import DEFAULTS, MattingWidget

    w = MattingWidget(viewer)
    w.chunk.value = 256
    w.model.value = "hdmatt"
    w.replace.value = False
    assert settings_file.is_file()
    again = MattingWidget(viewer)
    assert (again.chunk.value, again.model.value, again.replace.value) == (256, "hdmatt", False)
    assert not again.weights.native.isHidden()  # follows the restored model
    again.reset_settings()
    assert again.settings() == DEFAULTS
    assert MattingWidget(viewer).chunk.value == DEFAULTS["chunk"]
    settings_file.write_text("{not json")
    assert MattingWidget(viewer).chunk.value == DEFAULTS["chunk"]  # a broken file is ignored


def test_trimap_choices_labels_first_never_outputs(viewer, sample):
    """Gap 7: Labels first, then grey images named like trimaps; never our outputs."""
    from napari_hrmatt._layers import alpha_layer
    from napari_hrmatt._sample_data import make_sample_data

    _, labels, _ = sample
    viewer.add_image(np.zeros((96, 128), np.uint8), name="other grey")
    viewer.add_image(np.zeros((96, 128), np.uint8), name="GT01 trimap file")
    data, kwargs, _ = alpha_layer(np.zeros((96, 128), np.float32), name="photo alpha")
    viewer.add_image(data, **kwargs)
    truth = make_sample_data((32, 48))[2]
    viewer.add_image(truth[0], **truth[1])
    add_trimap(viewer, labels)
    from napari_hrmatt._widget import MattingWidget

    w = MattingWidget(viewer)
    names = [ly.name for ly in w.trimap.choices]
    assert names == ["photo trimap", "GT01 trimap file", "other grey"], names
    assert w.trimap.value is viewer.layers["photo trimap"]


def test_global_pass_reports_and_cancels(viewer, sample, qtbot, monkeypatch, notifications):
    """Gap 2: the global pass shows progress and cancel does not wait for it."""
    import threading
    import time

    from napari_hrmatt import engine

    _, labels, _ = sample
    release = threading.Event()
    real = engine.estimate_alpha

    def slow_global_pass(*args, **kwargs):
        release.wait(30)  # a long solve
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "estimate_alpha", slow_global_pass)
    w = matting_widget(viewer, add_trimap(viewer, labels), chunk=64)
    statuses = record_statuses(monkeypatch)
    w.run()
    qtbot.waitUntil(lambda: any(s.startswith("global pass (") for s in statuses), timeout=10_000)
    start = time.perf_counter()
    w.cancel()
    wait_done(qtbot, w)
    release.set()
    assert time.perf_counter() - start < 5
    assert w.status.value == "cancelled" and "photo alpha" not in viewer.layers


def test_view_preview_uses_a_smaller_global_pass(viewer, sample, monkeypatch):
    from napari_hrmatt import _widget

    _, labels, _ = sample
    w = matting_widget(viewer, add_trimap(viewer, labels), view_only=True)
    monkeypatch.setattr(
        _widget.MattingWidget, "_visible_slices", lambda *_: (slice(8, 60), slice(4, 90))
    )
    job = w.make_job()
    assert job.global_size == min(1_000_000, _widget.PREVIEW_GLOBAL_SIZE)
    assert job.info["view"] == [8, 60, 4, 90] and job.name == "photo (view)"


def test_closing_a_result_gives_memory_back(viewer, qtbot, monkeypatch):
    """Gap 8: removing a result layer trims the allocator (after napari lets go of it)."""
    from napari_hrmatt import _widget, _widget_parts
    from napari_hrmatt._layers import alpha_layer

    calls = []
    monkeypatch.setattr(_widget_parts, "release_memory", lambda: calls.append(1))
    _widget.MattingWidget(viewer)
    viewer.add_image(np.zeros((8, 8), np.uint8), name="not ours")
    data, kwargs, _ = alpha_layer(np.zeros((8, 8), np.float32), name="photo alpha")
    viewer.add_image(data, **kwargs)
    del viewer.layers["not ours"]
    qtbot.wait(400)
    assert calls == []
    del viewer.layers["photo alpha"]
    qtbot.waitUntil(lambda: calls == [1], timeout=2000)
