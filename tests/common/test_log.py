"""common.log: one format for every stage, the level from the environment, and expected
failures that end a stage with their message alone."""

import logging

import pytest

from pipeline.common.log import PipelineError, log_level, run_stage, setup_logging


def test_lines_name_the_stage_and_say_when_they_warn(capsys, monkeypatch):
    monkeypatch.delenv("PIPELINE_LOG_LEVEL", raising=False)
    setup_logging("train")
    log = logging.getLogger("pipeline.training.devices")
    log.info("on the CPU")
    log.warning("no GPU")
    log.debug("hidden")
    logging.getLogger("__main__").info("done")  # the stage module itself, run with -m
    assert capsys.readouterr().err == "train: on the CPU\ntrain: warning: no GPU\ntrain: done\n"


@pytest.mark.parametrize(("value", "level"), [("debug", 10), ("WARNING", 30), ("40", 40)])
def test_the_level_comes_from_the_environment(monkeypatch, value, level):
    monkeypatch.setenv("PIPELINE_LOG_LEVEL", value)
    assert log_level() == level


def test_an_unknown_level_is_named(monkeypatch):
    monkeypatch.setenv("PIPELINE_LOG_LEVEL", "loud")
    with pytest.raises(PipelineError, match="PIPELINE_LOG_LEVEL='LOUD' is not a log level"):
        log_level()


def test_an_expected_failure_exits_1_with_its_message_alone(capsys):
    def main() -> None:
        raise PipelineError("models/model.keras is missing: run `dvc repro train`")

    with pytest.raises(SystemExit) as stop:
        run_stage("evaluate", main)
    assert stop.value.code == 1
    assert capsys.readouterr().err == (
        "evaluate: error: models/model.keras is missing: run `dvc repro train`\n"
    )


def test_an_unexpected_error_keeps_its_traceback():
    def main() -> None:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_stage("evaluate", main)
