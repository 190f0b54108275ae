"""The ``hrmatt`` command line: round trips per output format and the bad-input table."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_hrmatt import cli
from napari_hrmatt.cli import main
from napari_hrmatt.engine import estimate_alpha
from napari_hrmatt.io import open_image

# Small problems with several blocks: 80 x 120 in 48-pixel chunks, a tiny global pass.
# The mechanics tests run "cf" on 48-px blocks (its small overlap keeps 2 x 3 blocks here);
# the default model ("ifm") has its own test below.
FAST = ["--model", "cf", "--chunk", "48", "--global-size", "0.002", "--quiet"]


def _scene(h: int = 80, w: int = 120, seed: int = 0):
    """A soft-edged disc on a graded background; trimap unknown where 0 < alpha < 1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip((0.3 * min(h, w) - np.hypot(yy - h / 2, xx - w / 2)) / 4 + 0.5, 0, 1)
    fg = np.array([230.0, 120.0, 40.0])
    bg = np.stack([60 + 40 * xx / w, 90 + 60 * yy / h, np.full((h, w), 160.0)], -1)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + rng.normal(0, 2, (h, w, 3))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    trimap = np.full((h, w), 128, np.uint8)
    trimap[alpha == 0] = 0
    trimap[alpha == 1] = 255
    return image, trimap


@pytest.fixture
def files(tmp_path):
    image, trimap = _scene()
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(trimap).save(tmp_path / "trimap.png")
    return tmp_path / "image.png", tmp_path / "trimap.png"


@pytest.fixture(scope="module")
def reference():
    """The same problem solved in memory through the Python API (by "cf", as ``FAST``)."""
    image, trimap = _scene()
    return estimate_alpha(image, trimap, model="cf", chunks=48, global_size=2000)


def _leftovers(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} - {"image.png", "trimap.png"}


def _one_error_line(capsys, match: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith("hrmatt: error: ")
    assert match.lower() in err[0].lower(), err[0]
    return err[0]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("name", "extra", "dtype"),
    [
        ("alpha.png", [], np.uint8),
        ("alpha.tif", ["--bit-depth", "16", "--workers", "1"], np.uint16),
        ("alpha.zarr", [], np.float32),
        ("alpha.ome.zarr", ["--bit-depth", "8"], np.uint8),
    ],
)
def test_matte_round_trip(files, reference, capsys, name, extra, dtype):
    import torch

    image, trimap = files
    out = image.parent / name
    threads = torch.get_num_threads()
    try:
        code = main(["matte", str(image), str(trimap), "-o", str(out), *FAST, *extra])
    finally:
        torch.set_num_threads(threads)  # --workers changes it for the whole process
    assert code == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"alpha written to {out}"
    # a Zarr output is a resumable run store, which says what it computed
    assert lines[:-1] == (["computed all 6 blocks"] if "zarr" in name else [])
    alpha = open_image(out).compute()
    assert alpha.dtype == dtype and alpha.shape == reference.shape
    if dtype == np.float32:
        np.testing.assert_allclose(alpha, reference, atol=1e-5)
    else:
        scale = np.iinfo(dtype).max
        # one quantisation step: float noise between the lazy and in-memory paths
        assert np.abs(alpha.astype(np.float64) - reference * scale).max() <= 1.0
    assert _leftovers(image.parent) == {name}


def test_matte_progress_bar_on_stderr(files, capsys):
    image, trimap = files
    out = image.parent / "alpha.tif"
    assert main(["matte", str(image), str(trimap), "-o", str(out), "--chunk", "48"]) == 0
    captured = capsys.readouterr()
    assert "block" in captured.err  # tqdm bar
    assert captured.out.strip() == f"alpha written to {out}"


def test_no_unknown_trimap_returns_the_known_alpha(tmp_path, capsys):
    image, _ = _scene()
    trimap = np.zeros(image.shape[:2], np.uint8)
    trimap[:, 60:] = 255
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(trimap).save(tmp_path / "trimap.png")
    out = tmp_path / "alpha.png"
    assert main(["matte", str(tmp_path / "image.png"), str(tmp_path / "trimap.png"),
                 "-o", str(out), *FAST]) == 0  # fmt: skip
    np.testing.assert_array_equal(open_image(out).compute(), trimap)


