"""Model selection for the HDMatt-style network, on dev images only.

Scores weights files (``hrmatt train --out RUN --export FILE``) and the untrained
network (whose residual head is zero, so it returns the coarse closed-form alpha) on the
validation images of training, GT16-GT18, Trimap1 and Trimap2, at one or more
``coarse_size`` settings of :class:`napari_hrmatt.models.hdmatt.HDMattModel`: mean SAD,
MSE, Grad and Conn. The held-out images GT19-GT27 are never read here.

Run (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/validate_hdmatt.py none.pt tgnl.pt \\
        --untrained --coarse-size 1e6 65536
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from composites import DATA_DIR, has_data  # noqa: E402

VAL_IMAGES = ("GT16", "GT17", "GT18")


def score(model, root) -> dict:
    from napari_hrmatt.alphamatting import load_sample
    from napari_hrmatt.metrics import evaluate

    rows = []
    for name in VAL_IMAGES:
        for trimap_index in (1, 2):
            image, trimap, gt = load_sample(root, name, trimap_index)
            alpha = model.global_alpha(image.astype(np.float32) / 255, trimap)
            rows.append(evaluate(alpha, gt, trimap))
    return {k: float(np.mean([r[k] for r in rows])) for k in ("sad", "mse", "grad", "conn")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="*", type=Path, help="weights files to score")
    parser.add_argument("--untrained", action="store_true", help="also the untrained network")
    parser.add_argument("--coarse-size", nargs="+", type=float, default=[1e6])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if not has_data(args.data_dir):
        return 0
    import torch

    from napari_hrmatt.alphamatting import find_dataset
    from napari_hrmatt.models.hdmatt import HDMattModel, HDMattNet, load_weights

    root = find_dataset(args.data_dir)
    nets = {str(w): load_weights(w)[0] for w in args.weights}
    if args.untrained:
        torch.manual_seed(0)
        nets["untrained (= coarse cf)"] = HDMattNet().eval()
    print("| network | coarse_size | SAD | MSE x1e3 | Grad | Conn |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, net in nets.items():
        for size in args.coarse_size:
            m = score(HDMattModel.from_network(net, coarse_size=size), root)
            print(
                f"| {label} | {size:g} | {m['sad']:.2f} | {1000 * m['mse']:.0f} | "
                f"{m['grad']:.2f} | {m['conn']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
