"""Training for real: sample order, augmentation, resumption after SIGKILL, torchrun, validation, AMP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from torch.utils.data import DataLoader

from eoseg.checkpoint import load_checkpoint, save_checkpoint
from eoseg.config import load_config
from eoseg.data import StreamBatchSampler, TileCrops, jitter_bands, median_frequency_weights, rescale_patches, training_data
from eoseg.errors import EosegError
from eoseg.extract import extract_patches
from eoseg.io import read_label
from eoseg.lmdb_store import create_lmdb
from eoseg.models import model_from_config
from eoseg.normalization import Normalization
from eoseg.device import Processes
from eoseg.recipe import ChannelsLastAdamW
from eoseg.train import RESUMED_SETTINGS, Trainer, random_states, restore_random_states, seed_everything, train, training_finished

from .conftest import ROOT, as_arguments, run_script, tiny_overrides

FIVE_CLASSES = {
    "CLASS_NAMES": ["impervious surfaces", "building", "low vegetation", "tree", "car"],
    "PALETTE": [[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]],
}
FOUR_BANDS = {"BANDS": [1, 2, 3, 4], "BAND_NAMES": ["IR", "R", "G", "DSM"], "NORM_MEAN": [0.0] * 4, "NORM_STD": [255.0] * 4}
IGNORE_LABEL = 255  # config.py's


@pytest.fixture(scope="module")
def lmdb_dir(sample_root, tmp_path_factory) -> Path:
    """The tiny dataset's patches packed into LMDB once for this module."""
    root = tmp_path_factory.mktemp("training_lmdb")
    cfg = load_config(overrides=as_arguments({**tiny_overrides(root), "DATA_ROOT": str(sample_root / "data")}))
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, progress=False)
    return Path(cfg.LMDB_DIR)


def overrides_for(sample_root: Path, lmdb_dir: Path, out: Path, **extra) -> dict:
    return {**tiny_overrides(out), "DATA_ROOT": str(sample_root / "data"), "LMDB_DIR": str(lmdb_dir), **extra}


@pytest.fixture
def lmdb_cfg(sample_root, lmdb_dir, tmp_path):
    return load_config(overrides=as_arguments(overrides_for(sample_root, lmdb_dir, tmp_path)))


def read_log(train_dir: Path) -> list[dict]:
    with open(Path(train_dir) / "log.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def initial_weights(cfg) -> dict:
    """The weights a run of ``cfg`` starts from (its model is drawn right after seeding)."""
    seed_everything(cfg.SEED)
    return {name: value.detach().clone() for name, value in model_from_config(cfg).state_dict().items()}


def script_environment() -> dict:
    # one thread per process: two concurrent runs on a small machine would otherwise fight over cores
    return {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start_training(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "training.py"), *arguments], cwd=ROOT, env=script_environment(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- sample order and augmentation
def test_stream_is_a_pure_function_of_seed_and_position():
    def take(sampler, steps):
        batches = iter(sampler)
        return [next(batches) for _ in range(steps)]

    length, batch = 7, 3
    whole = [key for b in take(StreamBatchSampler(length, batch, seed=5), 8) for key in b]
    # each epoch visits every sample once, in its own order
    epochs = [whole[i:i + length] for i in range(0, 21, length)]
    for epoch, keys in enumerate(epochs):
        assert {e for e, _ in keys} == {epoch} and sorted(i for _, i in keys) == list(range(length))
    assert [i for _, i in epochs[0]] != [i for _, i in epochs[1]]
    # started at a position, the stream carries on exactly there
    resumed = [key for b in take(StreamBatchSampler(length, batch, seed=5, start=9), 5) for key in b]
    assert resumed == whole[9:24]
    # two processes read disjoint blocks that together make the single-process stream
    ranks = [take(StreamBatchSampler(length, batch, seed=5, rank=r, world_size=2), 4) for r in (0, 1)]
    interleaved = [key for step in zip(*ranks) for b in step for key in b]
    assert interleaved == whole[:24]
    assert StreamBatchSampler(length, batch, seed=5, rank=1, world_size=2).position_after(4) == 24
    # another seed, another order
    assert take(StreamBatchSampler(length, batch, seed=6), 3) != take(StreamBatchSampler(length, batch, seed=5), 3)


def test_an_lmdb_shuffled_with_another_seed_than_the_configs_is_refused(lmdb_cfg):
    """Packed again under SHUFFLE_SEED=5 and resumed under 1337, a run was taken and its losses no longer repeated
    the uninterrupted run's, its config naming an order its batches did not follow (review)."""
    with pytest.raises(EosegError, match=rf"train.lmdb was shuffled with SHUFFLE_SEED={lmdb_cfg.SHUFFLE_SEED}, but the "
                                         r"config has SHUFFLE_SEED=5: .*set SHUFFLE_SEED=\d+, or pack it again"):
        training_data(lmdb_cfg.replace(SHUFFLE_SEED=5))
    assert "SHUFFLE_SEED" in RESUMED_SETTINGS


def test_batches_do_not_depend_on_the_number_of_workers(lmdb_cfg):
    data = training_data(lmdb_cfg)

    def batches(workers):
        loader = DataLoader(data, batch_sampler=StreamBatchSampler(len(data), 4, seed=0, start=50), num_workers=workers)
        stream = iter(loader)
        return [next(stream) for _ in range(6)]

    single, parallel = batches(0), batches(2)
    for (image_a, label_a), (image_b, label_b) in zip(single, parallel):
        assert image_a.dtype == torch.uint8 and torch.equal(image_a, image_b) and torch.equal(label_a, label_b)
    # the augmentation is drawn per epoch: the same record comes back flipped or rotated otherwise
    record = data.patches[3]
    variants = {data[(epoch, 3)][0].numpy().tobytes() for epoch in range(12)}
    assert len(variants) > 2 and all(np.asarray(data[(e, 3)][0]).sum() == record[0].sum() for e in range(12))


def test_tile_crops_are_uint8_views_of_the_tiles_with_their_labels(tiny_cfg):
    data = training_data(tiny_cfg.replace(TRAIN_SOURCE="tiles", RANDOM_FLIPS=False))
    assert isinstance(data, TileCrops) and all(image.dtype == np.uint8 for image, _ in data.tiles)
    assert len(data) == 3 * (160 // 64) ** 2
    image, labels = data[(0, 5)]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64) and labels.shape == (64, 64)
    found = []
    for tile, tile_labels in data.tiles:  # the crop is somewhere in one tile, labels at the same place
        for row in range(160 - 64 + 1):
            for col in range(160 - 64 + 1):
                if np.array_equal(tile[:, row:row + 64, col:col + 64], image.numpy()):
                    found.append(np.array_equal(tile_labels[row:row + 64, col:col + 64], labels.numpy()))
    assert found and all(found)
    assert torch.equal(data[(0, 5)][0], image) and not torch.equal(data[(1, 5)][0], image)


def test_tiles_of_another_data_type_are_refused_as_extraction_refuses_them(tiny_cfg, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(tiny_cfg.DATA_ROOT), data)
    path = data / Path(tiny_cfg.IMAGE_PATTERN.format(id="2"))
    with rasterio.open(path) as src:
        profile, pixels = src.profile, src.read()
    with rasterio.open(path, "w", **{**profile, "dtype": "uint16"}) as dst:
        dst.write(pixels.astype(np.uint16) * 16)
    with pytest.raises(EosegError, match=r"area2.tif: image is uint16, but top_mosaic_09cm_area1.tif is uint8 before it; one "
                                         r"NORM_MEAN and NORM_STD cannot fit both"):
        training_data(tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_SOURCE="tiles"))


def test_an_lmdb_is_refused_under_a_normalisation_far_from_unit_scale(lmdb_cfg):
    """It holds raw pixels, so a NORM_STD changed since is not a mismatch of the data: checked as tiles are."""
    training_data(lmdb_cfg)
    with pytest.raises(EosegError, match=r"NORM_MEAN = \[.*\] and NORM_STD = \[.*\]"):
        training_data(lmdb_cfg.replace(NORM_STD=[1.0, 1.0, 1.0]))


def test_median_frequency_weights_by_hand():
    maps = [np.array([[0, 0], [0, 1]], np.uint8), np.array([[0, 2], [2, 255]], np.uint8)]
    weights = median_frequency_weights(maps, num_classes=4, ignore_label=255)
    # f0 = 4/7 (both maps hold class 0: 7 labelled px), f1 = 1/4, f2 = 2/3; median 4/7; class 3 absent
    assert weights == pytest.approx([1.0, 16 / 7, 6 / 7, 0.0])


def test_median_frequency_weights_from_the_lmdb_enter_the_loss(lmdb_cfg):
    cfg = lmdb_cfg.replace(MEDIAN_FREQUENCY_WEIGHTS=True, ITERATIONS=1, VAL_EVERY=0)
    data = training_data(cfg)
    expected = median_frequency_weights(data.label_maps(), 6, 255)
    trainer = Trainer(cfg, Processes(), torch.device("cpu"), progress=False)
    assert trainer.criterion.weight.tolist() == pytest.approx(expected)
    trainer.run()
    recorded = load_checkpoint(Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt")["training_state"]["class_weights"]
    assert recorded == pytest.approx(expected)
    counts = np.bincount(np.concatenate([m.ravel() for m in data.label_maps()]), minlength=256)[:6]
    rarest, commonest = int(np.argmin(np.where(counts > 0, counts, counts.max()))), int(np.argmax(counts))
    assert recorded[rarest] > 1 > recorded[commonest]
    with pytest.raises(EosegError, match="choose one"):
        train(cfg.replace(CLASS_WEIGHTS=[1.0] * 6), progress=False)


# ---------------------------------------------------------------- checkpoints and resumption
def test_random_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(random_states(), tmp_path / "states.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_random_states(torch.load(tmp_path / "states.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_killed_run_resumes_with_the_same_losses_and_weights(sample_root, lmdb_dir, tmp_path):
    common = overrides_for(sample_root, lmdb_dir, tmp_path, ITERATIONS=24, LOG_EVERY=1, SNAPSHOT_EVERY=5,
                           VAL_EVERY=0, DETERMINISTIC=True, LR_STEPS=[12])
    full = as_arguments({**common, "TRAIN_DIR": str(tmp_path / "full"), "MODEL_FILE": str(tmp_path / "full.pt")})
    # the killed run reads with 2 workers, the uninterrupted one in-process: the data must not care
    killed_dir = tmp_path / "killed"
    killed = as_arguments({**common, "TRAIN_DIR": str(killed_dir), "MODEL_FILE": str(tmp_path / "killed.pt"), "NUM_WORKERS": 2})
    uninterrupted, victim = start_training(*full), start_training(*killed)
    checkpoints = killed_dir / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints / "iter_0000010.pt").exists():
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint at iteration 10 after 2 minutes"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed.pt").exists(), "the run finished before the kill"
    before = {p.name: p.stat().st_mtime_ns for p in checkpoints.glob("iter_*.pt")}
    assert max(before) < "iter_0000024.pt"

    resumed = start_training("--resume", *killed)  # no path: the latest checkpoint
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()
    # the resumed run started from the killed run's last checkpoint, not from scratch
    assert {name: (checkpoints / name).stat().st_mtime_ns for name in before} == before

    def curve(rows):
        return [(r["iteration"], r["loss"], r["lr"]) for r in rows]

    expected, got = curve(read_log(tmp_path / "full")), curve(read_log(killed_dir))
    assert [int(i) for i, _, _ in expected] == list(range(1, 25))
    assert got == expected
    final_full, final_resumed = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "killed.pt")
    for key, value in final_full["state_dict"].items():
        assert torch.equal(final_resumed["state_dict"][key], value), key


