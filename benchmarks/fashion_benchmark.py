"""`make bench-fashion`: the default pipeline on Fashion-MNIST at full scale, stage by stage.

A throw-away copy of the project (this working tree's code, params.yaml and DVC config, with
`ingest.source: fashion-mnist` and no other change, or `--set key=value` overrides) is made in
`.bench/fashion/`, a git + DVC repository. Every stage of dvc.yaml runs in order by
`dvc repro --single-item <stage>`; its wall time is split into the stage's own command (seen
in the process tree) and DVC's work around it (checking and hashing dependencies and outputs,
caching, dvc.lock), with the peak memory of the whole process tree (the sum of the resident
sets, sampled every 50 ms). Then `dvc status` and a `dvc repro` with nothing to do, the
targets of issue 19, and the test accuracy on the official test set beside scikit-learn's SVC
on the same split (computed by the evaluate stage) and Zalando's published table.

Needs the IDX files: when they are missing it installs the Debian package
`dataset-fashion-mnist` with apt-get (as root, or through sudo).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from pipeline.imagedata.sources import SourceNotFoundError, _idx_file, fashion_mnist_folder
from pipeline.params import load_raw_params, set_params
from pipeline.paths import ROOT
from tests.projects import make_project

WORK = ROOT / ".bench" / "fashion"
PACKAGE = "dataset-fashion-mnist"
# Zalando's benchmark table (README of github.com/zalandoresearch/fashion-mnist), test accuracy
PUBLISHED = {
    "scikit-learn SVC (C=10, RBF)": 0.897,
    "TensorFlow tutorial 2-layer CNN": 0.916,
    "Google AutoML Vision (24 compute hours)": 0.939,
    "ResNet18": 0.949,
    "WRN-28-10 (wide residual network)": 0.959,
}
TARGETS = {"whole pipeline": 20 * 60, "split + validate": 2 * 60}
PEAK_TARGET_MB = 4096
LOAD = [0.0, 0.0]  # the one-minute load average at the start and at the end


def ensure_dataset() -> Path:
    """The IDX files' folder; installs the Debian package first when they are missing."""
    folder = fashion_mnist_folder()
    try:
        _idx_file(folder, "t10k-labels-idx1-ubyte")
    except SourceNotFoundError:
        if os.environ.get("FASHION_MNIST_DIR"):
            raise  # the variable names the folder: its message says which file is missing
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        print(f"installing {PACKAGE} (apt-get) ...", flush=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", PACKAGE], check=True)
    return folder


class Sampler:
    """Peak resident memory of a process and all its descendants, sampled in a thread, and
    when a descendant whose command line holds `watch` was first and last seen."""

    def __init__(self, pid: int, watch: str) -> None:
        self.root, self.watch, self.peak = psutil.Process(pid), watch, 0
        self.seen: list[float] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            total = 0
            try:
                for process in [self.root, *self.root.children(recursive=True)]:
                    total += process.memory_info().rss
                    if self.watch and self.watch in " ".join(process.cmdline()):
                        self.seen.append(time.perf_counter())
            except psutil.Error:  # a process ended between listing and reading it
                pass
            self.peak = max(self.peak, total)
            self.done.wait(0.05)

    def stop(self) -> tuple[int, float]:
        """Peak MB, and seconds the watched command ran (0 if never seen)."""
        self.done.set()
        self.thread.join()
        span = self.seen[-1] - self.seen[0] if self.seen else 0.0
        return self.peak // 2**20, span


def measured(args: list[str], cwd: Path, env: dict, log: Path, watch: str = "") -> dict:
    """Run a command (its output appended to `log`): its wall seconds, peak MB and how long
    the `watch`ed command inside it ran. A failure stops the benchmark with the log's tail."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid, watch)
        code = process.wait()
    seconds = time.perf_counter() - start
    peak, span = sampler.stop()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        sys.exit(f"{' '.join(args)} failed ({code}); the end of {log}:\n{tail}")
    return {"seconds": seconds, "peak_mb": peak, "command_s": span}


def overrides(settings: list[str]) -> dict:
    """params.yaml with `ingest.source: fashion-mnist` and each `key=value` (a YAML value)
    set; a key params.yaml does not have is refused, as `make sweep` refuses it."""
    return set_params(load_raw_params(), ["ingest.source=fashion-mnist", *settings])


def machine() -> str:
    """The CPU's model name, its cores and memory, and whether it computes bfloat16 natively."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    flags = " ".join(f for f in ("amx_bf16", "avx512_bf16") if f in info.split())
    memory = psutil.virtual_memory().total / 2**30
    return f"{name}, {os.cpu_count()} cores, {memory:.0f} GiB{', ' + flags if flags else ''}"


def commit() -> str:
    """This working tree's commit, with `+changes` when it differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short=7", "HEAD").strip() or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def stages(root: Path) -> list[tuple[str, str]]:
    """(name, command) of every stage of dvc.yaml, in its order (the order they run in)."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    return [(name, stage["cmd"]) for name, stage in pipeline["stages"].items()]


def run_all(root: Path, env: dict) -> list[dict]:
    """Each stage as `dvc repro --single-item <stage>`; the stage's own command is told
    apart from DVC's work around it (checking, hashing, caching) by its process."""
    log = root / "bench.log"
    rows = []
    for name, command in stages(root):
        row = measured(["dvc", "repro", "--single-item", name], root, env, log, command)
        row |= {"stage": name, "dvc_s": row["seconds"] - row["command_s"]}
        rows.append(row)
        print(
            f"  {name:<10} {row['seconds']:8.1f} s {row['command_s']:8.1f} s "
            f"{row['dvc_s']:8.1f} s {row['peak_mb']:7d} MB",
            flush=True,
        )
    for name, args in (("dvc status", ["dvc", "status"]), ("dvc repro", ["dvc", "repro"])):
        row = measured(args, root, env, log) | {"stage": name}
        rows.append(row)
        print(f"  {name:<10} {row['seconds']:8.1f} s  (nothing to run) {row['peak_mb']:7d} MB")
    return rows


def report(root: Path, rows: list[dict]) -> None:
    by_stage = {row["stage"]: row for row in rows}
    total = sum(row["seconds"] for row in rows if "dvc_s" in row)
    dvc = sum(row.get("dvc_s", 0) for row in rows)
    pair = sum(by_stage[s]["seconds"] for s in ("split", "validate"))
    peak = max(row["peak_mb"] for row in rows)
    print(
        f"\nwhole pipeline {total / 60:.1f} min (of it DVC {dvc:.0f} s); target < 20 min: "
        f"{'met' if total < TARGETS['whole pipeline'] else 'NOT met'}"
    )
    print(
        f"split + validate {pair:.0f} s with DVC; target < 120 s: "
        f"{'met' if pair < TARGETS['split + validate'] else 'NOT met'}"
    )
    print(
        f"peak memory {peak} MB; target < {PEAK_TARGET_MB} MB: "
        f"{'met' if peak < PEAK_TARGET_MB else 'NOT met'}"
    )
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    split = json.loads((root / "data/split/split.json").read_text())
    trained = json.loads((root / "reports/train/metrics.json").read_text())
    print(
        f"\nTest accuracy on the official 10,000-image test set (split.json: given splits "
        f"{split['given_splits']}; {trained['epochs_run']} epochs, "
        f"{trained['training_seconds'] / 60:.1f} min of training):"
    )
    table = [
        ("this pipeline, default params (this run)", metrics["accuracy"]),
        (
            "scikit-learn SVC, 5,000 training images at 16x16 (this run)",
            metrics["baseline_svc_accuracy"],
        ),
    ]
    table += [(f"{name} (published)", value) for name, value in PUBLISHED.items()]
    for name, value in sorted(table, key=lambda item: item[1]):
        print(f"  {value:.4f}  {name}")
    (root / "bench.json").write_text(json.dumps({"stages": rows, "metrics": metrics}, indent=2))
    table = markdown(rows, metrics, trained)
    print(f'\nAs Markdown (docs/benchmarks.md, "Fashion-MNIST at full scale"):\n\n{table}')


def markdown(rows: list[dict], metrics: dict, trained: dict) -> str:
    """The stage table and the headline as the docs show them, with the machine and commit."""
    lines = [
        f"Commit `{commit()}`, {machine()}, load average {LOAD[0]:.1f} at the start and "
        f"{LOAD[1]:.1f} at the end.",
        "",
        "| stage | `dvc repro` | the command | DVC's part | peak memory |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "dvc_s" in row:
            lines.append(
                f"| {row['stage']} | {row['seconds']:.1f} s | {row['command_s']:.1f} s "
                f"| {row['dvc_s']:.1f} s | {row['peak_mb']:,} MB |"
            )
        else:
            lines.append(f"| `{row['stage']}` with nothing to do | {row['seconds']:.1f} s | | | |")
    total = sum(row["seconds"] for row in rows if "dvc_s" in row)
    peak = max(row["peak_mb"] for row in rows)
    lines += [
        "",
        f"**The whole pipeline: {total / 60:.1f} minutes, peak {peak:,} MB; test "
        f"accuracy {metrics['accuracy']:.4f}** ({trained['epochs_run']} epochs, "
        f"{trained['training_seconds'] / 60:.1f} min of training).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], help="params key=value")
    args = parser.parse_args()
    folder = ensure_dataset()
    print(f"Fashion-MNIST from {folder}; the project copy in {WORK.relative_to(ROOT)}")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = make_project(WORK, overrides(args.set))  # the tests' project copies, git + DVC
    LOAD[0] = os.getloadavg()[0]
    print(f"{machine()}; commit {commit()}; load average {LOAD[0]:.1f} at the start")
    print(f"  {'stage':<10} {'dvc repro':>10} {'command':>10} {'DVC':>10} {'peak':>10}")
    rows = run_all(WORK, env)
    LOAD[1] = os.getloadavg()[0]
    print(f"load average {LOAD[1]:.1f} at the end")
    report(WORK, rows)


if __name__ == "__main__":
    main()
