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