def test_image_smaller_than_one_chunk(tmp_path, capsys):
    image, trimap = _scene(40, 60)
    tifffile.imwrite(tmp_path / "image.tif", image, photometric="rgb")
    Image.fromarray(trimap).save(tmp_path / "trimap.png")
    out = tmp_path / "alpha.zarr"
    args = ["matte", str(tmp_path / "image.tif"), str(tmp_path / "trimap.png"), "-o", str(out)]
    assert main([*args, "--chunk", "512", "-q"]) == 0, capsys.readouterr().err
    alpha = open_image(out).compute()
    expected = estimate_alpha(image, trimap, chunks=512)
    np.testing.assert_allclose(alpha, expected, atol=1e-5)


def test_label_trimap_file(tmp_path, capsys):
    image, trimap = _scene()
    labels = np.select([trimap == 0, trimap == 255], [1, 2], 0).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(labels).save(tmp_path / "labels.png")
    out = tmp_path / "alpha.png"
    args = ["matte", str(tmp_path / "image.png"), str(tmp_path / "labels.png"), "-o", str(out)]
    assert main([*args, *FAST, "--labels"]) == 0
    alpha = open_image(out).compute()
    assert (alpha[trimap == 0] == 0).all() and (alpha[trimap == 255] == 255).all()


def test_sample_command(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--size", "32x48"]) == 0
    out = capsys.readouterr().out
    image, trimap = tmp_path / "s" / "sample_image.png", tmp_path / "s" / "sample_trimap.png"
    assert f"image written to {image}" in out and f"trimap written to {trimap}" in out
    assert open_image(image).shape == (32, 48, 3)
    assert set(np.unique(open_image(trimap).compute())) <= {0, 128, 255}


# --------------------------------------------------------------------------- bad input


def _write(path: Path, array: np.ndarray) -> Path:
    if path.suffix == ".png":
        Image.fromarray(array).save(path)
    else:
        tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else "minisblack")
    return path


def _case_shape_mismatch(d, image, trimap):
    return image, _write(d / "small_trimap.png", np.full((80, 100), 128, np.uint8)), []


def _case_labels_outside_convention(d, image, trimap):
    # 8-bit grey files have no invalid value (0 bg, 255 fg, anything else unknown);
    # the label convention (0/1/2) does, so a label file with a 3 is the bad case.
    labels = np.zeros((80, 120), np.uint8)
    labels[:5], labels[-5:], labels[40, 40] = 1, 2, 3
    return image, _write(d / "labels.png", labels), ["--labels"]


def _case_float_trimap_outside_range(d, image, trimap):
    t = np.full((80, 120), 0.5, np.float32)
    t[:5], t[-5:], t[40, 40] = 0.0, 1.0, 2.0
    return image, _write(d / "float_trimap.tif", t), []


def _case_integer_trimap_dtype(d, image, trimap):
    return image, _write(d / "int_trimap.tif", np.zeros((80, 120), np.int32)), []


def _case_all_unknown(d, image, trimap):
    return image, _write(d / "unknown.png", np.full((80, 120), 128, np.uint8)), []


def _case_missing_image(d, image, trimap):
    return d / "nope.png", trimap, []


def _case_missing_trimap(d, image, trimap):
    return image, d / "nope.tif", []


def _case_unreadable_image(d, image, trimap):
    (d / "broken.png").write_bytes(b"\x89PNG but not really")
    return d / "broken.png", trimap, []


def _case_unsupported_input(d, image, trimap):
    Image.fromarray(np.zeros((80, 120), np.uint8)).save(d / "image.bmp")
    return d / "image.bmp", trimap, []


def _case_nan_image(d, image, trimap):
    f = np.asarray(Image.open(image), np.float32) / 255
    f[10, 10, 1] = np.nan
    return _write(d / "nan.tif", f), trimap, []


def _case_float_image_out_of_range(d, image, trimap):
    f = np.asarray(Image.open(image), np.float32)  # 0-255, not [0, 1]
    return _write(d / "f255.tif", f), trimap, []


def _case_stack_image(d, image, trimap):
    return _write(d / "stack.tif", np.zeros((7, 80, 120), np.uint8)), trimap, []


def _case_unknown_model(d, image, trimap):
    return image, trimap, ["--model", "nonexistent"]


def _case_unknown_model_option(d, image, trimap):
    return image, trimap, ["--model-option", "weights=x.pt"]


def _case_malformed_model_option(d, image, trimap):
    return image, trimap, ["--model-option", "tol"]


def _case_missing_weights(d, image, trimap):
    return image, trimap, ["--model", "hdmatt", "--model-option", f"weights={d / 'nope.pt'}"]


