"""napari dock widget: trimap tools (new, from a mask, import, export, paint buttons).

Trimaps are Labels layers in the label convention of :mod:`napari_hrmatt.trimap`;
the computations live in the library, this is a thin magicgui container.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton, SpinBox
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_info

from . import _layers
from ._layers import TRIMAP_CLASSES, Geometry, layer_geometry
from ._widget_parts import (
    brush_size,
    is_image,
    labels_data,
    layer_choices,
    reports_errors,
    swatch,
    track_layers,
)
from .pipeline import ResultStore
from .trimap import LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_UNKNOWN

if TYPE_CHECKING:
    import napari

__all__ = ["TrimapWidget"]


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
            choices=layer_choices(viewer, is_image),
            tooltip="the image the new trimap belongs to (its size, scale and translate)",
        )
        self.new_button = PushButton(
            text="New empty trimap",
            tooltip="an all-unknown trimap layer over the image; paint with the buttons "
            "below or the F / B / U keys",
        )
        self.mask = ComboBox(
            label="mask",
            choices=layer_choices(viewer, lambda ly: isinstance(ly, Labels | Shapes)),
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
            choices=layer_choices(viewer, lambda ly: isinstance(ly, Labels)),
            tooltip="the trimap layer that the paint buttons, opacity and export act on",
        )
        self.legend = Label(
            value=" &nbsp; ".join(
                f"{swatch(label)} {TRIMAP_CLASSES[label]} ({key})"
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
        track_layers(viewer, self)
        self.reset_choices()

    def _on_trimap(self, layer) -> None:
        if layer is not None:
            self.opacity.value = float(layer.opacity)

    def _on_opacity(self, value: float) -> None:
        if self.trimap.value is not None:
            self.trimap.value.opacity = float(value)

    @reports_errors
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

    @reports_errors
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

    @reports_errors
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
            mask = np.asarray(labels_data(mask_layer))
            if mask.ndim != 2:
                raise ValueError(f"mask layer {mask_layer.name!r} must be 2D, got {mask.shape}")
            geometry = layer_geometry(mask_layer)
        labels = trimap_to_labels(trimap_from_mask(mask, band=int(self.band.value)))
        return self._add_trimap(labels, f"{mask_layer.name} trimap", geometry)

    @reports_errors
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

    @reports_errors
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
        data = labels_data(layer)
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
