"""The training recipe: optimizer, learning-rate schedule and loss, as the config chooses them.

The presets keep the method's recipe: SGD with momentum, the learning rate divided by 10 at
LR_STEPS, cross-entropy. For users' own data: AdamW, a linear warm-up then a polynomial or
cosine decay, and losses for imbalanced classes (cross-entropy + Dice, focal, OHEM).

The schedule is a function of the training's progress, 0 at the start and 1 at the end:
iterations done / ITERATIONS, or, under TRAIN_MINUTES, minutes trained / TRAIN_MINUTES; so
one schedule serves a step count and a time budget alike. Every loss leaves out the pixels
labelled IGNORE_LABEL, and gives 0 (not NaN) when a batch has none labelled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eoseg.config import Config, override_arguments

STEP_DECAY = 0.1  # the method's: the learning rate divided by 10 at each of LR_STEPS

# the config names that make a training recipe (the rest of a config is data, folders and outputs)
RECIPE_NAMES = ("MODEL", "MODEL_WIDTH", "ENCODER", "OPTIMIZER", "BASE_LR", "ENCODER_LR_FACTOR", "MOMENTUM",
                "WEIGHT_DECAY", "LR_SCHEDULE", "LR_STEPS", "ITERATIONS", "WARMUP_FRACTION", "POLY_POWER",
                "FINAL_LR_FACTOR", "LOSS", "DICE_WEIGHT", "FOCAL_GAMMA", "OHEM_FRACTION", "CLASS_WEIGHTS",
                "MEDIAN_FREQUENCY_WEIGHTS", "AUX_LOSS_WEIGHT", "BATCH_SIZE", "PATCH_SIZE", "RANDOM_FLIPS", "COLOR_JITTER",
                "RANDOM_SCALE", "WINDOW", "STRIDE", "BLEND", "TTA")


def recipe_overrides(cfg: Config, leave_out: tuple[str, ...] = ()) -> list[str]:
    """``cfg``'s recipe as KEY=VALUE overrides (to train another config's data with it), but ``leave_out``."""
    return override_arguments({name: getattr(cfg, name) for name in RECIPE_NAMES if name not in leave_out})


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")  # where torch has fused AdamW and SGD steps


class ChannelsLastAdamW(torch.optim.AdamW):
    """AdamW that steps channels_last weights where they lie.

    torch's fused CPU step copies each tensor that is not contiguous into a contiguous one
    and back: with the channels_last weights of bfloat16 training that doubled the U-Net's
    optimizer step (bench/RESULTS.md). The update is elementwise, so each such weight, its
    gradient and its moments are handed to the step as the same permutation, a view that is
    contiguous in memory: the same elements, updated in place. Torch's own update otherwise.
    ``_init_group`` is where torch's Adam gathers a group's tensors for the step (torch is
    pinned; tests/test_recipe.py compares the result with torch's AdamW to the bit).
    """

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
        has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
        lists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if group["amsgrad"] else [])
        for i, parameter in enumerate(params):
            if parameter.dim() == 4 and not parameter.is_contiguous() and parameter.is_contiguous(
                    memory_format=torch.channels_last):
                for tensors in lists:
                    tensors[i] = tensors[i].permute(0, 2, 3, 1)  # (N, H, W, C): contiguous for channels_last
        return has_complex


def make_optimizer(cfg: Config, model: nn.Module, fused: bool | None = None) -> torch.optim.Optimizer:
    """OPTIMIZER over two parameter groups: the encoder at BASE_LR * ENCODER_LR_FACTOR, the rest at BASE_LR.

    ``fused`` (default: where the parameters' device has it) steps all tensors in one kernel
    instead of a loop of small operations per tensor: the same update, 2.5 to 3.6 times
    faster on CPU (``bench/training.py``).
    """
    groups = [
        {"params": list(model.encoder_parameters()), "lr": cfg.BASE_LR * cfg.ENCODER_LR_FACTOR},
        {"params": list(model.decoder_parameters()), "lr": cfg.BASE_LR},
    ]
    if fused is None:
        fused = {parameter.device.type for parameter in model.parameters()} <= set(FUSED_OPTIMIZER_DEVICES)
    if cfg.OPTIMIZER == "adamw":
        return ChannelsLastAdamW(groups, lr=cfg.BASE_LR, weight_decay=cfg.WEIGHT_DECAY, fused=fused)
    return torch.optim.SGD(groups, lr=cfg.BASE_LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY, fused=fused)


class LearningRateSchedule:
    """Sets each parameter group's learning rate from the training's progress (0..1).

    ``step``: the group's base rate divided by 10 at each of LR_STEPS (at progress
    step / ITERATIONS; with a step count, exactly at those iterations, as torch's
    MultiStepLR does). ``poly`` / ``cosine``: from the base rate down to base *
    FINAL_LR_FACTOR at progress 1. WARMUP_FRACTION > 0: a linear ramp from 0 over that
    fraction first, the decay over the rest. Holds no state of its own: a resumed run
    recomputes the rate from its progress.
    """

    def __init__(self, cfg: Config, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.base_rates = [group["lr"] for group in optimizer.param_groups]
        self.kind = cfg.LR_SCHEDULE
        self.milestones = sorted(step / cfg.ITERATIONS for step in cfg.LR_STEPS)
        self.warmup = cfg.WARMUP_FRACTION
        self.power = cfg.POLY_POWER
        self.final = cfg.FINAL_LR_FACTOR

    def rate(self, base: float, progress: float) -> float:
        """The learning rate of a group with base rate ``base`` at ``progress``."""
        progress = min(max(progress, 0.0), 1.0)
        if self.kind == "step":
            rate = base
            for milestone in self.milestones:
                if milestone <= progress:
                    rate *= STEP_DECAY  # one multiplication per step, as MultiStepLR: the same floats
        else:
            decayed = min(max((progress - self.warmup) / (1 - self.warmup), 0.0), 1.0)
            if self.kind == "poly":
                shape = (1 - decayed) ** self.power
            else:
                shape = 0.5 * (1 + math.cos(math.pi * decayed))
            rate = base * (self.final + (1 - self.final) * shape)
        if self.warmup and progress < self.warmup:
            rate *= progress / self.warmup
        return rate

    def apply(self, progress: float) -> None:
        """Set the rates for the steps taken at ``progress``."""
        for group, base in zip(self.optimizer.param_groups, self.base_rates):
            group["lr"] = self.rate(base, progress)


# ---------------------------------------------------------------- losses
def make_loss(cfg: Config, device: torch.device, class_weights: list[float] | None = None) -> nn.Module:
    """LOSS, weighted per class by ``class_weights`` where the loss takes weights; all skip IGNORE_LABEL."""
    weights = torch.tensor(class_weights, dtype=torch.float32, device=device) if class_weights else None
    if cfg.LOSS == "ce_dice":
        return CrossEntropyDiceLoss(weights, cfg.IGNORE_LABEL, cfg.DICE_WEIGHT)
    if cfg.LOSS == "focal":
        return FocalLoss(weights, cfg.IGNORE_LABEL, cfg.FOCAL_GAMMA)
    if cfg.LOSS == "ohem":
        return OhemCrossEntropyLoss(weights, cfg.IGNORE_LABEL, cfg.OHEM_FRACTION)
    return nn.CrossEntropyLoss(weight=weights, ignore_index=cfg.IGNORE_LABEL)


class _PixelLoss(nn.Module):
    """A loss over (N, classes, H, W) scores and (N, H, W) labels, IGNORE_LABEL pixels left out."""

    def __init__(self, weight: torch.Tensor | None, ignore_index: int):
        super().__init__()
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    @staticmethod
    def _nothing(scores: torch.Tensor) -> torch.Tensor:
        return scores.float().sum() * 0.0  # a zero that keeps the graph: backward runs on every process


def _pixels(scores: torch.Tensor, labels: torch.Tensor, ignore_index: int, weight: torch.Tensor | None = None):
    """Float32 log-probabilities, the labelled pixels, their classes (ignored ones as class 0) and weights."""
    log_probabilities = F.log_softmax(scores.float(), dim=1)
    labelled = labels != ignore_index
    classes = torch.where(labelled, labels, torch.zeros_like(labels))
    weights = labelled.float() if weight is None else weight[classes] * labelled
    return log_probabilities, labelled, classes, weights


def _pixel_cross_entropy(log_probabilities: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -log p(class) of each pixel."""
    return -log_probabilities.gather(1, classes[:, None])[:, 0]


class FocalLoss(_PixelLoss):
    """Focal loss (Lin et al., 2017): -(1 - p)^gamma log p of each pixel's class, the class weight as alpha,
    averaged as weighted cross-entropy is (sum of weight x loss / sum of weights); gamma 0 is cross-entropy."""

    def __init__(self, weight: torch.Tensor | None, ignore_index: int, gamma: float):
        super().__init__(weight, ignore_index)
        self.gamma = gamma

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probabilities, labelled, classes, weights = _pixels(scores, labels, self.ignore_index, self.weight)
        if not labelled.any():
            return self._nothing(scores)
        log_p = -_pixel_cross_entropy(log_probabilities, classes)
        focal = -((1 - log_p.exp()).clamp_min(0) ** self.gamma) * log_p
        return (weights * focal).sum() / weights.sum()


class OhemCrossEntropyLoss(_PixelLoss):
    """Online hard example mining: cross-entropy of the ``fraction`` of labelled pixels with the highest
    (unweighted) cross-entropy in the batch, weighted per class among those kept."""

    def __init__(self, weight: torch.Tensor | None, ignore_index: int, fraction: float):
        super().__init__(weight, ignore_index)
        self.fraction = fraction

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probabilities, labelled, classes, weights = _pixels(scores, labels, self.ignore_index, self.weight)
        count = int(labelled.sum())
        if not count:
            return self._nothing(scores)
        losses = _pixel_cross_entropy(log_probabilities, classes)[labelled]
        kept = torch.topk(losses, max(1, math.ceil(self.fraction * count)), sorted=False).indices
        kept_weights = weights[labelled][kept]
        return (kept_weights * losses[kept]).sum() / kept_weights.sum()


def _soft_dice(log_probabilities: torch.Tensor, pixel_log_probability: torch.Tensor, labelled: torch.Tensor,
               classes: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the softmax probabilities and the one-hot labels, per class over the labelled
    pixels, averaged over the classes present (0 when none is).

    From the log-probabilities the cross-entropy already has, without one-hot tensors: a class's
    overlap is the sum of each pixel's probability of its own class over the pixels of that class.
    Written with one-hot tensors, cross-entropy + Dice took a tenth of the demo U-Net's bfloat16
    training step; this way it takes 0.6x of that time (bench/RESULTS.md).
    """
    num_classes = log_probabilities.shape[1]
    labelled = labelled.float()
    flat_classes = classes.flatten()
    truth = torch.zeros(num_classes, device=labelled.device).index_add_(0, flat_classes, labelled.flatten())
    overlap = torch.zeros(num_classes, device=labelled.device).index_add(
        0, flat_classes, (pixel_log_probability.exp() * labelled).flatten())
    predicted = (log_probabilities.exp() * labelled[:, None]).sum((0, 2, 3))
    present = truth > 0
    if not present.any():
        return log_probabilities.sum() * 0.0
    dice = 2 * overlap[present] / (predicted[present] + truth[present])
    return (1 - dice).mean()


def soft_dice_loss(scores: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - soft Dice of the softmax probabilities of ``scores`` and the one-hot labels (see :func:`_soft_dice`)."""
    log_probabilities, labelled, classes, _ = _pixels(scores, labels, ignore_index)
    return _soft_dice(log_probabilities, -_pixel_cross_entropy(log_probabilities, classes), labelled, classes)


class CrossEntropyDiceLoss(_PixelLoss):
    """Cross-entropy (weighted per class) + ``dice_weight`` x soft Dice loss."""

    def __init__(self, weight: torch.Tensor | None, ignore_index: int, dice_weight: float):
        super().__init__(weight, ignore_index)
        self.dice_weight = dice_weight

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probabilities, labelled, classes, weights = _pixels(scores, labels, self.ignore_index, self.weight)
        if not labelled.any():
            return self._nothing(scores)
        cross_entropy = _pixel_cross_entropy(log_probabilities, classes)
        weighted = (weights * cross_entropy).sum() / weights.sum()  # as F.cross_entropy(weight=, ignore_index=)
        return weighted + self.dice_weight * _soft_dice(log_probabilities, -cross_entropy, labelled, classes)
