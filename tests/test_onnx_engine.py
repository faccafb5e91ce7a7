"""eoseg.onnx_engine and export_onnx.py: ONNX Runtime gives PyTorch's scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import export_onnx as export_onnx_script
from eoseg.checkpoint import save_checkpoint
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.onnx_engine import OnnxModel
from eoseg.predict import Predictor
from eoseg.weights import load_weights

from .conftest import run_script
from .test_checkpoint import trained_like_model
from .test_cli import assert_one_line_error

TINY = ["MODEL_WIDTH=0.125"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cfg):
    """A tiny trained-like network as a checkpoint, exported once by the script as a user would."""
    folder = tmp_path_factory.mktemp("onnx")
    model = trained_like_model(cfg, seed=7)
    checkpoint = save_checkpoint(folder / "model.pt", cfg, model, iteration=1)
    out = folder / "export" / "model.onnx"
    result = run_script("export_onnx.py", str(checkpoint), "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime matches PyTorch" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.config.json"]
    return model, out


@pytest.mark.parametrize("shape", [(2, 3, 64, 96), (1, 3, 128, 128)])
def test_onnx_runtime_matches_pytorch(exported, cfg, shape):
    model, path = exported
    engine, normalization = load_weights(path, cfg)
    assert isinstance(engine, OnnxModel) and normalization.record() == {"mean": [0.0] * 3, "std": [255.0] * 3}
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        expected = model(x)
    got = engine(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() < 1e-3
    assert expected.amax() - expected.amin() > 100 * 1e-3  # scores spread far beyond the tolerance


def test_onnx_model_stands_in_for_the_torch_model(exported, cfg):
    model, path = exported
    engine, normalization = load_weights(path, cfg)
    assert engine.eval() is engine and engine.to("cpu") is engine
    image = np.random.default_rng(0).integers(0, 256, (3, 100, 150), dtype=np.uint8)
    settings = dict(normalization=normalization, window=64, stride=32, batch_size=3)
    torch_scores = Predictor(model, **settings).scores(image)
    onnx_scores = Predictor(engine, **settings).scores(image)
    assert (onnx_scores - torch_scores).abs().max() < 1e-3


def test_sizes_that_are_not_multiples_of_32_are_refused(exported, cfg):
    engine, _ = load_weights(exported[1], cfg)
    with pytest.raises(EosegError, match="multiples of 32 px, got 64 x 80; set WINDOW"):
        engine(torch.zeros(1, 3, 64, 80))


def test_exported_file_is_checked_against_the_config(exported):
    five = load_config(overrides=TINY + [
        "CLASS_NAMES=['impervious surfaces', 'building', 'low vegetation', 'tree', 'car']",
        "PALETTE=[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]]",
    ])
    with pytest.raises(EosegError, match="trained for 6 classes, but the config has 5"):
        load_weights(exported[1], five)


def test_an_existing_export_is_replaced_only_with_force_and_a_passed_check(tmp_path, exported, monkeypatch, capsys):
    checkpoint = exported[1].parent.parent / "model.pt"
    out = shutil.copy(exported[1], tmp_path / "model.onnx")
    before = out.read_bytes()
    assert_one_line_error(run_script("export_onnx.py", str(checkpoint), "--out", str(out), *TINY),
                          f"{out} already exists; pass --force to replace it")
    with monkeypatch.context() as failing:  # an export ONNX Runtime disagrees with leaves the file as it was
        failing.setattr(export_onnx_script, "TOLERANCE", -1.0)
        with pytest.raises(EosegError, match="ONNX Runtime and PyTorch disagree by .*; not written"):
            export_onnx_script.main([str(checkpoint), "--out", str(out), "--force", *TINY])
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    export_onnx_script.main([str(checkpoint), "--out", str(out), "--force", *TINY])
    assert "ONNX Runtime matches PyTorch" in capsys.readouterr().out
    assert isinstance(load_weights(out, load_config(overrides=TINY))[0], OnnxModel)


def test_export_script_errors_are_one_line(tmp_path, exported):
    result = run_script("export_onnx.py", "--help")
    assert result.returncode == 0 and "--out FILE" in result.stdout and "KEY=VALUE" in result.stdout
    assert_one_line_error(run_script("export_onnx.py", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")),
                          "weights file not found")
    with pytest.raises(EosegError, match="already an ONNX file"):
        export_onnx_script.main([str(exported[1]), "--out", str(tmp_path / "m.onnx")])
    import inference as inference_script

    with pytest.raises(EosegError, match="--engine torch: .* is an ONNX file, which onnxruntime runs"):
        inference_script.main(["--engine", "torch", "--weights", str(exported[1]), "--out", str(tmp_path / "labels")])
    assert not (tmp_path / "labels").exists()
    not_onnx = tmp_path / "garbage.onnx"
    not_onnx.write_bytes(b"\x00garbage")
    with pytest.raises(EosegError, match="not a readable ONNX file"):
        load_weights(not_onnx, load_config(overrides=TINY))
    not_onnx.write_bytes(b"")  # protobuf reads an empty model from it, which has no record either
    with pytest.raises(EosegError, match="not a readable ONNX file: the file is empty"):
        load_weights(not_onnx, load_config(overrides=TINY))


class ExportFailed(Exception):
    """As the exporter reports a failure: its own type, its message coloured for a terminal."""


def test_an_export_stopped_by_ctrl_c_is_an_interruption_not_a_failure(cfg, monkeypatch):
    """The exporter wraps whatever stops it, Ctrl-C included, in its own error."""
    import eoseg.onnx_engine

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ExportFailed("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m") from err

    model = trained_like_model(cfg)
    monkeypatch.setattr(eoseg.onnx_engine.torch.onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        eoseg.onnx_engine.to_onnx(model)

    def failed(*args, **kwargs):
        raise ExportFailed("Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting")

    monkeypatch.setattr(eoseg.onnx_engine.torch.onnx, "export", failed)
    with pytest.raises(EosegError, match=r"^ONNX export failed: ExportFailed: Failed to export the model with "
                                         r"torch.export. This is step 1/3 of exporting$"):
        eoseg.onnx_engine.to_onnx(model)
