"""napari dock widgets: trimap tools and the matting panel.

Thin magicgui containers: every computation lives in the library
(:mod:`napari_hrmatt.trimap`, :mod:`napari_hrmatt.engine`, :mod:`napari_hrmatt.io`)
and in the Qt-free job of :mod:`napari_hrmatt._layers`. Matting runs in a napari
``thread_worker`` so the viewer stays responsive; it reports progress per block
and can be cancelled between blocks, and it adds layers only when it has finished.
Bad input ends in one napari notification with the library's message.

The matting panel remembers its settings between sessions (a small JSON file in the
user config directory, :func:`settings_path`), replaces the previous run's result
layers instead of piling them up, and gives memory back when results are removed.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.notifications import show_error, show_info

from . import _layers
from ._job import Failure, MattingJob, Progress
from ._layers import RUN_KEY, TRIMAP_CLASSES, TRIMAP_COLORS, Geometry, is_output, layer_geometry
from ._threads import use_passive_wait
from .pipeline import ResultStore
from .trimap import LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_UNKNOWN

# Idle solver threads sleep instead of spinning and stealing the GUI's core; takes effect
# only if torch is not loaded yet (napari imports this module before any run).
use_passive_wait()

if TYPE_CHECKING:
    import napari

__all__ = ["MattingWidget", "TrimapWidget"]

# Background colours offered for the composite preview (RGB in [0, 1]).
COMPOSITE_COLORS = {
    "none": None,
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "green": (0.0, 0.69, 0.31),
    "blue": (0.0, 0.28, 0.67),
}


# Pixels added around the visible part for "current view only" previews.
VIEW_MARGIN = 16

# Working size of the global pass for "current view only" previews (pixels), when the
# global size setting is larger: a quick answer first (docs/napari.md, "Preview").
PREVIEW_GLOBAL_SIZE = 250_000

# One line per model, shown under the model choice (unknown models: a generic line).
MODEL_HELP = {
    "cf": "closed-form matting: a solver, no training; sharp on any image size (the default)",
    "hdmatt": "our small trained network: good on ~1 MP photos, weaker on high-resolution ones",
}

# napari's progress bar counts steps (global pass, alpha, cutout, composite) in these
# units each, so its total is known before the run starts and never changes.
STEP_UNITS = 100

# Brush size (image pixels) for a new trimap: the longer side / this, at least 10.
BRUSH_FRACTION = 80

DOCS = Path(__file__).resolve().parents[2] / "docs" / "napari.md"

# Settings remembered between sessions, with their defaults.
DEFAULTS = {
    "model": "cf",
    "device": "auto",
    "chunk": 512,
    "overlap": 0,
    "global_size": 1.0,
    "view_only": False,
    "cutout": False,
    "composite": "none",
    "replace": True,
}


def settings_path() -> Path:
    """The JSON file where the matting panel keeps its settings (user config dir)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-hrmatt", appauthor=False)) / "matting.json"


def release_memory() -> None:
    """Give freed memory back to the system (after a run, or when results are removed).

    Python frees a result's arrays when its layer goes, but glibc keeps the pages of
    the worker threads' arenas; ``malloc_trim`` returns them.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _release_if_output(event) -> None:
    if is_output(event.value):
        # A result the user closed: give its memory back once napari (selection,
        # canvas, layer list) has let go of the layer, i.e. after this event.
        from qtpy.QtCore import QTimer

        QTimer.singleShot(200, release_memory)


def _swatch(label: int) -> str:
    r, g, b, a = TRIMAP_COLORS[label]
    if a == 0:
        return "&#9633;"  # unknown is transparent: an empty square
    return f"<span style='color: rgb({r * 255:.0f}, {g * 255:.0f}, {b * 255:.0f})'>&#9632;</span>"


def _status_label() -> Label:
    """A status line that wraps instead of widening the dock (full text as tooltip)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(1)
    return label


def _set_status(label: Label, text: str) -> None:
    label.value = text
    label.tooltip = text


