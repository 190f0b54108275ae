"""Information-flow matting (Aksoy, Aydin and Pollefeys [1]_) in torch, CPU or CUDA.

Alpha minimises a sum of quadratic "information flows" over the unknown pixels ``U``:

.. math::

    E(\\alpha) = \\sigma_{CM} \\sum_{p \\in U} \\Big(\\alpha_p - \\sum_{q} w^{CM}_{pq}
        \\alpha_q\\Big)^2
      + \\sigma_{KU} \\sum_{p \\in U} \\eta_p (\\alpha_p - w^F_p)^2
      + \\sigma_{UU} \\sum_{p \\in U} \\sum_{q} w^{U}_{pq} (\\alpha_p - \\alpha_q)^2
      + \\sigma_L\\, \\alpha^T L \\alpha
      + \\sigma_{KNN} \\sum_{p \\in U} \\sum_{q} w^{K}_{pq} (\\alpha_p - \\alpha_q)^2

- **colour mixture**: ``w^CM`` are locally-linear-embedding weights (sum 1) that
  reconstruct the colour of ``p`` from its ``k_cm`` nearest neighbours in the feature space
  ``[colour, x / xy_scale, y / xy_scale]``;
- **known to unknown**: the ``k_ku`` nearest foreground and ``k_ku`` nearest background
  pixels (same features) reconstruct ``p``'s colour with LLE weights; the foreground share
  ``w^F_p`` estimates alpha and ``eta_p = |F_p - B_p|^2 / C`` (the distance of the
  weighted foreground and background colours) is the confidence of that estimate;
- **intra unknown**: ``k_uu`` nearest unknown pixels in ``[colour, x / (20 xy_scale),
  y / (20 xy_scale)]`` with ``w^U = max(1 - |f_p - f_q|_1, 0)``, symmetrised;
- **local**: the closed-form matting Laplacian ``L`` (:mod:`.closed_form`'s stencil);
- **KNN** (Chen, Li and Tang's KNN matting, :mod:`._ifm_knn`; not in the paper): ``k_knn``
  nearest pixels, known ones too, in ``[colour, knn_xy x / xy_scale, knn_xy y / xy_scale]``
  (whole solved crop in the global pass; in blocks off by default, or the ``search`` window
  with ``knn_patch="window"``), symmetrised.

Known pixels are hard (Dirichlet) constraints, where the paper uses a soft weight of 100.
With ``trim="patch"`` the paper's patch-based trimap trimming (:mod:`._trim`) runs first:
unknown pixels whose 3x3 colour distribution is close to a nearby foreground (background)
patch's and far from every nearby background (foreground) patch's become known. The
paper's post-processing is not part of this model.

The normal equations ``A alpha_U = b`` are solved by conjugate gradients preconditioned
with the multigrid V-cycle of :mod:`._stencil`, built on the local stencil plus the
diagonal of the non-local terms (``precond_diag`` times it). Neighbours are searched only
within a window of ``search`` (``search_known`` for known neighbours) pixels around each
pixel (:func:`._knn.window_knn`): see docs/ifm.md for why and for the cost. On CPU
(``coarse="cm"``, the default) a coarse correction on aggregates of the colour-mixture
neighbour graph is added to the V-cycle (:mod:`._ifm_coarse`) in the global pass; the
patch pass's blocks go without it by default (``patch_coarse="none"``).

References
----------
.. [1] Y. Aksoy, T. O. Aydin, M. Pollefeys, "Designing Effective Inter-Pixel Information
       Flow for Natural Image Matting", CVPR 2017. :doi:`10.1109/CVPR.2017.32`
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._blocks import cut_ring
from ..trimap import BACKGROUND, FOREGROUND, UNKNOWN
from ._ifm_knn import KNN_KERNELS
from ._ifm_nonlocal import _NonLocal
from ._knn import cm_uu_knn, lle_weights, uu_edges, window_knn
from ._stencil import Multigrid, cg, crop_to_unknown, restrict_to_unknown
from ._trim import check_trim_options, trim_array, trim_reach
from .closed_form import _cf_stencil

__all__ = ["InformationFlowModel", "ifm_system", "solve_ifm"]


def _valid(index, rows):
    """Missing neighbours (-1) point at the query itself: with weight 0 they add nothing.
    ``index`` itself when none is missing (the colour mixture's windows: always full)."""
    missing = index < 0
    if not bool(missing.any()):
        return index
    return torch.where(missing, rows[:, None], index)


def ifm_system(
    image: torch.Tensor, trimap: torch.Tensor, opts: dict, *, unknown_rows=False,
    stencil_dtype=torch.float64,
):  # fmt: skip
    """The flows of one image (crop): local stencil, non-local operator, K-to-U terms.

    Parameters
    ----------
    image : (C, H, W) tensor of float64 in [0, 1]
    trimap : (H, W) tensor of uint8
        ``UNKNOWN`` pixels are solved for; foreground/background candidates for the
        K-to-U flow are the ``FOREGROUND``/``BACKGROUND`` pixels.
    opts : dict
        The model's parameters (see :class:`InformationFlowModel`).

    unknown_rows : bool
        Build the rows of the local stencil at the unknown pixels only (the others zero;
        on CPU, where this saves work): all :func:`solve_ifm` reads.
    stencil_dtype : torch dtype
        The local stencil's storage (its coefficients are computed in float64).

    Returns
    -------
    stencil : ``Stencil``
        ``sigma_l L`` (``stencil_dtype``, not yet restricted to the unknown pixels).
    nonlocal_op : ``_NonLocal``
        Colour-mixture plus intra-U operator, already scaled by its sigmas.
    eta, alpha_ku : (H, W) tensors of float64
        ``sigma_ku eta_p`` and the K-to-U alpha estimate ``w^F_p`` (0 outside ``U``).
    """
    c, h, w = image.shape
    unknown, fg, bg = trimap == UNKNOWN, trimap == FOREGROUND, trimap == BACKGROUND
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=image.dtype, device=image.device),
        torch.arange(w, dtype=image.dtype, device=image.device),
        indexing="ij",
    )
    xy = torch.stack([yy, xx]) / opts["xy_scale"]
    colour = image.reshape(c, -1)
    rows = torch.nonzero(unknown.reshape(-1)).squeeze(1)
    search, search_known = opts["search"], opts["search_known"]

    # Colour mixture: LLE weights over the k_cm nearest pixels in [colour, xy].
    # (Each part cast to float32 before the cat: the same numbers, one float64 copy less.)
    image32, xy_u = image.float(), xy / 20
    feat = torch.cat([image32, xy.float()])
    # The intra-U search below (position down-weighted 20x) runs in the same pass.
    feat_u = torch.cat([image32, xy_u.float()])
    (cm_index, _), (uu_index, _) = cm_uu_knn(
        feat, feat_u, unknown, opts["k_cm"], opts["k_uu"], search
    )
    cm_w = lle_weights(colour, cm_index, rows, opts["lle_reg"])
    cm_index = _valid(cm_index, rows)

    # Known to unknown: k_ku foreground and k_ku background neighbours, one LLE fit
    # (skipped with sigma_ku = 0, where it would add nothing).
    eta = torch.zeros(h * w, dtype=image.dtype, device=image.device)
    alpha_ku = torch.zeros_like(eta)
    if opts["sigma_ku"] > 0:
        groups = window_knn(feat, unknown, [fg, bg], opts["k_ku"], search_known)
        (f_index, _), (b_index, _) = groups
        ku_w = lle_weights(colour, torch.cat([f_index, b_index], 1), rows, opts["lle_reg"])
        k = opts["k_ku"]
        wf, wb = ku_w[:, :k], ku_w[:, k:]
        has_both = (f_index[:, 0] >= 0) & (b_index[:, 0] >= 0)
        f_col = _weighted_colour(colour, f_index, wf)
        b_col = _weighted_colour(colour, b_index, wb)
        eta_u = (((f_col - b_col) ** 2).sum(1) / c).clamp(0, 1) * has_both
        eta[rows] = opts["sigma_ku"] * eta_u
        alpha_ku[rows] = wf.sum(1).clamp(0, 1) * has_both

    # Intra unknown: k_uu nearest unknown pixels, position down-weighted 20x.
    fq = torch.cat([image, xy_u]).reshape(c + 2, -1)
    uu_index, uu_w = uu_edges(fq, rows, uu_index, opts["sigma_uu"])
    if opts["sigma_knn"] > 0:  # KNN-matting flow (_ifm_knn): more edges of the same form
        from ._ifm_knn import knn_edges

        whole = opts.get("knn_whole", False)
        knn_index, knn_w = knn_edges(image, xy, rows, opts, whole=whole)
        uu_index = torch.cat([uu_index, knn_index], 1)
        uu_w = torch.cat([uu_w.to(knn_w.dtype), knn_w], 1)

    nonlocal_op = _NonLocal(h * w, opts["sigma_cm"], rows, cm_index, cm_w, rows, uu_index, uu_w)
    need = unknown.cpu().numpy() if unknown_rows and image.device.type == "cpu" else None
    stencil = _cf_stencil(image, opts["radius"], opts["eps"], dtype=stencil_dtype, rows=need)
    if opts["sigma_l"] != 1:
        stencil.coef *= opts["sigma_l"]
    return stencil, nonlocal_op, eta.reshape(h, w), alpha_ku.reshape(h, w)


