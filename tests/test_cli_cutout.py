"""``hrmatt cutout`` end to end (napari_hrmatt.cli.cutout and the run pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hrmatt.cli import main
from napari_hrmatt.io import open_image, save_image
from napari_hrmatt.sample import make_sample

# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory):
    from napari_hrmatt.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample"), shape=(64, 96), seed=2)


@pytest.mark.parametrize(
    ("name", "background", "channels"),
    [
        ("cut.png", None, 4),
        ("cut.tif", None, 4),
        ("cut.zarr", None, 4),
        ("comp.png", "white", 3),
        ("comp.tif", "#336699", 3),
        ("comp2.png", "0.5,0.5,1", 3),
    ],
)
def test_cli_cutout(sample_files, tmp_path, name, background, channels, capsys):

    image_path, trimap_path = sample_files
    out = tmp_path / name
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "--quiet"]
    argv += ["--device", "cpu"] + (["--background", background] if background else [])
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    written = open_image(out).compute()
    assert written.shape == (64, 96, channels)
    if channels == 4:
        _, trimap, _ = make_sample((64, 96), seed=2)
        # Known pixels keep their alpha exactly (Zarr keeps float32, PNG/TIFF 8 bits).
        top = 255 if written.dtype == np.uint8 else 1.0
        np.testing.assert_array_equal(written[..., 3][trimap == 255], top)
        np.testing.assert_array_equal(written[..., 3][trimap == 0], 0)
    # No temporary files are left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_cutout_alpha_through_temporary_zarr(sample_files, tmp_path, monkeypatch):
    import napari_hrmatt.pipeline as pipeline

    image_path, trimap_path = sample_files
    in_memory = tmp_path / "mem" / "cut.png"
    argv = ["cutout", str(image_path), str(trimap_path), "--quiet", "--device", "cpu"]
    assert main([*argv, "-o", str(in_memory)]) == 0
    # Alphas above this size go through a temporary Zarr store: same result, no leftovers.
    monkeypatch.setattr(pipeline, "IN_MEMORY_PIXELS", 0)
    on_disk = tmp_path / "disk" / "cut.png"
    assert main([*argv, "-o", str(on_disk)]) == 0
    np.testing.assert_array_equal(open_image(on_disk).compute(), open_image(in_memory).compute())
    assert [p.name for p in on_disk.parent.iterdir()] == ["cut.png"]


def test_cli_cutout_background_image(sample_files, tmp_path):

    image_path, trimap_path = sample_files
    bg = tmp_path / "bg.png"
    save_image(np.zeros((64, 96, 3), np.uint8), bg)
    out = tmp_path / "comp.png"
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "--background", str(bg)]
    assert main([*argv, "--quiet", "--device", "cpu"]) == 0
    written = open_image(out).compute()
    _, trimap, _ = make_sample((64, 96), seed=2)
    np.testing.assert_array_equal(written[trimap == 0], 0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--background", "not-a-colour"], "colour"),
        (["--background", "missing.png"], "does not exist"),
        (["--chunk", "0"], ""),
    ],
)
def test_cli_cutout_bad_input(sample_files, tmp_path, extra, message, capsys):

    image_path, trimap_path = sample_files
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(tmp_path / "o.png")]
    assert main([*argv, *extra, "--quiet", "--device", "cpu"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cli_cutout_refuses_to_overwrite_input(sample_files, capsys):

    image_path, trimap_path = sample_files
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(image_path), "--quiet"]
    assert main(argv) == 2
    assert "refusing" in capsys.readouterr().err


def test_cli_cutout_uses_the_given_alpha(sample_files, tmp_path, monkeypatch):
    import napari_hrmatt.engine as engine

    image_path, trimap_path = sample_files
    alpha_path = tmp_path / "alpha.png"
    assert main(["matte", str(image_path), str(trimap_path), "-o", str(alpha_path), "-q"]) == 0

    def no_engine(*args, **kwargs):
        raise AssertionError("the alpha was recomputed")

    monkeypatch.setattr(engine, "estimate_alpha", no_engine)
    out = tmp_path / "cut.png"
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "-q"]
    assert main([*argv, "--alpha", str(alpha_path), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(
        open_image(out).compute()[..., 3], open_image(alpha_path).compute().squeeze()
    )


def test_cli_cutout_alpha_of_another_size_is_refused(sample_files, tmp_path, capsys):
    image_path, trimap_path = sample_files
    alpha_path = tmp_path / "small_alpha.png"
    save_image(np.zeros((10, 12), np.uint8), alpha_path)
    out = tmp_path / "cut.png"
    argv = ["cutout", str(image_path), str(trimap_path), "-o", str(out), "-q"]
    assert main([*argv, "--alpha", str(alpha_path), "--device", "cpu"]) == 2
    assert "alpha" in capsys.readouterr().err
    assert not out.exists()
