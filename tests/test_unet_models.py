"""U-Net and UNetFormer on ResNet encoders, through the same pipeline as SegNet."""

from __future__ import annotations

import json

import pytest
import rasterio
import torch

from .conftest import TINY_TILE_SIZE, as_arguments, make_tiny_config, run_script, tiny_overrides
from .test_fusion_models import randomise_batch_norm
from .test_resnet import fake_resnet_state
from eoseg.checkpoint import load_model, save_checkpoint
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.models import MODELS, build_model, model_from_config
from eoseg.models.fuse import fold_batchnorm
from eoseg.models.pretrained import recorded_train_tiles
from eoseg.models.resnet import RESNETS
from eoseg.models.unetformer import TransformerBlock
from eoseg.recipe import make_loss, make_optimizer
from eoseg.train import load_resume_checkpoint, supervised_loss
from eoseg.weights import load_weights, save_safetensors
from eoseg.weights_record import weights_record

TINY = 0.125
NEW_MODELS = ["unet", "unetformer"]
NDSM = {"pattern": load_config().NDSM_PATTERN, "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]}
# the sample's IRRG image as 1, 4 (+ nDSM) and 5 (+ nDSM, NDVI) input bands
BAND_SETTINGS = {
    1: {"BANDS": [1], "BAND_NAMES": ["IR"], "NORM_MEAN": [0.0], "NORM_STD": [255.0]},
    4: {"EXTRA_SOURCES": [NDSM]},
    5: {"EXTRA_SOURCES": [NDSM, {"derived": "ndvi"}]},
}


def tiny(name: str, bands: int, encoder: str = "resnet18", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, bands, 6, TINY, encoder=encoder)


@pytest.mark.parametrize("encoder", list(RESNETS))
@pytest.mark.parametrize("bands", [1, 4, 5])
@pytest.mark.parametrize("name", NEW_MODELS)
def test_any_band_count_and_encoder(name, bands, encoder):
    model = tiny(name, bands, encoder).eval()
    with torch.no_grad():
        y = model(torch.randn(2, bands, 64, 96))
    assert y.shape == (2, 6, 64, 96) and torch.isfinite(y).all()
    assert model.encoder.conv1.in_channels == bands and model.encoder_name == encoder


@pytest.mark.parametrize("size", [(32, 32), (64, 160), (80, 48)])
def test_unetformer_takes_maps_smaller_than_and_not_multiples_of_its_window(size):
    """At 1/32 of 32 px the map is 1 x 1, an eighth of the 8 x 8 attention window."""
    model = randomise_batch_norm(tiny("unetformer", 3)).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, 6, *size) and torch.isfinite(y).all()


