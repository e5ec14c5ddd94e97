"""common.processes: a failed command is named with what it printed; servers are waited for."""

import subprocess
import sys

import pytest

from pipeline.common.processes import CommandError, free_port, run_command, wait_for_http

SCRIPT = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"


def test_a_command_s_output_and_its_failure(tmp_path):
    assert run_command([sys.executable, "-c", "print('hello')"], tmp_path) == "hello\n"
    with pytest.raises(CommandError, match=r"failed \(exit 3\):\nout\nerr"):
        run_command([sys.executable, "-c", SCRIPT], tmp_path)


def test_waiting_for_a_server_that_exits_says_so(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(4)"])
    process.wait()
    url = f"http://127.0.0.1:{free_port()}/ping"
    with pytest.raises(RuntimeError, match="exited with 4 before"):
        wait_for_http(url, process, seconds=5)


def test_waiting_for_a_server_that_never_answers_times_out():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(TimeoutError, match="nothing answered"):
            wait_for_http(f"http://127.0.0.1:{free_port()}/ping", process, seconds=1)
    finally:
        process.kill()
        process.wait()
