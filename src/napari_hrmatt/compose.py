"""Compositing: RGBA cut-outs and composites over a new background, from F and alpha.

The foreground colours ``F`` come from :func:`napari_hrmatt.estimate_foreground`;
here they are only combined with the matte: a cut-out keeps ``F`` with alpha as its
fourth channel, a composite is ``alpha F + (1 - alpha) B_new``.
"""

from __future__ import annotations

import re

import dask.array as da
import numpy as np

from .image import as_float_alpha, as_float_image, is_dask

__all__ = ["composite", "cutout", "parse_color"]


def _foreground_and_alpha(foreground, alpha):
    """Validated foreground and alpha (``as_float_image``, ``as_float_alpha``) of one size."""
    fg = as_float_image(foreground)
    a = as_float_alpha(alpha)
    if fg.shape[:2] != a.shape:
        raise ValueError(
            f"foreground is {fg.shape[0]}x{fg.shape[1]} but alpha is {a.shape[0]}x"
            f"{a.shape[1]}; they must cover the same pixels"
        )
    return fg, a


def cutout(image, alpha, foreground=None, **kwargs):
    """RGBA cutout: foreground colours with the matte as alpha channel.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array (numpy or dask)
        The image (used to estimate the foreground when ``foreground`` is None).
    alpha : (H, W) array (numpy or dask) of float in [0, 1], uint8 or uint16
    foreground : (H, W, C) array, optional
        Foreground colours, e.g. from :func:`estimate_foreground`; estimated when
        missing (``**kwargs`` go to :func:`estimate_foreground`).

    Returns
    -------
    rgba : (H, W, 4) array of float32 in [0, 1]
        Straight (not premultiplied) alpha; grey foregrounds are repeated to RGB.
        Lazy when any input is.
    """
    if foreground is None:
        from .foreground import estimate_foreground

        foreground = estimate_foreground(image, alpha, **kwargs)
    fg, a = _foreground_and_alpha(foreground, alpha)
    lib = da if (is_dask(fg) or is_dask(a)) else np
    if fg.shape[2] == 1:
        fg = lib.concatenate([fg] * 3, axis=2)
    return lib.concatenate([fg, a[..., None]], axis=2)


_NAMED_COLORS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}


def parse_color(value) -> np.ndarray:
    """A colour as float32 RGB in [0, 1].

    Parameters
    ----------
    value : str or sequence of 3 numbers
        A name (``"white"``, ``"black"``, ``"green"``, ...), ``"#rrggbb"``,
        ``"#rgb"``, ``"r,g,b"``, or 3 numbers; numbers are 0-255 if any exceeds 1,
        else in [0, 1].

    Examples
    --------
    >>> parse_color("#ff8000").tolist()
    [1.0, 0.501960813999176, 0.0]
    >>> parse_color((0, 255, 0)).tolist(), parse_color([0.5, 0.5, 0.5]).tolist()
    ([0.0, 1.0, 0.0], [0.5, 0.5, 0.5])
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _NAMED_COLORS:
            rgb = _NAMED_COLORS[text]
        elif re.fullmatch(r"#[0-9a-f]{6}", text):
            rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
        elif re.fullmatch(r"#[0-9a-f]{3}", text):
            rgb = tuple(17 * int(ch, 16) for ch in text[1:])
        elif re.fullmatch(r"\s*[\d.]+\s*,\s*[\d.]+\s*,\s*[\d.]+\s*", text):
            rgb = tuple(float(v) for v in text.split(","))
        else:
            raise ValueError(
                f"cannot read {value!r} as a colour; use a name ({', '.join(_NAMED_COLORS)}), "
                "'#rrggbb' or 'r,g,b' (0-255)"
            )
        value = rgb
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"a colour needs 3 values in [0, 1] or 0-255, got {value!r}")
    if arr.max() > 1:
        arr = arr / 255.0
    return arr.astype(np.float32)


def composite(foreground, alpha, background):
    """Put the foreground over a new background: ``alpha F + (1 - alpha) B_new``.

    Parameters
    ----------
    foreground : (H, W) or (H, W, C) array (numpy or dask)
        Foreground colours (float in [0, 1], uint8 or uint16), e.g. from
        :func:`estimate_foreground`.
    alpha : (H, W) array (numpy or dask)
    background : (H, W) or (H, W, C) array, or a colour
        A new background image of the same height and width, or a colour accepted by
        :func:`parse_color`.

    Returns
    -------
    image : (H, W, C) array of float32 in [0, 1]
        ``C`` = 3 when either side is RGB. Lazy when any input is.

    Examples
    --------
    >>> import numpy as np
    >>> fg = np.ones((2, 2, 3), np.float32); a = np.array([[0, 0.5], [1, 1]], np.float32)
    >>> composite(fg, a, "black")[..., 0].tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    fg, a = _foreground_and_alpha(foreground, alpha)
    if isinstance(background, str) or np.ndim(background) == 1:
        bg = parse_color(background)  # (3,) broadcasts over (H, W, 3)
        if fg.shape[2] == 1:
            fg = fg * np.ones(3, np.float32)
    else:
        if background.shape[:2] != a.shape:
            raise ValueError(
                f"background is {background.shape[0]}x{background.shape[1]} but the "
                f"foreground is {a.shape[0]}x{a.shape[1]}; resize it to the same size"
            )
        bg = as_float_image(background)
        if bg.shape[2] != fg.shape[2]:
            if fg.shape[2] == 1:
                fg = fg * np.ones(3, np.float32)
            else:
                bg = bg * np.ones(3, np.float32)
    a3 = a[..., None]
    return (a3 * fg + (1 - a3) * bg).astype(np.float32)
