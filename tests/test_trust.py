"""Trust (issue 15): no silent wrong result, no lost run, one clear line for every user mistake.

Each case runs the real script as a user would, with the tiny sample and tiny settings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import as_arguments, make_tiny_config, run_script, tiny_overrides
from .test_cli import assert_one_line_error

pytestmark = pytest.mark.faults


def arguments(root: Path, data: Path, **extra) -> list[str]:
    return as_arguments({**tiny_overrides(root), "DATA_ROOT": str(data), "WRITE_PREVIEW": False, **extra})


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Untrained tiny weights for the tiny config."""
    import torch

    from eoseg.checkpoint import save_checkpoint
    from eoseg.models import model_from_config

    root = tmp_path_factory.mktemp("weights")
    cfg = make_tiny_config(root)
    torch.manual_seed(0)
    return save_checkpoint(root / "tiny.pt", cfg, model_from_config(cfg), iteration=0)


# ---------------------------------------------------------------- configuration
def test_numbers_and_tile_ids_that_would_fail_later():
    from eoseg.config import load_config
    from eoseg.errors import EosegError

    assert_one_line_error(run_script("convert_gt.py", "--from-color", "SEED=4294967296", "TEST_IDS=['a/b']"),
                          "SEED must be in 0..4294967295", "4294967296")
    for override, message in (("SHUFFLE_SEED=-1", "SHUFFLE_SEED must be in 0..4294967295"),
                              ("BASE_LR=-0.01", "BASE_LR must not be negative"),
                              ("TEST_IDS=['a/b']", "TEST_IDS: tile id 'a/b' cannot be part of a file name"),
                              ("TRAIN_IDS=['..']", "TRAIN_IDS: tile id '..' cannot be part of a file name")):
        with pytest.raises(EosegError, match=re.escape(message)):
            load_config(overrides=[override])


def test_json_given_as_config(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"config": {"WRITE_COG": False, "VGG16_BN_WEIGHTS": None}}))
    assert_one_line_error(run_script("convert_gt.py", "--from-color", "--config", str(config)),
                          "config.json", "this is JSON", "Python file")


# ---------------------------------------------------------------- training never destroys earlier work
def training_arguments(tmp_path: Path, sample_root: Path, **extra) -> list[str]:
    return arguments(tmp_path, sample_root / "data", TRAIN_SOURCE="tiles", VAL_EVERY=0, **extra)


def test_a_run_stopped_before_its_first_checkpoint_is_started_over_with_force(tmp_path, sample_root):
    """Neither a plain run nor --resume can take such a folder: both must point at --force, not at each other."""
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    (train_dir / "config.json").write_text("{}")
    (train_dir / "log.csv").write_text("iteration,loss\n")
    for extra in ((), ("--resume",)):
        result = run_script("training.py", *extra, *training_arguments(tmp_path, sample_root))
        assert_one_line_error(result, str(train_dir), "stopped before its first checkpoint", "--force")
        assert "--resume" not in result.stderr
    assert (train_dir / "log.csv").read_text() == "iteration,loss\n"


@pytest.mark.parametrize("model_file,expected", [("folder", "is a folder; give a file name"),
                                                   ("m" * 245 + ".pt", "its name is too long for the file system")])
def test_a_model_file_that_could_not_be_written_is_refused_before_training(tmp_path, sample_root, model_file, expected):
    (tmp_path / "folder").mkdir()
    result = run_script("training.py", *training_arguments(tmp_path, sample_root, MODEL_FILE=str(tmp_path / model_file)))
    assert_one_line_error(result, "MODEL_FILE", expected)
    assert not (tmp_path / "train").exists()


def test_training_refuses_a_folder_holding_a_run(tmp_path, sample_root):
    train_dir = tmp_path / "train"
    (train_dir / "checkpoints").mkdir(parents=True)
    (train_dir / "checkpoints" / "iter_0000001.pt").write_bytes(b"a checkpoint")
    (train_dir / "log.csv").write_text("iteration,loss\n1,2.0\n")
    result = run_script("training.py", *training_arguments(tmp_path, sample_root))
    assert_one_line_error(result, str(train_dir), "already holds a training run", "--resume", "--force")
    assert (train_dir / "log.csv").read_text() == "iteration,loss\n1,2.0\n"
    assert not list(tmp_path.glob(".train.*"))  # the lock went with the run

    (tmp_path / "model.pt").write_bytes(b"earlier weights")
    shutil.rmtree(train_dir)
    result = run_script("training.py", *training_arguments(tmp_path, sample_root))
    assert_one_line_error(result, "MODEL_FILE", "model.pt", "already exists", "--force")
    assert (tmp_path / "model.pt").read_bytes() == b"earlier weights"


