"""eoseg.caffe: the protobuf wire format, Caffe's files, and the method's SegNet weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eoseg.caffe import wire
from eoseg.caffe.files import CaffeLayer, parse_prototxt, read_caffemodel, read_prototxt, repeated, write_caffemodel
from eoseg.caffe.segnet import (
    PUBLISHED_MEAN_PIXELS, caffe_normalization, mean_pixel_for, parse_mean_pixel, read_caffe_segnet,
    segnet_from_layers, segnet_to_layers,
)
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.weights import load_weights

from .conftest import SHARED
from .test_checkpoint import trained_like_model

LENET = SHARED / "caffe_lenet"
# the layers without weights that surround the method's convolutions in its Caffe files
WEIGHTLESS = [CaffeLayer("irrg_data", "Data"), CaffeLayer("pool1", "Pooling"), CaffeLayer("upsample1", "Upsample"),
              CaffeLayer("loss", "SoftmaxWithLoss")]


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=["MODEL_WIDTH=0.125", "DATASET=vaihingen"])


@pytest.fixture(scope="module")
def segnet(cfg):
    return trained_like_model(cfg, seed=4)


# ---------------------------------------------------------------- wire format
@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -2**63])
def test_varint_round_trip(value):
    encoded = wire.encode_varint(value)
    decoded, end = wire.read_varint(memoryview(encoded), 0)
    assert end == len(encoded)
    assert wire.as_signed64(decoded) == value
    assert len(encoded) == (10 if value < 0 else max(1, math.ceil(value.bit_length() / 7)))


def test_fields_of_every_wire_type():
    floats = np.array([1.5, -2.25, 3e-8], "<f4")
    message = (wire.varint_field(1, 150) + wire.string_field(2, "conv1_1") + wire.float_field(3, 0.5)
               + wire.packed_numbers_field(4, floats) + wire.unpacked_numbers_field(5, floats.astype("<f8")))
    fields = list(wire.iter_fields(message))
    assert [(f, t) for f, t, _ in fields] == [(1, 0), (2, 2), (3, 5), (4, 2)] + [(5, 1)] * 3
    assert fields[0][2] == 150 and bytes(fields[1][2]) == b"conv1_1"
    assert np.frombuffer(fields[2][2], "<f4")[0] == 0.5
    assert np.array_equal(np.frombuffer(fields[3][2], "<f4"), floats)
    assert [np.frombuffer(v, "<f8")[0] for _, _, v in fields[4:]] == floats.astype("<f8").tolist()


@pytest.mark.parametrize("broken,message", [
    (b"\x08", "truncated varint"),
    (b"\x12\x05ab", "runs past the end"),
    (b"\x0b\x00", "wire type 3"),
])
def test_malformed_messages_are_refused(broken, message):
    with pytest.raises(wire.WireFormatError, match=message):
        list(wire.iter_fields(broken))


# ---------------------------------------------------------------- a file written by Caffe
def _expected_lenet_shapes(net: dict) -> dict[str, list[tuple[int, ...]]]:
    """Blob shapes of the weighted layers, derived from the prototxt's input shape and layer parameters."""
    channels, height, width = repeated(repeated(net, "layer")[0]["input_param"]["shape"], "dim")[1:]
    shapes = {}
    for layer in repeated(net, "layer")[1:]:
        if layer["type"] == "Convolution":
            p = layer["convolution_param"]
            k, stride, pad = p["kernel_size"], p.get("stride", 1), p.get("pad", 0)
            shapes[layer["name"]] = [(p["num_output"], channels, k, k), (p["num_output"],)]
            channels = p["num_output"]
            height, width = ((height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1)
        elif layer["type"] == "Pooling":
            p = layer["pooling_param"]
            height, width = (-(-(height - p["kernel_size"]) // p["stride"]) + 1, -(-(width - p["kernel_size"]) // p["stride"]) + 1)
        elif layer["type"] == "InnerProduct":
            outputs = layer["inner_product_param"]["num_output"]
            shapes[layer["name"]] = [(outputs, channels * height * width), (outputs,)]
            channels, height, width = outputs, 1, 1
    return shapes


@pytest.mark.skipif(not LENET.is_dir(), reason="../shared/data/caffe_lenet is not present")
def test_lenet_written_by_caffe_matches_its_prototxt():
    net = read_prototxt(LENET / "lenet.prototxt")
    expected = _expected_lenet_shapes(net)
    assert expected == {
        "conv1": [(20, 1, 5, 5), (20,)], "conv2": [(50, 20, 5, 5), (50,)],
        "ip1": [(500, 800), (500,)], "ip2": [(10, 500), (10,)],
    }
    layers = read_caffemodel(LENET / "lenet_iter_10000.caffemodel")
    weighted = {layer.name: [b.shape for b in layer.blobs] for layer in layers if layer.blobs}
    assert weighted == expected
    types = {layer.name: layer.type for layer in layers}
    assert all(types[name] == layer["type"] for layer in repeated(net, "layer") if (name := layer["name"]) in weighted)
    # trained weights, not an empty shell: finite, varied, and the biases moved from their constant 0
    for layer in layers:
        for blob in layer.blobs:
            assert blob.dtype == np.float32 and np.isfinite(blob).all() and blob.std() > 0


# ---------------------------------------------------------------- prototxt
def test_prototxt_text_format():
    net = parse_prototxt('''
        name: "Net # not a comment"   # a comment
        input_dim: [1, 3]
        input_dim: 64
        layer { name: 'a\\'b' type: "Convolution" param { lr_mult: 0.5 } param: { lr_mult: 1e-1 }
                convolution_param < num_output: 0x10 bias_term: false > }
        layer { name: "pool" "1"; pooling_param { pool: MAX } include { phase: TEST } }
    ''')
    assert net["name"] == "Net # not a comment"
    assert net["input_dim"] == [1, 3, 64]  # list syntax and repetition are the same thing
    first, second = net["layer"]
    assert first["name"] == "a'b" and first["param"] == [{"lr_mult": 0.5}, {"lr_mult": 0.1}]
    assert first["convolution_param"] == {"num_output": 16, "bias_term": False}
    assert second == {"name": "pool1", "pooling_param": {"pool": "MAX"}, "include": {"phase": "TEST"}}
    assert repeated(second, "include") == [{"phase": "TEST"}] and repeated(second, "top") == []


@pytest.mark.parametrize("text,message", [
    ("layer { name: 'x' ", "line 1: unexpected end of file, expected '}'"),
    ("a: 1\nb 2", "line 2: expected ':' or '{'"),
    ("a: 1\n\n}", "line 3: expected a field name"),
    ("a: @", "unexpected character '@'"),
])
def test_prototxt_errors_name_the_line(text, message):
    with pytest.raises(EosegError, match=message):
        parse_prototxt(text, "net.prototxt")


# ---------------------------------------------------------------- writing and reading back
def test_legacy_v1_layout_unpacked_and_double_blobs(tmp_path):
    rng = np.random.default_rng(0)
    conv = CaffeLayer("conv1", "Convolution", (rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4)))
    ip = CaffeLayer("ip1", "InnerProduct", (rng.normal(size=(10, 36)).astype(np.float32),))
    for legacy in (False, True):
        for packed in (False, True):
            path = write_caffemodel(tmp_path / f"net_{legacy}_{packed}.caffemodel", [conv, CaffeLayer("relu", "ReLU"), ip],
                                    net_name="tiny", legacy=legacy, packed=packed)
            layers = read_caffemodel(path)
            assert [(l.name, l.type) for l in layers] == [("conv1", "Convolution"), ("relu", "ReLU"), ("ip1", "InnerProduct")]
            got = [b for layer in layers for b in layer.blobs]
            # the legacy format has 4-D shapes only, as Caffe itself reads them
            assert [b.shape for b in got] == ([(4, 3, 3, 3), (1, 1, 1, 4), (1, 1, 10, 36)] if legacy else [(4, 3, 3, 3), (4,), (10, 36)])
            for blob, original in zip(got, conv.blobs + ip.blobs):
                assert blob.dtype == np.float32  # double_data is read as float32, as Caffe's float nets do
                np.testing.assert_array_equal(blob.ravel(), original.astype(np.float32).ravel())


def _image_batch(seed: int = 0) -> torch.Tensor:
    """Raw 8-bit IRRG pixels, (N, 3, H, W)."""
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, 3, 64, 96), dtype=np.uint8))


