"""Front-end libraries for HTML reports that render offline, fetched from the npm registry.

`dvc plots show` writes pages that load Vega from a CDN, so on a machine without internet they
stay blank. `make setup` runs this module once: it fetches the pinned packages with `npm pack`,
checks their hashes, and gives DVC a page template with the libraries inlined
(`dvc config --local plots.html_template`), so the plots render anywhere.
"""

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.paths import DVC_PLOTS_TEMPLATE, ROOT, WEB_ASSETS_DIR


@dataclass(frozen=True)
class NpmFile:
    package: str
    version: str
    sha256: str  # of the package tarball, so a changed upload is refused
    path: str  # inside the tarball

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def local_name(self) -> str:
        return f"{self.package}-{self.version}-{Path(self.path).name}"


# The versions dvc-render's own page loads from the CDN.
VEGA = (
    NpmFile(
        "vega",
        "5.20.2",
        "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d",
        "package/build/vega.min.js",
    ),
    NpmFile(
        "vega-lite",
        "5.2.0",
        "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
        "package/build/vega-lite.min.js",
    ),
    NpmFile(
        "vega-embed",
        "6.18.2",
        "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
        "package/build/vega-embed.min.js",
    ),
)

# dvc-render fills these into the template; inlined code must not contain them.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


class AssetError(RuntimeError):
    """A front-end package could not be fetched or failed its check."""


def fetch(files: tuple[NpmFile, ...], target: Path) -> dict[NpmFile, Path]:
    """Fetch each package with `npm pack`, verify it, and extract the one file needed."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError("npm is not installed; install Node.js to render reports offline")
    target.mkdir(parents=True, exist_ok=True)
    extracted = {}
    with tempfile.TemporaryDirectory() as scratch:
        for file in files:
            destination = target / file.local_name
            if not destination.exists():
                tarball = _pack(npm, file, Path(scratch))
                with tarfile.open(tarball) as archive:
                    member = archive.extractfile(file.path)
                    if member is None:
                        raise AssetError(f"{file.spec}: {file.path} is not in the package")
                    destination.write_bytes(member.read())
            extracted[file] = destination
    return extracted


def _pack(npm: str, file: NpmFile, scratch: Path) -> Path:
    result = subprocess.run(
        [npm, "pack", "--silent", "--pack-destination", str(scratch), file.spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AssetError(f"npm pack {file.spec} failed: {result.stderr.strip()}")
    tarball = scratch / result.stdout.strip().splitlines()[-1]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != file.sha256:
        raise AssetError(f"{file.spec}: tarball sha256 {digest} != pinned {file.sha256}")
    return tarball


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
    extracted = fetch(VEGA, WEB_ASSETS_DIR)
    scripts = {f.spec: path.read_text(encoding="utf-8") for f, path in extracted.items()}
    DVC_PLOTS_TEMPLATE.write_text(dvc_plots_template(scripts), encoding="utf-8")
    # Relative to .dvc/, as DVC resolves it, so the checkout can move.
    relative = Path("..") / DVC_PLOTS_TEMPLATE.relative_to(ROOT)
    subprocess.run(
        [dvc, "config", "--local", "plots.html_template", relative.as_posix()],
        cwd=ROOT,
        check=True,
    )
    return DVC_PLOTS_TEMPLATE


def main() -> None:
    try:
        template = install_dvc_template(str(Path(sys.executable).parent / "dvc"))
    except AssetError as error:
        # Not fatal: the pipeline runs; only `dvc plots show` pages need internet to draw.
        print(f"web assets: {error}; `dvc plots show` pages will load Vega from its CDN")
        return
    print(f"web assets: dvc plots render offline ({template.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
