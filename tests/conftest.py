"""Shared fixtures: a tiny generated dataset and a config pointing every folder at it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist each worker process gets one thread (its subprocesses too): PyTorch's
# threads spin while they wait, so two workers with two threads each on two cores run many
# times slower than two with one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

from eoseg.config import load_config, override_arguments  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

# Small and fast: 160 px tiles (not a multiple of the 64 px window), an 1/8-width SegNet.
TINY_SETTINGS = {
    # the method's recipe (the sample preset's is the own-data recipe: a U-Net, for minutes)
    "MODEL": "segnet", "OPTIMIZER": "sgd", "BASE_LR": 0.05, "ENCODER_LR_FACTOR": 0.5, "WEIGHT_DECAY": 5e-4,
    "LR_SCHEDULE": "step", "WARMUP_FRACTION": 0.0, "LOSS": "ce", "COLOR_JITTER": 0.0, "BLEND": "uniform",
    "TRAIN_MINUTES": 0.0,
    "TRAIN_IDS": ["1", "2", "3"],
    "TEST_IDS": ["4"],
    "PATCH_SIZE": 64,
    "TRAIN_STRIDE": 48,
    "WINDOW": 64,
    "STRIDE": 32,
    "MODEL_WIDTH": 0.125,
    "BATCH_SIZE": 4,
    "ITERATIONS": 6,
    "LR_STEPS": [4],
    "LOG_EVERY": 2,
    "SNAPSHOT_EVERY": 3,
    "INFER_BATCH_SIZE": 3,
    "PRECISION": "float32",  # the same losses and labels on every CPU; tests of bfloat16 ask for it
    "INFER_PRECISION": "float32",
    "DEVICE": "cpu",
}
TINY_TILE_SIZE = 160


def tiny_overrides(root: Path) -> dict:
    """TINY_SETTINGS plus every data and output folder under ``root``."""
    return {
        **TINY_SETTINGS,
        "DATA_ROOT": str(root / "data"),
        "PATCHES_DIR": str(root / "patches"),
        "LMDB_DIR": str(root / "lmdb"),
        "TRAIN_DIR": str(root / "train"),
        "MODEL_FILE": str(root / "model.pt"),
        "INFER_DIR": str(root / "inference"),
    }


as_arguments = override_arguments  # {name: value} -> KEY=VALUE, as the tests have long called it


def make_tiny_config(root: Path, **extra):
    return load_config(overrides=as_arguments({**tiny_overrides(root), **extra}))


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A tiny sample dataset (colour GT, eroded GT, DSM) and its numeric labels, made once."""
    from eoseg.convert import color_file_to_labels
    from eoseg.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("tiny")
    cfg = make_tiny_config(root)
    ids = cfg.tile_ids("train") + cfg.tile_ids("test")
    write_sample_dataset(cfg, ids, size=TINY_TILE_SIZE, seed=3)
    for tile_id in ids:
        color_file_to_labels(cfg.tile_path("GT_COLOR_PATTERN", tile_id), cfg.tile_path("LABEL_PATTERN", tile_id), cfg.palette)
    return root


@pytest.fixture
def tiny_cfg(sample_root, tmp_path):
    """Config reading the shared tiny dataset and writing outputs into this test's tmp_path."""
    overrides = tiny_overrides(tmp_path)
    overrides["DATA_ROOT"] = str(sample_root / "data")
    return load_config(overrides=as_arguments(overrides))


def run_script(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a top-level script in a fresh interpreter, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600
    )