def _reports_errors(method):
    """Turn bad input (ValueError, incl. TrimapError, or OSError) into a notification."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (ValueError, OSError) as exc:
            show_error(str(exc))
            return None

    return wrapper


def _layer_choices(viewer, accept):
    """magicgui ``choices``: ``(name, layer)`` for the viewer layers passing ``accept``."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if accept(layer)]

    return choices


def _is_image(layer: Layer) -> bool:
    return isinstance(layer, Image)


def _is_trimap_candidate(layer: Layer) -> bool:
    # Label trimaps, and grey image layers (a 0/128/255 file opened by another reader);
    # never the plugin's own outputs (alpha, cutout, composite) or the sample's truth.
    role = layer.metadata.get("napari_hrmatt")
    if role is not None and role != "trimap":
        return False
    return isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb)


def _trimap_rank(layer: Layer) -> int:
    """Labels first, then grey images that look like trimaps, then other grey images."""
    if isinstance(layer, Labels):
        return 0
    if layer.metadata.get("napari_hrmatt") == "trimap" or "trimap" in layer.name.lower():
        return 1
    return 2


def _is_trimap_layer(layer: Layer) -> bool:
    return isinstance(layer, Labels) and layer.metadata.get("napari_hrmatt") == "trimap"


def brush_size(shape) -> int:
    """A brush that suits the image: the longer side / BRUSH_FRACTION, at least 10 px."""
    return max(10, int(round(max(shape[-2:]) / BRUSH_FRACTION)))


def setup_trimap_layer(layer: Labels) -> None:
    """Painting help on a trimap layer: F / B / U keys and a brush scaled to the image.

    F paints foreground (2), B background (1), U unknown (0, the eraser); each key also
    switches to the paint brush. (They replace napari's fill / preserve-labels keys on
    this layer only.)
    """
    if layer.metadata.get("_hrmatt_keys"):
        return
    layer.metadata["_hrmatt_keys"] = True

    def painter(label):
        def paint(layer):
            layer.selected_label = label
            layer.mode = "paint"

        paint.__doc__ = f"paint {TRIMAP_CLASSES[label]} ({label})"
        return paint

    for key, label in (("f", LABEL_FOREGROUND), ("b", LABEL_BACKGROUND), ("u", LABEL_UNKNOWN)):
        layer.bind_key(key, painter(label), overwrite=True)
    data = _labels_data(layer)
    if layer.brush_size == 10:  # napari's default: scale it to the image
        layer.brush_size = brush_size(data.shape)


def _track_layers(viewer, container: Container, on_removed=None) -> None:
    """Refresh the container's layer choices when layers are added, removed or renamed.

    Trimap layers get their painting help (:func:`setup_trimap_layer`) when added;
    ``on_removed(event)`` is called too when a layer is removed.
    """

    def refresh(event=None):
        container.reset_choices()

    def on_inserted(event):
        event.value.events.name.connect(refresh)
        if _is_trimap_layer(event.value):
            setup_trimap_layer(event.value)
        refresh()

    def disconnect(*_):
        # The dock widget was closed (its Qt object deleted): stop listening.
        layers = getattr(viewer, "layers", None)
        if layers is None:  # the viewer is gone already
            return
        layers.events.inserted.disconnect(on_inserted)
        layers.events.removed.disconnect(refresh)
        layers.events.moved.disconnect(refresh)
        if on_removed is not None:
            layers.events.removed.disconnect(on_removed)
        for layer in layers:
            layer.events.name.disconnect(refresh)

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(refresh)
    if on_removed is not None:
        viewer.layers.events.removed.connect(on_removed)
    viewer.layers.events.moved.connect(refresh)
    for layer in viewer.layers:
        layer.events.name.connect(refresh)
        if _is_trimap_layer(layer):
            setup_trimap_layer(layer)
    container.native.destroyed.connect(disconnect)


def _labels_data(layer: Labels):
    """Finest level of a (possibly multiscale) Labels layer, not copied."""
    return layer.data[0] if layer.multiscale else layer.data


