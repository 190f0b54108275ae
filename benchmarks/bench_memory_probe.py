"""Does ``bench.measure`` see a known allocation? Prints measured / allocated.

``hrmatt bench`` reports each method's peak RSS with :func:`napari_hrmatt.bench.measure`
(``VmHWM``, reset before every call on Linux). This allocates and touches a numpy array
of ``--mb`` megabytes inside ``measure``, then measures an empty call right after, and
prints both deltas. A ratio near 1.0 for the allocation and a small empty-call delta mean
the probe works and its high-water mark is reset between calls; the exact numbers depend
on the allocator and the machine, which is why this is a benchmark, not a unit test::

    python benchmarks/bench_memory_probe.py --mb 200
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_hrmatt import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="megabytes to allocate")
    args = parser.parse_args()

    def allocate():
        a = np.ones(args.mb * 1024 * 1024 // 8)  # float64, every page touched
        return float(a[-1])

    _, stats = bench.measure(allocate)
    _, empty = bench.measure(lambda: None)
    print(f"probe {stats['memory_probe']}")
    print(
        f"allocation of {args.mb} MB: delta RSS {stats['delta_rss_mb']:.1f} MB "
        f"(measured / allocated = {stats['delta_rss_mb'] / args.mb:.2f})"
    )
    print(f"empty call right after: delta RSS {empty['delta_rss_mb']:.1f} MB")


if __name__ == "__main__":
    main()
