"""How many CPU cores this process may use: one answer for threads, decoders, readers and sweeps."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

# `zerograd train --nproc N` gives each worker its share of the cores in this variable (launch.py)
CPU_SHARE = "ZEROGRAD_CPU_SHARE"


def usable_cores(environ: Mapping[str, str] = os.environ) -> int:
    """The cores this process may use: its share under `zerograd train --nproc N`, else its CPU
    affinity (a container's or `taskset`'s limit), else all of the machine's."""
    share = environ.get(CPU_SHARE, "").strip()
    if share.isdigit() and int(share) > 0:
        return int(share)
    return affinity_cores()


def affinity_cores() -> int:
    """The cores this process may run on (its affinity), whatever its share."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
