"""Output paths: the format an extension names, refusing unsafe outputs, atomic replacement."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "atomic_output",
    "check_output_path",
    "format_of",
]

READ_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".zarr", ".ome.zarr")
WRITE_EXTENSIONS = (".png", ".tif", ".tiff", ".zarr", ".ome.zarr")

_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".zarr": "zarr",
}

_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "zarr": "Zarr"}


def format_of(path: Path, supported: tuple[str, ...], action: str) -> str:
    """``"png"``, ``"jpeg"``, ``"tiff"`` or ``"zarr"`` for ``path``, else ValueError."""
    name = path.name.lower()
    fmt = "zarr" if name.endswith(".ome.zarr") else _FORMATS.get(path.suffix.lower())
    if (
        fmt is None
        and action == "read"
        and any(part.lower().endswith(".zarr") for part in path.parts[:-1])
    ):
        fmt = "zarr"  # an array inside a Zarr store, e.g. image.zarr/0
    if fmt is None or not any(ext in supported for ext, f in _FORMATS.items() if f == fmt):
        raise ValueError(
            f"cannot {action} {str(path)!r}: unsupported file extension "
            f"{path.suffix or '(none)'!r}; supported: {', '.join(supported)}"
        )
    return fmt


def _is_zarr_store(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray"))


def check_output_path(path, *, inputs: Iterable = ()) -> Path:
    """Check that ``path`` can be written; raise before any computing happens.

    Parameters
    ----------
    path : str or Path
        Output path; its extension picks the format (see :data:`WRITE_EXTENSIONS`).
    inputs : iterable of str or Path
        Files or Zarr stores the result is computed from. The output may not be one
        of them, lie inside one (a Zarr directory), or contain one.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        Unsupported extension, output equal to (or inside, or containing) an input, or
        an existing destination of the wrong kind (a directory where a file goes, a
        non-Zarr directory where a Zarr store goes).
    """
    path = Path(path)
    fmt = format_of(path, WRITE_EXTENSIONS, "write")
    out = path.resolve()
    for item in inputs:
        if item is None:
            continue
        inp = Path(item).resolve()
        same = out == inp
        if not same and out.exists() and inp.exists():
            same = os.path.samefile(out, inp)
        if same:
            raise ValueError(
                f"refusing to overwrite the input {str(item)!r} with the output "
                f"{str(path)!r}; choose another output path"
            )
        if inp in out.parents:
            raise ValueError(
                f"refusing to write {str(path)!r} inside the input {str(item)!r}; "
                "choose an output outside it"
            )
        if out in inp.parents:
            raise ValueError(
                f"refusing to write {str(path)!r}: replacing it would delete the input "
                f"{str(item)!r} inside it; choose another output path"
            )
    if path.is_dir() and fmt != "zarr":
        raise ValueError(f"cannot write {str(path)!r}: it is an existing directory")
    if fmt == "zarr" and path.exists():
        if not path.is_dir():
            raise ValueError(f"cannot write Zarr {str(path)!r}: an existing file is in the way")
        if any(path.iterdir()) and not _is_zarr_store(path):
            raise ValueError(
                f"refusing to replace {str(path)!r}: it is a non-empty directory but not a "
                "Zarr store; choose another output path"
            )
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: Path, cancel: threading.Event | None = None):
    """Yield a hidden sibling path to write into; move it onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the partial output is deleted and
    the exception re-raised; ``cancel`` is set first so that writer threads still
    running stop before touching the disk again.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        if cancel is not None:
            cancel.set()
        _remove(tmp)
        raise
    if tmp.is_dir():
        # Directories cannot be replaced in one step: move the old store aside, move
        # the new one in (two renames, no copying), then delete the old one. ``path``
        # is never a half-written store, at worst briefly absent.
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        _remove(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)
