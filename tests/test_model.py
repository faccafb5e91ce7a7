"""eoseg.models: SegNet shapes, size, index-preserving unpooling; VGG16-BN encoder init."""

from __future__ import annotations

import pickle

import pytest
import torch

from eoseg.errors import EosegError
from eoseg.models import MODELS, build_model, model_from_config
from eoseg.models.pretrained import load_state_dict_file
from eoseg.models.segnet import SegNet
from eoseg.models.vgg import init_encoder_from_vgg16_bn, vgg16_bn_feature_indices

TINY = 0.125

# torchvision vgg16_bn: conv layers sit at these indices of `features`, each followed by its BN
TORCHVISION_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


@pytest.fixture(scope="module")
def full_model() -> SegNet:
    """A full-width, 3-band, 6-class SegNet, built once; tests must not modify it."""
    torch.manual_seed(0)
    return build_model("segnet", 3, 6, 1.0).eval()


def tiny_model(in_channels: int = 3, num_classes: int = 6, seed: int = 0) -> SegNet:
    torch.manual_seed(seed)
    return build_model("segnet", in_channels, num_classes, TINY).eval()


# ---------------------------------------------------------------- shapes and size
@pytest.mark.parametrize("bands", [3, 4])
@pytest.mark.parametrize("size", [(64, 64), (100, 132), (33, 47), (32, 32)])
def test_output_shape(bands, size):
    model = tiny_model(bands, 6)
    x = torch.randn(2, bands, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 6, *size)
    assert torch.isfinite(y).all()


def test_output_shape_other_class_count_and_train_mode():
    model = tiny_model(3, 4).train()
    y = model(torch.randn(2, 3, 64, 96))
    assert y.shape == (2, 4, 64, 96)
    y.sum().backward()  # gradients flow through unpooling
    assert model.conv1_1.weight.grad is not None
    assert model.conv1_1.weight.grad.abs().sum() > 0


def test_full_width_parameter_count(full_model):
    n = sum(p.numel() for p in full_model.parameters())
    assert round(n / 1e6, 1) == 29.4


def test_full_width_forward_small_input(full_model):
    with torch.no_grad():
        y = full_model(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 6, 64, 64)


def test_full_width_layer_shapes_follow_vgg16(full_model):
    expected = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    names = full_model.encoder_layer_names()
    assert names == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                     "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
    assert [getattr(full_model, n).out_channels for n in names] == expected
    assert full_model.conv1_1.in_channels == 3
    assert full_model.conv1_1_D.out_channels == 6
    assert full_model.conv1_1_D.in_channels == 64


def test_width_scales_channels():
    model = tiny_model()
    assert model.conv1_1.out_channels == 8  # 64 * 0.125
    assert model.conv5_3.out_channels == 64  # 512 * 0.125
    n_tiny = sum(p.numel() for p in model.parameters())
    assert n_tiny < 29.4e6 / 50


def test_model_from_config():
    from eoseg.config import load_config

    cfg = load_config(overrides=["MODEL=segnet", "MODEL_WIDTH=0.125"])
    model = model_from_config(cfg)
    assert isinstance(model, SegNet)
    assert (model.in_channels, model.num_classes, model.width) == (3, 6, 0.125)


def test_unknown_model_name_refused():
    with pytest.raises(EosegError, match=r"unknown MODEL 'resnet'.*segnet"):
        build_model("resnet", 3, 6, TINY)
    assert "segnet" in MODELS


# ---------------------------------------------------------------- unpooling indices
def test_unpooling_uses_the_encoder_indices_in_mirrored_order():
    model = tiny_model()
    pooled_indices, pooled_input_sizes, unpool_indices, unpool_output_sizes = [], [], [], []

    def after_pool(module, args, output):
        pooled_input_sizes.append(tuple(args[0].shape[-2:]))
        pooled_indices.append(output[1])

    def before_unpool(module, args, kwargs):
        indices = args[1] if len(args) > 1 else kwargs["indices"]
        unpool_indices.append(indices)
        unpool_output_sizes.append(tuple(kwargs.get("output_size") or args[2]))

    handles = [
        model.pool.register_forward_hook(after_pool),
        model.unpool.register_forward_pre_hook(before_unpool, with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 100, 132))
    finally:
        for h in handles:
            h.remove()

    assert len(pooled_indices) == 5
    assert len(unpool_indices) == 5
    # the same tensor objects, deepest first
    for i in range(5):
        assert unpool_indices[i] is pooled_indices[4 - i], f"unpooling {i} does not use pooling {4 - i}'s indices"
    # and the unpooled maps get the pre-pooling sizes back (odd sizes included)
    assert pooled_input_sizes == [(100, 132), (50, 66), (25, 33), (12, 16), (6, 8)]
    assert unpool_output_sizes == pooled_input_sizes[::-1]


