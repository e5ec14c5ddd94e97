"""The evaluation as one self-contained HTML page: every table and picture inline (pictures as
data URIs, styles in the page), so it opens offline, from an MLflow artifact or an e-mail.
"""

import base64
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

STYLE = """<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
         color: #1f2328; background: #f6f8fa; }
  header { background: #24292f; color: #fff; padding: 1.2rem 2rem; }
  header h1 { margin: 0 0 .3rem 0; font-size: 1.5rem; }
  header p { margin: 0; color: #c9d1d9; font-size: .9rem; }
  main { max-width: 1100px; margin: 0 auto; padding: 1rem 2rem 3rem; }
  section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
            padding: 1rem 1.5rem; margin: 1rem 0; }
  h2 { font-size: 1.2rem; margin-top: .2rem; border-bottom: 1px solid #d8dee4;
       padding-bottom: .3rem; }
  .cards { display: flex; flex-wrap: wrap; gap: .8rem; }
  .card { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1rem; min-width: 9rem; }
  .card .value { font-size: 1.4rem; font-weight: 600; }
  .card .name { font-size: .8rem; color: #57606a; }
  table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
  th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: right; }
  th { background: #f6f8fa; }
  td:first-child, th:first-child { text-align: left; }
  tr.average td { font-weight: 600; background: #f6f8fa; }
  img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
  .note { color: #57606a; font-size: .85rem; }
  .columns { display: flex; flex-wrap: wrap; gap: 2rem; }
</style>
"""

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Evaluation report: {{ model_file }}</title>
{{ style }}
</head>
<body>
<header>
  <h1>Evaluation report</h1>
  <p>Model <code>{{ model_file }}</code> on the test split ({{ metrics.n_images }} images,
     {{ per_class | length }} classes) &middot; MLflow run <code>{{ run_id }}</code></p>
</header>
<main>
<section>
  <h2>Headline</h2>
  <div class="cards">
  {% for name, value in headline %}
    <div class="card"><div class="value">{{ value }}</div><div class="name">{{ name }}</div></div>
  {% endfor %}
  </div>
  <p class="note">The SVC baseline is scikit-learn's <code>SVC</code> trained on the same training
  split (16&times;16 grayscale pixels), the classic reference for this kind of data.</p>
</section>
{% if pictures.get("history") %}
<section>
  <h2>Training</h2>
  <img src="{{ pictures.history }}" alt="loss and accuracy per epoch">
</section>
{% endif %}
<section>
  <h2>Confusion matrix</h2>
  <img src="{{ pictures.confusion }}" alt="confusion matrix">
  <details><summary>Counts as a table</summary>{{ confusion_table }}</details>
</section>
<section>
  <h2>Class abundance</h2>
  <p class="note">Observed share of each class in the test split against the share the model
  predicts: a class predicted more often than it occurs draws mistakes from the others.</p>
  <img src="{{ pictures.abundance }}" alt="observed and predicted class shares">
  <div class="columns">
    <div><h3>Most over-predicted</h3>{{ over_table }}</div>
    <div><h3>Most under-predicted</h3>{{ under_table }}</div>
  </div>
</section>
<section>
  <h2>Per-class metrics</h2>
  {{ per_class_table }}
</section>
<section>
  <h2>Calibration</h2>
  <p class="note">Expected calibration error
  {{ "%.4f" | format(metrics.expected_calibration_error) }}:
  the image-weighted gap between how confident the model is and how often it is right.</p>
  <div class="columns">
    <img src="{{ pictures.reliability }}" alt="reliability diagram" style="max-width: 480px">
    <div>{{ calibration_table }}</div>
  </div>
</section>
<section>
  <h2>Most confident mistakes</h2>
  <p class="note">{{ mistakes }} of {{ metrics.n_images }} test images are misclassified;
  the {{ errors | length }} the model was surest of:</p>
  <img src="{{ pictures.gallery }}" alt="error gallery">
  {{ errors_table }}
