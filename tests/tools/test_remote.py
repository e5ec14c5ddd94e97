"""`make push` / `make pull` on a tiny real DVC project (the end-to-end test pushes and pulls
the whole pipeline): outputs the remote lacks are named, and the rest still arrives."""

import os
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from pipeline.tools import remote
from tests.projects import GIT_IDENTITY, run


def sh(args: list[str], cwd: Path) -> str:
    return run(args, cwd, {**os.environ, **GIT_IDENTITY})


def dvc(*args: str, cwd: Path) -> str:
    return sh([sys.executable, "-m", "dvc", *args], cwd)


@pytest.fixture
def pushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A project of two stages (upper, count), run, committed and pushed to a folder remote.
    DVC, like `make push`, works from the project's folder."""
    root = tmp_path / "first"
    root.mkdir()
    sh(["git", "init", "-q"], root)
    dvc("init", "-q", cwd=root)
    (root / "words.txt").write_text("one\ntwo\n")
    upper = "open('upper.txt', 'w').write(open('words.txt').read().upper())"
    count = "print(len(open('upper.txt').read().split()), file=open('count.txt', 'w'))"
    dvc(
        "stage",
        "add",
        "-q",
        "-n",
        "upper",
        "-d",
        "words.txt",
        "-o",
        "upper.txt",
        f'{sys.executable} -c "{upper}"',
        cwd=root,
    )
    dvc(
        "stage",
        "add",
        "-q",
        "-n",
        "count",
        "-d",
        "upper.txt",
        "-o",
        "count.txt",
        f'{sys.executable} -c "{count}"',
        cwd=root,
    )
    dvc("repro", "-q", cwd=root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "run"], root)
    storage = tmp_path / "remote"
    monkeypatch.chdir(root)
    with Repo(str(root)) as repo:
        remote.push(repo, remote.choose_remote(repo, str(storage), "push"))
    return root, storage


def clone(first: Path, storage: Path) -> tuple[Path, str]:
    second = first.parent / "second"
    sh(["git", "clone", "-q", str(first), str(second)], first.parent)
    os.chdir(second)  # the fixture's monkeypatch restores the folder
    with Repo(str(second)) as repo:
        return second, remote.choose_remote(repo, str(storage), "pull")


def test_a_clone_pulls_every_output_and_recomputes_nothing(pushed):
    second, name = clone(*pushed)
    with Repo(str(second)) as repo:
        assert remote.pull(repo, name) == []
    assert (second / "count.txt").read_text() == "2\n"
    output = dvc("repro", cwd=second)
    assert "Running stage" not in output


def test_outputs_the_remote_lacks_are_named_and_the_rest_arrive(pushed, capsys):
    first, storage = pushed
    with Repo(str(first)) as repo:  # count.txt as if the lock were committed unpushed
        md5 = repo.stage.collect("count")[0].outs[0].hash_info.value
    [lost] = list((storage / "files/md5").glob(f"{md5[:2]}/{md5[2:]}"))
    lost.unlink()
    second, name = clone(first, storage)
    with Repo(str(second)) as repo:
        assert remote.pull(repo, name) == ["count.txt"]
    assert "'shared' has no copy of count.txt: dvc repro will compute it" in capsys.readouterr().out
    assert (second / "upper.txt").read_text() == "ONE\nTWO\n"
    assert not (second / "count.txt").exists()
    output = dvc("repro", cwd=second)
    assert "Stage 'upper' didn't change, skipping" in output
    assert (second / "count.txt").read_text() == "2\n"
