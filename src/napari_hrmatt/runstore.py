"""Runs that persist: an alpha matte as a Zarr store that knows what it was computed from.

Like ``make`` with its targets, a run store records for every block of the patch pass
what its alpha was computed from, so the same run again computes only what is missing
or out of date:

- after an interruption (Ctrl-C, SIGKILL, power loss) the finished blocks are kept;
- with nothing changed nothing is computed;
- after a trimap (or image) edit only the blocks whose inputs changed, or whose global
  context moved by more than :data:`CONTEXT_TOLERANCE`, are computed again.

Layout of ``OUT.zarr`` (Zarr v3, an OME-Zarr 0.5 image for every reader)::

    zarr.json            attributes: "ome" (multiscales), "hrmatt_run" (settings,
                         complete flag, current context version)
    0/                   the alpha, one Zarr chunk per engine block core (a core merged
                         with a thin last chunk spans two chunks, still written by one task)
    1/, 2/, ...          pyramid levels (2 x 2 means), rebuilt when level 0 changed
    context/<k>/         a global pass result: "alpha", "trimap", attribute "inputs"
                         (fingerprint of the downsampled inputs it was solved from)
    blocks/              (rows, cols, 48) uint8, one uncompressed chunk per block: the
                         block's record, written *after* its alpha

A block record holds the fingerprint of the grown input block (image and canonical
trimap bytes, halo included), a checksum of the alpha it wrote, the context version it
was solved with and whether it used the context at all (a block without unknown pixels
does not). The run's settings (model, options, device kind, chunk, overlap, global size,
output dtype, package version) are checked once for the whole store. ``complete`` is set
last and cleared first, so a store never looks finished when it is not; a chunk whose
checksum does not match its record (truncated, half written) is recomputed.

Blocks are independent, idempotent tasks (each writes its own chunks, then its record),
so they may run on threads, on processes of a ``dask.distributed`` cluster sharing the
file system, or on a different set of workers after a resume. Their graph holds the
input arrays (for Zarr inputs, the store path, never pixels) and, on a cluster, the
global context once (scattered).
"""

from __future__ import annotations

import shutil
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._runfiles import (
    RECORD,
    Lock,
    StoreLocked,
    checksum,
    digest,
    inspect_block,
    open_array,
    solve_block,
    update_pyramid,
    write_pyramid,
)
from .models import DEFAULT_MODEL
from .pipeline import Progress, drive

__all__ = [
    "CONTEXT_TOLERANCE",
    "RunReport",
    "SettingsMismatch",
    "StoreLocked",
    "matte_to_store",
    "open_run",
    "run_steps",
]

FORMAT = 1
# A block is recomputed when the global alpha it was solved with moved by more than
# this anywhere in its footprint (max abs, in alpha units). Half of one 8-bit level:
# the block's result follows its context at most about 1:1 (prior, or pinned ring), so a
# reused block stays within 1/510 of a fresh solve plus the solver's own tolerance,
# inside the 2/255 the issue allows; and a global re-solve after a local edit moves far
# blocks' context by much less (measured in docs/engine.md), so they are kept.
CONTEXT_TOLERANCE = 1 / 510
_ATTR = "hrmatt_run"


class SettingsMismatch(ValueError):
    """The store was made with other settings (model, options, chunking...)."""


@dataclass
class RunReport:
    """What a run did: ``reused`` blocks kept, ``computed`` blocks solved."""

    path: Path
    blocks: int
    reused: int = 0
    computed: int = 0
    reasons: dict = field(default_factory=dict)
    global_solved: bool = False
    was_complete: bool = True
    #: largest move of the global context over a block kept under a newer context
    kept_context_move: float = 0.0
    notes: list = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        """Nothing had to be computed."""
        return self.computed == 0 and not self.global_solved and self.was_complete

    def summary(self) -> str:
        if self.up_to_date:
            return f"{self.path} is up to date ({self.blocks} blocks, none recomputed)"
        if self.reused == 0 and self.computed == self.blocks:
            return f"computed all {self.blocks} blocks"
        why = ", ".join(f"{n} {k}" for k, n in sorted(self.reasons.items()) if n)
        text = (
            f"{self.reused} of {self.blocks} blocks already done; recomputed "
            f"{self.computed} blocks" + (f" ({why})" if why else "")
        )
        if self.kept_context_move:
            text += f"; the global context of kept blocks moved <= {self.kept_context_move:.1e}"
        return text


# ------------------------------------------------------------------ the store


