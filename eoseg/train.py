"""Training a network, resumable to the iteration, on one or many processes.

The recipe (eoseg.recipe) is the method's in the presets: SGD with momentum and weight decay,
the encoder at BASE_LR * ENCODER_LR_FACTOR, the learning rate divided by 10 at LR_STEPS,
cross-entropy that skips IGNORE_LABEL, optionally weighted per class; OPTIMIZER,
LR_SCHEDULE and LOSS choose others (config.py's defaults, for users' own data: AdamW,
warm-up and polynomial decay, cross-entropy + Dice). Training runs for ITERATIONS steps, or for TRAIN_MINUTES
of training steps with the schedule laid over that time. Data come from eoseg.data, where
sample order and augmentation are pure functions of the seed and the position in the
training stream. Every VAL_EVERY iterations the validation tiles are labelled and scored as
inference.py labels them (eoseg.labelling); the weights with the best mean F1 so far are
kept as TRAIN_DIR/checkpoints/best.pt, with the metrics they scored.

A checkpoint holds everything a run depends on (weights, optimizer, minutes trained, gradient
scaler, stream position, random states, the effective config and the data signature), so a
run killed at any moment and resumed from its last checkpoint repeats the same losses
(bit for bit on CPU with DETERMINISTIC). Under torchrun every process trains a
DistributedDataParallel replica on its own shard of the stream; rank 0 alone writes logs,
plots and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from rasterio.windows import Window
from tqdm import tqdm

from eoseg.allocator import reuse_freed_memory
from eoseg.checkpoint import check_checkpoint, load_checkpoint, model_record, save_checkpoint
from eoseg.config import Config
from eoseg.data import StreamBatchSampler, jitter_bands, median_frequency_weights, rescale_patches, training_data
from eoseg.device import Processes, process_group
from eoseg.errors import EosegError
from eoseg.holdout import check_scored_tiles, holdout_record, report_overlapping_tiles
from eoseg.io import (RasterInfo, atomic_path, atomic_write_text, check_output_file, check_outputs, check_writable,
                      exclusive_or_refuse)
from eoseg.labelling import labelling_stack, make_predictor, score_tile
from eoseg.metrics import metrics_from_confusion, percent
from eoseg.models import first_stream_bands, model_from_config
from eoseg.models.encoder_weights import init_encoder_weights
from eoseg.models.pretrained import other_normalisation_note, recorded_signature, recorded_train_tiles
from eoseg.normalization import Normalization, check_value_scale
from eoseg.plots import display_rgb, plot_training_log
from eoseg.precision import check_precision, resolve_precision
from eoseg.recipe import RECIPE_NAMES, LearningRateSchedule, make_loss, make_optimizer
from eoseg.tensorboard import TensorBoardLog
from eoseg.tiles import (TileStack, TruthSource, check_band_names, configured_inputs, eroded_fallback, eval_truth,
                         relative_to_here, tile_stack)
from eoseg.weights import read_weights

VALIDATION_METRICS = ("overall_accuracy", "mean_f1", "mean_iou")
PREVIEW_SIDE = 512  # px: the crop of the first validation tile shown in TensorBoard at each validation
BEST_METRIC = "mean_f1"  # one of VALIDATION_METRICS; F1 weighs the small classes (cars) that OA hides
LOG_FIELDS = ["iteration", "loss", "lr", "patches_per_s", "elapsed_s", *(f"val_{m}" for m in VALIDATION_METRICS),
              "unlabelled_batches"]  # batches skipped since the previous row: not one labelled pixel
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_GLOB = "iter_*.pt"
BEST_CHECKPOINT = "best.pt"
# how validation labels and scores its tiles (besides the weights): scores under others are not comparable
VALIDATION_SETTINGS = ("WINDOW", "STRIDE", "BLEND", "TTA", "INFER_PRECISION", "INFER_OPTIMIZE", "INFER_ENGINE",
                       "INFER_PIXEL_SIZE", "UNKNOWN_LABELS_TO_IGNORE", "GT_ERODED_PATTERN", "LABEL_PATTERN",
                       "GT_COLOR_PATTERN", "PALETTE", "IGNORE_COLOR")
LATEST_RECORD = "latest"  # in TRAIN_DIR/checkpoints: the checkpoint being written, then the one before it


def training_memory_format(cfg: Config, precision: str) -> torch.memory_format:
    """The layout training holds the network and batches in: CHANNELS_LAST, or where it is None,
    channels_last in mixed precision (faster there) and contiguous in float32 (slower on CPU)."""
    channels_last = precision != "float32" if cfg.CHANNELS_LAST is None else cfg.CHANNELS_LAST
    return torch.channels_last if channels_last else torch.contiguous_format


def _centre_crop(info: RasterInfo) -> Window:
    """The centre of a raster, at most PREVIEW_SIDE px a side: the validation preview's window."""
    top, left = max(0, (info.height - PREVIEW_SIDE) // 2), max(0, (info.width - PREVIEW_SIDE) // 2)
    return Window(left, top, min(PREVIEW_SIDE, info.width), min(PREVIEW_SIDE, info.height))


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}.pt"


# ---------------------------------------------------------------- recipe
def supervised_loss(criterion: nn.Module, outputs: torch.Tensor | tuple[torch.Tensor, ...], labels: torch.Tensor,
                    auxiliary_weight: float) -> torch.Tensor:
    """The loss of a network's output; a tuple is (final scores, auxiliary scores...).

    Auxiliary outputs (multi-scale predictions, the streams of late fusion) are each
    trained against the labels at their own resolution, taken by nearest neighbour so that
    no label is blended with another or with IGNORE_LABEL (deep supervision).
    """
    if isinstance(outputs, torch.Tensor):
        return criterion(outputs, labels)
    final, *auxiliary = outputs
    loss = criterion(final, labels)
    for scores in auxiliary:
        target = labels
        if scores.shape[-2:] != labels.shape[-2:]:
            # the label at each coarse pixel's centre, where bilinear upsampling places its score
            target = F.interpolate(labels[:, None].float(), size=scores.shape[-2:], mode="nearest-exact")[:, 0].long()
        if (target != criterion.ignore_index).any():  # all ignored would give NaN, not zero
            loss = loss + auxiliary_weight * criterion(scores, target)
    return loss


def resolve_class_weights(cfg: Config, data, progress: bool) -> list[float] | None:
    """CLASS_WEIGHTS, or median-frequency weights of the training labels when MEDIAN_FREQUENCY_WEIGHTS."""
    if not cfg.MEDIAN_FREQUENCY_WEIGHTS:
        return list(cfg.CLASS_WEIGHTS) or None
    if cfg.CLASS_WEIGHTS:
        raise EosegError("CLASS_WEIGHTS and MEDIAN_FREQUENCY_WEIGHTS are both set; choose one")
    return median_frequency_weights(data.label_maps(), cfg.num_classes, cfg.IGNORE_LABEL, progress)