def reference_window_attention(attention, x: torch.Tensor) -> torch.Tensor:
    """Window attention pixel by pixel: each pixel attends to the real pixels of its window only."""
    ws, heads = attention.window, attention.heads
    channels, height, width = x.shape[1:]
    q, k, v = attention.qkv(x)[0].reshape(3, heads, channels // heads, height, width)
    table = attention.relative_position_bias_table
    out = torch.zeros(heads, channels // heads, height, width)
    for row in range(height):
        for col in range(width):
            top, left = row - row % ws, col - col % ws
            keys = [(r, c) for r in range(top, min(top + ws, height)) for c in range(left, min(left + ws, width))]
            rows, cols = zip(*keys)
            rows, cols = list(rows), list(cols)
            # relative position (row - r, col - c), each shifted by ws - 1 into 0..2ws-2
            bias = table[[(row - r + ws - 1) * (2 * ws - 1) + (col - c + ws - 1) for r, c in keys]].T  # heads, keys
            dots = torch.einsum("hd,hdk->hk", q[:, :, row, col], k[:, :, rows, cols]) * attention.scale + bias
            out[:, :, row, col] = torch.einsum("hk,hdk->hd", dots.softmax(-1), v[:, :, rows, cols])
    return out.reshape(1, channels, height, width)


@pytest.mark.parametrize("size", [(8, 8), (12, 20), (3, 5)])
def test_window_attention_reads_the_real_pixels_of_each_window_only(size):
    """Padded maps: the padding is masked out of the attention, not attended to as zeros."""
    torch.manual_seed(0)
    attention = TransformerBlock(16).attn.eval()
    torch.nn.init.normal_(attention.relative_position_bias_table)
    x = torch.randn(1, 16, *size)
    with torch.no_grad():
        torch.testing.assert_close(attention.window_attention(x), reference_window_attention(attention, x),
                                   rtol=1e-4, atol=1e-5)


def test_unetformer_returns_its_auxiliary_scores_in_training_only():
    model = tiny("unetformer", 4).train()
    final, auxiliary = model(torch.randn(2, 4, 64, 64))
    assert final.shape == auxiliary.shape == (2, 6, 64, 64)
    model.eval()
    with torch.no_grad():
        assert isinstance(model(torch.randn(1, 4, 64, 64)), torch.Tensor)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    labels = torch.randint(0, 6, (2, 64, 64))
    model.train()
    torch.manual_seed(0)
    outputs = model(torch.randn(2, 4, 64, 64))
    main_only = supervised_loss(criterion, outputs, labels, 0.0)
    weighted = supervised_loss(criterion, outputs, labels, 0.4)
    assert weighted.item() == pytest.approx(main_only.item() + 0.4 * criterion(outputs[1], labels).item(), rel=1e-5)


def test_a_few_steps_lower_the_loss(tiny_cfg):
    criterion = make_loss(tiny_cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 4, 64, 64, generator=gen)
    labels = (x[:, 3] > 0.5).long()
    for name in NEW_MODELS:
        model = tiny(name, 4).train()
        optimizer = make_optimizer(tiny_cfg.replace(BASE_LR=0.05), model)
        losses = []
        for _ in range(12):
            loss = supervised_loss(criterion, model(x), labels, 1.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0], (name, losses)


def test_encoder_and_decoder_parameters_partition_all():
    for name in NEW_MODELS:
        model = tiny(name, 3)
        encoder = {id(p) for p in model.encoder_parameters()}
        decoder = [p for p in model.decoder_parameters()]
        assert encoder == {id(p) for p in model.encoder.parameters()}
        assert not encoder & {id(p) for p in decoder}
        assert len(encoder) + len(decoder) == len(list(model.parameters()))


def test_unet_decoder_hands_the_upsampling_a_dense_gradient_in_its_layout(monkeypatch):
    """The upsampled features' gradient, a channel slice of the joined one, arrives dense in their layout."""
    upsampled_gradients = []
    interpolate = torch.nn.functional.interpolate

    def recording_interpolate(*args, **kwargs):
        out = interpolate(*args, **kwargs)
        out.register_hook(upsampled_gradients.append)
        return out
    monkeypatch.setattr(torch.nn.functional, "interpolate", recording_interpolate)
    block = tiny("unet", 3).decoder[1]
    skip_channels = block.conv1[0].in_channels // 3
    for layout in (torch.channels_last, torch.contiguous_format):
        block.to(memory_format=layout)
        x = torch.randn(2, 2 * skip_channels, 4, 5).contiguous(memory_format=layout).requires_grad_(True)
        skip = torch.randn(2, skip_channels, 8, 10).contiguous(memory_format=layout)
        block(x, skip.shape[-2:], skip).sum().backward()
        assert upsampled_gradients.pop().is_contiguous(memory_format=layout)


def test_unet_gradients_are_the_same_in_both_layouts():
    model = tiny("unet", 3)
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 6, (2, 64, 64))
    gradients = []
    for layout in (torch.contiguous_format, torch.channels_last):
        model.zero_grad()
        model.to(memory_format=layout)
        torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=layout)), labels).backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    for contiguous, channels_last in zip(*gradients):
        torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- inference rewrites, export, records
