"""The ResNet encoders against torchvision's published layouts, and encoder weights from local files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from eoseg.errors import EosegError
from eoseg.models import build_model
from eoseg.models.encoder_weights import init_encoder_weights
from eoseg.models.pretrained import adapt_first_layer
from eoseg.models.resnet import RESNETS, ResNetEncoder

# The convolutions of torchvision's resnet18/34/50 (torchvision/models/resnet.py, v1.5: the
# bottleneck's stride on its 3x3 convolution): name, then the weight's shape (out, in, kh, kw).
# Each convolution is followed by its batch norm (convK -> bnK, downsample.0 -> downsample.1)
# with weight, bias, running_mean, running_var of `out` values and num_batches_tracked; fc is excluded.
TORCHVISION_CONVS = {
    "resnet18": """
    conv1 64 3 7 7
    layer1.0.conv1 64 64 3 3
    layer1.0.conv2 64 64 3 3
    layer1.1.conv1 64 64 3 3
    layer1.1.conv2 64 64 3 3
    layer2.0.conv1 128 64 3 3
    layer2.0.conv2 128 128 3 3
    layer2.0.downsample.0 128 64 1 1
    layer2.1.conv1 128 128 3 3
    layer2.1.conv2 128 128 3 3
    layer3.0.conv1 256 128 3 3
    layer3.0.conv2 256 256 3 3
    layer3.0.downsample.0 256 128 1 1
    layer3.1.conv1 256 256 3 3
    layer3.1.conv2 256 256 3 3
    layer4.0.conv1 512 256 3 3
    layer4.0.conv2 512 512 3 3
    layer4.0.downsample.0 512 256 1 1
    layer4.1.conv1 512 512 3 3
    layer4.1.conv2 512 512 3 3
""",
    "resnet34": """
    conv1 64 3 7 7
    layer1.0.conv1 64 64 3 3
    layer1.0.conv2 64 64 3 3
    layer1.1.conv1 64 64 3 3
    layer1.1.conv2 64 64 3 3
    layer1.2.conv1 64 64 3 3
    layer1.2.conv2 64 64 3 3
    layer2.0.conv1 128 64 3 3
    layer2.0.conv2 128 128 3 3
    layer2.0.downsample.0 128 64 1 1
    layer2.1.conv1 128 128 3 3
    layer2.1.conv2 128 128 3 3
    layer2.2.conv1 128 128 3 3
    layer2.2.conv2 128 128 3 3
    layer2.3.conv1 128 128 3 3
    layer2.3.conv2 128 128 3 3
    layer3.0.conv1 256 128 3 3
    layer3.0.conv2 256 256 3 3
    layer3.0.downsample.0 256 128 1 1
    layer3.1.conv1 256 256 3 3
    layer3.1.conv2 256 256 3 3
    layer3.2.conv1 256 256 3 3
    layer3.2.conv2 256 256 3 3
    layer3.3.conv1 256 256 3 3
    layer3.3.conv2 256 256 3 3
    layer3.4.conv1 256 256 3 3
    layer3.4.conv2 256 256 3 3
    layer3.5.conv1 256 256 3 3
    layer3.5.conv2 256 256 3 3
    layer4.0.conv1 512 256 3 3
    layer4.0.conv2 512 512 3 3
    layer4.0.downsample.0 512 256 1 1
    layer4.1.conv1 512 512 3 3
    layer4.1.conv2 512 512 3 3
    layer4.2.conv1 512 512 3 3
    layer4.2.conv2 512 512 3 3
