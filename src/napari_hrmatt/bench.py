"""The four matting errors on alphamatting.com, next to PyMatting (``hrmatt bench``).

Runs our models and PyMatting's solvers on the low-resolution alphamatting.com
training set (:mod:`napari_hrmatt.alphamatting`: layout and the DEV / HELDOUT split)
with the same inputs, scores every result with :mod:`napari_hrmatt.metrics` (SAD,
MSE, Grad, Conn over the unknown region, Deep Image Matting conventions), and
summarises per-method means, separately for the development images GT01-GT18 and
the held-out images GT19-GT27, as one markdown table, plus a per-image CSV. The
command line is :mod:`napari_hrmatt.cli.bench`.

Timing and memory
-----------------
Each method runs in its own worker process (``multiprocessing`` "spawn"), so
imports, JIT caches and allocator pools of one method never count against
another. Before the first image the worker solves a tiny synthetic problem
(warm-up: imports, numba/torch initialisation) outside the measurement. For
every image the *peak resident set size* is measured around the call only:
on Linux the kernel's high-water mark is reset first (``/proc/self/clear_refs``,
value 5) and ``VmHWM`` read afterwards, which sees memory allocated by numba,
torch and BLAS threads (``tracemalloc`` would miss all three). ``delta`` is that
peak minus the RSS just before the call. Where the reset is unavailable the
monotone ``ru_maxrss`` is used and said so in the output.
"""

from __future__ import annotations

import contextlib
import csv
import math
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

# The split and the file layout live in alphamatting.py; re-exported here because
# they were part of this module's API.
from .alphamatting import DEV, HELDOUT, find_dataset, list_samples, load_sample, split_of

__all__ = [
    "DEV",
    "HELDOUT",
    "PYMATTING_METHODS",
    "find_dataset",
    "list_samples",
    "load_sample",
    "available_methods",
    "check_methods",
    "select_images",
    "run_benchmark",
    "read_merged",
    "estimate",
    "split_method",
    "measure",
    "summarize",
    "format_table",
    "write_csv",
    "read_csv",
]

# bench name -> pymatting function (pymatting >= 1.1)
PYMATTING_METHODS = {
    "pymatting-cf": "estimate_alpha_cf",  # closed-form matting, Levin et al. 2008
    "pymatting-knn": "estimate_alpha_knn",  # KNN matting, Chen et al. 2013
    "pymatting-lkm": "estimate_alpha_lkm",  # large-kernel matting, He et al. 2010
    "pymatting-rw": "estimate_alpha_rw",  # random-walk matting, Grady et al. 2005
    "pymatting-lbdm": "estimate_alpha_lbdm",  # learning-based matting, Zheng & Kambhamettu 2009
}

CSV_FIELDS = (
    "method",
    "image",
    "split",
    "trimap",
    "height",
    "width",
    "unknown_px",
    "sad",
    "mse",
    "grad",
    "conn",
    "time_s",
    "cpu_s",
    "peak_rss_mb",
    "delta_rss_mb",
    "memory_probe",
    "status",
    "error",
)
METRICS = ("sad", "mse", "grad", "conn")

# --------------------------------------------------------------------------- methods


def available_methods() -> list[str]:
    """Method names this installation can run: ``hrmatt-<model>`` and ``pymatting-*``."""
    from .models import list_models

    names = [f"hrmatt-{m}" for m in list_models()]
    try:
        import pymatting  # noqa: F401
    except ImportError:
        pass
    else:
        names += list(PYMATTING_METHODS)
    return names


def split_method(method: str) -> tuple[str, dict]:
    """``"hrmatt-hdmatt:weights=a.pt,tile=512"`` -> ``("hrmatt-hdmatt", {...})``.

    Values that read as integers or floats become numbers (:func:`parse_options`).
    """
    from .models import parse_options

    name, _, rest = method.partition(":")
    options = parse_options(filter(None, rest.split(",")))
    return name, options