def _settings(engine: dict, shape, channels: int, dtype, grid, factor: int) -> dict:
    from . import __version__

    return {
        "format": FORMAT,
        "version": __version__,
        "model": engine["model"],
        "model_options": [[k, v] for k, v in engine["model_options"]],
        "device": engine["device"].split(":")[0],
        "chunks": [list(c) for c in grid.chunks],
        "overlap": list(grid.margins),
        "factor": factor,
        "shape": list(shape),
        "channels": channels,
        "dtype": np.dtype(dtype).str,
        "stitch": "trim",
    }


def _mismatch(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k}: store {old.get(k)!r}, this run {new.get(k)!r}" for k in keys)


def open_run(path):
    """The alpha of a run store as a list of lazy dask levels (finest first)."""
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="r")
    levels = sorted(int(k) for k in group.array_keys() if k.isdigit())
    return [da.from_zarr(group[str(k)]) for k in levels]


def _prepare(path: Path, settings: dict, force: bool, report: RunReport):
    """Open (resume) or create the store; returns the group."""
    import zarr

    group = None
    if path.exists():
        try:
            group = zarr.open_group(str(path), mode="r+")
            run = dict(group.attrs).get(_ATTR)
        except Exception:  # noqa: BLE001 - unreadable metadata: nothing to resume
            run = None
        if run is None:
            if any(path.iterdir()):
                report.notes.append(f"replacing {path}: not a resumable run store")
            group = None
        elif force:
            report.notes.append("--force: recomputing every block")
            group = None
        elif run.get("settings") != settings:
            differences = _mismatch(run["settings"], settings)
            raise SettingsMismatch(
                f"{str(path)!r} was computed with other settings ({differences}); use "
                "--force (force=True) to recompute it, or another output"
            )
    report.was_complete = bool(group is not None and run["complete"])
    if group is None:
        if path.exists():
            shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        rows, cols = settings["chunks"]
        edge = rows[0], cols[0]
        group.create_array(
            "0",
            shape=tuple(settings["shape"]),
            chunks=edge,
            dtype=settings["dtype"],
            fill_value=0,
            dimension_names=["y", "x"],
        )
        group.create_array(
            "blocks",
            shape=(len(rows), len(cols), RECORD),
            chunks=(1, 1, RECORD),
            dtype=np.uint8,
            fill_value=0,
            compressors=None,
        )
        group.require_group("context")
        group.attrs[_ATTR] = {"settings": settings, "complete": False, "context": 0}
    else:
        group.attrs[_ATTR] = {**dict(group.attrs)[_ATTR], "complete": False}
    return group


def _read_records(path: Path, grid) -> dict:
    records = {}
    blocks = open_array(str(path), "blocks")
    for i, j in grid:
        try:
            rec = np.asarray(blocks[i, j])
        except Exception:  # noqa: BLE001 - a torn record is a missing one
            continue
        version = int(np.frombuffer(rec[32:40].tobytes(), np.uint64)[0])
        if version:
            records[i, j] = (rec[:16].tobytes(), rec[16:32].tobytes(), version, bool(rec[40]))
    return records


def _load_context(group, version: int):
    from .global_pass import GlobalContext

    node = group[f"context/{version}"]
    attrs = dict(node.attrs)
    return GlobalContext(
        alpha=np.asarray(node["alpha"][...]),
        factor=attrs["factor"],
        shape=tuple(attrs["shape"]),
        trimap=np.asarray(node["trimap"][...]),
        has_unknown=attrs["has_unknown"],
    )


def _save_context(group, version: int, context, inputs: str, small: dict) -> None:
    node = group.require_group(f"context/{version}")
    # the downsampled inputs too: the next edit is found (and re-solved) cell by cell
    arrays = {"alpha": context.alpha, "trimap": context.trimap, **small}
    for name, data in arrays.items():
        node.create_array(name, shape=data.shape, dtype=data.dtype, overwrite=True)[...] = data
    # Written last: a version without "inputs" is unfinished and never used.
    node.attrs.update(
        factor=context.factor,
        shape=list(context.shape),
        has_unknown=context.has_unknown,
        inputs=inputs,
    )


def _edited_context(group, small_image, fractions, model, global_size):
    """The store's current context re-solved around the cells whose inputs changed, or
    None (no usable previous context, or too much changed: solve it all)."""
    from .global_pass import update_global

    version = dict(group.attrs)[_ATTR].get("context", 0)
    try:
        node = group[f"context/{version}"]
        old_image, old_fractions = node["image"][...], node["fractions"][...]
    except KeyError:
        return None
    small_image = np.asarray(small_image, np.float32)
    if old_image.shape != small_image.shape or old_fractions.shape != fractions.shape:
        return None
    changed = (old_image != small_image).any(axis=-1) | (old_fractions != fractions).any(-1)
    old = _load_context(group, version)
    return update_global(
        old, small_image, fractions, changed, model=model, global_size=global_size
    )


