"""Front-end libraries for HTML reports that render offline, fetched from the npm registry.

DVC's plots pages and great-expectations' Data Docs load Vega, Bootstrap, jQuery and Font
Awesome from CDNs, so on a machine without internet they stay blank or unstyled. `make setup`
runs this module once: it fetches the pinned packages with `npm pack`, checks each tarball's
hash, unpacks them under `.tools/web/`, and gives DVC a plots template with Vega inlined
(`dvc config --local plots.html_template`). The validate stage then points its Data Docs at
local copies (`localise_pages`).
"""

import hashlib
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.files import write_text
from pipeline.common.log import PipelineError, run_stage
from pipeline.common.processes import CommandError, run_command
from pipeline.paths import DVC_PLOTS_TEMPLATE, ROOT, WEB_ASSETS_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    sha256: str  # of the tarball, so a changed upload is refused

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def folder(self) -> str:
        """A flat folder name: `@fortawesome/fontawesome-free` -> `fortawesome-fontawesome-free`."""
        return f"{self.name.lstrip('@').replace('/', '-')}@{self.version}"


VEGA = NpmPackage(
    "vega", "5.20.2", "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d"
)
VEGA_LITE = NpmPackage(
    "vega-lite", "5.2.0", "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b"
)
VEGA_EMBED = NpmPackage(
    "vega-embed", "6.18.2", "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b"
)
BOOTSTRAP = NpmPackage(
    "bootstrap", "4.3.1", "b109c069bbb7cee57c3ddffb65d8481db5fe7e428b6d9b1ca502119a0429bd16"
)
BOOTSTRAP_TABLE = NpmPackage(
    "bootstrap-table", "1.19.1", "80f84cbf2f8f92e0d5444a82fb99495ab8a286b5cdb0594102e568eb9d9fa69a"
)
BOOTSTRAP_DATEPICKER = NpmPackage(
    "bootstrap-datepicker",
    "1.9.0",
    "342bd95b65db796e0ac35ad9296edbe6733daefc9869b2e5b27286d423e38146",
)
BOOTSTRAP_DARK = NpmPackage(
    "@forevolve/bootstrap-dark",
    "1.1.0",
    "20b089d52bc2ae80424fc43e5263023e96bd8479e7c5d346b8766c1b792a1cfd",
)
JQUERY = NpmPackage(
    "jquery", "3.7.1", "68a9f787516da47c680e09c187bcbac4536b6f85d90eb882844e12919e583f53"
)
POPPER = NpmPackage(
    "popper.js", "1.12.9", "4233fad2da34a2a6bc982e7e02c85c14180af075853d97d7e3bfa7124c853cbf"
)
FONT_AWESOME = NpmPackage(
    "@fortawesome/fontawesome-free",
    "6.6.0",
    "cf0b890ab2b68d3c4ea0f93ceb81cc24b956cccf9db36c63be044a672bd3b4dd",
)
PACKAGES = (
    VEGA,
    VEGA_LITE,
    VEGA_EMBED,
    BOOTSTRAP,
    BOOTSTRAP_TABLE,
    BOOTSTRAP_DATEPICKER,
    BOOTSTRAP_DARK,
    JQUERY,
    POPPER,
    FONT_AWESOME,
)

# The Vega files dvc-render's own page loads from the CDN, in load order.
DVC_SCRIPTS = (
    (VEGA, "build/vega.min.js"),
    (VEGA_LITE, "build/vega-lite.min.js"),
    (VEGA_EMBED, "build/vega-embed.min.js"),
)

