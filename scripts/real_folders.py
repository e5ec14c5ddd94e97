"""Three real image folders of the kind users bring, built from Debian's packages, to run the
pipeline on as a new user would (docs/data.md, "Real folders"):

- `icons`: Oxygen's icon theme (`oxygen-icon-theme`), six contexts, every icon drawn at six
  sizes (16 to 128 px), nested as `<context>/<size>/<name>.png`: each icon is a group of near
  duplicates.
- `drawings`: Openclipart's colour drawings (`openclipart-png`) in their nested category
  folders (3 to 1,582 a category), with transparency, from 3x2 to 16000x10562 pixels.
- `stamps`: Tux Paint's stamps (`tuxpaint-stamps-default`): four categories, an empty class
  folder, a class of 30 near-identical variations of one drawing (resized and
  recoloured a little) and three drawings filed, resized, under a second class too.
- `photos` (`--photos`): 600 phone-sized camera JPEGs (4032x3024, about 1.5 MB each, with
  sensor noise and a camera's EXIF), a quarter stored sideways with an EXIF orientation tag as
  phones do, in 6 classes of 100: random crops of 12 real photographs, two a class, from the
  KDE Plasma and MATE wallpapers (`plasma-workspace-wallpapers`, `mate-backgrounds`). A crop
  and a held-out crop may show parts of one photograph: for measuring cost, not accuracy.

    apt-get install oxygen-icon-theme openclipart-png tuxpaint-stamps-default \
        plasma-workspace-wallpapers mate-backgrounds
    python scripts/real_folders.py /tmp/real    # then ingest.source: /tmp/real/icons, ...
"""

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
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
PLASMA, MATE = Path("/usr/share/wallpapers"), Path("/usr/share/backgrounds/mate/nature")
PHOTO_CLASSES = {  # two real photographs a class
    "leaves": (PLASMA / "Autumn/contents/images/2560x1600.jpg", MATE / "GreenMeadow.jpg"),
    "water": (PLASMA / "BytheWater/contents/images/2560x1600.jpg", MATE / "RainDrops.jpg"),
    "flowers": (MATE / "FreshFlower.jpg", MATE / "YellowFlower.jpg"),
    "sky": (PLASMA / "EveningGlow/contents/images/2560x1600.jpg", MATE / "Storm.jpg"),
    "hills": (PLASMA / "PastelHills/contents/images/2560x1440.jpg", MATE / "Dune.jpg"),
    "cups": (PLASMA / "ColorfulCups/contents/images/2560x1600.jpg", MATE / "Wood.jpg"),
}
PHOTOS_PER_CLASS = 100
PHONE = (4032, 3024)  # a 12-megapixel phone camera's landscape frame
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
    near-duplicate search's known gap: docs/data.md, "The validation gate")."""
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


def _phone_photo(job: tuple[Path, Path, int]) -> None:
    """One camera photo: a random 4:3 crop (40% to 85% of the source's width) of `source`,
    maybe mirrored, enlarged to the phone's frame with a little sensor noise; every fourth
    stored sideways with EXIF orientation 6 (shown upright, portrait), as phones store them."""
    source, out, seed = job
    rng = np.random.default_rng(seed)
    with Image.open(source) as image:
        photo = image.convert("RGB")
    portrait = seed % 4 == 0
    aspect = 3 / 4 if portrait else 4 / 3
    width = int(photo.width * rng.uniform(0.4, 0.85))
    height = min(photo.height, int(width / aspect))
    width = int(height * aspect)
    left = int(rng.integers(0, photo.width - width + 1))
    top = int(rng.integers(0, photo.height - height + 1))
    crop = photo.crop((left, top, left + width, top + height))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    size = PHONE[::-1] if portrait else PHONE
    pixels = np.asarray(crop.resize(size, Image.Resampling.BICUBIC), np.float32)
    pixels += rng.normal(0, 4, pixels.shape)  # a phone sensor's noise at base ISO, roughly
    frame = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Pipeline", "Phone 12MP"  # Make, Model
    if portrait:  # the sensor's landscape pixels, turned for display by the tag
        frame = frame.transpose(Image.Transpose.ROTATE_90)
        exif[0x0112] = 6
    frame.save(out, format="JPEG", quality=92, exif=exif)


def photos(target: Path) -> None:
    jobs = []
    for label, sources in PHOTO_CLASSES.items():
        (target / label).mkdir(parents=True)
        for i in range(PHOTOS_PER_CLASS):
            out = target / label / f"IMG_{len(jobs):04d}.jpg"
            jobs.append((sources[i % len(sources)], out, len(jobs)))
    with ProcessPoolExecutor() as pool:
        list(pool.map(_phone_photo, jobs, chunksize=8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="folder to create icons/, drawings/, stamps/ in")
    parser.add_argument("--photos", action="store_true", help="also photos/ (about 900 MB)")
    args = parser.parse_args()
    target = args.target
    builders = {"icons": icons, "drawings": drawings, "stamps": stamps}
    if args.photos:
        builders["photos"] = photos
    for name, build in builders.items():
        if (target / name).exists():
            shutil.rmtree(target / name)
        build(target / name)
        count = sum(1 for p in (target / name).rglob("*") if p.is_file())
        print(f"{target / name}: {count} files")


if __name__ == "__main__":
    main()