""",
    "resnet50": """
    conv1 64 3 7 7
    layer1.0.conv1 64 64 1 1
    layer1.0.conv2 64 64 3 3
    layer1.0.conv3 256 64 1 1
    layer1.0.downsample.0 256 64 1 1
    layer1.1.conv1 64 256 1 1
    layer1.1.conv2 64 64 3 3
    layer1.1.conv3 256 64 1 1
    layer1.2.conv1 64 256 1 1
    layer1.2.conv2 64 64 3 3
    layer1.2.conv3 256 64 1 1
    layer2.0.conv1 128 256 1 1
    layer2.0.conv2 128 128 3 3
    layer2.0.conv3 512 128 1 1
    layer2.0.downsample.0 512 256 1 1
    layer2.1.conv1 128 512 1 1
    layer2.1.conv2 128 128 3 3
    layer2.1.conv3 512 128 1 1
    layer2.2.conv1 128 512 1 1
    layer2.2.conv2 128 128 3 3
    layer2.2.conv3 512 128 1 1
    layer2.3.conv1 128 512 1 1
    layer2.3.conv2 128 128 3 3
    layer2.3.conv3 512 128 1 1
    layer3.0.conv1 256 512 1 1
    layer3.0.conv2 256 256 3 3
    layer3.0.conv3 1024 256 1 1
    layer3.0.downsample.0 1024 512 1 1
    layer3.1.conv1 256 1024 1 1
    layer3.1.conv2 256 256 3 3
    layer3.1.conv3 1024 256 1 1
    layer3.2.conv1 256 1024 1 1
    layer3.2.conv2 256 256 3 3
    layer3.2.conv3 1024 256 1 1
    layer3.3.conv1 256 1024 1 1
    layer3.3.conv2 256 256 3 3
    layer3.3.conv3 1024 256 1 1
    layer3.4.conv1 256 1024 1 1
    layer3.4.conv2 256 256 3 3
    layer3.4.conv3 1024 256 1 1
    layer3.5.conv1 256 1024 1 1
    layer3.5.conv2 256 256 3 3
    layer3.5.conv3 1024 256 1 1
    layer4.0.conv1 512 1024 1 1
    layer4.0.conv2 512 512 3 3
    layer4.0.conv3 2048 512 1 1
    layer4.0.downsample.0 2048 1024 1 1
    layer4.1.conv1 512 2048 1 1
    layer4.1.conv2 512 512 3 3
    layer4.1.conv3 2048 512 1 1
    layer4.2.conv1 512 2048 1 1
    layer4.2.conv2 512 512 3 3
    layer4.2.conv3 2048 512 1 1
""",
}
# published parameter counts of torchvision's models less their 1000-class fc layer
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000,
                          "resnet50": 25_557_032 - 2_049_000}
# len(torchvision.models.resnetNN().state_dict()) less fc.weight and fc.bias
TORCHVISION_KEYS = {"resnet18": 122 - 2, "resnet34": 218 - 2, "resnet50": 320 - 2}


def torchvision_layout(name: str) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of torchvision's ``name`` without fc, in its order."""
    layout = {}
    for line in TORCHVISION_CONVS[name].split("\n"):
        if not line.strip():
            continue
        conv, *shape = line.split()
        layout[conv + ".weight"] = tuple(map(int, shape))
        bn = conv[:-1] + "1" if conv.endswith("downsample.0") else conv.replace("conv", "bn")
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{bn}.{tensor}"] = (int(shape[0]),)
        layout[f"{bn}.num_batches_tracked"] = ()
    return layout


@pytest.mark.parametrize("name", list(RESNETS))
def test_encoder_layers_are_torchvisions(name):
    encoder = ResNetEncoder(name, 3, 1.0)
    ours = {key: tuple(value.shape) for key, value in encoder.state_dict().items()}
    expected = torchvision_layout(name)
    assert list(ours) == list(expected)  # names, and torchvision's order
    assert ours == expected
    assert len(ours) == TORCHVISION_KEYS[name]
    assert sum(p.numel() for p in encoder.parameters()) == TORCHVISION_PARAMETERS[name]


