import pytest

from pipeline.reporting import web_assets
from pipeline.reporting.web_assets import (
    VEGA,
    AssetError,
    NpmPackage,
    asset_path,
    dvc_plots_template,
    external_loads,
    fetch,
    localise_pages,
)


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
        fetch((NpmPackage("vega", "5.20.2", "0" * 64),), tmp_path)


def test_a_missing_asset_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(AssetError, match=r"vega@5.20.2/package/build/vega.min.js is missing: run"):
        asset_path(VEGA, "build/vega.min.js", tmp_path)


def test_scoped_package_folders_are_flat():
    assert NpmPackage("@fortawesome/fontawesome-free", "6.6.0", "").folder == (
        "fortawesome-fontawesome-free@6.6.0"
    )


def test_external_loads_finds_scripts_styles_and_images_not_links():
    html = (
        '<script src="https://cdn.example/a.js"></script>'
        '<link rel="stylesheet" href="https://cdn.example/b.css">'
        '<img class="logo" src="https://s3.example/c.png">'
        '<a href="https://docs.example/page">docs</a>'
        '<script src="static/local.js"></script>'
    )
    assert external_loads(html) == [
        "https://cdn.example/a.js",
        "https://cdn.example/b.css",
        "https://s3.example/c.png",
    ]


def test_localise_pages_rewrites_every_cdn_address(tmp_path):
    """A fake package store holding every file the Data Docs need, and a page at depth two."""
    store = tmp_path / "store"
    for package, path in [*web_assets.DATA_DOCS_URLS.values(), *web_assets.DATA_DOCS_COMPANIONS]:
        file = store / package.folder / "package" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"/* {package.spec} {path} */")
    site = tmp_path / "site"
    page = site / "validations" / "run" / "page.html"
    page.parent.mkdir(parents=True)
    links = "".join(f'<script src="{url}"></script>' for url in web_assets.DATA_DOCS_URLS)
    logo = '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1">'
    page.write_text(links + logo)
    assert localise_pages(site, store) == []
    text = page.read_text()
    assert 'src="../../static/vendor/jquery@3.7.1/dist/jquery.min.js"' in text
    assert 'src="../../static/images/logo-long.png"' in text
    assert (
        site / "static/vendor/fortawesome-fontawesome-free@6.6.0/webfonts/fa-solid-900.woff2"
    ).exists()
