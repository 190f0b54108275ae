"""``estimate_alpha``: global pass + patch pass, for numpy and dask inputs alike."""

from __future__ import annotations

import dask.array as da
import numpy as np

from ._blocks import BlockProgress
from .global_pass import global_pass
from .image import image_channels, is_dask
from .models import DEFAULT_MODEL
from .patch_pass import refine
from .trimap import canonical_trimap, known_alpha

__all__ = ["estimate_alpha"]


def estimate_alpha(
    image,
    trimap,
    *,
    model=DEFAULT_MODEL,
    chunks: int = 512,
    overlap: int | None = None,
    global_size: float = 1_000_000,
    device: str = "auto",
    labels: bool | None = None,
    compute: bool | None = None,
    progress: bool = False,
    model_options: dict | None = None,
    stitch: str = "trim",
    store=None,
    force: bool = False,
):
    """Estimate the alpha matte of an image of any size from its trimap.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array (numpy or dask)
        Grey, RGB or RGBA (alpha channel ignored); uint8, uint16 or float in [0, 1].
    trimap : (H, W) array (numpy or dask)
        Grey trimap (0 = background, 255 = foreground, else unknown; 16-bit and float
        [0, 1] likewise) or label trimap (0 = unknown, 1 = background, 2 = foreground);
        see :mod:`napari_hrmatt.trimap`.
    model : str or model object
        A name from :func:`napari_hrmatt.list_models` (``"ifm"``, the default:
        information-flow matting; ``"cf"``: closed-form matting; ``"hdmatt"``), or
        a model object, used as given (e.g. a network in memory:
        ``HDMattModel.from_network(net)``).
    chunks : int
        Block size of the patch pass in pixels.
    overlap : int, optional
        Block overlap in pixels; by default derived from the model and the downsampling
        factor of the global pass.
    global_size : float
        Working size of the global pass in pixels (default 1 megapixel).
    device : {"auto", "cpu", "cuda"}
        Where the model computes; ``"auto"`` uses CUDA when torch sees a GPU.
    labels : bool, optional
        Force the trimap convention (see :func:`napari_hrmatt.canonical_trimap`).
    compute : bool, optional
        ``True`` returns numpy, ``False`` a lazy dask array. By default numpy input gives
        numpy and dask input gives dask.
    progress : bool
        Show a progress bar over blocks on stderr while computing.
    model_options : dict, optional
        Model settings, e.g. ``{"eps": 1e-6, "radius": 1}`` for ``"cf"``.
    stitch : {"trim", "blend"}
        How blocks are joined: keep each block's core (default), or cross-fade neighbours
        with linear ramps over the overlap (see :func:`napari_hrmatt.refine`).
    store : str or Path, optional
        A Zarr run store (``.zarr``) to compute into, resumably: blocks it already holds
        for the same inputs and settings are not computed again (after an interruption,
        or an edit of the trimap: only the blocks it changed). The patch pass then runs
        eagerly, and the alpha returned is read from the store. Needs a model name and
        ``stitch="trim"``. See :mod:`napari_hrmatt.runstore`.
    force : bool
        With ``store``: recompute every block.

    Returns
    -------
    alpha : (H, W) array of float32 in [0, 1]
        Known pixels are exactly 0 or 1.

    Raises
    ------
    ValueError
        Shape mismatch, unsupported dtype, NaN or out-of-range float image.
    napari_hrmatt.TrimapError
        Trimap outside the conventions, or one with no known pixel.

    Notes
    -----
    The global pass runs eagerly: it reads the trimap once and the image once (for
    ``"cf"`` only near the unknown pixels), chunk by chunk, and solves a ``global_size``
    copy. The full-resolution patch pass is a lazy ``map_overlap`` graph; blocks whose
    grown window has no unknown pixel (known from the global pass) are constant blocks
    or the trimap chunk's 0/1 and never read the image. Peak memory is about
    ``workers x (chunks + 2 overlap)^2 x 40 x 8`` bytes for ``"cf"`` plus the global copy.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((40, 40), np.uint8); img[:, 20:] = 255
    >>> tri = np.full((40, 40), 128, np.uint8); tri[:, :5] = 0; tri[:, -5:] = 255
    >>> alpha = estimate_alpha(img, tri)
    >>> float(alpha[0, 0]), float(alpha[0, -1]), round(float(alpha[0, 10]), 3)
    (0.0, 1.0, 0.0)
    """
    lazy = is_dask(image) or is_dask(trimap)
    if compute is None:
        compute = not lazy
    if store is not None:
        from .runstore import matte_to_store, open_run

        if stitch != "trim":
            raise ValueError("a run store (store=...) joins blocks with stitch='trim' only")
        matte_to_store(
            image,
            trimap,
            store,
            model=model,
            chunks=chunks,
            overlap=overlap,
            global_size=global_size,
            device=device,
            labels=labels,
            model_options=model_options,
            force=force,
            progress=progress,
        )
        alpha = open_run(store)[0]
        return alpha.compute() if compute else alpha
    raw = image_channels(image, stacklevel=3)
    tri = canonical_trimap(trimap, labels=labels)
    if raw.shape[:2] != tri.shape:
        raise ValueError(
            f"image is {raw.shape[0]}x{raw.shape[1]} but trimap is {tri.shape[0]}x"
            f"{tri.shape[1]} (height x width); they must cover the same pixels"
        )
    if isinstance(model, str):
        from .models import get_model

        model_obj = get_model(model, device, **(model_options or {}))
    elif model_options:
        raise ValueError("model_options apply to a model name, not to a model object")
    else:
        model_obj = model
    context = global_pass(raw, tri, model=model_obj, global_size=global_size, device=device)
    if context.has_unknown and context.factor == 1:
        # The image fits the global working size: the global pass solved it at full
        # resolution already, and a patch pass would only repeat that solve.
        alpha = da.from_array(context.alpha, chunks=chunks)
    elif context.has_unknown:
        alpha = refine(
            raw,
            tri,
            context,
            model=model,
            chunks=chunks,
            overlap=overlap,
            device=device,
            model_options=model_options,
            stitch=stitch,
        )
    else:
        alpha = da.asarray(tri).map_blocks(known_alpha, dtype=np.float32)
    if not compute:
        return alpha
    with BlockProgress(alpha, enabled=progress):
        return alpha.compute()