def test_unpooling_puts_values_at_encoder_maxima():
    # an independent check without hooks: unpool(pool(x)) keeps each 2x2 maximum where it was
    model = tiny_model()
    x = torch.randn(1, 2, 8, 8)
    pooled, idx = model.pool(x)
    restored = model.unpool(pooled, idx, output_size=x.shape[-2:])
    nonzero = restored != 0
    assert nonzero.sum() == pooled.numel()
    torch.testing.assert_close(restored[nonzero], x[nonzero])


# ---------------------------------------------------------------- parameter groups
def test_encoder_and_decoder_parameters_partition_all(full_model):
    encoder = list(full_model.encoder_parameters())
    decoder = list(full_model.decoder_parameters())
    all_params = list(full_model.parameters())
    enc_ids, dec_ids, all_ids = {id(p) for p in encoder}, {id(p) for p in decoder}, {id(p) for p in all_params}
    assert len(enc_ids) == len(encoder) == 13 * 4  # conv weight, bias + BN weight, bias
    assert len(dec_ids) == len(decoder)
    assert not enc_ids & dec_ids
    assert enc_ids | dec_ids == all_ids
    assert len(encoder) + len(decoder) == len(all_params)
    assert id(full_model.conv1_1.weight) in enc_ids
    assert id(full_model.conv5_3_bn.bias) in enc_ids
    assert id(full_model.conv5_3_D.weight) in dec_ids
    assert id(full_model.conv1_1_D.weight) in dec_ids


# ---------------------------------------------------------------- VGG16-BN init
def test_feature_indices_match_torchvision_layout():
    pairs = vgg16_bn_feature_indices()
    assert [c for c, _ in pairs] == TORCHVISION_CONV_INDICES
    assert all(b == c + 1 for c, b in pairs)


def fake_vgg16_bn_state(model: SegNet, seed: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision-layout vgg16_bn state dict with random values of the shapes ``model`` needs."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, conv_index in zip(model.encoder_layer_names(), TORCHVISION_CONV_INDICES):
        conv, bn = getattr(model, name), getattr(model, name + "_bn")
        state[f"features.{conv_index}.weight"] = torch.randn(conv.weight.shape, generator=gen)
        state[f"features.{conv_index}.bias"] = torch.randn(conv.bias.shape, generator=gen)
        b = conv_index + 1
        state[f"features.{b}.weight"] = torch.rand(bn.weight.shape, generator=gen) + 0.5
        state[f"features.{b}.bias"] = torch.randn(bn.bias.shape, generator=gen)
        state[f"features.{b}.running_mean"] = torch.randn(bn.running_mean.shape, generator=gen)
        state[f"features.{b}.running_var"] = torch.rand(bn.running_var.shape, generator=gen) + 0.1
        state[f"features.{b}.num_batches_tracked"] = torch.tensor(12345)
    # torchvision's classifier, shrunk: present in a real file, ignored by the init
    state["classifier.0.weight"] = torch.randn(4, 8, generator=gen)
    state["classifier.0.bias"] = torch.randn(4, generator=gen)
    return state


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, full_model):
    path = tmp_path_factory.mktemp("vgg") / "vgg16_bn.pth"
    torch.save(fake_vgg16_bn_state(full_model), path)
    return path


