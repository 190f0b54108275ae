"""napari dock widgets: trimap tools and the matting panel.

Thin magicgui containers: every computation lives in the library
(:mod:`napari_hrmatt.trimap`, :mod:`napari_hrmatt.engine`, :mod:`napari_hrmatt.io`)
and in the Qt-free job of :mod:`napari_hrmatt._layers`. Matting runs in a napari
``thread_worker`` so the viewer stays responsive; it reports progress per block
and can be cancelled between blocks, and it adds layers only when it has finished.
Bad input ends in one napari notification with the library's message.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Layer, Shapes
from napari.utils.notifications import show_error, show_info

from . import _layers
from ._job import Failure, MattingJob, Progress
from ._layers import Geometry, layer_geometry
from ._threads import use_passive_wait
from .pipeline import ResultStore

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
    # Label trimaps, and grey image layers (a 0/128/255 file opened by another reader).
    return isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb)


def _track_layers(viewer, container: Container) -> None:
    """Refresh the container's layer choices when layers are added, removed or renamed."""

    def refresh(event=None):
        container.reset_choices()

    def on_inserted(event):
        event.value.events.name.connect(refresh)
        refresh()

    def disconnect(*_):
        # The dock widget was closed (its Qt object deleted): stop listening.
        viewer.layers.events.inserted.disconnect(on_inserted)
        viewer.layers.events.removed.disconnect(refresh)
        viewer.layers.events.moved.disconnect(refresh)
        for layer in viewer.layers:
            layer.events.name.disconnect(refresh)

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(refresh)
    viewer.layers.events.moved.connect(refresh)
    for layer in viewer.layers:
        layer.events.name.connect(refresh)
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
        self.image = ComboBox(label="image", choices=_layer_choices(viewer, _is_image))
        self.new_button = PushButton(text="New empty trimap")
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
        self.mask_button = PushButton(text="Trimap from mask")
        self.import_path = FileEdit(
            label="trimap file", mode="r", filter="Trimaps (*.png *.tif *.tiff)"
        )
        self.import_button = PushButton(text="Import trimap")
        self.trimap = ComboBox(
            label="trimap",
            choices=_layer_choices(viewer, lambda ly: isinstance(ly, Labels)),
        )
        self.export_path = FileEdit(
            label="save as", mode="w", filter="Trimaps (*.png *.tif *.tiff *.zarr)"
        )
        self.export_button = PushButton(text="Export trimap (0/128/255)")
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
                self.export_path,
                self.export_button,
            ]
        )
        self.new_button.changed.connect(self.new_trimap)
        self.mask_button.changed.connect(self.trimap_from_mask)
        self.import_button.changed.connect(self.import_trimap)
        self.export_button.changed.connect(self.export_trimap)
        _track_layers(viewer, self)
        self.reset_choices()

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
        layer.selected_label = 2
        layer.mode = "paint"
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

        path = Path(self.import_path.value)
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
        path = Path(self.export_path.value)
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
    with the image's scale and translate when it finishes.

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
        self.image = ComboBox(label="image", choices=_layer_choices(viewer, _is_image))
        self.trimap = ComboBox(
            label="trimap",
            choices=self._trimap_choices,
            tooltip="Labels (0 unknown, 1 background, 2 foreground) or a grey 0/128/255 image",
        )
        models = list_models()
        self.model = ComboBox(
            label="model", choices=models, value="cf" if "cf" in models else models[0]
        )
        self.weights = FileEdit(
            label="weights",
            mode="r",
            filter="*.pt",
            value="",
            visible=False,
            tooltip="your own weights file (hrmatt train --export); empty = the shipped one "
            "(shown for models that take weights)",
        )
        self.model.changed.connect(self._on_model)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.chunk = SpinBox(
            label="chunk (px)", value=512, min=32, max=8192, step=32, tooltip="block side"
        )
        self.overlap = SpinBox(
            label="overlap (px)",
            value=0,
            min=0,
            max=2048,
            tooltip="0 = derived from the model (recommended)",
        )
        self.global_size = FloatSpinBox(
            label="global size (MP)",
            value=1.0,
            min=0.01,
            max=64.0,
            step=0.25,
            tooltip="working size of the global low-resolution pass, in megapixels",
        )
        self.view_only = CheckBox(
            text="current view only (quick preview)",
            value=False,
            tooltip="matte only the visible part; context outside the view is ignored",
        )
        self.cutout = CheckBox(
            text="add cutout (RGBA)",
            value=False,
            tooltip="foreground colours + alpha",
        )
        self.composite = ComboBox(
            label="composite over",
            choices=list(COMPOSITE_COLORS),
            value="none",
        )
        self.run_button = PushButton(text="Run matting")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.trimap,
                self.model,
                self.weights,
                self.device,
                self.chunk,
                self.overlap,
                self.global_size,
                self.view_only,
                self.cutout,
                self.composite,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        _track_layers(viewer, self)
        self.reset_choices()

    def _trimap_choices(self, _widget=None):
        layers = [ly for ly in self._viewer.layers if _is_trimap_candidate(ly)]
        # Label layers first (the usual trimap), and never the chosen image itself.
        layers.sort(key=lambda ly: not isinstance(ly, Labels))
        image = getattr(self, "image", None)
        chosen = image.value if image is not None else None
        return [(ly.name, ly) for ly in layers if ly is not chosen]

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
        if self.view_only.value:
            rows, cols = self._visible_slices(image, shape)
            data, tdata = data[rows, cols], tdata[rows, cols]
            geometry = geometry.shifted(rows.start, cols.start)
            name = f"{image.name} (view)"
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
            global_size=int(round(self.global_size.value * 1e6)),
            model_options=self._model_options(),
            cutout=bool(self.cutout.value),
            background=COMPOSITE_COLORS[self.composite.value],
            batch=self.batch,
        )

    def _on_model(self, name: str) -> None:
        from .models import model_options

        self.weights.visible = "weights" in model_options(name)

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
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "starting…"
        worker.start()
        return worker

    def cancel(self, *_) -> None:
        """Stop after the blocks being computed now; no layer is added."""
        if self.worker is not None:
            self.status.value = "cancelling…"
            self.worker.quit()

    def _on_progress(self, step: Progress) -> None:
        from napari.utils import progress

        if self.worker is None:  # a late event from a run that has ended
            return
        # Status first: updating napari's progress bar processes Qt events, so the
        # run's "returned"/"finished" handlers may run inside pbar.update().
        self.status.value = f"{step.description}: {step.done} / {step.total} blocks"
        if self._pbar is None:
            self._pbar = progress(total=step.total, desc="hrmatt")
        pbar = self._pbar
        if pbar.total != step.total:
            pbar.total = step.total
        pbar.set_description(f"hrmatt: {step.description}")
        pbar.update(step.done - pbar.n)

    def _on_returned(self, result) -> None:
        if isinstance(result, Failure):
            self.status.value = "failed"
            show_error(result.message)
            return
        for data, kwargs, layer_type in result:
            getattr(self._viewer, f"add_{layer_type}")(data, **kwargs)
        self.status.value = f"done: added {', '.join(kw['name'] for _, kw, _ in result)}"

    def _on_aborted(self) -> None:
        if self.job is not None:
            self.job.discard()
        self.status.value = "cancelled"
        show_info("matting cancelled; no layer was added")

    def _on_errored(self, exc: Exception) -> None:
        # napari's worker already shows the error (with its traceback: this is
        # an unexpected failure, not bad input).
        if self.job is not None:
            self.job.discard()
        self.status.value = f"failed: {type(exc).__name__}"

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.job = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