# Every CDN address in great-expectations 1.x Data Docs, and the package file that replaces it.
_BT_FILTER = "dist/extensions/filter-control/bootstrap-table-filter-control"
DATA_DOCS_URLS = {
    "https://cdn.jsdelivr.net/npm/vega@5": (VEGA, "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": (VEGA_LITE, "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": (VEGA_EMBED, "build/vega-embed.min.js"),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        BOOTSTRAP,
        "dist/css/bootstrap.min.css",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        BOOTSTRAP,
        "dist/js/bootstrap.min.js",
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": (JQUERY, "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        POPPER,
        "dist/umd/popper.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        FONT_AWESOME,
        "css/all.min.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        BOOTSTRAP_DATEPICKER,
        "dist/js/bootstrap-datepicker.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        BOOTSTRAP_DATEPICKER,
        "dist/css/bootstrap-datepicker.min.css",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        BOOTSTRAP_DARK,
        "dist/css/bootstrap-prefers-dark.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        BOOTSTRAP_TABLE,
        "dist/bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        BOOTSTRAP_TABLE,
        "dist/bootstrap-table.min.js",
    ),
    f"https://unpkg.com/bootstrap-table@1.19.1/{_BT_FILTER}.min.js": (
        BOOTSTRAP_TABLE,
        f"{_BT_FILTER}.min.js",
    ),
    # 1.19.0's filter-control styles: the 1.19.1 files are the same extension
    f"https://unpkg.com/bootstrap-table@1.19.0/{_BT_FILTER}.css": (
        BOOTSTRAP_TABLE,
        f"{_BT_FILTER}.css",
    ),
    f"https://unpkg.com/bootstrap-table@1.19.0/{_BT_FILTER}.min.css": (
        BOOTSTRAP_TABLE,
        f"{_BT_FILTER}.min.css",
    ),
}
# Files a stylesheet above loads by relative path (Font Awesome's fonts).
DATA_DOCS_COMPANIONS = tuple(
    (FONT_AWESOME, f"webfonts/fa-{face}.{kind}")
    for face in ("brands-400", "regular-400", "solid-900", "v4compatibility")
    for kind in ("woff2", "ttf")
)
# The great-expectations logo, which Data Docs load from S3, ships inside the site itself.
GX_LOGO_URL = re.compile(
    r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/[^\"'\s)]+"
)
GX_LOCAL_LOGO = "static/images/logo-long.png"

# dvc-render fills these into the template; inlined code must not contain them.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
COMPLETE = ".complete"


class AssetError(PipelineError, RuntimeError):
    """A front-end package could not be fetched, failed its check, or is not installed."""


def fetch(packages: tuple[NpmPackage, ...], target: Path = WEB_ASSETS_DIR) -> None:
    """Fetch each package with `npm pack`, verify its hash, and unpack it under `target`."""
    missing = [p for p in packages if not (target / p.folder / COMPLETE).exists()]
    if not missing:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError("npm is not installed; install Node.js to render reports offline")
    with tempfile.TemporaryDirectory() as scratch:
        for package in missing:
            tarball = _pack(npm, package, Path(scratch))
            folder = target / package.folder
            shutil.rmtree(folder, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                archive.extractall(folder, filter="data")  # "data": no links or paths out
            (folder / COMPLETE).touch()


def _pack(npm: str, package: NpmPackage, scratch: Path) -> Path:
    try:
        packed = run_command(
            [npm, "pack", "--silent", "--pack-destination", str(scratch), package.spec], scratch
        )
    except CommandError as error:
        raise AssetError(f"npm pack {package.spec} failed: {error}") from None
    tarball = scratch / packed.strip().splitlines()[-1]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise AssetError(f"{package.spec}: tarball sha256 {digest} != pinned {package.sha256}")
    return tarball


def asset_path(package: NpmPackage, path: str, root: Path = WEB_ASSETS_DIR) -> Path:
    """An installed package file; AssetError (naming it) if `make setup` has not fetched it."""
    file = root / package.folder / "package" / path
    if not file.is_file():
        raise AssetError(f"{file} is missing: run `make setup` (needs npm) to fetch {package.spec}")
    return file


def dvc_plots_template(scripts: dict[str, str]) -> str:
    """A dvc-render page template with the given libraries inlined instead of CDN links."""
    for name, code in scripts.items():
        for placeholder in DVC_PLACEHOLDERS:
            if placeholder in code:
                raise AssetError(f"{name} contains {placeholder}, which DVC would replace")
    # A literal "</script" inside the code would end the element early.
    escaped = {name: code.replace("</script", "<\\/script") for name, code in scripts.items()}
    inlined = "\n".join(
        f"<script>/* {name} */\n{code}\n</script>" for name, code in escaped.items()
    )
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n'
        "<title>DVC plots</title>\n"
        f"{inlined}\n"
        "<style>table { border-spacing: 15px; }</style>\n"
        "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def install_dvc_template(dvc: str = "dvc") -> Path:
    """Build the offline template and make it this checkout's default for `dvc plots`."""
    scripts = {
        package.spec: asset_path(package, path).read_text(encoding="utf-8")
        for package, path in DVC_SCRIPTS
    }
    write_text(DVC_PLOTS_TEMPLATE, dvc_plots_template(scripts))
    # Relative to .dvc/, as DVC resolves it, so the checkout can move.
    relative = os.path.relpath(DVC_PLOTS_TEMPLATE, ROOT / ".dvc")
    run_command([dvc, "config", "--local", "plots.html_template", relative], ROOT)
    return DVC_PLOTS_TEMPLATE


def localise_pages(site: Path, assets: Path = WEB_ASSETS_DIR) -> list[str]:
    """Point every Data Docs page under `site` at local copies of its CDN files.

    The files are copied into `site/static/vendor/`, so the site stays self-contained.
    Returns the external addresses still loaded by a page (none when all went well).
    """
    vendor = site / "static" / "vendor"
    needed = [*DATA_DOCS_URLS.values(), *DATA_DOCS_COMPANIONS]
    for package, path in needed:
        target = vendor / package.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(asset_path(package, path, assets), target)
    remaining: set[str] = set()
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        here = page.parent
        for url, (package, path) in DATA_DOCS_URLS.items():
            local = os.path.relpath(vendor / package.folder / path, here)
            text = text.replace(f'"{url}"', f'"{local}"')
        text = GX_LOGO_URL.sub(os.path.relpath(site / GX_LOCAL_LOGO, here), text)
        page.write_text(text, encoding="utf-8")
        remaining.update(external_loads(text))
    return sorted(remaining)


def external_loads(html: str) -> list[str]:
    """Addresses a page loads on opening (scripts, stylesheets, images), not mere links."""
    pattern = r'<(?:script|img)[^>]*\bsrc="(https?://[^"]+)"|<link[^>]*\bhref="(https?://[^"]+)"'
    return [a or b for a, b in re.findall(pattern, html)]


def main() -> None:
    try:
        fetch(PACKAGES)
        template = install_dvc_template(str(Path(sys.executable).parent / "dvc"))
    except AssetError as error:
        # Not fatal: the pipeline runs; only the HTML reports need internet to draw.
        log.warning(f"{error}; HTML reports will load their libraries from CDNs")
        return
    log.info(f"reports render offline ({os.path.relpath(template.parent, ROOT)})")


if __name__ == "__main__":
    run_stage("web assets", main)
