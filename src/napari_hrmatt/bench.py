"""``hrmatt bench``: the four matting errors on alphamatting.com, next to PyMatting.

Runs our models and PyMatting's solvers on the low-resolution alphamatting.com
training set (Rhemann et al., CVPR 2009) with the same inputs, scores every
result with :mod:`napari_hrmatt.metrics` (SAD, MSE, Grad, Conn over the unknown
region, Deep Image Matting conventions), and prints one markdown table of
per-method means, separately for the development images GT01-GT18 and the
held-out images GT19-GT27, plus a per-image CSV.

Expected layout (the alphamatting.com zips, as in ``shared/bench-data``)::

    DATA_DIR/                     (or DATA_DIR/alphamatting-training/)
      input_training_lowres/GT01.png ...
      gt_training_lowres/GT01.png ...
      trimap_training_lowres/Trimap1/GT01.png ...
      trimap_training_lowres/Trimap2/GT01.png ...

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

import argparse
import contextlib
import csv
import math
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEV",
    "HELDOUT",
    "PYMATTING_METHODS",
    "configure_parser",
    "run",
    "main",
    "find_dataset",
    "list_samples",
    "load_sample",
    "available_methods",
    "estimate",
    "split_method",
    "measure",
    "summarize",
    "format_table",
    "write_csv",
    "read_csv",
]

DEV = tuple(f"GT{i:02d}" for i in range(1, 19))
HELDOUT = tuple(f"GT{i:02d}" for i in range(19, 28))
SPLITS = {"dev": DEV, "heldout": HELDOUT, "all": DEV + HELDOUT}

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
    "peak_rss_mb",
    "delta_rss_mb",
    "memory_probe",
    "status",
    "error",
)
METRICS = ("sad", "mse", "grad", "conn")

_INPUT = "input_training_lowres"
_GT = "gt_training_lowres"
_TRIMAP = "trimap_training_lowres"


# --------------------------------------------------------------------------- data


def find_dataset(data_dir) -> Path:
    """The alphamatting.com training folder inside ``data_dir`` (or ``data_dir`` itself).

    Raises
    ------
    FileNotFoundError
        With a message saying which folders were expected.
    """
    data_dir = Path(data_dir)
    for root in (data_dir, data_dir / "alphamatting-training"):
        if (root / _INPUT).is_dir() and (root / _GT).is_dir() and (root / _TRIMAP).is_dir():
            return root
    raise FileNotFoundError(
        f"no alphamatting.com training data in {data_dir}: expected the folders "
        f"{_INPUT}/, {_GT}/ and {_TRIMAP}/Trimap1|Trimap2/ there or in "
        f"{data_dir / 'alphamatting-training'} (download the lowres training zips from "
        "http://www.alphamatting.com/datasets.php)"
    )


def _paths(root: Path, name: str, trimap: int) -> tuple[Path, Path, Path]:
    return (
        root / _INPUT / f"{name}.png",
        root / _TRIMAP / f"Trimap{trimap}" / f"{name}.png",
        root / _GT / f"{name}.png",
    )


def list_samples(root: Path, split: str = "all", trimap: int = 1) -> list[str]:
    """Names (``"GT01"``...) of the split whose input, trimap and GT files all exist."""
    return [n for n in SPLITS[split] if all(p.is_file() for p in _paths(root, n, trimap))]


def load_sample(root: Path, name: str, trimap: int = 1):
    """Read one image, its trimap and its ground truth.

    Returns
    -------
    image : (H, W, 3) array of uint8
    trimap : (H, W) array of uint8 in {0, 128, 255}
    gt : (H, W) array of uint8
    """
    from PIL import Image

    from .trimap import canonical_trimap

    img_p, tri_p, gt_p = _paths(root, name, trimap)
    # Many of these PNGs are palette images: convert, never read raw indices.
    with Image.open(img_p) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(tri_p) as im:
        tri = canonical_trimap(np.asarray(im.convert("L")))
    with Image.open(gt_p) as im:
        gt = np.asarray(im.convert("L"))
    if not (image.shape[:2] == tri.shape == gt.shape):
        raise ValueError(
            f"{name}: input {image.shape[:2]}, trimap {tri.shape} and GT {gt.shape} differ"
        )
    return image, tri, gt


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


def _warmup_problem():
    """A 48 x 48 two-colour problem: enough to trigger imports and JIT, nothing more."""
    yy, xx = np.mgrid[:48, :48]
    alpha = np.clip((xx - 16) / 16, 0, 1)
    image = (255 * (alpha[..., None] * [0.9, 0.2, 0.1] + (1 - alpha[..., None]) * 0.3)).astype(
        np.uint8
    )
    trimap = np.full((48, 48), 128, np.uint8)
    trimap[:, :12] = 0
    trimap[:, 36:] = 255
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
        ``time_s``; ``peak_rss_mb`` (peak resident set size of the whole process while
        ``fn`` ran); ``delta_rss_mb`` (that minus the RSS just before the call);
        ``memory_probe``: ``"VmHWM"`` (reset before the call) or ``"ru_maxrss"`` (the
        process's lifetime peak, an upper bound, where no reset is possible).
    """
    probe = "VmHWM" if _reset_peak() and _status_kb("VmHWM") is not None else "ru_maxrss"
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    elapsed = time.perf_counter() - t0
    if probe == "VmHWM":
        peak = _status_kb("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    stats = {
        "time_s": elapsed,
        "peak_rss_mb": peak / 1024,
        "delta_rss_mb": (peak - before) / 1024 if before is not None else math.nan,
        "memory_probe": probe,
    }
    return result, stats


