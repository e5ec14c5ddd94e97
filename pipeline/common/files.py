"""Atomic, durable writes: a stage that crashes, or a machine that loses power, leaves its
previous output or the new one, never half of one. A file is written beside its final name,
flushed to disk (fsync), renamed over it, and the rename flushed too (fsync of the folder). A
folder is built beside its final name and swapped in with one atomic exchange (Linux's
renameat2 RENAME_EXCHANGE; elsewhere two renames, which the next write repairs if a kill
fell between them).
"""

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from pipeline.common.log import PipelineError

# Temporary files and folders are private (0600/0700); what we publish gets the usual modes.
_UMASK = os.umask(0)
os.umask(_UMASK)
DIR_MODE = 0o777 & ~_UMASK
FILE_MODE = 0o666 & ~_UMASK


log = logging.getLogger(__name__)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform allows."""
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not on this platform (Windows): the rename itself is all there is
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse to fsync a folder; nothing more can be done
    finally:
        os.close(handle)


def _renameat2():
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


_RENAMEAT2 = _renameat2()
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _retired(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def repair_swap(final: Path) -> None:
    """After a kill between the two renames of a swap without `exchange`: the old output is
    put back where it was (or, when the new one made it, the old is removed)."""
    retired = _retired(final)
    if not retired.exists():
        return
    if final.exists():
        shutil.rmtree(retired, ignore_errors=True)
    else:
        log.warning(f"{final}: a swap was interrupted; the previous output is put back")
        retired.rename(final)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty sibling folder; on success it replaces `final` (its files flushed to
    disk first, then swapped in atomically), on error it is removed and `final` is as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    repair_swap(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        staging.chmod(DIR_MODE)
        os.sync()  # every file written into the folder is on disk before it is published
        if not final.exists():
            staging.rename(final)
        elif exchange(staging, final):
            shutil.rmtree(staging)  # now the previous output
        else:
            retired = _retired(final)
            final.rename(retired)
            staging.rename(final)
            shutil.rmtree(retired)
        fsync_dir(final.parent)
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
        with staging.open("rb+") as written:
            os.fsync(written.fileno())  # the bytes are on disk before the name points at them
        staging.replace(final)
        fsync_dir(final.parent)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: object) -> None:
    """Write pretty, key-sorted JSON atomically (stable bytes, so DVC sees no spurious change)."""
    with staged_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically and durably."""
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


class WorkspaceBusyError(PipelineError):
    """Another process of the same kind holds this workspace's state."""


@contextmanager
def single_writer(lock: Path, what: str) -> Iterator[None]:
    """Hold `lock` (an advisory lock the kernel drops when the holder dies, however it dies)
    while inside; when another process holds it, stop at once naming it. The file stays
    after use: removing it would let a process that opened it just before lock a file no
    longer there while a third locks a new one."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkspaceBusyError(
                f"{what} is already running in this workspace ({holder}; it holds {lock}): "
                "wait for it to end, or run the second one in its own clone or with "
                "`dvc exp run --temp`"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
