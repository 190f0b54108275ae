"""Thread policy for the torch solvers: robust when other processes want the cores.

Two effects make torch's OpenMP thread pool fragile on a shared machine:

* **Spinning.** An OpenMP thread that reaches the end of a parallel region busy-waits
  for the next one (GNU OpenMP spins for a while by default). The solvers issue
  thousands of small element-wise operations, so with another CPU-bound process on the
  machine the spinning threads steal the core that the straggler needs.
  ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep; it is read once, when the
  OpenMP runtime is loaded (on ``import torch``), so :func:`use_passive_wait` must run
  before that.
* **Stragglers.** Every parallel region waits for its slowest thread; when one core is
  busy with someone else, two threads run at the speed of the descheduled one.
  :func:`solver_threads` therefore gives a solve only the cores nobody else is using
  (from the 1-minute load average), at least one.

``HRMATT_THREADS`` (an integer) overrides the choice.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["use_passive_wait", "free_cores", "solver_threads"]


def use_passive_wait() -> bool:
    """Ask OpenMP to let idle threads sleep instead of spinning (before ``import torch``).

    Leaves a value the user has set alone. Returns whether the setting can still take
    effect (torch not imported yet).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def _cpu_count() -> int:
    try:
        from dask.system import CPU_COUNT  # affinity and cgroup limits

        return int(CPU_COUNT)
    except ImportError:  # pragma: no cover - dask is a dependency
        return os.cpu_count() or 1


def free_cores(load: float | None = None, cores: int | None = None) -> int:
    """Cores not busy with other work: ``cores - round(load)``, at least 1.

    ``load`` defaults to the 1-minute load average (measured before our own solve
    starts, so it counts other processes), ``cores`` to the usable cores.
    """
    cores = _cpu_count() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - not on Linux/macOS
            load = 0.0
    return max(1, min(cores, cores - int(round(load))))


@contextlib.contextmanager
def solver_threads(threads: int | None = None):
    """Run a solve with ``threads`` torch threads (default: ``HRMATT_THREADS`` or
    :func:`free_cores`), restoring the previous count afterwards."""
    import torch

    if threads is None:
        env = os.environ.get("HRMATT_THREADS", "").strip()
        threads = int(env) if env else free_cores()
    if threads < 1:
        raise ValueError(f"threads must be 1 or more, got {threads}")
    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