def test_segnet_from_caffe_gives_the_original_outputs_preprocessing_included(tmp_path, segnet, cfg):
    path = write_caffemodel(tmp_path / "segnet.caffemodel", WEIGHTLESS + segnet_to_layers(segnet, moving_average_factor=37.5))
    model, normalization = load_weights(path, cfg)  # DATASET=vaihingen: the published mean pixel
    assert (model.in_channels, model.num_classes, model.width) == (3, 6, 0.125)
    assert normalization.band_order == (2, 1, 0) and normalization.std == (1.0, 1.0, 1.0)
    assert normalization.mean == PUBLISHED_MEAN_PIXELS["vaihingen_irrg"]

    raw = _image_batch()
    # what the method's Caffe net saw: bands reversed (BGR), mean pixel subtracted in that order, 0..255 scale
    caffe_input = raw.flip(1).float() - torch.tensor([81.29, 81.93, 120.90]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = segnet(caffe_input)
        got = model(normalization.apply(raw))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()
    # guard: without the band reversal the outputs differ, so the check above has teeth
    with torch.no_grad():
        unreversed = model(raw.float() - torch.tensor(normalization.mean).view(1, 3, 1, 1))
    assert not torch.allclose(unreversed, expected, rtol=1e-2, atol=1e-2)


def test_a_published_mean_pixel_is_refused_for_other_bands_than_its_own(tmp_path, segnet, cfg):
    """A .caffemodel records no bands: the published IR, R, G mean pixel given to an R, G, B config (Potsdam RGB) was
    taken, and a converted file recorded R, G, B; refused, unless the mean is given as the user's own numbers."""
    path = write_caffemodel(tmp_path / "segnet.caffemodel", WEIGHTLESS + segnet_to_layers(segnet))
    rgb = cfg.replace(BAND_NAMES=["R", "G", "B"])
    for mean in (None, "vaihingen_irrg", "potsdam_irrg"):
        with pytest.raises(EosegError, match=r"segnet.caffemodel: the mean pixel (vaihingen|potsdam)_irrg is that of IR, R, "
                                             r"G imagery, the bands these weights learned, but BAND_NAMES says R, G, B"):
            load_weights(path, rgb, mean)
    assert load_weights(path, rgb, "90, 90, 90")[1].mean == (90.0, 90.0, 90.0)
    assert load_weights(path, cfg.replace(BAND_NAMES=["NIR", "Red", "Green"]), "potsdam_irrg")[1].mean == \
        PUBLISHED_MEAN_PIXELS["potsdam_irrg"]  # the same bands, as GDAL and others spell them


def test_batch_norm_statistics_are_unscaled_by_the_stored_factor(segnet):
    layers = segnet_to_layers(segnet, moving_average_factor=999.0)
    bn = next(layer for layer in layers if layer.name == "conv2_1_bn")
    assert np.allclose(bn.blobs[0], segnet.conv2_1_bn.running_mean.numpy() * 999.0)
    model = segnet_from_layers(layers)
    for key, value in segnet.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-6, atol=1e-6)


