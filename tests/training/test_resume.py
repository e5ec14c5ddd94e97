"""training.resume: the history after a kill, and stale backups."""

import pandas as pd

from pipeline.training.resume import history_table, prepare_resume


def test_history_counts_an_epoch_redone_after_a_kill_once(tmp_path):
    path = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [0, 1, 1, 2], "loss": [3.0, 2.0, 1.9, 1.0]}).to_csv(path, index=False)
    table = history_table(path)
    assert table["epoch"].tolist() == [1, 2, 3]
    assert table["loss"].tolist() == [3.0, 1.9, 1.0]


def test_a_stale_backup_is_discarded(tmp_path):
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / "run.json").write_text('{"run_id": "abc", "fingerprint": "old"}')
    (folder / "junk").write_text("x")
    assert prepare_resume(folder, "new") is None
    assert list(folder.iterdir()) == []
    (folder / "run.json").write_text('{"run_id": "abc", "fingerprint": "new"}')
    assert prepare_resume(folder, "new") == "abc"
