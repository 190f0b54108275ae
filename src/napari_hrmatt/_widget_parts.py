"""Pieces both dock widgets use: status line, error notifications, layer choices,
trimap-layer recognition and painting keys, and giving memory back."""

from __future__ import annotations

import contextlib
import functools
import gc
import sys

from magicgui.widgets import Container, Label
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error

from ._layers import TRIMAP_CLASSES, TRIMAP_COLORS, is_output
from .trimap import LABEL_BACKGROUND, LABEL_FOREGROUND, LABEL_UNKNOWN

# Brush size (image pixels) for a new trimap: the longer side / this, at least 10.
BRUSH_FRACTION = 80


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


def release_if_output(event) -> None:
    if is_output(event.value):
        # A result the user closed: give its memory back once napari (selection,
        # canvas, layer list) has let go of the layer, i.e. after this event.
        from qtpy.QtCore import QTimer

        QTimer.singleShot(200, release_memory)


def swatch(label: int) -> str:
    r, g, b, a = TRIMAP_COLORS[label]
    if a == 0:
        return "&#9633;"  # unknown is transparent: an empty square
    return f"<span style='color: rgb({r * 255:.0f}, {g * 255:.0f}, {b * 255:.0f})'>&#9632;</span>"


def status_label() -> Label:
    """A status line that wraps instead of widening the dock (full text as tooltip)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(1)
    return label


def set_status(label: Label, text: str) -> None:
    label.value = text
    label.tooltip = text


def reports_errors(method):
    """Turn bad input (ValueError, incl. TrimapError, or OSError) into a notification."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (ValueError, OSError) as exc:
            show_error(str(exc))
            return None

    return wrapper


def layer_choices(viewer, accept):
    """magicgui ``choices``: ``(name, layer)`` for the viewer layers passing ``accept``."""

    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if accept(layer)]

    return choices


def is_image(layer: Layer) -> bool:
    return isinstance(layer, Image)


def is_trimap_candidate(layer: Layer) -> bool:
    # Label trimaps, and grey image layers (a 0/128/255 file opened by another reader);
    # never the plugin's own outputs (alpha, cutout, composite) or the sample's truth.
    role = layer.metadata.get("napari_hrmatt")
    if role is not None and role != "trimap":
        return False
    return isinstance(layer, Labels) or (isinstance(layer, Image) and not layer.rgb)


def trimap_rank(layer: Layer) -> int:
    """Labels first, then grey images that look like trimaps, then other grey images."""
    if isinstance(layer, Labels):
        return 0
    if layer.metadata.get("napari_hrmatt") == "trimap" or "trimap" in layer.name.lower():
        return 1
    return 2


def is_trimap_layer(layer: Layer) -> bool:
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
    data = labels_data(layer)
    if layer.brush_size == 10:  # napari's default: scale it to the image
        layer.brush_size = brush_size(data.shape)


def track_layers(viewer, container: Container, on_removed=None) -> None:
    """Refresh the container's layer choices when layers are added, removed or renamed.

    Trimap layers get their painting help (:func:`setup_trimap_layer`) when added;
    ``on_removed(event)`` is called too when a layer is removed.
    """

    def refresh(event=None):
        container.reset_choices()

    def on_inserted(event):
        event.value.events.name.connect(refresh)
        if is_trimap_layer(event.value):
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
        if is_trimap_layer(layer):
            setup_trimap_layer(layer)
    container.native.destroyed.connect(disconnect)


def labels_data(layer: Labels):
    """Finest level of a (possibly multiscale) Labels layer, not copied."""
    return layer.data[0] if layer.multiscale else layer.data


def trimap_array(layer: Layer) -> tuple[object, bool]:
    """Trimap data of a layer and whether it is in the label convention."""
    if isinstance(layer, Labels):
        data, labels = labels_data(layer), True
    else:
        data, labels = (layer.data[0] if layer.multiscale else layer.data), False
    if data.ndim != 2:
        raise ValueError(
            f"trimap layer {layer.name!r} has shape {tuple(data.shape)}; a trimap is 2D (H, W)"
        )
    return data, labels