def _weighted_colour(colour, index, weights):
    """``sum_q |w_q| c_q / sum_q |w_q|`` over valid neighbours (their plain mean if all 0)."""
    ok = index >= 0
    nb = colour[:, index.clamp(min=0)]  # (C, N, K)
    wt = weights.abs() * ok
    plain = ok.to(wt.dtype)
    total = wt.sum(1, keepdim=True)
    wt = torch.where(total > 1e-6, wt, plain)
    return ((nb * wt[None]).sum(2) / wt.sum(1).clamp(min=1e-12)[None]).T  # (N, C)


def solve_ifm(
    image: torch.Tensor,
    trimap: torch.Tensor,
    x: torch.Tensor,
    opts: dict,
    *,
    prior: float = 0.0,
    target: torch.Tensor | None = None,
    dtype=torch.float32,
):
    """Minimise the information-flow energy over the ``UNKNOWN`` pixels of ``trimap``.

    ``x`` (H, W) holds the values of the known pixels (and an initial guess elsewhere,
    replaced by the K-to-U estimate where that has any confidence). With ``prior > 0`` the
    energy gains ``prior |alpha - target|^2`` over the unknown pixels. Returns the alpha
    (not clamped) and the number of CG iterations.
    """
    h, w = trimap.shape
    # Only the unknown rows of the local flow: b is masked to them, the restriction
    # below keeps only them. On CPU the stencil is stored in CG's dtype at once (computed
    # in float64; b's local part then sums in that dtype too: rounding, docs/ifm.md).
    sdt = dtype if image.device.type == "cpu" else torch.float64
    stencil, nl, eta, alpha_ku = ifm_system(
        image, trimap, opts, unknown_rows=True, stencil_dtype=sdt
    )
    unknown = trimap == UNKNOWN
    u = unknown.to(dtype)
    x = x.to(dtype)
    known_part = (x * (1 - u)).double()  # x's dtype's values: exact in it
    local = stencil(known_part.to(sdt)).double()
    b = -(local + nl(known_part.reshape(-1)).reshape(h, w))
    ku = opts["sigma_ku"] > 0  # else eta = 0: its terms are skipped (the same numbers)
    if ku:
        b += eta * alpha_ku
    diag = eta.clone() if ku else 0.0
    if prior > 0:
        b = b + prior * target.double()
        diag += prior
    b = (b * u).to(dtype)
    # Preconditioner: multigrid on sigma_l L + diag(eta + prior + precond_diag * D_nl).
    d_nl = nl.diagonal(torch.float64).reshape(h, w)
    stencil.coef[stencil.center] += diag + opts["precond_diag"] * d_nl
    stencil.coef = stencil.coef.to(dtype)
    op = restrict_to_unknown(stencil, unknown)
    precond = Multigrid(op)
    shift = (-opts["precond_diag"] * d_nl).to(dtype) * u  # A = P - c D_nl + NL
    # Two-level: the V-cycle plus a coarse correction on colour-mixture aggregates (CPU).
    coarse = _coarse_correction(opts, op, nl, unknown, shift)
    nl.to(dtype)
    op.use_half()  # set-up done: CG's and level 0's products from half the stencil (CPU)

    def apply(y):
        return nl.apply_sum(y, op(y), shift, u)

    def mg(r):
        return precond(r) * u

    def two_level(r):  # (precond(r) + coarse(r)) * u, the sum and the mask in place
        return coarse.add_to(r, precond(r)).mul_(u)

    # Start from the K-to-U estimate in the global pass, from the global alpha in a block.
    start = x if prior > 0 or not ku else torch.where(eta > 0, alpha_ku.to(dtype), x)
    m = mg if coarse is None else two_level
    y, it = cg(apply, m, b, start * u, opts["maxiter"], opts["tol"])
    return x * (1 - u) + y * u, it