@pytest.mark.parametrize("name", list(RESNETS))
def test_encoder_features_have_the_announced_strides_and_channels(name):
    encoder = ResNetEncoder(name, 4, 0.125).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 4, 64, 96))
    assert [f.shape[-2:] for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    assert [f.shape[1] for f in features] == encoder.out_channels


# ---------------------------------------------------------------- encoder weights from a file
def fake_resnet_state(name: str, bands: int = 3, prefix: str = "", seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict of torchvision's ``name`` layout (with its fc), random values, keys under ``prefix``."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in torchvision_layout(name).items():
        if key == "conv1.weight":
            shape = (shape[0], bands, *shape[2:])
        if key.endswith("num_batches_tracked"):
            state[prefix + key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[prefix + key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[prefix + key] = torch.randn(shape, generator=gen)
    features = 2048 if name == "resnet50" else 512
    state[prefix + "fc.weight"] = torch.randn(1000, features, generator=gen)
    state[prefix + "fc.bias"] = torch.randn(1000, generator=gen)
    return state


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet") / "resnet18.pth"
    torch.save(fake_resnet_state("resnet18"), path)
    return path


@pytest.mark.parametrize("model_name", ["unet", "unetformer"])
@pytest.mark.parametrize("bands", [1, 3, 4, 5])
def test_torchvision_resnet_file_initialises_the_encoder(resnet18_file, model_name, bands):
    state = fake_resnet_state("resnet18")
    model = build_model(model_name, bands, 6, 1.0, encoder="resnet18")
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    message = init_encoder_weights(model, resnet18_file)
    assert "resnet18 weights (torchvision's layer names) without prefix" in message and "fc not used" in message
    assert ("adapted from 3 to" in message) == (bands != 3)
    loaded = model.encoder.state_dict()
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        expected = adapt_first_layer(value, bands) if key == "conv1.weight" else value
        assert torch.equal(loaded[key], expected), key
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in decoder_before.items())  # only the encoder is touched


def test_timm_file_with_a_prefix_and_13_bands_in_safetensors(tmp_path):
    """TorchGeo's Sentinel-2 ResNets: timm layout, 13 bands, keys possibly under "backbone."."""
    state = fake_resnet_state("resnet50", bands=13, prefix="backbone.")
    state["head.weight"] = torch.zeros(2)  # outside the prefix: not the encoder's
    path = tmp_path / "ssl4eo_resnet50.safetensors"
    save_file(state, path)
    model = build_model("unet", 13, 6, 1.0, encoder="resnet50")
    message = init_encoder_weights(model, path)
    assert "resnet50 weights (torchvision's layer names) under prefix 'backbone.'" in message and "adapted" not in message
    assert torch.equal(model.encoder.conv1.weight, state["backbone.conv1.weight"])
    assert torch.equal(model.encoder.layer4[2].bn3.running_var, state["backbone.layer4.2.bn3.running_var"])
    four_bands = build_model("unetformer", 4, 6, 1.0, encoder="resnet50")
    assert "adapted from 13 to 4 bands" in init_encoder_weights(four_bands, path)
    assert torch.equal(four_bands.encoder.conv1.weight, adapt_first_layer(state["backbone.conv1.weight"], 4))


def test_nested_state_dict_of_a_training_checkpoint(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": fake_resnet_state("resnet18", prefix="model.encoder.")}, path)
    assert "under prefix 'model.encoder.'" in init_encoder_weights(build_model("unet", 3, 6, 1.0, encoder="resnet18"), path)


def save(tmp_path, state, name="weights.pth"):
    torch.save(state, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("model_name", ["unet", "unetformer"])
def test_a_narrow_model_refuses_published_weights_naming_the_layer(tmp_path, model_name):
    path = save(tmp_path, fake_resnet_state("resnet18"))
    with pytest.raises(EosegError, match=r"conv1.weight has shape \(64, 3, 7, 7\) but encoder.conv1.weight needs "
                                         r"\(8, 3, 7, 7\).*MODEL_WIDTH=1.0"):
        init_encoder_weights(build_model(model_name, 3, 6, 0.125, encoder="resnet18"), path)


def test_another_resnet_is_refused_with_the_encoder_to_set(tmp_path):
    path = save(tmp_path, fake_resnet_state("resnet50"))
    with pytest.raises(EosegError, match="holds resnet50 weights, but the model's encoder is ENCODER=resnet18; set ENCODER=resnet50"):
        init_encoder_weights(build_model("unet", 3, 6, 1.0, encoder="resnet18"), path)
    path = save(tmp_path, fake_resnet_state("resnet34"))
    with pytest.raises(EosegError, match="holds resnet34 weights.*set ENCODER=resnet34"):
        init_encoder_weights(build_model("unet", 3, 6, 1.0, encoder="resnet18"), path)


def test_a_missing_or_misshapen_layer_is_named(tmp_path):
    model = build_model("unet", 3, 6, 1.0, encoder="resnet18")
    before = model.encoder.conv1.weight.clone()
    state = fake_resnet_state("resnet18")
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(EosegError, match="missing layer3.1.bn2.running_var"):
        init_encoder_weights(model, save(tmp_path, state))
    state = fake_resnet_state("resnet18")
    state["layer2.0.downsample.0.weight"] = torch.zeros(128, 64, 3, 3)
    with pytest.raises(EosegError, match=r"layer2.0.downsample.0.weight has shape \(128, 64, 3, 3\) but "
                                         r"encoder.layer2.0.downsample.0.weight needs \(128, 64, 1, 1\)"):
        init_encoder_weights(model, save(tmp_path, state))
    assert torch.equal(model.encoder.conv1.weight, before)  # nothing loaded in part


def test_unknown_layers_several_resnets_and_other_files_are_refused(tmp_path):
    model = build_model("unet", 3, 6, 1.0, encoder="resnet18")
    state = fake_resnet_state("resnet18")
    state["layer1.0.se.fc1.weight"] = torch.zeros(4, 64, 1, 1)  # a squeeze-excitation ResNet
    with pytest.raises(EosegError, match="layer1.0.se.fc1.weight is no layer of a torchvision/timm resnet18"):
        init_encoder_weights(model, save(tmp_path, state))
    both = {**fake_resnet_state("resnet18", prefix="backbone."), **fake_resnet_state("resnet18", prefix="encoder.")}
    with pytest.raises(EosegError, match="several ResNets, under key prefixes 'backbone.', 'encoder.'"):
        init_encoder_weights(model, save(tmp_path, both))
    vgg = {"features.0.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(EosegError, match="no ResNet in torchvision's or timm's layout"):
        init_encoder_weights(model, save(tmp_path, vgg))
    with pytest.raises(EosegError, match="encoder weights not found"):
        init_encoder_weights(model, tmp_path / "absent.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EosegError, match="not a loadable .safetensors"):
        init_encoder_weights(model, tmp_path / "bad.safetensors")


def test_one_setting_initialises_vgg_and_resnet_encoders_alike(tmp_path):
    from .test_fusion_models import fake_vgg_state

    vgg = save(tmp_path, fake_vgg_state(), "vgg16_bn.pth")
    fusenet = build_model("fusenet", 5, 6, 1.0, stream_bands=3)
    assert init_encoder_weights(fusenet, vgg) == f"{vgg}: torchvision vgg16_bn layout, 156 tensors loaded into 2 encoder(s)"
    assert torch.equal(fusenet.aux_conv1_1.weight, adapt_first_layer(fake_vgg_state()["features.0.weight"], 2))
    resnet = save(tmp_path, fake_resnet_state("resnet18"), "resnet18.pth")
    with pytest.raises(EosegError, match="missing features.0.weight"):
        init_encoder_weights(build_model("segnet", 3, 6, 1.0), resnet)
    with pytest.raises(EosegError, match="no ResNet in torchvision's or timm's layout"):
        init_encoder_weights(build_model("unetformer", 3, 6, 1.0, encoder="resnet18"), vgg)