# --------------------------------------------------------------------------- one method


def _split_of(name: str) -> str:
    return "dev" if name in DEV else "heldout"


def _run_one(method, root, name, trimap_index, device) -> dict:
    from .metrics import evaluate

    row = {"method": method, "image": name, "split": _split_of(name), "trimap": trimap_index}
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
                "split": _split_of(name),
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
    numeric = {"sad", "mse", "grad", "conn", "time_s", "peak_rss_mb", "delta_rss_mb"}
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


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` arguments to ``parser`` (a subparser of ``hrmatt``)."""
    parser.description = (
        "Score our models and PyMatting's solvers on the alphamatting.com lowres training "
        "set: SAD, MSE, Grad, Conn (unknown region, DIM conventions), time and peak RSS."
    )
    parser.add_argument(
        "data_dir",
        type=Path,
        help="folder holding input_training_lowres/, gt_training_lowres/ and "
        "trimap_training_lowres/ (or its parent with alphamatting-training/)",
    )
    parser.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default="all",
        help="dev = GT01-GT18, heldout = GT19-GT27 (default: all)",
    )
    parser.add_argument("--trimap", type=int, choices=(1, 2), default=1, help="Trimap1 or 2")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="hrmatt-<model> and/or pymatting-{cf,knn,lkm,rw,lbdm} (default: all "
        "available); hrmatt-<model>:key=value,... passes model options, e.g. "
        "hrmatt-hdmatt:weights=my.pt",
    )
    parser.add_argument("--images", nargs="+", metavar="GTnn", help="only these images")
    parser.add_argument("--limit", type=int, help="at most N images per split")
    parser.add_argument("--out", type=Path, help="write per-image results to this CSV")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="CSV",
        help="add the rows of earlier --out files (same trimap and images; methods not "
        "run now) to the table and the CSV, e.g. to add a model without re-running PyMatting",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds per image before a method is stopped and dropped (default 600)",
    )
    parser.add_argument("--device", default="auto", help="device for our models (auto/cpu/cuda)")
    parser.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every method in this process (faster start; peak memory then "
        "includes what earlier methods left behind)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on success, 1 if any image failed, 2 for bad arguments/data."""
    try:
        root = find_dataset(args.data_dir)
    except FileNotFoundError as exc:
        print(f"hrmatt bench: {exc}", file=sys.stderr)
        return 2
    known = available_methods()
    methods = args.methods or known
    try:
        unknown = [m for m in methods if split_method(m)[0] not in known]
        options_on = [m for m in methods if ":" in m and not m.startswith("hrmatt-")]
    except ValueError as exc:
        print(f"hrmatt bench: {exc}", file=sys.stderr)
        return 2
    if options_on:
        print(
            f"hrmatt bench: only hrmatt-<model> methods take options: {options_on}",
            file=sys.stderr,
        )
        return 2
    if unknown:
        print(f"hrmatt bench: unknown method(s) {unknown}; available: {known}", file=sys.stderr)
        return 2
    names = list_samples(root, args.split, args.trimap)
    if args.images:
        missing = [n for n in args.images if n not in names]
        if missing:
            print(
                f"hrmatt bench: {missing} not found in split {args.split!r} of {root}",
                file=sys.stderr,
            )
            return 2
        names = [n for n in names if n in set(args.images)]
    if args.limit is not None:
        names = [n for s in (DEV, HELDOUT) for n in [m for m in names if m in s][: args.limit]]
    if not names:
        print(f"hrmatt bench: no complete image/trimap/GT triple in {root}", file=sys.stderr)
        return 2

    from tqdm.auto import tqdm

    merged: list[dict] = []
    for path in args.merge or ():
        try:
            merged += [
                r
                for r in read_csv(path)
                if r.get("trimap") == args.trimap
                and r.get("image") in names
                and r.get("method") not in methods
            ]
        except OSError as exc:
            print(f"hrmatt bench: cannot read {path}: {exc}", file=sys.stderr)
            return 2

    rows: list[dict] = []
    with tqdm(total=len(methods) * len(names), unit="img", file=sys.stderr) as bar:
        for method in methods:
            bar.set_description(method)
            if args.no_isolate:
                it = _iter_method(method, root, names, args.trimap, args.device)
            else:
                it = _isolated(method, root, names, args.trimap, args.device, args.timeout)
            for row in it:
                rows.append(row)
                bar.update(1)
    rows += merged
    probes = sorted({r["memory_probe"] for r in rows if r.get("memory_probe")})
    print(
        f"alphamatting.com lowres, Trimap{args.trimap}, {len(names)} images; "
        f"errors over the unknown region (MSE x1e3); peak RSS per call from "
        f"{'/'.join(probes) or '-'}{', in-process' if args.no_isolate else ''}"
        + (f"; {len(merged)} rows merged from {len(args.merge)} CSV file(s)" if merged else "")
        + "\n"
    )
    print(format_table(summarize(rows)))
    failed = [r for r in rows if r.get("status") != "ok"]
    for r in failed:
        print(f"{r['method']} {r['image']}: {r['status']}: {r.get('error', '')}", file=sys.stderr)
    if args.out is not None:
        write_csv(rows, args.out)
        print(f"\nper-image results: {args.out}")
    return 1 if any(r.get("status") == "error" for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_hrmatt.bench DATA_DIR ...``"""
    parser = configure_parser(argparse.ArgumentParser(prog="hrmatt bench"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
