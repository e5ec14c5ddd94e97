"""Running other programs: a command whose failure is named, and servers on 127.0.0.1."""

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pipeline.common.log import PipelineError


class CommandError(PipelineError):
    """A command exited non-zero; the message holds the command and what it printed."""


def run_command(
    args: list[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    with_stderr: bool = False,
) -> str:
    """The command's standard output (`with_stderr`: and its standard error after it, where
    the pipeline logs); a non-zero exit raises CommandError with both outputs."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise CommandError(
            f"`{' '.join(map(str, args))}` failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}".rstrip()
        )
    return result.stdout + result.stderr if with_stderr else result.stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    """Return once `url` answers; fail if `process` (the server) exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing answered at {url} within {seconds:.0f} s")
