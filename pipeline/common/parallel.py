"""Spreading per-file work over the machine's cores, and the one progress-bar policy."""

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

PARALLEL_FROM = 256  # below this many items, worker start-up costs more than it saves


def progress_bar(
    items: Iterable | None = None,
    total: int | None = None,
    description: str = "",
    unit: str = "file",
) -> tqdm:
    """A tqdm bar on standard error that shows only on a terminal (`disable=None`), so logs
    and CI output stay clean."""
    return tqdm(items, total=total, desc=description, unit=unit, disable=None, file=sys.stderr)


def parallel_map(function: Callable, items: list, description: str) -> list:
    """`map` over processes (one per core) in order; in-process for small inputs."""
    if len(items) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return list(progress_bar(map(function, items), len(items), description))
    with ProcessPoolExecutor() as pool:
        return list(progress_bar(pool.map(function, items, chunksize=64), len(items), description))
