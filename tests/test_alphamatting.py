"""Tests for napari_hrmatt.alphamatting: the dataset layout and the fixed split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_hrmatt.alphamatting import (
    DEV,
    HELDOUT,
    SPLITS,
    find_dataset,
    list_samples,
    load_sample,
    sample_paths,
    split_of,
)

from ._alphamatting_data import make_dataset, trimap_of

NAMES = ("GT01", "GT02", "GT19")  # two dev images, one held out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("am") / "alphamatting-training", NAMES)


def test_the_split_is_disjoint_and_complete():
    assert len(DEV) == 18 and len(HELDOUT) == 9
    assert set(DEV).isdisjoint(HELDOUT)
    assert SPLITS["all"] == DEV + HELDOUT
    assert (split_of("GT18"), split_of("GT19")) == ("dev", "heldout")


def test_find_dataset_accepts_the_folder_or_its_parent(dataset, tmp_path):
    assert find_dataset(dataset) == dataset
    assert find_dataset(dataset.parent) == dataset
    with pytest.raises(FileNotFoundError, match="input_training_lowres"):
        find_dataset(tmp_path)


def test_list_samples_needs_all_three_files(dataset, tmp_path):
    assert list_samples(dataset, "dev") == ["GT01", "GT02"]
    assert list_samples(dataset, "heldout", trimap=2) == ["GT19"]
    assert list_samples(dataset) == list(NAMES)
    # An image without its ground truth is not a sample.
    partial = make_dataset(tmp_path / "partial", ("GT03", "GT04"))
    sample_paths(partial, "GT04")[2].unlink()
    assert list_samples(partial, "dev") == ["GT03"]


@pytest.mark.parametrize("trimap", [1, 2])
def test_load_sample_decodes_palette_trimaps(dataset, trimap):
    image, tri, gt = load_sample(dataset, "GT02", trimap)
    assert image.shape == (*gt.shape, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(tri, trimap_of(gt, grow=trimap))


def test_load_sample_refuses_mismatched_sizes(dataset, tmp_path):
    bad = make_dataset(tmp_path / "bad", ("GT05",))
    gt_path = sample_paths(bad, "GT05")[2]
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(gt_path)
    with pytest.raises(ValueError, match="differ"):
        load_sample(bad, "GT05")