BAD_INPUTS = {
    "shape mismatch": (_case_shape_mismatch, "they must cover the same pixels"),
    "labels outside convention": (_case_labels_outside_convention, "outside the convention"),
    "float trimap outside [0, 1]": (_case_float_trimap_outside_range, "outside [0, 1]"),
    "integer trimap dtype": (_case_integer_trimap_dtype, "unsupported trimap dtype"),
    "all unknown": (_case_all_unknown, "nothing to propagate from"),
    "missing image": (_case_missing_image, "nope.png' does not exist"),
    "missing trimap": (_case_missing_trimap, "nope.tif' does not exist"),
    "unreadable image": (_case_unreadable_image, "cannot read"),
    "unsupported input extension": (_case_unsupported_input, "unsupported file extension '.bmp'"),
    "float image with NaN": (_case_nan_image, "NaN"),
    "float image outside [0, 1]": (_case_float_image_out_of_range, "must lie in [0, 1]"),
    "image stack": (_case_stack_image, "one plane per file"),
    "unknown model": (_case_unknown_model, "unknown model 'nonexistent'"),
    "unknown model option": (
        _case_unknown_model_option,
        "model 'cf' has no option(s) ['weights']",
    ),
    "missing weights file": (_case_missing_weights, "no HDMatt weights file"),
    "malformed model option": (_case_malformed_model_option, "'tol' is not key=value"),
}


def test_matte_with_the_deep_model(files, reference, capsys):
    """--model hdmatt writes the network's alpha (not the solver's)."""
    image, trimap = files
    out = image.parent / "alpha.zarr"
    argv = ["matte", str(image), str(trimap), "-o", str(out), *FAST, "--model", "hdmatt"]
    assert main(argv) == 0
    alpha = open_image(out).compute()
    expected = estimate_alpha(*_scene(), model="hdmatt", chunks=48, global_size=2000)
    np.testing.assert_allclose(alpha, expected, atol=1e-5)
    assert np.abs(alpha - reference).mean() > 1e-3  # reference: the cf solver's alpha


def test_matte_without_model_runs_the_default_model(files, capsys):
    """No --model: the default model, information flow (not cf), writes the alpha."""
    from napari_hrmatt.models import DEFAULT_MODEL

    assert DEFAULT_MODEL == "ifm"
    image, trimap = files
    out = image.parent / "alpha.zarr"
    argv = ["matte", str(image), str(trimap), "-o", str(out), *FAST[2:]]
    assert main(argv) == 0
    alpha = open_image(out).compute()
    scene = _scene()
    expected = estimate_alpha(*scene, model="ifm", chunks=48, global_size=2000)
    np.testing.assert_allclose(alpha, expected, atol=1e-6)
    cf = estimate_alpha(*scene, model="cf", chunks=48, global_size=2000)
    assert np.abs(alpha - cf).mean() > 1e-3


def test_model_options_reach_the_model(files, reference, capsys):
    """A multigrid solver stopped after 2 iterations gives a different (worse) alpha."""
    image, trimap = files
    out = image.parent / "alpha.zarr"
    argv = ["matte", str(image), str(trimap), "-o", str(out), *FAST]
    options = ["maxiter=2", "tol=0.5", "precond=mg"]
    assert main(argv + [a for o in options for a in ("--model-option", o)]) == 0
    alpha = open_image(out).compute()
    assert np.abs(alpha - reference).mean() > 1e-3


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(files, capsys, case):
    build, match = BAD_INPUTS[case]
    image, trimap = files
    d = image.parent
    image, trimap, extra = build(d, image, trimap)
    before = _leftovers(d)
    out = d / "alpha.png"
    assert main(["matte", str(image), str(trimap), "-o", str(out), *FAST, *extra]) == 2
    _one_error_line(capsys, match)
    assert _leftovers(d) == before  # nothing written, no partial file


@pytest.mark.parametrize("which", ["image", "trimap"])
def test_output_equal_to_an_input_is_refused(files, capsys, which):
    image, trimap = files
    target = image if which == "image" else trimap
    before = target.read_bytes()
    assert main(["matte", str(image), str(trimap), "-o", str(target), *FAST]) == 2
    _one_error_line(capsys, "refusing to overwrite the input")
    assert target.read_bytes() == before


