"""Tests for the weights file format of models/hdmatt (weights.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_hrmatt.models import list_models
from napari_hrmatt.models.hdmatt import (
    DEFAULT_WEIGHTS,
    WEIGHTS_FORMAT,
    HDMattModel,
    WeightsError,
    load_weights,
    save_weights,
)

from .conftest import make_scene
from .test_hdmatt_network import random_inputs, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_save_load_round_trip(tmp_path):
    net = tiny_net("tgnl", seed=4)
    path = save_weights(net, tmp_path / "w.pt", meta={"steps": 7})
    loaded, meta = load_weights(path)
    assert meta == {"steps": 7} and loaded.config == net.config
    # The file is plain tensors and values: torch's safe loader reads it.
    assert torch.load(path, weights_only=True)["format"] == WEIGHTS_FORMAT
    inputs = random_inputs(1, 40, 40)
    with torch.no_grad():
        pool = net.context_pool(*random_inputs(1, 32, 32, seed=1))
        pool2 = loaded.context_pool(*random_inputs(1, 32, 32, seed=1))
        assert torch.equal(net(*inputs, pool), loaded(*inputs, pool2))
    model = HDMattModel(device="cpu", weights=str(path), coarse="none")
    image, trimap, _ = make_scene(40, 48, seed=5)
    expected = HDMattModel.from_network(net, coarse="none").global_alpha(image, trimap)
    np.testing.assert_array_equal(model.global_alpha(image, trimap), expected)


def test_missing_and_mismatched_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="hrmatt train"):
        HDMattModel(device="cpu", weights=tmp_path / "nope.pt")
    path = save_weights(tiny_net(), tmp_path / "w.pt")
    payload = torch.load(path, weights_only=True)
    payload["arch"]["widths"] = [4, 8, 8, 16]  # record no longer matches the tensors
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="does not match"):
        load_weights(tmp_path / "bad.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not an HDMatt weights file"):
        load_weights(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(tmp_path / "junk.pt")


def test_never_registered_without_weights():
    """The network is only exposed as a model once trained weights ship."""
    if "hdmatt" in list_models():
        assert DEFAULT_WEIGHTS.is_file()
