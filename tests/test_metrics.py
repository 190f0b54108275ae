"""Tests for napari_hrmatt.metrics: hand-computed values, properties, and mmeval."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from napari_hrmatt.metrics import (
    connectivity_error,
    evaluate,
    gradient_error,
    mse,
    sad,
)

METRICS = [sad, mse, gradient_error, connectivity_error]


def _analytic_pair(h=48, w=64):
    """A smooth ground truth and a wiggly estimate; no RNG, no value on a Conn threshold."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    gt = np.clip((xx - 20.37) / 20 + 0.3 * np.sin(yy / 5 + 0.1), 0, 1)
    alpha = np.clip(gt + 0.3 * np.sin(xx * 1.7 + yy * 2.3) * np.cos(yy * 0.9), 0, 1)
    trimap = np.full((h, w), 128, np.uint8)
    trimap[gt == 0] = 0
    trimap[gt == 1] = 255
    # Known pixels take the trimap's value, as a matting solver returns them.
    alpha[trimap == 0] = 0.0
    alpha[trimap == 255] = 1.0
    return alpha, gt, trimap


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.uint16])
def test_identical_mattes_give_zero(metric, dtype):
    _, gt, trimap = _analytic_pair()
    if np.dtype(dtype).kind == "u":
        gt = np.round(gt * np.iinfo(dtype).max).astype(dtype)
    else:
        gt = gt.astype(dtype)
    assert metric(gt, gt.copy(), trimap) == 0.0


@pytest.mark.parametrize("metric", METRICS)
def test_symmetric_in_alpha_and_gt(metric):
    alpha, gt, trimap = _analytic_pair()
    assert metric(alpha, gt, trimap) > 0
    assert metric(alpha, gt, trimap) == pytest.approx(metric(gt, alpha, trimap), rel=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_errors_outside_unknown_region_do_not_count(metric):
    _, gt, trimap = _analytic_pair()
    alpha = gt.copy()
    # Damage only known pixels far (> kernel half size) from the unknown band.
    known_far = np.zeros_like(trimap, bool)
    known_far[:, 52:] = trimap[:, 52:] == 255
    assert known_far.sum() > 100
    alpha[known_far] = 0.3
    band = trimap == 128
    assert not np.any(band[:, 47:])
    assert metric(alpha, gt, trimap) == 0.0
    assert metric(alpha, gt) > 0  # no trimap: every pixel counts


@pytest.mark.parametrize("metric", METRICS)
def test_no_unknown_pixel_gives_zero(metric):
    alpha, gt, _ = _analytic_pair()
    trimap = np.where(gt > 0.5, 255, 0).astype(np.uint8)
    assert metric(alpha, gt, trimap) == 0.0


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda t: t, id="grey-uint8"),
        pytest.param(lambda t: t.astype(np.float32) / 255, id="float"),
        pytest.param(
            lambda t: np.select([t == 0, t == 255], [1, 2], 0).astype(np.int32), id="labels"
        ),
    ],
)
@pytest.mark.parametrize("metric", METRICS)
def test_trimap_conventions_agree(metric, convert):
    alpha, gt, trimap = _analytic_pair()
    assert metric(alpha, gt, convert(trimap)) == metric(alpha, gt, trimap)


@pytest.mark.parametrize("metric", METRICS)
def test_integer_mattes_are_scaled(metric):
    alpha, gt, trimap = _analytic_pair()
    a8, g8 = (np.round(x * 255).astype(np.uint8) for x in (alpha, gt))
    a16, g16 = (x.astype(np.uint16) * 257 for x in (a8, g8))  # 257 * 255 = 65535
    expected = metric(a8.astype(np.float64) / 255, g8.astype(np.float64) / 255, trimap)
    assert metric(a8, g8, trimap) == pytest.approx(expected, rel=1e-12)
    assert metric(a16, g16, trimap) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("chunks", [(13, 17), (48, 64), (5, 64)])
def test_dask_inputs_match_numpy(metric, chunks):
    alpha, gt, trimap = _analytic_pair()
    expected = metric(alpha, gt, trimap)
    lazy = metric(da.from_array(alpha, chunks=chunks), gt, da.from_array(trimap, chunks=chunks))
    assert lazy == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_evaluate_returns_all_four():
    alpha, gt, trimap = _analytic_pair()
    result = evaluate(alpha, gt, trimap)
    assert result == {
        "sad": sad(alpha, gt, trimap),
        "mse": mse(alpha, gt, trimap),
        "grad": gradient_error(alpha, gt, trimap),
        "conn": connectivity_error(alpha, gt, trimap),
    }


# --------------------------------------------------------------------------- SAD / MSE by hand


