"""The training loop: optimisation steps, checkpoints and resume, validation, run records.

A run resumes where it stopped: checkpoints (``last.pt``, ``best.pt``) hold the model,
optimiser and step, and the network is initialised from the config's seed. Each run
appends a record (config, steps, time, hardware, validation errors) to
``OUT/runs.jsonl``. Progress lines go to stderr; results are returned.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from .config import DEV_IMAGES, OPERATIONAL, TrainConfig
from .data import TrainingSamples
from .loss import border_ramp, matting_loss

__all__ = [
    "CHECKPOINT_FORMAT",
    "VAL_COARSE_SIZE",
    "export_weights",
    "train",
    "training_step",
    "validate",
]

CHECKPOINT_FORMAT = "napari-hrmatt/hdmatt-checkpoint"


def _learning_rate(config: TrainConfig, step: int) -> float:
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * t))


def training_step(net, optimizer, batch, config: TrainConfig, *, device=None, amp=False) -> dict:
    """One optimisation step on a collated batch (tensors from :class:`TrainingSamples`)."""
    import torch

    from ..models.hdmatt import trimap_fractions

    device = device or next(net.parameters()).device
    b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    net.train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(amp)):
        pool = net.context_pool(b["ctx_image"], b["ctx_fractions"], b["ctx_coarse"])
        pred = net(b["image"], trimap_fractions(b["trimap"]), b["coarse"], pool)
    loss, parts = matting_loss(
        pred.float(),
        b["alpha"],
        b["image"],
        b["fg"],
        b["bg"],
        b["trimap"] == 128,
        border_ramp(config.size, config.ramp, device=device),
        comp_weight=config.comp_weight,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
    optimizer.step()
    return {"loss": float(loss.detach()), **parts}


# --------------------------------------------------------------------------- checkpoints


def _save(path: Path, payload: dict) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, device) -> dict:
    import torch

    payload = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an hrmatt training checkpoint")
    return payload


def _hardware(device) -> dict:
    import torch

    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


#: Pixels of the coarse closed-form solve in :func:`validate`.
VAL_COARSE_SIZE = 65536


def validate(net, config: TrainConfig, data_dir, *, device="cpu") -> dict:
    """Errors of the network on the held-aside dev images (``config.val_images``).

    Runs the full inference path of :class:`~napari_hrmatt.models.hdmatt.HDMattModel`
    (coarse closed-form solve, context pool, network) on the lowres photos with
    alphamatting.com Trimap1/2, and averages SAD, MSE, Grad and Conn
    (:func:`napari_hrmatt.metrics.evaluate`).

    Returns
    -------
    dict
        ``sad``, ``mse``, ``grad``, ``conn`` means, ``n`` and ``per_image`` rows.
    """
    from ..alphamatting import find_dataset, load_sample
    from ..metrics import evaluate
    from ..models.hdmatt import HDMattModel

    if not config.val_images:
        return {}
    root = find_dataset(data_dir)
    was_training = net.training
    # A 64k-pixel coarse solve (not the inference default, 1e6): cheaper, and the rule
    # every recorded run (docs/training-runs.jsonl) selected its best.pt by.
    model = HDMattModel.from_network(net, device, coarse_size=VAL_COARSE_SIZE)
    rows = []
    try:
        for name in config.val_images:
            assert name in DEV_IMAGES
            for t in config.val_trimaps:
                image, trimap, gt = load_sample(root, name, t)
                alpha = model.global_alpha(image.astype(np.float32) / 255, trimap)
                rows.append({"image": name, "trimap": t, **evaluate(alpha, gt, trimap)})
    finally:
        net.train(was_training)
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("sad", "mse", "grad", "conn")}
    return {**means, "n": len(rows), "per_image": rows}


def _append_jsonl(paths, record: dict) -> None:
    line = json.dumps(record, sort_keys=True)
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a") as f:
            f.write(line + "\n")


def train(
    config: TrainConfig,
    out_dir,
    *,
    data_dir=None,
    device: str = "auto",
    resume: bool = True,
    time_limit: float | None = None,
    log_paths=(),
    verbose: bool = True,
) -> dict:
    """Train (or continue training) the network; returns the run record.

    Parameters
    ----------
    config : TrainConfig
    out_dir : str or Path
        Run folder: ``last.pt``, ``best.pt``, ``cache/``, ``runs.jsonl``.
    data_dir : Path, optional
        The data folder (alphamatting.com training set, background folders); needed
        for real sources, photo backgrounds and validation.
    device : str
    resume : bool
        Continue from ``out_dir/last.pt`` if it exists (its config must match, except
        steps, workers and the logging/checkpoint intervals).
    time_limit : float, optional
        Seconds; stop cleanly (checkpoint and record) once exceeded, so runs can be
        chained in short sessions.
    log_paths : sequence of Path
        More JSONL files to append the run record to (``out_dir/runs.jsonl`` always).
    verbose : bool
        Progress lines on stderr.

    Returns
    -------
    dict
        The run record written to the JSONL logs.
    """
    import torch

    from ..models import resolve_device
    from ..models.hdmatt import HDMattNet, count_parameters

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(resolve_device(device))
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    torch.manual_seed(config.seed)
    net = HDMattNet(config.arch).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best, elapsed_before = 0, None, 0.0
    last = out / "last.pt"
    if resume and last.is_file():
        state = _load_checkpoint(last, dev)
        old = {k: v for k, v in state["config"].items() if k not in OPERATIONAL}
        new = {k: v for k, v in config.to_dict().items() if k not in OPERATIONAL}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"{last} was trained with a different config ({diff} differ); use another "
                "--out folder, the same settings, or --restart"
            )
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best, elapsed_before = state["step"], state.get("best"), state.get("elapsed", 0.0)
    start_step = step
    data_dir = None if data_dir is None else Path(data_dir)
    samples = TrainingSamples(config, data_dir, cache_dir=out / "cache")
    loader = torch.utils.data.DataLoader(
        samples,
        batch_size=config.batch_size,
        sampler=range(step * config.batch_size, config.steps * config.batch_size),
        num_workers=config.num_workers,
        pin_memory=dev.type == "cuda",
    )
    amp = config.amp and dev.type == "cuda"

    def checkpoint(path, with_optimizer=True):
        _save(
            path,
            {
                "format": CHECKPOINT_FORMAT,
                "version": 1,
                "step": step,
                "config": config.to_dict(),
                "model": net.state_dict(),
                "optimizer": opt.state_dict() if with_optimizer else None,
                "best": best,
                "elapsed": elapsed_before + time.monotonic() - t0,
            },
        )

    def run_validation():
        nonlocal best
        if not (config.val_images and data_dir is not None):
            return None
        metrics = validate(net, config, data_dir, device=dev)
        summary = {k: metrics[k] for k in ("sad", "mse", "grad", "conn")} | {"step": step}
        if best is None or summary["sad"] < best["sad"]:
            best = summary
            checkpoint(out / "best.pt", with_optimizer=False)
        if verbose:
            print(f"validation at step {step}: {summary}", file=sys.stderr)
        return metrics

    stopped, recent, val, val_step = "done", [], None, None
    if verbose:
        print(
            f"hrmatt train: {count_parameters(net):,} parameters on {dev}, steps "
            f"{start_step}->{config.steps}, batch {config.batch_size} at {config.size} px",
            file=sys.stderr,
        )
    try:
        for batch in loader:
            if step >= config.steps:
                break
            for group in opt.param_groups:
                group["lr"] = _learning_rate(config, step)
            recent.append(training_step(net, opt, batch, config, device=dev, amp=amp))
            recent = recent[-max(config.log_every, 1) :]
            step += 1
            if verbose and config.log_every and step % config.log_every == 0:
                mean = {k: np.mean([r[k] for r in recent]) for k in recent[0]}
                rate = (time.monotonic() - t0) / max(step - start_step, 1)
                print(
                    f"step {step}/{config.steps} loss {mean['loss']:.4f} (alpha "
                    f"{mean['alpha']:.4f}, comp {mean['comp']:.4f}) {rate:.2f} s/step",
                    file=sys.stderr,
                )
            if config.ckpt_every and step % config.ckpt_every == 0:
                checkpoint(last)
            if config.val_every and step % config.val_every == 0:
                val, val_step = run_validation(), step
            if time_limit is not None and time.monotonic() - t0 > time_limit:
                stopped = "time-limit"
                break
        if step >= config.steps and val_step != step:
            val, val_step = run_validation() or val, step
    except BaseException as exc:
        stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"error: {exc!r}"
        raise
    finally:
        checkpoint(last)
        record = {
            "run": str(out.resolve()),
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.monotonic() - t0, 1),
            "start_step": start_step,
            "end_step": step,
            "target_steps": config.steps,
            "stopped": stopped,
            "train_loss": (
                {k: float(np.mean([r[k] for r in recent])) for k in recent[0]} if recent else None
            ),
            "validation": (
                {k: val[k] for k in ("sad", "mse", "grad", "conn", "n")} if val else None
            ),
            "best": best,
            "parameters": count_parameters(net),
            "hardware": _hardware(dev),
            "data_dir": None if data_dir is None else str(data_dir),
            "config": config.to_dict(),
        }
        _append_jsonl([out / "runs.jsonl", *log_paths], record)
    return record


def export_weights(run_dir, dest, *, which: str = "best") -> Path:
    """Write the shipping weights file from a run's ``best.pt`` (else ``last.pt``).

    The file (:func:`napari_hrmatt.models.hdmatt.save_weights`) holds the architecture,
    the state dict and a training record (steps, seed, images, validation errors,
    receptive field); :class:`~napari_hrmatt.models.hdmatt.HDMattModel` loads it with
    ``weights_only=True``.
    """
    import torch

    from ..models.hdmatt import HDMattNet, count_parameters, receptive_radius, save_weights

    run_dir = Path(run_dir)
    path = run_dir / f"{which}.pt"
    if not path.is_file() and which == "best":
        path = run_dir / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected best.pt or last.pt)")
    state = _load_checkpoint(path, torch.device("cpu"))
    config = TrainConfig.from_dict(state["config"])
    net = HDMattNet(config.arch)
    net.load_state_dict(state["model"])
    meta = {
        "checkpoint": path.name,
        "steps": state["step"],
        "seed": config.seed,
        "train_images": list(config.train_images),
        "val_images": list(config.val_images),
        "sources": config.sources,
        "validation": state.get("best"),
        "parameters": count_parameters(net),
        "receptive_radius": receptive_radius(net.config),
        "config": config.to_dict(),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return save_weights(net, dest, meta=meta)
