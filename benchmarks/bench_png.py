"""Streaming 16-bit PNG writers: ours (numpy filtering + zlib) against pypng, on one matte.

Each writer runs in its own process (peak RSS is the child's own, imports included) on the
same synthetic smooth 16-bit matte, computed block-row by block-row from a dask array by
the same loop (``_iter_block_rows``); only the encoder differs. The parent decodes both
files (``--check``) and checks that they hold the same pixels.

pypng is not a dependency: install it into a scratch directory and put that on the path,
e.g. ``pip install --target /tmp/pypng pypng``, then::

    OMP_NUM_THREADS=1 PYTHONPATH=src:/tmp/pypng taskset -c 0 \\
        python benchmarks/bench_png.py --size 10000 --check

Writers: ``none`` (computes the rows and writes nothing: the cost every writer shares),
``ours`` (adaptive filter per line, zlib 6), ``pypng`` (``png.Writer.write`` with numpy
rows, its documented row-iterator API; filter type 0, zlib 6) and ``pypng-packed``
(``Writer.write_packed`` with big-endian bytes rows: skips pypng's per-value packing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _harness import peak_rss_mb, run_child, run_if_child  # noqa: E402

WRITERS = ("none", "ours", "pypng", "pypng-packed")


def _matte_block(block_info=None):
    """A smooth matte: soft-edged blobs plus a slow gradient, as uint16."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1, dtype=np.float32)[:, None]
    x = np.arange(x0, x1, dtype=np.float32)[None, :]
    a = 0.5 + 0.35 * np.sin(x / 710.0) * np.cos(y / 530.0) + 0.15 * np.sin((x + y) / 97.0)
    return np.rint(np.clip(a, 0, 1) * 65535).astype(np.uint16)


def _matte(size: int):
    import dask.array as da

    return da.map_blocks(
        _matte_block,
        chunks=da.core.normalize_chunks(1024, (size, size)),
        dtype=np.uint16,
        meta=np.empty((0, 0), np.uint16),
    )


def _child(writer: str, size: str, out: str) -> None:
    import dask

    from napari_hrmatt.io._png import write_png
    from napari_hrmatt.io.writers import _iter_block_rows

    dask.config.set(scheduler="synchronous")
    data = _matte(int(size))
    h, w = data.shape
    t0 = time.perf_counter()
    if writer == "none":  # compute the rows, encode nothing: the time both writers share
        for _ in _iter_block_rows(data, False):
            pass
        Path(out).write_bytes(b"")
    elif writer == "ours":
        write_png(_iter_block_rows(data, False), Path(out), data.shape, data.dtype)
    else:
        import png

        pw = png.Writer(w, h, greyscale=True, bitdepth=16, compression=6)

        def rows():
            for block in _iter_block_rows(data, False):
                yield from block

        with open(out, "wb") as f:
            if writer == "pypng":
                pw.write(f, rows())
            else:
                pw.write_packed(f, (r.astype(">u2").tobytes() for r in rows()))
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "mb": Path(out).stat().st_size / 1e6,
            }
        )
    )


def main() -> None:
    if run_if_child(sys.argv[1:], {"_write": _child}):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="edge in pixels (square)")
    parser.add_argument("--writers", nargs="+", default=list(WRITERS), choices=WRITERS)
    parser.add_argument("--repeat", type=int, default=1, help="runs per writer (median)")
    parser.add_argument("--check", action="store_true", help="decode and compare the files")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    runs: dict[str, list[dict]] = {w: [] for w in args.writers}
    for _ in range(args.repeat):  # interleaved, so that load changes hit every writer
        for writer in args.writers:
            out = tmp / f"{writer}.png"
            runs[writer].append(run_child(__file__, "_write", writer, str(args.size), str(out)))
    results = {w: sorted(r, key=lambda x: x["seconds"])[len(r) // 2] for w, r in runs.items()}
    for writer, r in results.items():
        print(
            f"{writer:13s} {r['seconds']:7.1f} s (median of {args.repeat})  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB  file {r['mb']:6.1f} MB",
            flush=True,
        )
    base, shared = results.get("ours"), results.get("none")
    if base:
        for writer, r in results.items():
            line = f"{writer:13s} time / ours = {r['seconds'] / base['seconds']:.2f}"
            if shared and writer != "none":
                encode = (r["seconds"] - shared["seconds"]) / (base["seconds"] - shared["seconds"])
                line += f"   encoding time / ours = {encode:.2f}"
            print(line)
    if args.check:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        encoded = [w for w in args.writers if w != "none"]
        ref = None
        for writer in encoded:
            with Image.open(tmp / f"{writer}.png") as im:
                arr = np.asarray(im).astype(np.uint16)
            ref = arr if ref is None else ref
            print(f"{writer:13s} pixels equal to {encoded[0]}: {np.array_equal(arr, ref)}")
    for writer in args.writers:
        (tmp / f"{writer}.png").unlink()


if __name__ == "__main__":
    main()
