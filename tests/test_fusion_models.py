"""Beyond RGB: N-band models, first-layer adaptation, fusion and multi-scale networks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from .conftest import TINY_TILE_SIZE, as_arguments, make_tiny_config, run_script, tiny_overrides
from eoseg.checkpoint import load_model, save_checkpoint
from eoseg.errors import EosegError
from eoseg.io import read_raster
from eoseg.models import MODELS, build_model, uses_encoder
from eoseg.models.fuse import ConvReLU, SplitBfloat16Input, fold_batchnorm, split_input_layers
from eoseg.models.multiscale import MultiScaleSegNet
from eoseg.models.segnet import LayeredNet, SegNet
from eoseg.models.pretrained import adapt_first_layer
from eoseg.models.vgg import init_encoder_from_vgg16_bn, vgg16_bn_feature_indices
from eoseg.recipe import make_loss, make_optimizer
from eoseg.train import supervised_loss
from eoseg.weights import load_weights, save_safetensors
from eoseg.weights_record import weights_record

TINY = 0.125
TWO_STREAM = [name for name, cls in MODELS.items() if cls.two_stream]


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial running statistics and affine terms, so that folding has something to fold."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def tiny(name: str, bands: int, stream_bands: int | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, bands, 6, TINY, stream_bands)


# ---------------------------------------------------------------- N-band models
@pytest.mark.parametrize("bands", [1, 4, 5])
@pytest.mark.parametrize("name", ["segnet", "segnet_multiscale"])
def test_single_stream_models_take_any_band_count(name, bands):
    model = tiny(name, bands).eval()
    with torch.no_grad():
        y = model(torch.randn(2, bands, 64, 96))
    assert y.shape == (2, 6, 64, 96) and torch.isfinite(y).all()
    assert model.conv1_1.in_channels == bands


@pytest.mark.parametrize("bands, stream_bands", [(4, 3), (5, 3), (5, 4), (2, 1)])
@pytest.mark.parametrize("name", TWO_STREAM)
def test_two_stream_models_split_the_bands(name, bands, stream_bands):
    model = tiny(name, bands, stream_bands).eval()
    with torch.no_grad():
        y = model(torch.randn(2, bands, 64, 96))
    assert y.shape == (2, 6, 64, 96) and torch.isfinite(y).all()
    first_layers = [getattr(module, names[0]).in_channels for module, names in model.vgg_encoders()]
    assert first_layers == [stream_bands, bands - stream_bands]


@pytest.mark.parametrize("name", TWO_STREAM)
def test_two_stream_models_use_both_streams(name):
    """Changing only the auxiliary bands changes the output: the second stream is wired in."""
    model = randomise_batch_norm(tiny(name, 5, 3)).eval()
    x = torch.randn(1, 5, 64, 64)
    changed = x.clone()
    changed[:, 3:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(changed))
        optical_changed = x.clone()
        optical_changed[:, :3] += 1.0
        assert not torch.allclose(model(x), model(optical_changed))


@pytest.mark.parametrize("name", TWO_STREAM)
@pytest.mark.parametrize("stream_bands", [None, 0, 4, -1])
def test_two_stream_models_need_bands_for_both_streams(name, stream_bands):
    with pytest.raises(EosegError, match="two streams"):
        build_model(name, 4, 6, TINY, stream_bands)


# ---------------------------------------------------------------- first-layer adaptation
@pytest.mark.parametrize("bands", [1, 2, 4, 5, 6, 8])
def test_adapted_first_layer_keeps_the_rgb_response_on_replicated_input(bands):
    gen = torch.Generator().manual_seed(bands)
    rgb_weight = torch.randn(16, 3, 3, 3, generator=gen)
    bias = torch.randn(16, generator=gen)
    adapted = adapt_first_layer(rgb_weight, bands)
    assert adapted.shape == (16, bands, 3, 3)
    if bands >= 3:
        rgb = torch.rand(2, 3, 20, 24, generator=gen)
        replicated = rgb[:, [j % 3 for j in range(bands)]]  # R, G, B, R, G, ...
    else:
        replicated = torch.rand(2, bands, 20, 24, generator=gen)
        rgb = replicated[:, [c % bands for c in range(3)]]  # one grey band seen as R = G = B
    expected = torch.nn.functional.conv2d(rgb, rgb_weight, bias, padding=1)
    actual = torch.nn.functional.conv2d(replicated, adapted, bias, padding=1)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_adaptation_of_three_bands_is_the_identity():
    weight = torch.randn(8, 3, 3, 3)
    assert torch.equal(adapt_first_layer(weight, 3), weight)


def fake_vgg_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision-layout vgg16_bn state dict of the full-width shapes, random values."""
    reference = SegNet(3, 6, 1.0)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, (conv_index, bn_index) in zip(reference.encoder_layer_names(), vgg16_bn_feature_indices()):
        conv = getattr(reference, name)
        state[f"features.{conv_index}.weight"] = torch.randn(conv.weight.shape, generator=gen) * 0.05
        state[f"features.{conv_index}.bias"] = torch.randn(conv.bias.shape, generator=gen) * 0.05
        n = conv.out_channels
        state[f"features.{bn_index}.weight"] = torch.rand(n, generator=gen) + 0.5
        state[f"features.{bn_index}.bias"] = torch.randn(n, generator=gen) * 0.1
        state[f"features.{bn_index}.running_mean"] = torch.randn(n, generator=gen) * 0.1
        state[f"features.{bn_index}.running_var"] = torch.rand(n, generator=gen) + 0.5
    return state


