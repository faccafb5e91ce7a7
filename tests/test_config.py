"""eoseg.config.load_config: defaults, presets, --config files, overrides, checks."""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import textwrap
from pathlib import Path

import pytest

import eoseg
from eoseg.config import DEFAULT_CONFIG_PATH, load_config
from eoseg.errors import EosegError

VAIHINGEN_OFFICIAL_TEST = ["2", "4", "6", "8", "10", "12", "14", "16", "20", "22", "24", "27", "29", "31", "33", "35", "38"]
POTSDAM_OFFICIAL_TEST = ["2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15",
                         "6_13", "6_14", "6_15", "7_13"]
# the 24 Potsdam tiles with public ground truth
POTSDAM_LABELED = ["2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
                   "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11", "7_12"]
# the 16 Vaihingen tiles with public ground truth
VAIHINGEN_LABELED = ["1", "3", "5", "7", "11", "13", "15", "17", "21", "23", "26", "28", "30", "32", "34", "37"]


def write_config(tmp_path: Path, text: str, name: str = "my_run.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------- defaults and presets
def test_defaults_load_sample_dataset():
    cfg = load_config()
    assert cfg.DATASET == "sample"
    assert cfg.DATA_ROOT == "data/sample"
    assert cfg.num_classes == 6
    assert cfg.num_bands == 3
    assert cfg.palette.num_classes == 6
    assert cfg.sources == [str(DEFAULT_CONFIG_PATH)]
    assert cfg.tile_ids("train") == ["1", "2", "3", "4", "5", "6"]
    assert cfg.tile_ids("official_test") == []


def test_vaihingen_preset():
    cfg = load_config(overrides=["DATASET=vaihingen"])
    assert cfg.DATASET == "vaihingen"
    assert cfg.DATA_ROOT == "data/Vaihingen"
    assert len(cfg.TRAIN_IDS) == 12
    assert cfg.OFFICIAL_TEST_IDS == VAIHINGEN_OFFICIAL_TEST
    assert cfg.tile_ids("official_test") == VAIHINGEN_OFFICIAL_TEST
    train, test = set(cfg.TRAIN_IDS), set(cfg.TEST_IDS)
    assert not train & test
    assert train | test == set(VAIHINGEN_LABELED)
    assert not (train | test) & set(VAIHINGEN_OFFICIAL_TEST)
    assert cfg.MODEL_WIDTH == 1.0
    assert cfg.PATCH_SIZE == 256
    # names the preset does not set keep their defaults
    assert cfg.CLASS_NAMES == load_config().CLASS_NAMES


def test_potsdam_preset():
    cfg = load_config(overrides=["DATASET=potsdam"])
    assert cfg.OFFICIAL_TEST_IDS == POTSDAM_OFFICIAL_TEST
    assert len(cfg.OFFICIAL_TEST_IDS) == 14
    train, test = cfg.TRAIN_IDS, cfg.TEST_IDS
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(POTSDAM_LABELED)
    assert not set(train + test) & set(POTSDAM_OFFICIAL_TEST)
    assert cfg.BAND_NAMES == ["R", "G", "B"]
    assert cfg.NDSM_PATTERN == ""  # its nDSMs are 8-bit JPEG levels, not metres


def test_unknown_dataset_suggests_closest():
    with pytest.raises(EosegError, match="unknown DATASET 'vaihigen'; did you mean 'vaihingen'"):
        load_config(overrides=["DATASET=vaihigen"])


# ---------------------------------------------------------------- --config files and overrides
def test_config_file_overrides_and_override_beats_file(tmp_path):
    path = write_config(tmp_path, """
        ITERATIONS = 20
        BATCH_SIZE = 4
        DEVICE = "cpu"
        TRAIN_IDS = ["1", "2"]
    """)
    cfg = load_config(path)
    assert (cfg.ITERATIONS, cfg.BATCH_SIZE, cfg.DEVICE, cfg.TRAIN_IDS) == (20, 4, "cpu", ["1", "2"])
    assert str(path) in cfg.sources
    cfg = load_config(path, overrides=["ITERATIONS=7", "DEVICE=cuda:1"])
    assert cfg.ITERATIONS == 7
    assert cfg.DEVICE == "cuda:1"
    assert cfg.BATCH_SIZE == 4  # from the file, not overridden
    assert any("ITERATIONS=7" in s for s in cfg.sources)


def test_file_selecting_dataset_gets_preset_but_its_own_names_win(tmp_path):
    path = write_config(tmp_path, """
        DATASET = "vaihingen"
        PATCH_SIZE = 64
        DATA_ROOT = "/elsewhere/Vaihingen"
    """)
    cfg = load_config(path)
    assert cfg.DATASET == "vaihingen"
    assert len(cfg.TRAIN_IDS) == 12  # from the preset
    assert cfg.OFFICIAL_TEST_IDS == VAIHINGEN_OFFICIAL_TEST
    assert cfg.WINDOW == 256  # from the preset
    assert cfg.PATCH_SIZE == 64  # the file beats the preset
    assert cfg.DATA_ROOT == "/elsewhere/Vaihingen"
    # and an override of DATASET beats the file's DATASET
    cfg = load_config(path, overrides=["DATASET=potsdam"])
    assert cfg.OFFICIAL_TEST_IDS == POTSDAM_OFFICIAL_TEST
    assert cfg.PATCH_SIZE == 64


def test_file_can_define_its_own_preset(tmp_path):
    path = write_config(tmp_path, """
        PRESETS = {"mine": dict(DATA_ROOT="data/mine", TRAIN_IDS=["a", "b"], TEST_IDS=["c"])}
        DATASET = "mine"
    """)
    cfg = load_config(path)
    assert cfg.DATA_ROOT == "data/mine"
    assert cfg.tile_ids("train") == ["a", "b"]
    assert cfg.tile_path("IMAGE_PATTERN", "a") == Path("data/mine/top/top_mosaic_09cm_areaa.tif")


# ---------------------------------------------------------------- the recipe for users' data
DATA_ONLY = """
    DATA_ROOT = "data/mycity"
    IMAGE_PATTERN = "images/{id}.tif"
    LABEL_PATTERN = "labels/{id}.tif"
    TRAIN_IDS = ["a1", "a2"]
    TEST_IDS = ["b1"]
    BANDS = [1, 2, 3, 4]
    BAND_NAMES = ["R", "G", "B", "NIR"]
    CLASS_NAMES = ["background", "building"]
    PALETTE = [[255, 255, 255], [255, 0, 0]]
    LABEL_VALUES = {0: 0, 255: 1}
    TRAIN_MINUTES = 30.0
    NORM_MEAN = [0.0, 0.0, 0.0, 0.0]
    NORM_STD = [255.0, 255.0, 255.0, 255.0]
"""


def assigned(source: str) -> dict:
    """The config names a Python source assigns at its top level, read without eoseg (PRESETS left out)."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(textwrap.dedent(source)).body
            if isinstance(node, ast.Assign) and node.targets[0].id.isupper() and not node.targets[0].id.startswith("_")
            and node.targets[0].id != "PRESETS"}


def test_config_file_naming_only_data_gets_config_py_defaults_not_the_sample_preset(tmp_path):
    path = write_config(tmp_path, DATA_ONLY)
    cfg = load_config(path)
    defaults = {name: value for name, value in assigned(DEFAULT_CONFIG_PATH.read_text()).items()
                if name not in assigned(DATA_ONLY) and name != "DATASET"}
    assert {name: cfg.to_dict()[name] for name in defaults} == defaults
    assert cfg.DATASET == ""  # recorded as applied: no preset
    assert (cfg.MODEL, cfg.OPTIMIZER, cfg.LR_SCHEDULE, cfg.LOSS) == ("unet", "adamw", "poly", "ce_dice")
    assert json.loads(cfg.save(tmp_path / "out").read_text())["config"]["DATASET"] == ""


def test_without_a_config_file_the_sample_preset_applies():
    cfg = load_config()
    assert cfg.DATASET == "sample"
    sample = runpy.run_path(str(DEFAULT_CONFIG_PATH))["PRESETS"]["sample"]
    assert {name: cfg.to_dict()[name] for name in sample} == sample
    # the demo: the own-data recipe on 128 px patches for a 5-minute budget, as demo.sh and the README's figures use it
    assert (cfg.MODEL, cfg.ENCODER, cfg.OPTIMIZER, cfg.LOSS, cfg.PATCH_SIZE, cfg.BATCH_SIZE, cfg.TRAIN_MINUTES) == (
        "unet", "resnet18", "adamw", "ce_dice", 128, 16, 5.0)
    assert cfg.DATA_ROOT == "data/sample" and cfg.MODEL_FILE == "models/sample_unet.pt"


@pytest.mark.parametrize("dataset, recipe", [("sample", ("unet", 128, 5.0)), ("vaihingen", ("segnet", 256, 0.0))])
def test_dataset_named_in_a_data_file_applies_its_preset(tmp_path, dataset, recipe):
    path = write_config(tmp_path, DATA_ONLY.replace("TRAIN_MINUTES", "# TRAIN_MINUTES") + f"    DATASET = {dataset!r}\n")
    cfg = load_config(path)
    assert cfg.DATASET == dataset
    assert (cfg.MODEL, cfg.PATCH_SIZE, cfg.TRAIN_MINUTES) == recipe
    assert cfg.DATA_ROOT == "data/mycity"  # the file beats the preset
    # an override names a preset for a file that names none, or none for a file that names one
    assert load_config(write_config(tmp_path, DATA_ONLY, "data.py"), overrides=[f"DATASET={dataset}"]).PATCH_SIZE == recipe[1]
    assert load_config(path, overrides=["DATASET="]).PATCH_SIZE == 256


@pytest.mark.parametrize("dataset", ["vaihingen", "vaihingen_fusion", "potsdam"])
def test_isprs_presets_keep_the_methods_recipe(dataset):
    cfg = load_config(overrides=[f"DATASET={dataset}"])
    assert (cfg.OPTIMIZER, cfg.LR_SCHEDULE, cfg.WARMUP_FRACTION, cfg.LOSS, cfg.BLEND) == ("sgd", "step", 0.0, "ce", "uniform")
    assert (cfg.MODEL_WIDTH, cfg.ENCODER_LR_FACTOR, cfg.WEIGHT_DECAY, cfg.BASE_LR) == (1.0, 0.5, 5e-4, 0.01)
    assert cfg.MODEL == ("fusenet" if dataset.endswith("_fusion") else "segnet")


def test_unknown_name_in_file_suggests_closest(tmp_path):
    path = write_config(tmp_path, "ITERATONS = 5\n")
    with pytest.raises(EosegError) as info:
        load_config(path)
    assert "did you mean ITERATIONS?" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_name_in_override_suggests_closest():
    with pytest.raises(EosegError, match=r"ITERATONS.*did you mean ITERATIONS\?"):
        load_config(overrides=["ITERATONS=5"])


def test_lowercase_and_private_names_in_file_are_ignored(tmp_path):
    path = write_config(tmp_path, """
        import math
        _HELPER = 3
        helper = math.pi
        ITERATIONS = _HELPER * 10
    """)
    assert load_config(path).ITERATIONS == 30


@pytest.mark.parametrize("name", ["Patch_Size", "iterations", "model_width"])
def test_a_config_name_in_another_case_is_refused_not_ignored(tmp_path, name):
    path = write_config(tmp_path, f"{name} = 32\n")
    with pytest.raises(EosegError, match=rf"my_run.py: {name} is not a config name: config names are upper case "
                                         rf"\({name.upper()}\)"):
        load_config(path)


def test_a_config_file_imports_another_beside_it(tmp_path):
    """A base config for one's data and experiments on it, each importing the base."""
    write_config(tmp_path, "DATA_ROOT = 'my_data'\nPATCH_SIZE = 64\n", name="my_base.py")
    (tmp_path / "experiments").mkdir()
    experiment = write_config(tmp_path / "experiments", "from my_base import *\nPATCH_SIZE = 32\n", name="small.py")
    write_config(tmp_path / "experiments", "DATA_ROOT = 'other'\n", name="my_base.py")
    write_config(tmp_path, "from my_base import *\nITERATIONS = 7\n", name="long.py")
    cfg = load_config(tmp_path / "long.py")
    assert (cfg.DATA_ROOT, cfg.PATCH_SIZE, cfg.ITERATIONS) == ("my_data", 64, 7)
    cfg = load_config(experiment)  # its own folder's my_base, not the one imported before
    assert (cfg.DATA_ROOT, cfg.PATCH_SIZE) == ("other", 32)


def test_a_config_file_that_copies_config_py_in_or_exits_is_refused(tmp_path):
    """'from config import *' made every default one the file sets: the sample preset's patch size and time budget
    went, the record still naming DATASET "sample" (review)."""
    star = write_config(tmp_path, "DATASET = 'sample'\nfrom config import *\nPATCH_SIZE = 64\n", name="mine.py")
    refused = r"it takes every name of eoseg's config.py \('from config import \*', in it or in a file it imports\)"
    with pytest.raises(EosegError, match=rf"mine.py: {refused}"):
        load_config(star)
    (tmp_path / "base").mkdir()  # through a base config (code review: passed)
    write_config(tmp_path / "base", "from config import *\n", name="base.py")
    through = write_config(tmp_path / "base", "from base import *\nDATASET = 'sample'\n", name="exp.py")
    with pytest.raises(EosegError, match=rf"exp.py: {refused}"):
        load_config(through)
    (tmp_path / "own").mkdir()  # a user's own base named config.py is theirs to import (code review: refused)
    write_config(tmp_path / "own", "PATCH_SIZE = 64\n", name="config.py")
    assert load_config(write_config(tmp_path / "own", "from config import *\n", name="exp.py")).PATCH_SIZE == 64
    leaving = write_config(tmp_path, "import sys\nPATCH_SIZE = 64\nsys.exit(0)\n", name="leaving.py")
    with pytest.raises(EosegError, match=r"leaving.py: the config calls exit \(0\) while it is read"):  # exit 0, no work
        load_config(leaving)


@pytest.mark.parametrize("setting", ["BANDS=None", "TRAIN_IDS=None", "CLASS_NAMES=None", "NORM_STD=None", "WINDOW=None"])
def test_none_is_refused_where_the_name_takes_no_none(tmp_path, setting):
    name = setting.split("=")[0]
    with pytest.raises(EosegError, match=rf"override '{setting}': {name} expects a"):
        load_config(overrides=[setting])
    with pytest.raises(EosegError, match=rf"{name} expects a"):
        load_config(write_config(tmp_path, f"{name} = None\n"))
    assert load_config(overrides=["IGNORE_COLOR=None"]).IGNORE_COLOR is None  # the one that takes it


@pytest.mark.parametrize(
    "override,name",
    [
        ("ITERATIONS=abc", "ITERATIONS"),
        ("ITERATIONS=1.5", "ITERATIONS"),
        ("FLIPS=3", "FLIPS"),
        ("LR_STEPS=5", "LR_STEPS"),
        ("BASE_LR='fast'", "BASE_LR"),
        ("BASE_LR=True", "BASE_LR"),
    ],
)
def test_wrong_override_types_refused(override, name):
    with pytest.raises(EosegError, match=rf"{name} expects a"):
        load_config(overrides=[override])


@pytest.mark.parametrize("text", ["ITERATIONS = 'abc'\n", "FLIPS = 3\n", "BANDS = 3\n", "DEVICE = 0\n"])
def test_wrong_types_in_file_refused(tmp_path, text):
    path = write_config(tmp_path, text)
    with pytest.raises(EosegError, match="expects a"):
        load_config(path)


@pytest.mark.parametrize("raw,expected", [("FLIPS=false", False), ("FLIPS=True", True), ("FLIPS=False", False)])
def test_bool_overrides(raw, expected):
    assert load_config(overrides=[raw]).FLIPS is expected


def test_int_for_float_name_accepted_as_float_in_override():
    cfg = load_config(overrides=["BASE_LR=1", "MODEL_WIDTH=1"])
    assert cfg.BASE_LR == 1.0 and type(cfg.BASE_LR) is float
    assert type(cfg.MODEL_WIDTH) is float


def test_int_for_float_name_accepted_in_file(tmp_path):
    path = write_config(tmp_path, "BASE_LR = 1\n")
    cfg = load_config(path)
    assert cfg.BASE_LR == 1.0


def test_int_for_float_name_converted_to_float_in_file(tmp_path):
    path = write_config(tmp_path, "BASE_LR = 1\n")
    assert type(load_config(path).BASE_LR) is float


def test_string_override_kept_verbatim():
    cfg = load_config(overrides=["DEVICE=cuda:1", "MODEL_FILE=models/a=b.pt"])
    assert cfg.DEVICE == "cuda:1"
    assert cfg.MODEL_FILE == "models/a=b.pt"  # only the first '=' splits
    assert load_config(overrides=["DATA_ROOT=\"/data/my city\"", "INFER_DIR='out'"]).to_dict()["DATA_ROOT"] == "/data/my city"
    assert load_config(overrides=["INFER_DIR='out'"]).INFER_DIR == "out"  # quoted as in Python: the quotes are not the name


def test_list_override():
    cfg = load_config(overrides=["ROTATIONS=[90, 270]", "TRAIN_IDS=['1', '3']"])
    assert cfg.ROTATIONS == [90, 270]
    assert cfg.tile_ids("train") == ["1", "3"]


def test_one_item_for_a_list_is_refused_with_the_list_to_write():
    with pytest.raises(EosegError, match=r"""TRAIN_IDS expects a list of str .*, got 1; a list is written in brackets, """
                                         r"""quoted for the shell: TRAIN_IDS="\['1'\]"$"""):
        load_config(overrides=["TRAIN_IDS=1"])
    assert load_config(overrides=["TRAIN_IDS=['1']"]).tile_ids("train") == ["1"]  # what the message says works
    # Python reads 2_10 as 210: the example gave tile 210 (review)
    with pytest.raises(EosegError, match=r"""got 210; .*: TEST_IDS="\['2_10'\]"$"""):
        load_config(overrides=["TEST_IDS=2_10"])


def test_ignore_given_for_a_class_id_setting_names_the_id_that_means_it(tmp_path):
    """LABEL_VALUES takes 'ignore'; VECTOR_BACKGROUND_CLASS='ignore' was "expects an int" alone (review)."""
    with pytest.raises(EosegError, match=r"got 'ignore'; for unlabelled pixels give it IGNORE_LABEL's value \(255 by "
                                         r"default\)$"):
        load_config(overrides=["VECTOR_BACKGROUND_CLASS=ignore"])
    path = write_config(tmp_path, "VECTOR_BACKGROUND_CLASS = 'ignore'\n")
    with pytest.raises(EosegError, match=r"VECTOR_BACKGROUND_CLASS expects an int, got 'ignore'; for unlabelled pixels"):
        load_config(path)


def test_a_list_of_texts_may_be_typed_without_quotes_each_item_as_typed():
    """[aachen_1,aachen_2] was refused with the example "['[aachen_1,aachen_2]']", one id; [2_10] was tile 210 (review)."""
    cfg = load_config(overrides=["TEST_IDS=[aachen_1, aachen_2]", "BAND_NAMES=[R,G,B]", "VAL_IDS=[2_10, 07]", "TTA=[fliplr]"])
    assert (cfg.TEST_IDS, cfg.BAND_NAMES, cfg.VAL_IDS, cfg.TTA) == (["aachen_1", "aachen_2"], ["R", "G", "B"],
                                                                   ["2_10", "07"], ["fliplr"])
    assert load_config(overrides=["TRAIN_IDS=[1, 2]", "TEST_IDS=['*', '!3']"]).TEST_IDS == ["*", "!3"]
    names = load_config(overrides=["CLASS_NAMES=[background, 'trees, bushes']", "PALETTE=[[9, 9, 9], [0, 255, 0]]"])
    assert names.CLASS_NAMES == ["background", "trees, bushes"]  # a quoted item keeps its commas (code review)
    with pytest.raises(EosegError, match=r"LR_STEPS expects a list .*got '\[a\]'$"):  # numbers: no text read into them
        load_config(overrides=["LR_STEPS=[a]"])


def test_syntax_error_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "ITERATIONS = 5\nBATCH_SIZE = (\nDEVICE = 'cpu'\n")
    with pytest.raises(EosegError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 2" in message
    assert "syntax error" in message


def test_file_raising_while_run_is_reported(tmp_path):
    path = write_config(tmp_path, "ITERATIONS = 1 // 0\n")
    with pytest.raises(EosegError, match="ZeroDivisionError"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(EosegError, match="not found"):
        load_config(tmp_path / "nope.py")


# ---------------------------------------------------------------- consistency checks
def test_palette_length_must_match_class_names():
    with pytest.raises(EosegError, match=r"PALETTE has 5 colours but CLASS_NAMES has 6"):
        load_config(overrides=["PALETTE=[[1,1,1],[2,2,2],[3,3,3],[4,4,4],[5,5,5]]"])


def test_norm_mean_length_must_match_bands():
    with pytest.raises(EosegError, match=r"NORM_MEAN has 2 entries but BANDS selects 3"):
        load_config(overrides=["NORM_MEAN=[0.0, 0.0]"])
    with pytest.raises(EosegError, match="BAND_NAMES"):
        load_config(overrides=["BANDS=[1, 2, 3, 4]"])
    # a one-band image under config.py's three-band normalisation: the lines to write, for its one band
    with pytest.raises(EosegError, match=re.escape("NORM_MEAN = [0.0] and NORM_STD = [255.0] map 8-bit values")):
        load_config(overrides=["BANDS=[1]", "BAND_NAMES=['PAN']"])
    cfg = load_config(overrides=["BANDS=[1]", "BAND_NAMES=['PAN']", "NORM_MEAN=[0.0]", "NORM_STD=[255.0]"])
    assert cfg.stacked_std == [255.0]


@pytest.mark.parametrize("rotations", ["[45]", "[90, 45]", "[0]", "[360]"])
def test_rotations_must_be_right_angles(rotations):
    with pytest.raises(EosegError, match="ROTATIONS"):
        load_config(overrides=[f"ROTATIONS={rotations}"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("NORM_STD=[255.0, 0.0, 255.0]", "NORM_STD"),
        ("NORM_STD=[255.0, -255.0, 255.0]", r"NORM_STD values are standard deviations, above 0"),
        ("BANDS=[0, 1, 2]", "1-based"),
        ("PATCH_SIZE=0", "PATCH_SIZE"),
        ("STRIDE=-1", "STRIDE"),
        ("CLASS_WEIGHTS=[1.0, 2.0]", "CLASS_WEIGHTS"),
        ("TRAIN_SOURCE=disk", "TRAIN_SOURCE"),
        ("IGNORE_LABEL=3", "collides"),
        ("IGNORE_COLOR=[255, 0, 0]", "IGNORE_COLOR"),
        ("INFER_PIXEL_SIZE=0", "INFER_PIXEL_SIZE must be None"),
        ("INFER_PIXEL_SIZE=model", "INFER_PIXEL_SIZE must be None"),
        ("INFER_PIXEL_SIZE=True", "INFER_PIXEL_SIZE must be None"),
        ("LABEL_TOLERANCE=128", r"\(255, 255, 255\) and \(0, 0, 255\) differ by 255 levels.*use at most 127"),
        ("LABEL_TOLERANCE=-1", "LABEL_TOLERANCE is a whole number of levels >= 0"),
        ("LABEL_VALUES={0: 'ignore', 1: 0, 3: 1}|LABEL_TOLERANCE=1", "LABEL_VALUES values 0 and 1 differ by 1 levels"),
        ("CLASS_NAMES=['building']|PALETTE=[[255, 255, 255]]", r"CLASS_NAMES has 1 class: .*the pixels of no interest are "
                                                              r"a class too, e.g. CLASS_NAMES = \['background', 'building'\]"),
        ("CLASS_NAMES=['a', 'tree', 'b', 'c', 'tree', 'd']", r"CLASS_NAMES names 'tree' more than once: each class needs a "
                                                            r"name of its own .*map their values to one class in LABEL_VALUES"),
        ("CLASS_NAMES=['water', 'b', 'c', 'd', 'e', 'Water ']", r"CLASS_NAMES names 'Water ', 'water' more than once"),
        ("BLEND=gauss", "BLEND must be one of 'uniform', 'gaussian', got 'gauss'"),
        ("TTA=['flip']", r"TTA may hold 'fliplr', .*; got \['flip'\]"),
        ("INFER_ENGINE=onnx", "INFER_ENGINE must be one of 'torch', 'onnxruntime', got 'onnx'"),
        ("LABEL_PATTERN=polygons.gpkg|VECTOR_POLYGON_CLASS=6", "VECTOR_POLYGON_CLASS must be a class id 0..5"),
        ("POLYGON_SIMPLIFY=-1", r"POLYGON_SIMPLIFY must be 0 or more \(CRS units\), got -1.0"),  # refused once labelled
        ("POLYGON_MIN_AREA=-0.5", r"POLYGON_MIN_AREA must be 0 or more"),
    ],
)
def test_other_inconsistent_settings_refused(override, match):
    with pytest.raises(EosegError, match=match):
        load_config(overrides=override.split("|"))


def test_vector_settings_are_not_checked_for_raster_labels():
    cfg = load_config(overrides=["CLASS_NAMES=['background', 'building']", "PALETTE=[[0, 0, 0], [255, 255, 255]]",
                                 "IGNORE_COLOR=None"])
    assert cfg.VECTOR_POLYGON_CLASS == 1 and load_config(overrides=["VECTOR_POLYGON_CLASS=9"]).VECTOR_POLYGON_CLASS == 9


def test_infer_pixel_size_takes_metres_or_image():
    assert load_config(overrides=["INFER_PIXEL_SIZE=0.09"]).INFER_PIXEL_SIZE == 0.09
    assert load_config(overrides=["INFER_PIXEL_SIZE=image"]).INFER_PIXEL_SIZE == "image"
    assert load_config(overrides=["INFER_PIXEL_SIZE=None"]).INFER_PIXEL_SIZE is None


def test_four_band_config_is_consistent():
    cfg = load_config(overrides=[
        "BANDS=[1, 2, 3, 4]", "BAND_NAMES=['IR', 'R', 'G', 'DSM']",
        "NORM_MEAN=[0.0, 0.0, 0.0, 0.0]", "NORM_STD=[255.0, 255.0, 255.0, 255.0]",
    ])
    assert cfg.num_bands == 4


# ---------------------------------------------------------------- replace, save, tile paths
def test_replace_is_checked_and_does_not_mutate():
    cfg = load_config()
    before = cfg.to_dict()
    small = cfg.replace(ITERATIONS=3, MODEL_WIDTH=0.125)
    assert small.ITERATIONS == 3 and small.MODEL_WIDTH == 0.125
    assert cfg.to_dict() == before and before["ITERATIONS"] != 3
    with pytest.raises(EosegError, match="did you mean ITERATIONS"):
        cfg.replace(ITERATONS=3)
    with pytest.raises(EosegError, match="ITERATIONS expects"):
        cfg.replace(ITERATIONS="three")
    with pytest.raises(EosegError, match="ROTATIONS"):
        cfg.replace(ROTATIONS=[45])


def test_save_writes_json_that_loads_back(tmp_path):
    cfg = load_config(overrides=["ITERATIONS=42", "DATASET=vaihingen"])
    path = cfg.save(tmp_path / "out")
    assert path == tmp_path / "out" / "config.json"
    record = json.loads(path.read_text())
    assert record["config"] == cfg.to_dict()
    assert record["config"]["ITERATIONS"] == 42
    assert record["config"]["OFFICIAL_TEST_IDS"] == VAIHINGEN_OFFICIAL_TEST
    assert record["sources"] == cfg.sources
    assert record["working_directory"] == os.getcwd()  # what relative paths were taken from
    assert record["eoseg_version"] == eoseg.__version__
    # no temporary file left behind
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_tile_path_formats_id():
    cfg = load_config(overrides=["DATA_ROOT=/data/v"])
    assert cfg.tile_path("IMAGE_PATTERN", "7") == Path("/data/v/top/top_mosaic_09cm_area7.tif")
    assert cfg.tile_path("GT_ERODED_PATTERN", "30") == Path(
        "/data/v/gts_eroded_for_participants/top_mosaic_09cm_area30_noBoundary.tif"
    )
    potsdam = load_config(overrides=["DATASET=potsdam"])
    assert potsdam.tile_path("IMAGE_PATTERN", "2_10") == Path("data/Potsdam/2_Ortho_RGB/top_potsdam_2_10_RGB.tif")
    # Potsdam's DSMs number tile 2_10 02_10: a pattern names the id's pieces, padded
    assert potsdam.tile_path("DSM_PATTERN", "2_10") == Path("data/Potsdam/1_DSM/dsm_potsdam_02_10.tif")
    assert potsdam.tile_path("DSM_PATTERN", "7_12") == Path("data/Potsdam/1_DSM/dsm_potsdam_07_12.tif")


def test_a_pattern_of_the_ids_pieces_names_a_file_per_tile():
    from eoseg.config import uses_tile_id
    assert uses_tile_id("dsm/{part[1]}.tif") and uses_tile_id("{id}.tif") and not uses_tile_id("dsm/mosaic.tif")
    assert uses_tile_id("dsm/{part}.tif")  # the pieces all at once: one file per tile all the same
    cfg = load_config(overrides=["DATA_ROOT=data", "DSM_PATTERN=dsm/{part[0]}/{part[2]:0>3}.tif"])
    assert cfg.tile_path("DSM_PATTERN", "austin_a_7") == Path("data/dsm/austin/007.tif")
    with pytest.raises(EosegError, match=r"DSM_PATTERN 'dsm/\{part\[0\]\}/\{part\[2\]:0>3\}.tif': bad pattern for tile "
                                         r"'2_10' \(IndexError: .*\); use \{id\} for the tile id, \{part\[0\]\} .. "
                                         r"\{part\[1\]\} for its pieces between underscores"):
        cfg.tile_path("DSM_PATTERN", "2_10")


def test_tile_path_bad_pattern_and_empty_pattern():
    cfg = load_config(overrides=["IMAGE_PATTERN=top/{tile}.tif", "DSM_PATTERN="])
    with pytest.raises(EosegError, match=r"IMAGE_PATTERN.*\{id\}"):
        cfg.tile_path("IMAGE_PATTERN", "1")
    assert cfg.tile_path("DSM_PATTERN", "1") is None


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_id_globs_find_the_tiles_image_pattern_finds_in_natural_order(tmp_path):
    touch(tmp_path, *(f"img/austin{i}.tif" for i in (1, 2, 10, 11)), "img/vienna3.tif", "img/vienna3.tif.aux.xml",
          "img/notes.txt", "labels/austin1.tif")
    cfg = load_config(overrides=[f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=img/{id}.tif", "VAL_IDS=['vienna?']",
                                 "TRAIN_IDS=['austin*', '!austin1?', 'austin11', 'vienna3']", "TEST_IDS=['*[0-9]']"])
    assert cfg.tile_ids("train") == ["austin1", "austin2", "austin11", "vienna3"]  # listed ids kept, in the list's order
    assert cfg.tile_ids("test") == ["austin1", "austin2", "austin10", "austin11", "vienna3"]
    assert cfg.ids("VAL_IDS") == ["vienna3"]
    record = json.loads(cfg.save(tmp_path / "run").read_text())
    assert record["tile_ids"] == {"TRAIN_IDS": cfg.tile_ids("train"), "TEST_IDS": cfg.tile_ids("test"), "VAL_IDS": ["vienna3"]}
    assert record["config"]["TRAIN_IDS"] == ["austin*", "!austin1?", "austin11", "vienna3"]  # as written


def test_an_id_with_glob_characters_is_the_image_of_that_name(tmp_path):
    touch(tmp_path, "img/scene[5].tif", "img/scene6.tif")
    settings = [f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=img/{id}.tif"]
    assert load_config(overrides=[*settings, "TEST_IDS=['scene[5]']"]).tile_ids("test") == ["scene[5]"]
    assert load_config(overrides=[*settings, "TEST_IDS=['scene[56]']"]).tile_ids("test") == ["scene6"]  # a pattern
    touch(tmp_path, "img/scene5.tif")
    cfg = load_config(overrides=[*settings, "TEST_IDS=['scene[5]']"])
    with pytest.raises(EosegError, match=r"TEST_IDS entry 'scene\[5\]' is an image's id and a pattern matching the ids "
                                         r"scene5; write 'scene\[\[\]5\]' for the id alone"):
        cfg.tile_ids("test")
    assert load_config(overrides=[*settings, "TEST_IDS=['scene[[]5]']"]).tile_ids("test") == ["scene[5]"]


def test_ids_alike_in_natural_order_come_in_one_order_whatever_the_run(tmp_path):
    """"1" and "01" tie in natural order: their order followed the set's, which changes from run to run, and the
    patches' train_tiles then mismatched the config's at random (review)."""
    touch(tmp_path, "img/01.tif", "img/1.tif", "img/001.tif", "img/2.tif")
    cfg = load_config(overrides=[f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=img/{id}.tif", "TRAIN_IDS=['*']"])
    assert cfg.tile_ids("train") == ["001", "01", "1", "2"]


def test_id_glob_takes_a_folder_named_by_the_id_and_an_id_used_twice(tmp_path):
    touch(tmp_path, "tiles/t_7/t_7_rgb.tif", "tiles/t_8/t_8_rgb.tif", "tiles/t_9/other_rgb.tif")
    cfg = load_config(overrides=[f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=tiles/{id}/{id}_rgb.tif", "TRAIN_IDS=['t_*']"])
    assert cfg.tile_ids("train") == ["t_7", "t_8"]


def test_id_glob_finds_the_ids_of_a_pattern_that_names_their_pieces(tmp_path):
    """OpenEarthMap's aachen/images/aachen_1.tif: {part[0]} in IMAGE_PATTERN made every glob find nothing, shown
    under a path garbled by glob escapes (review)."""
    touch(tmp_path, "aachen/images/aachen_1.tif", "aachen/images/aachen_2.tif", "zanzibar/images/zanzibar_1.tif",
          "zanzibar/images/aachen_3.tif", "aachen/images/notes_1.tif")  # a city's image in another city's folder: no tile
    settings = [f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN={part[0]}/images/{id}.tif"]
    assert load_config(overrides=[*settings, "TRAIN_IDS=['*', '!zanzibar_1']"]).tile_ids("train") == ["aachen_1", "aachen_2"]
    assert load_config(overrides=[*settings, "TRAIN_IDS=['zanzibar_*']"]).tile_ids("train") == ["zanzibar_1"]
    touch(tmp_path, "a/a_a_1.tif")  # a piece and the id in one name: the split the pattern gives (code review)
    assert load_config(overrides=[f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN={part[0]}/{part[0]}_{id}.tif",
                                  "TRAIN_IDS=['*']"]).tile_ids("train") == ["a_1"]
    touch(tmp_path, "top/x_2_10.tif", "dsm/02_10/x_2_10.tif", "dsm/2_11/x_2_11.tif")  # padded pieces: as the pattern pads
    padded = [f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=dsm/{part[1]:0>2}_{part[2]}/{id}.tif", "TRAIN_IDS=['x_*']"]
    assert load_config(overrides=padded).tile_ids("train") == ["x_2_10"]


def test_ids_and_globs_compare_in_one_unicode_form(tmp_path):
    """"!zü*" took out a name macOS wrote (decomposed), but "zü*" found nothing (code review)."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "zürich_1")
    touch(tmp_path, f"img/{decomposed}.tif", "img/bern_1.tif")
    settings = [f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=img/{id}.tif"]
    assert load_config(overrides=[*settings, "TRAIN_IDS=['zü*']"]).tile_ids("train") == [decomposed]
    assert load_config(overrides=[*settings, "TRAIN_IDS=['*', '!zü*']"]).tile_ids("train") == ["bern_1"]
    with pytest.raises(EosegError, match="takes out none of the ids before it, but for the case of their letters"):
        load_config(overrides=[*settings, "TRAIN_IDS=['*', '!Zürich_1']"]).tile_ids("train")


def test_a_pattern_names_files_whose_fields_stand_for_one_name_each(tmp_path):
    """IMAGE_PATTERN "{id}.tif" took ground truth in gt/ for an image: a field spanned folders (code review)."""
    from eoseg.config import matches_pattern

    assert matches_pattern(str(tmp_path), "{id}.tif", tmp_path / "1.tif")
    assert not matches_pattern(str(tmp_path), "{id}.tif", tmp_path / "gt" / "1.tif")
    assert matches_pattern(str(tmp_path), "gt/{part[0]:0>2}_{id}_mask.png", tmp_path / "gt" / "02_2_x_mask.png")
    assert not matches_pattern(str(tmp_path), "", tmp_path / "1.tif")


def test_id_glob_that_finds_nothing_is_one_line_naming_where_it_looked(tmp_path):
    cfg = load_config(overrides=[f"DATA_ROOT={tmp_path}", "IMAGE_PATTERN=img/{id}.tif", "TRAIN_IDS=['austin*']"])
    with pytest.raises(EosegError, match=r"TRAIN_IDS: 'austin\*' matches no image: no file .*img/\{id\}\.tif with \{id\} "
                                         r"'austin\*'; check DATA_ROOT and IMAGE_PATTERN"):
        cfg.tile_ids("train")
    assert "tile_ids" not in json.loads(cfg.save(tmp_path / "run").read_text())  # a config is saved where no image is


def test_unknown_split_refused():
    with pytest.raises(EosegError, match="unknown split"):
        load_config().tile_ids("validation")


def test_missing_attribute_is_attribute_error():
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.NOT_A_NAME  # noqa: B018
    assert not hasattr(cfg, "NOT_A_NAME")


def test_inference_stride_larger_than_window_refused():
    with pytest.raises(EosegError, match="STRIDE"):
        load_config(overrides=["WINDOW=64", "STRIDE=100"])


def test_steps_asked_for_under_a_presets_time_budget_are_refused(tmp_path):
    """The sample preset trains for TRAIN_MINUTES=5: ITERATIONS=2 on the command line would run five minutes of steps."""
    with pytest.raises(EosegError, match=r"^ITERATIONS=2 \(the overrides\) counts steps, but TRAIN_MINUTES=5 \(preset "
                                         r"'sample'\) sets a time budget, which decides instead; set TRAIN_MINUTES=0"):
        load_config(overrides=["ITERATIONS=2"])
    assert load_config(overrides=["ITERATIONS=2", "TRAIN_MINUTES=0"]).ITERATIONS == 2
    assert load_config(overrides=["TRAIN_MINUTES=1"]).TRAIN_MINUTES == 1.0  # a budget given last decides: clear
    own = tmp_path / "own.py"
    own.write_text('DATASET = "sample"\nITERATIONS = 100\n')
    with pytest.raises(EosegError, match=rf"^ITERATIONS=100 \({re.escape(str(own))}\) counts steps"):
        load_config(own)
    own.write_text("ITERATIONS = 100\nTRAIN_MINUTES = 3.0\n")  # both in one file (a copy of config.py): the budget
    assert load_config(own).TRAIN_MINUTES == 3.0


@pytest.mark.parametrize("overrides, refusal", [
    (["PATCHES_DIR=runs/x", "LMDB_DIR=runs/x"], "PATCHES_DIR and LMDB_DIR are one folder (runs/x)"),
    (["INFER_DIR=runs/t", "TRAIN_DIR=runs/t"], "TRAIN_DIR and INFER_DIR are one folder"),
    (["TRAIN_DIR=data"], "TRAIN_DIR data holds DATA_ROOT data/sample: its step would write among the data"),
    (["PATCHES_DIR=."], "PATCHES_DIR . holds DATA_ROOT"),
    (["LMDB_DIR=runs/p/lmdb", "PATCHES_DIR=runs/p"], "LMDB_DIR runs/p/lmdb lies inside PATCHES_DIR runs/p, which its step "
                                                      "replaces whole (its --force would delete it)"),
    (["MODEL_FILE=runs/sample/lmdb/m.pt"], "MODEL_FILE runs/sample/lmdb/m.pt lies inside LMDB_DIR"),
])
def test_output_folders_that_hold_the_data_or_one_another_are_refused(overrides, refusal):
    """A PATCHES_DIR holding the data, or an LMDB_DIR holding the training run: one step's --force deleted them
    (review); one folder for two steps mixed their records."""
    with pytest.raises(EosegError) as refused:
        load_config(overrides=overrides)
    assert refusal in str(refused.value)
    load_config(overrides=["TRAIN_DIR=runs/train_2", "INFER_DIR=runs/train_2/labels", "MODEL_FILE=runs/train_2/m.pt"])


def test_the_folders_scripts_take_as_flags_are_checked_as_their_settings_are(tmp_path):
    """inference.py --out DATA_ROOT wrote maps, metrics and config among the tiles with exit 0, where INFER_DIR so is
    refused (review)."""
    from .conftest import run_script
    from .test_cli import assert_one_line_error

    assert_one_line_error(run_script("inference.py", "--out", "data/sample"),
                          "--out data/sample holds DATA_ROOT data/sample: its step would write among the data")
    assert_one_line_error(run_script("inference.py", "--out", "runs/sample/train"),
                          "TRAIN_DIR and --out are one folder (runs/sample/train)")
    # nor inside a folder another step's --force replaces whole (review: the LMDBs, or the patches, deleted unsaid)
    assert_one_line_error(run_script("create_lmdb.py", "--out", "runs/sample/patches/lmdb"),
                          "--out runs/sample/patches/lmdb lies inside PATCHES_DIR runs/sample/patches, which its step "
                          "replaces whole")
    assert_one_line_error(run_script("extract_images.py", "--out", "runs/sample/lmdb/patches"),
                          "--out runs/sample/lmdb/patches lies inside LMDB_DIR")
    assert_one_line_error(run_script("create_lmdb.py", "--patches", "runs/sample/lmdb/patches"),
                          "--patches runs/sample/lmdb/patches lies inside LMDB_DIR")
