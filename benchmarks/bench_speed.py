"""Speed benchmark: whole ``hrmatt matte`` processes against PyMatting CF, as ratios.

Every measurement is a whole process (interpreter start, imports, reading the input,
the solve, writing the alpha), started from this script, with both methods pinned to
the same core (``--core``) and ``OMP_NUM_THREADS`` set to ``--threads``. The ratio
``ours / PyMatting`` measured in the same run is the result; wall times on a shared
machine are not. The CPU seconds (user + sys) of each process and their ratio are
printed too: on a machine shared with other jobs they move less than wall time. SAD (sum
of |alpha - truth| over the trimap's unknown pixels / 1000) is reported for both.

Cases (``--cases``):

``lowres``    alphamatting.com lowres photos (~0.5 MP) with Trimap2 (``--images``).
``composite`` semi-synthetic composites (``composites.py``) at ``--megapixels``.
``scribble``  a lowres photo with stroke "scribbles": known pixels only on two-pixel
              horizontal strokes every 20 rows where the truth is 0 or 1, so >= 90 % of
              the pixels are unknown.
``load``      ours on one lowres photo, not pinned, idle and with one CPU-bound process
              (a Python busy loop) running: the ratio loaded / idle (target <= 2); with
              the default thread policy and with ``HRMATT_THREADS=2`` forced.

Use dev images (GT01-GT18) for tuning; held-out ones (GT19-GT27) only to report.

Usage (a few minutes at these settings)::

    nice -n 5 .venv/bin/python benchmarks/bench_speed.py --images GT13 --cases lowres scribble
    .venv/bin/python benchmarks/bench_speed.py --images GT04 --cases composite --megapixels 3
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import run_if_child  # noqa: E402
from composites import DATA_DIR, make_composite, resize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _child_pymatting(image: str, trimap: str, out: str) -> None:
    import pymatting

    im = np.asarray(Image.open(image).convert("RGB"), np.float64) / 255.0
    tri = np.asarray(Image.open(trimap).convert("L"), np.float64) / 255.0
    np.save(out, pymatting.estimate_alpha_cf(im, tri).astype(np.float32))
    print("{}")


def _read(path: Path, mode: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode))


def _lowres(name: str, data: Path):
    root = data / "alphamatting-training"
    image = _read(root / "input_training_lowres" / f"{name}.png", "RGB")
    tri = _read(root / "trimap_training_lowres" / "Trimap2" / f"{name}.png", "L")
    gt = _read(root / "gt_training_lowres" / f"{name}.png", "L") / 255.0
    tri = np.where(tri < 64, 0, np.where(tri > 192, 255, 128)).astype(np.uint8)
    return image, tri, gt


def _scribble(gt: np.ndarray) -> np.ndarray:
    tri = np.full(gt.shape, 128, np.uint8)
    strokes = (np.arange(gt.shape[0]) % 20 < 2)[:, None]
    tri[strokes & (gt <= 0)] = 0
    tri[strokes & (gt >= 1)] = 255
    return tri


def _run(cmd: list[str], env: dict, core: int | None) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys of the child) of one whole process."""
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _env(threads: int | None, **extra) -> dict:
    env = dict(os.environ)
    src = env.pop("HRMATT_BENCH_SRC", str(ROOT / "src"))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    env.update(extra)
    return env


def _ours(folder: Path, env: dict, core: int | None, options=()) -> tuple[tuple, np.ndarray]:
    import tifffile

    out = folder / "ours.tif"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "napari_hrmatt.cli", "matte", str(folder / "image.png")]
    cmd += [str(folder / "trimap.png"), "-o", str(out), "--bit-depth", "16", "-q", *options]
    times = _run(cmd, env, core)
    return times, tifffile.imread(out).astype(np.float64) / 65535.0


def _theirs(folder: Path, env: dict, core: int | None) -> tuple[tuple, np.ndarray]:
    out = folder / "theirs.npy"
    cmd = [sys.executable, __file__, "_pymatting", str(folder / "image.png")]
    cmd += [str(folder / "trimap.png"), str(out)]
    times = _run(cmd, env, core)
    return times, np.load(out).astype(np.float64)


def _sad(alpha, gt, tri) -> float:
    u = tri == 128
    return float(np.abs(alpha - gt)[u].sum() / 1000)