def test_sad_and_mse_hand_values():
    alpha = np.array([[0.2, 0.5], [1.0, 1.0]])
    gt = np.array([[0.0, 0.5], [0.5, 0.0]])
    trimap = np.array([[128, 128], [128, 0]], np.uint8)  # last pixel known: ignored
    # |diff| on unknown pixels: 0.2, 0, 0.5
    assert sad(alpha, gt, trimap) == pytest.approx(0.7 / 1000)
    assert mse(alpha, gt, trimap) == pytest.approx((0.04 + 0 + 0.25) / 3)
    # without a trimap the last pixel adds |1 - 0| = 1
    assert sad(alpha, gt) == pytest.approx(1.7 / 1000)
    assert mse(alpha, gt) == pytest.approx((0.04 + 0 + 0.25 + 1) / 4)


# --------------------------------------------------------------------------- Grad by hand

SIGMA = 1.4


def _g(x):
    return math.exp(-(x**2) / (2 * SIGMA**2)) / (SIGMA * math.sqrt(2 * math.pi))


def _dg(x):
    return -x * _g(x) / SIGMA**2


def test_gradient_kernel_half_size_is_four():
    # h = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(1.4 * 2.5885) = ceil(3.624)
    from napari_hrmatt.metrics import _gauss_derivative_kernels

    assert _gauss_derivative_kernels(SIGMA)[2] == 4


@pytest.mark.parametrize("edge", [2, 5, 9])  # 2: the kernel reaches the replicated border
def test_gradient_error_of_a_step_edge(edge):
    """Straight from the DIM 2D kernel hx[i, j] = G(i) G'(j) / ||G (x) G'||_F.

    The estimate is a vertical step (0 left of ``edge``, 1 from it on); the ground
    truth is flat, so its gradient is 0 and Grad = sum |grad alpha|^2 / 1000.
    The image is constant down each column, so the y-derivative vanishes and the
    x-derivative at column c is sum_j G'(j) a(clip(c + j)) * sum_i G(i) / norm.
    """
    h, w = 6, 12
    alpha = np.zeros((h, w))
    alpha[:, edge:] = 1.0
    gt = np.zeros((h, w))
    taps = range(-4, 5)
    norm = math.sqrt(sum((_g(i) * _dg(j)) ** 2 for i in taps for j in taps))
    row = alpha[0]
    total = 0.0
    for c in range(w):
        gx = sum(_dg(j) * row[min(max(c + j, 0), w - 1)] for j in taps) * sum(map(_g, taps))
        total += h * (gx / norm) ** 2
    assert gradient_error(alpha, gt) == pytest.approx(total / 1000, rel=1e-12)


def test_gradient_error_is_minmax_normalised():
    alpha, gt, trimap = _analytic_pair()
    # An affine change of the estimate is undone by the min-max normalisation ...
    assert gradient_error(0.5 * alpha + 0.25, gt, trimap) == pytest.approx(
        gradient_error(alpha, gt, trimap), rel=1e-12
    )
    # ... a non-affine one is not.
    assert gradient_error(alpha**2, gt, trimap) != pytest.approx(
        gradient_error(alpha, gt, trimap), rel=1e-3
    )


def test_gradient_error_of_constant_mattes_is_zero():
    # max == min: the normalisation would divide 0 by 0; a flat matte has no gradient.
    assert gradient_error(np.full((8, 8), 0.3), np.full((8, 8), 0.7)) == 0.0


# --------------------------------------------------------------------------- Conn by hand
# Single rows: 4-connectivity along a row is plain adjacency, so every level l_p can be
# worked out on paper. m = min(alpha, gt) decides membership: (alpha >= t) & (gt >= t).


def test_connectivity_error_hand_value():
    # p0: a = g = 1     -> never leaves the source component: l = 1, d = 0, no error
    # p1: a .55, g .6   -> m .55, leaves at t = .6: l = .5; d = .05 / .10 < theta: phi 1, 1
    # p2: a .9,  g .25  -> m .25, leaves at t = .3: l = .2; d = .7 -> phi .3; d = .05 -> 1
    # p3: 0, 0          -> separator, l = 0, no error
    # p4: a .7,  g .4   -> island of one pixel, smaller than {p0,p1,p2}: leaves at t = .1,
    #                      l = 0; phi .3 vs .6
    alpha = np.array([[1.0, 0.55, 0.9, 0.0, 0.7]])
    gt = np.array([[1.0, 0.6, 0.25, 0.0, 0.4]])
    assert connectivity_error(alpha, gt) == pytest.approx((0.7 + 0.3) / 1000, rel=1e-12)
    # trimap masking: only p2 unknown
    trimap = np.array([[255, 255, 128, 0, 0]], np.uint8)
    assert connectivity_error(alpha, gt, trimap) == pytest.approx(0.7 / 1000, rel=1e-12)


def test_connectivity_error_empty_intersection():
    # m = [.5, .2]; for t >= .6 nothing is left (empty component branch).
    # p0: l = .5, d_a = .4 -> phi .6, d_g = 0 -> 1;  p1: l = .2, d = 0 for both
    alpha = np.array([[0.9, 0.2]])
    gt = np.array([[0.5, 0.2]])
    assert connectivity_error(alpha, gt) == pytest.approx(0.4 / 1000, rel=1e-12)
    # everything below the first threshold: every level is 0 and phi = 1 - alpha
    assert connectivity_error(np.array([[0.05, 0.8]]), np.array([[0.0, 0.0]])) == pytest.approx(
        0.8 / 1000, rel=1e-12
    )


