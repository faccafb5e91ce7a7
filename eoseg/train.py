"""Training SegNet with the method's recipe, resumable to the iteration, on one or many processes.

The recipe: SGD with momentum and weight decay, the encoder at BASE_LR * ENCODER_LR_FACTOR,
the learning rate divided by 10 at LR_STEPS, cross-entropy that skips IGNORE_LABEL,
optionally weighted per class. Data come from eoseg.data, where sample order and
augmentation are pure functions of the seed and the position in the training stream.
Every VAL_EVERY iterations the inference predictor labels the validation tiles; the
weights with the best mean F1 so far are kept as TRAIN_DIR/checkpoints/best.pt.

A checkpoint holds everything a run depends on (weights, optimizer, scheduler, gradient
scaler, stream position, random states, the effective config and the data signature), so a
run killed at any moment and resumed from its last checkpoint repeats the same losses
(bit for bit on CPU with DETERMINISTIC). Under torchrun every process trains a
DistributedDataParallel replica on its own shard of the stream; rank 0 alone writes logs,
plots and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from eoseg.allocator import reuse_freed_memory
from eoseg.checkpoint import check_checkpoint, load_checkpoint, model_record, save_checkpoint
from eoseg.config import Config
from eoseg.data import StreamBatchSampler, median_frequency_weights, training_data
from eoseg.errors import EosegError
from eoseg.io import atomic_path
from eoseg.metrics import confusion_matrix, metrics_from_confusion
from eoseg.models import first_stream_bands, model_from_config
from eoseg.models.vgg import init_encoder_from_vgg16_bn, load_state_dict_file
from eoseg.normalization import Normalization
from eoseg.plots import plot_training_log
from eoseg.precision import check_precision, resolve_precision
from eoseg.predict import Predictor
from eoseg.tiles import read_eval_labels, read_image

VALIDATION_METRICS = ("overall_accuracy", "mean_f1", "mean_iou")
BEST_METRIC = "mean_f1"  # one of VALIDATION_METRICS; F1 weighs the small classes (cars) that OA hides
LOG_FIELDS = ["iteration", "loss", "lr", "patches_per_s", "elapsed_s", *(f"val_{m}" for m in VALIDATION_METRICS)]
AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_GLOB = "iter_*.pt"
BEST_CHECKPOINT = "best.pt"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EosegError(f"DEVICE={name} but no CUDA GPU is available; use DEVICE=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EosegError(f"DEVICE {name!r} is not a device; use 'auto', 'cpu' or 'cuda'") from None


# ---------------------------------------------------------------- processes
@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job; rank 0 of 1 when started without torchrun."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "Processes":
        """Read the variables torchrun sets for each process it starts."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world_size)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def process_group(device_name: str):
    """Join the torchrun job this process was started in, if any; yield (Processes, device).

    Each process of a job takes the GPU of its LOCAL_RANK (nccl) or runs on CPU (gloo).
    """
    processes = Processes.from_environment()
    device = resolve_device(device_name)
    if not processes.distributed:
        yield processes, device
        return
    if device.type == "cuda":
        if device_name not in ("auto", "cuda"):
            raise EosegError(f"DEVICE={device_name} under torchrun: use DEVICE=cuda, each process takes the GPU of its LOCAL_RANK")
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield processes, device
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- recipe
def make_optimizer(cfg: Config, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with the encoder at BASE_LR * ENCODER_LR_FACTOR; LR divided by 10 at each of LR_STEPS."""
    groups = [
        {"params": list(model.encoder_parameters()), "lr": cfg.BASE_LR * cfg.ENCODER_LR_FACTOR},
        {"params": list(model.decoder_parameters()), "lr": cfg.BASE_LR},
    ]
    optimizer = torch.optim.SGD(groups, lr=cfg.BASE_LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.LR_STEPS), gamma=0.1)
    return optimizer, scheduler


def make_loss(cfg: Config, device: torch.device, class_weights: list[float] | None = None) -> nn.Module:
    """Cross-entropy that skips IGNORE_LABEL, weighted per class when ``class_weights`` are given."""
    weights = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights else None
    return nn.CrossEntropyLoss(weight=weights, ignore_index=cfg.IGNORE_LABEL)


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


def check_training_config(cfg: Config) -> None:
    check_precision(cfg.PRECISION, "PRECISION")
    for name in ("ITERATIONS", "LOG_EVERY", "SNAPSHOT_EVERY"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise EosegError(f"{name} must be a positive integer, got {getattr(cfg, name)!r}")
    if cfg.VAL_EVERY < 0 or cfg.NUM_WORKERS < 0 or cfg.SEED < 0:
        raise EosegError("VAL_EVERY, NUM_WORKERS and SEED must not be negative")


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
    folder must not be taken for this run's.
    """
    folder = Path(cfg.TRAIN_DIR) / "checkpoints"
    found = sorted(folder.glob(CHECKPOINT_GLOB), key=lambda path: (path.stat().st_mtime_ns, path.name))
    if not found:
        raise EosegError(f"no checkpoint to resume from in {folder}; train without --resume first")
    return found[-1]


def load_resume_checkpoint(path: str | Path, cfg: Config) -> dict:
    """A checkpoint to resume from, refused unless it fits ``cfg`` and holds training state."""
    if not Path(path).is_file():
        raise EosegError(f"checkpoint to resume from not found: {path}")
    payload = load_checkpoint(path)
    check_checkpoint(payload, cfg, f"checkpoint {path}")
    recorded, expected = payload["model"], model_record(cfg)
    for key, name in (("name", "MODEL"), ("width", "MODEL_WIDTH")):
        if recorded[key] != expected[key]:
            raise EosegError(f"checkpoint {path} holds a model with {name}={recorded[key]!r}, but the config has "
                             f"{expected[key]!r}; resume with the config it was trained with")
    if recorded.get("stream_bands", first_stream_bands(cfg)) != first_stream_bands(cfg):
        raise EosegError(f"checkpoint {path} feeds {recorded['stream_bands']} bands to its first stream, but the config "
                         f"gives it {first_stream_bands(cfg)} (STREAM_BANDS); resume with the config it was trained with")
    if "training_state" not in payload:
        raise EosegError(f"{path}: holds weights only, no training state to resume from; use a checkpoint from {cfg.TRAIN_DIR}/checkpoints")
    if "sample_position" not in payload["training_state"]:
        raise EosegError(f"{path}: written by an earlier eoseg that did not record the position in the training data; "
                         "it cannot be resumed exactly; start a new run")
    if payload["iteration"] >= cfg.ITERATIONS:
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

    def add(self, row: dict, plot_now: bool = False) -> None:
        self.rows.append(row)
        self._rewrite()
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
        apply_determinism(cfg, device)
        if cfg.REUSE_FREED_MEMORY and device.type == "cpu":
            reuse_freed_memory()
        seed_everything(cfg.SEED)
        self.model = model_from_config(cfg)  # identical on every process: same seed
        if cfg.VGG16_BN_WEIGHTS and payload is None:
            init_encoder_from_vgg16_bn(self.model, load_state_dict_file(cfg.VGG16_BN_WEIGHTS), cfg.VGG16_BN_WEIGHTS)
        self.precision, precision_reason = resolve_precision(cfg.PRECISION, device)
        channels_last = self.precision != "float32" if cfg.CHANNELS_LAST is None else cfg.CHANNELS_LAST
        if self.progress:
            print(f"precision: {self.precision} ({precision_reason}); memory layout: "
                  f"{'channels_last' if channels_last else 'contiguous'}")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(device, memory_format=self.memory_format)
        self.optimizer, self.scheduler = make_optimizer(cfg, self.model)
        self.autocast_dtype = AUTOCAST_DTYPES[self.precision]
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "float16")
        if self.scaler.is_enabled():
            # the scaler skips the optimizer step when float16 gradients overflow; the schedule still
            # counts that iteration, as it should, and torch's warning about it would only alarm
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        self.iteration, sample_position, self.best = 0, 0, None
        if payload is not None:
            state = payload["training_state"]
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            restore_random_states(state["random_states"])
            self.iteration, sample_position, self.best = payload["iteration"], state["sample_position"], state["best"]
        self.start_iteration = self.iteration
        self.network = self.model
        if processes.distributed:
            self.network = DistributedDataParallel(
                self.model, device_ids=[device] if device.type == "cuda" else None, gradient_as_bucket_view=True)
        if cfg.COMPILE:
            self.network = torch.compile(self.network)

        self.data = training_data(cfg)
        self.sampler = StreamBatchSampler(len(self.data), cfg.BATCH_SIZE, cfg.SEED, sample_position,
                                          processes.rank, processes.world_size)
        self.class_weights = resolve_class_weights(cfg, self.data, self.progress)
        self.criterion = make_loss(cfg, device, self.class_weights)
        self.normalization = Normalization.from_config(cfg)
        self.validation_tiles = self._load_validation_tiles()
        # collectives run on the GPU with nccl, on the CPU with gloo
        self.collective_device = device if device.type == "cuda" and processes.distributed else torch.device("cpu")
        self.log = None
        if processes.is_main:
            (self.train_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            cfg.save(self.train_dir)
            self.log = TrainingLog(self.train_dir, self.iteration)
            if self.class_weights and cfg.MEDIAN_FREQUENCY_WEIGHTS:
                print("median-frequency class weights: " + ", ".join(
                    f"{name} {w:.3f}" for name, w in zip(cfg.CLASS_NAMES, self.class_weights)))

    # ------------------------------------------------------------ validation
    def _load_validation_tiles(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """This process's share of the validation tiles with their ground truth, read once."""
        if not self.cfg.VAL_EVERY:
            return []
        tile_ids = [str(t) for t in self.cfg.VAL_IDS] or self.cfg.tile_ids("test")
        if not tile_ids:
            raise EosegError("VAL_EVERY is set but there is no tile to validate on (VAL_IDS and TEST_IDS are empty); set VAL_EVERY=0")
        tiles = []
        for tile_id in tile_ids[self.processes.rank::self.processes.world_size]:
            image, info = read_image(self.cfg, tile_id)
            truth = read_eval_labels(self.cfg, tile_id, info)
            if truth is None:
                raise EosegError(f"validation tile {tile_id} has no ground truth; choose VAL_IDS with labels or set VAL_EVERY=0")
            tiles.append((image, truth[0]))
        return tiles

    def validate(self) -> dict:
        """Metrics of the sliding-window predictor on the validation tiles (all processes together)."""
        cfg = self.cfg
        confusion = np.zeros((cfg.num_classes, cfg.num_classes), dtype=np.int64)
        predictor = Predictor(self.model, self.normalization, cfg.WINDOW, cfg.STRIDE, cfg.INFER_BATCH_SIZE, self.device)
        for image, truth in self.validation_tiles:
            confusion += confusion_matrix(truth, predictor.predict(image), cfg.num_classes, cfg.IGNORE_LABEL)
        self.model.train()  # the predictor switched it to evaluation
        if self.processes.distributed:
            total = torch.from_numpy(confusion).to(self.collective_device)
            dist.all_reduce(total)
            confusion = total.cpu().numpy()
        return metrics_from_confusion(confusion, cfg.CLASS_NAMES)

    # ------------------------------------------------------------ steps
    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = self.normalization.apply(images.to(self.device, non_blocking=True))
        images = images.contiguous(memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True).long()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = supervised_loss(self.criterion, self.network(images), labels, self.cfg.AUX_LOSS_WEIGHT)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def _mean_loss(self, loss_sum: torch.Tensor, steps: int) -> float:
        """Mean loss of the last ``steps`` steps over all processes; stops the run if it is not finite."""
        total = loss_sum.detach().clone().to(self.collective_device)
        if self.processes.distributed:
            dist.all_reduce(total)
        mean = total.item() / (steps * self.processes.world_size)
        if not np.isfinite(mean):
            raise EosegError(f"the loss became {mean} by iteration {self.iteration}; lower BASE_LR or check the inputs' normalisation")
        return mean

    def snapshot(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sample_position": self.sampler.position_after(self.iteration - self.start_iteration),
            "world_size": self.processes.world_size,
            "random_states": random_states(),
            "best": self.best,
            "class_weights": self.class_weights,
        }
        path = self.train_dir / "checkpoints" / checkpoint_name(self.iteration)
        return save_checkpoint(path, self.cfg, self.model, self.iteration, state)

    def _record_validation(self, row: dict) -> None:
        metrics = self.validate()
        row.update({f"val_{m}": f"{metrics[m]:.5f}" for m in VALIDATION_METRICS})
        value = metrics[BEST_METRIC]
        if self.best is None or value > self.best["value"]:
            self.best = {"iteration": self.iteration, "metric": BEST_METRIC, "value": value}
            if self.processes.is_main:
                save_checkpoint(self.train_dir / "checkpoints" / BEST_CHECKPOINT, self.cfg, self.model, self.iteration)
        if self.progress:
            tqdm.write(f"iteration {self.iteration}: validation OA {100 * metrics['overall_accuracy']:.1f}%, "
                       f"mean F1 {100 * metrics['mean_f1']:.1f}%, mean IoU {100 * metrics['mean_iou']:.1f}%")

    def run(self) -> Path:
        """Train up to ITERATIONS; return the path of the final weights (MODEL_FILE)."""
        cfg, processes = self.cfg, self.processes
        loader = DataLoader(
            self.data, batch_sampler=self.sampler, num_workers=cfg.NUM_WORKERS, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.SEED),  # keeps the process-wide torch RNG untouched
        )
        patches_per_step = cfg.BATCH_SIZE * processes.world_size
        self.model.train()
        bar = tqdm(total=cfg.ITERATIONS, initial=self.iteration, desc="train", unit="it", disable=not self.progress)
        run_start = window_start = time.perf_counter()
        loss_sum, window_steps = torch.zeros((), dtype=torch.float64, device=self.device), 0
        batches = iter(loader)
        while self.iteration < cfg.ITERATIONS:
            images, labels = next(batches)
            loss_sum += self.step(images, labels)
            self.iteration += 1
            window_steps += 1
            bar.update()
            final = self.iteration == cfg.ITERATIONS
            row = {}
            if self.iteration % cfg.LOG_EVERY == 0 or final:
                mean_loss = self._mean_loss(loss_sum, window_steps)
                now = time.perf_counter()
                rate = window_steps * patches_per_step / max(now - window_start, 1e-9)
                bar.set_postfix(loss=f"{mean_loss:.3f}", patches_s=f"{rate:.1f}")
                row = {"loss": f"{mean_loss:.9g}", "patches_per_s": f"{rate:.2f}", "elapsed_s": f"{now - run_start:.1f}"}
                loss_sum.zero_()
                window_steps = 0
                window_start = now
            pause_start = time.perf_counter()
            if cfg.VAL_EVERY and (self.iteration % cfg.VAL_EVERY == 0 or final):
                self._record_validation(row)
            if row and processes.is_main:
                row.update(iteration=self.iteration, lr=f"{self.optimizer.param_groups[1]['lr']:.3g}")
                self.log.add(row, plot_now=final or "val_mean_f1" in row)
            if self.iteration % cfg.SNAPSHOT_EVERY == 0 or final:
                if window_steps:
                    self._mean_loss(loss_sum, window_steps)  # never checkpoint weights that diverged
                if processes.is_main:
                    self.snapshot()
            window_start += time.perf_counter() - pause_start  # validating and saving are not training throughput
        bar.close()
        if processes.is_main:
            save_checkpoint(cfg.MODEL_FILE, cfg, self.model, self.iteration)
        if processes.distributed:
            dist.barrier()  # every process returns once the weights exist
        return Path(cfg.MODEL_FILE)


def train(cfg: Config, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Train ``cfg.MODEL`` for ``cfg.ITERATIONS`` steps (under torchrun: this process's part); return the final weights' path."""
    with process_group(cfg.DEVICE) as (processes, device):
        return Trainer(cfg, processes, device, resume, progress).run()
