"""Training SegNet with the method's recipe: SGD, encoder at a reduced rate, step decay.

Data come from the LMDB made by create_lmdb.py, or (TRAIN_SOURCE = "tiles") from random
crops of the training tiles held in memory in their own dtype, as the PyTorch version
of the method does. Both get random flips / 90-degree rotations when RANDOM_FLIPS.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from eoseg.augment import random_flip_rotate
from eoseg.checkpoint import check_checkpoint, load_checkpoint, save_checkpoint
from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.io import atomic_path
from eoseg.lmdb_store import LmdbPatches
from eoseg.metadata import data_signature
from eoseg.models import model_from_config
from eoseg.models.vgg import init_encoder_from_vgg16_bn, load_state_dict_file
from eoseg.normalization import Normalization
from eoseg.plots import plot_training_log
from eoseg.tiles import read_image, read_labels

LOG_FIELDS = ["iteration", "loss", "lr", "patches_per_s", "elapsed_s"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EosegError(f"DEVICE={name} but no CUDA GPU is available; use DEVICE=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EosegError(f"DEVICE {name!r} is not a device; use 'auto', 'cpu' or 'cuda'") from None


class AugmentedPatches(Dataset):
    """LMDB patches with a random flip/rotation drawn per (seed, index, pass)."""

    def __init__(self, patches: LmdbPatches, flips: bool, seed: int):
        self.patches = patches
        self.flips = flips
        self.seed = seed

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int):
        image, label = self.patches[index]
        if self.flips:
            image, label = random_flip_rotate(image, label, np.random.default_rng((self.seed, index, random.getrandbits(32))))
        return torch.from_numpy(image), torch.from_numpy(label)


class TileCrops(Dataset):
    """Random square crops from tiles kept in memory (uint8 stays uint8)."""

    def __init__(self, tiles: list[tuple[np.ndarray, np.ndarray]], size: int, length: int, flips: bool, seed: int):
        self.tiles = tiles
        self.size = size
        self.length = length
        self.flips = flips
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, index, random.getrandbits(32)))
        image, labels = self.tiles[int(rng.integers(len(self.tiles)))]
        row = int(rng.integers(0, image.shape[1] - self.size + 1))
        col = int(rng.integers(0, image.shape[2] - self.size + 1))
        crop = image[:, row:row + self.size, col:col + self.size]
        crop_labels = labels[row:row + self.size, col:col + self.size]
        if self.flips:
            crop, crop_labels = random_flip_rotate(crop, crop_labels, rng)
        return torch.from_numpy(np.ascontiguousarray(crop)), torch.from_numpy(np.ascontiguousarray(crop_labels))


def training_data(cfg: Config) -> Dataset:
    if cfg.TRAIN_SOURCE == "lmdb":
        patches = LmdbPatches(Path(cfg.LMDB_DIR) / "train.lmdb", expected_signature=data_signature(cfg))
        return AugmentedPatches(patches, cfg.RANDOM_FLIPS, cfg.SEED)
    tiles = []
    for tile_id in cfg.tile_ids("train"):
        image, info = read_image(cfg, tile_id)
        if min(info.height, info.width) < cfg.PATCH_SIZE:
            raise EosegError(f"{info.path}: tile is {info.width} x {info.height} px, smaller than PATCH_SIZE {cfg.PATCH_SIZE}")
        tiles.append((image, read_labels(cfg, tile_id, info)))
    if not tiles:
        raise EosegError("TRAIN_IDS is empty: nothing to train on")
    return TileCrops(tiles, cfg.PATCH_SIZE, cfg.ITERATIONS * cfg.BATCH_SIZE, cfg.RANDOM_FLIPS, cfg.SEED)


def make_optimizer(cfg: Config, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with the encoder at BASE_LR * ENCODER_LR_FACTOR; LR divided by 10 at each of LR_STEPS."""
    groups = [
        {"params": list(model.encoder_parameters()), "lr": cfg.BASE_LR * cfg.ENCODER_LR_FACTOR},
        {"params": list(model.decoder_parameters()), "lr": cfg.BASE_LR},
    ]
    optimizer = torch.optim.SGD(groups, lr=cfg.BASE_LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.LR_STEPS), gamma=0.1)
    return optimizer, scheduler


def make_loss(cfg: Config, device: torch.device) -> nn.Module:
    weights = torch.tensor(cfg.CLASS_WEIGHTS, dtype=torch.float32, device=device) if cfg.CLASS_WEIGHTS else None
    return nn.CrossEntropyLoss(weight=weights, ignore_index=cfg.IGNORE_LABEL)


def batches_forever(loader: DataLoader):
    while True:
        yield from loader