def test_connectivity_error_largest_component_wins():
    # m = [.5, 0, .5, .5]: {p2, p3} is larger than {p0}, so p0 leaves at t = .1 (l = 0):
    # d_a = .6 -> .4, d_g = .5 -> .5: error .1. Had {p0} been kept, l = .5 and no error.
    alpha = np.array([[0.6, 0.0, 0.5, 0.5]])
    gt = np.array([[0.5, 0.0, 0.5, 0.5]])
    assert connectivity_error(alpha, gt) == pytest.approx(0.1 / 1000, rel=1e-12)


def test_connectivity_error_tie_goes_to_first_component():
    # m = [.5, 0, .5]: a tie; MATLAB's max (and raster-order labels) keep {p0}.
    # p0 kept (l = .5): phi .7 vs 1 -> .3;  p2 dropped (l = 0): phi .4 vs .5 -> .1.
    # Had {p2} been kept instead: p0 .2 vs .5 -> .3, p2 1 vs 1 -> 0.
    alpha = np.array([[0.8, 0.0, 0.6]])
    gt = np.array([[0.5, 0.0, 0.5]])
    assert connectivity_error(alpha, gt) == pytest.approx(0.4 / 1000, rel=1e-12)


def test_connectivity_uses_4_neighbours():
    # (1, 2) touches the top-row pair only diagonally, so with 4-neighbours it is an
    # island smaller than the pair: it leaves at t = .1 (l = 0), phi .1 vs .2 -> .1.
    # With 8-neighbours it would stay connected up to t = .8 (l = .8) and give no error.
    alpha = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.9], [0.0, 0.0, 0.0]])
    gt = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.8], [0.0, 0.0, 0.0]])
    assert connectivity_error(alpha, gt) == pytest.approx(0.1 / 1000, rel=1e-12)


def test_connectivity_step_must_divide_one():
    with pytest.raises(ValueError, match="1 / step"):
        connectivity_error(np.zeros((2, 2)), np.zeros((2, 2)), step=0.3)


# --------------------------------------------------------------------------- independent code

# Computed with open-mmlab mmeval 0.2.1 (SumAbsoluteDifferences, MattingMeanSquaredError,
# GradientError, ConnectivityError) on _analytic_pair(); mmeval's SAD / MSE take no trimap,
# so they were given the mattes multiplied by (trimap == 128).
MMEVAL_0_2_1 = {
    "sad": 0.10644482050199085,
    "mse": 0.019275721400338477,
    "grad": 0.0020801393305374897,
    "conn": 0.10994052838765195,
}


@pytest.mark.parametrize("name", list(MMEVAL_0_2_1))
def test_matches_frozen_mmeval_values(name):
    alpha, gt, trimap = _analytic_pair()
    assert evaluate(alpha, gt, trimap)[name] == pytest.approx(MMEVAL_0_2_1[name], rel=1e-9)


def test_matches_mmeval_live():
    pytest.importorskip("cv2")
    metrics = pytest.importorskip("mmeval.metrics")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :80]
    gt = np.clip((xx - 30.37) / 20 + 0.3 * np.sin(yy / 5 + 0.1), 0, 1)
    alpha = np.clip(gt + 0.2 * rng.standard_normal(gt.shape), 0, 1)
    alpha[rng.random(gt.shape) < 0.05] = 0.9  # islands for Conn
    trimap = np.full(gt.shape, 128, np.uint8)
    trimap[:3] = 0
    grad = metrics.GradientError()([alpha], [gt], [trimap])["gradient_error"]
    conn = metrics.ConnectivityError()([alpha], [gt], [trimap])["connectivity_error"]
    assert gradient_error(alpha, gt, trimap) == pytest.approx(grad, rel=1e-9)
    assert connectivity_error(alpha, gt, trimap) == pytest.approx(conn, rel=1e-9)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("alpha", "gt", "trimap", "match"),
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), None, "shape"),
        (np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((3, 4), np.uint8), "trimap has shape"),
        (np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), None, "2D"),
        (np.full((4, 4), 1.5), np.zeros((4, 4)), None, "outside"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), None, "NaN"),
        (np.zeros((4, 4), bool), np.zeros((4, 4)), None, "dtype"),
    ],
)
@pytest.mark.parametrize("metric", METRICS)
def test_bad_input_is_a_clear_error(metric, alpha, gt, trimap, match):
    with pytest.raises(ValueError, match=match):
        metric(alpha, gt, trimap)


def test_out_of_range_dask_input_is_caught():
    alpha = da.from_array(np.full((8, 8), -0.5), chunks=4)
    with pytest.raises(ValueError, match="outside"):
        sad(alpha, np.zeros((8, 8)))
