"""The small files stages hand each other, each with one typed reader and one writer.

- labels (`data/split/labels.json`, written by split; `models/labels.json`, written by train
  beside the model): the class order the model's outputs stand for, and the colour the split
  put behind transparent pixels (prediction converts new images the same way);
- the run record (`models/mlflow_run.json`, written by train): the MLflow run that holds
  everything about the model, which evaluate and visualize add to;
- the validation result (`reports/validate/validation.json`, written by validate): the gate
  train waits for.

The split manifest, the table of every file, has its reader and writer in
`pipeline.imagedata.manifest`.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.common.files import read_json, write_json
from pipeline.common.log import PipelineError

WHITE = (255, 255, 255)
VIEW_KINDS = ("none", "flip", "shift", "flip_shift")  # serving.views
DEFAULT_MAX_PIXELS = 100_000_000  # split.max_image_pixels where no params are at hand


class ContractError(PipelineError):
    """A file another stage should have written is missing or does not hold what it should."""


def _read(path: Path, writer: str) -> dict:
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ContractError(f"{path} is missing: run `dvc repro {writer}`") from None
    except ValueError as error:
        raise ContractError(
            f"{path} is not valid JSON ({error}): run `dvc repro {writer}`"
        ) from None
    if not isinstance(data, dict):
        raise ContractError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _field(data: dict, key: str, kind: type, path: Path) -> object:
    if not isinstance(data.get(key), kind):
        raise ContractError(f"{path}: '{key}' is missing or not a {kind.__name__}")
    return data[key]


@dataclass(frozen=True)
class Labels:
    classes: list[str]
    background: tuple[int, int, int] = WHITE
    # the split's split.max_image_pixels: predict and serving refuse larger images alike
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # the split's split.max_image_size and split.jpeg_quality: predict and serving store a new
    # image at its working size as the split did (None: a file from before, stored as it is)
    max_image_size: int | None = None
    jpeg_quality: int = 90
    # models/labels.json only (train's train.test_time_views): the views the deployed model
    # averages its probabilities over (serving.views)
    test_time_views: str = "none"


def write_labels(path: Path, labels: Labels) -> None:
    write_json(
        path,
        {
            "classes": list(labels.classes),
            "background": list(labels.background),
            "max_image_pixels": labels.max_image_pixels,
            "max_image_size": labels.max_image_size,
            "jpeg_quality": labels.jpeg_quality,
            "test_time_views": labels.test_time_views,
        },
    )


def _optional_whole(data: dict, key: str, default: int | None, path: Path) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ContractError(f"{path}: '{key}' must be a positive whole number")
    return value


def read_labels(path: Path, writer: str = "split") -> Labels:
    """The class names in output order; a file from before the background (or the pixel
    limit, or the working size) was recorded means white (100 megapixels, stored as it is),
    the defaults then."""
    data = _read(path, writer)
    classes = _field(data, "classes", list, path)
    if not all(isinstance(name, str) for name in classes):
        raise ContractError(f"{path}: every class name must be a string")
    background = data.get("background", list(WHITE))
    if len(background) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in background):
        raise ContractError(f"{path}: 'background' must be three values 0-255, got {background}")
    limit = _optional_whole(data, "max_image_pixels", DEFAULT_MAX_PIXELS, path)
    if limit is None:
        raise ContractError(f"{path}: 'max_image_pixels' must be a positive whole number")
    side = _optional_whole(data, "max_image_size", None, path)
    quality = _optional_whole(data, "jpeg_quality", 90, path) or 90
    views = data.get("test_time_views", "none")
    if views not in VIEW_KINDS:
        raise ContractError(f"{path}: 'test_time_views' must be one of {', '.join(VIEW_KINDS)}")
    return Labels(list(classes), tuple(background), limit, side, quality, views)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str


def write_run_record(path: Path, record: RunRecord) -> None:
    write_json(path, asdict(record))


def read_run_record(path: Path) -> RunRecord:
    data = _read(path, "train")
    return RunRecord(
        str(_field(data, "run_id", str, path)), str(_field(data, "experiment_id", str, path))
    )


def expectation_name(outcome: dict) -> str:
    """One expectation's outcome named `table.column`, as `reported` and the run's tags name
    it."""
    return f"{outcome['table']}.{outcome['kwargs'].get('column', '')}"


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    evaluated: int  # expectations checked
    failed: int
    images: int
    near_duplicates: int
    results: list[dict] = field(default_factory=list)  # one outcome per expectation
    # failed expectations that a param makes a report, not a stop (class imbalance, leaks
    # across splits the user gave), named `table.column`
    reported: list[str] = field(default_factory=list)

    def failed_names(self) -> list[str]:
        """The expectations that failed the gate (not those a param makes a report only)."""
        return [
            expectation_name(o)
            for o in self.results
            if not o.get("success", True) and expectation_name(o) not in self.reported
        ]

    def tags(self) -> dict[str, str]:
        """The outcome and counts, as the tags that tie a model to the check it passed."""
        return {
            "validation.status": "passed" if self.success else "failed",
            "validation.expectations": str(self.evaluated),
            "validation.failed": str(self.failed),
            "validation.near_duplicates": str(self.near_duplicates),
            "validation.reported": ", ".join(self.reported) or "none",
        }


def write_validation(path: Path, result: ValidationResult) -> None:
    write_json(path, asdict(result))


def read_validation(path: Path) -> ValidationResult:
    data = _read(path, "validate")
    return ValidationResult(
        success=bool(_field(data, "success", bool, path)),
        evaluated=int(_field(data, "evaluated", int, path)),
        failed=int(_field(data, "failed", int, path)),
        images=int(data.get("images", 0)),
        near_duplicates=int(data.get("near_duplicates", 0)),
        results=list(data.get("results", [])),
        reported=[str(name) for name in data.get("reported", [])],
    )