def estimate(method: str, image: np.ndarray, trimap: np.ndarray, *, device="auto") -> np.ndarray:
    """Run one method on one image.

    Parameters
    ----------
    method : str
        ``"hrmatt-<model>"`` (our engine, :func:`napari_hrmatt.engine.estimate_alpha`
        with default settings), ``"hrmatt-<model>:key=value,..."`` (the same with
        model options, e.g. ``hrmatt-hdmatt:weights=run/best.pt``; see
        :func:`split_method`) or one of :data:`PYMATTING_METHODS`.
    image : (H, W, 3) array of uint8
    trimap : (H, W) array of uint8 in {0, 128, 255}
    device : str
        Device for our models.

    Returns
    -------
    alpha : (H, W) array of float in [0, 1]
    """
    if method.startswith("hrmatt-"):
        from .engine import estimate_alpha

        model, options = split_method(method)
        return estimate_alpha(
            image,
            trimap,
            model=model.removeprefix("hrmatt-"),
            device=device,
            model_options=options or None,
        )
    if method in PYMATTING_METHODS:
        import pymatting

        fn = getattr(pymatting, PYMATTING_METHODS[method])
        # PyMatting's convention: float64 image in [0, 1], trimap 0 / 1 known, else unknown.
        alpha = fn(image.astype(np.float64) / 255.0, trimap.astype(np.float64) / 255.0)
        return np.clip(alpha, 0.0, 1.0)
    raise ValueError(f"unknown method {method!r}; choose from {available_methods()}")


def _warmup_problem(size: int = 96):
    """A ``size`` x ``size`` two-colour problem: enough to trigger imports and JIT (or
    numba's cache loads), nothing more. 96 (not smaller): about 4600 unknown pixels, so
    that every numba signature a real solve uses is hit here and not in the measured call:
    a multigrid level between the finest and the coarsest (``ifm``, ``cf``: the full-stencil
    residual / Jacobi kernels) and the smoothed-aggregation set-up of ``cf`` (more than
    3000 unknowns: its tentative-prolongator kernel)."""
    q = size // 4
    yy, xx = np.mgrid[:size, :size]
    alpha = np.clip((xx - 4 * q / 3) / (4 * q / 3), 0, 1)
    image = (255 * (alpha[..., None] * [0.9, 0.2, 0.1] + (1 - alpha[..., None]) * 0.3)).astype(
        np.uint8
    )
    trimap = np.full((size, size), 128, np.uint8)
    trimap[:, :q] = 0
    trimap[:, 3 * q :] = 255
    return image, trimap


# --------------------------------------------------------------------------- memory


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def measure(fn: Callable, *args, **kwargs):
    """Call ``fn`` and measure its wall time and the process's peak RSS during the call.

    Returns
    -------
    result
        What ``fn`` returned.
    stats : dict
        ``time_s``; ``cpu_s`` (CPU time of the whole process, all threads, during the
        call: comparable on a loaded machine where wall time is not); ``peak_rss_mb``
        (peak resident set size of the whole process while ``fn`` ran);
        ``delta_rss_mb`` (that minus the RSS just before the call);
        ``memory_probe``: ``"VmHWM"`` (reset before the call) or ``"ru_maxrss"`` (the
        process's lifetime peak, an upper bound, where no reset is possible).
    """
    probe = "VmHWM" if _reset_peak() and _status_kb("VmHWM") is not None else "ru_maxrss"
    before = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if probe == "VmHWM":
        peak = _status_kb("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    stats = {
        "time_s": elapsed,
        "cpu_s": cpu,
        "peak_rss_mb": peak / 1024,
        "delta_rss_mb": (peak - before) / 1024 if before is not None else math.nan,
        "memory_probe": probe,
    }
    return result, stats


# --------------------------------------------------------------------------- one method


def _run_one(method, root, name, trimap_index, device) -> dict:
    from .metrics import evaluate

    row = {"method": method, "image": name, "split": split_of(name), "trimap": trimap_index}
    try:
        image, tri, gt = load_sample(root, name, trimap_index)
        row.update(height=tri.shape[0], width=tri.shape[1], unknown_px=int((tri == 128).sum()))
        # Solvers print diagnostics (PyMatting's "PERFORMANCE WARNING"); keep stdout
        # for the table.
        with contextlib.redirect_stdout(sys.stderr):
            alpha, stats = measure(estimate, method, image, tri, device=device)
        row.update(stats)
        row.update(evaluate(np.asarray(alpha, np.float64), gt, tri))
        row["status"] = "ok"
    except Exception as exc:  # one failing image must not lose the others
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
    return row