def test_factor_zero_means_no_statistics_as_in_caffe(segnet):
    layers = [CaffeLayer(l.name, l.type, (l.blobs[0], l.blobs[1], np.zeros(1, np.float32))) if l.type == "BatchNorm" else l
              for l in segnet_to_layers(segnet)]
    model = segnet_from_layers(layers)
    # Caffe multiplies the sums by 0 when the factor is 0: mean 0, variance 0
    assert not model.conv1_1_bn.running_mean.any() and not model.conv1_1_bn.running_var.any()


def test_batch_norm_epsilon_of_the_file_is_honoured(cfg):
    reference = trained_like_model(cfg, seed=5)
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-2  # far from PyTorch's default, so a lost epsilon shows
    layers = [CaffeLayer(l.name, l.type, l.blobs, 1e-2) if l.type == "BatchNorm" else l for l in segnet_to_layers(reference)]
    model = segnet_from_layers(layers)
    assert model.conv1_1_bn.eps == 1e-5
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_legacy_shaped_vectors_map(segnet):
    # bias and statistics as legacy 4-D blobs (1, 1, 1, C), as pre-2015 Caffe stored them
    layers = [CaffeLayer(l.name, l.type, tuple(b.reshape(1, 1, 1, -1) if b.ndim == 1 else b for b in l.blobs))
              for l in segnet_to_layers(segnet)]
    torch.testing.assert_close(segnet_from_layers(layers).conv3_1.bias, segnet.conv3_1.bias)