def _trimap_array(layer: Layer) -> tuple[object, bool]:
    """Trimap data of a layer and whether it is in the label convention."""
    if isinstance(layer, Labels):
        data, labels = _labels_data(layer), True
    else:
        data, labels = (layer.data[0] if layer.multiscale else layer.data), False
    if data.ndim != 2:
        raise ValueError(
            f"trimap layer {layer.name!r} has shape {tuple(data.shape)}; a trimap is 2D (H, W)"
        )
    return data, labels


class TrimapWidget(Container):
    """Trimap tools: new empty trimap, trimap from a mask, import and export.

    Trimaps are Labels layers: ``0`` unknown (unpainted, transparent),
    ``1`` background (blue), ``2`` foreground (orange). Paint background and
    foreground roughly; leave hair, fur and soft edges unknown.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.image = ComboBox(
            label="image",
            choices=_layer_choices(viewer, _is_image),
            tooltip="the image the new trimap belongs to (its size, scale and translate)",
        )
        self.new_button = PushButton(
            text="New empty trimap",
            tooltip="an all-unknown trimap layer over the image; paint with the buttons "
            "below or the F / B / U keys",
        )
        self.mask = ComboBox(
            label="mask",
            choices=_layer_choices(viewer, lambda ly: isinstance(ly, Labels | Shapes)),
            tooltip="Labels (any non-zero label is foreground) or Shapes (inside is foreground)",
        )
        self.band = SpinBox(
            label="band (px)",
            value=10,
            min=0,
            max=10_000,
            tooltip="half-width of the unknown band around the mask edge, in image pixels",
        )
        self.mask_button = PushButton(
            text="Trimap from mask",
            tooltip="foreground inside the mask, background outside, unknown along its edge",
        )
        self.import_path = FileEdit(
            label="trimap file",
            mode="r",
            filter="Trimaps (*.png *.tif *.tiff)",
            tooltip="a grey trimap file: 0 background, 255 foreground, other values unknown",
        )
        self.import_button = PushButton(
            text="Import trimap",
            tooltip="open the trimap file as a Labels layer (placed on the image when the "
            "sizes match)",
        )
        self.trimap = ComboBox(
            label="trimap",
            choices=_layer_choices(viewer, lambda ly: isinstance(ly, Labels)),
            tooltip="the trimap layer that the paint buttons, opacity and export act on",
        )
        self.legend = Label(
            value=" &nbsp; ".join(
                f"{_swatch(label)} {TRIMAP_CLASSES[label]} ({key})"
                for label, key in (
                    (LABEL_FOREGROUND, "F"),
                    (LABEL_BACKGROUND, "B"),
                    (LABEL_UNKNOWN, "U"),
                )
            ),
            tooltip="trimap classes and their keys (with the trimap layer selected)",
        )
        self.paint_fg = PushButton(
            text="Foreground (F)", tooltip="paint sure foreground (label 2, orange)"
        )
        self.paint_bg = PushButton(
            text="Background (B)", tooltip="paint sure background (label 1, blue)"
        )
        self.paint_unknown = PushButton(
            text="Unknown (U)",
            tooltip="erase back to unknown (label 0): hair, fur, glass and soft edges",
        )
        self.opacity = FloatSlider(
            label="trimap opacity",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="how strongly the trimap covers the image (0.4-0.6 shows both)",
        )
        self.export_path = FileEdit(
            label="save as",
            mode="w",
            filter="Trimaps (*.png *.tif *.tiff *.zarr)",
            tooltip="file name ending in .png, .tif, .tiff or .zarr",
        )
        self.export_button = PushButton(
            text="Export trimap (0/128/255)",
            tooltip="save the chosen trimap layer in the grey file convention",
        )
        self.extend(
            [
                self.image,
                self.new_button,
                self.mask,
                self.band,
                self.mask_button,
                self.import_path,
                self.import_button,
                self.trimap,
                self.legend,
                self.paint_fg,
                self.paint_bg,
                self.paint_unknown,
                self.opacity,
                self.export_path,
                self.export_button,
            ]
        )
        self.new_button.changed.connect(self.new_trimap)
        self.mask_button.changed.connect(self.trimap_from_mask)
        self.import_button.changed.connect(self.import_trimap)
        self.export_button.changed.connect(self.export_trimap)
        self.paint_fg.changed.connect(lambda *_: self.paint_with(LABEL_FOREGROUND))
        self.paint_bg.changed.connect(lambda *_: self.paint_with(LABEL_BACKGROUND))
        self.paint_unknown.changed.connect(lambda *_: self.paint_with(LABEL_UNKNOWN))
        self.opacity.changed.connect(self._on_opacity)
        self.trimap.changed.connect(self._on_trimap)
        _track_layers(viewer, self)
        self.reset_choices()

    def _on_trimap(self, layer) -> None:
        if layer is not None:
            self.opacity.value = float(layer.opacity)

    def _on_opacity(self, value: float) -> None:
        if self.trimap.value is not None:
            self.trimap.value.opacity = float(value)

    @_reports_errors
    def paint_with(self, label: int) -> Labels | None:
        """Select the chosen trimap layer and its paint brush on ``label``."""
        layer = self.trimap.value
        if layer is None:
            raise ValueError("no trimap layer: make one with 'New empty trimap' first")
        self._viewer.layers.selection.active = layer
        layer.selected_label = label
        layer.mode = "paint"
        return layer

    def _require_image(self) -> Image:
        if self.image.value is None:
            raise ValueError("no image layer: open an image first and choose it under 'image'")
        return self.image.value

    def _add_trimap(self, labels, name: str, geometry: Geometry) -> Labels:
        data, kwargs, _ = _layers.trimap_layer(labels, name=name, geometry=geometry)
        layer = self._viewer.add_labels(data, **kwargs)
        self.trimap.value = layer
        return layer

    @_reports_errors
    def new_trimap(self, *_) -> Labels | None:
        """Add an empty (all unknown) trimap matching the image layer; select the brush."""
        image = self._require_image()
        _, shape = _layers.image_data(image)
        # A large trimap lives in a temporary Zarr array that napari paints into.
        store = ResultStore(shape, np.uint8, (512, 512))
        layer = self._add_trimap(store.array, f"{image.name} trimap", layer_geometry(image))
        layer.selected_label = LABEL_FOREGROUND
        layer.mode = "paint"
        layer.brush_size = brush_size(shape)
        return layer

    @_reports_errors
    def trimap_from_mask(self, *_) -> Labels | None:
        """Trimap from a mask layer with an unknown band of ``band`` pixels."""
        from .trimap import trimap_from_mask, trimap_to_labels

        mask_layer = self.mask.value
        if mask_layer is None:
            raise ValueError("no mask layer: add a Labels or Shapes layer and choose it as 'mask'")
        if isinstance(mask_layer, Shapes):
            image = self._require_image()
            _, shape = _layers.image_data(image)
            mask = _rasterize_shapes(mask_layer, image, shape)
            geometry = layer_geometry(image)
        else:
            mask = np.asarray(_labels_data(mask_layer))
            if mask.ndim != 2:
                raise ValueError(f"mask layer {mask_layer.name!r} must be 2D, got {mask.shape}")
            geometry = layer_geometry(mask_layer)
        labels = trimap_to_labels(trimap_from_mask(mask, band=int(self.band.value)))
        return self._add_trimap(labels, f"{mask_layer.name} trimap", geometry)

    @_reports_errors
    def import_trimap(self, *_) -> Labels | None:
        """Open a grey trimap file (0 / 128 / 255) as a label trimap layer."""
        from ._reader import read_trimap

        value = self.import_path.value
        if value is None or str(value) in ("", "."):
            raise ValueError(
                "no trimap file chosen: press 'Choose file' next to 'trimap file' and pick "
                "a grey PNG or TIFF (0 background, 128 unknown, 255 foreground)"
            )
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"trimap file {str(path)!r} does not exist; choose a PNG or TIFF")
        ((labels, kwargs, _),) = read_trimap(str(path))
        geometry = Geometry()
        image = self.image.value
        if image is not None and _layers.image_data(image)[1] == tuple(labels.shape):
            geometry = layer_geometry(image)  # place it on the image it belongs to
        return self._add_trimap(labels, kwargs["name"], geometry)

    @_reports_errors
    def export_trimap(self, *_) -> Path | None:
        """Save the chosen trimap layer as a grey 0/128/255 file."""
        from .io import save_image
        from .trimap import labels_to_trimap

        layer = self.trimap.value
        if layer is None:
            raise ValueError("no trimap layer to export: choose one under 'trimap'")
        value = self.export_path.value
        if value is None or str(value) in ("", "."):
            raise ValueError("no file name: choose one under 'save as' (.png, .tif or .zarr)")
        path = Path(value)
        if path.suffix.lower() not in (".png", ".tif", ".tiff", ".zarr"):
            raise ValueError("choose a file name ending in .png, .tif, .tiff or .zarr")
        data = _labels_data(layer)
        grey = labels_to_trimap(_layers.as_dask(data, 1024))
        save_image(grey, path)
        show_info(f"trimap saved to {path}")
        return path


def _rasterize_shapes(shapes: Shapes, image: Image, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the inside of ``shapes``, in the pixel grid of ``image``."""
    # Shapes and image may have different scale/translate: map every vertex
    # data(shapes) -> world -> data(image), then let napari rasterise.
    src, dst = layer_geometry(shapes), layer_geometry(image)
    scale = np.divide(src.scale, dst.scale)
    offset = np.divide(np.subtract(src.translate, dst.translate), dst.scale)
    data = [np.asarray(v)[:, -2:] * scale + offset for v in shapes.data]
    if not data:
        raise ValueError(f"shapes layer {shapes.name!r} is empty: draw the foreground outline")
    moved = Shapes(data, shape_type=list(shapes.shape_type))
    return moved.to_labels(labels_shape=shape) > 0