@pytest.fixture(scope="module")
def vgg_state():
    return fake_vgg_state()


def encoder_output(model: LayeredNet, names: list[str], x: torch.Tensor) -> torch.Tensor:
    """The first VGG block's output (two conv + BN + ReLU layers) of one encoder."""
    with torch.no_grad():
        for name in names[:2]:
            x = model.layer(x, name)
    return x


@pytest.mark.parametrize("bands", [1, 4, 5])
def test_vgg_init_of_an_n_band_segnet_starts_from_the_rgb_one(vgg_state, bands):
    rgb_model = SegNet(3, 6, 1.0).eval()
    init_encoder_from_vgg16_bn(rgb_model, vgg_state)
    model = SegNet(bands, 6, 1.0).eval()
    assert init_encoder_from_vgg16_bn(model, vgg_state) == 78
    rgb = torch.rand(1, 3, 32, 32)
    replicated = rgb[:, [j % 3 for j in range(bands)]] if bands >= 3 else rgb[:, :1].clone()
    reference_input = rgb if bands >= 3 else replicated[:, [0, 0, 0]]
    torch.testing.assert_close(encoder_output(model, model.encoder_layer_names(), replicated),
                               encoder_output(rgb_model, rgb_model.encoder_layer_names(), reference_input),
                               rtol=1e-4, atol=1e-5)
    # deeper layers are copied unchanged
    assert torch.equal(model.conv5_3.weight, vgg_state["features.40.weight"])


@pytest.mark.parametrize("name", TWO_STREAM)
def test_vgg_init_fills_both_encoders_of_two_stream_models(vgg_state, name):
    model = build_model(name, 5, 6, 1.0, stream_bands=3)
    assert init_encoder_from_vgg16_bn(model, vgg_state) == 2 * 78
    (optical, optical_names), (auxiliary, auxiliary_names) = model.vgg_encoders()
    assert torch.equal(getattr(optical, optical_names[0]).weight, vgg_state["features.0.weight"])
    # the 2-band auxiliary stream: R + B filters on its first band, G on its second
    torch.testing.assert_close(getattr(auxiliary, auxiliary_names[0]).weight,
                               adapt_first_layer(vgg_state["features.0.weight"], 2))
    assert torch.equal(getattr(auxiliary, auxiliary_names[-1]).weight, vgg_state["features.40.weight"])
    # the encoders are what learns at the reduced rate; the rest is decoder, correction, classifiers
    encoder = {id(p) for p in model.encoder_parameters()}
    assert len(encoder) == 2 * 13 * 4
    assert all(id(p) not in encoder for p in model.decoder_parameters())
    assert len(encoder) + len(list(model.decoder_parameters())) == len(list(model.parameters()))


