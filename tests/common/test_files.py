import pytest

from pipeline.common.files import staged_dir, staged_file, write_json


def test_staged_dir_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_dir(final) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_keeps_previous_output_when_the_stage_crashes(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="crash"), staged_dir(final) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_file_keeps_previous_file_on_error(tmp_path):
    final = tmp_path / "metrics.json"
    write_json(final, {"accuracy": 1})
    with pytest.raises(KeyboardInterrupt), staged_file(final) as tmp:
        tmp.write_text("{half")
        raise KeyboardInterrupt
    assert final.read_text() == '{\n  "accuracy": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_staged_file_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with staged_file(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras"
        tmp.write_text("x")


def test_staged_file_flushes_the_file_and_its_folder_to_disk(tmp_path, monkeypatch):
    import os

    from pipeline.common import files

    synced = []
    real = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", recorded)
    files.write_json(tmp_path / "out.json", {"a": 1})
    assert synced[0].startswith(str(tmp_path / ".out.")) and synced[1] == str(tmp_path)


def test_staged_dir_swaps_in_one_atomic_exchange(tmp_path, monkeypatch):
    from pipeline.common import files

    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    renames = []
    monkeypatch.setattr(files.Path, "rename", lambda self, target: renames.append(self))
    with staged_dir(final) as staging:
        (staging / "new.txt").write_text("new")
    assert renames == []  # no window with `out` missing: one renameat2 exchange
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_a_swap_killed_between_its_two_renames_is_repaired_by_the_next_write(tmp_path, monkeypatch):
    """Where the exchange is not available: a kill after `out` moved aside and before the new
    folder took its name leaves `.out.old`; the next write puts it back first."""
    from pipeline.common import files

    monkeypatch.setattr(files, "_RENAMEAT2", None)
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    real_rename, calls = files.Path.rename, []

    def killed_on_second(self, target):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill
        return real_rename(self, target)

    monkeypatch.setattr(files.Path, "rename", killed_on_second)
    with pytest.raises(KeyboardInterrupt), staged_dir(final) as staging:
        (staging / "new.txt").write_text("new")
    monkeypatch.setattr(files.Path, "rename", real_rename)
    assert not final.exists() and (tmp_path / ".out.old" / "old.txt").exists()
    files.repair_swap(final)  # what every staged_dir does first
    assert (final / "old.txt").read_text() == "old" and not (tmp_path / ".out.old").exists()


SWAPPER = """
import sys
from pathlib import Path
from pipeline.common.files import staged_dir
final = Path(sys.argv[1])
for version in range(10**6):
    with staged_dir(final) as staging:
        for i in range(40):
            (staging / f"{i}.txt").write_text(str(version))
"""


def test_a_folder_swap_killed_at_any_moment_leaves_one_whole_version(tmp_path):
    """SIGKILL a process that swaps folders in a loop, at 25 moments: what is there is always
    one version's 40 files, never a mix or a part."""
    import random
    import subprocess
    import sys
    import time

    from pipeline.common.files import repair_swap
    from pipeline.paths import ROOT

    final, seen = tmp_path / "out", set()
    rng = random.Random(0)
    for _ in range(25):
        process = subprocess.Popen([sys.executable, "-c", SWAPPER, str(final)], cwd=ROOT)
        time.sleep(rng.uniform(0.6, 1.2))
        process.kill()
        process.wait()
        repair_swap(final)
        if final.exists():
            versions = {p.read_text() for p in final.iterdir()}
            assert len(list(final.iterdir())) == 40 and len(versions) == 1, versions
            seen |= versions
    assert len(seen) > 1


HOLDER = """
import sys, time
from pathlib import Path
from pipeline.common.files import single_writer
with single_writer(Path(sys.argv[1]), "a training"):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_stops_naming_the_first_and_the_lock_dies_with_it(tmp_path):
    import subprocess
    import sys

    from pipeline.common.files import WorkspaceBusyError, single_writer
    from pipeline.paths import ROOT

    lock = tmp_path / ".resume" / "train.lock"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert first.stdout.readline().strip() == "holding"
    busy = rf"a training is already running in this workspace \(pid {first.pid}, since .*; it "
    with pytest.raises(WorkspaceBusyError, match=busy), single_writer(lock, "a training"):
        pass
    first.kill()  # SIGKILL: no clean-up ran, and yet the lock is free
    first.wait()
    with single_writer(lock, "a training"):
        assert f"pid {__import__('os').getpid()}" in lock.read_text()