</section>
</main>
</body>
</html>
"""


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
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(TEMPLATE).render(
        style=Markup(STYLE),
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


VISUALIZATION_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inside the CNN: {{ model_file }}</title>
{{ style }}
</head>
<body>
<header>
  <h1>Inside the CNN</h1>
  <p>Model <code>{{ model_file }}</code> on the first test image of each class
     ({{ metrics.classes_shown }} images) &middot; MLflow run <code>{{ run_id }}</code></p>
</header>
<main>
{% if unsupported %}
<section>
  <h2>Not available for this model</h2>
  <p>The NumPy forward pass, and the pictures drawn from it, cover the pipeline's own CNN.
  {{ unsupported }}.</p>
</section>
{% else %}
{% if metrics.classes_without_test_image %}
<section>
  <h2>Classes not shown</h2>
  <p>No test image for: {{ metrics.classes_without_test_image | join(", ") }}.</p>
</section>
{% endif %}
<section>
  <h2>A forward pass in NumPy, checked against Keras</h2>
  <p>Every layer of the trained model was recomputed in plain NumPy
  (<code>pipeline/forward.py</code>: each convolution is every kernel-sized window of its
  input, laid side by side, times each filter, plus a bias) and compared with Keras' own
  output on the same images. The largest
  difference over all {{ metrics.forward_layers_checked }} layers is
  {{ "%.2g" | format(metrics.forward_max_abs_difference) }} (allowed: {{ tolerance }}, relative
  to a layer's largest value where that exceeds 1). {{ metrics.correct_of_shown }} of the
  {{ metrics.classes_shown }} images shown are classified correctly.</p>
  <details><summary>Layer by layer</summary>{{ check_table }}</details>
</section>
<section>
  <h2>First-layer filters</h2>
  <p class="note">The weights each filter multiplies with a window of the input (one small
  matrix per colour channel) before adding its bias and applying ReLU.</p>
  <img src="{{ pictures.filters }}" alt="first-layer filters">
</section>
<section>
  <h2>Where each filter responded</h2>
  <p class="note">The seed article's picture: every output of a filter added back onto the
  input pixels it was computed from, so bright regions are where the pattern the filter
  scans for is present.
  {% if metrics.first_layer_silent_filters %}Filters marked "none"
  ({{ metrics.first_layer_silent_filter_numbers | join(", ") }}:
  {{ metrics.first_layer_silent_filters }} of the first layer's) respond nowhere on these
  images: their weighted sum plus bias stays below zero everywhere, so ReLU passes nothing
  and the layers above never see them.{% endif %}</p>
  <img src="{{ pictures.responses }}" alt="filter responses laid over the inputs">
</section>
<section>
  <h2>Grad-CAM</h2>
  <p class="note">Which regions raise the predicted class's score, seen from the last
  convolution of each block.</p>
  <img src="{{ pictures.grad_cam }}" alt="Grad-CAM heat maps" style="max-width: 760px">
</section>
<section>
  <h2>Feature maps of every convolutional layer</h2>
  {% for name, uri in feature_maps %}
  <details{% if loop.first %} open{% endif %}><summary>{{ name }}</summary>
    <img src="{{ uri }}" alt="{{ name }}"></details>
  {% endfor %}
</section>
<section>
  <h2>Weight sharing</h2>
  <div class="cards">
  {% for name, value in sharing_cards %}
    <div class="card"><div class="value">{{ value }}</div><div class="name">{{ name }}</div></div>
  {% endfor %}
  </div>
  <p class="note">A convolution uses the same few weights at every position of its input.
  A network with the same layer widths (units per layer) that gave every unit weights of its
  own for its window (locally connected), or for every unit of the layer below (fully
  connected), would need the parameter counts below. Dense layers and batch normalisation
  count the same in all three.</p>
  <img src="{{ pictures.weight_sharing }}" alt="parameters per layer">
  {{ sharing_table }}
</section>
{% endif %}
</main>
</body>
</html>
"""


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
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(VISUALIZATION_TEMPLATE).render(
        style=Markup(STYLE),
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
