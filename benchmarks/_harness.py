"""Shared by the benchmark scripts: run a measurement in a fresh process, read its peak RSS.

Each measurement runs as ``python SCRIPT ARGS...`` in its own process, which prints one JSON
line last; peak memory is the child's own ``VmHWM`` (imports included), so methods never
share an allocator or a JIT cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``), NaN where unavailable."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(script: str, *args: str) -> dict:
    """Run ``script`` with ``args`` in a new Python process; return its last JSON line."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_if_child(argv: list[str], entries: dict) -> bool:
    """The child side of :func:`run_child`: if ``argv[0]`` names one of ``entries``
    (e.g. ``{"_solve": _child_solve}``), call it with the remaining arguments and
    return True; otherwise return False and let the script parse its own arguments."""
    if argv and argv[0] in entries:
        entries[argv[0]](*argv[1:])
        return True
    return False
