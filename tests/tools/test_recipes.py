"""tools.recipes: the article's setup as params overrides, as docs/training.md shows it."""

from pipeline.paths import ROOT
from pipeline.tools.recipes import ARTICLE, exp_run_command, yaml_value


def test_values_are_written_as_dvc_exp_run_takes_them():
    assert [yaml_value(v) for v in ([12, 25], False, "valid", 0.001)] == [
        "[12,25]",
        "false",
        "valid",
        "0.001",
    ]


def test_the_training_page_shows_every_override_of_the_article_recipe():
    page = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    page = " ".join(page.replace("\\\n", " ").split())
    for key, value in ARTICLE.items():
        assert f"-S {key}={yaml_value(value)}" in page, key
    assert exp_run_command("article").startswith("dvc exp run -S base.image_size=64 ")
