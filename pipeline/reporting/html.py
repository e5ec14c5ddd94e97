"""The evaluation as one self-contained HTML page: every table and picture inline (pictures as
data URIs, styles in the page), so it opens offline, from an MLflow artifact or an e-mail.
"""

import base64
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from pipeline.common.files import staged_file

# Files beside the code that this module reads (dvc.yaml declares them with it; checked).
PACKAGE_DATA = ("templates",)
TEMPLATES = Path(__file__).parent / PACKAGE_DATA[0]
ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def style() -> Markup:
    """The pages' shared style sheet, inline."""
    return Markup(
        "<style>\n" + (TEMPLATES / "style.css").read_text(encoding="utf-8") + "</style>\n"
    )


def write_page(html: str, path: Path) -> None:
    """A report page, replaced atomically (a crash leaves the previous page or none)."""
    with staged_file(path) as tmp:
        tmp.write_text(html, encoding="utf-8")


def data_uri(path: Path) -> str:
    """A PNG as a data URI, so the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _table(frame: pd.DataFrame, percent: tuple[str, ...] = (), digits: int = 4) -> str:
    shown = frame.copy()
    for column in shown.columns:
        if column in percent:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
        elif pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    return shown.to_html(index=False, border=0, escape=True)


def _per_class_with_averages(per_class: pd.DataFrame, metrics: dict) -> str:
    html = _table(per_class)
    rows = ""
    for average in ("macro", "weighted"):
        cells = "".join(
            f"<td>{metrics[f'{average}_{m}']:.4f}</td>" for m in ("precision", "recall", "f1")
        )
        rows += (
            f'<tr class="average"><td>{average} average</td>{cells}'
            f"<td>{int(per_class['support'].sum())}</td></tr>"
        )
    return html.replace("</tbody>", rows + "</tbody>")


def evaluation_report(
    *,
    metrics: dict,
    per_class: pd.DataFrame,
    extremes: dict[str, list[dict]],
    calibration: pd.DataFrame,
    errors: pd.DataFrame,
    pictures: dict[str, Path],
    run_id: str,
    model_file: str,
    top_k: int,
    confusion: pd.DataFrame,
    mistakes: int,
) -> str:
    """The page's HTML. Pictures that do not exist (a training history, say) are left out."""
    headline = [
        ("test accuracy", f"{metrics['accuracy']:.2%}"),
        ("SVC baseline accuracy", f"{metrics['baseline_svc_accuracy']:.2%}"),
        ("macro F1", f"{metrics['macro_f1']:.4f}"),
        ("weighted F1", f"{metrics['weighted_f1']:.4f}"),
    ]
    if f"top_{top_k}_accuracy" in metrics:
        headline.append((f"top-{top_k} accuracy", f"{metrics[f'top_{top_k}_accuracy']:.2%}"))
    headline += [
        ("log loss", f"{metrics['log_loss']:.4f}"),
        ("expected calibration error", f"{metrics['expected_calibration_error']:.4f}"),
    ]
    shares = ("observed_share", "predicted_share", "difference")
    return ENVIRONMENT.get_template("evaluation.html.j2").render(
        style=style(),
        metrics=metrics,
        headline=headline,
        per_class=per_class,
        errors=errors,
        mistakes=mistakes,
        run_id=run_id,
        model_file=model_file,
        pictures={name: data_uri(path) for name, path in pictures.items() if path.exists()},
        confusion_table=Markup(confusion.to_html(border=0)),
        over_table=Markup(
            _table(pd.DataFrame(extremes["over_predicted"], columns=["class", *shares]), shares)
        ),
        under_table=Markup(
            _table(pd.DataFrame(extremes["under_predicted"], columns=["class", *shares]), shares)
        ),
        per_class_table=Markup(_per_class_with_averages(per_class, metrics)),
        calibration_table=Markup(_table(calibration, ("accuracy", "mean_confidence"))),
        errors_table=Markup(_table(errors, ("confidence",))),
    )


def visualization_report(
    *,
    model_file: str,
    run_id: str,
    metrics: dict,
    check: pd.DataFrame,
    sharing: pd.DataFrame,
    pictures: dict[str, Path],
    unsupported: str,
    tolerance: float,
) -> str:
    """The `visualize` stage's page: every picture inline, with what it shows."""
    shared = metrics.get("weight_sharing", {})
    cards = []
    if shared:
        cards = [
            ("parameters in this CNN", f"{shared['cnn_params']:,}"),
            ("fully connected, same widths", f"{shared['fully_connected_params']:,}"),
            ("ratio, whole network", f"{shared['fully_connected_ratio']:,.0f}x"),
            ("ratio, convolutional layers", f"{shared['conv_fully_connected_ratio']:,.0f}x"),
        ]
    uris = {name: data_uri(path) for name, path in pictures.items()}
    return ENVIRONMENT.get_template("visualization.html.j2").render(
        style=style(),
        model_file=model_file,
        run_id=run_id,
        metrics=metrics,
        unsupported=unsupported,
        tolerance=tolerance,
        pictures=uris,
        feature_maps=[
            (f"class {name.removeprefix('feature_maps ')}", uri)
            for name, uri in uris.items()
            if name.startswith("feature_maps ")
        ],
        check_table=Markup(check.to_html(index=False, border=0, float_format="{:.3g}".format))
        if len(check)
        else "",
        sharing_table=Markup(sharing.to_html(index=False, border=0)) if len(sharing) else "",
        sharing_cards=cards,
    )
