"""`make serve`: a model over HTTP on 127.0.0.1, through MLflow's own scoring app (the same
routes, formats and answers as `mlflow models serve`) with the request body bounded: a body
over `--max-request-mb` is refused with HTTP 413, a body without a length (chunked) with 411,
each read and dropped as it comes (so a client still sending hears the answer rather than a
reset connection): no request makes the server hold more than that bound in memory."""

import argparse
import json
import logging

import mlflow
import uvicorn
from mlflow.pyfunc import scoring_server
from starlette.responses import Response

from pipeline.common.log import run_stage
from pipeline.tracking import store

log = logging.getLogger(__name__)

MAX_REQUEST_MB = 100  # the default bound on one request's body


def refusal(status: int, message: str) -> Response:
    body = json.dumps({"error_code": "BAD_REQUEST", "message": message})
    return Response(body, status_code=status, media_type="application/json")


DRAIN_BYTES = 1 << 30  # read and dropped from a refused body, so the client hears the 413


async def drain(request) -> None:
    """Read a refused body chunk by chunk, keeping none of it (a client still sending would
    otherwise see the connection reset instead of the answer), up to DRAIN_BYTES."""
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > DRAIN_BYTES:
            break


def bounded_app(model_uri: str, max_bytes: int):
    """MLflow's scoring app for `model_uri`, behind a check of each request's declared size."""
    app = scoring_server.init(mlflow.pyfunc.load_model(model_uri))

    @app.middleware("http")
    async def bound_the_body(request, call_next):
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None:
                await drain(request)
                return refusal(411, "send the request with a Content-Length (no chunked body)")
            if not length.isdigit() or int(length) > max_bytes:
                await drain(request)
                return refusal(
                    413, f"the request body has {length} bytes; at most {max_bytes:,} are taken"
                )
        return await call_next(request)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", required=True, help="models:/<name>@champion, runs:/...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_MB)
    args = parser.parse_args()
    store.configure()
    app = bounded_app(args.model_uri, int(args.max_request_mb * 2**20))
    log.info(
        f"serving {args.model_uri} on http://{args.host}:{args.port} (request bodies up "
        f"to {args.max_request_mb:g} MB)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_stage("serve", main)
