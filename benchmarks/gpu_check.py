"""GPU check: one command, under 8 minutes on one GPU.

1. runs the test suite's CUDA tests (``pytest -m gpu``);
2. times ``estimate_alpha`` (default model) and ``estimate_foreground`` on CUDA and on
   the CPU at 5 and 50 megapixels of a synthetic scene (a wavy soft-edged disc with
   strands over a textured background, unknown band ``--band`` px wide), each in a
   fresh process with a time limit, and prints megapixels of *unknown* pixels per
   second, peak GPU memory (``torch.cuda.max_memory_allocated``), peak RSS, and how far
   the CUDA alpha and foreground are from the CPU ones.

Without a CUDA device it says so and exits with status 0 without measuring anything.

Usage::

    python benchmarks/gpu_check.py                    # everything, ~5-8 minutes
    python benchmarks/gpu_check.py --sizes 5 --no-tests
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import peak_rss_mb, run_if_child  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def scene(megapixels: float, band: int, seed: int = 0):
    """``(image uint8 (H, W, 3), trimap uint8, alpha float32)`` of about ``megapixels``."""
    side = int(round((megapixels * 1e6) ** 0.5))
    h, w = side, int(round(megapixels * 1e6 / side))
    rng = np.random.default_rng(seed)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    cy, cx, r = h / 2, w / 2, 0.35 * min(h, w)
    theta = np.arctan2(y - cy, x - cx)
    dist = np.hypot(y - cy, x - cx) - r * (1 + 0.05 * np.sin(7 * theta))
    soft = max(2.0, band / 4)
    alpha = np.clip(0.5 - dist / soft, 0, 1).astype(np.float32)
    strands = (np.sin(40 * theta) > 0.95) & (dist > 0) & (dist < band / 2)
    alpha[strands] = np.maximum(alpha[strands], 0.5)
    fg = np.stack(
        [0.8 + 0 * y + 0 * x, 0.5 + 0.2 * np.sin(x / 50) + 0 * y, 0.2 + 0 * y + 0 * x], -1
    )
    bg = np.stack(
        [0.2 + 0.1 * np.sin(y / 30) + 0 * x, 0.3 + 0 * y + 0 * x, 0.7 + 0 * y + 0 * x], -1
    )
    noise = rng.normal(0, 0.03, (h, w, 1)).astype(np.float32)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + noise
    image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    trimap = np.full((h, w), 128, np.uint8)
    trimap[dist < -band / 2] = 255
    trimap[dist > band / 2] = 0
    return image, trimap, alpha


def _child(what: str, device: str, mp: str, band: str, out: str) -> None:
    import torch

    from napari_hrmatt import estimate_alpha, estimate_foreground

    image, trimap, alpha = scene(float(mp), int(band))
    unknown = float((trimap == 128).sum()) if what == "alpha" else float((alpha > 0).sum())
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    if what == "alpha":
        result = np.asarray(estimate_alpha(image, trimap, device=device))
    else:
        result = np.asarray(estimate_foreground(image, alpha, device=device))
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    err = float(np.abs(result - alpha).mean()) if what == "alpha" else float("nan")
    if float(mp) <= 10:
        np.save(out, result.astype(np.float32))
    print(
        json.dumps(
            {
                "wall": wall,
                "unknown_mp": unknown / 1e6,
                "gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan"),
                "rss_mb": peak_rss_mb(),
                "alpha_err": err,
            }
        )
    )


def _measure(what, device, mp, band, out, limit) -> dict:
    cmd = [sys.executable, __file__, "_child", what, device, str(mp), str(band), str(out)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {limit:.0f} s limit"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if run_if_child(argv, {"_child": _child}):
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[5.0, 50.0])
    parser.add_argument("--band", type=int, default=64, help="unknown band width, px")
    parser.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    parser.add_argument("--cpu-limit", type=float, default=90.0, help="seconds per CPU run")
    parser.add_argument("--gpu-limit", type=float, default=120.0, help="seconds per GPU run")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_check: torch sees no CUDA device (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); nothing to check. "
            "Run this on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
        return 0
    name = torch.cuda.get_device_name(0)
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"CPU: {os.cpu_count()} cores")
    status = 0
    if not args.no_tests:
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            capture_output=True,
            text=True,
            timeout=240,
        )
        tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
        print(f"pytest -m gpu: {tail[0]} ({time.perf_counter() - t:.0f} s)")
        if proc.returncode not in (0, 5):  # 5: nothing collected
            print(proc.stdout[-3000:])
            status = 1
    print(
        "\n| task | MP | device | wall s | unknown MP | unknown MP/s | peak GPU GB | "
        "peak RSS MB | vs CPU (mean abs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.sizes:
            for what in ("alpha", "foreground"):
                results = {}
                for device in ("cuda", "cpu"):
                    out = Path(tmp) / f"{what}-{device}-{mp}.npy"
                    limit = args.gpu_limit if device == "cuda" else args.cpu_limit
                    r = _measure(what, device, mp, args.band, out, limit)
                    results[device] = (r, out)
                    if "error" in r:
                        print(f"| {what} | {mp:g} | {device} | {r['error']} | | | | | |")
                        status = status or (1 if device == "cuda" else 0)
                        continue
                    diff = ""
                    other = results.get("cuda")
                    if device == "cpu" and other and out.exists() and other[1].exists():
                        a, b = np.load(out), np.load(other[1])
                        diff = f"{np.abs(a - b).mean():.2e}"
                    print(
                        f"| {what} | {mp:g} | {device} | {r['wall']:.1f} | "
                        f"{r['unknown_mp']:.2f} | {r['unknown_mp'] / r['wall']:.2f} | "
                        f"{r['gpu_gb']:.2f} | {r['rss_mb']:.0f} | {diff} |",
                        flush=True,
                    )
    print(
        "\nunknown MP: trimap-unknown pixels for alpha, pixels with alpha > 0 for the "
        "foreground. Goal (issue 12): >= 50 unknown MP/s for the solver on one H100."
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
