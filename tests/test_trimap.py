import dask.array as da
import numpy as np
import pytest

from napari_hrmatt.trimap import (
    TrimapError,
    canonical_trimap,
    known_alpha,
    labels_to_trimap,
    trimap_from_mask,
    trimap_to_labels,
)


@pytest.mark.parametrize(
    ("trimap", "labels", "expected"),
    [
        (np.array([[0, 1, 128, 254, 255]], np.uint8), None, [[0, 128, 128, 128, 255]]),
        (np.array([[0, 300, 65535]], np.uint16), None, [[0, 128, 255]]),
        (np.array([[0.0, 0.5, 1.0]], np.float32), None, [[0, 128, 255]]),
        (np.array([[0, 1, 2]], np.int32), None, [[128, 0, 255]]),
        (np.array([[0, 1, 2]], np.uint8), True, [[128, 0, 255]]),
    ],
)
def test_canonical_conventions(trimap, labels, expected):
    assert canonical_trimap(trimap, labels=labels).tolist() == expected


@pytest.mark.parametrize(
    ("trimap", "labels", "message"),
    [
        (np.array([[0, 3]], np.int64), None, "outside the convention"),
        (np.array([[0, 1]], np.uint8), True, None),  # valid labels: no error
        (np.array([[0.0, 1.5]]), None, "outside \\[0, 1\\]"),
        (np.array([[0.0, np.nan]]), None, "NaN"),
        (np.array([[True, False]]), None, "masks, not trimaps"),
        (np.zeros((2, 2, 2), np.uint8), None, "must be 2D"),
    ],
)
def test_canonical_rejects_bad_values(trimap, labels, message):
    if message is None:
        canonical_trimap(trimap, labels=labels)
        return
    with pytest.raises(TrimapError, match=message):
        canonical_trimap(trimap, labels=labels)


def test_rgb_trimap_with_equal_channels_is_accepted_and_unequal_rejected():
    grey = np.array([[0, 128, 255]], np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    assert canonical_trimap(rgb).tolist() == [[0, 128, 255]]
    lazy = da.from_array(rgb, chunks=(1, 2, 1))
    assert canonical_trimap(lazy).compute().tolist() == [[0, 128, 255]]
    rgb[0, 0, 1] = 7
    with pytest.raises(TrimapError, match="colour channels"):
        canonical_trimap(rgb)
    with pytest.raises(TrimapError, match="colour channels"):
        canonical_trimap(da.from_array(rgb, chunks=(1, 2, 1))).compute()


def test_labels_round_trip_and_dask_laziness():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    grey = labels_to_trimap(labels)
    np.testing.assert_array_equal(trimap_to_labels(grey), labels)
    lazy = labels_to_trimap(da.from_array(labels.astype(np.int32), chunks=13))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), grey)
    bad = da.from_array(np.full((4, 4), 5, np.int32), chunks=2)
    with pytest.raises(TrimapError, match="outside the convention"):
        labels_to_trimap(bad).compute()


def test_trimap_from_mask_band_is_symmetric_and_exact():
    mask = np.zeros((21, 21), bool)
    mask[:, 10:] = True
    t = trimap_from_mask(mask, band=3)
    row = t[5]
    assert (row[:7] == 0).all() and (row[7:13] == 128).all() and (row[13:] == 255).all()
    assert (trimap_from_mask(mask, band=0) == np.where(mask, 255, 0)).all()
    with pytest.raises(ValueError, match="band"):
        trimap_from_mask(mask, band=-1)


def test_known_alpha():
    assert known_alpha(np.array([[0, 128, 255]], np.uint8)).tolist() == [[0.0, 0.5, 1.0]]
