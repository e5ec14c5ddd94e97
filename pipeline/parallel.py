"""Spreading per-file work over the machine's cores, with a progress bar on long runs."""

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from tqdm import tqdm

PARALLEL_FROM = 256  # below this many items, worker start-up costs more than it saves


def parallel_map(function: Callable, items: list, description: str) -> list:
    """`map` over processes (one per core) in order; in-process for small inputs.

    The bar shows only on a terminal (tqdm's `disable=None`), so logs stay clean.
    """
    bar = partial(tqdm, total=len(items), desc=description, unit="file", disable=None)
    if len(items) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return list(bar(map(function, items)))
    with ProcessPoolExecutor() as pool:
        return list(bar(pool.map(function, items, chunksize=64)))
