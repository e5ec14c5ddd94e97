"""`make push` / `make pull`: the data, every stage's outputs and DVC's run-cache to or from a
DVC remote, so that another clone's `dvc repro` skips every stage already computed.

The remote is `DVC_REMOTE` (environment, or `make push DVC_REMOTE=...`): the name of a remote
in `dvc remote list`, or a URL or path (s3://, gs://, azure://, ssh://, /mnt/...), which is
registered as the remote `shared` in `.dvc/config.local` (git-ignored: per machine, beside
its credentials, never committed). Unset: the project's default remote.

`dvc push --run-cache` sends the run records but not the files they name that the workspace
does not use (DVC >= 3.53: treeverse/dvc#10472), so a stage computed for other params, or
one whose metrics are kept in git, could not be restored in another clone. So push and
pull also move the cached files every run record names.
"""

import argparse
import os
import sys
from pathlib import Path

from dvc.exceptions import CheckoutError
from dvc.repo import Repo

from pipeline.common.log import PipelineError, run_stage
from pipeline.paths import ROOT

SHARED = "shared"


class RemoteError(PipelineError, ValueError):
    """No remote to use, or one this project does not know."""


def is_location(value: str) -> bool:
    """A URL or a path rather than the name of a configured remote."""
    return "/" in value or ":" in value or value.startswith(".")


def choose_remote(repo: Repo, value: str, action: str) -> str:
    """The name of the remote `value` (DVC_REMOTE) stands for; a location is registered."""
    if value and is_location(value):
        url = value if "://" in value else str(Path(value).resolve())
        with repo.config.edit("local") as config:
            config["remote"][SHARED] = {"url": url}
        print(f"DVC remote {SHARED!r} -> {url} (in .dvc/config.local)")
        return SHARED
    remotes = repo.config["remote"]
    if not value:
        default = repo.config["core"].get("remote")
        if not default:
            raise RemoteError(
                f"no DVC remote to {action}: set DVC_REMOTE to a URL or path "
                f"(make {action} DVC_REMOTE=s3://bucket/dvc), or to a remote's name, or add a "
                "default remote (dvc remote add -d storage <url>); docs/scaling.md"
            )
        return default
    if value not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(
            f"DVC_REMOTE={value} is neither a URL nor a remote of this project (remotes: {known})"
        )
    return value


def run_records(repo: Repo) -> list[tuple[str, str]]:
    """Every (stage key, run) in the local run-cache."""
    runs = Path(repo.stage_cache.cache_dir)
    if not runs.exists():
        return []
    return [(run.parent.name, run.name) for run in sorted(runs.glob("*/*/*")) if run.is_file()]


def push(repo: Repo, remote: str) -> None:
    pushed = repo.push(remote=remote, run_cache=True)
    moved, records = transfer_run_files(repo, remote, "push")
    print(
        f"pushed to {remote!r}: {pushed} files and run records of the workspace, "
        f"{moved} more files named by the {records} run records"
    )


def pull(repo: Repo, remote: str) -> list[str]:
    """Pull; return the outputs the remote lacks (a dvc.lock committed without a push): every
    other output is checked out, and `dvc repro` computes those, or restores them from the
    run-cache."""
    try:
        result, missing = repo.pull(remote=remote, run_cache=True), []
    except CheckoutError as error:  # raised after checking out all the others
        result, missing = error.result, list(error.result.get("failed", []))
    moved, records = transfer_run_files(repo, remote, "pull")
    print(
        f"pulled from {remote!r}: {result['stats']['fetched']} files of the workspace, "
        f"{moved} more files named by the {records} run records"
    )
    if missing:
        print(
            f"pull: {remote!r} has no copy of {', '.join(sorted(missing))}: dvc repro will "
            "compute it (or restore it from the run-cache)"
        )
    return missing


def transfer_run_files(repo: Repo, remote: str, action: str) -> tuple[int, int]:
    """Push or pull the cached files every run record names; return how many moved, and the
    run records. A file neither side has (garbage-collected) is reported, not fatal: its stage
    runs again instead of being restored."""
    records = run_records(repo)
    moved, missing = 0, 0
    for objects in repo.stage_cache.get_used_objs(records).values():
        result = getattr(repo.cloud, action)(objects, remote=remote)
        moved, missing = moved + len(result.transferred), missing + len(result.failed)
    if missing:
        print(f"{action}: {missing} files named by run records are on neither side")
    return moved, len(records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["push", "pull"])
    args = parser.parse_args(argv)
    repo = Repo(str(ROOT))
    remote = choose_remote(repo, os.environ.get("DVC_REMOTE", "").strip(), args.action)
    (push if args.action == "push" else pull)(repo, remote)


if __name__ == "__main__":
    run_stage(sys.argv[1] if len(sys.argv) > 1 else "remote", main)