def _context_versions(group) -> dict[int, str]:
    out = {}
    for name in group["context"].group_keys():
        inputs = dict(group[f"context/{name}"].attrs).get("inputs")
        if inputs is not None:
            out[int(name)] = inputs
    return out


def _client():
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def run_steps(
    image,
    trimap,
    path,
    *,
    model: str = DEFAULT_MODEL,
    chunks: int = 512,
    overlap: int | None = None,
    global_size: float = 1_000_000,
    device: str = "auto",
    labels: bool | None = None,
    model_options: dict | None = None,
    bit_depth: int | None = None,
    pyramid: bool = True,
    force: bool = False,
    batch: int | None = None,
    progress: bool = False,
) -> Generator[Progress, None, RunReport]:
    """:func:`matte_to_store` as a generator of :class:`~napari_hrmatt.pipeline.Progress`.

    With ``batch`` (interactive use) blocks are computed ``batch`` at a time and a
    step is yielded after each batch, so the caller may stop between batches; the
    blocks done so far stay valid. Progress counts only the blocks being computed.
    """
    import dask
    import dask.array as da

    from ._blocks import BlockGrid
    from .global_pass import downsample_factor, downsample_inputs, solve_global
    from .image import image_channels
    from .models import get_model, resolve_device
    from .trimap import canonical_trimap

    if not isinstance(model, str):
        raise ValueError("a run store needs a registered model name (it is recorded)")
    path = Path(path)
    raw = image_channels(image, stacklevel=4)
    tri = canonical_trimap(trimap, labels=labels)
    if raw.shape[:2] != tri.shape:
        raise ValueError(
            f"image is {raw.shape[0]}x{raw.shape[1]} but trimap is {tri.shape[0]}x"
            f"{tri.shape[1]} (height x width); they must cover the same pixels"
        )
    raw, tri = da.asarray(raw), da.asarray(tri)
    options = tuple(sorted((model_options or {}).items()))
    device = resolve_device(device)
    model_obj = get_model(model, device, **dict(options))
    factor = downsample_factor(tri.shape, global_size)
    overlap = model_obj.overlap(factor) if overlap is None else overlap
    if overlap < 0 or chunks < 1:
        raise ValueError(f"need chunks >= 1 and overlap >= 0, got {chunks} and {overlap}")
    grid = BlockGrid.plan(tri.shape, chunks, overlap)
    dtype = {None: np.float32, 8: np.uint8, 16: np.uint16}[bit_depth]
    engine = {"model": model, "device": device, "model_options": options}
    settings = _settings(engine, tri.shape, raw.shape[2], dtype, grid, factor)
    report = RunReport(path=path, blocks=len(list(grid)))
    lock = Lock(path)
    lock.acquire()
    try:
        group = _prepare(path, settings, force, report)
        store = str(path)
        records = _read_records(path, grid)
        yield Progress(0, report.blocks + 1, "checking inputs")
        small_image, fractions, f = downsample_inputs(raw, tri, global_size=global_size)
        # One read of the inputs: the global pass's downsampling, the fingerprints of
        # the recorded blocks and the checksums of their stored alpha.
        checks = {
            ij: (
                dask.delayed(inspect_block)(raw[grid.grown(*ij)], tri[grid.grown(*ij)]),
                dask.delayed(checksum)(store, grid.core(*ij)),
            )
            for ij in records
        }
        small_image, fractions, checks = dask.compute(small_image, fractions, checks)
        inputs = digest(small_image, fractions).hex()
        versions = _context_versions(group)
        current = max((v for v, h in versions.items() if h == inputs), default=0)
        if current:
            context = _load_context(group, current)
            if hasattr(model_obj, "context_extras"):
                extras = model_obj.context_extras(small_image, context.trimap, context.alpha)
                context.extras.update(extras)
        else:
            yield Progress(0, report.blocks + 1, "global pass")  # the slow step
            context = _edited_context(group, small_image, fractions, model_obj, global_size)
            if context is None:
                context = solve_global(
                    small_image,
                    fractions,
                    factor=f,
                    shape=tri.shape,
                    model=model_obj,
                    global_size=global_size,
                    device=device,
                )
            current = max(versions, default=0) + 1
            small = {"image": np.asarray(small_image, np.float32), "fractions": fractions}
            _save_context(group, current, context, inputs, small)
            report.global_solved = True
        group.attrs[_ATTR] = {**dict(group.attrs)[_ATTR], "context": current}
        old_contexts: dict = {}
        dirty = []
        reasons = dict.fromkeys(("missing", "inputs", "context", "output"), 0)
        whole = getattr(model_obj, "uses_context", False) or context.factor == 1
        for ij in grid:
            record = records.get(ij)
            why = None
            if record is None:
                why = "missing"
            elif checks[ij][0][0] != record[0]:
                why = "inputs"
            elif checks[ij][1] != record[1]:
                why = "output"
            elif record[3] and record[2] != current:
                if whole or record[2] not in versions:
                    why = "context"
                else:
                    if record[2] not in old_contexts:
                        old_contexts[record[2]] = _load_context(group, record[2]).alpha
                    y, x = grid.grown(*ij)
                    cells = context.cells(y.start, x.start, y.stop - y.start, x.stop - x.start)
                    moved = np.abs(old_contexts[record[2]][cells] - context.alpha[cells]).max()
                    why = "context" if moved > CONTEXT_TOLERANCE else None
                    if why is None:
                        report.kept_context_move = max(report.kept_context_move, float(moved))
            if why:
                reasons[why] += 1
                dirty.append(ij)
        report.computed, report.reused = len(dirty), report.blocks - len(dirty)
        report.reasons = reasons
        yield from _compute(
            dirty, raw, tri, store, grid, context, current, engine, batch, progress
        )
        # A few blocks after a complete run: only the pyramid cells above them change.
        # Else the levels (or just the OME metadata) are rebuilt from level 0.
        few = report.was_complete and pyramid and len(dirty) <= report.blocks // 2
        updated = few and update_pyramid(group, [grid.core(*ij) for ij in dirty])
        if not updated and not report.up_to_date:
            write_pyramid(group, pyramid, path.name)
        # Forget contexts no block refers to any more.
        used = {r[2] for r in _read_records(path, grid).values()} | {current}
        for version in versions:
            if version not in used:
                del group[f"context/{version}"]
        group.attrs[_ATTR] = {**dict(group.attrs)[_ATTR], "complete": True}
    finally:
        lock.release()
    return report