# ---------------------------------------------------------------- multi-scale and deep supervision
def test_multiscale_outputs_and_their_sum():
    model = randomise_batch_norm(tiny("segnet_multiscale", 3)).train()
    x = torch.randn(2, 3, 64, 96)
    final, *coarse = model(x)
    assert final.shape == (2, 6, 64, 96)
    assert [c.shape[-2:] for c in coarse] == [(8, 12), (16, 24), (32, 48)]
    model.eval()
    with torch.no_grad():
        scores = model(x)
        outputs = model.decode(*model.encode(x))
        expected = model.conv1_1_D(outputs[-1])
        for block, name in ((1, "score_1_8"), (2, "score_1_4"), (3, "score_1_2")):
            expected += torch.nn.functional.interpolate(getattr(model, name)(outputs[block]), size=(64, 96),
                                                        mode="bilinear", align_corners=False)
    torch.testing.assert_close(scores, expected)


def test_deep_supervision_loss_uses_labels_at_each_scale():
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4] = 1
    labels[:, 4:, :4] = 255  # ignored at every scale
    perfect_coarse = torch.full((1, 2, 4, 4), -10.0)
    perfect_coarse[:, 1, :2] = 10.0
    perfect_coarse[:, 0, 2:] = 10.0
    final = torch.zeros(1, 2, 8, 8)
    alone = supervised_loss(criterion, final, labels, 1.0)
    with_aux = supervised_loss(criterion, (final, perfect_coarse), labels, 1.0)
    assert with_aux == pytest.approx(alone.item(), abs=1e-6)  # the coarse map is right where labels count
    wrong_coarse = -perfect_coarse
    assert supervised_loss(criterion, (final, wrong_coarse), labels, 0.5) > alone + 5


# ---------------------------------------------------------------- inference rewrites
@pytest.mark.parametrize("name, bands, stream_bands", [("segnet", 4, None), ("segnet_multiscale", 1, None),
                                                       ("fusenet", 5, 3), ("segnet_late_fusion", 4, 3)])
@pytest.mark.parametrize("fuse_relu", [False, True])
def test_folding_keeps_every_models_output(name, bands, stream_bands, fuse_relu):
    model = randomise_batch_norm(tiny(name, bands, stream_bands)).eval()
    x = torch.randn(2, bands, 64, 64)
    folded = fold_batchnorm(model, fuse_relu=fuse_relu)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded(x.contiguous(memory_format=torch.channels_last)), model(x),
                                   rtol=1e-4, atol=1e-4)
    layers = sum(len(m.layer_names) for m in model.modules() if isinstance(m, LayeredNet))
    assert sum(isinstance(m, ConvReLU) for m in folded.modules()) == (layers if fuse_relu else 0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


@pytest.mark.parametrize("name", list(MODELS))
def test_every_models_input_layers_are_found_and_split(name):
    """bfloat16 labelling splits the convolutions that read the image: one per stream."""
    two_stream = MODELS[name].two_stream
    torch.manual_seed(0)
    model = build_model(name, 4, 6, TINY, 3 if two_stream else None, "resnet18" if uses_encoder(name) else None).eval()
    x = torch.randn(1, 4, 64, 64)
    network = fold_batchnorm(model, fuse_relu=True)
    split = split_input_layers(network, x)
    assert len(split) == (2 if two_stream else 1)
    assert all(isinstance(network.get_submodule(layer), SplitBfloat16Input) for layer in split)
    with torch.no_grad():
        torch.testing.assert_close(network(x), model(x), rtol=1e-4, atol=1e-4)  # in float32 the split is exact
        out = network.to(torch.bfloat16)(x)  # the image in float32, as the predictor hands it over
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), model(x), rtol=0.1, atol=0.1)