def _coarse_correction(opts, op, nl, unknown, shift):
    """The ``coarse="cm"`` correction (:mod:`._ifm_coarse`), or None: with ``"none"``, on
    CUDA, without unknown pixels or if the coarse matrix cannot be factorised."""
    if opts.get("coarse", "none") != "cm" or shift.device.type != "cpu":
        return None
    unk = unknown.cpu().numpy()
    if not unk.any():
        return None
    from ._ifm_coarse import CoarseCorrection

    try:
        return CoarseCorrection(op, nl, unk, shift)
    except RuntimeError:  # singular coarse matrix: the V-cycle alone
        return None


_COARSE = ("cm", "none")
_KNN_PATCH = ("window", "off")
_POSITIVE_INT = ("k_cm", "k_ku", "k_uu", "k_knn", "radius", "maxiter")
_NONNEGATIVE = (
    "sigma_cm", "sigma_ku", "sigma_uu", "sigma_knn", "knn_xy", "sigma_l", "prior", "precond_diag",
    "knn_eps",
)  # fmt: skip
_POSITIVE = ("eps", "lle_reg", "xy_scale", "tol", "patch_tol_scale")


class InformationFlowModel:
    """Information-flow matting (Aksoy et al. 2017) solved with multigrid-PCG in torch.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already resolved by ``get_model``).
    k_cm, k_ku, k_uu : int
        Neighbours of the colour-mixture (20), known-to-unknown (7 foreground and 7
        background) and intra-unknown (5) flows: the paper's values.
    sigma_cm, sigma_ku, sigma_uu, sigma_l : float
        Weights of the four flows: the paper's 1, 0.05, 0.01 and 1, except ``sigma_ku``
        = 0 (chosen on the dev photos, docs/ifm.md: with 0.01 and 0.05 the mean SAD
        is worse; 0.05 restores the paper's flows).
    radius, eps : int, float
        Window radius and epsilon of the local (closed-form) flow (``eps`` 1e-7, cf's:
        1e-5 scored a little better on the dev lowres photos but worse on the dev HR
        composites, docs/ifm.md).
    lle_reg : float
        Regulariser of the locally-linear-embedding fits (1e-3).
    xy_scale : float
        Pixels per unit of position in the neighbour features: the paper divides
        coordinates by the image size; we use a fixed length (about a global-pass image
        side) so that a block's features do not depend on the block.
    search, search_known : int
        Half-size, in pixels, of the window searched for colour-mixture and intra-U
        neighbours, and for known (foreground/background) neighbours.
    maxiter, tol : int, float
        CG limits per solve (relative residual ``tol``: 3e-4 in the global pass, by issue
        #11's cost rule for trades there: dev means within +0.4 %, GT04 at 0.5 MP about
        -10 % CPU; 3e-5, ``"cf"``'s value, before; docs/ifm.md).
    dtype : {"float32", "float64"}
        Working precision of CG (the operators are built in float64).
    prior : float
        Weight of the global alpha as a soft prior in the patch pass, as in ``"cf"``
        (0.03; 1e-3, cf's value, until the KNN flow made the global alpha better than the
        blocks alone: dev HR composites, docs/ifm.md).
    precond_diag : float
        Share of the non-local diagonal put in the multigrid preconditioner (0.25; 1: all).
    trim : {"patch", "none"}
        Trimap trimming before the solve (the paper's patch-based trimming, :mod:`._trim`;
        on by default: better on every dev metric and about twice as fast).
    trim_close, trim_far : float
        Bhattacharyya-distance thresholds of the trimming: an unknown pixel becomes
        foreground if its patch is within ``trim_close`` of a foreground patch and
        farther than ``trim_far`` from every background patch (and vice versa).
    trim_search : int
        Half-size, in pixels, of the window searched for known patches when trimming
        (20: by the cost rule on dev, docs/ifm.md; 40 is a little better, and dearer).
    trim_reg : float
        Added to the diagonal of every patch colour covariance (flat patches).
    sigma_knn, k_knn, knn_xy, knn_kernel : float, int, float, str
        The KNN-matting flow (Chen, Li and Tang, :mod:`._ifm_knn`): weight (0.001; 0: off),
        neighbours per unknown pixel (10), spatial weight of its features ``[colour,
        knn_xy x / xy_scale, knn_xy y / xy_scale]`` (0.02: neighbours by colour, almost
        anywhere) and edge weights (``"binary"``: 1; ``"kernel"``: ``1 - |f_p - f_q| /
        sqrt(C + 2)``). Global pass: neighbours from the whole solved crop (k-d tree);
        blocks: see ``knn_patch``. Chosen on dev by issue #11's rule (docs/ifm.md).
    knn_patch : {"window", "off"}
        The KNN flow in the patch pass's blocks: ``"off"`` (the default: the global
        alpha, as prior, carries it; by the cost rule on four dev HR composites at 3 MP,
        CPU -10 to -27 %, SAD lower on all four, mean Grad equal, docs/ifm.md) or within ``search``
        (``"window"``).
    coarse : {"cm", "none"}
        CG preconditioner: ``"cm"`` adds to the multigrid V-cycle a coarse correction on
        aggregates of the colour-mixture neighbour graph (:mod:`._ifm_coarse`, CPU only;
        on CUDA ``"none"`` is used): about half the CG iterations, 5-20 % less CPU time on
        GT04 at 3 / 0.5 MP, more memory (docs/ifm.md); ``"none"``: the V-cycle alone.
        The global pass's solve; the blocks' is ``patch_coarse``.
    patch_tol_scale : float
        The patch pass's block solves (``refine``), which start from the global alpha,
        stop at a relative residual of ``patch_tol_scale * tol``: 1 (3e-4, the global
        pass's tolerance). 3e-4 was chosen for the blocks by the cost rule on the dev HR
        composites (CPU -12 / -14 %, SAD and Grad +0.1 / +0.3 %, docs/ifm.md), as 10 x the
        global pass's 3e-5 then; since the global pass also stops at 3e-4 the scale is 1.
    knn_eps : float
        The global pass's KNN search (k-d tree) is approximate with ``knn_eps > 0``: the
        ``j``-th neighbour found is within ``1 + knn_eps`` times the true ``j``-th distance
        (scipy's ``cKDTree.query(eps=...)``): 1 (the default, with ``tol`` 3e-4 one trade
        package of issue #11, docs/ifm.md); 0: exact.
    patch_coarse : {"none", "cm"}
        ``coarse`` for the patch pass's block solves: ``"none"`` (the default; the blocks
        start from the global alpha with ``prior``, so they need only about a quarter more
        iterations without it, and save its set-up and memory, docs/ifm.md) or ``"cm"``.
    """

    name = "ifm"

    def __init__(
        self,
        device="cpu",
        k_cm=20,
        k_ku=7,
        k_uu=5,
        sigma_cm=1.0,
        sigma_ku=0.0,
        sigma_uu=0.01,
        sigma_l=1.0,
        radius=1,
        eps=1e-7,
        lle_reg=1e-3,
        xy_scale=500.0,
        search=20,
        search_known=40,
        maxiter=1000,
        tol=3e-4,
        dtype="float32",
        prior=0.03,
        precond_diag=0.25,
        trim="patch",
        trim_close=0.25,
        trim_far=0.9,
        trim_search=20,
        trim_reg=1e-4,
        coarse="cm",
        patch_tol_scale=1.0,
        sigma_knn=0.001,
        k_knn=10,
        knn_xy=0.02,
        knn_kernel="binary",
        knn_patch="off",
        knn_eps=1.0,
        patch_coarse="none",
    ):
        self.device = torch.device(device)
        given = dict(locals())
        opts = {}
        for key in _POSITIVE_INT + ("search", "search_known"):
            value = given[key]
            low = 0 if key.startswith("search") else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
            opts[key] = int(value)
        for key in _NONNEGATIVE + _POSITIVE:
            try:
                value = float(given[key])
            except (TypeError, ValueError):
                value = math.nan
            ok = value > 0 if key in _POSITIVE else value >= 0
            if not (ok and math.isfinite(value)):
                kind = "a number > 0" if key in _POSITIVE else "a number >= 0"
                raise ValueError(f"{key} must be {kind}, got {given[key]!r}")
            opts[key] = value
        opts.update(check_trim_options(trim, trim_close, trim_far, trim_search, trim_reg))
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = getattr(torch, dtype)
        choices = {"coarse": _COARSE, "patch_coarse": _COARSE, "knn_kernel": KNN_KERNELS,
                   "knn_patch": _KNN_PATCH}  # fmt: skip
        for key, allowed in choices.items():
            if given[key] not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {given[key]!r}")
            opts[key] = given[key]
        self.prior = opts.pop("prior")
        self.opts = opts

    def _margin(self) -> int:
        """Pixels a row of the system reaches (neighbour windows, local flow)."""
        o = self.opts
        known = o["search_known"] if o["sigma_ku"] > 0 else 0  # K-to-U flow off at 0
        return max(o["search"], known, 2 * o["radius"])

    def _trimmed(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """``trimap`` after trimming (a copy); unchanged with ``trim="none"``."""
        return trim_array(image, trimap, self.opts, self.device)

    def _solve(self, image, trimap, alpha, *, prior=0.0, opts=None, whole=False):
        """Solve the crop around the unknown pixels of ``trimap``; ``alpha`` holds knowns.
        ``whole``: the global pass (the KNN flow searches the whole crop, not a window)."""
        opts = dict(self.opts if opts is None else opts, knn_whole=whole)
        box = crop_to_unknown(trimap == UNKNOWN, self._margin())
        if box is None:
            return alpha
        im = torch.as_tensor(np.ascontiguousarray(np.moveaxis(image[box], -1, 0)))
        im = im.to(device=self.device, dtype=torch.float64)
        t = torch.as_tensor(np.ascontiguousarray(trimap[box])).to(self.device)
        x = torch.as_tensor(alpha[box], dtype=torch.float64, device=self.device)
        x, _ = solve_ifm(im, t, x, opts, prior=prior, target=x, dtype=self.dtype)
        alpha[box] = x.clamp_(0, 1).cpu().numpy()
        return alpha

    def global_alpha(self, image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        trimap = self._trimmed(image, np.asarray(trimap, dtype=np.uint8))
        alpha = np.where(trimap == UNKNOWN, 0.5, trimap / 255.0)
        return self._solve(image, trimap, alpha, whole=True).astype(np.float32)

    def refine(self, image, trimap, coarse, fixed_border=(False, False, False, False)):
        # Trimming first: the pinned ring below is not a foreground/background candidate.
        trimap = self._trimmed(image, np.array(trimap, dtype=np.uint8))
        # Interior cuts: the outermost ring of unknown pixels is pinned to the global alpha
        # (a Dirichlet condition, as in "cf"). Pinned pixels are marked with a label that
        # is neither unknown nor a foreground/background candidate of the K-to-U flow.
        ring = cut_ring(trimap.shape, fixed_border)
        alpha = np.where(trimap == UNKNOWN, coarse, trimap / 255.0).astype(np.float64)
        ring &= trimap == UNKNOWN
        trimap[ring] = _PINNED
        alpha = self._solve(image, trimap, alpha, prior=self.prior, opts=self._patch_opts())
        return alpha.astype(np.float32)

    def _patch_opts(self) -> dict:
        """The options of a block's solve: ``tol`` times ``patch_tol_scale``, the
        preconditioner ``patch_coarse`` (for ``coarse``); no KNN flow with
        ``knn_patch="off"``."""
        opts = dict(self.opts, tol=self.opts["tol"] * self.opts["patch_tol_scale"])
        opts["coarse"] = opts["patch_coarse"]
        if opts["knn_patch"] == "off":
            opts["sigma_knn"] = 0.0
        return opts

    def overlap(self, factor: int) -> int:
        """Overlap for seam-free stitching, derived from the solver's reach.

        As for ``"cf"``, ``4 * factor`` pixels let the error of the pinned edge (about one
        global-pass pixel) decay; on top of that every row reaches ``search`` (and
        ``search_known`` when ``sigma_ku > 0``) pixels through its non-local neighbours,
        and ``2r`` through the local flow, so kept pixels see the same rows as in a
        whole-image solve. With
        trimming, the labels those rows read depend on pixels ``trim_search + 1`` farther.
        """
        reach = self._margin() + trim_reach(self.opts)
        return int(8 * math.ceil((4 * max(factor, 1) + reach) / 8))


# A label for pinned cut pixels: known (not UNKNOWN) but neither FOREGROUND nor BACKGROUND.
_PINNED = 64
assert _PINNED not in (UNKNOWN, FOREGROUND, BACKGROUND)