def test_training_refuses_a_folder_another_run_is_writing(tmp_path, sample_root):
    from eoseg.io import exclusive_or_refuse

    with exclusive_or_refuse(tmp_path / ".train.lock", "held by the test"):
        result = run_script("training.py", *training_arguments(tmp_path, sample_root))
    assert_one_line_error(result, "another training run is writing", str(tmp_path / "train"))
    assert not (tmp_path / "train").exists()


def test_training_refuses_a_model_file_another_run_will_write(tmp_path, sample_root):
    """Two TRAIN_DIRs, one MODEL_FILE: the run ending last would silently replace the other's weights."""
    from eoseg.io import exclusive_or_refuse

    with exclusive_or_refuse(tmp_path / ".model.pt.lock", "held by the test"):
        result = run_script("training.py", *training_arguments(tmp_path, sample_root, TRAIN_DIR=str(tmp_path / "other")))
    assert_one_line_error(result, "another training run will write MODEL_FILE", str(tmp_path / "model.pt"))
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other.*"))


@pytest.fixture
def immutable_folder(tmp_path):
    """A folder nobody may write into, not even root (whom permissions do not stop)."""
    import subprocess

    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_model_folder_refused_before_training(tmp_path, sample_root, immutable_folder):
    result = run_script("training.py", *training_arguments(tmp_path, sample_root,
                                                           MODEL_FILE=str(immutable_folder / "sub" / "model.pt")))
    assert_one_line_error(result, "folder of MODEL_FILE", "locked", "cannot be written")
    assert not (tmp_path / "train").exists()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    result = run_script("training.py", *training_arguments(tmp_path, sample_root, TRAIN_DIR=str(blocked / "train")))
    assert_one_line_error(result, "TRAIN_DIR", "a_file is a file, not a folder")


def test_forced_run_skips_unlabelled_batches_and_replaces_the_earlier_run(tmp_path, sample_root):
    import csv

    import rasterio

    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    labels = data / "labels" / "top_mosaic_09cm_area2.tif"
    with rasterio.open(labels, "r+") as dst:  # tile 2 is all nodata: none of its crops has a label
        dst.write(np.full((dst.height, dst.width), 255, dtype=dst.dtypes[0]), 1)
    earlier = tmp_path / "train" / "checkpoints" / "iter_0000099.pt"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier run's checkpoint")
    (tmp_path / "model.pt").write_bytes(b"earlier weights")
    result = run_script("training.py", "--force", *arguments(tmp_path, data, TRAIN_SOURCE="tiles", VAL_EVERY=0,
                                                             TRAIN_IDS=["1", "2"], TEST_IDS=["2", "4"], HOLDOUT_BLOCK=0, BATCH_SIZE=1,
                                                             ITERATIONS=6))
    assert result.returncode == 0, result.stderr
    assert "warning: tiles 2 are in both TRAIN_IDS and TEST_IDS" in result.stderr
    assert not earlier.exists() and (tmp_path / "model.pt").read_bytes() != b"earlier weights"
    with open(tmp_path / "train" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    skipped = sum(int(r["unlabelled_batches"]) for r in rows)
    assert 0 < skipped < 6 and all(np.isfinite(float(r["loss"])) for r in rows if r["loss"])
    assert "without a labelled pixel" in result.stdout
    from eoseg.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "model.pt")["signature"]["input_dtype"] == "uint8"  # what the tiles hold


def test_diverging_loss_names_its_cause_on_its_own_line(tmp_path, sample_root):
    result = run_script("training.py", *training_arguments(tmp_path, sample_root, BASE_LR=1e12, MOMENTUM=0.0))
    assert_one_line_error(result, "the loss became nan", "lower BASE_LR")