@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
@pytest.mark.parametrize("bands", [1, 4, 5])
@pytest.mark.parametrize("name", NEW_MODELS)
def test_folding_keeps_the_output(name, bands, encoder):
    model = randomise_batch_norm(tiny(name, bands, encoder)).eval()
    x = torch.randn(2, bands, 64, 96)
    folded = fold_batchnorm(model, fuse_relu=True)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(folded(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-4)
    # every batch norm after a convolution is folded; a transformer block's two pre-normalisations stay
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert left == 2 * sum(isinstance(m, TransformerBlock) for m in model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > left + 20  # the original is untouched


def config_for(tiny_cfg, name: str, bands: int, **extra):
    return tiny_cfg.replace(MODEL=name, MODEL_WIDTH=TINY, **BAND_SETTINGS[bands], **extra)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_weights_record_the_encoder_and_round_trip(name, tiny_cfg, tmp_path):
    cfg = config_for(tiny_cfg, name, 4, ENCODER="resnet34")
    model = randomise_batch_norm(model_from_config(cfg)).eval()
    checkpoint = save_checkpoint(tmp_path / "m.pt", cfg, model, iteration=0)
    loaded, payload = load_model(checkpoint, cfg.replace(ENCODER="resnet18"))  # the record, not the config, builds it
    assert payload["model"] == {"name": name, "in_channels": 4, "num_classes": 6, "width": TINY, "encoder": "resnet34"}
    assert type(loaded) is MODELS[name] and loaded.encoder_name == "resnet34"
    safetensors = save_safetensors(tmp_path / "m.safetensors", model,
                                   weights_record(model, payload["signature"], False, "test"))
    from_safetensors, _ = load_weights(safetensors, cfg)
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
        torch.testing.assert_close(from_safetensors.eval()(x), model(x))
    with pytest.raises(EosegError, match="ENCODER='resnet34', but the config has 'resnet18'"):
        load_resume_checkpoint(checkpoint, cfg.replace(ENCODER="resnet18"))


@pytest.mark.parametrize("name, bands", [("unet", 5), ("unetformer", 4)])
def test_export_onnx_script_matches_pytorch(name, bands, tiny_cfg, tmp_path):
    from eoseg.onnx_engine import OnnxModel

    cfg = config_for(tiny_cfg, name, bands)
    model = randomise_batch_norm(model_from_config(cfg)).eval()
    weights = save_checkpoint(tmp_path / "m.pt", cfg, model, iteration=0)
    overrides = {"MODEL": name, "MODEL_WIDTH": TINY, **BAND_SETTINGS[bands]}
    out = tmp_path / "m.onnx"
    result = run_script("export_onnx.py", str(weights), "--out", str(out), *as_arguments(overrides))
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime matches PyTorch" in result.stdout
    exported = OnnxModel(out, str(out))
    for shape in [(2, bands, 64, 96), (1, bands, 160, 32)]:  # another size than the script's check
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- through the scripts
@pytest.mark.parametrize("name, encoder, bands", [("unet", "resnet18", 1), ("unetformer", "resnet18", 4),
                                                  ("unet", "resnet50", 5)])
def test_trains_and_labels_by_streaming(name, encoder, bands, sample_root, tmp_path):
    """training.py then inference.py in blocks shorter than the tile, as a user runs them."""
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "MODEL": name, "ENCODER": encoder,
                 **BAND_SETTINGS[bands], "TRAIN_SOURCE": "tiles", "ITERATIONS": 3, "MODEL_WIDTH": 0.0625,
                 "VAL_EVERY": 0, "INFER_BLOCK_ROWS": 70}
    trained = run_script("training.py", *as_arguments(overrides))
    assert trained.returncode == 0, trained.stderr
    model, payload = load_model(tmp_path / "model.pt", make_tiny_config(tmp_path, **overrides))
    assert type(model) is MODELS[name] and payload["model"]["in_channels"] == bands
    assert payload["model"]["encoder"] == encoder
    labelled = run_script("inference.py", "--tiles", "4", *as_arguments(overrides))
    assert labelled.returncode == 0, labelled.stderr
    (labels_path,) = (tmp_path / "inference").glob("*_labels.tif")
    with rasterio.open(labels_path) as labels:
        assert (labels.width, labels.height) == (TINY_TILE_SIZE, TINY_TILE_SIZE)
        assert labels.read(1).max() < 6
    report = json.loads((tmp_path / "inference" / "metrics.json").read_text())
    assert report["overall"]["pixels"] > 0


def test_training_starts_from_a_torchvision_resnet_file(sample_root, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(fake_resnet_state("resnet18"), path)
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "MODEL": "unetformer",
                 **BAND_SETTINGS[4], "TRAIN_SOURCE": "tiles", "ITERATIONS": 1, "SNAPSHOT_EVERY": 1, "MODEL_WIDTH": 1.0,
                 "VAL_EVERY": 0, "ENCODER_WEIGHTS": str(path)}
    trained = run_script("training.py", *as_arguments(overrides))
    assert trained.returncode == 0, trained.stderr
    assert f"{path}: resnet18 weights (torchvision's layer names) without prefix" in trained.stdout
    assert "first layer adapted from 3 to 4 bands" in trained.stdout


def test_weights_started_from_eoseg_weights_record_the_tiles_those_saw(sample_root, tmp_path, capsys):
    """Fine-tuned from weights trained on tile 4, a model scoring tile 4 is warned of it, as the weights were."""
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "MODEL": "unet", "MODEL_WIDTH": 1.0,
                 "TRAIN_SOURCE": "tiles", "ITERATIONS": 1, "SNAPSHOT_EVERY": 1, "VAL_EVERY": 0, "WRITE_PREVIEW": False}
    earlier_cfg = make_tiny_config(tmp_path, **{**overrides, "TRAIN_IDS": ["4"]})
    earlier = save_checkpoint(tmp_path / "earlier.pt", earlier_cfg, model_from_config(earlier_cfg), iteration=1)
    trained = run_script("training.py", *as_arguments({**overrides, "ENCODER_WEIGHTS": str(earlier)}))
    assert trained.returncode == 0, trained.stderr
    assert "tensors loaded into the encoder" in trained.stdout
    _, payload = load_model(tmp_path / "model.pt", make_tiny_config(tmp_path, **overrides))
    assert payload["signature"]["inherited_train_tiles"] == ["4"] and "4" not in payload["signature"]["train_tiles"]
    labelled = run_script("inference.py", "--tiles", "4", *as_arguments(overrides))
    assert labelled.returncode == 0, labelled.stderr
    assert "started from weights (ENCODER_WEIGHTS or INIT_WEIGHTS) trained on tiles 4 (as they record)" in labelled.stderr
    plain = tmp_path / "resnet18.pth"
    torch.save(fake_resnet_state("resnet18"), plain)
    assert recorded_train_tiles(plain) == []  # a published state dict records no tiles


