"""Tests for napari_hrmatt.bench (and ``hrmatt bench``) on a tiny alphamatting.com-shaped
dataset made here."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest

from napari_hrmatt import bench
from napari_hrmatt.alphamatting import load_sample
from napari_hrmatt.cli import main
from napari_hrmatt.metrics import evaluate

from ._alphamatting_data import make_dataset, trimap_of

pytest.importorskip("pymatting")

NAMES = ("GT01", "GT02", "GT19")  # two dev images, one held out
FAST = ["pymatting-cf", "hrmatt-cf"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("bench") / "alphamatting-training", NAMES)


def hrmatt_bench(argv) -> int:
    """``hrmatt bench ARGV``: the command line, exit status returned."""
    return main(["bench", *argv])


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("trimap", [1, 2])
def test_bench_in_process_scores_every_image(dataset, tmp_path, capsys, trimap):
    out = tmp_path / "res.csv"
    code = hrmatt_bench(
        [str(dataset.parent), "--trimap", str(trimap), "--methods", *FAST, "--out", str(out)]
        + ["--no-isolate"]
    )
    assert code == 0
    table = capsys.readouterr().out
    for split in ("dev", "heldout"):
        for method in FAST:
            assert f"| {split} | {method} |" in table
    rows = _read_csv(out)
    assert sorted((r["method"], r["image"]) for r in rows) == sorted(
        (m, n) for m in FAST for n in NAMES
    )
    assert {r["split"] for r in rows if r["image"] == "GT19"} == {"heldout"}
    for r in rows:
        assert r["status"] == "ok"
        assert float(r["time_s"]) > 0
        assert float(r["peak_rss_mb"]) > 0
        assert all(math.isfinite(float(r[k])) for k in bench.METRICS)

    # The CSV holds the metrics of what the method returns, on the right trimap ...
    image, tri, gt = load_sample(dataset, "GT02", trimap)
    np.testing.assert_array_equal(tri, trimap_of(gt, grow=trimap))  # palette decoded
    expected = evaluate(bench.estimate("pymatting-cf", image, tri), gt, tri)
    row = next(r for r in rows if r["method"] == "pymatting-cf" and r["image"] == "GT02")
    for k in bench.METRICS:
        assert float(row[k]) == pytest.approx(expected[k], rel=1e-9, abs=1e-12)
    # ... and a solver does far better than leaving the unknown pixels at 0.5.
    guess = np.where(tri == 128, 0.5, tri / 255.0)
    assert float(row["sad"]) < 0.5 * evaluate(guess, gt, tri)["sad"]


def test_bench_isolated_worker_measures_memory(dataset, tmp_path, capsys):
    out = tmp_path / "res.csv"
    code = hrmatt_bench(
        [str(dataset), "--split", "heldout", "--methods", "pymatting-cf", "--out", str(out)]
    )
    assert code == 0
    (row,) = _read_csv(out)
    assert row["image"] == "GT19" and row["status"] == "ok"
    if sys.platform == "linux":
        assert row["memory_probe"] == "VmHWM"
    assert float(row["peak_rss_mb"]) >= float(row["delta_rss_mb"]) >= 0
    assert "| heldout | pymatting-cf | 1 |" in capsys.readouterr().out


def test_timeout_drops_the_method(dataset):
    rows = list(
        bench._isolated("pymatting-cf", dataset, list(NAMES), 1, "cpu", timeout=0.0, startup=0.0)
    )
    assert [r["status"] for r in rows] == ["timeout", "skipped", "skipped"]
    assert [r["image"] for r in rows] == list(NAMES)


@pytest.mark.parametrize(
    ("argv", "images"),
    [
        (["--split", "dev"], ["GT01", "GT02"]),
        (["--split", "heldout"], ["GT19"]),
        (["--limit", "1"], ["GT01", "GT19"]),
        (["--images", "GT02"], ["GT02"]),
    ],
)
def test_image_selection(dataset, tmp_path, argv, images):
    out = tmp_path / "res.csv"
    args = [str(dataset), "--methods", "pymatting-cf", "--no-isolate", "--out", str(out)]
    assert hrmatt_bench(args + argv) == 0
    assert [r["image"] for r in _read_csv(out)] == images


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "no alphamatting.com training data"),
        (["{data}", "--methods", "nope"], "unknown method"),
        (["{data}", "--images", "GT05"], "not found"),
        (["{data}", "--methods", "hrmatt-cf:tol"], "is not key=value"),
        (["{data}", "--methods", "pymatting-cf:x=1"], "only hrmatt-<model> methods take"),
        (["{data}", "--methods", "hrmatt-nope:x=1"], "unknown method"),
    ],
)
def test_bad_arguments_exit_2(dataset, tmp_path, capsys, argv, message):
    fill = {"missing": str(tmp_path / "nowhere"), "data": str(dataset)}
    assert hrmatt_bench([a.format(**fill) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_measure_reports_time_and_memory():
    """The fields every benchmark row takes from measure (how well the probe sees an
    allocation depends on the machine: benchmarks/bench_memory_probe.py)."""
    result, stats = bench.measure(lambda x: x + 1, 1)
    assert result == 2
    assert stats["memory_probe"] in ("VmHWM", "ru_maxrss")
    assert stats["time_s"] >= 0 and stats["peak_rss_mb"] > 0
    if sys.platform == "linux":
        assert stats["memory_probe"] == "VmHWM"


def _row(split, method, sad, status="ok"):
    return {
        "split": split,
        "method": method,
        "status": status,
        "sad": sad,
        "mse": sad / 1000,
        "grad": sad,
        "conn": sad,
        "time_s": 1.0,
        "peak_rss_mb": 100.0 + sad,
        "delta_rss_mb": 10.0,
    }


def test_summary_means_and_best_marks():
    rows = [
        _row("dev", "a", 1.0),
        _row("dev", "a", 3.0),
        _row("dev", "b", 1.5),
        _row("dev", "b", 1.5),
        _row("dev", "c", 0.1),
        _row("dev", "c", math.nan, status="error"),
        _row("heldout", "a", 5.0),
        _row("heldout", "b", 4.0),
    ]
    summary = {(e["split"], e["method"]): e for e in bench.summarize(rows)}
    assert summary[("dev", "a")]["sad"] == 2.0
    assert summary[("dev", "a")]["peak_rss_mb"] == 103.0  # the largest, not the mean
    assert (summary[("dev", "c")]["images"], summary[("dev", "c")]["of"]) == (1, 2)
    table = bench.format_table(bench.summarize(rows)).splitlines()
    dev_b = next(line for line in table if "| dev | b |" in line)
    dev_c = next(line for line in table if "| dev | c |" in line)
    held_b = next(line for line in table if "| heldout | b |" in line)
    # c is lowest but incomplete (1/2): never "best"; b (1.5 < 2.0) is.
    assert "**1.50**" in dev_b and "**" not in dev_c and "1/2" in dev_c
    assert "**4.00**" in held_b


def test_merge_adds_earlier_rows(dataset, tmp_path, capsys):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    base = [str(dataset), "--split", "dev", "--no-isolate"]
    assert hrmatt_bench(base + ["--methods", "pymatting-cf", "--out", str(first)]) == 0
    # Rows of another trimap are not merged into a Trimap1 table.
    other = tmp_path / "other.csv"
    assert (
        hrmatt_bench(base + ["--methods", "pymatting-knn", "--trimap", "2", "--out", str(other)])
        == 0
    )
    capsys.readouterr()
    args = ["--methods", "hrmatt-cf", "--merge", str(first), str(other), "--out", str(second)]
    assert hrmatt_bench(base + args) == 0
    table = capsys.readouterr().out
    assert "| dev | pymatting-cf | 2 |" in table and "| dev | hrmatt-cf | 2 |" in table
    assert "pymatting-knn" not in table
    rows = _read_csv(second)
    assert sorted({r["method"] for r in rows}) == ["hrmatt-cf", "pymatting-cf"]
    old = {r["image"]: r for r in _read_csv(first)}
    for r in rows:
        if r["method"] == "pymatting-cf":
            assert float(r["sad"]) == float(old[r["image"]]["sad"])


def test_split_method_parses_model_options():
    assert bench.split_method("hrmatt-cf") == ("hrmatt-cf", {})
    assert bench.split_method("hrmatt-hdmatt:weights=run/a.pt,tile=512,tol=1e-4") == (
        "hrmatt-hdmatt",
        {"weights": "run/a.pt", "tile": 512, "tol": 1e-4},
    )


def test_method_options_reach_the_model(dataset, tmp_path):
    """A much larger regulariser is a different method in the table, and it changes the
    result (so the options are not silently dropped). (Not the tolerance: thin unknown
    bands are solved directly, where ``tol`` has no effect.)"""
    out = tmp_path / "res.csv"
    loose = "hrmatt-cf:eps=0.5"
    args = [str(dataset), "--split", "heldout", "--no-isolate", "--out", str(out)]
    assert hrmatt_bench(args + ["--methods", "hrmatt-cf", loose]) == 0
    rows = {r["method"]: float(r["sad"]) for r in _read_csv(out)}
    assert set(rows) == {"hrmatt-cf", loose}
    assert rows[loose] > rows["hrmatt-cf"]


def test_warmup_problem_reaches_the_solvers_set_ups():
    """The warm-up must hit every numba signature a real solve uses, so that the measured
    call loads none: more than 3000 unknown pixels (cf's smoothed-aggregation set-up, its
    tentative-prolongator kernel) and a multigrid level between the finest and the
    coarsest (more than 4 x 1024 cells: the full-stencil residual / Jacobi kernels)."""
    import torch

    from napari_hrmatt.models._stencil import Multigrid, Stencil

    image, trimap = bench._warmup_problem()
    assert image.shape == trimap.shape + (3,) and image.dtype == np.uint8
    assert (trimap == 128).sum() > 3000
    assert (trimap == 0).any() and (trimap == 255).any()
    coef = torch.zeros((9, *trimap.shape), dtype=torch.float64)
    coef[4] = 1.0
    assert len(Multigrid(Stencil(coef, 1)).levels) >= 3
