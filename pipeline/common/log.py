"""One log format for every stage and tool, and one way for an expected failure to end one.

Stages and libraries log through `logging` (`log = logging.getLogger(__name__)`); a stage's
`main` runs under `run_stage`, which sets the format, takes the level from the environment
variable `PIPELINE_LOG_LEVEL` (DEBUG, INFO, WARNING, ERROR; default INFO) and turns an
expected failure (`PipelineError`: a bad param, a missing file, data that fails a check) into
its one message and exit status 1, without a traceback. Anything else keeps its traceback.
"""

import logging
import os
import sys
from collections.abc import Callable

LEVEL_VARIABLE = "PIPELINE_LOG_LEVEL"


class PipelineError(Exception):
    """An expected failure whose message says what is wrong and what to do."""


class StageFormatter(logging.Formatter):
    """`<stage>: <message>`; warnings and errors say so after the stage's name."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        message = super().format(record)
        return f"{self.stage}: {level}{message}"


def log_level() -> int:
    """The level `PIPELINE_LOG_LEVEL` names (a name or a number); INFO when unset."""
    value = os.environ.get(LEVEL_VARIABLE, "INFO").strip().upper()
    level = int(value) if value.isdigit() else logging.getLevelName(value)
    if not isinstance(level, int):
        raise PipelineError(
            f"{LEVEL_VARIABLE}={value!r} is not a log level (DEBUG, INFO, WARNING, ERROR)"
        )
    return level


# The pipeline's loggers; a module run as `python -m pipeline.<stage>` logs as `__main__`.
LOGGERS = ("pipeline", "__main__")


def setup_logging(stage: str) -> None:
    """The pipeline's loggers write `<stage>: <message>` lines to standard error (other
    libraries' loggers are left as they are)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StageFormatter(stage))
    level = log_level()
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level)


def run_stage(stage: str, main: Callable[[], object]) -> None:
    """Run a stage's or tool's `main`; an expected failure exits 1 with its message alone."""
    try:
        setup_logging(stage)
        status = main()
    except PipelineError as error:
        logging.getLogger("pipeline").error("%s", error)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
