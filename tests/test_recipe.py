"""eoseg.recipe: optimizers, learning-rate schedules and losses, each against its definition."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.models import model_from_config
from eoseg.recipe import (ChannelsLastAdamW, CrossEntropyDiceLoss, FocalLoss, LearningRateSchedule, OhemCrossEntropyLoss,
                          make_loss, make_optimizer, soft_dice_loss)

from .conftest import TINY_SETTINGS, as_arguments

IGNORE = 255
CLASSES = 4


def batch(seed: int = 0):
    """Random scores and labels of a (2, 4 classes, 6, 5) batch, a fifth of the pixels ignored."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, CLASSES, 6, 5, generator=generator) * 3
    labels = torch.randint(0, CLASSES, (2, 6, 5), generator=generator)
    labels[torch.rand(2, 6, 5, generator=generator) < 0.2] = IGNORE
    return scores, labels


WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0])


# ---------------------------------------------------------------- losses
def test_dice_of_a_perfect_prediction_is_zero():
    scores, labels = batch()
    perfect = 100 * F.one_hot(torch.where(labels == IGNORE, 0, labels), CLASSES).permute(0, 3, 1, 2).float()
    assert soft_dice_loss(perfect, labels, IGNORE).item() == pytest.approx(0, abs=1e-6)
    assert CrossEntropyDiceLoss(None, IGNORE, 1.0)(perfect, labels).item() == pytest.approx(0, abs=1e-6)
    assert soft_dice_loss(-perfect, labels, IGNORE).item() == pytest.approx(1, abs=1e-6)  # all wrong


def dice_by_one_hot(scores, labels):
    """Soft Dice loss written out: softmax and one-hot truth over the labelled pixels, per class."""
    labelled = (labels != IGNORE)[:, None].float()
    probabilities = torch.softmax(scores, dim=1) * labelled
    truth = F.one_hot(torch.where(labels == IGNORE, 0, labels), CLASSES).permute(0, 3, 1, 2).float() * labelled
    overlap, total = (probabilities * truth).sum((0, 2, 3)), (probabilities + truth).sum((0, 2, 3))
    present = truth.sum((0, 2, 3)) > 0
    return (1 - 2 * overlap[present] / total[present]).mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_ce_dice_is_weighted_cross_entropy_plus_weighted_dice_in_value_and_gradient(seed):
    scores, labels = batch(seed)
    labels[0, 0] = 3 - labels[0, 0].clamp(max=3)  # any class, no ignored pixel, in the first row
    labels[1] = torch.where(labels[1] == 2, 1, labels[1])  # a class absent from a batch item
    by_hand = scores.clone().requires_grad_(True)
    expected = F.cross_entropy(by_hand, labels, weight=WEIGHTS, ignore_index=IGNORE) + 0.7 * dice_by_one_hot(by_hand, labels)
    expected.backward()
    ours = scores.clone().requires_grad_(True)
    value = CrossEntropyDiceLoss(WEIGHTS, IGNORE, 0.7)(ours, labels)
    value.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(ours.grad, by_hand.grad, rtol=1e-5, atol=1e-7)
    assert soft_dice_loss(scores, labels, IGNORE).item() == pytest.approx(dice_by_one_hot(scores, labels).item(), rel=1e-6)


def test_dice_leaves_out_the_classes_absent_from_the_labels():
    scores, labels = batch()
    labels[labels == 3] = 0
    assert soft_dice_loss(scores, labels, IGNORE).item() == pytest.approx(dice_by_one_hot(scores, labels).item(), rel=1e-6)


@pytest.mark.parametrize("weight", [None, WEIGHTS])
def test_focal_with_gamma_zero_is_cross_entropy(weight):
    scores, labels = batch()
    cross_entropy = F.cross_entropy(scores, labels, weight=weight, ignore_index=IGNORE)
    assert FocalLoss(weight, IGNORE, 0.0)(scores, labels).item() == pytest.approx(cross_entropy.item(), rel=1e-6)


