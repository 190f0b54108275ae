"""Run stores: resume after a kill, recompute only what changed, refuse what must not mix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_hrmatt._runfiles import write_pyramid
from napari_hrmatt.cli import main
from napari_hrmatt.engine import estimate_alpha
from napari_hrmatt.runstore import (
    SettingsMismatch,
    StoreLocked,
    matte_to_store,
    open_run,
)

from .test_cli import _scene

SRC = str(Path(__file__).resolve().parents[1] / "src")
# 96 x 144 in 32-px blocks (3 x 5 = 15, the last column 16 px), a small global pass (f = 3);
# "cf", whose small overlap keeps 32-px blocks apart (the store's mechanics do not depend on
# the model; the default model's store is checked by tests/test_cli.py).
FAST = {"model": "cf", "chunks": 32, "global_size": 1600}


@pytest.fixture(scope="module")
def problem():
    return _scene(96, 144)


def _records(store: Path) -> dict[tuple[int, int], bytes]:
    """The block records on disk: (i, j) -> bytes."""
    out = {}
    for p in (store / "blocks" / "c").rglob("*"):
        if p.is_file():
            i, j = (int(k) for k in p.relative_to(store / "blocks" / "c").parts[:2])
            out[i, j] = p.read_bytes()
    return out


def _chunk_stamps(store: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (store / "0").rglob("*") if p.is_file()}


def test_unchanged_rerun_computes_nothing(tmp_path, problem):
    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    first = matte_to_store(image, trimap, out, **FAST)
    assert first.computed == first.blocks == 15 and first.global_solved
    stamps = _chunk_stamps(out)
    again = matte_to_store(image, trimap, out, **FAST)
    assert again.up_to_date and again.reused == 15
    assert _chunk_stamps(out) == stamps
    # the store is an OME-Zarr image equal to the in-memory engine's result
    expected = estimate_alpha(image, trimap, **FAST)
    np.testing.assert_array_equal(open_run(out)[0].compute(), expected)
    assert zarr.open_group(str(out)).attrs["ome"]["multiscales"][0]["datasets"]


def test_trimap_edit_recomputes_exactly_the_blocks_it_touches(tmp_path, problem):
    from napari_hrmatt._blocks import BlockGrid

    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    first = matte_to_store(image, trimap, out, **FAST)
    before = _records(out)
    edited = trimap.copy()
    edited[8:24, 100:136] = 128  # a background patch in the top right becomes unknown
    report = matte_to_store(image, edited, out, **FAST)
    after = _records(out)
    # the blocks whose grown region (core + overlap) contains an edited pixel
    overlap = zarr.open_group(str(out)).attrs["hrmatt_run"]["settings"]["overlap"][0]
    grid = BlockGrid.plan(trimap.shape, FAST["chunks"], overlap)
    changed = edited != trimap
    expected = {ij for ij in grid if changed[grid.grown(*ij)].any()}
    assert 0 < len(expected) < first.blocks
    assert report.reasons == {"missing": 0, "inputs": len(expected), "context": 0, "output": 0}
    assert {ij for ij in before if before[ij] != after[ij]} == expected
    fresh = estimate_alpha(image, edited, **FAST)
    unknown = edited == 128
    diff = np.abs(open_run(out)[0].compute() - fresh)[unknown]
    assert diff.mean() < 1e-3 and diff.max() < 2 / 255
    # the pyramid cells above the recomputed blocks were updated: as if rebuilt whole
    levels = [level.compute() for level in open_run(out)]
    assert len(levels) == 4
    shutil.copytree(out, tmp_path / "copy.zarr")
    write_pyramid(zarr.open_group(str(tmp_path / "copy.zarr")), True, "copy.zarr")
    for level, rebuilt in zip(levels, open_run(tmp_path / "copy.zarr"), strict=True):
        np.testing.assert_array_equal(level, rebuilt.compute())


def test_truncated_chunk_is_recomputed(tmp_path, problem):
    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    matte_to_store(image, trimap, out, **FAST)
    expected = open_run(out)[0].compute()
    # a chunk of a block with unknown pixels (a non-trivial alpha), cut in half
    chunk = out / "0" / "c" / "1" / "1"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    report = matte_to_store(image, trimap, out, **FAST)
    assert report.computed == 1 and report.reasons["output"] == 1
    assert chunk.read_bytes() == data
    np.testing.assert_array_equal(open_run(out)[0].compute(), expected)


def test_store_from_other_settings_is_refused_unless_forced(tmp_path, problem):
    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    matte_to_store(image, trimap, out, **FAST)
    with pytest.raises(SettingsMismatch, match=r"chunks: store .*32.* this run .*48.*--force"):
        matte_to_store(image, trimap, out, model="cf", chunks=48, global_size=1600)
    with pytest.raises(SettingsMismatch, match="model_options"):
        matte_to_store(image, trimap, out, model_options={"tol": 1e-3}, **FAST)
    report = matte_to_store(
        image, trimap, out, model="cf", chunks=48, global_size=1600, force=True
    )
    assert report.computed == report.blocks and report.reused == 0
    expected = estimate_alpha(image, trimap, model="cf", chunks=48, global_size=1600)
    np.testing.assert_array_equal(open_run(out)[0].compute(), expected)


def _child(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_writer_is_refused(tmp_path, problem):
    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    holder = _child(
        """
        import sys, time
        from pathlib import Path
        from napari_hrmatt._runfiles import Lock
        Lock(Path(sys.argv[1])).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """,
        str(out),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=rf"being written by process {holder.pid} on"):
            matte_to_store(image, trimap, out, **FAST)
    finally:
        holder.kill()
        holder.communicate()  # waits, closes the pipes
    # the holder died without releasing: the kernel dropped its lock, its file is stale
    assert (tmp_path / ".alpha.zarr.lock").exists()
    assert matte_to_store(image, trimap, out, **FAST).computed == 15
    assert not (tmp_path / ".alpha.zarr.lock").exists()


def test_sigkill_then_resume_is_identical_and_keeps_finished_blocks(tmp_path):

    image, trimap = _scene(128, 160)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "trimap.npy", trimap)
    out = tmp_path / "alpha.zarr"
    # 4 x 5 = 20 blocks; one worker thread, so blocks finish one at a time
    run = """
        import sys, json, numpy as np, dask
        from napari_hrmatt.runstore import matte_to_store
        d = sys.argv[1]
        for name in sys.argv[2:]:
            with dask.config.set(scheduler="threads", num_workers=1):
                r = matte_to_store(np.load(d + "/image.npy"), np.load(d + "/trimap.npy"),
                                   d + "/" + name, model="cf", chunks=32, global_size=4000)
            print(r.reused, r.computed, flush=True)
    """
    child = _child(run, str(tmp_path), "alpha.zarr")
    deadline = time.monotonic() + 120
    while len(_records(out)) < 3 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    done = _records(out)
    assert 3 <= len(done) < 20, f"the run should be killed part-way, {len(done)} of 20 done"
    assert not zarr.open_group(str(out)).attrs["hrmatt_run"]["complete"]
    files = [out / "blocks" / "c" / str(i) / str(j) / "0" for i, j in done]
    files += [out / "0" / "c" / str(i) / str(j) for i, j in done]  # absent if all zero
    stamps = {f: f.stat().st_mtime_ns for f in files if f.exists()}
    # resume, then an uninterrupted run in the same process (same conditions)
    resumed = _child(run, str(tmp_path), "alpha.zarr", "whole.zarr")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert stdout.split() == [str(len(done)), str(20 - len(done)), "0", "20"]
    # the finished blocks were not computed again: their records and chunks are untouched
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    assert zarr.open_group(str(out)).attrs["hrmatt_run"]["complete"]
    whole = open_run(tmp_path / "whole.zarr")[0].compute()
    np.testing.assert_array_equal(open_run(out)[0].compute(), whole)


def test_two_worker_processes_same_result_small_graph(tmp_path):
    """A 2-process LocalCluster gives the threaded result; Zarr inputs never travel in
    the graph (dask's large-graph warning, an error here, is lowered to 64 KiB)."""
    distributed = pytest.importorskip("distributed")
    import dask

    from napari_hrmatt.io import open_image, open_trimap, save_alpha

    image, trimap = _scene(384, 480)  # 0.55 MB of pixels, 20 blocks of 96 px
    zarr.create_array(tmp_path / "image.zarr", data=image, chunks=(128, 128, 3))
    zarr.create_array(tmp_path / "trimap.zarr", data=trimap, chunks=(128, 128))
    settings = {"chunks": 96, "global_size": 20_000}
    expected = estimate_alpha(image, trimap, **settings)
    with (
        dask.config.set({"distributed.admin.large-graph-warning-threshold": "64KiB"}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        img = open_image(tmp_path / "image.zarr")
        tri = open_trimap(tmp_path / "trimap.zarr")
        report = matte_to_store(img, tri, tmp_path / "alpha.zarr", **settings)
        assert report.computed == report.blocks == 20
        # the same pixels from memory go inside the graph: the check can fail
        with pytest.raises(UserWarning, match="large graph"):
            matte_to_store(image, trimap, tmp_path / "numpy.zarr", **settings)
        # the command line on the same cluster, by address
        argv = ["matte", str(tmp_path / "image.zarr"), str(tmp_path / "trimap.zarr"), "-o",
                str(tmp_path / "cli.zarr"), "--chunk", "96", "--global-size", "0.02", "-q",
                "--scheduler", cluster.scheduler_address]  # fmt: skip
        assert main(argv) == 0
        # a plain OME-Zarr output on the cluster (its writer's cancel event stays home)
        save_alpha(open_run(tmp_path / "alpha.zarr")[0], tmp_path / "copy.zarr")
    alpha = open_run(tmp_path / "alpha.zarr")[0].compute()
    np.testing.assert_allclose(alpha, expected, atol=1e-6)
    np.testing.assert_array_equal(open_run(tmp_path / "cli.zarr")[0].compute(), alpha)
    np.testing.assert_array_equal(open_image(tmp_path / "copy.zarr").compute(), alpha)


def test_unreachable_scheduler_is_one_clear_error(tmp_path, capsys):
    image, trimap = _scene(40, 40)
    zarr.create_array(tmp_path / "image.zarr", data=image)
    zarr.create_array(tmp_path / "trimap.zarr", data=trimap)
    argv = ["matte", str(tmp_path / "image.zarr"), str(tmp_path / "trimap.zarr"), "-o",
            str(tmp_path / "a.zarr"), "--scheduler", "tcp://127.0.0.1:9"]  # fmt: skip
    assert main(argv) == 2
    assert "cannot reach the dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().err


def test_windowed_global_resolve_matches_a_full_one(scene):
    """update_global re-solves a box around an edit, keeps the rest, and lands within the
    run store's tolerance of solving the whole global problem again."""
    from napari_hrmatt.global_pass import solve_global, update_global
    from napari_hrmatt.models import get_model

    image, trimap, _ = scene  # 96 x 128, used here as the downsampled problem (f = 1)
    model = get_model("cf", "cpu")

    def fractions(t):
        return np.stack([t == 255, t == 0], -1).astype(np.float32)

    kwargs = {"factor": 1, "shape": trimap.shape, "model": model, "global_size": 1e9}
    old = solve_global(image, fractions(trimap), **kwargs)
    edited = trimap.copy()
    edited[40:56, 56:64][edited[40:56, 56:64] == 128] = 255  # part of the band painted fg
    changed = edited != trimap
    assert changed.any()
    new = update_global(
        old, image, fractions(edited), changed, model=model, margin=32, max_fraction=1
    )
    assert new is not None
    box = np.zeros(changed.shape, bool)
    box[40 - 32 : 56 + 32, 56 - 32 : 64 + 32] = True
    np.testing.assert_array_equal(new.alpha[~box], old.alpha[~box])
    full = solve_global(image, fractions(edited), **kwargs)
    unknown = edited == 128
    diff = np.abs(new.alpha - full.alpha)[unknown]
    assert diff.mean() < 1e-3 and diff.max() < 2 / 255
    # keeping the old context would not do, nor a box too tight: the check can fail
    assert np.abs(old.alpha - full.alpha)[unknown].max() > 2 / 255
    tight = update_global(
        old, image, fractions(edited), changed, model=model, margin=8, max_fraction=1
    )
    assert np.abs(tight.alpha - full.alpha)[unknown].max() > 2 / 255
    # too large an edit (or a model without update_global): solve it all
    assert update_global(old, image, fractions(edited), changed, model=model, margin=64) is None


def test_estimate_alpha_with_a_store(tmp_path, problem):
    image, trimap = problem
    out = tmp_path / "alpha.zarr"
    alpha = estimate_alpha(image, trimap, store=out, **FAST)
    assert isinstance(alpha, np.ndarray)
    np.testing.assert_array_equal(alpha, estimate_alpha(image, trimap, **FAST))
    stamps = _chunk_stamps(out)
    lazy = estimate_alpha(image, trimap, store=out, compute=False, **FAST)
    assert _chunk_stamps(out) == stamps  # nothing recomputed
    np.testing.assert_array_equal(lazy.compute(), alpha)
    with pytest.raises(ValueError, match="stitch='trim' only"):
        estimate_alpha(image, trimap, store=out, stitch="blend", **FAST)