class MattingWidget(Container):
    """Estimate the alpha matte of an image layer from a trimap layer.

    Runs :func:`napari_hrmatt.engine.estimate_alpha` block by block in a thread
    worker; adds an alpha layer (and optionally a cutout and a composite preview)
    with the image's scale and translate when it finishes. With "replace previous
    result" (the default) the new layers take the place of the previous run's for the
    same image (and the same view); every output layer records the image, trimap and
    settings that made it in ``metadata["napari_hrmatt_run"]``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from .models import list_models

        super().__init__(labels=True)
        self._viewer = viewer
        self.worker = None
        self.job: MattingJob | None = None
        # Blocks computed per step (None: one per CPU core); cancel waits for a step.
        self.batch: int | None = None
        self._pbar = None
        self._latest: Progress | None = None
        self._updating = False
        self._started = 0.0
        self._loading = False
        self.image = ComboBox(
            label="image",
            choices=self._image_choices,
            tooltip="a 2D grey or RGB(A) image layer (uint8, uint16 or float in [0, 1])",
        )
        self.trimap = ComboBox(
            label="trimap",
            choices=self._trimap_choices,
            tooltip="Labels (0 unknown, 1 background, 2 foreground) or a grey 0/128/255 "
            "image, same size as the image; make one with 'Trimap tools'",
        )
        models = list_models()
        self.model = ComboBox(
            label="model",
            choices=models,
            value="cf" if "cf" in models else models[0],
            tooltip="\n".join(f"{m}: {MODEL_HELP.get(m, 'a registered model')}" for m in models),
        )
        self.model_help = Label(value="")
        self.model_help.native.setWordWrap(True)
        self.weights = FileEdit(
            label="weights",
            mode="r",
            filter="*.pt",
            value="",
            visible=False,
            tooltip="your own weights file (hrmatt train --export); empty = the shipped one "
            "(shown for models that take weights)",
        )
        self.device = ComboBox(
            label="device",
            choices=["auto", "cpu", "cuda"],
            value="auto",
            tooltip="auto = CUDA when torch sees a GPU, else the CPU",
        )
        self.chunk = SpinBox(
            label="chunk (px)",
            value=512,
            min=32,
            max=8192,
            step=32,
            tooltip="block side of the full-resolution pass: larger blocks use more memory "
            "per core and cancel less often",
        )
        self.overlap = SpinBox(
            label="overlap (px)",
            value=0,
            min=0,
            max=2048,
            tooltip="context each block sees beyond its edge; 0 = derived from the model "
            "(recommended)",
        )
        self.global_size = FloatSpinBox(
            label="global size (MP)",
            value=1.0,
            min=0.01,
            max=64.0,
            step=0.25,
            tooltip="working size of the low-resolution global pass over the whole image, "
            "in megapixels: larger sees finer structure, costs more time",
        )
        self.view_only = CheckBox(
            text="current view only (quick preview)",
            value=False,
            tooltip="matte only the visible part (+16 px), with a global pass of at most "
            f"{PREVIEW_GLOBAL_SIZE / 1e6:g} MP: zoom in to where you painted, then run",
        )
        self.cutout = CheckBox(
            text="add cutout (RGBA)",
            value=False,
            tooltip="also estimate the foreground colours: an RGBA layer (colours + alpha)",
        )
        self.composite = ComboBox(
            label="composite over",
            choices=list(COMPOSITE_COLORS),
            value="none",
            tooltip="also show the foreground over a plain colour (to judge the edges)",
        )
        self.replace = CheckBox(
            text="replace previous result",
            value=True,
            tooltip="the new layers take the place of the previous run's for this image "
            "(and view); untick to keep every run",
        )
        self.run_button = PushButton(text="Run matting", tooltip="start (the viewer stays usable)")
        self.cancel_button = PushButton(
            text="Cancel",
            enabled=False,
            tooltip="stop after the blocks being computed now; no layer is added",
        )
        self.reset_button = PushButton(
            text="Reset to defaults", tooltip="the settings above back to their defaults"
        )
        self.status = _status_label()
        self.help = Label(value=self._help_text())
        self.help.native.setOpenExternalLinks(True)
        self.help.native.setWordWrap(True)
        self.extend(
            [
                self.image,
                self.trimap,
                self.model,
                self.model_help,
                self.weights,
                self.device,
                self.chunk,
                self.overlap,
                self.global_size,
                self.view_only,
                self.cutout,
                self.composite,
                self.replace,
                self.run_button,
                self.cancel_button,
                self.reset_button,
                self.status,
                self.help,
            ]
        )
        self.model.changed.connect(self._on_model)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.reset_button.changed.connect(self.reset_settings)
        for name in DEFAULTS:
            getattr(self, name).changed.connect(self.save_settings)
        _track_layers(viewer, self, on_removed=_release_if_output)
        self.reset_choices()
        self.load_settings()
        self._on_model(self.model.value)

    # ------------------------------------------------------------------ choices

    def _image_choices(self, _widget=None):
        # Source images first; the plugin's outputs (cutouts...) last.
        layers = [ly for ly in self._viewer.layers if _is_image(ly)]
        layers.sort(key=is_output)
        return [(ly.name, ly) for ly in layers]

    def _trimap_choices(self, _widget=None):
        layers = [ly for ly in self._viewer.layers if _is_trimap_candidate(ly)]
        # Label layers first (the usual trimap), then grey images named like trimaps;
        # never the chosen image itself.
        layers.sort(key=_trimap_rank)
        image = getattr(self, "image", None)
        chosen = image.value if image is not None else None
        return [(ly.name, ly) for ly in layers if ly is not chosen]

    @staticmethod
    def _help_text() -> str:
        if DOCS.is_file():
            return (
                f"<a href='{DOCS.as_uri()}'>Help: docs/napari.md</a> (hover a control for a tip)"
            )
        return "Help: docs/napari.md in the napari-hrmatt sources (hover a control for a tip)"

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict:
        """The current values of the remembered settings."""
        return {name: getattr(self, name).value for name in DEFAULTS}

    def save_settings(self, *_) -> None:
        """Write the settings to :func:`settings_path` (silently skipped if not writable)."""
        if self._loading:
            return
        path = settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.settings(), indent=1))
        except OSError:
            pass

    def load_settings(self) -> None:
        """Restore the settings saved by an earlier session (unknown values are skipped)."""
        try:
            saved = json.loads(settings_path().read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict):
            self._apply(saved)

    def reset_settings(self, *_) -> None:
        """Every remembered setting back to its default (and remember that)."""
        self._apply(DEFAULTS)
        self.save_settings()

    def _apply(self, values: dict) -> None:
        self._loading = True
        try:
            for name, default in DEFAULTS.items():
                if name not in values:
                    continue
                with contextlib.suppress(ValueError, TypeError):  # e.g. a model now gone
                    getattr(self, name).value = type(default)(values[name])
        finally:
            self._loading = False

    # ------------------------------------------------------------------ the job

    def make_job(self) -> MattingJob:
        """Check the inputs and build the job (raises ValueError with a clear message)."""
        image = self.image.value
        if image is None:
            raise ValueError("no image layer: open an image and choose it under 'image'")
        trimap = self.trimap.value
        if trimap is None:
            raise ValueError(
                "no trimap layer: make one with 'Trimap tools' (new, from a mask, or import) "
                "and choose it under 'trimap'"
            )
        data, shape = _layers.image_data(image)
        tdata, labels = _trimap_array(trimap)
        if tuple(tdata.shape) != shape:
            raise ValueError(
                f"trimap {trimap.name!r} is {tdata.shape[0]} x {tdata.shape[1]} pixels but image "
                f"{image.name!r} is {shape[0]} x {shape[1]}; make the trimap from this image "
                "with 'Trimap tools'"
            )
        geometry = layer_geometry(image)
        name = image.name
        global_size = int(round(self.global_size.value * 1e6))
        view = None
        if self.view_only.value:
            rows, cols = self._visible_slices(image, shape)
            data, tdata = data[rows, cols], tdata[rows, cols]
            geometry = geometry.shifted(rows.start, cols.start)
            name = f"{image.name} (view)"
            view = [rows.start, rows.stop, cols.start, cols.stop]
            global_size = min(global_size, PREVIEW_GLOBAL_SIZE)
        info = {
            "output": name,
            "image": image.name,
            "trimap": trimap.name,
            "view": view,
            "model": self.model.value,
            "weights": (self._model_options() or {}).get("weights"),
            "device": self.device.value,
            "chunks": int(self.chunk.value),
            "overlap": int(self.overlap.value) or None,
            "global_size": global_size,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return MattingJob(
            image=data,
            trimap=tdata,
            labels=labels,
            name=name,
            geometry=geometry,
            model=self.model.value,
            device=self.device.value,
            chunks=int(self.chunk.value),
            overlap=int(self.overlap.value) or None,
            global_size=global_size,
            model_options=self._model_options(),
            cutout=bool(self.cutout.value),
            background=COMPOSITE_COLORS[self.composite.value],
            batch=self.batch,
            info=info,
        )

    def _on_model(self, name: str) -> None:
        from .models import model_options

        self.weights.visible = "weights" in model_options(name)
        self.model_help.value = MODEL_HELP.get(name, "a registered model")

    def _model_options(self) -> dict | None:
        from .models import model_options

        path = str(self.weights.value or "")
        if path in ("", ".") or "weights" not in model_options(self.model.value):
            return None
        return {"weights": path}

    def _visible_slices(self, image: Image, shape) -> tuple[slice, slice]:
        corners = np.asarray(image.corner_pixels, float)
        if image.multiscale:  # corner_pixels are in the currently drawn level
            corners = corners * np.asarray(image.downsample_factors[image.data_level])
        # A margin gives the solver some context beyond the window's edge.
        return _layers.crop_to_view(corners, shape, margin=VIEW_MARGIN)

    @_reports_errors
    def run(self, *_):
        """Start matting in a thread worker; returns the worker (None on bad input)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise ValueError("matting is already running: wait for it or press Cancel")
        job = self.make_job()
        worker = create_worker(
            job.steps,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": self._on_returned,
                "aborted": self._on_aborted,
                "errored": self._on_errored,
                "finished": self._on_finished,
            },
        )
        self.job, self.worker = job, worker
        self._latest = None
        self._started = time.perf_counter()
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        _set_status(self.status, "starting…")
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Stop after the blocks being computed now; no layer is added."""
        if self.worker is not None:
            _set_status(self.status, "cancelling…")
            self.worker.quit()

    # ------------------------------------------------------------------ progress

    def describe(self, step: Progress) -> str:
        """The status line for a step: "global pass (3 s)", "alpha 3/12", ..."""
        key = step.description.split(":")[0]
        if step.step is None:
            return f"{key} ({time.perf_counter() - self._started:.0f} s)"
        if step.description.endswith("pyramid"):
            return f"{key} pyramid"
        return f"{key} {step.step[0]}/{step.step[1]}"

    def bar_position(self, step: Progress) -> tuple[int, int]:
        """``(n, total)`` of napari's progress bar: STEP_UNITS per step of the job's plan."""
        plan = self.job.plan if self.job is not None else [step.description]
        key = step.description.split(":")[0]
        index = plan.index(key) if key in plan else 0
        fraction = step.step[0] / step.step[1] if step.step and step.step[1] else 0.0
        return index * STEP_UNITS + int(fraction * STEP_UNITS), len(plan) * STEP_UNITS

    def _on_progress(self, step: Progress) -> None:
        if self.worker is None:  # a late event from a run that has ended
            return
        self._latest = step
        # Status first: updating napari's progress bar processes Qt events, so this
        # handler (and the run's "finished") may run again inside pbar.update().
        _set_status(self.status, self.describe(step))
        if self._updating:
            return  # the outer call applies the latest step when update() returns
        self._updating = True
        try:
            while self.worker is not None and self._latest is not None:
                step = self._latest
                pbar = self._progress_bar()
                n, total = self.bar_position(step)
                pbar.set_description(f"hrmatt: {step.description}")
                if n > pbar.n:  # never backwards
                    pbar.update(n - pbar.n)  # may re-enter (events)
                if self._latest is step:
                    break
        finally:
            self._updating = False

    def _progress_bar(self):
        from napari.utils import progress

        if self._pbar is None:
            plan = self.job.plan if self.job is not None else ["alpha"]
            self._pbar = progress(total=len(plan) * STEP_UNITS, desc="hrmatt")
        return self._pbar

    # ------------------------------------------------------------------ results

    def _previous_outputs(self, output: str) -> list[Layer]:
        """The layers an earlier run added for the same output name (image or view)."""
        return [
            ly
            for ly in self._viewer.layers
            if is_output(ly) and ly.metadata.get(RUN_KEY, {}).get("output") == output
        ]

    def _on_returned(self, result) -> None:
        if isinstance(result, Failure):
            _set_status(self.status, "failed")
            show_error(result.message)
            return
        seconds = time.perf_counter() - self._started
        index = None
        if self.replace.value and self.job is not None:
            old = self._previous_outputs(self.job.name)
            if old:
                index = min(self._viewer.layers.index(ly) for ly in old)
                for layer in old:
                    self._viewer.layers.remove(layer)
        added = []
        for data, kwargs, layer_type in result:
            kwargs["metadata"].setdefault(RUN_KEY, {})["seconds"] = round(seconds, 2)
            layer = getattr(self._viewer, f"add_{layer_type}")(data, **kwargs)
            if index is not None:  # where the previous result was
                self._viewer.layers.move(self._viewer.layers.index(layer), index)
                index += 1
            added.append(layer.name)
        roles = ", ".join(kw["metadata"]["napari_hrmatt"] for _, kw, _ in result)
        _set_status(self.status, f"done in {seconds:.0f} s: {roles}")
        self.status.tooltip = f"done in {seconds:.1f} s: added {', '.join(added)}"

    def _on_aborted(self) -> None:
        if self.job is not None:
            self.job.discard()
        _set_status(self.status, "cancelled")
        show_info("matting cancelled; no layer was added")

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker already shows the error (with its traceback: this is
        # an unexpected failure, not bad input).
        if self.job is not None:
            self.job.discard()
        _set_status(self.status, f"failed: {type(exc).__name__}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            if self._latest is not None:
                # "finished" may run inside the last step's pbar update (Qt events):
                # show that step before closing, without processing events again.
                self._pbar.n = max(self._pbar.n, self.bar_position(self._latest)[0])
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.job = None
        self._latest = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        release_memory()