def _compare(label, image, tri, gt, args, rows, folder: Path):
    Image.fromarray(image).save(folder / "image.png")
    Image.fromarray(tri).save(folder / "trimap.png")
    env = _env(args.threads)
    options = [f"--model-option={o}" for o in args.model_option]
    (t_ours, c_ours), a_ours = _ours(folder, env, args.core, options)
    (t_theirs, c_theirs), a_theirs = _theirs(folder, env, args.core)
    row = {
        "case": label,
        "mp": tri.size / 1e6,
        "unknown": float((tri == 128).mean()),
        "ours_s": t_ours,
        "pym_s": t_theirs,
        "ratio": t_ours / t_theirs,
        "cpu_ratio": c_ours / c_theirs,
        "ours_cpu": c_ours,
        "pym_cpu": c_theirs,
        "sad_ours": _sad(a_ours, gt, tri),
        "sad_pym": _sad(a_theirs, gt, tri),
    }
    rows.append(row)
    print(_fmt(row), flush=True)


def _fmt(r) -> str:
    return (
        f"| {r['case']} | {r['mp']:.2f} | {100 * r['unknown']:.0f} % | {r['ours_s']:.1f} | "
        f"{r['pym_s']:.1f} | **{r['ratio']:.2f}x** | {r['ours_cpu']:.1f} / {r['pym_cpu']:.1f} | "
        f"{r['cpu_ratio']:.2f}x | {r['sad_ours']:.2f} | {r['sad_pym']:.2f} | "
        f"{r['sad_ours'] / max(r['sad_pym'], 1e-9):.3f} |"
    )


def _load(name, args, folder: Path):
    image, tri, gt = _lowres(name, args.data)
    Image.fromarray(image).save(folder / "image.png")
    Image.fromarray(tri).save(folder / "trimap.png")
    print("\n| load case | threads | idle s | loaded s | loaded / idle |")
    print("|---|---|---|---|---|")
    for label, extra in (("default policy", {}), ("2 threads forced", {"HRMATT_THREADS": "2"})):
        env = _env(None, **extra)
        env.pop("OMP_NUM_THREADS", None)
        (idle, _), _ = _ours(folder, env, None)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            (loaded, _), _ = _ours(folder, env, None)
        finally:
            hog.kill()
            hog.wait()
        print(
            f"| {name} {label} | {extra.get('HRMATT_THREADS', 'auto')} | {idle:.1f} | "
            f"{loaded:.1f} | **{loaded / idle:.2f}** |",
            flush=True,
        )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if run_if_child(argv, {"_pymatting": _child_pymatting}):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=["GT13"])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["lowres", "scribble"],
        choices=["lowres", "composite", "scribble", "load"],
    )
    parser.add_argument("--megapixels", nargs="+", type=float, default=[3.0])
    parser.add_argument("--data", type=Path, default=DATA_DIR)
    parser.add_argument("--core", type=int, default=1, help="CPU core both methods run on")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both")
    parser.add_argument(
        "--src", type=Path, default=None, help="package source tree to time (before/after)"
    )
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to hrmatt matte (ours only), e.g. precond=sa; repeatable",
    )
    args = parser.parse_args(argv)
    if args.src is not None:
        os.environ["HRMATT_BENCH_SRC"] = str(args.src)
    if not (args.data / "alphamatting-training").is_dir():
        print(f"no alphamatting-training data in {args.data}; nothing to measure")
        return 1
    rows: list[dict] = []
    print(f"whole processes, core {args.core}, {args.threads} thread(s); ratio = ours / PyMatting")
    print(
        "| case | MP | unknown | ours s | PyMatting s | ratio | CPU s ours / PyMatting "
        "| CPU ratio | SAD ours | SAD PyMatting | SAD ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.images:
            if "lowres" in args.cases:
                image, tri, gt = _lowres(name, args.data)
                _compare(f"{name} lowres", image, tri, gt, args, rows, folder)
            if "scribble" in args.cases:
                image, _, gt = _lowres(name, args.data)
                _compare(f"{name} scribble", image, _scribble(gt), gt, args, rows, folder)
            if "composite" in args.cases:
                comp = make_composite(name, data_dir=args.data, trimap=2)
                for mp in args.megapixels:
                    image, tri, gt = resize(comp, mp)
                    _compare(f"{name} composite", image, tri, gt, args, rows, folder)
        if "load" in args.cases:
            _load(args.images[0], args, folder)
    if rows:
        ratios = np.array([r["ratio"] for r in rows])
        print(f"\ngeometric mean ratio: {np.exp(np.log(ratios).mean()):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
