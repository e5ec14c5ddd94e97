import pytest

from pipeline.web_assets import AssetError, NpmFile, dvc_plots_template, fetch


def test_template_inlines_scripts_and_keeps_dvc_placeholders():
    page = dvc_plots_template({"vega@1": "var a = '</script>';", "vega-embed@2": "var b = 2;"})
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "cdn" not in page
    assert "<script>/* vega@1 */\nvar a = '<\\/script>';\n</script>" in page
    assert page.index("vega@1") < page.index("vega-embed@2")  # load order kept


def test_code_containing_a_dvc_placeholder_is_refused():
    with pytest.raises(AssetError, match=r"evil@1 contains \{plot_divs\}"):
        dvc_plots_template({"evil@1": "x = '{plot_divs}'"})


def test_missing_npm_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(AssetError, match="npm is not installed"):
        fetch((NpmFile("vega", "5.20.2", "0" * 64, "package/build/vega.min.js"),), tmp_path)
