"""`make sweep`: a grid of params, run as DVC experiments from DVC's queue, N at a time.

The grid is a small YAML file: each key a dotted param of params.yaml, each value the list of
values to try; every combination is one experiment (`dvc exp run --queue -S ...`), named
`<file stem>-<yymmdd-HHMM>-<n>`, and `dvc queue start -j N` runs them, each in its own temporary
copy of the project. Every experiment is its own MLflow run named after it (train reads
`DVC_EXP_NAME`); when all are done the sweep's runs are ranked as `make compare` ranks them.

    # sweeps/example.yaml
    train.optimizer.learning_rate: [0.001, 0.0003]
    train.model.dropout: [0.0, 0.2]
"""

import argparse
import copy
import itertools
import json
import subprocess
import time
from pathlib import Path

from pipeline.common.log import PipelineError, run_stage
from pipeline.common.processes import run_command
from pipeline.params import ParamsError, load_raw_params, parse_params, read_yaml, set_param
from pipeline.paths import ROOT
from pipeline.tools import compare

FINISHED = ("Success", "Failed")


class SweepError(PipelineError, ValueError):
    """A grid that names an unknown param, lists no values, or makes invalid params."""


def read_grid(path: Path) -> dict[str, list]:
    try:
        grid = read_yaml(path)
    except ParamsError as error:
        raise SweepError(str(error)) from None
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: expected a mapping of params to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: {key} needs a non-empty list of values, not {values!r}")
    return grid


def grid_points(grid: dict[str, list], raw: dict) -> list[dict[str, object]]:
    """Every combination of the grid's values, each checked as params before anything runs."""
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for point in points:
        params = copy.deepcopy(raw)
        try:
            for key, value in point.items():
                set_param(params, key, value)
            parse_params(params, source=", ".join(f"{k}={v}" for k, v in point.items()))
        except ParamsError as error:
            raise SweepError(str(error)) from None
    return points


def queue(points: list[dict[str, object]], prefix: str) -> list[str]:
    names = []
    for n, point in enumerate(points, start=1):
        name = f"{prefix}-{n}"
        sets = [arg for k, v in point.items() for arg in ("-S", f"{k}={json.dumps(v)}")]
        run_command(["dvc", "exp", "run", "--queue", "-n", name, *sets], ROOT)
        print(f"sweep: queued {name}: {', '.join(f'{k}={v}' for k, v in point.items())}")
        names.append(name)
    return names


def statuses(names: list[str]) -> dict[str, str]:
    """Each experiment's status in `dvc queue status` (Queued, Running, Success, Failed)."""
    found = {}
    for line in run_command(["dvc", "queue", "status"], ROOT).splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in names:
            found[words[1]] = words[-1]
    return found


def wait(names: list[str], poll: float) -> dict[str, str]:
    shown: dict[str, str] = {}
    while True:
        now = statuses(names)
        for name, status in now.items():
            if shown.get(name) != status:
                print(f"sweep: {name}: {status}", flush=True)
        shown = now
        if len(now) == len(names) and all(s in FINISHED for s in now.values()):
            return now
        time.sleep(poll)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path, help="YAML file: param -> list of values")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="experiments at once")
    parser.add_argument("--sort", default="test_accuracy", help="metric to rank the runs by")
    parser.add_argument("--no-wait", action="store_true", help="queue and start, then return")
    parser.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    points = grid_points(read_grid(args.grid), load_raw_params())
    prefix = f"{args.grid.stem}-{time.strftime('%y%m%d-%H%M')}"
    names = queue(points, prefix)
    # The workers are forked with this process's stdout: a pipe would stay open until they
    # finish the whole queue, so their start-up output goes to a file.
    log = ROOT / ".dvc/tmp/sweep-queue-start.log"
    with log.open("w") as out:
        subprocess.run(
            ["dvc", "queue", "start", "-j", str(args.jobs)],
            cwd=ROOT,
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    print(f"sweep: {len(names)} experiments, {args.jobs} at a time (dvc queue status)")
    if args.no_wait:
        return
    final = wait(names, args.poll)
    failed = [name for name, status in final.items() if status != "Success"]
    compare.main(["--sort", args.sort, "--name", prefix])
    if failed:
        raise SweepError(
            f"{len(failed)} of {len(names)} failed: {', '.join(failed)} (dvc queue logs <name>)"
        )


if __name__ == "__main__":
    run_stage("sweep", main)
