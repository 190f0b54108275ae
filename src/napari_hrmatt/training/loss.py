"""The training loss (HDMatt eq. 4) and its border weighting.

Alpha-prediction loss plus composition loss (Xu et al. 2017) over the unknown region,
both Charbonnier, weighted by the engine's linear blending ramp from the crop border
(:func:`border_ramp`): the engine trims or fades block borders, so predictions near a
crop's edge, made without their context, count less.
"""

from __future__ import annotations

__all__ = ["border_ramp", "matting_loss"]


def border_ramp(size: int, ramp: int, *, device=None):
    """Loss weights rising linearly from the crop border: ``min(1, (d + 0.5) / ramp)``.

    The same linear ramp as the engine's blended stitching (``stitch="blend"`` in
    :func:`napari_hrmatt.patch_pass.refine`, where ``ramp = 2 overlap``), ``d`` being
    the distance in pixels from the nearest crop edge.

    Returns
    -------
    (1, 1, size, size) tensor of float32 in (0, 1]
    """
    import torch

    i = torch.arange(size, device=device, dtype=torch.float32)
    d = torch.minimum(i, size - 1 - i)
    d = torch.minimum(d[:, None], d[None, :])
    return ((d + 0.5) / max(ramp, 1)).clamp(max=1.0)[None, None]


def matting_loss(pred, alpha, image, fg, bg, unknown, weight, *, comp_weight=1.0, eps=1e-6):
    """HDMatt eq. 4: alpha-prediction loss + composition loss over the unknown region.

    Both terms are Charbonnier distances (``sqrt(x^2 + eps^2)``, Xu et al. 2017)
    averaged over the unknown pixels with the per-pixel ``weight``.

    Parameters
    ----------
    pred, alpha : (B, 1, H, W) tensors
        Predicted and true alpha.
    image, fg, bg : (B, 3, H, W) tensors
        Composite and its true foreground and background.
    unknown : (B, 1, H, W) tensor of bool or float
    weight : (1 or B, 1, H, W) tensor
        E.g. :func:`border_ramp`.
    comp_weight : float

    Returns
    -------
    loss : scalar tensor
    parts : dict of float
        ``alpha`` and ``comp`` terms.
    """

    def charbonnier(x):
        return (x * x + eps * eps).sqrt()

    w = unknown.float() * weight
    norm = w.sum().clamp_min(1.0)
    l_alpha = (w * charbonnier(pred - alpha)).sum() / norm
    comp = pred * fg + (1 - pred) * bg
    l_comp = (w * charbonnier(comp - image).mean(1, keepdim=True)).sum() / norm
    loss = l_alpha + comp_weight * l_comp
    return loss, {"alpha": float(l_alpha.detach()), "comp": float(l_comp.detach())}
