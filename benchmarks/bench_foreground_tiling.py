"""Per-level cost of each tiling of the foreground solver's fine levels, on real blocks.

Runs ``estimate_foreground`` once per problem (``bench_foreground.make_problem``: a
GT01-GT18 matte at the size asked for) and records, per block, the inputs of the tiling
planner (``plan_tiles``) and of each fine-level sweep (``sweep_level``). Then replays every
(block, level) sweep with each tiling alone: tiles of 16 / 32 / 64 / 128 (those the
planner would keep for that edge) and one dense tile, timing each (CPU time, min of
``--repeats``). Prints, per level, the time per swept pixel of each tiling (relative to
32), the time of the planner's choices against the fastest tiling of each block, and how
many choices would change with the dense cost per pixel set to ``--dense-cost`` (the
planner's table: ``_TILE_COST`` in ``_foreground_solver.py``). One thread.

Usage::

    PYTHONPATH=src OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python \\
        benchmarks/bench_foreground_tiling.py --images GT04 GT13 --megapixels 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_foreground import make_problem  # noqa: E402

OPTIONS = (16, 32, 64, 128, None)


def _record(image, alpha):
    """Run one estimate; return [(planner args, [sweep_level args, fine to coarse])]."""
    import napari_hrmatt.foreground as fg

    blocks = []
    plan_tiles, sweep_level = fg.plan_tiles, fg.sweep_level

    def rec_plan(frac, plan, levels, sizes, *args):
        blocks.append(((frac.clone(), plan, levels, sizes), []))
        return plan_tiles(frac, plan, levels, sizes, *args)

    def rec_sweep(X, img, A, **kw):
        blocks[-1][1].insert(0, (X, img, A, kw))  # coarse to fine: level k at index k
        return sweep_level(X, img, A, **kw)

    fg.plan_tiles, fg.sweep_level = rec_plan, rec_sweep
    try:
        fg.estimate_foreground(image, alpha)
    finally:
        fg.plan_tiles, fg.sweep_level = plan_tiles, sweep_level
    return blocks


def _cpu(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def measure(name, megapixels, repeats, dense_cost):
    import napari_hrmatt._foreground_solver as S

    image, alpha, _ = make_problem(name, megapixels)
    blocks = _record(image, alpha)
    per = {}  # level -> {option: [seconds, swept px]}, plus "chosen" / "best" seconds
    changed = 0
    for (frac, plan, levels, sizes), sweeps in blocks:
        chosen = S.plan_tiles(frac, plan, levels, sizes)
        alone = {t: S.plan_tiles(frac, plan, levels, sizes, (t,), False) for t in OPTIONS[:-1]}
        alone[None] = S.plan_tiles(frac, plan, levels, sizes, (), True)
        old = S._TILE_COST[None]
        S._TILE_COST[None] = dense_cost
        try:
            other = S.plan_tiles(frac, plan, levels, sizes)
        finally:
            S._TILE_COST[None] = old
        changed += sum(other[k][0] != chosen[k][0] for k in chosen)
        for k, (X, img, A, kw) in enumerate(sweeps):
            n, (h, w) = kw["n_iter"], A.shape
            row = per.setdefault(k, {"chosen": 0.0, "best": 0.0, "size": (h, w)})
            times = {}
            for t in OPTIONS:
                act = alone[t][k][1]
                px = (
                    (h + h % 2 + 4) * (w + w % 2 + 4)
                    if t is None
                    else int(act.sum()) * (t + 4 * n) ** 2
                )
                args = (X, img, A), dict(kw, tile=t, active=act)
                times[t] = _cpu(lambda a=args: S.sweep_level(*a[0], **a[1]), repeats)
                acc = row.setdefault(t, [0.0, 0])
                acc[0] += times[t]
                acc[1] += px
            row["chosen"] += times[chosen[k][0]]
            row["best"] += min(times.values())
    return per, changed, sum(len(s) for _, s in blocks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", nargs="+", default=["GT04", "GT13"])
    p.add_argument("--megapixels", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dense-cost", type=float, default=1.0)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    head = " | ".join(f"{t or 'dense'} ns/px (rel.)" for t in OPTIONS)
    print(f"| image | level | size (first block) | {head} | chosen / best (ms) |")
    print("|---" * (5 + len(OPTIONS)) + "|")
    for name in args.images:
        per, changed, total = measure(name, args.megapixels, args.repeats, args.dense_cost)
        for k in sorted(per):
            row = per[k]
            ns = {t: 1e9 * row[t][0] / max(row[t][1], 1) for t in OPTIONS}
            cells = " | ".join(f"{ns[t]:.0f} ({ns[t] / ns[32]:.2f})" for t in OPTIONS)
            print(f"| {name} | {k} | {row['size'][0]} x {row['size'][1]} | {cells} | "
                  f"{1e3 * row['chosen']:.1f} / {1e3 * row['best']:.1f} |")  # fmt: skip
        print(f"<!-- {name}: {changed} of {total} choices change with dense cost "
              f"{args.dense_cost} -->")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
