"""napari_hrmatt.io.ome: OME-Zarr metadata, the pyramid (odd edges), Zarr round trips."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_hrmatt.io import (
    open_image,
    save_alpha,
    save_image,
)
from napari_hrmatt.io.ome import build_pyramid, read_multiscales

from .io_helpers import RNG, _alpha, _leftovers


def _halve_reference(x: np.ndarray) -> np.ndarray:
    """2 x 2 means over (y, x) = the last two axes, odd edges replicated."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, h % 2), (0, w % 2)]
    x = np.pad(x.astype(np.float64), pad, mode="edge")
    return (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]) / 4


@pytest.mark.parametrize("colour", [False, True])
def test_ome_zarr_pyramid_and_metadata(tmp_path, colour):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    shape = (101, 75, 3) if colour else (101, 75)
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    out = save_image(da.from_array(image, chunks=(24, 24, 3)[: len(shape)]), tmp_path / "p.zarr")
    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == 3
    meta = dict(group.attrs)["ome"]
    assert meta["version"] == "0.5"
    ms = meta["multiscales"][0]
    names = [a["name"] for a in ms["axes"]]
    assert names == (["c", "y", "x"] if colour else ["y", "x"])
    paths = [d["path"] for d in ms["datasets"]]
    assert len(paths) >= 3  # 101 -> 51 -> 26 (<= 24 stops at the next level: 13)
    level0 = group[paths[0]][:]
    stored_first = np.moveaxis(image, -1, 0) if colour else image
    np.testing.assert_array_equal(level0, stored_first)  # channel-first per OME-NGFF
    previous = level0
    for i, path in enumerate(paths[1:], start=1):
        level = group[path]
        assert level.shape[-2:] == tuple((n + 1) // 2 for n in previous.shape[-2:])
        np.testing.assert_allclose(level[:], _halve_reference(previous), rtol=1e-6)
        scale = ms["datasets"][i]["coordinateTransformations"][0]["scale"]
        assert scale[-2:] == [2.0**i, 2.0**i]
        previous = level[:]
    assert max(previous.shape[-2:]) <= 24  # down to one chunk
    # An independent reader sees the same image and pyramid.
    nodes = list(Reader(parse_url(str(out)))())
    assert len(nodes[0].data) == len(paths)
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0]), stored_first)
    # And ours gives channels last again.
    np.testing.assert_array_equal(open_image(out).compute(), image)


def test_zarr_without_pyramid_and_integer_levels(tmp_path):
    image = RNG.integers(0, 256, (50, 70)).astype(np.uint8)
    flat = save_image(image, tmp_path / "flat.zarr", pyramid=False, chunks=16)
    assert list(zarr.open_group(flat, mode="r").array_keys()) == ["0"]
    pyr = save_image(image, tmp_path / "pyr.ome.zarr", chunks=16)
    level1 = zarr.open_group(pyr, mode="r")["1"]
    assert level1.dtype == np.uint8 and level1.chunks == (16, 16)
    np.testing.assert_array_equal(level1[:], np.rint(_halve_reference(image)).astype(np.uint8))


