"""Every path the pipeline reads or writes, anchored at the project root.

Stages talk to each other only through these files, and `dvc.yaml` declares the same paths.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PARAMS_FILE = ROOT / "params.yaml"

DATA_DIR = ROOT / "data"
SOURCE_FILE = DATA_DIR / "source.json"  # the fingerprint of what ingest.source names
RAW_DIR = DATA_DIR / "raw"
# ingest's listing of data/raw (path, label, problem, given_split): what validate accounts
# every file against, without DVC checking the folder's files once more
RAW_LISTING = DATA_DIR / "raw_listing.csv"
# label fixes (path, label or drop, reason), committed; the split applies them
RELABELS_FILE = DATA_DIR / "relabels.csv"
SPLIT_DIR = DATA_DIR / "split"
SPLIT_MANIFEST = SPLIT_DIR / "manifest.csv"
LABELS_FILE = SPLIT_DIR / "labels.json"

MODELS_DIR = ROOT / "models"
MODEL_FILE = MODELS_DIR / "model.keras"
RUN_FILE = MODELS_DIR / "mlflow_run.json"
MODEL_LABELS_FILE = MODELS_DIR / "labels.json"  # the classes the model's outputs stand for
# the model in portable formats (serving.formats.FILES), with a copy of labels.json
EXPORT_DIR = MODELS_DIR / "export"
EXPORT_SIGNATURE = EXPORT_DIR / "signature.json"  # input shape and type, what the output means
MODEL_CARD = MODELS_DIR / "model_card.md"

REPORTS_DIR = ROOT / "reports"
VALIDATE_DIR = REPORTS_DIR / "validate"
VALIDATION_FILE = VALIDATE_DIR / "validation.json"
NEAR_DUPLICATES_FILE = VALIDATE_DIR / "near_duplicates.csv"
NEAR_DUPLICATES_PNG = VALIDATE_DIR / "near_duplicates.png"  # a sample of pairs, both kinds
DATA_DOCS_DIR = VALIDATE_DIR / "data_docs"
TRAIN_REPORTS_DIR = REPORTS_DIR / "train"
HISTORY_FILE = TRAIN_REPORTS_DIR / "history.csv"
HISTORY_PNG = TRAIN_REPORTS_DIR / "history.png"
PHASES_FILE = TRAIN_REPORTS_DIR / "phases.csv"  # one row per training phase
TRAIN_METRICS_FILE = TRAIN_REPORTS_DIR / "metrics.json"

# Working state outside DVC's outputs (DVC deletes those before a stage runs).
RESUME_DIR = ROOT / ".resume" / "train"  # backup of an unfinished training
CACHE_DIR = ROOT / ".cache" / "tf-data"  # decoded images, when train.cache is on disk
WORKING_COPIES_DIR = ROOT / ".cache" / "working-copies"  # the split's, while it runs
MODELS_CACHE_DIR = ROOT / ".cache" / "mlflow-models"  # models of MLflow URIs, as local files
AUDIT_DIR = REPORTS_DIR / "audit"
OUT_OF_SAMPLE_CSV = AUDIT_DIR / "out_of_sample.csv"  # every placed image's fold and probabilities
FOLDS_CSV = AUDIT_DIR / "folds.csv"  # per fold: images held out, accuracy, seconds
SUSPECTS_CSV = AUDIT_DIR / "suspects.csv"  # the label issues, most likely mistakes first
SUSPECTS_PNG = AUDIT_DIR / "suspects.png"
IMAGE_ISSUES_CSV = AUDIT_DIR / "image_issues.csv"  # images a cleanvision check flags
IMAGE_ISSUE_COUNTS_CSV = AUDIT_DIR / "image_issue_counts.csv"  # per class and check
DUPLICATE_SETS_CSV = AUDIT_DIR / "duplicate_sets.csv"
REVIEW_PAGE = AUDIT_DIR / "review.html"
AUDIT_METRICS = AUDIT_DIR / "metrics.json"
EVALUATE_DIR = REPORTS_DIR / "evaluate"
METRICS_FILE = EVALUATE_DIR / "metrics.json"
PREDICTIONS_FILE = EVALUATE_DIR / "predictions.csv"
CONFUSION_CSV = EVALUATE_DIR / "confusion_matrix.csv"
CONFUSION_PNG = EVALUATE_DIR / "confusion_matrix.png"
ABUNDANCE_CSV = EVALUATE_DIR / "class_abundance.csv"
ABUNDANCE_PNG = EVALUATE_DIR / "class_abundance.png"
PER_CLASS_CSV = EVALUATE_DIR / "per_class_metrics.csv"
CONFUSION_NORMALIZED_CSV = EVALUATE_DIR / "confusion_matrix_normalized.csv"
CONFUSION_JSON = EVALUATE_DIR / "confusion_matrix.json"
CALIBRATION_CSV = EVALUATE_DIR / "calibration.csv"
RELIABILITY_PNG = EVALUATE_DIR / "reliability_diagram.png"
ERRORS_CSV = EVALUATE_DIR / "errors.csv"
ERROR_GALLERY_PNG = EVALUATE_DIR / "error_gallery.png"
EVALUATE_REPORT = EVALUATE_DIR / "report.html"
EXPORT_REPORTS_DIR = REPORTS_DIR / "export"
PARITY_CSV = EXPORT_REPORTS_DIR / "parity.csv"  # each format against the Keras model
EXPORT_METRICS = EXPORT_REPORTS_DIR / "metrics.json"
VISUALIZE_DIR = REPORTS_DIR / "visualize"
VISUALIZE_PICTURES = VISUALIZE_DIR / "pictures"
VISUALIZE_REPORT = VISUALIZE_DIR / "report.html"
VISUALIZE_METRICS = VISUALIZE_DIR / "metrics.json"
VISUALIZE_CHECK_CSV = VISUALIZE_DIR / "forward_check.csv"  # NumPy against Keras, per layer
WEIGHT_SHARING_CSV = VISUALIZE_DIR / "weight_sharing.csv"
COMPARE_FILE = REPORTS_DIR / "compare.md"
CI_REPORT_DIR = REPORTS_DIR / "ci"  # `make report`: a change against the main branch


def project_root(root: Path) -> Path:
    """The project whose copy `root` is when DVC runs an experiment in a temporary folder
    (`dvc exp run --temp`, `dvc queue start`: `<project>/.dvc/tmp/exps/<folder>/`), else
    `root` itself."""
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


# The embedded MLflow store: SQLite for runs, a folder beside it for artifacts. Experiments
# DVC runs in a temporary copy record into the project's own store, not into the copy.
MLFLOW_DB = project_root(ROOT) / "mlflow.db"
MLFLOW_ARTIFACTS = project_root(ROOT) / "mlartifacts"


def _tools_dir() -> Path:
    """Set-up's tools: beside the virtual environment that runs us, so that temporary copies
    of the project (`dvc exp run --temp`, queued experiments, tests) find them too."""
    beside_environment = Path(sys.prefix).parent / ".tools"
    return beside_environment if beside_environment.is_dir() else ROOT / ".tools"


# Front-end libraries for HTML reports that must render offline, fetched at set-up time.
WEB_ASSETS_DIR = _tools_dir() / "web"
DVC_PLOTS_TEMPLATE = WEB_ASSETS_DIR / "dvc-plots.html"

SPLITS = ("train", "validation", "test")