def test_checkpoint_holds_the_whole_training_state(lmdb_cfg):
    cfg = lmdb_cfg.replace(ITERATIONS=2, SNAPSHOT_EVERY=1, VAL_EVERY=1, PRECISION="bfloat16")
    train(cfg, progress=False)
    payload = load_checkpoint(Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000002.pt")  # weights_only=True
    state = payload["training_state"]
    assert {"optimizer", "training_seconds", "scaler", "sample_position", "random_states", "best", "class_weights"} <= set(state)
    assert state["sample_position"] == 2 * cfg.BATCH_SIZE
    assert set(state["random_states"]) == {"python", "numpy", "torch", "cuda"}
    assert state["best"]["metric"] == "mean_f1" and state["best"]["iteration"] in (1, 2)
    assert payload["iteration"] == 2 and payload["signature"]["normalization"] == Normalization.from_config(cfg).record()
    assert payload["model"]["num_classes"] == 6 and payload["signature"]["band_names"] == cfg.BAND_NAMES
    assert '"PRECISION": "bfloat16"' in payload["config"]


@pytest.fixture(scope="module")
def six_class_checkpoint(sample_root, lmdb_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("six")
    cfg = load_config(overrides=as_arguments(overrides_for(sample_root, lmdb_dir, out, ITERATIONS=1, VAL_EVERY=0)))
    train(cfg, progress=False)
    return Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt"


@pytest.mark.parametrize("other,expected", [(FIVE_CLASSES, "trained for 6 classes, but the config has 5"),
                                            (FOUR_BANDS, "trained for 3 input bands, but the config has 4"),
                                            ({"MODEL_WIDTH": 0.25}, "MODEL_WIDTH=0.125")])
def test_resume_refuses_a_checkpoint_made_for_other_data(lmdb_cfg, six_class_checkpoint, other, expected):
    cfg = lmdb_cfg.replace(ITERATIONS=3, **other)
    with pytest.raises(EosegError, match=expected):
        train(cfg, resume=six_class_checkpoint, progress=False)


def test_resume_refusal_is_one_line_from_the_script(sample_root, lmdb_dir, tmp_path, six_class_checkpoint):
    arguments = as_arguments(overrides_for(sample_root, lmdb_dir, tmp_path, ITERATIONS=3, **FIVE_CLASSES))
    result = run_script("training.py", "--resume", str(six_class_checkpoint), *arguments)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {six_class_checkpoint} was trained for 6 classes, but the config has 5; "
        "use the config it was trained with or retrain"]
    assert not Path(tmp_path / "train").exists()  # refused before anything was written
    # a mistyped path is said as such, not as whatever check of the run it would continue fails first (review)
    typo = tmp_path / "checkpoints" / "iter_000010.pt"
    result = run_script("training.py", "--resume", str(typo), *arguments)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: --resume {typo}: no such checkpoint file; without a path, --resume continues from the latest in "
        "TRAIN_DIR/checkpoints"]


def test_fine_tuning_starts_the_whole_network_from_init_weights(lmdb_cfg, six_class_checkpoint):
    """A new run (its own schedule, from step 0) from every layer of trained weights; other networks are refused."""
    cfg = lmdb_cfg.replace(ITERATIONS=1, VAL_EVERY=0, BASE_LR=1e-12, INIT_WEIGHTS=str(six_class_checkpoint))
    train(cfg, progress=False)
    tuned = load_checkpoint(cfg.MODEL_FILE)
    start, fresh = load_checkpoint(six_class_checkpoint)["state_dict"], initial_weights(cfg)
    parameters = [name for name, value in start.items() if value.is_floating_point() and "running_" not in name]
    for name in parameters:  # one step at a vanishing rate: where the weights started
        torch.testing.assert_close(tuned["state_dict"][name], start[name], rtol=0, atol=1e-6)
    assert any(not torch.allclose(start[name], fresh[name]) for name in parameters)
    assert tuned["iteration"] == 1
    for other, expected in (({"MODEL_WIDTH": 0.25}, r"INIT_WEIGHTS .* hold MODEL='segnet' MODEL_WIDTH=0.125, not the "
                                                    r"config's network"),
                            (FIVE_CLASSES, r"INIT_WEIGHTS .* was trained for classes .*, and the config has .*: INIT_WEIGHTS "
                                           r"starts the whole network, its classifier included; for other classes start "
                                           r"its encoder alone \(ENCODER_WEIGHTS="),
                            ({"BAND_NAMES": ["R", "IR", "G"]}, r"INIT_WEIGHTS .* was trained on the bands IR, R, G, and "
                                                               r"the config stacks R, IR, G: .*\(ENCODER_WEIGHTS=.*\), "
                                                               r"which matches bands by name"),
                            ({"ENCODER_WEIGHTS": str(six_class_checkpoint)}, "set one of them"),
                            ({"INIT_WEIGHTS": "model.onnx"}, "an .onnx file cannot be trained"),
                            ({"INIT_WEIGHTS": "absent.pt"}, "INIT_WEIGHTS not found: absent.pt"),
                            # review: a folder was "not found", an .onnx a "truncated or not a torch file"
                            ({"INIT_WEIGHTS": str(six_class_checkpoint.parent)}, r"INIT_WEIGHTS .* is a folder; give the "
                                                                                 r"weights file in it"),
                            ({"INIT_WEIGHTS": "", "ENCODER_WEIGHTS": "model.onnx"},
                             r"ENCODER_WEIGHTS model.onnx: an encoder starts from a state dict .*an .onnx file holds a graph")):
        with pytest.raises(EosegError, match=expected):
            train(cfg.replace(TRAIN_DIR=f"{cfg.TRAIN_DIR}_other", MODEL_FILE=f"{cfg.MODEL_FILE}_other.pt", **other),
                  progress=False)