def test_focal_weighs_down_well_classified_pixels():
    scores, labels = batch()
    per_pixel = F.cross_entropy(scores, labels, ignore_index=IGNORE, reduction="none")
    log_p = -per_pixel[labels != IGNORE]
    by_hand = (-(1 - log_p.exp()) ** 2 * log_p).mean()
    assert FocalLoss(None, IGNORE, 2.0)(scores, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert by_hand < per_pixel[labels != IGNORE].mean()


def test_ohem_keeps_the_hardest_fraction():
    scores, labels = batch()
    per_pixel = F.cross_entropy(scores, labels, ignore_index=IGNORE, reduction="none")[labels != IGNORE]
    kept = math.ceil(0.25 * per_pixel.numel())
    hardest = per_pixel.sort(descending=True).values[:kept]
    assert OhemCrossEntropyLoss(None, IGNORE, 0.25)(scores, labels).item() == pytest.approx(hardest.mean().item(), rel=1e-6)
    # all pixels kept: weighted cross-entropy
    everything = F.cross_entropy(scores, labels, weight=WEIGHTS, ignore_index=IGNORE)
    assert OhemCrossEntropyLoss(WEIGHTS, IGNORE, 1.0)(scores, labels).item() == pytest.approx(everything.item(), rel=1e-6)


LOSSES = {
    "ce_dice": lambda: CrossEntropyDiceLoss(WEIGHTS, IGNORE, 1.0),
    "focal": lambda: FocalLoss(WEIGHTS, IGNORE, 2.0),
    "ohem": lambda: OhemCrossEntropyLoss(WEIGHTS, IGNORE, 0.3),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_contribute_nothing(name):
    loss = LOSSES[name]()
    scores, labels = batch()
    ignored = labels == IGNORE
    scores.requires_grad_(True)
    value = loss(scores, labels)
    value.backward()
    assert (scores.grad.permute(0, 2, 3, 1)[ignored] == 0).all() and scores.grad.abs().sum() > 0
    changed = scores.detach().clone()
    changed.permute(0, 2, 3, 1)[ignored] = 50.0  # anything at the ignored pixels
    assert loss(changed, labels).item() == pytest.approx(value.item(), rel=1e-6)
    # a batch with nothing labelled: zero, not NaN, and backward still runs
    nothing = scores.detach().clone().requires_grad_(True)
    zero = loss(nothing, torch.full_like(labels, IGNORE))
    zero.backward()
    assert zero.item() == 0 and (nothing.grad == 0).all()


def tiny_config(**overrides):
    """The tests' tiny SegNet with the method's recipe (SGD, step decay, cross-entropy), then ``overrides``."""
    return load_config(overrides=as_arguments({**TINY_SETTINGS, **overrides}))


def test_make_loss_follows_LOSS():
    assert type(make_loss(tiny_config(LOSS="ce"), torch.device("cpu"))) is nn.CrossEntropyLoss  # the method's
    for name, kind in (("ce_dice", CrossEntropyDiceLoss), ("focal", FocalLoss), ("ohem", OhemCrossEntropyLoss)):
        loss = make_loss(tiny_config(LOSS=name), torch.device("cpu"), [1.0, 2.0, 1.0, 1.0, 4.0, 1.0])
        assert type(loss) is kind and loss.ignore_index == 255 and loss.weight.tolist() == [1.0, 2.0, 1.0, 1.0, 4.0, 1.0]


# ---------------------------------------------------------------- optimizers
def test_make_optimizer_follows_OPTIMIZER():
    model = model_from_config(tiny_config())
    sgd = make_optimizer(tiny_config(BASE_LR=0.02), model)
    assert type(sgd) is torch.optim.SGD and [g["lr"] for g in sgd.param_groups] == [0.01, 0.02]
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 5e-4
    adamw = make_optimizer(tiny_config(OPTIMIZER="adamw", BASE_LR=0.001, WEIGHT_DECAY=0.01), model)
    assert type(adamw) is ChannelsLastAdamW and [g["lr"] for g in adamw.param_groups] == [0.0005, 0.001]
    assert adamw.param_groups[1]["weight_decay"] == 0.01


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_make_optimizer_steps_fused_as_the_plain_loop_steps(optimizer):
    cfg = tiny_config(OPTIMIZER=optimizer, BASE_LR=0.01, WEIGHT_DECAY=0.01)
    torch.manual_seed(0)
    model = model_from_config(cfg)
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    fused = make_optimizer(cfg, model)
    assert all(group["fused"] for group in fused.param_groups)  # on CPU
    plain = make_optimizer(cfg, reference, fused=False)
    assert not any(group["fused"] for group in plain.param_groups)
    for step in range(3):
        for a, b in zip(model.parameters(), reference.parameters()):
            a.grad = torch.full_like(a, 0.1 * (step + 1)) + torch.sin(torch.arange(a.numel()).reshape(a.shape).float())
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters()))  # it did step


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adamw_steps_channels_last_weights_in_place_as_torch_steps_contiguous_ones(amsgrad):
    cfg = tiny_config(OPTIMIZER="adamw", BASE_LR=0.01, WEIGHT_DECAY=0.01)
    torch.manual_seed(0)
    model = model_from_config(cfg).to(memory_format=torch.channels_last)
    reference = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert any(not p.is_contiguous() for p in model.parameters())  # the case at stake
    ours = make_optimizer(cfg, model)
    counterpart = {id(a): b for a, b in zip(model.parameters(), reference.parameters())}
    for group in ours.param_groups:
        group["amsgrad"] = amsgrad
    theirs = torch.optim.AdamW([{**group, "params": [counterpart[id(p)] for p in group["params"]]}
                                for group in ours.param_groups])
    for step in range(3):
        for a, b in zip(model.parameters(), reference.parameters()):
            b.grad = torch.sin(torch.arange(b.numel()).reshape(b.shape).float() * (step + 1))
            a.grad = b.grad.clone(memory_format=torch.channels_last if a.dim() == 4 else torch.contiguous_format)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            ours.step()
        theirs.step()
        assert not [e.name for e in profile.events() if e.name in ("aten::contiguous", "aten::clone")]  # no copies
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b) and torch.equal(ours.state[a]["exp_avg"], theirs.state[b]["exp_avg"])
        assert a.is_contiguous(memory_format=torch.channels_last if a.dim() == 4 else torch.contiguous_format)


