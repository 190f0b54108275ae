"""The files of a run store (:mod:`napari_hrmatt.runstore`): what block tasks write, the
lock, the pyramid.

Everything here runs where a block is solved (a thread, or a ``dask.distributed``
worker process) or touches the store directly; the run's logic (what is dirty, which
context) lives in :mod:`napari_hrmatt.runstore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np

__all__ = [
    "RECORD",
    "Lock",
    "StoreLocked",
    "checksum",
    "digest",
    "inspect_block",
    "open_array",
    "solve_block",
    "update_pyramid",
    "write_pyramid",
]

RECORD = 48  # fingerprint 16, checksum 16, context version 8 (uint64), flags 1, pad 7


class StoreLocked(RuntimeError):
    """Another process is writing the same run store."""


# ------------------------------------------------------------------ fingerprints


def digest(*parts) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.shape}{part.dtype.str}".encode())
            h.update(np.ascontiguousarray(part).data)
        else:
            h.update(str(part).encode())
    return h.digest()


def inspect_block(image_block, trimap_block) -> tuple[bytes, bool]:
    """Fingerprint of a grown input block, and whether it has an unknown pixel."""
    from .trimap import UNKNOWN

    return digest(image_block, trimap_block), bool((trimap_block == UNKNOWN).any())


def checksum(path: str, core) -> bytes | None:
    """Checksum of the stored alpha of one block core; None if it cannot be read."""
    try:
        return digest(open_array(path, "0")[core])
    except Exception:  # noqa: BLE001 - a truncated or corrupt chunk is just "not done"
        return None


def open_array(path: str, name: str):
    import zarr

    return zarr.open_array(str(Path(path) / name), mode="r+")


# ------------------------------------------------------------------ the block task


def _encode(alpha: np.ndarray, dtype: np.dtype) -> np.ndarray:
    x = np.clip(alpha, 0, 1)
    if dtype.kind == "f":
        return x.astype(np.float32)
    return np.rint(x * np.iinfo(dtype).max).astype(dtype)


def solve_block(image_block, trimap_block, *, path, index, grid, context, version, engine):
    """Solve one grown block, write its core, then its record (the last write)."""
    from .patch_pass import refine_block

    i, j = index
    fingerprint, uses_context = inspect_block(image_block, trimap_block)
    origin, keep = grid.locate(i, j)
    core = grid.core(i, j)
    if context.factor == 1 and context.has_unknown:
        # The global pass solved the image at full resolution already (as the engine).
        alpha = context.alpha[core]
        uses_context = True
    else:
        dtype = image_block.dtype if image_block.dtype in (np.uint8, np.uint16) else np.float32
        stacked = np.concatenate(
            [image_block.astype(dtype), trimap_block[..., None].astype(dtype)], axis=2
        )
        alpha = refine_block(stacked, context=context, origin=origin, **engine)[keep]
    out = open_array(path, "0")
    block = _encode(alpha, np.dtype(out.dtype))
    out[core] = block
    record = np.zeros(RECORD, np.uint8)
    record[:16] = np.frombuffer(fingerprint, np.uint8)
    record[16:32] = np.frombuffer(digest(block), np.uint8)
    record[32:40] = np.frombuffer(np.uint64(version).tobytes(), np.uint8)
    record[40] = uses_context
    open_array(path, "blocks")[i, j] = record
    return 1


# ------------------------------------------------------------------ the lock


class Lock:
    """An exclusive ``flock`` on ``.<name>.lock`` beside the store.

    The kernel drops the lock when its process dies (SIGKILL, power loss), so a lock
    is never stale; the file names the holder for the refusal message and is removed
    on release. After locking we check that the path still names the file we locked
    (a releasing holder may have just unlinked it).
    """

    def __init__(self, store: Path):
        self.file = store.with_name(f".{store.name}.lock")
        self._fd = None

    def acquire(self) -> None:
        import fcntl

        self.file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                try:
                    owner = json.loads(self.file.read_text() or "{}")
                except (OSError, ValueError):
                    owner = {}
                who = f"process {owner.get('pid', '?')} on {owner.get('host', '?')}"
                raise StoreLocked(
                    f"{str(self.file.with_name(self.file.name[1:-5]))!r} is being written by "
                    f"{who}; wait for that run to finish (two runs may not write one store)"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.file.unlink()
            os.close(self._fd)
            self._fd = None


def write_pyramid(group, pyramid: bool, name: str) -> None:
    """(Re)build the levels above ``"0"`` down to one chunk (:func:`.io.ome.build_pyramid`,
    the same builder as every saved OME-Zarr) and write the multiscales metadata."""
    from .io.ome import build_pyramid, write_multiscales

    for key in [k for k in group.array_keys() if k.isdigit() and k != "0"]:
        del group[key]
    n_levels = 1
    if pyramid:
        for index in build_pyramid(group, max_side=max(group["0"].chunks)):
            n_levels = index + 1
    write_multiscales(group, n_levels, colour=False, name=name)


def update_pyramid(group, regions) -> bool:
    """Recompute only the pyramid cells above ``regions`` (level-0 ``(rows, cols)``
    slices); False (nothing written) if the levels are not there to update."""
    from .io.ome import halve

    levels = sorted(int(k) for k in group.array_keys() if k.isdigit())
    if levels != list(range(len(levels))) or len(levels) < 2:
        return False
    below = group["0"]
    for index in levels[1:]:
        level = group[str(index)]
        if level.shape != tuple((n + 1) // 2 for n in below.shape):
            return False
        coarse = []
        for rows, cols in regions:
            # the even-aligned source window, clipped to the level below
            r = slice(rows.start // 2, (rows.stop + 1) // 2)
            c = slice(cols.start // 2, (cols.stop + 1) // 2)
            src = below[2 * r.start : min(2 * r.stop, below.shape[0]),
                        2 * c.start : min(2 * c.stop, below.shape[1])]  # fmt: skip
            level[r, c] = halve(np.asarray(src))
            coarse.append((r, c))
        regions, below = coarse, level
    return True