def test_encoder_weights_trained_on_inputs_normalised_otherwise_are_noted(lmdb_cfg, six_class_checkpoint, capsys):
    """Bands matched by name: a band whose recorded mean or std differ from the config's is named, with both."""
    from eoseg.models.pretrained import other_normalisation_note

    names, mean, std = lmdb_cfg.stacked_band_names, lmdb_cfg.stacked_mean, lmdb_cfg.stacked_std
    assert other_normalisation_note(six_class_checkpoint, names, mean, std) is None
    note = other_normalisation_note(six_class_checkpoint, ["R", "IR", "G"], [mean[1], 100.0, mean[2]], std)
    assert note.startswith(f"note: ENCODER_WEIGHTS {six_class_checkpoint} were trained on inputs normalised otherwise "
                           f"(IR mean {mean[0]:g} std {std[0]:g}, now 100 and {std[1]:g}): their first layer")
    assert "R mean" not in note.replace("IR mean", "")  # R's recorded values are those of the config's R
    unet = lmdb_cfg.replace(ITERATIONS=1, VAL_EVERY=0, TRAIN_SOURCE="tiles", MODEL="unet")  # its encoder is a ResNet's
    train(unet, progress=False)
    train(unet.replace(ENCODER_WEIGHTS=unet.MODEL_FILE, NORM_STD=[128.0, 255.0, 255.0], TRAIN_DIR=unet.TRAIN_DIR + "_2",
                       MODEL_FILE=unet.MODEL_FILE + "_2.pt"), progress=False)
    assert f"(IR mean {mean[0]:g} std {std[0]:g}, now {mean[0]:g} and 128)" in capsys.readouterr().err