def test_eoseg_weights_as_encoder_weights_give_each_band_the_filter_of_its_name(tmp_path):
    """Weights trained on IR, R, G started a G, R, IR config's encoder band by position (G got IR's filter): now by
    name; a band they do not know starts at 0, and with no name in common the position rule stays, said."""
    from eoseg.models.encoder_weights import init_encoder_weights

    earlier_cfg = make_tiny_config(tmp_path, MODEL="unet", MODEL_WIDTH=1.0)  # bands IR, R, G
    torch.manual_seed(0)
    earlier = save_checkpoint(tmp_path / "earlier.pt", earlier_cfg, model_from_config(earlier_cfg), iteration=1)
    trained = torch.load(earlier, weights_only=True)["state_dict"]["encoder.conv1.weight"]
    cases = {("G", "R", "IR"): ([2, 1, 0], "matched by name to G, R, IR"),
             ("R", "G", "B", "IR"): ([1, 2, None, 0], "matched by name to R, G, B, IR (B new: starting at 0)"),
             # what the names name: NIR is IR, Red is R (review: NIR started at 0, IR's filter left out)
             ("Red", "Green", "NIR"): ([1, 2, 0], "matched by name to Red, Green, NIR")}
    for names, (sources, said) in cases.items():
        cfg = make_tiny_config(tmp_path, MODEL="unet", MODEL_WIDTH=1.0, BANDS=list(range(1, len(names) + 1)),
                               BAND_NAMES=list(names), NORM_MEAN=[0.0] * len(names), NORM_STD=[255.0] * len(names))
        model = model_from_config(cfg)
        assert said in init_encoder_weights(model, earlier, cfg.stacked_band_names)
        for band, source in enumerate(sources):
            expected = torch.zeros_like(trained[:, 0]) if source is None else trained[:, source]
            assert torch.equal(model.encoder.conv1.weight.data[:, band], expected), (names, band)
    other = make_tiny_config(tmp_path, MODEL="unet", MODEL_WIDTH=1.0, BAND_NAMES=["B1", "B2", "B3"])
    said = init_encoder_weights(model_from_config(other), earlier, other.stacked_band_names)
    assert "trained on bands IR, R, G and the config reads B1, B2, B3, none of the same name: its first layer is " \
           "matched to them by position" in said


@pytest.mark.faults
@pytest.mark.parametrize("name", NEW_MODELS)
def test_training_refuses_a_mismatched_encoder_file(name, sample_root, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(fake_resnet_state("resnet18"), path)
    overrides = {**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "MODEL": name,
                 "TRAIN_SOURCE": "tiles", "ENCODER_WEIGHTS": str(path)}  # MODEL_WIDTH 0.125: too narrow
    result = run_script("training.py", *as_arguments(overrides))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "conv1.weight has shape (64, 3, 7, 7) but encoder.conv1.weight needs (8, 3, 7, 7)" in errors[0]


@pytest.mark.faults
def test_config_names_the_renamed_and_refuses_an_unknown_encoder():
    with pytest.raises(EosegError, match="unknown config name VGG16_BN_WEIGHTS; it is now called ENCODER_WEIGHTS"):
        load_config(overrides=["VGG16_BN_WEIGHTS=vgg.pth"])
    with pytest.raises(EosegError, match="ENCODER must be one of resnet18, resnet34, resnet50, got 'resnet101'"):
        load_config(overrides=["ENCODER=resnet101"])