@pytest.mark.parametrize("name", ["alpha.bmp", "alpha.jpg", "alpha"])
def test_unsupported_output_extension(files, capsys, name):
    image, trimap = files
    assert main(["matte", str(image), str(trimap), "-o", str(image.parent / name), *FAST]) == 2
    _one_error_line(capsys, "unsupported file extension")
    assert _leftovers(image.parent) == set()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(files, capsys):
    image, trimap = files
    out = image.parent / "alpha.png"
    assert main(["matte", str(image), str(trimap), "-o", str(out), *FAST, "--device", "cuda"]) == 2
    _one_error_line(capsys, "no CUDA device")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["matte", "a.png", "t.png"], "-o/--output"),
        (["matte", "a.png", "t.png", "-o", "x.png", "--chunk", "0"], "at least 1"),
        (["matte", "a.png", "t.png", "-o", "x.png", "--global-size", "-1"], "positive"),
        (["matte", "a.png", "t.png", "-o", "x.png", "--bit-depth", "12"], "invalid choice"),
        (["matte", "a.png", "t.png", "-o", "x.png", "--device", "tpu"], "cuda:N"),
        (["matte", "a.png", "t.png", "-o", "x.png", "--device", "cuda:x"], "cuda:N"),
        (["sample", "d", "--size", "big"], "HEIGHTxWIDTH"),
        (["sample", "d", "--size", "8x8"], "at least 16x16"),
        ([], "COMMAND"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, match):
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_keyboard_interrupt_exits_130_without_partial_output(files, capsys, monkeypatch):
    import napari_hrmatt.engine

    def interrupted(*args, **kwargs):
        # A lazy alpha whose third block is "interrupted" while being written.
        def block(x, block_info=None):
            if block_info[0]["chunk-location"] == (1, 0):
                raise KeyboardInterrupt
            return x

        lazy = da.zeros((80, 120), np.float32, chunks=40)
        return lazy.map_blocks(block, dtype=np.float32)

    monkeypatch.setattr(napari_hrmatt.engine, "estimate_alpha", interrupted)
    image, trimap = files
    argv = ["matte", str(image), str(trimap), "-o", str(image.parent / "alpha.tif"), *FAST]
    assert main([*argv, "--workers", "1"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _leftovers(image.parent) == set()


def test_interrupted_zarr_run_resumes(files, reference, capsys, monkeypatch):
    """Ctrl-C in a Zarr run keeps the finished blocks; the same command finishes the rest."""
    import napari_hrmatt.runstore as runstore

    solve = runstore.solve_block

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the fourth of six blocks (one worker: one at a time)
            raise KeyboardInterrupt
        return solve(*args, **kwargs)

    image, trimap = files
    out = image.parent / "alpha.zarr"
    argv = ["matte", str(image), str(trimap), "-o", str(out), *FAST, "--workers", "1"]
    monkeypatch.setattr(runstore, "solve_block", interrupted)
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _leftovers(image.parent) == {"alpha.zarr"}  # no lock file left behind
    monkeypatch.setattr(runstore, "solve_block", solve)
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 of 6 blocks already done; recomputed 3 blocks (3 missing)"
    np.testing.assert_allclose(open_image(out).compute(), reference, atol=1e-5)
    assert main(argv) == 0
    assert (
        capsys.readouterr().out.splitlines()[0]
        == f"{out} is up to date (6 blocks, none recomputed)"
    )


# --------------------------------------------------------------------------- help, plugins


@pytest.mark.parametrize("argv", [["--help"], ["matte", "--help"], ["sample", "--help"]])
def test_help_exits_0(capsys, argv):
    assert main(argv) == 0
    assert "usage: hrmatt" in capsys.readouterr().out


def test_help_imports_nothing_heavy():
    code = textwrap.dedent(
        """
        import sys
        from napari_hrmatt.cli import main
        assert main(["--help"]) == 0
        assert main(["matte", "--help"]) == 0
        heavy = [m for m in ("numpy", "dask", "torch", "zarr", "PIL", "napari_hrmatt.engine")
                 if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "HEAVY []" in result.stdout


def test_local_matte_never_imports_distributed(files):
    """A local run names dask's scheduler and rechunk method itself: left unset, dask
    imports distributed (when installed) to look for a client, ~0.2 s of every run."""
    pytest.importorskip("distributed")
    image, trimap = files
    code = textwrap.dedent(
        f"""
        import sys
        from napari_hrmatt.cli import main
        assert main(["matte", {str(image)!r}, {str(trimap)!r}, "-o",
                     {str(image.parent / "alpha.tif")!r}, *{FAST!r}]) == 0
        print("DISTRIBUTED", "distributed" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "DISTRIBUTED False" in result.stdout


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_has_parser_and_run(name, capsys):
    import importlib

    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.configure_parser) and callable(module.run)
    assert main([name, "--help"]) == 0
    assert f"usage: hrmatt {name}" in capsys.readouterr().out


def test_listing_commands_imports_none_of_them():
    code = textwrap.dedent(
        """
        import sys
        from napari_hrmatt.cli import COMMANDS, main
        assert main(["--help"]) == 0
        print("LOADED", [m for m, _ in COMMANDS.values() if m in sys.modules])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "LOADED []" in result.stdout