class TrainingLog:
    """CSV of loss and learning rate, and its plot, both refreshed as training goes."""

    PLOT_INTERVAL_S = 15.0  # redrawing costs ~0.1 s; often enough to watch, rare enough not to slow training

    def __init__(self, folder: Path, resume_from: int):
        self.csv_path = folder / "log.csv"
        self.plot_path = folder / "loss.png"
        self.rows: list[dict] = []
        if resume_from and self.csv_path.is_file():
            with open(self.csv_path, newline="") as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["iteration"]) <= resume_from]
        self._last_plot = 0.0
        self._rewrite()

    def _rewrite(self) -> None:
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)

    def add(self, row: dict, final: bool = False) -> None:
        self.rows.append(row)
        self._rewrite()
        if final or time.monotonic() - self._last_plot > self.PLOT_INTERVAL_S:
            plot_training_log(self.rows, self.plot_path)
            self._last_plot = time.monotonic()


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Train ``cfg.MODEL`` for ``cfg.ITERATIONS`` steps; return the path of the final weights."""
    device = resolve_device(cfg.DEVICE)
    torch.manual_seed(cfg.SEED)
    random.seed(cfg.SEED)
    model = model_from_config(cfg)
    if cfg.VGG16_BN_WEIGHTS and not resume:
        init_encoder_from_vgg16_bn(model, load_state_dict_file(cfg.VGG16_BN_WEIGHTS), cfg.VGG16_BN_WEIGHTS)
    model.to(device)
    optimizer, scheduler = make_optimizer(cfg, model)
    start = 0
    if resume:
        payload = load_checkpoint(resume)
        check_checkpoint(payload, cfg, f"checkpoint {resume}")
        if "training_state" not in payload:
            raise EosegError(f"{resume}: holds weights only, no training state to resume from; use a checkpoint from {cfg.TRAIN_DIR}/checkpoints")
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["training_state"]["optimizer"])
        scheduler.load_state_dict(payload["training_state"]["scheduler"])
        torch.set_rng_state(payload["training_state"]["torch_rng"])
        random.seed(payload["training_state"]["python_seed"])
        start = payload["iteration"]
        if start >= cfg.ITERATIONS:
            raise EosegError(f"{resume} is at iteration {start}, not before ITERATIONS={cfg.ITERATIONS}; raise ITERATIONS to train further")

    data = training_data(cfg)
    if len(data) == 0:
        raise EosegError("the training data hold no patches")
    loader = DataLoader(
        data, batch_size=cfg.BATCH_SIZE, shuffle=True, drop_last=len(data) >= cfg.BATCH_SIZE,
        num_workers=cfg.NUM_WORKERS, pin_memory=device.type == "cuda", persistent_workers=cfg.NUM_WORKERS > 0,
        generator=torch.Generator().manual_seed(cfg.SEED + start),
    )
    criterion = make_loss(cfg, device)
    normalization = Normalization.from_config(cfg)
    train_dir = Path(cfg.TRAIN_DIR)
    (train_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    cfg.save(train_dir)
    log = TrainingLog(train_dir, start)

    def snapshot(iteration: int) -> Path:
        state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "python_seed": random.getrandbits(32),
        }
        return save_checkpoint(train_dir / "checkpoints" / f"iter_{iteration:07d}.pt", cfg, model, iteration, state)

    model.train()
    batches = batches_forever(loader)
    bar = tqdm(total=cfg.ITERATIONS, initial=start, desc="train", unit="it", disable=not progress)
    window_start, window_losses = time.perf_counter(), []
    for iteration in range(start + 1, cfg.ITERATIONS + 1):
        images, labels = next(batches)
        images = normalization.apply(images.to(device, non_blocking=True))
        labels = labels.to(device, non_blocking=True).long()
        loss = criterion(model(images), labels)
        if not torch.isfinite(loss):
            raise EosegError(f"the loss became {loss.item()} at iteration {iteration}; lower BASE_LR or check the inputs' normalisation")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        window_losses.append(loss.item())
        bar.update()
        if iteration % cfg.LOG_EVERY == 0 or iteration == cfg.ITERATIONS:
            elapsed = time.perf_counter() - window_start
            mean_loss = float(np.mean(window_losses))
            rate = len(window_losses) * cfg.BATCH_SIZE / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{mean_loss:.3f}", patches_s=f"{rate:.1f}")
            log.add({"iteration": iteration, "loss": f"{mean_loss:.5f}", "lr": f"{optimizer.param_groups[1]['lr']:.3g}",
                     "patches_per_s": f"{rate:.2f}", "elapsed_s": f"{elapsed:.2f}"},
                    final=iteration == cfg.ITERATIONS)
            window_start, window_losses = time.perf_counter(), []
        if iteration % cfg.SNAPSHOT_EVERY == 0 or iteration == cfg.ITERATIONS:
            snapshot(iteration)
    bar.close()
    return save_checkpoint(cfg.MODEL_FILE, cfg, model, cfg.ITERATIONS)
