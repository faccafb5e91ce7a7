"""eoseg.weights: every weights format, loaded safely and checked against the config."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from eoseg.caffe.files import write_caffemodel
from eoseg.caffe.segnet import segnet_to_layers
from eoseg.checkpoint import save_checkpoint
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.normalization import Normalization
from eoseg.weights import load_weights, read_weights, save_safetensors

from .conftest import run_script
from .test_checkpoint import _Payload, trained_like_model
from .test_cli import assert_one_line_error

TINY = ["MODEL=segnet", "MODEL_WIDTH=0.125"]
FIVE_CLASSES = [
    "CLASS_NAMES=['impervious surfaces', 'building', 'low vegetation', 'tree', 'car']",
    "PALETTE=[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]]",
]


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def files(tmp_path_factory, cfg):
    """The same tiny network as an eoseg checkpoint, its safetensors conversion, and a Caffe model."""
    folder = tmp_path_factory.mktemp("weights")
    model = trained_like_model(cfg, seed=2)
    checkpoint = save_checkpoint(folder / "model.pt", cfg, model, iteration=3)
    converted, record = read_weights(checkpoint, cfg)
    safetensors = save_safetensors(folder / "model.safetensors", converted, record)
    caffe = write_caffemodel(folder / "model.caffemodel", segnet_to_layers(model, moving_average_factor=3.0))
    return {"model": model, "pt": checkpoint, "safetensors": safetensors, "caffemodel": caffe}


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_checkpoint_and_safetensors_give_the_trained_network(files, cfg):
    x = torch.randn(2, 3, 32, 64)
    expected = _outputs(files["model"], x)
    for kind in ("pt", "safetensors"):
        model, normalization = load_weights(files[kind], cfg)
        assert not model.training
        assert normalization == Normalization.from_config(cfg)
        torch.testing.assert_close(_outputs(model, x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_weights_damaged_in_place_are_refused(files, cfg, tmp_path, kind):
    """64 bytes flipped inside the tensors: torch.load read its zip unchecked and safetensors holds no checksum, so the
    damaged weights labelled, exit 0, other labels (review). torch's CRCs are checked, and eoseg's safetensors carry a
    digest of their tensors; older files without it are read as before."""
    import shutil

    from eoseg.weights import TENSORS_SHA256_KEY

    damaged = tmp_path / f"damaged.{kind}"
    shutil.copy(files[kind], damaged)
    content = bytearray(damaged.read_bytes())
    middle = len(content) // 2
    content[middle:middle + 64] = bytes(255 - b for b in content[middle:middle + 64])
    damaged.write_bytes(bytes(content))
    with pytest.raises(EosegError, match=rf"{damaged.name}: damaged.*(checksum|fails the checksum)"):
        load_weights(damaged, cfg)
    if kind == "pt":  # torch's save without CRCs (compute_crc32 off): nothing to check, read as it is (code review)
        from torch.utils.serialization import config as serialization

        model = load_weights(files["pt"], cfg)[0]
        saved = serialization.save.compute_crc32
        serialization.save.compute_crc32 = False
        try:
            torch.save({"weights": model.state_dict()}, tmp_path / "no_crc.pt")
        finally:
            serialization.save.compute_crc32 = saved
        from eoseg.checkpoint import safe_torch_load

        assert "weights" in safe_torch_load(tmp_path / "no_crc.pt", "state dict")
    if kind == "safetensors":  # a file written before the digest: no check
        from safetensors import safe_open

        with safe_open(str(files[kind]), framework="pt") as file:
            metadata, tensors = file.metadata(), {key: file.get_tensor(key) for key in file.keys()}
        assert TENSORS_SHA256_KEY in metadata
        del metadata[TENSORS_SHA256_KEY]
        older = tmp_path / "older.safetensors"
        save_file(tensors, str(older), metadata=metadata)
        load_weights(older, cfg)


def test_safetensors_records_what_the_weights_were_made_with(files):
    with open(files["safetensors"], "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))  # the format: length, then JSON
    record = json.loads(header["__metadata__"]["eoseg"])
    assert record["model"] == {"name": "segnet", "in_channels": 3, "num_classes": 6, "width": 0.125}
    assert record["signature"]["band_names"] == ["IR", "R", "G"] and record["imposed_normalization"] is False
    assert record["origin"] == "model.pt"


@pytest.mark.parametrize("kind", ["pt", "safetensors", "caffemodel"])
def test_other_classes_refused(files, kind):
    five = load_config(overrides=TINY + FIVE_CLASSES + ["DATASET=vaihingen"])
    with pytest.raises(EosegError, match=r"trained for 6 classes, but the config has 5"):
        load_weights(files[kind], five)


@pytest.mark.parametrize("override,field", [("BAND_NAMES=['R', 'G', 'B']", "band_names"), ("NORM_MEAN=[10.0, 0.0, 0.0]", "normalization")])
def test_safetensors_checked_like_checkpoints(files, override, field):
    with pytest.raises(EosegError, match=rf"{field} ="):
        load_weights(files["safetensors"], load_config(overrides=TINY + [override]))


def test_caffe_weights_impose_their_normalisation(tmp_path, files):
    cfg = load_config(overrides=TINY + ["NORM_MEAN=[5.0, 5.0, 5.0]"])  # any config normalisation
    model, normalization = load_weights(files["caffemodel"], cfg, caffe_mean="1,2,3")
    assert normalization == Normalization((1.0, 2.0, 3.0), (1.0, 1.0, 1.0), (2, 1, 0))
    # converted to safetensors, the imposed normalisation travels with the weights
    converted = save_safetensors(tmp_path / "caffe.safetensors", *read_weights(files["caffemodel"], cfg, caffe_mean="1,2,3"))
    other_cfg = load_config(overrides=TINY)
    again, again_normalization = load_weights(converted, other_cfg)
    assert again_normalization == normalization
    # a .caffemodel says nothing of how its labels were read or of its patches: not recorded as the converting config's
    signature = read_weights(converted, other_cfg)[1]["signature"]
    assert not {"label_values", "label_tolerance", "patch_size", "bands"} & set(signature)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(_outputs(again, x), _outputs(model, x))
    # everything else is still checked
    with pytest.raises(EosegError, match="band_names ="):
        load_weights(converted, load_config(overrides=TINY + ["BAND_NAMES=['R', 'G', 'B']"]))


def test_caffe_mean_pixel_must_fit(files, cfg):
    with pytest.raises(EosegError, match="do not record the mean pixel"):
        load_weights(files["caffemodel"], cfg)  # DATASET=sample: no published mean pixel
    with pytest.raises(EosegError, match="mean pixel has 2 values but the network takes 3 bands"):
        load_weights(files["caffemodel"], cfg, caffe_mean=[1.0, 2.0])
    with pytest.raises(EosegError, match="applies to .caffemodel weights only"):
        load_weights(files["pt"], cfg, caffe_mean="vaihingen_irrg")


def test_code_in_a_weights_file_never_runs(tmp_path, files, cfg):
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pt"
    torch.save({**torch.load(files["pt"], weights_only=True), "extra": _Payload(marker)}, evil)
    with pytest.raises(EosegError, match="refused to load this weights file"):
        load_weights(evil, cfg)
    # a pickle disguised as safetensors is not even parsed as one: the format has no code to run
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(EosegError, match="not a readable safetensors file"):
        load_weights(disguised, cfg)
    assert not marker.exists(), "loading a weights file ran code"


def test_foreign_safetensors_and_unknown_formats_refused(tmp_path, files, cfg):
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in files["model"].state_dict().items()}, str(plain))
    with pytest.raises(EosegError, match="no eoseg record.*convert_weights.py"):
        load_weights(plain, cfg)
    with pytest.raises(EosegError, match=r"unknown weights format '.h5'"):
        load_weights(tmp_path / "model.h5", cfg)
    with pytest.raises(EosegError, match="weights file not found"):
        load_weights(tmp_path / "nope.safetensors", cfg)


def test_convert_weights_script(tmp_path, files):
    out = tmp_path / "out" / "vaihingen.safetensors"
    result = run_script("convert_weights.py", str(files["caffemodel"]), "--out", str(out), "DATASET=vaihingen", *TINY)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "bands reordered [2, 1, 0], mean [81.29, 81.93, 120.9]" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["vaihingen.safetensors", "vaihingen.safetensors.config.json"]
    _, normalization = load_weights(out, load_config(overrides=TINY + ["DATASET=vaihingen"]))
    assert normalization.mean == (81.29, 81.93, 120.90)
    beside = out.with_name(out.name + ".config.json")  # safetensors' own 0600 gone: the permissions of every output
    assert out.stat().st_mode & 0o777 == beside.stat().st_mode & 0o777
    written = out.read_bytes()
    assert_one_line_error(run_script("convert_weights.py", str(files["pt"]), "--out", str(out), *TINY),
                          "already exists; pass --force to replace it")
    assert out.read_bytes() == written

    help_text = run_script("convert_weights.py", "--help")
    assert help_text.returncode == 0 and "--caffe-mean" in help_text.stdout and "KEY=VALUE" in help_text.stdout
    assert_one_line_error(run_script("convert_weights.py", str(files["caffemodel"]), "--out", str(out), "--force", *TINY),
                          "do not record the mean pixel")
    assert_one_line_error(run_script("convert_weights.py", str(files["pt"]), "--out", str(tmp_path / "w.pt"), *TINY),
                          "must be a .safetensors file")