def _compute(dirty, raw, tri, store, grid, context, version, engine, batch, progress):
    """Solve the dirty blocks; yields Progress over them only."""
    import dask
    from dask.callbacks import Callback

    total = len(dirty)
    if not total:
        return
    client = _client()
    # On a cluster the context travels once (scattered), not inside every task.
    shared = client.scatter(context, broadcast=True) if client else dask.delayed(context)
    tasks = [
        dask.delayed(solve_block, pure=False)(
            raw[grid.grown(i, j)],
            tri[grid.grown(i, j)],
            path=store,
            index=(i, j),
            grid=grid,
            context=shared,
            version=version,
            engine=engine,
            dask_key_name=f"hrmatt-block-{i}-{j}",
        )
        for i, j in dirty
    ]
    done = 0
    if client is not None:
        from distributed import as_completed

        for future in as_completed(client.compute(tasks)):
            future.result()
            done += 1
            yield Progress(done, total, "alpha", (done, total))
        return
    step = batch or total
    bar = None
    if progress and not batch:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="blocks", unit="block")

    class _Count(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if bar is not None and str(key).startswith("hrmatt-block"):
                bar.update(1)

    try:
        for start in range(0, total, step):
            with _Count():
                dask.compute(*tasks[start : start + step])
            done = min(total, start + step)
            yield Progress(done, total, "alpha", (done, total))
    finally:
        if bar is not None:
            bar.close()


def matte_to_store(image, trimap, path, *, progress: bool = False, **options) -> RunReport:
    """Compute an alpha matte into a resumable Zarr run store.

    Parameters
    ----------
    image, trimap : arrays (numpy or dask)
        As :func:`napari_hrmatt.estimate_alpha`; Zarr-backed dask arrays keep the graph
        small (tasks read their blocks from the store).
    path : str or Path
        The run store (a directory, ``.zarr``/``.ome.zarr``).
    model, chunks, overlap, global_size, device, labels, model_options
        As :func:`napari_hrmatt.estimate_alpha` (``stitch`` is always ``"trim"``);
        ``model`` must be a registered name.
    bit_depth : {None, 8, 16}
        Stored alpha: float32 (default), uint8 or uint16.
    pyramid : bool
        Add 2x-downsampled levels (rebuilt whenever level 0 changed).
    force : bool
        Recompute every block, whatever the store holds.
    progress : bool
        A progress bar on stderr over the blocks being computed.

    Returns
    -------
    RunReport
        Blocks reused and computed (and why), whether the global pass was solved.

    Raises
    ------
    SettingsMismatch
        The store was made with other settings (and ``force`` is False).
    StoreLocked
        Another process is writing this store.

    Notes
    -----
    Runs on the current dask scheduler, including a ``dask.distributed`` client (the
    store must be on a file system all workers see). Results are identical to an
    uninterrupted run of the same settings; after an input edit, reused blocks are
    within :data:`CONTEXT_TOLERANCE` (plus solver tolerance) of a fresh run.
    """
    return drive(run_steps(image, trimap, path, progress=progress, **options))
