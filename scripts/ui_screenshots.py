"""Screenshots of the MLflow UI comparing two runs, for the docs (`make screenshots`).

Starts `mlflow ui` on the project's tracking store and a headless Chromium on loopback,
drives the browser through the DevTools protocol (clicks included: the comparison's
"Show diff only" switches and the artifact previews only appear after them) and writes:

- `mlflow-compare-params.png`: the two runs' params and metrics that differ;
- `mlflow-compare-curves.png`: validation and training loss per epoch, both runs on one chart;
- `mlflow-compare-confusion.png` and `mlflow-compare-confusion-table.png`: the two confusion
  matrices side by side, as pictures and as text tables (`confusion_matrix.txt`).

Usage: python scripts/ui_screenshots.py [RUN_A RUN_B] [--out docs] (default: the two newest
finished runs of the project's experiment).
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import mlflow
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.common.processes import free_port, wait_for_http
from pipeline.paths import ROOT
from pipeline.tracking import store

WIDTH = 1400


@contextmanager
def background(args: list[str], ready_url: str, log: Path):
    with log.open("w") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_http(ready_url, process)
        yield process
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


class Browser:
    """One Chromium tab, driven through the DevTools protocol."""

    def __init__(self, socket_: aiohttp.ClientWebSocketResponse):
        self.socket = socket_
        self.ids = itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        message_id = next(self.ids)
        await self.socket.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await self.socket.receive_json()
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression: str):
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await self.js(
                f"(() => {{ try {{ return !!({expression}); }} catch {{ return false; }} }})()"
            ):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the MLflow UI did not show {what} within {seconds:.0f} s")

    async def open(self, url: str, height: int) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        await self.call("Page.navigate", url=url)

    async def click(self, selector: str, what: str) -> None:
        await self.until(f"!!document.querySelector({json.dumps(selector)})", what)
        await self.js(f"document.querySelector({json.dumps(selector)}).click()")

    async def close_assistant(self) -> None:
        """The assistant side panel takes a third of the width; close it when it is open."""
        await self.js("document.querySelector('button[aria-label=Close]')?.click()")

    async def shot(
        self, path: Path, top_selector: str, end_selector: str, *, upto=False, last=None
    ) -> None:
        """Save the page from the top of one element to the bottom of another (`upto`: to
        the top of the other, which is left out; `last`: to the lowest bottom of the
        elements this selector matches)."""
        end = "Math.max(...lowest)" if last else "b.top - 8" if upto else "b.bottom + 8"
        box = await self.js(
            f"""(() => {{
                const wide = (e) => {{  // the section around a small header element
                    while (e.getBoundingClientRect().width < 600 && e.parentElement) {{
                        e = e.parentElement;
                    }}
                    return e;
                }};
                const top = wide(document.querySelector({json.dumps(top_selector)}));
                const end = wide(document.querySelector({json.dumps(end_selector)}));
                const a = top.getBoundingClientRect(), b = end.getBoundingClientRect();
                const x = Math.min(a.left, b.left), right = Math.max(a.right, b.right);
                const lowest = [...document.querySelectorAll({json.dumps(last or "none")})]
                    .map((e) => e.getBoundingClientRect().bottom + 8);
                const bottom = {end};
                const height = bottom - a.top + 8;
                return {{x: x - 8, y: a.top - 8, width: right - x + 16, height: height}};
            }})()"""
        )
        await asyncio.sleep(1)  # let charts finish their transitions
        result = await self.call(
            "Page.captureScreenshot",
            format="png",
            clip={**box, "scale": 1},
            captureBeyondViewport=True,
        )
        path.write_bytes(base64.b64decode(result["data"]))
        print(f"wrote {path} ({int(box['width'])}x{int(box['height'])})")


def section(title: str) -> str:
    """A selector for the compare page's collapsible section with this title."""
    return f"[aria-label='collapse {title}']"


