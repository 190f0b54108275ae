"""napari sample data: the generated furry object, its trimap and the true alpha."""

from __future__ import annotations

from ._layers import trimap_layer

__all__ = ["make_sample_data"]


def make_sample_data(shape: tuple[int, int] = (1536, 2048)) -> list[tuple]:
    """The bundled sample (made in code, no download) as napari layers.

    Parameters
    ----------
    shape : (2,) tuple of int
        ``(H, W)``; napari's File > Open Sample uses the default 1536 x 2048.

    Returns
    -------
    layers : list of LayerDataTuple
        The RGB image, its label trimap (0 unknown, 1 background, 2 foreground)
        ready for the matting widget, and the ground-truth alpha (hidden) to
        compare the result with.
    """
    from .sample import make_sample
    from .trimap import trimap_to_labels

    image, trimap, alpha = make_sample(tuple(shape))
    return [
        (image, {"name": "hrmatt sample", "rgb": True}, "image"),
        trimap_layer(trimap_to_labels(trimap), name="hrmatt sample trimap"),
        (
            alpha,
            {
                "name": "hrmatt sample alpha (ground truth)",
                "colormap": "gray",
                "contrast_limits": (0.0, 1.0),
                "visible": False,
                # Not a trimap candidate, not an input: the answer to compare with.
                "metadata": {"napari_hrmatt": "ground truth"},
            },
            "image",
        ),
    ]
