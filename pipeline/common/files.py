"""Atomic writes: a stage that crashes leaves its previous output or none, never half of one."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

# Temporary files and folders are private (0600/0700); what we publish gets the usual modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `final`, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        staging.chmod(DIR_MODE)
        if final.exists():
            retired = final.with_name(f".{final.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            final.rename(retired)
            staging.rename(final)
            shutil.rmtree(retired)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """Yield a sibling temporary path; on success it replaces `final`, on error it is removed.

    The temporary name keeps the final suffix, for writers that pick the format from it.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
    )
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        staging.chmod(FILE_MODE)
        staging.replace(final)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    """Write pretty, key-sorted JSON atomically (stable bytes, so DVC sees no spurious change)."""
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_csv(table: pd.DataFrame, path: Path, **to_csv: object) -> None:
    """Write a table as CSV atomically, without the pandas index unless asked for."""
    with staged_file(path) as tmp:
        table.to_csv(tmp, **({"index": False} | to_csv))


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (no extra disk), copying where links are impossible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