def test_init_encoder_copies_all_78_tensors(vgg_file):
    torch.manual_seed(5)
    model = SegNet(3, 6, 1.0)
    before = snapshot(model)
    state = load_state_dict_file(vgg_file)
    assert isinstance(state, dict) and "features.0.weight" in state
    copied = init_encoder_from_vgg16_bn(model, state)
    assert copied == 13 * 2 + 13 * 4 == 78

    compared = 0
    for name, conv_index in zip(model.encoder_layer_names(), TORCHVISION_CONV_INDICES):
        conv, bn = getattr(model, name), getattr(model, name + "_bn")
        for attr in ("weight", "bias"):
            assert torch.equal(getattr(conv, attr), state[f"features.{conv_index}.{attr}"]), f"{name}.{attr}"
            compared += 1
        for attr in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(bn, attr), state[f"features.{conv_index + 1}.{attr}"]), f"{name}_bn.{attr}"
            compared += 1
    assert compared == 78
    # the values really changed (the fake file is not the random init)
    assert not torch.equal(model.conv1_1.weight, before["conv1_1.weight"])
    assert not torch.equal(model.conv5_3_bn.running_var, before["conv5_3_bn.running_var"])
    # the decoder is untouched
    after = model.state_dict()
    for key in before:
        if "_D" in key:
            assert torch.equal(after[key], before[key]), key
    # the copy is a copy: changing the source afterwards does not change the model
    state["features.0.weight"].zero_()
    assert model.conv1_1.weight.abs().sum() > 0


@pytest.mark.parametrize("broken", ["missing", "shape"])
def test_bad_state_dict_refused_and_model_unchanged(full_model, broken):
    import copy

    model = copy.deepcopy(full_model)
    state = fake_vgg16_bn_state(model)
    # break the very last tensor, so that a copy-as-you-go implementation would have changed the rest
    key = "features.41.running_var"
    if broken == "missing":
        del state[key]
        match = r"missing features\.41\.running_var"
    else:
        state[key] = torch.ones(511)
        match = r"features\.41\.running_var has shape \(511,\)"
    before = snapshot(model)
    with pytest.raises(EosegError, match=match):
        init_encoder_from_vgg16_bn(model, state, source="my_vgg.pth")
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), f"{k} changed although the init was refused"


def test_narrow_model_refused():
    full = SegNet(3, 6, 1.0)
    state = fake_vgg16_bn_state(full)
    del full
    with pytest.raises(EosegError, match="MODEL_WIDTH=1.0"):
        init_encoder_from_vgg16_bn(tiny_model(3), state)


def test_load_state_dict_file_errors(tmp_path):
    with pytest.raises(EosegError, match="not found"):
        load_state_dict_file(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(EosegError, match="not a loadable"):
        load_state_dict_file(garbage)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(EosegError, match="expected a state dict"):
        load_state_dict_file(tensor_only)
    weights = {"conv1.weight": torch.ones(2, 3, 1, 1)}
    beside_optimizer = tmp_path / "checkpoint.pth"  # as many training scripts save them
    torch.save({"model": weights, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, beside_optimizer)
    assert list(load_state_dict_file(beside_optimizer)) == ["conv1.weight"]
    two = tmp_path / "two.pth"  # e.g. a teacher and a student: which one is meant?
    torch.save({"model": weights, "state_dict": weights}, two)
    with pytest.raises(EosegError, match=r"holds several state dicts, under 'state_dict', 'model'"):
        load_state_dict_file(two)
    neither = tmp_path / "neither.pth"
    torch.save({"epoch": 3, "args": [1, 2]}, neither)
    with pytest.raises(EosegError, match=r"expected a state dict of tensors \(or one under 'state_dict', .*\), got a dict of "
                                         r"'epoch', 'args'"):
        load_state_dict_file(neither)


class _Payload:
    """Unpickling this runs exec(), which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_refused_without_running_code(tmp_path, writer):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save({"features.0.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    else:  # a legacy (non-zip) pickle of plain values only, so exec is the one thing refused
        with open(path, "wb") as handle:
            pickle.dump({"features.0.weight": [0.0], "evil": _Payload(marker)}, handle, protocol=2)
    assert not marker.exists()
    with pytest.raises(EosegError, match="refused to load.*could run code"):
        load_state_dict_file(path)
    assert not marker.exists(), "loading the weights file ran code"
    # the payload is live: an unrestricted unpickler would have run it
    if writer == "pickle.dump":
        with open(path, "rb") as handle:
            pickle.load(handle)
    else:
        torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"