@pytest.mark.parametrize("weights", [[0.0, 1.0, 1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
def test_class_weights_that_are_not_positive_are_refused_by_training(lmdb_cfg, weights):
    """A batch of 0-weight pixels alone has a loss of 0/0 (reported as a divergence); the config still serves the
    steps that do not train (inference, check_data)."""
    cfg = lmdb_cfg.replace(CLASS_WEIGHTS=weights)
    with pytest.raises(EosegError, match=r"CLASS_WEIGHTS must be positive, .*give it a small weight"):
        train(cfg, progress=False)
    assert not Path(cfg.TRAIN_DIR).exists()


def test_resume_without_checkpoints_is_refused(lmdb_cfg):
    from eoseg.train import latest_checkpoint

    with pytest.raises(EosegError, match="no checkpoint to resume from"):
        latest_checkpoint(lmdb_cfg)


def test_a_run_killed_after_its_last_checkpoint_resumes_to_its_weights(lmdb_cfg):
    """Killed between the final checkpoint and MODEL_FILE: --resume trains no further and writes MODEL_FILE."""
    from eoseg.train import latest_checkpoint

    cfg = lmdb_cfg.replace(ITERATIONS=2, SNAPSHOT_EVERY=2, VAL_EVERY=0)
    train(cfg, progress=False)
    written = load_checkpoint(cfg.MODEL_FILE)["state_dict"]
    Path(cfg.MODEL_FILE).unlink()
    log = (Path(cfg.TRAIN_DIR) / "log.csv").read_text()
    train(cfg, resume=latest_checkpoint(cfg), progress=False)
    again = load_checkpoint(cfg.MODEL_FILE)
    assert again["iteration"] == 2 and (Path(cfg.TRAIN_DIR) / "log.csv").read_text() == log
    for key, value in written.items():
        assert torch.equal(again["state_dict"][key], value), key
    with pytest.raises(EosegError, match="is at iteration 2, not before ITERATIONS=2; raise ITERATIONS"):
        train(cfg, resume=latest_checkpoint(cfg), progress=False)  # nothing left to do
    # MODEL_FILE holding another run's weights (a forced run killed before replacing them) is replaced too
    Path(cfg.MODEL_FILE).unlink()
    save_checkpoint(cfg.MODEL_FILE, cfg, model_from_config(cfg), iteration=0)
    train(cfg, resume=latest_checkpoint(cfg), progress=False)
    assert all(torch.equal(load_checkpoint(cfg.MODEL_FILE)["state_dict"][key], value) for key, value in written.items())
    # the training data rebuilt with other patches: the stream position of the checkpoint means other patches
    payload = load_checkpoint(latest_checkpoint(cfg))
    payload["training_state"]["training_records"] += 1
    torch.save(payload, Path(cfg.TRAIN_DIR) / "rebuilt.pt")
    with pytest.raises(EosegError, match=r"rebuilt.pt: its run trained on \d+ patches, and the training data holds \d+ "
                                         r"now \(rebuilt\?\)"):
        train(cfg.replace(ITERATIONS=3), resume=Path(cfg.TRAIN_DIR) / "rebuilt.pt", progress=False)
    # a checkpoint of a run that had further to go is no end of a run, whatever ITERATIONS says now
    longer = cfg.replace(ITERATIONS=4, TRAIN_DIR=f"{cfg.TRAIN_DIR}_longer", MODEL_FILE=f"{cfg.MODEL_FILE}_longer.pt")
    train(longer, stop_after=2, progress=False)
    Path(longer.MODEL_FILE).unlink()
    with pytest.raises(EosegError, match="is at iteration 2, not before ITERATIONS=2"):
        train(longer.replace(ITERATIONS=2), resume=Path(longer.TRAIN_DIR) / "checkpoints" / "iter_0000002.pt",
              progress=False)


def test_elapsed_time_goes_on_across_a_resume(lmdb_cfg, monkeypatch):
    """log.csv's elapsed_s restarted at 0 in a resumed run; it goes on from the time the checkpoint's run had reached."""
    ticks = iter(range(10 ** 6))  # a clock of a second a reading: elapsed times well apart, however fast the steps
    monkeypatch.setattr("eoseg.train.time", SimpleNamespace(perf_counter=lambda: float(next(ticks)), monotonic=time.monotonic))
    cfg = lmdb_cfg.replace(ITERATIONS=6, LOG_EVERY=1, SNAPSHOT_EVERY=3, VAL_EVERY=0)
    train(cfg, progress=False, stop_after=4)
    # as if killed after iteration 4: its row is dropped, and the resumed run repeats it
    train(cfg, resume=Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000003.pt", progress=False)
    rows = read_log(cfg.TRAIN_DIR)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert [int(r["iteration"]) for r in rows] == list(range(1, 7))
    assert elapsed == sorted(elapsed) and elapsed[3] > elapsed[2] > 0


def test_resume_takes_the_last_written_checkpoint_of_a_copied_folder(lmdb_cfg, tmp_path):
    """A copy (cp -r, scp -r) gives every file the time it was copied, in whatever order: the
    record training keeps beside the checkpoints still names the last one written."""
    from eoseg.train import latest_checkpoint

    train(lmdb_cfg.replace(ITERATIONS=4, SNAPSHOT_EVERY=2, VAL_EVERY=0), progress=False)
    copied = tmp_path / "copied"
    shutil.copytree(lmdb_cfg.TRAIN_DIR, copied)
    checkpoints = copied / "checkpoints"
    os.utime(checkpoints / "iter_0000002.pt", ns=(2 * 10 ** 18, 2 * 10 ** 18))  # copied last
    cfg = lmdb_cfg.replace(TRAIN_DIR=str(copied))
    assert (checkpoints / "latest").read_text().split() == ["iter_0000004.pt", "iter_0000002.pt"]
    assert latest_checkpoint(cfg) == checkpoints / "iter_0000004.pt"
    (checkpoints / "latest").write_text("iter_0000006.pt\niter_0000004.pt\n")  # killed while writing the next one
    assert latest_checkpoint(cfg) == checkpoints / "iter_0000004.pt"
    (checkpoints / "latest").unlink()  # a folder from before the record: the files' times decide
    assert latest_checkpoint(cfg) == checkpoints / "iter_0000002.pt"


# ---------------------------------------------------------------- validation, precision, distributed
def test_validation_logs_metrics_and_keeps_the_best_checkpoint(lmdb_cfg):
    cfg = lmdb_cfg.replace(ITERATIONS=5, LOG_EVERY=2, VAL_EVERY=2, BASE_LR=0.1)
    train(cfg, progress=False)
    rows = read_log(cfg.TRAIN_DIR)
    validated = [r for r in rows if r["val_mean_f1"]]
    assert [int(r["iteration"]) for r in rows] == [2, 4, 5] and [int(r["iteration"]) for r in validated] == [2, 4, 5]
    best_row = max(validated, key=lambda r: float(r["val_mean_f1"]))  # max keeps the first of equals, as training does
    best = load_checkpoint(Path(cfg.TRAIN_DIR) / "checkpoints" / "best.pt")
    assert best["iteration"] == int(best_row["iteration"])
    # best.pt records the metrics it was chosen on (tests/test_labelling.py: inference.py reports the same)
    for name in ("overall_accuracy", "mean_f1", "mean_iou"):
        assert float(best_row[f"val_{name}"]) == pytest.approx(best["validation"][name], abs=5e-6)
    assert (Path(cfg.TRAIN_DIR) / "loss.png").stat().st_size > 0


def test_validation_tiles_on_another_value_scale_are_refused_before_training(sample_root, tmp_path, capfd):
    """A validation tile at an eighth of the training tiles' values stops the run before its first step,
    naming INFER_VALUE_CHECK; with it off, the run trains and says so."""
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    with rasterio.open(data / "top" / "top_mosaic_09cm_area4.tif", "r+") as dst:
        dst.write(dst.read() // 8)
    cfg = load_config(overrides=as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(data), "TRAIN_SOURCE": "tiles",
                                              "ITERATIONS": 1, "VAL_EVERY": 1}))
    refusal = r"validation tile 4 \(.*area4.tif\): its values are 0\.1\d times those of the training tiles .*INFER_VALUE_CHECK"
    with pytest.raises(EosegError, match=refusal):
        train(cfg, progress=False)
    assert not list(Path(cfg.TRAIN_DIR).glob("checkpoints/*.pt"))
    train(cfg.replace(INFER_VALUE_CHECK=False), progress=False)
    assert "note: validation tile 4" in capfd.readouterr().err
    assert Path(cfg.MODEL_FILE).is_file()


# float16 kernels are slow on CPUs (about 50x bfloat16 here): its run is smaller
@pytest.mark.parametrize("precision,patch,batch", [("bfloat16", 64, 4), ("float16", 32, 1)])
def test_mixed_precision_and_channels_last_train(tiny_cfg, precision, patch, batch):
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=4, LOG_EVERY=1, VAL_EVERY=0, PRECISION=precision,
                           CHANNELS_LAST=True, PATCH_SIZE=patch, BATCH_SIZE=batch)
    trainer = Trainer(cfg, Processes(), torch.device("cpu"), progress=False)
    start = initial_weights(cfg)
    assert all(torch.equal(value, start[name]) for name, value in trainer.model.state_dict().items())
    weights = trainer.run()
    losses = [float(r["loss"]) for r in read_log(cfg.TRAIN_DIR)]
    assert len(losses) == 4 and all(np.isfinite(losses))
    state = load_checkpoint(weights)["state_dict"]
    assert all(v.dtype == torch.float32 for k, v in state.items() if v.is_floating_point())  # autocast keeps weights float32
    assert not torch.equal(state["conv1_1.weight"], start["conv1_1.weight"])


DISTRIBUTED_WORKER = """
import sys
import torch
from eoseg.config import load_config
from eoseg.device import process_group
from eoseg.train import Trainer

out, overrides = sys.argv[1], sys.argv[2:]
cfg = load_config(overrides=overrides)
with process_group(cfg.DEVICE) as (processes, device):
    trainer = Trainer(cfg, processes, device, progress=False)
    trainer.run()
    parameters = {name: p.detach().cpu() for name, p in trainer.model.named_parameters()}
    torch.save({"world_size": processes.world_size, "parameters": parameters}, f"{out}/rank{processes.rank}.pt")
"""


def test_torchrun_two_processes_train_identical_replicas(sample_root, lmdb_dir, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DISTRIBUTED_WORKER)
    arguments = as_arguments(overrides_for(sample_root, lmdb_dir, tmp_path, ITERATIONS=4, LOG_EVERY=1, SNAPSHOT_EVERY=2, VAL_EVERY=2))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), str(tmp_path), *arguments],
        cwd=ROOT, env=script_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    first, second = (r["parameters"] for r in ranks)
    for name, value in first.items():
        assert torch.equal(value, second[name]), f"{name} differs between the two processes"
    assert not torch.equal(first["conv1_1.weight"], initial_weights(load_config(overrides=arguments))["conv1_1.weight"])
    # rank 0 alone wrote the log: one row per iteration; the stream moved 2 processes x BATCH_SIZE per step
    assert [int(r["iteration"]) for r in read_log(tmp_path / "train")] == [1, 2, 3, 4]
    checkpoint = load_checkpoint(tmp_path / "train" / "checkpoints" / "iter_0000004.pt")
    assert checkpoint["training_state"]["sample_position"] == 4 * 2 * 4
    assert checkpoint["training_state"]["world_size"] == 2
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "train" / "checkpoints" / "best.pt").is_file()


# ---------------------------------------------------------------- time budget (TRAIN_MINUTES)
BUDGET_MINUTES = 0.05  # 3 s


def test_training_for_a_time_budget_lays_the_schedule_over_it(lmdb_cfg, monkeypatch):
    # a clock of a quarter second a reading: the budget takes a few steps however fast or slow (busy cores) they run
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr("eoseg.train.time", SimpleNamespace(perf_counter=lambda: next(ticks) / 4, monotonic=time.monotonic))
    cfg = lmdb_cfg.replace(TRAIN_MINUTES=BUDGET_MINUTES, ITERATIONS=2, LR_SCHEDULE="poly", LOG_EVERY=1, SNAPSHOT_EVERY=1,
                           VAL_EVERY=0, BASE_LR=0.01)
    train(cfg, progress=False)
    checkpoints = sorted((Path(cfg.TRAIN_DIR) / "checkpoints").glob("iter_*.pt"))
    states = [load_checkpoint(path) for path in checkpoints]
    final = states[-1]
    # ITERATIONS does not stop it: the budget does, once spent
    assert final["training_state"]["training_seconds"] >= 60 * BUDGET_MINUTES
    assert len(states) == final["iteration"] > cfg.ITERATIONS
    assert all(s["training_state"]["training_seconds"] < 60 * BUDGET_MINUTES for s in states[:-1])
    # after each step the optimizer holds the rate of the schedule at (seconds trained / budget)
    for state in states:
        progress = min(1.0, state["training_state"]["training_seconds"] / (60 * BUDGET_MINUTES))
        expected = 0.01 * (1 - progress) ** 0.9
        assert state["training_state"]["optimizer"]["param_groups"][1]["lr"] == pytest.approx(expected, abs=1e-12)
    rates = [float(r["lr"]) for r in read_log(cfg.TRAIN_DIR)]
    assert rates[-1] == 0 and all(a >= b for a, b in zip(rates, rates[1:]))


