"""Three real image folders of the kind users bring, built from Debian's packages, to run the
pipeline on as a new user would (README, "Real folders"):

- `icons`: Oxygen's icon theme (`oxygen-icon-theme`), six contexts, every icon drawn at six
  sizes (16 to 128 px), nested as `<context>/<size>/<name>.png`: each icon is a group of near
  duplicates.
- `drawings`: Openclipart's colour drawings (`openclipart-png`) in their nested category
  folders (3 to 1,582 a category), with transparency, from 3x2 to 16000x10562 pixels.
- `stamps`: Tux Paint's stamps (`tuxpaint-stamps-default`): four categories, an empty class
  folder, a class of 30 near-identical variations of one drawing (resized and
  recoloured a little) and three drawings filed, resized, under a second class too.

    apt-get install oxygen-icon-theme openclipart-png tuxpaint-stamps-default
    python scripts/real_folders.py /tmp/real    # then ingest.source: /tmp/real/icons, ...
"""

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ICONS = Path("/usr/share/icons/oxygen/base")
ICON_CONTEXTS = ("devices", "places", "status", "emotes", "categories", "emblems")
ICON_SIZES = ("16x16", "22x22", "32x32", "48x48", "64x64", "128x128")
CLIPART = Path("/usr/share/openclipart/png")
CLIPART_CATEGORIES = (
    "buttons",
    "containers",
    "decorations",
    "education",
    "plants",
    "buildings",
    "office",
    "transportation",
    "animals",
    "shapes",
    "food",
    "signs_and_symbols/flags",
)
STAMPS = Path("/usr/share/tuxpaint/stamps")
STAMP_CATEGORIES = ("plants", "vehicles", "clothes", "sports")
VARIED = "animals/amphibians/frog-1.png"  # in no class of its own: the variations are one
VARIATIONS = 30


def icons(target: Path) -> None:
    for context in ICON_CONTEXTS:
        for size in ICON_SIZES:
            for icon in sorted((ICONS / size / context).glob("*.png")):
                out = target / context / size / icon.name
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(icon, out)  # the theme's links, as files


def drawings(target: Path) -> None:
    for category in CLIPART_CATEGORIES:  # flags: from 3x2 px to 12715x8277
        shutil.copytree(CLIPART / category, target / Path(category).name)


def _variation(drawing: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The drawing resized to 90% to 110% of its side and its hue turned a little:
    near-identical variations, as re-renders of one picture are (an off-centre shift is the
    near-duplicate search's known gap: README, "The validation gate")."""
    scale = rng.uniform(0.9, 1.1)
    moved = drawing.resize((round(drawing.width * scale), round(drawing.height * scale)))
    hsv = np.asarray(moved.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-12, 13))) % 256
    recoloured = Image.fromarray(hsv, "HSV").convert("RGB").convert("RGBA")
    recoloured.putalpha(moved.getchannel("A"))
    return recoloured


def stamps(target: Path) -> None:
    for category in STAMP_CATEGORIES:
        for stamp in sorted((STAMPS / category).rglob("*.png")):
            out = target / category / stamp.relative_to(STAMPS / category)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stamp, out)
    (target / "Empty Class").mkdir()
    rng = np.random.default_rng(0)
    with Image.open(STAMPS / VARIED) as image:
        drawing = image.convert("RGBA")
    (target / "frog variations").mkdir()
    for i in range(VARIATIONS):
        _variation(drawing, rng).save(target / "frog variations" / f"frog-{i:02d}.png")
    for stamp in sorted((STAMPS / "clothes").rglob("*.png"))[:3]:  # one drawing, two classes
        with Image.open(stamp) as image:
            image.resize((image.width // 2, image.height // 2)).save(
                target / "sports" / f"also-{stamp.name}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="folder to create icons/, drawings/, stamps/ in")
    target = parser.parse_args().target
    for name, build in {"icons": icons, "drawings": drawings, "stamps": stamps}.items():
        if (target / name).exists():
            shutil.rmtree(target / name)
        build(target / name)
        count = sum(1 for p in (target / name).rglob("*") if p.is_file())
        print(f"{target / name}: {count} files")


if __name__ == "__main__":
    main()