# ---------------------------------------------------------------- scoring
def test_all_black_eroded_ground_truth_scores_nothing_as_null(tmp_path, sample_root, weights):
    import rasterio

    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    eroded = data / "gts_eroded_for_participants" / "top_mosaic_09cm_area4_noBoundary.tif"
    with rasterio.open(eroded, "r+") as dst:
        dst.write(np.zeros((dst.count, dst.height, dst.width), dtype=dst.dtypes[0]))
    result = run_script("inference.py", "--tiles", "4", "--weights", str(weights), *arguments(tmp_path, data))
    assert result.returncode == 0, result.stderr
    assert "nothing was scored" in result.stdout and "nan" not in result.stdout.lower()
    report = json.loads((tmp_path / "inference" / "metrics.json").read_text(),
                        parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))
    assert report["overall"]["pixels"] == 0 and report["overall"]["overall_accuracy"] is None


# ---------------------------------------------------------------- a folder of images with bad files in it
def write_scene(path: Path, seed: int = 0, size: int = 64) -> Path:
    import rasterio

    pixels = np.random.default_rng(seed).integers(1, 256, (3, size, size), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8") as dst:
        dst.write(pixels)
    return path


def test_bad_files_in_an_image_folder_are_reported_and_the_others_labelled(tmp_path, sample_root, weights):
    import os

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    good = [write_scene(scenes / f"good{i}.tif", i) for i in range(2)]
    cut = write_scene(scenes / "cut.tif", 5, size=256)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (scenes / "noise.tif").write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))
    (scenes / "gone.tif").symlink_to(tmp_path / "nowhere.tif")
    odd_name = os.path.join(os.fsencode(scenes), b"caf\xe9.tif")  # Latin-1, not UTF-8
    with open(odd_name, "wb") as handle:
        handle.write(good[0].read_bytes())
    out = tmp_path / "out"
    result = run_script("inference.py", "--images", str(scenes), "--weights", str(weights), "--out", str(out),
                        *arguments(tmp_path, sample_root / "data"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    # rasterio writes 3-band uint8 as RGB: the scenes contradict the weights' IR, R, G, said once
    assert lines[0].startswith("warning: good0.tif: GDAL says bands 1, 2, 3 are red, green, blue")
    assert len(lines) == 6 and lines[-1].startswith("error: 4 of 6 images could not be labelled"), lines
    for name, why in (("cut.tif", "truncated or corrupt"), ("noise.tif", "cannot open"), ("gone.tif", "broken link"),
                      ("caf", "not valid UTF-8")):
        assert sum(line.startswith("not labelled: ") and name in line and why in line for line in lines) == 1, name
    assert all(list(out.glob(f"good{i}_labels.*")) for i in range(2))
    report = json.loads((out / "metrics.json").read_text())
    assert len(report["failed"]) == 4 and set(report["images"]) == {"good0", "good1"}


def test_output_folder_holding_the_inputs_refused(tmp_path, sample_root, weights):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_scene(scenes / "a.tif")
    result = run_script("inference.py", "--images", str(scenes), "--weights", str(weights), "--out", str(scenes),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, str(scenes), "holds the input a.tif", "--out")
    assert [p.name for p in scenes.iterdir()] == ["a.tif"]


def test_bad_polygon_format_refused_before_labelling(tmp_path, sample_root, weights):
    result = run_script("inference.py", "--tiles", "4", "--weights", str(weights),
                        *arguments(tmp_path, sample_root / "data", WRITE_POLYGONS=".shp"))
    assert_one_line_error(result, "WRITE_POLYGONS must be", "'.shp'")
    assert not (tmp_path / "inference").exists()


# ---------------------------------------------------------------- weights
def test_safetensors_record_missing_keys(tmp_path, sample_root):
    from eoseg.models import model_from_config
    from eoseg.weights import save_safetensors, weights_record
    from eoseg.metadata import data_signature

    cfg = make_tiny_config(tmp_path)
    model = model_from_config(cfg)
    record = weights_record(model, data_signature(cfg), False, "test")
    del record["signature"], record["model"]["width"]
    path = save_safetensors(tmp_path / "damaged.safetensors", model, record)
    result = run_script("inference.py", "--tiles", "4", "--weights", str(path), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "damaged.safetensors", "record lacks signature, model.width")


# ---------------------------------------------------------------- LMDB
@pytest.fixture(scope="module")
def packed(tmp_path_factory, sample_root) -> Path:
    """Patches and LMDBs of the tiny sample, made by the scripts."""
    root = tmp_path_factory.mktemp("packed")
    for script in ("extract_images.py", "create_lmdb.py"):
        result = run_script(script, *arguments(root, sample_root / "data"))
        assert result.returncode == 0, result.stderr
    return root / "lmdb"


def damage_lmdb(packed: Path, tmp_path: Path, damage) -> Path:
    lmdb_dir = tmp_path / "lmdb"
    shutil.copytree(packed, lmdb_dir)
    data = lmdb_dir / "train.lmdb" / "data.mdb"
    content = bytearray(data.read_bytes())
    data.write_bytes(damage(content))
    return data


@pytest.mark.parametrize("damage,why", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[: len(b) // 2] + bytes(4096) + b[len(b) // 2 + 4096:], "damaged LMDB"),  # one page zeroed
], ids=["truncated", "zeroed_page"])
def test_damaged_lmdb_named_before_it_kills_training(tmp_path, sample_root, packed, damage, why):
    data = damage_lmdb(packed, tmp_path, damage)
    result = run_script("training.py", *arguments(tmp_path, sample_root / "data", VAL_EVERY=0, ITERATIONS=30,
                                                   LMDB_DIR=str(tmp_path / "lmdb")))
    assert_one_line_error(result, str(data), why, "create_lmdb.py --force")


def test_lmdb_accepts_another_norm_std(tmp_path, sample_root, packed):
    result = run_script("training.py", *arguments(tmp_path, sample_root / "data", VAL_EVERY=0, ITERATIONS=1,
                                                   LMDB_DIR=str(packed), NORM_STD=[128.0, 128.0, 128.0]))
    assert result.returncode == 0, result.stderr


def test_image_of_another_data_type_than_the_training_data_refused(tmp_path, sample_root):
    import rasterio
    import torch

    from eoseg.checkpoint import save_checkpoint
    from eoseg.models import model_from_config

    cfg = make_tiny_config(tmp_path)
    torch.manual_seed(0)
    trained_on_uint8 = save_checkpoint(tmp_path / "w8.pt", cfg, model_from_config(cfg), 0, trained_on={"input_dtype": "uint8"})
    scene = tmp_path / "scene16.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16") as dst:
        dst.write((np.random.default_rng(0).integers(0, 4096, (3, 64, 64))).astype(np.uint16))
    result = run_script("inference.py", "--images", str(scene), "--weights", str(trained_on_uint8),
                        "--out", str(tmp_path / "out"), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "scene16.tif", "its pixels are uint16", "trained on uint8 data")


def test_single_file_outputs_record_what_ran_each_beside_itself(tmp_path, sample_root, weights):
    out = tmp_path / "converted"
    for name in ("a", "b"):
        result = run_script("convert_weights.py", str(weights), "--out", str(out / f"{name}.safetensors"),
                            *arguments(tmp_path, sample_root / "data", MODEL_WIDTH=0.5))
        assert result.returncode == 0, result.stderr
        # the weights define the network: said once, naming both
        notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
        assert len(notes) == 1 and "MODEL_WIDTH=0.125, which is used" in notes[0] and "MODEL_WIDTH=0.5" in notes[0]
    for name in ("a", "b"):
        record = json.loads((out / f"{name}.safetensors.config.json").read_text())
        assert record["config"]["MODEL_WIDTH"] == 0.125  # the weights' model, not the config's 0.5


def test_rgb_image_given_to_weights_trained_on_irrg_warns_once(tmp_path, sample_root, weights):
    import rasterio

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for index in range(2):  # declared red, green, blue; the weights' BAND_NAMES are IR, R, G
        with rasterio.open(scenes / f"rgb{index}.tif", "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint8", photometric="RGB") as dst:
            dst.write(np.random.default_rng(index).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    result = run_script("inference.py", "--images", str(scenes), "--weights", str(weights), "--out", str(tmp_path / "out"),
                        *arguments(tmp_path, sample_root / "data"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "red, green, blue" in warnings[0] and "IR, R, G" in warnings[0]


def test_unwritable_output_folders_of_inference_and_extraction(tmp_path, sample_root, weights, immutable_folder):
    result = run_script("inference.py", "--tiles", "4", "--weights", str(weights), "--out", str(immutable_folder / "out"),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "output folder", "locked", "cannot be written")
    result = run_script("extract_images.py", *arguments(tmp_path, sample_root / "data",
                                                        PATCHES_DIR=str(immutable_folder / "patches")))
    assert_one_line_error(result, "output folder", "locked", "cannot be written")