# ---------------------------------------------------------------- weights files
@pytest.mark.parametrize("name", TWO_STREAM)
def test_two_stream_weights_round_trip(name, tiny_cfg, tmp_path):
    cfg = four_band_config(tiny_cfg, name)
    model = randomise_batch_norm(tiny(name, 4, 3)).eval()
    checkpoint = save_checkpoint(tmp_path / "m.pt", cfg, model, iteration=0)
    loaded, payload = load_model(checkpoint, cfg)
    assert payload["model"]["stream_bands"] == 3 and type(loaded) is type(model)
    safetensors = save_safetensors(tmp_path / "m.safetensors", model,
                                   weights_record(model, payload["signature"], False, "test"))
    from_safetensors, _ = load_weights(safetensors, cfg)
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
        torch.testing.assert_close(from_safetensors.eval()(x), model(x))


# ---------------------------------------------------------------- through the pipeline
@pytest.fixture(scope="module")
def stacked_root(sample_root, tmp_path_factory) -> Path:
    """The tiny sample in its layout, each image stacked with its DSM into one 4-band float32 GeoTIFF."""
    from eoseg.config import load_config

    root = tmp_path_factory.mktemp("stacked")
    source = load_config(overrides=[f"DATA_ROOT={sample_root / 'data'}"])
    target = source.replace(DATA_ROOT=str(root / "data"))
    for tile_id in ["1", "2", "3", "4"]:
        for pattern in ("GT_COLOR_PATTERN", "GT_ERODED_PATTERN", "LABEL_PATTERN"):
            target.tile_path(pattern, tile_id).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source.tile_path(pattern, tile_id), target.tile_path(pattern, tile_id))
        image_path = source.tile_path("IMAGE_PATTERN", tile_id)
        image = read_raster(image_path).astype(np.float32)
        dsm = read_raster(source.tile_path("DSM_PATTERN", tile_id)).astype(np.float32)
        with rasterio.open(image_path) as src:
            profile = {**src.profile, "count": 4, "dtype": "float32"}
        stacked = target.tile_path("IMAGE_PATTERN", tile_id)
        stacked.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(stacked, "w", **profile) as dst:
            dst.write(np.concatenate([image, dsm]))
    return root


def four_band_config(tiny_cfg, name: str, **extra):
    """IRRG + DSM in one 4-band image; two-stream models give the DSM its own stream."""
    return tiny_cfg.replace(MODEL=name, BANDS=[1, 2, 3, 4], BAND_NAMES=["IR", "R", "G", "DSM"],
                            NORM_MEAN=[0.0, 0.0, 0.0, 250.0], NORM_STD=[255.0, 255.0, 255.0, 10.0], STREAM_BANDS=3, **extra)


@pytest.mark.parametrize("name", [*TWO_STREAM, "segnet_multiscale"])
def test_every_fusion_model_trains_and_labels_by_streaming(name, sample_root, tmp_path):
    """training.py then inference.py, IRRG + the sample's nDSM, as a user runs them."""
    from eoseg.config import load_config

    ndsm = {"pattern": load_config().NDSM_PATTERN, "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]}
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "MODEL": name,
                 "EXTRA_SOURCES": [ndsm], "TRAIN_SOURCE": "tiles", "ITERATIONS": 3, "MODEL_WIDTH": 0.0625,
                 "VAL_EVERY": 0, "INFER_BLOCK_ROWS": 70}  # blocks shorter than the tile: streamed in several
    trained = run_script("training.py", *as_arguments(overrides))
    assert trained.returncode == 0, trained.stderr
    model, payload = load_model(tmp_path / "model.pt", make_tiny_config(tmp_path, **overrides))
    assert type(model) is MODELS[name] and payload["model"]["in_channels"] == 4
    labelled = run_script("inference.py", "--tiles", "4", *as_arguments(overrides))
    assert labelled.returncode == 0, labelled.stderr
    (labels_path,) = (tmp_path / "inference").glob("*_labels.tif")
    with rasterio.open(labels_path) as labels:
        assert (labels.width, labels.height) == (TINY_TILE_SIZE, TINY_TILE_SIZE)
        assert labels.read(1).max() < 6
    report = json.loads((tmp_path / "inference" / "metrics.json").read_text())
    assert report["overall"]["pixels"] > 0


