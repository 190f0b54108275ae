"""Tests for the napari reader and writers (napari_hrmatt._reader, napari_hrmatt._writer).

The hooks are plain functions, tested directly (no display needed); one test
goes through a viewer (marked ``napari``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from napari_hrmatt._reader import get_reader, is_trimap_path, read_trimap, read_zarr
from napari_hrmatt._writer import write_image, write_trimap
from napari_hrmatt.trimap import TrimapError

MANIFEST = Path(__file__).parents[1] / "src" / "napari_hrmatt" / "napari.yaml"


@pytest.fixture(scope="module")
def labels():
    """(64, 80) label trimap: background left, unknown band, foreground right."""
    t = np.zeros((64, 80), np.uint8)
    t[:, :30] = 1
    t[:, 50:] = 2
    return t


@pytest.fixture(scope="module")
def alpha():
    """(64, 80) smooth float32 alpha in [0, 1] with exact 0 and 1 areas."""
    x = np.clip((np.arange(80, dtype=np.float32) - 30) / 20, 0, 1)
    y = 0.5 + 0.5 * np.sin(np.arange(64, dtype=np.float32) / 7)[:, None]
    return (x[None, :] * (0.5 + 0.5 * y)).astype(np.float32)


def grey(labels):
    return np.choose(labels, [128, 0, 255]).astype(np.uint8)


# --------------------------------------------------------------------------- reader: trimaps


@pytest.mark.parametrize(
    ("name", "claimed"),
    [
        ("GT01_trimap.png", True),
        ("Trimap-2.TIF", True),
        ("a.trimap.tiff", True),
        ("photo.png", False),
        ("trimap.jpg", False),  # lossy files are never trimaps
    ],
)
def test_reader_claims_trimaps_by_name_only(tmp_path, labels, name, claimed):
    path = tmp_path / name
    PILImage.fromarray(grey(labels)).save(path, format="PNG")  # content is irrelevant here
    assert is_trimap_path(path) is claimed
    assert (get_reader(str(path)) is read_trimap) is claimed


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("unknown", [128, 77])
def test_read_grey_trimap_as_labels(tmp_path, labels, suffix, unknown):
    path = tmp_path / f"x_trimap{suffix}"
    g = np.choose(labels, [unknown, 0, 255]).astype(np.uint8)
    if suffix == ".png":
        PILImage.fromarray(g).save(path)
    else:
        tifffile.imwrite(path, g)
    ((data, kwargs, kind),) = get_reader(str(path))(str(path))
    assert kind == "labels" and kwargs["name"] == "x_trimap"
    assert isinstance(data, np.ndarray)  # small: editable with the brush
    np.testing.assert_array_equal(data, labels)


def test_read_trimap_saved_in_label_convention(tmp_path, labels):
    path = tmp_path / "painted_trimap.tif"
    tifffile.imwrite(path, labels)  # 0 / 1 / 2, as napari's own labels writer saves it
    ((data, _, _),) = read_trimap(str(path))
    np.testing.assert_array_equal(data, labels)


def test_read_trimap_rgb_with_equal_channels(tmp_path, labels):
    path = tmp_path / "rgb_trimap.png"
    PILImage.fromarray(np.repeat(grey(labels)[..., None], 3, axis=2)).save(path)
    ((data, _, _),) = read_trimap(str(path))
    np.testing.assert_array_equal(data, labels)


def test_read_trimap_refuses_a_colour_photo(tmp_path):
    path = tmp_path / "not_a_trimap.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
    with pytest.raises(TrimapError, match="colour channels"):
        read_trimap(str(path))


def test_reader_ignores_other_directories_and_lists(tmp_path):
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "plain")) is None
    assert get_reader([str(tmp_path / "a_trimap.png"), str(tmp_path / "b_trimap.png")]) is None


# --------------------------------------------------------------------------- writers


def test_write_trimap_png_round_trip(tmp_path, labels):
    path = tmp_path / "out_trimap.png"
    assert write_trimap(str(path), labels, {}) == [str(path)]
    np.testing.assert_array_equal(np.asarray(PILImage.open(path)), grey(labels))
    ((data, _, _),) = read_trimap(str(path))
    np.testing.assert_array_equal(data, labels)


def test_write_trimap_refuses_non_trimap_labels(tmp_path, labels):
    bad = labels.copy()
    bad[0, 0] = 9
    with pytest.raises(TrimapError, match="outside the convention"):
        write_trimap(str(tmp_path / "bad.png"), bad, {})


@pytest.mark.parametrize(
    ("suffix", "dtype", "step"), [(".png", np.uint8, 255), (".tif", np.uint16, 65535)]
)
def test_write_alpha_tiff_png(tmp_path, alpha, suffix, dtype, step):
    path = tmp_path / f"alpha{suffix}"
    assert write_image(str(path), alpha, {}) == [str(path)]
    stored = np.asarray(PILImage.open(path)) if suffix == ".png" else tifffile.imread(path)
    assert stored.dtype == dtype and stored.shape == alpha.shape
    # Float alpha is quantised: 8-bit for PNG, 16-bit (alpha keeps its precision) for TIFF.
    np.testing.assert_allclose(stored / step, alpha, atol=0.51 / step)


@pytest.mark.parametrize("name", ["alpha.ome.zarr", "alpha.zarr"])
def test_write_alpha_zarr_and_read_back(tmp_path, alpha, name):
    path = tmp_path / name
    write_image(str(path), alpha, {})
    reader = get_reader(str(path))
    assert reader is read_zarr
    ((data, kwargs, kind),) = reader(str(path))
    assert kind == "image" and kwargs["name"] == "alpha"
    levels = data if kwargs["multiscale"] else [data]
    full = np.asarray(levels[0])
    assert full.shape == alpha.shape
    assert full.dtype == np.float32  # Zarr keeps float alpha exactly
    np.testing.assert_array_equal(full, alpha)
    assert kwargs["contrast_limits"] == (0.0, 1.0) and kwargs["colormap"] == "gray"


def test_write_multiscale_layer_writes_finest_level(tmp_path, alpha):
    path = tmp_path / "pyr.tif"
    write_image(str(path), [alpha, alpha[::2, ::2]], {"multiscale": True})
    assert tifffile.imread(path).shape == alpha.shape


def test_write_rgb_uint8_tiff_keeps_values(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    write_image(str(path), rgb, {})
    np.testing.assert_array_equal(tifffile.imread(path), rgb)


def test_large_zarr_reads_back_as_lazy_multiscale(tmp_path):
    """A result big enough for a pyramid comes back as lazy multiscale levels."""
    import dask.array as da

    big = da.random.default_rng(2).random((3000, 2500), chunks=1024).astype(np.float32)
    path = tmp_path / "big.ome.zarr"
    write_image(str(path), big, {})
    ((data, kwargs, _),) = read_zarr(str(path))
    assert kwargs["multiscale"] and len(data) >= 2
    assert all(isinstance(level, da.Array) for level in data)
    assert data[0].shape == (3000, 2500) and data[1].shape[0] < 3000


def _ome_group(path, image, axes, scales, translation):
    """An OME-NGFF 0.4 group written by hand: one array per scale, ``image[..., ::2^i, ::2^i]``."""
    import zarr

    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets = []
    for i, scale in enumerate(scales):
        group.create_array(str(i), data=image[..., :: 2**i, :: 2**i])
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    group.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": a} for a in axes], "datasets": datasets}
    ]


def test_read_ome_zarr_geometry_and_channels_from_metadata(tmp_path):
    """Axes, levels, scale and translation come from the file (io.ome.read_multiscales)."""
    image = np.random.default_rng(4).integers(0, 256, (3, 40, 52), dtype=np.uint8)
    path = tmp_path / "cells.ome.zarr"
    _ome_group(path, image, "cyx", [[1.0, 0.5, 0.25], [1.0, 1.0, 0.5]], [0.0, 3.0, 7.0])
    assert get_reader(str(path)) is read_zarr
    ((data, kwargs, kind),) = read_zarr(str(path))
    assert kind == "image" and kwargs["name"] == "cells" and kwargs["multiscale"]
    assert kwargs["scale"] == (0.5, 0.25) and kwargs["translate"] == (3.0, 7.0)
    assert kwargs["rgb"] and data[0].shape == (40, 52, 3)  # channels moved last
    np.testing.assert_array_equal(np.asarray(data[0]), np.moveaxis(image, 0, -1))
    assert data[1].shape == (20, 26, 3)
    # a z axis is not ours
    _ome_group(tmp_path / "stack.ome.zarr", image, "zyx", [[1.0, 1.0, 1.0]], [0.0, 0.0, 0.0])
    assert get_reader(str(tmp_path / "stack.ome.zarr")) is None


# --------------------------------------------------------------------------- plugin


def test_manifest_is_valid_and_importable():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-hrmatt"
    manifest.validate_imports()  # every python_name resolves


@pytest.mark.napari
def test_viewer_open_and_save_through_the_plugin(make_napari_viewer, tmp_path, labels, alpha):
    pytest.importorskip("napari")
    viewer = make_napari_viewer()
    path = tmp_path / "cat_trimap.png"
    PILImage.fromarray(grey(labels)).save(path)
    (layer,) = viewer.open(path, plugin="napari-hrmatt")
    assert type(layer).__name__ == "Labels"
    np.testing.assert_array_equal(layer.data, labels)
    viewer.add_image(alpha, name="alpha")
    out = tmp_path / "saved.ome.zarr"
    viewer.layers["alpha"].save(str(out), plugin="napari-hrmatt")
    (back,) = viewer.open(out, plugin="napari-hrmatt")
    full = np.asarray(back.data[0] if back.multiscale else back.data)
    np.testing.assert_array_equal(full, alpha)
    assert tuple(back.contrast_limits) == (0.0, 1.0)


# --------------------------------------------------------------------------- placement (issue 14)


@pytest.mark.parametrize("big", [False, True])
def test_zarr_keeps_placement_and_metadata(tmp_path, alpha, big):
    """Bug 3: a saved result reopens where it was (scale/translate), with what made it."""
    import dask.array as da

    data = da.tile(da.from_array(alpha), (40, 40)) if big else alpha  # 2560 x 3200: a pyramid
    meta = {
        "scale": (1.0, 0.5, 2.0),
        "translate": (0.0, 625.0, 1321.0),
        "metadata": {
            "napari_hrmatt": "alpha",
            "napari_hrmatt_run": {
                "image": "photo",
                "trimap": "photo trimap",
                "view": [1, 2, 3, 4],
            },
            "unrelated": object(),
        },
    }
    path = tmp_path / "view alpha.ome.zarr"
    write_image(str(path), data, meta)
    ((levels, kwargs, _),) = read_zarr(str(path))
    assert kwargs["scale"] == (0.5, 2.0) and kwargs["translate"] == (625.0, 1321.0)
    assert kwargs["metadata"] == {
        "napari_hrmatt": "alpha",
        "napari_hrmatt_run": {"image": "photo", "trimap": "photo trimap", "view": [1, 2, 3, 4]},
    }
    if big:  # coarser levels: 2^i x the pixel size, centred on the pixels they average
        import zarr

        ms = dict(zarr.open_group(str(path)).attrs)["ome"]["multiscales"][0]
        (s1, t1) = ms["datasets"][1]["coordinateTransformations"]
        assert s1["scale"] == [1.0, 4.0] and t1["translation"] == [625.25, 1322.0]


@pytest.mark.napari
def test_saved_view_result_reopens_in_place(make_napari_viewer, tmp_path, alpha):
    """Bug 3 through napari: File > Save with the plugin, then File > Open."""
    viewer = make_napari_viewer()
    viewer.add_image(alpha, name="cut", scale=(0.5, 2.0), translate=(625.0, 1321.0))
    out = tmp_path / "cut.ome.zarr"
    viewer.layers["cut"].save(str(out), plugin="napari-hrmatt")
    (back,) = viewer.open(out, plugin="napari-hrmatt")
    np.testing.assert_allclose(back.scale, (0.5, 2.0))
    np.testing.assert_allclose(back.translate, (625.0, 1321.0))
