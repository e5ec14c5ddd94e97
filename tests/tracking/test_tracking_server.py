"""The pipeline against a real MLflow server on PostgreSQL, as a team runs it: the project's
script installs and starts both on 127.0.0.1 (basic authentication on), two pipelines run at
once against it, and everything is checked through the server's REST API."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pipeline.common.processes import free_port
from pipeline.paths import ROOT
from tests.projects import make_project

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "tracking-server.sh"
USER, PASSWORD = "pipeline-admin", "not-a-real-secret-1"
# the database password, with what breaks naive quoting: in SQL ('), in a URL (@ : /), in
# libpq's password file (: \\)
DB_PASSWORD = "it's@not:a\\real/secret"
STATE: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("server")
    env = {
        **os.environ,
        "SERVER_DIR": str(state),
        "MLFLOW_SERVER_PORT": str(free_port()),
        "POSTGRES_PORT": str(free_port()),
        "MLFLOW_AUTH": "1",
        "MLFLOW_TRACKING_USERNAME": USER,
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "MLFLOW_DB_PASSWORD": DB_PASSWORD,
        "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
    }
    STATE["dir"] = state
    STATE["ports"] = (int(env["MLFLOW_SERVER_PORT"]), int(env["POSTGRES_PORT"]))
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        [uri] = [
            line.split("=", 1)[1]
            for line in started.stdout.splitlines()
            if line.startswith("export MLFLOW_TRACKING_URI=")
        ]
        assert uri.startswith("http://127.0.0.1:")
        yield uri
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
        logs = (state / "mlflow.log").read_text() if (state / "mlflow.log").exists() else ""
        assert "Traceback" not in logs, logs[-3000:]


def listening(port: int) -> set[str]:
    """The addresses a socket listens on at `port` (IPv4 and IPv6), from the kernel's tables."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:  # IPv4, little-endian
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:  # any IPv6 listener, named by its raw form
                    found.add(f"ipv6:{address}")
    return found


def test_the_server_and_its_database_listen_on_loopback_only(server):
    """Not only the URI the script prints: the listening sockets themselves (BAD_INPUT 18)."""
    mlflow_port, postgres_port = STATE["ports"]
    assert listening(mlflow_port) == {"127.0.0.1"}
    assert listening(postgres_port) == {"127.0.0.1"}


def _api(uri: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_two_pipelines_at_once_against_the_server_are_recorded_in_full(server, tmp_path, prepared):
    from tests.conftest import FLOAT_EXPORTS, SHRUNK

    processes = {}
    for name, epochs in (("first", 1), ("second", 2)):
        root = tmp_path / name
        root.mkdir()
        overrides = {**SHRUNK, **FLOAT_EXPORTS, "train": {**SHRUNK["train"], "epochs": epochs}}
        env = make_project(root, overrides, prepared)  # the data stages are done
        env |= {
            "MLFLOW_TRACKING_URI": server,
            "MLFLOW_TRACKING_USERNAME": USER,
            "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        }
        process = subprocess.Popen(
            ["dvc", "repro"],
            cwd=root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        processes[name] = (root, process)
    for _, process in processes.values():
        output = process.communicate(timeout=1200)[0]
        assert process.returncode == 0, output[-4000:]

    with pytest.raises(urllib.error.HTTPError) as refused:  # nothing without credentials
        _api(server, "experiments/get-by-name?experiment_name=image-classification", auth=False)
    assert refused.value.code == 401

    experiment = _api(server, "experiments/get-by-name?experiment_name=image-classification")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = _api(server, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
    assert len(runs) == 2
    by_id = {run["info"]["run_id"]: run for run in runs}
    for name, epochs in (("first", 1), ("second", 2)):
        root, _ = processes[name]
        run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
        run = by_id[run_id]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["train.epochs"] == str(epochs)
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        report = json.loads((root / "reports/evaluate/metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(report["accuracy"])
        assert "weight_sharing_cnn_params" in metrics
        query = urllib.parse.urlencode({"run_id": run_id, "metric_key": "val_loss"})
        history = _api(server, f"metrics/get-history?{query}")["metrics"]
        assert sorted(m["step"] for m in history) == list(range(1, epochs + 1))
        query = urllib.parse.urlencode({"run_id": run_id, "path": "reports/evaluate"})
        files = {f["path"] for f in _api(server, f"artifacts/list?{query}")["files"]}
        assert "reports/evaluate/report.html" in files
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert len(tags["git.commit"]) == 40 and "env.mlflow" in tags
    query = urllib.parse.urlencode({"filter": "name='image-classifier-digits'"})
    versions = _api(server, f"model-versions/search?{query}")["model_versions"]
    assert sorted(v["run_id"] for v in versions) == sorted(by_id)


def test_the_database_password_is_in_no_process_arguments_and_never_committed(server):
    """The server connects with the password (it answers, so PostgreSQL took it, quotes and
    all), and yet no process on the machine shows it in its arguments; the folder holding
    it and the auth config is ignored by git wherever it is."""
    assert _api(server, "experiments/search", {"max_results": 1}) is not None
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "mlflow server" in processes or "mlflow.server" in processes
    assert DB_PASSWORD not in processes and "not:a" not in processes
    state = STATE["dir"]
    assert (state / ".gitignore").read_text() == "*\n"
    assert (state / "pgpass").stat().st_mode & 0o777 == 0o600
    assert (state / "auth.ini").stat().st_mode & 0o077 == 0