def test_resuming_continues_the_same_budget(lmdb_cfg, tmp_path):
    cfg = lmdb_cfg.replace(TRAIN_MINUTES=BUDGET_MINUTES, ITERATIONS=2, LR_SCHEDULE="cosine", LOG_EVERY=1, SNAPSHOT_EVERY=1,
                           VAL_EVERY=0)
    first = cfg.replace(TRAIN_MINUTES=0.0)
    train(first, progress=False)  # two steps, then its budget (set below) nearly spent
    payload = load_checkpoint(Path(first.TRAIN_DIR) / "checkpoints" / "iter_0000002.pt")
    payload["training_state"]["training_seconds"] = 60 * BUDGET_MINUTES - 0.001
    payload["config"] = json.dumps({**json.loads(payload["config"]), "TRAIN_MINUTES": BUDGET_MINUTES})  # a budget's run
    nearly_spent = tmp_path / "nearly_spent.pt"
    torch.save(payload, nearly_spent)
    train(cfg, resume=nearly_spent, progress=False)
    final = load_checkpoint(cfg.MODEL_FILE)
    assert final["iteration"] == 3  # one step spent what was left of the budget
    resumed = load_checkpoint(Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000003.pt")["training_state"]
    assert resumed["training_seconds"] >= 60 * BUDGET_MINUTES and resumed["optimizer"]["param_groups"][1]["lr"] == 0
    with pytest.raises(EosegError, match=r"has trained [0-9.]+ minutes, not less than TRAIN_MINUTES=0.05; raise TRAIN_MINUTES"):
        train(cfg, resume=Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000003.pt", progress=False)
    del payload["training_state"]["training_seconds"]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(EosegError, match="did not record the time trained"):
        train(cfg, resume=tmp_path / "old.pt", progress=False)


def test_a_run_for_a_time_budget_resumes_for_a_time_budget(lmdb_cfg):
    """Resumed by steps (TRAIN_MINUTES left out), its schedule would jump from the budget's course to the steps'."""
    cfg = lmdb_cfg.replace(TRAIN_MINUTES=BUDGET_MINUTES, ITERATIONS=2, SNAPSHOT_EVERY=1, VAL_EVERY=0)
    train(cfg, progress=False, stop_after=1)
    checkpoint = Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt"
    with pytest.raises(EosegError, match=r"was trained for a time budget, TRAIN_MINUTES=0.05, but the config counts steps "
                                         r"\(TRAIN_MINUTES=0, ITERATIONS=20\): .*resume with TRAIN_MINUTES=0.05"):
        train(cfg.replace(TRAIN_MINUTES=0.0, ITERATIONS=20), resume=checkpoint, progress=False)
    steps = lmdb_cfg.replace(ITERATIONS=2, SNAPSHOT_EVERY=1, VAL_EVERY=0, TRAIN_DIR=cfg.TRAIN_DIR + "_steps")
    train(steps, progress=False, stop_after=1)
    with pytest.raises(EosegError, match=r"was trained for ITERATIONS=2 steps, but the config sets a time budget"):
        train(steps.replace(TRAIN_MINUTES=1.0), resume=Path(steps.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt",
              progress=False)


def test_resuming_on_other_data_of_as_many_patches_is_refused(lmdb_cfg, tmp_path):
    """Labels swapped between two classes, or other images, rebuilt into as many patches: the stream position would
    continue over other data."""
    cfg = lmdb_cfg.replace(ITERATIONS=2, SNAPSHOT_EVERY=1, VAL_EVERY=0)
    train(cfg, progress=False, stop_after=1)
    payload = load_checkpoint(Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt")
    pixels = payload["signature"]["class_pixels"]
    payload["signature"]["class_pixels"] = [pixels[1], pixels[0], *pixels[2:]]  # as the data had them
    torch.save(payload, tmp_path / "swapped.pt")
    with pytest.raises(EosegError, match=r"swapped.pt: its run trained on data of other pixels of each class than the "
                                         r"training data holds now"):
        train(cfg, resume=tmp_path / "swapped.pt", progress=False)
    train(cfg, resume=Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt", progress=False)  # the same data: resumed


def test_validating_on_a_tile_the_starting_weights_learned_from_is_warned_of(lmdb_cfg, capsys):
    """As inference.py warns of it: best.pt would be chosen on what the model memorised."""
    first = lmdb_cfg.replace(ITERATIONS=1, VAL_EVERY=0)
    train(first, progress=False)  # trained on tiles 1, 2 and 3, as its weights record
    tuned = lmdb_cfg.replace(TRAIN_SOURCE="tiles", TRAIN_IDS=["1", "2"], VAL_IDS=["3"], ITERATIONS=1, VAL_EVERY=1,
                             INIT_WEIGHTS=first.MODEL_FILE, TRAIN_DIR=first.TRAIN_DIR + "_tuned",
                             MODEL_FILE=first.MODEL_FILE + "_tuned.pt")
    train(tuned, progress=False)
    assert "warning: this run started from weights (ENCODER_WEIGHTS or INIT_WEIGHTS) trained on tiles 3" in capsys.readouterr().err


def test_a_best_checkpoint_the_resumed_checkpoint_did_not_choose_is_not_kept(lmdb_cfg, capsys):
    """Resumed from an earlier checkpoint (a branch), best.pt of the discarded later iterations is removed and the
    best chosen afresh; likewise when validation is set up otherwise, or best.pt is not in TRAIN_DIR."""
    cfg = lmdb_cfg.replace(ITERATIONS=4, LOG_EVERY=1, SNAPSHOT_EVERY=2, VAL_EVERY=1, BASE_LR=0.1)
    train(cfg, progress=False)
    folder = Path(cfg.TRAIN_DIR) / "checkpoints"
    best_iteration = load_checkpoint(folder / "best.pt")["iteration"]
    kept = load_checkpoint(folder / "iter_0000002.pt")["training_state"]["best"]
    # a branch from iteration 2 that stops at 3: a best.pt of iteration 4 is not of its lineage
    if best_iteration == kept["iteration"]:  # make it so: the later best as the longer run could have chosen it
        payload = load_checkpoint(folder / "iter_0000004.pt")
        torch.save({**payload, "iteration": 4}, folder / "best.pt")
    refused = load_checkpoint(folder / "iter_0000002.pt")
    refused["signature"]["class_pixels"] = refused["signature"]["class_pixels"][::-1]  # a resume refused keeps best.pt
    torch.save(refused, folder.parent / "refused.pt")
    with pytest.raises(EosegError, match="trained on data of other pixels of each class"):
        train(cfg.replace(ITERATIONS=3), resume=folder.parent / "refused.pt", progress=True)
    assert load_checkpoint(folder / "best.pt")["iteration"] == 4
    train(cfg.replace(ITERATIONS=3), resume=folder / "iter_0000002.pt", progress=True)
    err = capsys.readouterr().err
    assert "is not carried over: " in err and "not this checkpoint's best (resumed from an earlier checkpoint)" in err
    assert load_checkpoint(folder / "best.pt")["iteration"] == 3  # chosen afresh: the only validation since
    # tiles labelled otherwise (or other tiles): scores are not comparable, and best.pt stays until one replaces it
    train(cfg.replace(ITERATIONS=5, TTA=["fliplr"]), resume=folder / "iter_0000003.pt", progress=True)
    assert "validation is set up otherwise now" in capsys.readouterr().err
    # another TRAIN_DIR holds no best.pt of this run
    other = cfg.replace(ITERATIONS=6, TTA=["fliplr"], TRAIN_DIR=cfg.TRAIN_DIR + "_other")
    train(other, resume=folder / "iter_0000005.pt", progress=True)
    assert "best.pt is not there, or cannot be read (another TRAIN_DIR?)" in capsys.readouterr().err
    assert load_checkpoint(Path(other.TRAIN_DIR) / "checkpoints" / "best.pt")["iteration"] == 6


# torch flags every max-unpooling, though a 2 x 2 pooling's indices never collide
@pytest.mark.filterwarnings("ignore:max_unpooling2d_forward_out does not have a deterministic implementation")
def test_bfloat16_adamw_run_resumes_to_the_same_weights(lmdb_cfg, tmp_path):
    # bfloat16 training holds the weights channels_last, and AdamW steps them through views
    settings = dict(ITERATIONS=4, LOG_EVERY=1, SNAPSHOT_EVERY=2, VAL_EVERY=0, PRECISION="bfloat16", OPTIMIZER="adamw",
                    BASE_LR=0.001, LR_SCHEDULE="poly", DETERMINISTIC=True)
    full = lmdb_cfg.replace(**settings, TRAIN_DIR=str(tmp_path / "full"), MODEL_FILE=str(tmp_path / "full.pt"))
    train(full, progress=False)
    cut = lmdb_cfg.replace(**settings, TRAIN_DIR=str(tmp_path / "cut"), MODEL_FILE=str(tmp_path / "cut.pt"))
    train(cut, progress=False, stop_after=2)
    train(cut, resume=Path(cut.TRAIN_DIR) / "checkpoints" / "iter_0000002.pt", progress=False)
    expected, got = load_checkpoint(full.MODEL_FILE), load_checkpoint(cut.MODEL_FILE)
    assert got["iteration"] == 4
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    state = load_checkpoint(Path(full.TRAIN_DIR) / "checkpoints" / "iter_0000004.pt")["training_state"]["optimizer"]
    assert len(state["state"]) == sum(len(group["params"]) for group in state["param_groups"])  # one entry per weight


@pytest.mark.parametrize("loss,model", [("ce_dice", "segnet"), ("focal", "segnet_multiscale"), ("ohem", "segnet")])
def test_own_data_recipes_train(tiny_cfg, loss, model):
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=3, LOG_EVERY=1, VAL_EVERY=0, OPTIMIZER="adamw", BASE_LR=0.001,
                           LR_SCHEDULE="cosine", WARMUP_FRACTION=0.34, LOSS=loss, MODEL=model, MEDIAN_FREQUENCY_WEIGHTS=True)
    trainer = Trainer(cfg, Processes(), torch.device("cpu"), progress=False)
    assert type(trainer.optimizer) is ChannelsLastAdamW and trainer.criterion.weight is not None
    weights = trainer.run()
    rows = read_log(cfg.TRAIN_DIR)
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    # warm-up over the first third, then cosine down to 0: the rates of steps 2, 3 and after the last
    expected = [0.001 / 1.02, 0.001 * 0.5 * (1 + np.cos(np.pi * (2 / 3 - 0.34) / 0.66)), 0]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=5e-3)  # logged to 3 digits
    assert not torch.equal(load_checkpoint(weights)["state_dict"]["conv1_1.weight"], initial_weights(cfg)["conv1_1.weight"])


def test_torchrun_processes_share_one_clock_for_the_budget(sample_root, lmdb_dir, tmp_path):
    """Each process measures its own time; were they to follow their own clocks, their learning rates
    and last steps would differ (and a process waiting for the others' gradients would hang)."""
    worker = tmp_path / "worker.py"
    worker.write_text(DISTRIBUTED_WORKER)
    arguments = as_arguments(overrides_for(sample_root, lmdb_dir, tmp_path, TRAIN_MINUTES=BUDGET_MINUTES, LR_SCHEDULE="poly",
                                           LOG_EVERY=1, SNAPSHOT_EVERY=1000, VAL_EVERY=0))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), str(tmp_path), *arguments],
        cwd=ROOT, env=script_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["parameters"] for r in (0, 1))
    for name, value in first.items():
        assert torch.equal(value, second[name]), f"{name} differs between the two processes"
    final = load_checkpoint(tmp_path / "model.pt")
    steps = [int(r["iteration"]) for r in read_log(tmp_path / "train")]
    assert final["iteration"] == steps[-1] == len(steps) and float(read_log(tmp_path / "train")[-1]["lr"]) == 0