def check_labelled_classes(class_names: list[str], class_pixels: list[int] | None) -> str | None:
    """Refuse training data with no labelled pixel at all; otherwise a note naming the classes no training pixel is
    labelled with (a LABEL_VALUES that sends a class's values elsewhere, tiles chosen without it), or None; None too
    for data that do not record it."""
    absent = [name for name, pixels in zip(class_names, class_pixels or []) if not pixels]
    if not absent:
        return None
    if len(absent) == len(class_names):  # the network would be saved as trained without a single step
        raise EosegError("no training pixel is labelled: the training tiles' labels are all IGNORE_LABEL, or lie where the "
                         "images hold no data; check LABEL_VALUES, the label maps and TRAIN_IDS (check_data.py lists each "
                         "class's share)")
    return (f"note: no training pixel is labelled {', '.join(absent)}: the network cannot learn "
            f"{'it' if len(absent) == 1 else 'them'}; check LABEL_VALUES and TRAIN_IDS (check_data.py lists each class's share)")


def check_training_config(cfg: Config) -> None:
    check_precision(cfg.PRECISION, "PRECISION")
    if any(not weight > 0 for weight in cfg.CLASS_WEIGHTS):  # a batch of 0-weight pixels alone has a loss of 0 / 0
        raise EosegError(f"CLASS_WEIGHTS must be positive, got {list(cfg.CLASS_WEIGHTS)!r}; to learn a class little, "
                         "give it a small weight (0.01)")
    if cfg.INIT_WEIGHTS and cfg.ENCODER_WEIGHTS:
        raise EosegError("INIT_WEIGHTS starts the whole network and ENCODER_WEIGHTS its encoder: set one of them")
    if Path(cfg.INIT_WEIGHTS).suffix.lower() in (".onnx", ".caffemodel"):
        raise EosegError(f"INIT_WEIGHTS {cfg.INIT_WEIGHTS}: training starts from eoseg weights (.pt or .safetensors); an "
                         ".onnx file cannot be trained, and a .caffemodel imposes its own normalisation")
    if Path(cfg.ENCODER_WEIGHTS).suffix.lower() in (".onnx", ".caffemodel"):
        raise EosegError(f"ENCODER_WEIGHTS {cfg.ENCODER_WEIGHTS}: an encoder starts from a state dict (.pt, .pth or "
                         ".safetensors); an .onnx file holds a graph to run, and a .caffemodel is read by convert_weights.py")
    for name in ("INIT_WEIGHTS", "ENCODER_WEIGHTS"):
        path = Path(getattr(cfg, name))
        if getattr(cfg, name) and path.is_dir():
            raise EosegError(f"{name} {path} is a folder; give the weights file in it")
    if cfg.INIT_WEIGHTS and not Path(cfg.INIT_WEIGHTS).is_file():
        raise EosegError(f"INIT_WEIGHTS not found: {cfg.INIT_WEIGHTS}{relative_to_here(Path(cfg.INIT_WEIGHTS))}")
    for name in ("ITERATIONS", "LOG_EVERY", "SNAPSHOT_EVERY"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise EosegError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.VAL_EVERY < 0 or cfg.NUM_WORKERS < 0 or cfg.SEED < 0:
        raise EosegError("VAL_EVERY, NUM_WORKERS and SEED must not be negative")


def training_progress(cfg: Config, iteration: int, training_seconds: float) -> float:
    """How far a training has come, 0 to 1: seconds trained / TRAIN_MINUTES, else iterations / ITERATIONS."""
    if cfg.TRAIN_MINUTES:
        return min(1.0, training_seconds / (60 * cfg.TRAIN_MINUTES))
    return iteration / cfg.ITERATIONS


def training_finished(cfg: Config, checkpoint: str | Path) -> bool:
    """Whether the training that wrote ``checkpoint`` (in TRAIN_DIR/checkpoints) is over, by ``cfg``."""
    payload = load_checkpoint(checkpoint)
    return training_progress(cfg, payload["iteration"], payload["training_state"].get("training_seconds", 0.0)) >= 1


# ---------------------------------------------------------------- random state
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_states() -> dict:
    """Python, numpy and torch random states as tensors and plain values (loadable with weights_only)."""
    version, internal, gauss_next = random.getstate()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_random_states(states: dict) -> None:
    python = states["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def apply_determinism(cfg: Config, device: torch.device) -> None:
    """DETERMINISTIC: reproducible kernels; otherwise let cuDNN pick the fastest convolutions."""
    if cfg.DETERMINISTIC:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility, read at its first use
    # warn_only: CUDA max-unpooling has no deterministic kernel, and stopping would help nobody
    torch.use_deterministic_algorithms(cfg.DETERMINISTIC, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.DETERMINISTIC
        torch.backends.cudnn.deterministic = cfg.DETERMINISTIC


# ---------------------------------------------------------------- checkpoints
def latest_checkpoint(cfg: Config) -> Path:
    """The checkpoint of TRAIN_DIR/checkpoints written last.

    Last written, not highest iteration: checkpoints of an earlier, longer run in the same
    folder must not be taken for this run's. Training keeps a record beside them (the
    checkpoint being written, then the one before it), which a copy of the folder keeps where
    it does not keep the files' times (``cp -r``, ``scp -r``); the first recorded one that
    exists is taken; folders without the record fall back on the times.
    """
    folder = Path(cfg.TRAIN_DIR) / "checkpoints"
    record = folder / LATEST_RECORD
    for name in record.read_text().split() if record.is_file() else []:
        if (folder / name).is_file():  # the first may not be: the run was killed while writing it
            return folder / name
    found = sorted(folder.glob(CHECKPOINT_GLOB), key=lambda path: (path.stat().st_mtime_ns, path.name))
    if not found:
        if any((Path(cfg.TRAIN_DIR) / name).exists() for name in RUN_OUTPUTS):
            raise EosegError(f"no checkpoint to resume from in {folder}: the run in {cfg.TRAIN_DIR} stopped before its "
                             "first checkpoint (SNAPSHOT_EVERY); start it over with --force")
        raise EosegError(f"no checkpoint to resume from in {folder}; train without --resume first")
    return found[-1]


RUN_OUTPUTS = ("checkpoints", "log.csv", "loss.png", "config.json", "tensorboard")  # what a run writes into TRAIN_DIR


def replaced_run(train_dir: str | Path) -> Path:
    """Where --force keeps the run it replaces until the new run writes its first output: a new run refused by a
    check of its data (another patch size, say) gives it back instead of leaving TRAIN_DIR empty."""
    train_dir = Path(train_dir).absolute()  # "." has no name to put it beside
    return train_dir.with_name(f".{train_dir.name}.replaced")


def _discarded_run(train_dir: str | Path) -> Path:
    aside = replaced_run(train_dir)
    return aside.with_name(aside.name.removesuffix(".replaced") + ".discarded")


def _move_run_outputs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        if (source / name).exists():
            os.replace(source / name, target / name)


def _give_back_replaced_run(train_dir: Path) -> None:
    """Put the run that --force set aside back into ``train_dir`` (all of it, where a kill stopped its move half-way:
    the new run writes only once it is discarded); finish removing one discarded by a killed run."""
    if _discarded_run(train_dir).exists():
        shutil.rmtree(_discarded_run(train_dir))
    aside = replaced_run(train_dir)
    if aside.exists():
        _move_run_outputs(aside, train_dir)
        shutil.rmtree(aside)


def discard_replaced_run(train_dir: str | Path, model_file: str | Path) -> None:
    """The new run is about to write TRAIN_DIR: the run --force replaces goes for good (renamed first, so that a
    kill while it is removed leaves no part of it to be given back), and its weights at ``model_file`` with it: a
    new run killed before its end would leave them beside its own log and checkpoints, taken for its weights."""
    aside = replaced_run(train_dir)
    if aside.exists():
        if Path(model_file).exists() and _written_by_run_in(aside, Path(model_file)):
            Path(model_file).unlink()
        os.replace(aside, _discarded_run(train_dir))
        shutil.rmtree(_discarded_run(train_dir))


def check_model_file_reads_nothing(cfg: Config) -> None:
    """Refuse a MODEL_FILE that is a file the run reads (the INIT_WEIGHTS it starts from, a tile), whatever --force
    says: the weights would be written over it."""
    weights = {Path(getattr(cfg, name)).resolve(): f"the {name} file" for name in ("INIT_WEIGHTS", "ENCODER_WEIGHTS")
               if getattr(cfg, name)}
    check_outputs([Path(cfg.MODEL_FILE)], {**configured_inputs(cfg), **weights}, True, "MODEL_FILE")


@contextlib.contextmanager
def claim_train_dir(cfg: Config, resume: bool, force: bool, checkpoint: str | Path | None = None) -> Iterator[None]:
    """Hold TRAIN_DIR for one run: refuse a folder holding another run unless ``resume`` or ``force``; resumed from
    ``checkpoint`` (given by its path: None for TRAIN_DIR's latest), refuse one of another run than TRAIN_DIR holds,
    and a MODEL_FILE that is not the resumed run's.

    Checked before the first step: every output location is writable, no other run is
    writing TRAIN_DIR or MODEL_FILE (a lock beside each, held until the block ends), and a new run does not
    mix its log and checkpoints with an earlier run's nor replace MODEL_FILE unasked
    (``force`` sets the earlier run's outputs aside, removed when the new run writes its first, given back if it
    is refused before that).
    """
    train_dir, model_file = Path(cfg.TRAIN_DIR).absolute(), Path(cfg.MODEL_FILE)  # "." has no name to lock beside
    check_writable(train_dir, "TRAIN_DIR")
    check_output_file(model_file, "MODEL_FILE")
    check_model_file_reads_nothing(cfg)
    report_overlapping_tiles(cfg)
    lock = train_dir.with_name(f".{train_dir.name}.lock")
    with exclusive_or_refuse(lock, f"another training run is writing {train_dir} (it holds {lock}); "
                                   "wait for it to end or choose another TRAIN_DIR"):
        _give_back_replaced_run(train_dir)  # a forced run killed before it wrote: the run it replaced is still the one
        if resume:  # the checkpoint is held to the config; the run in TRAIN_DIR (another's?) must be held to it too
            check_resumed_settings(_run_config(train_dir), cfg, f"the run in {train_dir}", leave_out=("PRECISION",))
            if checkpoint is not None:
                _check_checkpoint_of_this_run(Path(checkpoint), train_dir)
        else:
            # a lock file a killed run left (MODEL_FILE's, when it lies in TRAIN_DIR) is no run
            held = sorted(p.name for p in train_dir.iterdir() if not p.name.endswith(".lock")) if train_dir.is_dir() else []
            if held and not force:
                if not any((train_dir / "checkpoints").glob(CHECKPOINT_GLOB)):
                    raise EosegError(f"{train_dir} holds a training run that stopped before its first checkpoint "
                                     f"({', '.join(held[:4])}); pass --force to start over, or choose another TRAIN_DIR")
                raise EosegError(f"{train_dir} already holds a training run ({', '.join(held[:4])}); pass --resume to "
                                 "continue it, --force to start over (its log and checkpoints are removed), "
                                 "or choose another TRAIN_DIR")
        # runs of two TRAIN_DIRs may share a MODEL_FILE: the one ending last would replace the other's weights
        model_lock = model_file.with_name(f".{model_file.name}.lock")
        with exclusive_or_refuse(model_lock, f"another training run will write MODEL_FILE {model_file} (it holds "
                                             f"{model_lock}); wait for it to end or choose another MODEL_FILE"):
            if resume and model_file.exists() and not _written_by_run_in(train_dir, model_file):
                raise EosegError(f"MODEL_FILE {model_file} exists and is not the weights of the run in {train_dir}, which "
                                 "the resumed run would replace when it ends; choose another MODEL_FILE (the run's own: "
                                 "its config.json names it), or remove that file")
            if not resume:
                if model_file.exists() and not force:
                    raise EosegError(f"MODEL_FILE {model_file} already exists; pass --force to replace it when this run "
                                     "ends, or choose another MODEL_FILE")
                if force and any((train_dir / name).exists() for name in RUN_OUTPUTS):
                    _move_run_outputs(train_dir, replaced_run(train_dir))
            try:
                yield
            finally:
                _give_back_replaced_run(train_dir)


def _check_checkpoint_of_this_run(checkpoint: Path, train_dir: Path) -> None:
    """Refuse to resume, in a TRAIN_DIR that holds a run, from a checkpoint that is not in its checkpoints: the
    continuation of another run would replace its later checkpoints and MODEL_FILE and follow its log."""
    own = train_dir / "checkpoints"
    held = [name for name in RUN_OUTPUTS if (train_dir / name).exists()]
    if held and not checkpoint.resolve().is_relative_to(own.resolve()):
        raise EosegError(f"{checkpoint} is not a checkpoint of the run in {train_dir} (it holds its {', '.join(held)}), "
                         f"which resuming from it there would mix with another; resume into that checkpoint's own "
                         f"TRAIN_DIR, or into an empty one")


def _written_by_run_in(train_dir: Path, model_file: Path) -> bool:
    """Whether the run whose config.json TRAIN_DIR holds writes ``model_file`` (its MODEL_FILE, as it resolved)."""
    try:
        record = json.loads((train_dir / "config.json").read_text())
        named = Path(record["config"]["MODEL_FILE"])
        then = Path(record.get("working_directory") or ".")
    except (OSError, ValueError, KeyError, TypeError):
        return False
    # as it was written then, or, relative, as it reads from here: a project folder moved (or copied to another
    # machine) with its runs names its weights as it did
    return model_file.resolve() in {(then / named).resolve(), named.resolve()}


def _run_config(train_dir: Path) -> str | None:
    """The config (as JSON) of the run whose config.json TRAIN_DIR holds; None where it holds none."""
    try:
        return json.dumps(json.loads((train_dir / "config.json").read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# what a resumed run shares with the run it continues, so that it repeats its losses: the recipe (but ITERATIONS,
# which may grow to train further, and the labelling's WINDOW to TTA), the tiles and how their labels are read, the
# sampling and the precision (compared as it resolved where the checkpoint records that: check_resumed_precision);
# the model, the data's signature and the blocks held out are checked on their own
RESUMED_SETTINGS = (*(name for name in RECIPE_NAMES if name not in ("MODEL", "MODEL_WIDTH", "ENCODER", "ITERATIONS",
                                                                    "WINDOW", "STRIDE", "BLEND", "TTA")),
                    "TRAIN_IDS", "TRAIN_SOURCE", "SEED", "SHUFFLE_SEED", "PRECISION", "LABEL_VALUES", "LABEL_TOLERANCE")


def check_resumed_settings(recorded_config: str | None, cfg: Config, what: str, leave_out: tuple[str, ...] = ()) -> None:
    """Refuse to resume under other RESUMED_SETTINGS (but ``leave_out``) than ``what`` (a checkpoint, or the run in
    TRAIN_DIR) had (its config, as JSON)."""
    if recorded_config is None:
        return
    recorded, current = json.loads(recorded_config), json.loads(json.dumps(cfg.to_dict(), default=str))
    changed = [name for name in RESUMED_SETTINGS
               if name not in leave_out and name in recorded and recorded[name] != current[name]]
    if changed:
        raise EosegError(f"{what} was trained with {', '.join(f'{n}={recorded[n]!r}' for n in changed)}, but the "
                         f"config has {', '.join(f'{n}={getattr(cfg, n)!r}' for n in changed)}; a resumed run continues the "
                         "same training: resume with its settings, or start a new run (--force, or another TRAIN_DIR)")


def same_data_record(recorded, current) -> bool:
    """Whether two records of training data (class pixels; band statistics, at 6 significant digits) agree: the
    statistics of the same data summed in another order may round the other way in their last digit."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return recorded.keys() == current.keys() and all(
            np.allclose(recorded[key], current[key], rtol=1e-5, atol=0) for key in recorded)
    return recorded == current


def check_resumed_budget(recorded_config: str | None, cfg: Config, path: str | Path) -> None:
    """Refuse to resume a run trained for a time budget (TRAIN_MINUTES) by a count of steps (ITERATIONS), or the other
    way: its learning rate's schedule, laid over the one, would jump to the other's. Either may grow, to train further."""
    if recorded_config is None:
        return
    recorded = json.loads(recorded_config)
    minutes = recorded.get("TRAIN_MINUTES", 0.0)
    if bool(minutes) == bool(cfg.TRAIN_MINUTES):
        return
    if minutes:
        raise EosegError(f"checkpoint {path} was trained for a time budget, TRAIN_MINUTES={minutes:g}, but the config "
                         f"counts steps (TRAIN_MINUTES=0, ITERATIONS={cfg.ITERATIONS}): the learning rate's schedule would "
                         f"change course; resume with TRAIN_MINUTES={minutes:g} (more, to train further)")
    raise EosegError(f"checkpoint {path} was trained for ITERATIONS={recorded.get('ITERATIONS')} steps, but the config "
                     f"sets a time budget, TRAIN_MINUTES={cfg.TRAIN_MINUTES:g}: the learning rate's schedule would change "
                     "course; resume with TRAIN_MINUTES=0 (and more ITERATIONS, to train further)")


def check_resumed_precision(recorded: str | None, precision: str, reason: str, cfg: Config, path: str | Path) -> None:
    """Refuse to resume a run trained in another precision than PRECISION resolves to here (None: not recorded)."""
    if recorded is not None and recorded != precision:
        raise EosegError(f"checkpoint {path} was trained in {recorded}, but PRECISION={cfg.PRECISION!r} is {precision} "
                         f"here ({reason}); resume with PRECISION=\"{recorded}\" to continue the same training, or start "
                         "a new run (--force, or another TRAIN_DIR)")


def _holds_weights_of(model_file: str | Path, payload: dict) -> bool:
    """Whether ``model_file`` holds the weights of the checkpoint ``payload``."""
    try:
        written = load_checkpoint(model_file)["state_dict"]
    except (EosegError, KeyError, TypeError):
        return False
    weights = payload["state_dict"]
    return written.keys() == weights.keys() and all(torch.equal(written[key], weights[key]) for key in weights)


def load_resume_checkpoint(path: str | Path, cfg: Config) -> dict:
    """A checkpoint to resume from, refused unless it fits ``cfg`` and holds training state."""
    if not Path(path).is_file():
        raise EosegError(f"checkpoint to resume from not found: {path}")
    payload = load_checkpoint(path)
    check_checkpoint(payload, cfg, f"checkpoint {path}")
    recorded, expected = payload["model"], model_record(cfg)
    for key, name in (("name", "MODEL"), ("width", "MODEL_WIDTH"), ("encoder", "ENCODER")):
        if recorded.get(key) != expected.get(key):
            raise EosegError(f"checkpoint {path} holds a model with {name}={recorded.get(key)!r}, but the config has "
                             f"{expected.get(key)!r}; resume with the config it was trained with")
    if recorded.get("stream_bands", first_stream_bands(cfg)) != first_stream_bands(cfg):
        raise EosegError(f"checkpoint {path} feeds {recorded['stream_bands']} bands to its first stream, but the config "
                         f"gives it {first_stream_bands(cfg)} (STREAM_BANDS); resume with the config it was trained with")
    made_with = payload["signature"].get("holdout")
    if made_with != holdout_record(cfg):
        raise EosegError(f"checkpoint {path} was trained with tiles held out in blocks as {made_with} (HOLDOUT_BLOCK, "
                         f"HOLDOUT_EVERY, the tiles in TRAIN_IDS and held out), but the config gives {holdout_record(cfg)}; "
                         "resume with the config it was trained with")
    if "training_state" not in payload:
        raise EosegError(f"{path}: holds weights only, no training state to resume from; use a checkpoint from {cfg.TRAIN_DIR}/checkpoints")
    # "auto" and the precision it resolves to are the same setting: the resolved one is compared, once resolved
    check_resumed_settings(payload.get("config"), cfg, f"checkpoint {path}",
                           leave_out=("PRECISION",) if "precision" in payload["training_state"] else ())
    if "sample_position" not in payload["training_state"]:
        raise EosegError(f"{path}: written by an earlier eoseg that did not record the position in the training data; "
                         "it cannot be resumed exactly; start a new run")
    check_resumed_budget(payload.get("config"), cfg, path)
    # a run killed after its last checkpoint, before MODEL_FILE: resuming it trains no further and writes MODEL_FILE
    finishing = payload["training_state"].get("finished", False) and not _holds_weights_of(cfg.MODEL_FILE, payload)
    if cfg.TRAIN_MINUTES:
        if "training_seconds" not in payload["training_state"]:
            raise EosegError(f"{path}: written by an earlier eoseg that did not record the time trained; it cannot continue "
                             "a TRAIN_MINUTES budget; resume without TRAIN_MINUTES or start a new run")
        if payload["training_state"]["training_seconds"] >= 60 * cfg.TRAIN_MINUTES and not finishing:
            raise EosegError(f"{path} has trained {payload['training_state']['training_seconds'] / 60:.2f} minutes, not less than "
                             f"TRAIN_MINUTES={cfg.TRAIN_MINUTES:g}; raise TRAIN_MINUTES to train further")
    elif payload["iteration"] >= cfg.ITERATIONS and not finishing:
        raise EosegError(f"{path} is at iteration {payload['iteration']}, not before ITERATIONS={cfg.ITERATIONS}; raise ITERATIONS to train further")
    return payload


# ---------------------------------------------------------------- logging
class TrainingLog:
    """CSV of loss, learning rate and validation metrics, and their plot, refreshed as training goes."""

    PLOT_INTERVAL_S = 15.0  # redrawing costs ~0.2 s; often enough to watch, rare enough not to slow training

    def __init__(self, folder: Path, resume_from: int):
        self.csv_path = folder / "log.csv"
        self.plot_path = folder / "loss.png"
        self.rows: list[dict] = []
        if resume_from and self.csv_path.is_file():
            # rows written after the checkpoint (by a run that was then killed) are repeated by this run
            with open(self.csv_path, newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["iteration"]) <= resume_from]
        self._last_plot = 0.0
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(self.rows)

    tensorboard: TensorBoardLog | None = None  # also gets every row, when set

    def add(self, row: dict, plot_now: bool = False) -> None:
        self.rows.append(row)
        self._rewrite()
        if self.tensorboard is not None:
            self.tensorboard.add_row(row)
        if plot_now or time.monotonic() - self._last_plot > self.PLOT_INTERVAL_S:
            plot_training_log(self.rows, self.plot_path)
            self._last_plot = time.monotonic()


# ---------------------------------------------------------------- training
class Trainer:
    """One process's share of a training run: model, optimizer, data, validation, checkpoints."""

    def __init__(self, cfg: Config, processes: Processes, device: torch.device,
                 resume: str | Path | None = None, progress: bool = True):
        check_training_config(cfg)
        self.cfg, self.processes, self.device = cfg, processes, device
        self.progress = progress and processes.is_main
        self.train_dir = Path(cfg.TRAIN_DIR)
        payload = load_resume_checkpoint(resume, cfg) if resume else None
        self.last_checkpoint = Path(resume) if resume else None  # of this run's lineage: written, or resumed from
        apply_determinism(cfg, device)
        if cfg.REUSE_FREED_MEMORY and device.type == "cpu":
            reuse_freed_memory()
        seed_everything(cfg.SEED)
        self.model = model_from_config(cfg)  # identical on every process: same seed
        if cfg.ENCODER_WEIGHTS and payload is None:
            loaded = init_encoder_weights(self.model, cfg.ENCODER_WEIGHTS, cfg.stacked_band_names)
            if processes.is_main:
                print(loaded)
                note = other_normalisation_note(cfg.ENCODER_WEIGHTS, cfg.stacked_band_names, cfg.stacked_mean, cfg.stacked_std)
                if note:
                    print(note, file=sys.stderr)
        if cfg.INIT_WEIGHTS and payload is None:
            recorded = recorded_signature(cfg.INIT_WEIGHTS) or {}
            recorded_classes, recorded_bands = recorded.get("class_names"), recorded.get("band_names")
            if recorded_classes is not None and list(recorded_classes) != list(cfg.CLASS_NAMES):
                raise EosegError(f"INIT_WEIGHTS {cfg.INIT_WEIGHTS} was trained for classes {', '.join(recorded_classes)}, "
                                 f"and the config has {', '.join(cfg.CLASS_NAMES)}: INIT_WEIGHTS starts the whole network, "
                                 f"its classifier included; for other classes start its encoder alone (ENCODER_WEIGHTS="
                                 f"{cfg.INIT_WEIGHTS} and INIT_WEIGHTS=\"\")")
            if recorded_bands is not None and list(recorded_bands) != list(cfg.stacked_band_names):
                raise EosegError(f"INIT_WEIGHTS {cfg.INIT_WEIGHTS} was trained on the bands {', '.join(recorded_bands)}, "
                                 f"and the config stacks {', '.join(cfg.stacked_band_names)}: INIT_WEIGHTS starts the whole "
                                 f"network, its first layer included; for other bands, or the same in another order, start "
                                 f"its encoder alone (ENCODER_WEIGHTS={cfg.INIT_WEIGHTS} and INIT_WEIGHTS=\"\"), which "
                                 "matches bands by name")
            self.model.load_state_dict(read_weights(cfg.INIT_WEIGHTS, cfg, for_training=True)[0].state_dict())
            if processes.is_main:
                print(f"{cfg.INIT_WEIGHTS}: the whole network starts from these weights (fine-tuning)")
        self.precision, precision_reason = resolve_precision(cfg.PRECISION, device)
        if payload is not None:
            check_resumed_precision(payload["training_state"].get("precision"), self.precision, precision_reason, cfg, resume)
        self.memory_format = training_memory_format(cfg, self.precision)
        if self.progress:
            print(f"precision: {self.precision} ({precision_reason}); memory layout: "
                  f"{'channels_last' if self.memory_format == torch.channels_last else 'contiguous'}")
        self.model.to(device, memory_format=self.memory_format)
        self.optimizer = make_optimizer(cfg, self.model)
        self.schedule = LearningRateSchedule(cfg, self.optimizer)
        self.autocast_dtype = AUTOCAST_DTYPES[self.precision]
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "float16")
        self.iteration, sample_position, self.best = 0, 0, None
        self.training_seconds = 0.0  # time spent in training steps, over all runs of this training (TRAIN_MINUTES)
        self.elapsed_seconds = 0.0  # wall-clock time of those runs' loops, validating and saving too (log.csv's elapsed_s)
        if payload is not None:
            state = payload["training_state"]
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            restore_random_states(state["random_states"])
            self.iteration, sample_position = payload["iteration"], state["sample_position"]
            self.best = state["best"]  # where it still stands: _standing_best, once the run is accepted
            self.training_seconds = state.get("training_seconds", 0.0)  # absent: written before TRAIN_MINUTES; refused under it
            self.elapsed_seconds = state.get("elapsed_seconds", 0.0)  # absent: written before it was recorded
        self.start_iteration = self.iteration
        self.nonfinite_input_iteration = None  # first iteration whose batch held NaN or infinite pixels
        self.network = self.model
        if processes.distributed:
            self.network = DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None, gradient_as_bucket_view=True)
        if cfg.COMPILE:
            self.network = torch.compile(self.network)

        self.data = training_data(cfg)
        recorded_records = payload["training_state"].get("training_records") if payload is not None else None
        if recorded_records is not None and recorded_records != len(self.data):  # its stream position means other patches
            raise EosegError(f"{resume}: its run trained on {recorded_records} patches, and the training data holds "
                             f"{len(self.data)} now (rebuilt?); a resumed run continues on the same data: rebuild it as "
                             "it was, or start a new run (--force, or another TRAIN_DIR)")
        for key, what in (("class_pixels", "pixels of each class"), ("input_statistics", "bands' mean and std")):
            recorded = payload["signature"].get(key) if payload is not None else None
            if recorded is not None and not same_data_record(recorded, getattr(self.data, key)):  # as many patches
                raise EosegError(f"{resume}: its run trained on data of other {what} than the training data holds now "
                                 f"({recorded} against {getattr(self.data, key)}: other labels or images?); a resumed run "
                                 "continues on the same data: rebuild it as it was, or start a new run (--force, or "
                                 "another TRAIN_DIR)")
        note = check_labelled_classes(cfg.CLASS_NAMES, self.data.class_pixels)
        if note and processes.is_main:
            print(note, file=sys.stderr)
        # recorded with the weights
        self.trained_on = {"input_dtype": str(self.data[(0, 0)][0].numpy().dtype), "pixel_size_m": self.data.pixel_size_m,
                           "input_statistics": self.data.input_statistics, "image_bands": self.data.image_bands,
                           "nodata_fill": self.data.nodata_fill,
                           "nodata_zero": bool(cfg.NODATA_ZERO),  # zeros never learned: said where labelling reads them
                           "class_pixels": self.data.class_pixels,
                           "inherited_train_tiles": (payload["signature"].get("inherited_train_tiles") if payload is not None
                                                     else recorded_train_tiles(cfg.ENCODER_WEIGHTS or cfg.INIT_WEIGHTS)
                                                     if cfg.ENCODER_WEIGHTS or cfg.INIT_WEIGHTS else None) or None}
        self.sampler = StreamBatchSampler(len(self.data), cfg.BATCH_SIZE, cfg.SEED, sample_position,
                                          processes.rank, processes.world_size)
        self.class_weights = resolve_class_weights(cfg, self.data, self.progress)
        self.criterion = make_loss(cfg, device, self.class_weights)
        # nodata filled as the training data were (tiles.training_filling)
        self.normalization = Normalization.from_config(cfg).filled_as_recorded(self.data.input_statistics, self.data.nodata_fill)
        self.validation_tiles = self._validation_tiles()
        if payload is not None:  # every check passed: the run resumes
            self.best = self._standing_best(self.best)
        # collectives run on the GPU with nccl, on the CPU with gloo
        self.collective_device = device if device.type == "cuda" and processes.distributed else torch.device("cpu")
        self.log = None
        self.tensorboard = None  # TRAIN_DIR/tensorboard/ on the main process, when tensorboard is installed
        if processes.is_main:
            discard_replaced_run(self.train_dir, cfg.MODEL_FILE)
            (self.train_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            cfg.save(self.train_dir)
            self.log = TrainingLog(self.train_dir, self.iteration)
            self.tensorboard = TensorBoardLog.open(self.train_dir / "tensorboard", self.iteration)
            self.log.tensorboard = self.tensorboard
            if self.class_weights and cfg.MEDIAN_FREQUENCY_WEIGHTS:
                print("median-frequency class weights: " + ", ".join(
                    f"{name} {w:.3f}" for name, w in zip(cfg.CLASS_NAMES, self.class_weights)))

    # ------------------------------------------------------------ validation
    def _validation_ids(self) -> list[str]:
        return self.cfg.ids("VAL_IDS") or self.cfg.tile_ids("test")

    def _validation_setup(self) -> dict:
        """What a validation score depends on besides the weights: the tiles and how they are labelled and scored."""
        values = self.cfg.to_dict()
        settings = {name: values[name] for name in VALIDATION_SETTINGS}
        return json.loads(json.dumps({"tiles": self._validation_ids(), **settings}, default=str))

    def _standing_best(self, best: dict | None) -> dict | None:
        """The best validation of the run resumed, where it still stands: TRAIN_DIR's best.pt holds its weights, and
        validation is set up as it was (a score on other tiles, or labelled otherwise, is not comparable). Else the best
        is chosen afresh from here, and a best.pt the checkpoint did not choose (of a run resumed from an earlier
        checkpoint: a future this run discards) is removed."""
        if best is None or not self.processes.is_main:  # the main process alone keeps best.pt
            return best
        path = self.train_dir / "checkpoints" / BEST_CHECKPOINT
        try:
            held = load_checkpoint(path)["iteration"] if path.is_file() else None
        except EosegError:  # damaged: as good as absent
            held = None
        setup = self._validation_setup()
        discarded = False  # best.pt of iterations this run discards
        if self.cfg.VAL_EVERY and best.get("validation", setup) != setup:
            why = ("validation is set up otherwise now (VAL_IDS, ground truth, or how the tiles are labelled and scored); "
                   f"{path} stays until a validation replaces it")
        elif held is None:
            why = f"{path} is not there, or cannot be read (another TRAIN_DIR?)"
        elif held != best["iteration"]:
            why = f"{path} holds iteration {held}, not this checkpoint's best (resumed from an earlier checkpoint)"
            discarded = True
        else:
            return best
        if discarded:
            path.unlink()
        if self.progress:
            print(f"note: the best validation so far ({best['metric']} {best['value']:.4f} at iteration {best['iteration']}) "
                  f"is not carried over: {why}; the best is chosen afresh from iteration {self.iteration}"
                  + (f", and {path} was removed" if discarded else ""), file=sys.stderr)
        return None

    def _validation_tiles(self) -> list[tuple[TileStack, TruthSource]]:
        """This process's share of the validation tiles: each one's stacked input and ground truth.

        Read afresh at each validation, block of rows by block, as inference.py reads them."""
        if not self.cfg.VAL_EVERY:
            return []
        tile_ids = self._validation_ids()
        if not tile_ids:
            raise EosegError("VAL_EVERY is set but there is no tile to validate on (VAL_IDS and TEST_IDS are empty); set VAL_EVERY=0")
        if self.processes.is_main:  # validating on what the starting weights learned from: said, as inference says it
            check_scored_tiles({"inherited_train_tiles": self.trained_on["inherited_train_tiles"] or []}, self.cfg,
                               tile_ids, "this run")
        tiles = []
        for tile_id in tile_ids:  # all checked on every process: a bad tile stops the run before it starts
            stack = tile_stack(self.cfg, tile_id)
            note = check_value_scale(self.trained_on["input_statistics"], stack.sample_statistics(), len(self.cfg.BANDS),
                                     f"validation tile {tile_id} ({stack.info.path})", self.cfg.INFER_VALUE_CHECK,
                                     "those of the training tiles", self.cfg.INFER_VALUE_SCALE,
                                     stack.named_source_bands(self.cfg), self.cfg.BAND_NAMES)
            if note and self.processes.is_main:
                print(note, file=sys.stderr)
            note = check_band_names(stack.info, self.cfg.BANDS, self.trained_on["image_bands"], "the training images")
            if note and self.processes.is_main:
                print(note, file=sys.stderr)
            stack = labelling_stack(self.cfg, stack, self.trained_on["pixel_size_m"], say=self.processes.is_main)
            truth = eval_truth(self.cfg, tile_id, stack.info)
            if truth is None:
                raise EosegError(f"validation tile {tile_id} has no ground truth; choose VAL_IDS with labels or set VAL_EVERY=0")
            tiles.append((stack, truth))
        fallback = eroded_fallback(self.cfg, tile_ids)
        if fallback and self.processes.is_main:
            print(f"note: {fallback}", file=sys.stderr)
        return tiles[self.processes.rank::self.processes.world_size]

    def validate(self, preview: bool = False) -> tuple[dict, np.ndarray | None]:
        """Metrics of the validation tiles labelled as inference.py labels them (all processes together),
        and with ``preview`` the (H, W, 3) uint8 image | ground truth | prediction of the centre of this
        process's first validation tile, at most PREVIEW_SIDE px a side, from the same labelling.

        The same labelling core (eoseg.labelling) with the same settings (BLEND, TTA,
        INFER_PRECISION, INFER_OPTIMIZE, INFER_ENGINE, nodata handling, INFER_PIXEL_SIZE):
        inference.py with these weights reports the same confusion matrix, to the pixel.
        """
        cfg = self.cfg
        confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
        predictor = make_predictor(cfg, self.model, self.normalization, self.device)
        panels = None
        for index, (stack, truth) in enumerate(self.validation_tiles):
            crop = _centre_crop(stack.info) if preview and index == 0 else None
            tile_confusion, labels = score_tile(cfg, predictor, stack, truth, crop)
            confusion += tile_confusion
            if labels is not None:
                with stack.on_grid(stack.info) as own_grid:  # the image as it is, whichever grid labelled it
                    pixels = own_grid.read(crop)
                expected = truth.read_rows(cfg.palette, crop.row_off, crop.row_off + crop.height)
                expected = expected[:, crop.col_off:crop.col_off + crop.width]
                panels = np.concatenate([display_rgb(pixels, cfg.BAND_NAMES), cfg.palette.to_color(expected), cfg.palette.to_color(labels)],
                                        axis=1)
        self.model.train()  # the predictor switched it to evaluation
        if self.processes.distributed:
            total = torch.from_numpy(confusion).to(self.collective_device)
            dist.all_reduce(total)
            confusion = total.cpu().numpy()
        return metrics_from_confusion(confusion, cfg.CLASS_NAMES), panels

    # ------------------------------------------------------------ steps
    def training_progress(self) -> float:
        """How far the training has come, 0 to 1 (see :func:`training_progress`)."""
        return training_progress(self.cfg, self.iteration, self.training_seconds)

    def _agreed_seconds(self, seconds: float) -> float:
        """Under torchrun with TRAIN_MINUTES, rank 0's clock for every process: all must take the same
        learning rate and stop at the same step."""
        if not (self.processes.distributed and self.cfg.TRAIN_MINUTES):
            return seconds
        shared = torch.tensor([seconds], dtype=torch.float64, device=self.collective_device)
        dist.broadcast(shared, 0)
        return shared.item()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = self.normalization.apply(images.to(self.device, non_blocking=True))
        labels = labels.to(self.device, non_blocking=True).long()
        # drawn from the seed, the iteration and the process: a resumed run draws the same
        draws = torch.Generator().manual_seed((self.cfg.SEED * 1_000_003 + self.iteration) * 1009 + self.processes.rank)
        if self.cfg.COLOR_JITTER:
            images = jitter_bands(images, self.cfg.COLOR_JITTER, len(self.cfg.BANDS), draws)
        if self.cfg.RANDOM_SCALE:
            images, labels = rescale_patches(images, labels, self.cfg.RANDOM_SCALE, self.cfg.IGNORE_LABEL, draws)
        images = images.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = supervised_loss(self.criterion, self.network(images), labels, self.cfg.AUX_LOSS_WEIGHT)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def _holds_labels(self, labels: torch.Tensor) -> bool:
        """Whether any process's batch has a labelled pixel; all-ignored batches would make the loss NaN."""
        labelled = (labels != self.cfg.IGNORE_LABEL).any()  # on the loader's CPU tensor: no device sync
        if not self.processes.distributed:
            return bool(labelled)
        flag = labelled.to(self.collective_device, dtype=torch.int32)
        dist.all_reduce(flag)
        return bool(flag.item())

    def _divergence_cause(self) -> str:
        if self.nonfinite_input_iteration is not None:
            return (f"the training batch of iteration {self.nonfinite_input_iteration} held NaN or infinite pixels; "
                    "check the tiles' nodata and NORM_MEAN / NORM_STD")
        return "the inputs were finite, so the steps were too large: lower BASE_LR (or check NORM_STD scales the inputs to about 0..1)"

    def _mean_loss(self, loss_sum: torch.Tensor, steps: int) -> float:
        """Mean loss of the last ``steps`` steps over all processes; stops the run if it is not finite."""
        total = loss_sum.detach().clone().to(self.collective_device)
        if self.processes.distributed:
            dist.all_reduce(total)
        mean = total.item() / (steps * self.processes.world_size)
        if not np.isfinite(mean):
            raise EosegError(f"the loss became {mean} by iteration {self.iteration}: {self._divergence_cause()}")
        return mean

    def snapshot(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "training_seconds": self.training_seconds,
            "elapsed_seconds": self.elapsed_seconds,
            "precision": self.precision,  # as PRECISION resolved on this device
            "scaler": self.scaler.state_dict(),
            "sample_position": self.sampler.position_after(self.iteration - self.start_iteration),
            "world_size": self.processes.world_size,
            "random_states": random_states(),
            "best": self.best,
            "class_weights": self.class_weights,
            "finished": self.training_progress() >= 1,  # the run's last checkpoint: its weights are MODEL_FILE's
            "training_records": len(self.data),
        }
        folder = self.train_dir / "checkpoints"
        path = folder / checkpoint_name(self.iteration)
        previous = self.last_checkpoint  # always of an earlier iteration: snapshots follow a step
        kept = [previous.name] if previous is not None and previous.resolve().parent == folder.resolve() else []
        # named before it is written, with the one before it: a run killed in between resumes from
        # that one, and a file of the same name from an earlier, longer run cannot stand in
        path.unlink(missing_ok=True)
        atomic_write_text(folder / LATEST_RECORD, "\n".join([path.name, *kept]) + "\n")
        self.last_checkpoint = save_checkpoint(path, self.cfg, self.model, self.iteration, state, trained_on=self.trained_on)
        return self.last_checkpoint

    def _record_validation(self, row: dict) -> None:
        metrics, preview = self.validate(preview=self.tensorboard is not None)
        row.update({f"val_{m}": f"{metrics[m]:.5f}" for m in VALIDATION_METRICS if metrics[m] is not None})
        value = metrics[BEST_METRIC]
        if value is not None and (self.best is None or value > self.best["value"]):
            self.best = {"iteration": self.iteration, "metric": BEST_METRIC, "value": value,
                         "validation": self._validation_setup()}
            if self.processes.is_main:
                save_checkpoint(self.train_dir / "checkpoints" / BEST_CHECKPOINT, self.cfg, self.model, self.iteration,
                                validation=metrics, trained_on=self.trained_on)
        if self.tensorboard is not None:
            self.tensorboard.add_validation(self.iteration, metrics, preview)
        if self.progress:
            tqdm.write(f"iteration {self.iteration}: validation OA {percent(metrics['overall_accuracy'])}, "
                       f"mean F1 {percent(metrics['mean_f1'])}, mean IoU {percent(metrics['mean_iou'])}")

    def run(self, stop_after: int | None = None) -> Path:
        """Train up to ITERATIONS (or for TRAIN_MINUTES), or up to iteration ``stop_after`` if that comes first
        (a pause: the schedule stays laid over the whole training); return the path of the weights (MODEL_FILE)."""
        cfg, processes = self.cfg, self.processes
        loader = DataLoader(
            self.data, batch_sampler=self.sampler, num_workers=cfg.NUM_WORKERS, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.SEED),  # keeps the process-wide torch RNG untouched
        )
        patches_per_step = cfg.BATCH_SIZE * processes.world_size
        if self.training_progress() >= 1 and self.progress and processes.is_main:
            print(f"{self.last_checkpoint} ended its run: nothing left to train; its weights go to MODEL_FILE {cfg.MODEL_FILE}")
        self.model.train()
        bar = tqdm(total=None if cfg.TRAIN_MINUTES else cfg.ITERATIONS, initial=self.iteration, desc="train", unit="it",
                   disable=not self.progress)
        run_start = window_start = time.perf_counter()
        trained_before, paused = self.training_seconds, 0.0  # paused: validating and saving, not training
        elapsed_before = self.elapsed_seconds  # log.csv's elapsed_s goes on from the run resumed
        self.schedule.apply(self.training_progress())
        loss_sum, window_steps = torch.zeros((), dtype=torch.float64, device=self.device), 0
        unlabelled = 0  # batches skipped in this logging window
        batches = iter(loader)
        while self.training_progress() < 1 and (stop_after is None or self.iteration < stop_after):
            images, labels = next(batches)
            if self.nonfinite_input_iteration is None and images.is_floating_point() and not torch.isfinite(images).all():
                self.nonfinite_input_iteration = self.iteration + 1
            if self._holds_labels(labels):
                loss_sum += self.step(images, labels)
            else:  # counted as an iteration all the same: the stream position and the schedule stay exact on resume
                unlabelled += 1
            self.iteration += 1
            window_steps += 1
            self.training_seconds = self._agreed_seconds(trained_before + time.perf_counter() - run_start - paused)
            self.schedule.apply(self.training_progress())  # the rate of the next step
            bar.update()
            final = self.training_progress() >= 1 or self.iteration == stop_after
            row = {}
            if self.iteration % cfg.LOG_EVERY == 0 or final:
                now = time.perf_counter()
                rate = window_steps * patches_per_step / max(now - window_start, 1e-9)
                row = {"patches_per_s": f"{rate:.2f}", "elapsed_s": f"{elapsed_before + now - run_start:.1f}",
                       "unlabelled_batches": unlabelled}
                if window_steps > unlabelled:  # a window of skipped batches has no loss
                    mean_loss = self._mean_loss(loss_sum, window_steps - unlabelled)
                    bar.set_postfix(loss=f"{mean_loss:.3f}", patches_s=f"{rate:.1f}", refresh=False)  # drawn at the bar's pace
                    row["loss"] = f"{mean_loss:.9g}"
                if unlabelled and self.progress:
                    tqdm.write(f"iterations {self.iteration - window_steps + 1}-{self.iteration}: skipped {unlabelled} "
                               f"batch(es) without a labelled pixel (all IGNORE_LABEL)")
                loss_sum.zero_()
                unlabelled = 0
                window_steps = 0
                window_start = now
            pause_start = time.perf_counter()
            if cfg.VAL_EVERY and (self.iteration % cfg.VAL_EVERY == 0 or final):
                self._record_validation(row)
            if row and processes.is_main:
                row.update(iteration=self.iteration, lr=f"{self.optimizer.param_groups[1]['lr']:.3g}")
                self.log.add(row, plot_now=final or "val_mean_f1" in row)
            if self.iteration % cfg.SNAPSHOT_EVERY == 0 or final:
                if window_steps > unlabelled:
                    self._mean_loss(loss_sum, window_steps - unlabelled)  # never checkpoint weights that diverged
                if processes.is_main:
                    self.elapsed_seconds = elapsed_before + time.perf_counter() - run_start
                    self.snapshot()
            pause = time.perf_counter() - pause_start
            window_start += pause  # validating and saving are not training throughput
            paused += pause
        bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if processes.is_main:
            save_checkpoint(cfg.MODEL_FILE, cfg, self.model, self.iteration, trained_on=self.trained_on)
        if processes.distributed:
            dist.barrier()  # every process returns once the weights exist
        return Path(cfg.MODEL_FILE)


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train ``cfg.MODEL`` for ``cfg.ITERATIONS`` steps or ``cfg.TRAIN_MINUTES`` (under torchrun: this process's part),
    pausing at iteration ``stop_after`` if given (resume from its checkpoint to go on); return the weights' path."""
    check_model_file_reads_nothing(cfg)  # also where no claim_train_dir came first (notebook 4)
    with process_group(cfg.DEVICE) as (processes, device):
        return Trainer(cfg, processes, device, resume, progress).run(stop_after)
