"""The evaluation as one self-contained HTML page: every table and picture inline (pictures as
data URIs, styles in the page), so it opens offline, from an MLflow artifact or an e-mail.
"""

import base64
import io
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup
from PIL import Image

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
    if "accuracy_without_suspects" in metrics:
        headline.append(
            (
                f"accuracy without the {metrics['test_suspects']} label suspects",
                f"{metrics['accuracy_without_suspects']:.2%}",
            )
        )
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


THUMBNAIL = 96  # pixels a side, at most, of a suspect's picture on the review page


def thumbnail_uri(path: Path) -> str:
    """An image file as a small PNG data URI (kept at its own size when smaller: the page
    scales it up without smoothing)."""
    with Image.open(path) as image:
        image = image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode)
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def review_report(
    *,
    dataset: str,
    metrics: dict,
    suspects: pd.DataFrame,
    pairs: pd.DataFrame,
    checks: pd.DataFrame,
    conflicts: pd.DataFrame,
    left_out: pd.DataFrame,
    root: Path,
) -> str:
    """The audit's review page: the suspects (`suspects`, already cut to the page's size, with
    the `reason` their relabels.csv rows give) as thumbnails grouped by class pair, each with
    the choice that writes its row."""
    headline = [
        ("images audited", f"{metrics['images']:,}"),
        ("suspects", f"{metrics['suspects']:,} ({metrics['suspect_share']:.1%})"),
        ("out-of-sample accuracy", f"{metrics['cross_fit_accuracy']:.4f}"),
        ("cross-fitting time", f"{metrics['cross_fit_seconds']:.0f} s"),
    ]
    cards = suspects.assign(thumbnail=[thumbnail_uri(root / path) for path in suspects["path"]])
    groups = [
        {"given": given, "suggested": suggested, "rows": part.to_dict("records")}
        for (given, suggested), part in cards.groupby(["given_label", "suggested_label"])
    ]
    groups.sort(key=lambda group: (-len(group["rows"]), group["rows"][0]["rank"]))
    example = suspects["relabel"].iloc[0] if len(suspects) else "path,label,reason"
    return ENVIRONMENT.get_template("review.html.j2").render(
        style=style(),
        dataset=dataset,
        metrics=metrics,
        headline=headline,
        shown=len(suspects),
        example=example,
        groups=groups,
        pairs_table=Markup(_table(pairs)),
        pair_count=len(pairs),
        checks_table=Markup(_table(checks)) if len(checks) else "",
        conflicts_table=Markup(_table(conflicts)) if len(conflicts) else "",
        left_out_table=Markup(_table(left_out)) if len(left_out) else "",
    )