def _iter_method(method, root, names, trimap_index, device):
    """Warm up, then yield one result row per image (same process)."""
    image, tri = _warmup_problem()
    with contextlib.redirect_stdout(sys.stderr):
        estimate(method, image, tri, device=device)
    for name in names:
        yield _run_one(method, root, name, trimap_index, device)


def _worker(method, root, names, trimap_index, device, conn):
    """Entry point of the per-method worker process: rows go back through ``conn``."""
    try:
        for row in _iter_method(method, root, names, trimap_index, device):
            conn.send(row)
    except Exception as exc:  # e.g. the warm-up itself failed
        conn.send({"fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _isolated(method, root, names, trimap_index, device, timeout, startup=60.0):
    """Run a method in a fresh process; yield rows, marking timeouts and crashes.

    ``startup`` seconds are added to the first wait, which also covers the warm-up.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_worker, args=(method, root, names, trimap_index, device, child), daemon=True
    )
    proc.start()
    child.close()
    done = 0
    failure = None
    try:
        while done < len(names):
            if not parent.poll(timeout + (startup if done == 0 else 0)):
                failure = ("timeout", f"no result within {timeout:g} s; method dropped")
                break
            try:
                row = parent.recv()
            except EOFError:
                code = proc.join(5) or proc.exitcode
                failure = ("error", f"worker process died (exit code {code}); out of memory?")
                break
            if "fatal" in row:
                failure = ("error", row["fatal"])
                break
            done += 1
            yield row
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if failure is not None:
        status, message = failure
        for k, name in enumerate(names[done:]):
            yield {
                "method": method,
                "image": name,
                "split": split_of(name),
                "trimap": trimap_index,
                "status": status if k == 0 else "skipped",
                "error": message if k == 0 else f"skipped after {status} on {names[done]}",
            }


# --------------------------------------------------------------------------- output


def summarize(rows: Iterable[dict]) -> list[dict]:
    """Per (split, method) means of the metrics and time, and the largest peak RSS.

    Only images with ``status == "ok"`` count; ``images`` says how many of how many.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["split"], row["method"]), []).append(row)
    out = []
    for (split, method), group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        entry = {"split": split, "method": method, "images": len(ok), "of": len(group)}
        for key in (*METRICS, "time_s"):
            entry[key] = float(np.mean([r[key] for r in ok])) if ok else math.nan
        for key in ("peak_rss_mb", "delta_rss_mb"):
            entry[key] = float(np.max([r[key] for r in ok])) if ok else math.nan
        out.append(entry)
    order = {"dev": 0, "heldout": 1}
    out.sort(key=lambda e: (order.get(e["split"], 2), e["method"]))
    return out