def _without(layers, name):
    return [layer for layer in layers if layer.name != name]


def test_layers_that_do_not_fit_are_named(segnet):
    layers = segnet_to_layers(segnet)
    with pytest.raises(EosegError, match=r"layer conv3_2_scale \(Scale\) is missing"):
        segnet_from_layers(_without(layers, "conv3_2_scale"))
    extra = layers + [CaffeLayer("fc6", "InnerProduct", (np.zeros((4, 4), np.float32),))]
    with pytest.raises(EosegError, match=r"layer fc6 \(InnerProduct\) has weights with no place"):
        segnet_from_layers(extra)
    misshapen = [CaffeLayer(l.name, l.type, (l.blobs[0][:, :-1],) + l.blobs[1:]) if l.name == "conv2_2" else l for l in layers]
    with pytest.raises(EosegError, match=r"conv2_2 has a blob of shape \(16, 15, 3, 3\).*needs \(16, 16, 3, 3\)"):
        segnet_from_layers(misshapen)
    wrong_type = [CaffeLayer(l.name, "Deconvolution", l.blobs) if l.name == "conv4_1_D" else l for l in layers]
    with pytest.raises(EosegError, match="layer conv4_1_D is a Deconvolution"):
        segnet_from_layers(wrong_type)


def test_unreadable_files_are_one_clear_error(tmp_path, segnet):
    path = write_caffemodel(tmp_path / "segnet.caffemodel", segnet_to_layers(segnet))
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(EosegError, match="not a readable .caffemodel"):
        read_caffe_segnet(truncated)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(EosegError, match="no Caffe layers found"):
        read_caffemodel(empty)
    with pytest.raises(EosegError, match="Caffe model not found"):
        read_caffemodel(tmp_path / "nope.caffemodel")


# ---------------------------------------------------------------- preprocessing
def test_mean_pixel_sources():
    assert parse_mean_pixel("vaihingen_irrg") == (81.29, 81.93, 120.90)
    assert parse_mean_pixel("1, 2.5,3") == (1.0, 2.5, 3.0)
    for bad in ("vaihingen", "nan,nan,nan", "1,inf,3", ""):
        with pytest.raises(EosegError, match="comma-separated numbers"):
            parse_mean_pixel(bad)
    assert mean_pixel_for("vaihingen", "w.caffemodel") == PUBLISHED_MEAN_PIXELS["vaihingen_irrg"]
    with pytest.raises(EosegError, match="do not record the mean pixel.*--caffe-mean"):
        mean_pixel_for("potsdam", "w.caffemodel")
    normalization = caffe_normalization((10.0, 20.0, 30.0))
    raw = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)  # bands as read: IR, R, G
    assert normalization.apply(raw).flatten().tolist() == [3 - 10, 2 - 20, 1 - 30]