def test_inference_script_runs_a_fusion_checkpoint(tiny_cfg, stacked_root, tmp_path):
    cfg = four_band_config(tiny_cfg, "fusenet")
    weights = save_checkpoint(tmp_path / "fusenet.pt", cfg, tiny("fusenet", 4, 3), iteration=0)
    stacked = four_band_config(tiny_cfg, "fusenet", DATA_ROOT=str(stacked_root / "data")).tile_path("IMAGE_PATTERN", "4")
    overrides = {"MODEL": "fusenet", "BANDS": [1, 2, 3, 4], "BAND_NAMES": ["IR", "R", "G", "DSM"],
                 "NORM_MEAN": [0.0, 0.0, 0.0, 250.0], "NORM_STD": [255.0, 255.0, 255.0, 10.0],
                 "STREAM_BANDS": 3, "WINDOW": 64, "STRIDE": 32, "DEVICE": "cpu"}
    result = run_script("inference.py", "--images", str(stacked), "--weights", str(weights), "--out",
                        str(tmp_path / "out"), *as_arguments(overrides))
    assert result.returncode == 0, result.stderr
    assert read_raster(tmp_path / "out" / f"{stacked.stem}_labels.tif").shape == (1, TINY_TILE_SIZE, TINY_TILE_SIZE)


def test_a_few_steps_lower_every_fusion_models_loss(tiny_cfg):
    criterion = make_loss(tiny_cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 64, 64, generator=gen)
    labels = (x[:, 3] > 0.5).long()  # only the auxiliary band tells the classes apart
    for name in [*TWO_STREAM, "segnet_multiscale"]:
        model = tiny(name, 4, 3 if MODELS[name].two_stream else None).train()
        optimizer = make_optimizer(tiny_cfg.replace(BASE_LR=0.05), model)
        losses = []
        for _ in range(12):
            loss = supervised_loss(criterion, model(x), labels, 1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0], (name, losses)


@pytest.mark.parametrize("name, stream_bands", [("fusenet", 3), ("segnet_late_fusion", 3), ("segnet_multiscale", None)])
def test_fusion_models_export_to_onnx(name, stream_bands):
    from eoseg.onnx_engine import OnnxModel

    model = randomise_batch_norm(tiny(name, 4, stream_bands)).eval()
    x = torch.randn(2, 4, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel.from_module(model)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dataset", ["sample_fusion", "vaihingen_fusion"])
def test_fusion_presets_select_a_two_stream_model_over_the_stacked_bands(dataset):
    from eoseg.config import load_config
    from eoseg.models import model_from_config

    cfg = load_config(overrides=[f"DATASET={dataset}", "MODEL_WIDTH=0.0625"])
    model = model_from_config(cfg)
    assert model.two_stream and model.in_channels == cfg.num_bands > len(cfg.BANDS)
    assert model.stream_bands == len(cfg.BANDS)  # the image feeds the optical stream, the extra sources the other


def test_deep_supervision_skips_a_coarse_target_with_no_label():
    """Labels valid only in a strip thinner than the coarse pixels: the loss stays finite."""
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    labels = torch.full((1, 64, 64), 255, dtype=torch.long)
    labels[:, 1:3] = 1  # no coarse pixel's centre (rows 3.5, 11.5, ...) falls in rows 1-2
    final = torch.zeros(1, 2, 64, 64, requires_grad=True)
    loss = supervised_loss(criterion, (final, torch.zeros(1, 2, 8, 8)), labels, 1.0)
    assert torch.isfinite(loss)


def test_fine_tuning_a_two_stream_model_with_other_stream_bands_is_refused_in_one_line(tiny_cfg, tmp_path):
    """Its first layers hold the recorded split of the bands: loaded into another, a size mismatch deep in torch."""
    from eoseg.weights import read_weights

    cfg = four_band_config(tiny_cfg, "fusenet")
    weights = save_checkpoint(tmp_path / "fusenet.pt", cfg, tiny("fusenet", 4, 3), iteration=0)
    read_weights(weights, cfg, for_training=True)
    with pytest.raises(EosegError, match=r"INIT_WEIGHTS .*fusenet.pt feed 3 bands to their first stream, but the config "
                                         r"gives it 2 \(STREAM_BANDS\): set STREAM_BANDS=3"):
        read_weights(weights, cfg.replace(STREAM_BANDS=2), for_training=True)
