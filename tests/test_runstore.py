"""Run stores: resume after a kill, recompute only what changed, refuse what must not mix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_hrmatt.engine import estimate_alpha
from napari_hrmatt.runstore import (
    SettingsMismatch,
    StoreLocked,
    matte_to_store,
    open_run,
)

from .test_cli import _scene

SRC = str(Path(__file__).resolve().parents[1] / "src")
# 96 x 144 in 32-px blocks (3 x 5 = 15, the last column 16 px), a small global pass (f = 3).
FAST = {"chunks": 32, "global_size": 1600}


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
        matte_to_store(image, trimap, out, chunks=48, global_size=1600)
    with pytest.raises(SettingsMismatch, match="model_options"):
        matte_to_store(image, trimap, out, model_options={"tol": 1e-3}, **FAST)
    report = matte_to_store(image, trimap, out, chunks=48, global_size=1600, force=True)
    assert report.computed == report.blocks and report.reused == 0
    expected = estimate_alpha(image, trimap, chunks=48, global_size=1600)
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
                                   d + "/" + name, chunks=32, global_size=4000)
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

    from napari_hrmatt.io import open_image, open_trimap

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
    np.testing.assert_allclose(open_run(tmp_path / "alpha.zarr")[0].compute(), expected, atol=1e-6)