def test_a_paused_run_keeps_its_schedule_over_the_whole_training(lmdb_cfg, tmp_path):
    """train(stop_after=...) pauses (notebook 4 trains chunk by chunk): resumed, it repeats the uninterrupted run."""
    cfg = lmdb_cfg.replace(ITERATIONS=6, LOG_EVERY=1, SNAPSHOT_EVERY=3, VAL_EVERY=0, LR_SCHEDULE="poly")
    whole = cfg.replace(TRAIN_DIR=str(tmp_path / "whole"), MODEL_FILE=str(tmp_path / "whole.pt"))
    train(whole, progress=False)
    train(cfg, progress=False, stop_after=3)
    paused = Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000003.pt"
    assert [int(r["iteration"]) for r in read_log(cfg.TRAIN_DIR)] == [1, 2, 3] and not training_finished(cfg, paused)
    train(cfg, resume=paused, progress=False)
    assert training_finished(cfg, Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000006.pt")

    def curve(folder):
        return [(r["iteration"], r["loss"], r["lr"]) for r in read_log(folder)]

    assert curve(cfg.TRAIN_DIR) == curve(whole.TRAIN_DIR) and float(read_log(cfg.TRAIN_DIR)[-1]["lr"]) == 0


def test_colour_jitter_changes_each_patch_alike_in_every_image_band_and_leaves_the_rest():
    images = torch.randn(4, 5, 8, 8) * 0.2 + 0.5
    jittered = jitter_bands(images, 0.3, bands=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(jittered[:, 3:], images[:, 3:])  # EXTRA_SOURCES bands are measurements: kept
    spread = images[:, :3].std(dim=(0, 2, 3))
    # per patch, an affine change of each image band: one gain in 1 +- 0.3 for all of them, and one shift
    # in +- 0.3 of each band's spread, so that the bands' ratios (what tells materials apart) stay
    fits = []
    for patch in range(4):
        for band in range(3):
            x, y = images[patch, band].flatten(), jittered[patch, band].flatten()
            gain = ((y - y.mean()) * (x - x.mean())).sum() / ((x - x.mean()) ** 2).sum()
            shift = (y - gain * x).mean()
            torch.testing.assert_close(y, gain * x + shift)
            fits.append((patch, band, gain.item(), (shift / spread[band]).item()))
    for patch in range(4):
        gains = [g for p, _, g, _ in fits if p == patch]
        shifts = [s for p, _, _, s in fits if p == patch]
        assert 0.7 <= gains[0] <= 1.3 and abs(shifts[0]) <= 0.3 + 1e-5
        assert gains == pytest.approx([gains[0]] * 3, abs=1e-5) and shifts == pytest.approx([shifts[0]] * 3, abs=1e-4)
    assert len({round(g, 4) for _, _, g, _ in fits}) == 4  # each patch draws its own
    again = jitter_bands(images, 0.3, bands=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, jittered)


def _square_patches(count: int, side: int = 64, square: int = 32):
    """``count`` patches holding one centred ``square`` of class 1 on class 0, in the image's three bands and
    in the labels alike."""
    labels = torch.zeros((count, side, side), dtype=torch.long)
    start = (side - square) // 2
    labels[:, start:start + square, start:start + square] = 1
    return labels[:, None].float().repeat(1, 3, 1, 1), labels


def _centre(mask: torch.Tensor) -> tuple[float, float]:
    rows, columns = torch.nonzero(mask, as_tuple=True)
    return rows.float().mean().item(), columns.float().mean().item()


def test_random_scale_zooms_image_and_labels_together_both_ways_and_pads_with_unlabelled_pixels():
    images, labels = _square_patches(24)
    zoomed, zoomed_labels = rescale_patches(images, labels, 0.5, IGNORE_LABEL, torch.Generator().manual_seed(4))
    assert zoomed.shape == images.shape and zoomed_labels.shape == labels.shape and zoomed_labels.dtype == labels.dtype
    sides = []
    for image, label in zip(zoomed, zoomed_labels):
        square = label == 1
        assert set(label.unique().tolist()) <= {0, 1, IGNORE_LABEL}
        # the image's square lies where the labels' does: same centre, same size, in every band
        for band in image:
            assert _centre(band > 0.5) == pytest.approx(_centre(square), abs=0.6)
            assert abs(int((band > 0.5).sum()) - int(square.sum())) <= 2 * square.sum() ** 0.5 + 2
        side = square.sum().item() ** 0.5
        assert 32 / 1.5 - 1 <= side <= 32 * 1.5 + 1
        sides.append(side)
        unlabelled = label == IGNORE_LABEL
        if side < 32:  # zoomed out: what the patch no longer covers is unlabelled, at the normalised mean
            labelled_rows = (~unlabelled).any(dim=1).sum().item()
            assert labelled_rows == pytest.approx(64 * side / 32, abs=1.5)
            assert torch.all(image[:, unlabelled] == 0)
        else:
            assert not unlabelled.any()
    assert min(sides) < 28 and max(sides) > 36  # zoomed out and in
    again = rescale_patches(images, labels, 0.5, IGNORE_LABEL, torch.Generator().manual_seed(4))
    assert torch.equal(again[0], zoomed) and torch.equal(again[1], zoomed_labels)
    same = rescale_patches(images, labels, 0.0, IGNORE_LABEL, torch.Generator().manual_seed(4))
    assert torch.equal(same[0], images) and torch.equal(same[1], labels)


def test_augmented_run_resumes_to_the_same_weights(lmdb_cfg, tmp_path):
    settings = dict(ITERATIONS=4, LOG_EVERY=1, SNAPSHOT_EVERY=2, VAL_EVERY=0, COLOR_JITTER=0.3, RANDOM_SCALE=0.5,
                    DETERMINISTIC=True)
    full = lmdb_cfg.replace(**settings, TRAIN_DIR=str(tmp_path / "full"), MODEL_FILE=str(tmp_path / "full.pt"))
    train(full, progress=False)
    cut = lmdb_cfg.replace(**settings, TRAIN_DIR=str(tmp_path / "cut"), MODEL_FILE=str(tmp_path / "cut.pt"))
    train(cut, progress=False, stop_after=2)
    train(cut, resume=Path(cut.TRAIN_DIR) / "checkpoints" / "iter_0000002.pt", progress=False)
    plain = lmdb_cfg.replace(**{**settings, "COLOR_JITTER": 0.0, "RANDOM_SCALE": 0.0}, TRAIN_DIR=str(tmp_path / "plain"),
                             MODEL_FILE=str(tmp_path / "plain.pt"))
    train(plain, progress=False)
    expected, got = load_checkpoint(full.MODEL_FILE), load_checkpoint(cut.MODEL_FILE)
    for key, value in expected["state_dict"].items():
        assert torch.equal(got["state_dict"][key], value), key
    assert [r["loss"] for r in read_log(full.TRAIN_DIR)] != [r["loss"] for r in read_log(plain.TRAIN_DIR)]


def test_training_data_count_each_class_and_a_class_never_labelled_is_noted(lmdb_cfg, tmp_path, capsys):
    """The LMDB records its training tiles' pixels of each class (extraction counts them), training from the
    tiles counts the same; a LABEL_VALUES that sends building's value elsewhere leaves building unlearnable,
    and training says so before its first step."""
    expected = np.sum([np.bincount(read_label(lmdb_cfg.tile_path("LABEL_PATTERN", tile)).ravel(), minlength=256)[:6]
                       for tile in lmdb_cfg.tile_ids("train")], axis=0).tolist()
    assert training_data(lmdb_cfg).class_pixels == expected
    assert training_data(lmdb_cfg.replace(TRAIN_SOURCE="tiles")).class_pixels == expected
    assert all(expected[:5])  # the sample's five main classes are there: no note
    building_as_road = {0: 0, 1: 0, 2: 2, 3: 3, 4: 4, 5: 5}
    cfg = lmdb_cfg.replace(TRAIN_SOURCE="tiles", LABEL_VALUES=building_as_road, ITERATIONS=1, VAL_EVERY=0)
    train(cfg, progress=False)
    assert load_checkpoint(cfg.MODEL_FILE)["signature"]["class_pixels"][1] == 0  # for inference to say so
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: no training pixel")]
    absent = ["building"] + (["clutter"] if not expected[5] else [])
    assert notes == [f"note: no training pixel is labelled {', '.join(absent)}: the network cannot learn "
                     f"{'it' if len(absent) == 1 else 'them'}; check LABEL_VALUES and TRAIN_IDS (check_data.py lists "
                     "each class's share)"]
    # no class labelled at all: an untrained network is not saved as trained
    nothing = cfg.replace(LABEL_VALUES={value: "ignore" for value in range(6)}, MODEL_FILE=str(tmp_path / "none.pt"),
                          TRAIN_DIR=str(tmp_path / "none"))
    with pytest.raises(EosegError, match="no training pixel is labelled: the training tiles' labels are all IGNORE_LABEL"):
        train(nothing, progress=False)
    assert not Path(nothing.MODEL_FILE).exists()


def test_resuming_under_another_recipe_is_refused_naming_what_changed(lmdb_cfg, tmp_path):
    """Another optimizer's state does not fit (torch fails deep inside), another learning rate or seed would
    silently make a run neither the old nor a new one; training further (a higher ITERATIONS) is what resuming is for."""
    cfg = lmdb_cfg.replace(ITERATIONS=3, LOG_EVERY=1, SNAPSHOT_EVERY=1, VAL_EVERY=0, OPTIMIZER="sgd")
    train(cfg, progress=False, stop_after=1)
    checkpoint = Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt"
    with pytest.raises(EosegError, match=r"iter_0000001.pt was trained with OPTIMIZER='sgd', BASE_LR=0.05, but the config "
                                         r"has OPTIMIZER='adamw', BASE_LR=0.1; a resumed run continues the same training"):
        train(cfg.replace(OPTIMIZER="adamw", BASE_LR=0.1), resume=checkpoint, progress=False)
    with pytest.raises(EosegError, match="trained with SEED=0, but the config has SEED=5"):
        train(cfg.replace(SEED=5), resume=checkpoint, progress=False)
    with pytest.raises(EosegError, match=r"trained with LABEL_VALUES=\{\}, but the config has LABEL_VALUES=\{0: 0"):
        train(cfg.replace(LABEL_VALUES={value: value for value in range(6)}), resume=checkpoint, progress=False)
    train(cfg.replace(ITERATIONS=4), resume=checkpoint, progress=False)
    assert int(read_log(cfg.TRAIN_DIR)[-1]["iteration"]) == 4


def test_resuming_compares_the_precision_as_it_resolved(lmdb_cfg, monkeypatch):
    """PRECISION="auto" is the precision it resolves to: the same training where that matches the checkpoint's,
    refused where it does not (another machine), whatever the two configs spell."""
    cfg = lmdb_cfg.replace(ITERATIONS=3, LOG_EVERY=1, SNAPSHOT_EVERY=1, VAL_EVERY=0, PRECISION="float32")
    train(cfg, progress=False, stop_after=1)
    checkpoint = Path(cfg.TRAIN_DIR) / "checkpoints" / "iter_0000001.pt"
    monkeypatch.setattr("eoseg.train.resolve_precision", lambda setting, device: ("bfloat16", "PRECISION=auto: a test"))
    with pytest.raises(EosegError, match=r"iter_0000001.pt was trained in float32, but PRECISION='auto' is bfloat16 here "
                                         r"\(PRECISION=auto: a test\); resume with PRECISION=\"float32\""):
        train(cfg.replace(PRECISION="auto"), resume=checkpoint, progress=False)
    monkeypatch.setattr("eoseg.train.resolve_precision", lambda setting, device: ("float32", "PRECISION=auto: a test"))
    train(cfg.replace(PRECISION="auto"), resume=checkpoint, progress=False)
    assert int(read_log(cfg.TRAIN_DIR)[-1]["iteration"]) == 3


def test_model_file_is_never_an_input_of_the_run(tiny_cfg):
    """MODEL_FILE given as a training image or as the INIT_WEIGHTS file was replaced by the weights with --force (or
    --resume) (review): refused before any step, whatever --force says."""
    from eoseg.train import claim_train_dir

    image = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    with pytest.raises(EosegError, match=r"area1.tif would overwrite tile 1's IMAGE_PATTERN file; choose another MODEL_FILE"):
        with claim_train_dir(tiny_cfg.replace(MODEL_FILE=str(image)), resume=False, force=True):
            pass
    start = Path(tiny_cfg.TRAIN_DIR).parent / "start.pt"
    with pytest.raises(EosegError, match=r"start.pt would overwrite the INIT_WEIGHTS file; choose another MODEL_FILE"):
        with claim_train_dir(tiny_cfg.replace(MODEL_FILE=str(start), INIT_WEIGHTS=str(start)), resume=True, force=False):
            pass
    # train() itself, which notebook 4 calls without claiming TRAIN_DIR: it wrote over INIT_WEIGHTS (review)
    with pytest.raises(EosegError, match=r"start.pt would overwrite the INIT_WEIGHTS file; choose another MODEL_FILE"):
        train(tiny_cfg.replace(MODEL_FILE=str(start), INIT_WEIGHTS=str(start)), progress=False)


def test_resuming_into_a_train_dir_holding_another_run_is_refused(tiny_cfg):
    """Another run's checkpoint resumed into a TRAIN_DIR holding a run of SEED 3 was taken: the folder then held
    checkpoints and log rows of both runs (review). The run TRAIN_DIR holds is held to the config, as the checkpoint is."""
    from eoseg.train import claim_train_dir

    Path(tiny_cfg.TRAIN_DIR).mkdir(parents=True)
    tiny_cfg.replace(SEED=3).save(tiny_cfg.TRAIN_DIR)
    with pytest.raises(EosegError, match=r"the run in .* was trained with SEED=3, but the config has SEED=0; a resumed "
                                         r"run continues the same training"):
        with claim_train_dir(tiny_cfg.replace(SEED=0), resume=True, force=False):
            pass
    with claim_train_dir(tiny_cfg.replace(SEED=3, ITERATIONS=tiny_cfg.ITERATIONS + 10), resume=True, force=False):
        pass  # its own settings, trained further


def test_resuming_another_runs_checkpoint_or_over_another_model_file_is_refused(tiny_cfg, tmp_path, monkeypatch):
    """--resume A's checkpoint with TRAIN_DIR=B took B over: B's later checkpoints and MODEL_FILE were replaced and
    its log mixed both runs' rows; and a resumed run replaced an unrelated MODEL_FILE without --force (review)."""
    from eoseg.train import claim_train_dir

    train_dir = Path(tiny_cfg.TRAIN_DIR)
    (train_dir / "checkpoints").mkdir(parents=True)
    (train_dir / "log.csv").write_text("iteration,loss\n10,2.0\n")
    tiny_cfg.save(train_dir)
    elsewhere = tmp_path / "run_a" / "checkpoints" / "iter_0000010.pt"
    with pytest.raises(EosegError, match=rf"{elsewhere} is not a checkpoint of the run in {train_dir} \(it holds its "
                                         r"checkpoints, log.csv, config.json\).*resume into that checkpoint's own TRAIN_DIR"):
        with claim_train_dir(tiny_cfg, resume=True, force=False, checkpoint=elsewhere):
            pass
    with claim_train_dir(tiny_cfg, resume=True, force=False, checkpoint=train_dir / "checkpoints" / "iter_0000010.pt"):
        pass
    with claim_train_dir(tiny_cfg.replace(TRAIN_DIR=str(tmp_path / "empty")), resume=True, force=False,
                         checkpoint=elsewhere):
        pass  # a new folder to continue it in
    Path(tiny_cfg.MODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(tiny_cfg.MODEL_FILE).write_bytes(b"this run's weights")
    with claim_train_dir(tiny_cfg, resume=True, force=False):
        pass  # its own MODEL_FILE, as its config.json names it
    theirs = tmp_path / "theirs.pt"
    theirs.write_bytes(b"another run's weights")
    with pytest.raises(EosegError, match=rf"MODEL_FILE {theirs} exists and is not the weights of the run in {train_dir}"):
        with claim_train_dir(tiny_cfg.replace(MODEL_FILE=str(theirs)), resume=True, force=False):
            pass
    assert theirs.read_bytes() == b"another run's weights"
    # the project folder moved (or copied to another machine): its relative MODEL_FILE reads from here (code review)
    from eoseg.train import _written_by_run_in

    moved = tmp_path / "moved"
    (moved / "models").mkdir(parents=True)
    (moved / "models" / "a.pt").write_bytes(b"weights")
    (moved / "config.json").write_text(json.dumps({"config": {"MODEL_FILE": "models/a.pt"},
                                                   "working_directory": "/where/it/was"}))
    monkeypatch.chdir(moved)
    assert _written_by_run_in(moved, Path("models/a.pt")) and not _written_by_run_in(moved, theirs)


def test_a_forced_run_removes_the_earlier_run_only_once_it_writes(tiny_cfg):
    """--force emptied TRAIN_DIR before the new run's data were checked: a run refused for its patch size left
    neither run (review). The earlier run is set aside, given back when the new run is refused before writing (or
    killed: the next claim gives it back), and removed when the new run writes."""
    from eoseg.train import claim_train_dir, replaced_run

    train_dir = Path(tiny_cfg.TRAIN_DIR)
    (train_dir / "checkpoints").mkdir(parents=True)
    (train_dir / "checkpoints" / "iter_0000005.pt").write_bytes(b"the earlier run's checkpoint")
    (train_dir / "log.csv").write_text("iteration,loss\n5,0.5\n")
    with pytest.raises(EosegError, match="refused by a check of its data"):
        with claim_train_dir(tiny_cfg, resume=False, force=True):
            assert not (train_dir / "log.csv").exists()
            raise EosegError("refused by a check of its data")
    assert (train_dir / "log.csv").read_text() == "iteration,loss\n5,0.5\n"
    assert (train_dir / "checkpoints" / "iter_0000005.pt").is_file() and not replaced_run(train_dir).exists()

    replaced_run(train_dir).mkdir()  # as a forced run killed half-way through setting it aside leaves it
    shutil.move(train_dir / "log.csv", replaced_run(train_dir) / "log.csv")
    with pytest.raises(EosegError, match="already holds a training run"):
        with claim_train_dir(tiny_cfg, resume=False, force=False):
            pass
    assert (train_dir / "log.csv").is_file() and (train_dir / "checkpoints" / "iter_0000005.pt").is_file()
    assert not replaced_run(train_dir).exists()

    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=1, VAL_EVERY=0)
    with claim_train_dir(cfg, resume=False, force=True):
        train(cfg, progress=False)
    assert not (train_dir / "checkpoints" / "iter_0000005.pt").exists() and not replaced_run(train_dir).exists()
    assert [row["iteration"] for row in read_log(train_dir)] == ["1"]
    assert not list(train_dir.parent.glob(f".{train_dir.name}.*ed"))  # neither set aside nor discarded is left


def test_a_forced_run_killed_before_its_end_leaves_no_weights_of_the_run_it_replaced(tiny_cfg, monkeypatch):
    """MODEL_FILE stayed the replaced run's until the new run ended: killed, TRAIN_DIR held the new run beside the old
    weights, which inference took without a note (review). They go with that run, once the new one writes."""
    from eoseg.train import claim_train_dir

    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=1, VAL_EVERY=0)
    with claim_train_dir(cfg, resume=False, force=False):
        train(cfg, progress=False)
    assert Path(cfg.MODEL_FILE).is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("eoseg.train.Trainer.snapshot", killed)  # before its first checkpoint
    with pytest.raises(KeyboardInterrupt):
        with claim_train_dir(cfg, resume=False, force=True):
            train(cfg, progress=False)
    assert not Path(cfg.MODEL_FILE).exists() and (Path(cfg.TRAIN_DIR) / "config.json").is_file()


def test_a_run_trains_into_the_current_folder(tiny_cfg, monkeypatch):
    """TRAIN_DIR "." has no name to set an earlier run aside beside: it was a traceback before the first step."""
    from eoseg.train import claim_train_dir

    folder = Path(tiny_cfg.TRAIN_DIR)
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    cfg = tiny_cfg.replace(TRAIN_DIR=".", TRAIN_SOURCE="tiles", ITERATIONS=1, VAL_EVERY=0)
    with claim_train_dir(cfg, resume=False, force=True):
        train(cfg, progress=False)
    assert (folder / "log.csv").is_file()