def test_open_zarr_written_by_others(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    image = RNG.integers(0, 65536, (3, 40, 52)).astype(np.uint16)
    group = zarr.open_group(tmp_path / "v04.zarr", mode="w", zarr_format=2)
    write_image(image, group, axes="cyx", fmt=FormatV04(), scale_factors=(2,))
    back = open_image(tmp_path / "v04.zarr")
    assert back.shape == (40, 52, 3) and back.dtype == np.uint16
    np.testing.assert_array_equal(back.compute(), np.moveaxis(image, 0, -1))
    # a plain array, channels first, and an array addressed inside a store
    zarr.save_array(tmp_path / "plain.zarr", image)
    np.testing.assert_array_equal(open_image(tmp_path / "plain.zarr"), np.moveaxis(image, 0, -1))
    first = dict(group.attrs)["multiscales"][0]["datasets"][0]["path"]
    np.testing.assert_array_equal(
        open_image(tmp_path / "v04.zarr" / first), np.moveaxis(image, 0, -1)
    )


def test_zarr_group_without_multiscales_is_an_error(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("a", shape=(4, 4), dtype="u1")
    with pytest.raises(ValueError, match=r"g\.zarr.*without OME-Zarr multiscales.*g\.zarr/a"):
        open_image(tmp_path / "g.zarr")


def test_existing_zarr_output_is_replaced_whole(tmp_path):
    out = tmp_path / "a.zarr"
    save_image(np.zeros((60, 60), np.float32), out, chunks=16)
    assert "2" in zarr.open_group(out, mode="r")  # 60 -> 30 -> 15
    save_image(np.ones((20, 20), np.float32), out, chunks=16)
    group = zarr.open_group(out, mode="r")
    assert sorted(group.array_keys()) == ["0", "1"]  # no stale level 2
    np.testing.assert_array_equal(group["0"][:], 1)
    assert _leftovers(tmp_path) == ["a.zarr"]


def test_zarr_computes_every_block_once(tmp_path):
    """One compute for level 0: shared graph pieces (here an overlap) run once."""
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def record(x, block_info=None):
        with lock:
            calls.append(tuple(block_info[0]["chunk-location"]))
        return x

    source = da.from_array(_alpha((90, 100)), chunks=30).map_blocks(record, dtype=np.float32)
    smoothed = source.map_overlap(lambda b: b, depth=4, boundary="reflect", dtype=np.float32)
    out = save_alpha(smoothed, tmp_path / "a.zarr", progress=True)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == source.npartitions
    np.testing.assert_array_equal(open_image(out).compute(), _alpha((90, 100)))


# --------------------------------------------------------------------------- build_pyramid


def _group_with_level0(tmp_path, image: np.ndarray, chunks: tuple) -> zarr.Group:
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("0", shape=image.shape, chunks=chunks, dtype=image.dtype, fill_value=0)
    group["0"][:] = image
    return group


def test_build_pyramid_odd_edges_round_up_and_replicate(tmp_path):
    """The one odd-edge rule: an edge of n pixels becomes ceil(n / 2), and the last
    coarse pixel of an odd edge is the mean of the last fine pixel with itself."""
    x = np.arange(15, dtype=np.float32).reshape(3, 5)
    group = _group_with_level0(tmp_path, x, (2, 2))
    assert list(build_pyramid(group, max_side=1)) == [1, 2, 3]
    level1 = group["1"][:]
    assert level1.shape == (2, 3)  # trimming would give (1, 2) and lose row 2, column 4
    expected = [
        [(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 4 + 9 + 9) / 4],
        [(10 + 11 + 10 + 11) / 4, (12 + 13 + 12 + 13) / 4, 14.0],
    ]
    np.testing.assert_array_equal(level1, expected)
    assert group["2"].shape == (1, 2) and group["3"].shape == (1, 1)
    np.testing.assert_array_equal(group["2"][:], [[np.mean(level1[:, :2]), np.mean(level1[:, 2])]])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_build_pyramid_channel_axis_first_or_last_agree(tmp_path, dtype):
    """OME-NGFF (c, y, x) and the widget's (H, W, C) stores get the same levels."""
    hi = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    image = (np.random.default_rng(3).random((45, 37, 3)) * hi).astype(dtype)
    last = _group_with_level0(tmp_path / "last", image, (16, 16, 3))
    first = _group_with_level0(tmp_path / "first", np.moveaxis(image, -1, 0), (3, 16, 16))
    levels_last = list(build_pyramid(last, channel_axis=2, max_side=16))
    levels_first = list(build_pyramid(first, channel_axis=0, max_side=16))
    assert levels_last == levels_first == [1, 2]  # 45 -> 23 -> 12 (<= 16 stops)
    previous = np.moveaxis(image, -1, 0)
    for i in levels_first:
        a, b = last[str(i)], first[str(i)]
        assert a.dtype == b.dtype == dtype
        assert a.chunks == (*(min(16, n) for n in a.shape[:2]), 3)  # level 0's, clipped
        assert b.chunks == (3, *(min(16, n) for n in b.shape[1:]))
        np.testing.assert_array_equal(np.moveaxis(a[:], -1, 0), b[:])
        expected = _halve_reference(previous)
        if dtype != np.float32:
            expected = np.rint(expected).astype(dtype)
        np.testing.assert_allclose(b[:], expected, rtol=1e-6)
        previous = b[:]


def test_build_pyramid_yields_after_each_stored_level(tmp_path):
    group = _group_with_level0(tmp_path, _alpha((64, 64)), (8, 8))
    steps = build_pyramid(group, max_side=8)
    assert sorted(group.array_keys()) == ["0"]  # a generator: nothing before the first step
    assert next(steps) == 1 and sorted(group.array_keys()) == ["0", "1"]
    assert list(steps) == [2, 3]
    assert group["3"].shape == (8, 8) and group["3"].chunks == (8, 8)
    # already small enough: no level at all
    small = _group_with_level0(tmp_path / "small", _alpha((8, 5)), (8, 8))
    assert list(build_pyramid(small, max_side=8)) == []


# --------------------------------------------------------------------------- read_multiscales


def test_read_multiscales_ours_and_others(tmp_path):
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import write_image

    ours = save_image(_alpha((40, 30)), tmp_path / "ours.zarr", chunks=16)
    ms = read_multiscales(zarr.open_group(ours, mode="r"))
    assert ms.axes == ("y", "x")
    assert [lv.path for lv in ms.levels] == ["0", "1", "2"]  # 40 -> 20 -> 10
    assert [lv.scale for lv in ms.levels] == [(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]
    assert [lv.translation for lv in ms.levels] == [(0.0, 0.0), (0.5, 0.5), (1.5, 1.5)]

    group = zarr.open_group(tmp_path / "v04.zarr", mode="w", zarr_format=2)
    image = RNG.integers(0, 256, (3, 20, 24)).astype(np.uint8)
    write_image(image, group, axes="cyx", fmt=FormatV04(), scale_factors=(2,))
    ms = read_multiscales(group)
    assert ms.axes == ("c", "y", "x") and len(ms.levels) == 2
    assert ms.levels[1].scale == (1.0, 2.0, 2.0)
    assert ms.levels[0].translation == (0.0, 0.0, 0.0)  # none stored: zeros

    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.attrs["multiscales"] = [{"datasets": [{"path": "0"}]}]  # no axes (OME-NGFF < 0.4)
    ms = read_multiscales(plain)
    assert ms.axes == ("y", "x") and ms.levels[0].scale == (1.0, 1.0)
    assert read_multiscales(zarr.open_group(tmp_path / "empty.zarr", mode="w")) is None