# ---------------------------------------------------------------- schedules
def schedule(**overrides) -> LearningRateSchedule:
    cfg = tiny_config(**overrides)
    return LearningRateSchedule(cfg, make_optimizer(cfg, model_from_config(cfg)))


def test_step_schedule_is_the_methods_multistep_decay_to_the_bit():
    ours = schedule(ITERATIONS=60, LR_STEPS=[20, 35, 50], BASE_LR=0.05)
    reference_optimizer = make_optimizer(tiny_config(BASE_LR=0.05), model_from_config(tiny_config()))
    reference = torch.optim.lr_scheduler.MultiStepLR(reference_optimizer, milestones=[20, 35, 50], gamma=0.1)
    for iteration in range(60):
        ours.apply(iteration / 60)
        assert [g["lr"] for g in ours.optimizer.param_groups] == [g["lr"] for g in reference_optimizer.param_groups]
        reference_optimizer.step()
        reference.step()


@pytest.mark.parametrize("kind", ["poly", "cosine"])
@pytest.mark.parametrize("final", [0.0, 0.05])
def test_decays_reach_their_end_value_at_the_end(kind, final):
    s = schedule(LR_SCHEDULE=kind, FINAL_LR_FACTOR=final)
    assert s.rate(0.1, 0.0) == pytest.approx(0.1)
    assert s.rate(0.1, 1.0) == pytest.approx(0.1 * final, abs=1e-12)
    rates = [s.rate(0.1, p / 100) for p in range(101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never rises
    if kind == "cosine":
        assert s.rate(0.1, 0.5) == pytest.approx(0.1 * (1 + final) / 2)
    else:
        assert s.rate(0.1, 0.5) == pytest.approx(0.1 * (final + (1 - final) * 0.5 ** 0.9))


@pytest.mark.parametrize("kind", ["poly", "cosine", "step"])
def test_warm_up_ramps_linearly_then_the_schedule_follows(kind):
    s = schedule(LR_SCHEDULE=kind, WARMUP_FRACTION=0.2, ITERATIONS=100, LR_STEPS=[80])
    assert s.rate(0.1, 0.0) == 0
    assert s.rate(0.1, 0.05) == pytest.approx(0.025) and s.rate(0.1, 0.1) == pytest.approx(0.05)
    assert s.rate(0.1, 0.2) == pytest.approx(0.1)  # the peak, where the decay starts
    assert s.rate(0.1, 0.9) < 0.1 and s.rate(0.1, 1.0) < 0.1


def test_recipe_values_are_checked():
    for override, message in (("OPTIMIZER=adam", "OPTIMIZER must be one of 'sgd', 'adamw'"),
                              ("LR_SCHEDULE=linear", "LR_SCHEDULE must be one of"),
                              ("LOSS=dice", "LOSS must be one of 'ce', 'ce_dice', 'focal', 'ohem'"),
                              ("WARMUP_FRACTION=1.0", "WARMUP_FRACTION must be below 1"),
                              ("OHEM_FRACTION=0", "OHEM_FRACTION must be > 0 and <= 1"),
                              ("FINAL_LR_FACTOR=1.5", "FINAL_LR_FACTOR must be >= 0 and <= 1"),
                              ("TRAIN_MINUTES=-1", "TRAIN_MINUTES must be >= 0"),
                              ("FOCAL_GAMMA=-0.5", "FOCAL_GAMMA must be >= 0"),
                              ("RANDOM_SCALE=-0.25", "RANDOM_SCALE must be >= 0 and <= 3"),
                              ("LR_STEPS=[400.5]", "LR_STEPS holds iterations, whole numbers >= 1")):
        with pytest.raises(EosegError, match=message):
            load_config(overrides=[override])
