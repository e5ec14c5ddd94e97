"""The folder `ingest.source` names is an input of the pipeline: under the real `dvc repro`,
adding, removing, renaming or changing a file there re-runs ingest, and nothing else does."""

import pytest

from tests.conftest import write_png
from tests.e2e.conftest import edited_params
from tests.projects import make_project
from tests.projects import run as _run

pytestmark = pytest.mark.slow


def _ingest_ran(root, env) -> bool:
    output = _run(["dvc", "repro", "ingest"], root, env)
    assert "Running stage 'source'" in output  # it looks every time
    return "Running stage 'ingest'" in output


def test_a_change_in_the_source_folder_reruns_ingest_and_nothing_else_does(tmp_path):
    source = tmp_path / "photos"
    for label in ("cat", "dog"):
        for i in range(3):
            write_png(source / label / f"{i}.png", 10 * len(label) + i)
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(root, {"ingest": {"source": str(source)}})
    assert _ingest_ran(root, env)
    assert not _ingest_ran(root, env)  # nothing changed
    with edited_params(root, {"train": {"epochs": 1}}):  # a param ingest does not read
        assert not _ingest_ran(root, env)

    write_png(source / "cat" / "new.png", 99)  # added
    assert _ingest_ran(root, env)
    assert (root / "data/raw/cat/new.png").exists()
    (source / "cat" / "new.png").rename(source / "cat" / "renamed.png")  # renamed
    assert _ingest_ran(root, env)
    assert sorted(p.name for p in (root / "data/raw/cat").iterdir()) == [
        "0.png",
        "1.png",
        "2.png",
        "renamed.png",
    ]
    write_png(source / "dog" / "0.png", 1234, size=12)  # changed in place
    assert _ingest_ran(root, env)
    (source / "cat" / "renamed.png").unlink()  # removed
    assert _ingest_ran(root, env)
    assert not (root / "data/raw/cat/renamed.png").exists()
    (source / ".DS_Store").write_bytes(b"junk")  # not an image, not a change
    assert not _ingest_ran(root, env)