async def take(ui: str, debug_port: int, runs: list[str], experiment: str, out: Path) -> None:
    query = (
        "runs="
        + json.dumps(runs, separators=(",", ":"))
        + "&experiments="
        + json.dumps([experiment])
    )
    compare = f"{ui}/#/compare-runs?{urllib.parse.quote(query, safe='=&')}"
    async with aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{debug_port}/json/new?about:blank") as response:
            target = await response.json()
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as sock:
            browser = Browser(sock)
            await browser.call("Page.enable")

            # 1. params and metrics: only the rows that differ
            await browser.open(compare, height=2600)
            await browser.until("document.body.innerText.includes('Show diff only')", "the runs")
            await browser.close_assistant()
            for title in ("Parameters", "Metrics"):
                await browser.click(f"button[aria-label='{title} - Show diff only']", title)
            await asyncio.sleep(2)
            await browser.shot(
                out / "mlflow-compare-params.png",
                section("Run details"),
                section("Artifacts"),
                upto=True,
            )

            # 2. the two confusion matrices, side by side
            await browser.click("[aria-label='confusion_matrix.png']", "confusion_matrix.png")
            await browser.until(  # the previews are blob: images, one per run
                "[...document.querySelectorAll('img[src^=\"blob:\"]')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length >= 2",
                "both confusion matrices",
            )
            previews = "img[src^='blob:'], pre"  # the two runs' previews
            await browser.shot(
                out / "mlflow-compare-confusion.png",
                section("Artifacts"),
                section("Tags"),
                last=previews,
            )
            await browser.click("[aria-label='confusion_matrix.txt']", "confusion_matrix.txt")
            await browser.until(
                "[...document.querySelectorAll('pre')]"
                ".filter(e => e.innerText.startsWith('Confusion matrix')).length >= 2",
                "both confusion tables",
            )
            await browser.shot(
                out / "mlflow-compare-confusion-table.png",
                section("Artifacts"),
                section("Tags"),
                last=previews,
            )

            # 3. loss curves of both runs on one chart
            metric = {
                "runs": json.dumps(runs),
                "metric": json.dumps("val_loss"),
                "experiments": json.dumps([experiment]),
                "plot_metric_keys": json.dumps(["val_loss", "loss"]),
                "plot_layout": "{}",
                "x_axis": "step",
                "y_axis_scale": "log",
                "line_smoothness": "1",
                "show_point": "true",
                "deselected_curves": "[]",
                "last_linear_y_axis_range": "[]",
            }
            url = f"{ui}/#/metric?" + "&".join(
                f"{k}={urllib.parse.quote(v)}" for k, v in metric.items()
            )
            await browser.open(url, height=1000)
            await browser.until(
                "!!document.querySelector('.js-plotly-plot .scatterlayer path')", "the curves"
            )
            await browser.close_assistant()
            await asyncio.sleep(2)
            await browser.shot(out / "mlflow-compare-curves.png", "h2, h1", "table")


def newest_runs(client: MlflowClient) -> tuple[list[str], str]:
    experiment = client.get_experiment_by_name(store.DEFAULT_EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"no experiment {store.DEFAULT_EXPERIMENT!r}: run `make run` first")
    runs = client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'FINISHED'",
        order_by=["start_time DESC"],
        max_results=2,
    )
    if len(runs) < 2:
        raise SystemExit(
            "need two finished runs to compare: run `make run` and one `dvc exp run -S ...`"
        )
    return [r.info.run_id for r in runs], experiment.experiment_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs", nargs="*", help="two run ids (default: the two newest finished runs)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
    )
    args = parser.parse_args(argv)
    if not args.chromium:
        raise SystemExit(
            "no Chromium found: install Debian's `chromium` package or pass --chromium"
        )

    store.configure()
    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    if args.runs:
        if len(args.runs) != 2:
            parser.error("give two run ids, or none for the two newest")
        experiment = client.get_run(args.runs[0]).info.experiment_id
        runs = args.runs
    else:
        runs, experiment = newest_runs(client)
    args.out.mkdir(parents=True, exist_ok=True)

    ui_port, debug_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        mlflow_ui = [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(ui_port),
            "--workers",
            "1",
        ]
        browser = [
            args.chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--remote-debugging-port={debug_port}",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={logs / 'profile'}",
            "--hide-scrollbars",
            # nothing leaves the machine: every host but loopback is unreachable
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "about:blank",
        ]
        with (
            background(mlflow_ui, f"http://127.0.0.1:{ui_port}/health", logs / "ui.log"),
            background(
                browser, f"http://127.0.0.1:{debug_port}/json/version", logs / "chromium.log"
            ),
        ):
            asyncio.run(take(f"http://127.0.0.1:{ui_port}", debug_port, runs, experiment, args.out))


if __name__ == "__main__":
    main()