def format_table(summary: Sequence[dict]) -> str:
    """One markdown table; the best mean of each metric within a split is in bold.

    Means over different image subsets (a method that failed on some images) are not
    comparable and are never marked best.
    """
    cols = [
        ("SAD", "sad", 1, "{:.2f}"),
        ("MSE x1e3", "mse", 1000, "{:.2f}"),
        ("Grad", "grad", 1, "{:.2f}"),
        ("Conn", "conn", 1, "{:.2f}"),
        ("time / image (s)", "time_s", 1, "{:.1f}"),
        ("peak RSS (MB)", "peak_rss_mb", 1, "{:.0f}"),
        ("delta RSS (MB)", "delta_rss_mb", 1, "{:.0f}"),
    ]
    head = "| split | method | images | " + " | ".join(c[0] for c in cols) + " |"
    sep = "|" + "---|" * 3 + "---:|" * len(cols)
    best = {}
    for e in summary:
        if e["images"] != e["of"] or not e["images"]:
            continue
        for _, key, _, _ in cols[:4]:
            k = (e["split"], key)
            best[k] = min(best.get(k, math.inf), e[key])
    lines = [head, sep]
    for e in summary:
        cells = []
        for _, key, scale, fmt in cols:
            value = e[key]
            text = "-" if math.isnan(value) else fmt.format(value * scale)
            complete = e["images"] == e["of"] and e["images"] > 0
            if complete and key in METRICS and value == best.get((e["split"], key)):
                text = f"**{text}**"
            cells.append(text)
        count = f"{e['images']}/{e['of']}" if e["images"] != e["of"] else str(e["images"])
        lines.append(f"| {e['split']} | {e['method']} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Iterable[dict], path) -> None:
    """Per-image results, one row per (method, image); MSE is not scaled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def read_csv(path) -> list[dict]:
    """Rows written by :func:`write_csv`, with numbers parsed back."""
    numeric = {"sad", "mse", "grad", "conn", "time_s", "cpu_s", "peak_rss_mb", "delta_rss_mb"}
    integer = {"trimap", "height", "width", "unknown_px"}
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key in numeric:
                    row[key] = float(value) if value != "" else math.nan
                elif key in integer and value != "":
                    row[key] = int(value)
                else:
                    row[key] = value
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- a whole run


def check_methods(methods: Sequence[str]) -> None:
    """Raise ValueError for a method this installation cannot run or bad options.

    Only ``hrmatt-<model>`` methods take ``:key=value`` options (:func:`split_method`).
    """
    known = available_methods()
    unknown = [m for m in methods if split_method(m)[0] not in known]
    options_on = [m for m in methods if ":" in m and not m.startswith("hrmatt-")]
    if options_on:
        raise ValueError(f"only hrmatt-<model> methods take options: {options_on}")
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {known}")


def select_images(
    root: Path,
    split: str = "all",
    trimap: int = 1,
    *,
    images: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[str]:
    """The complete samples of ``split``, narrowed to ``images`` and ``limit`` per split.

    Raises
    ------
    ValueError
        A named image is not in the split, or no image is left.
    """
    names = list_samples(root, split, trimap)
    if images:
        missing = [n for n in images if n not in names]
        if missing:
            raise ValueError(f"{missing} not found in split {split!r} of {root}")
        names = [n for n in names if n in set(images)]
    if limit is not None:
        names = [n for s in (DEV, HELDOUT) for n in [m for m in names if m in s][:limit]]
    if not names:
        raise ValueError(f"no complete image/trimap/GT triple in {root}")
    return names


def read_merged(
    paths: Iterable, trimap: int, names: Sequence[str], methods: Sequence[str]
) -> list[dict]:
    """Rows of earlier :func:`write_csv` files for ``names`` on ``trimap``, except ``methods``
    (those are being run again)."""
    rows: list[dict] = []
    for path in paths:
        try:
            rows += [
                r
                for r in read_csv(path)
                if r.get("trimap") == trimap
                and r.get("image") in names
                and r.get("method") not in methods
            ]
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc}") from exc
    return rows


def run_benchmark(
    root: Path,
    methods: Sequence[str],
    names: Sequence[str],
    *,
    trimap: int = 1,
    device: str = "auto",
    timeout: float = 600.0,
    isolate: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Every method on every image; one result row per (method, image).

    Parameters
    ----------
    root : Path
        :func:`~napari_hrmatt.alphamatting.find_dataset`'s folder.
    methods, names : sequence of str
        Methods (:func:`estimate`) and images (``"GT01"``...).
    trimap : int
        alphamatting.com Trimap1 or 2.
    device : str
        Device for our models.
    timeout : float
        Seconds per image before an isolated method is stopped and dropped.
    isolate : bool
        Run each method in its own process (see the module notes on memory); else in
        this one (faster start; the peak then includes what earlier methods left).
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    list of dict
        Rows with :data:`CSV_FIELDS`; ``status`` is ``ok``, ``error``, ``timeout``
        or ``skipped``.
    """
    from tqdm.auto import tqdm

    names = list(names)
    rows: list[dict] = []
    with tqdm(
        total=len(methods) * len(names), unit="img", file=sys.stderr, disable=not progress
    ) as bar:
        for method in methods:
            bar.set_description(method)
            if isolate:
                it = _isolated(method, root, names, trimap, device, timeout)
            else:
                it = _iter_method(method, root, names, trimap, device)
            for row in it:
                rows.append(row)
                bar.update(1)
    return rows
