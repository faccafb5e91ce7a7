"""The precision "auto" chooses, and where training and inference use and record it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eoseg import precision
from eoseg.checkpoint import save_checkpoint
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.infer import run_inference
from eoseg.models import build_model, model_from_config
from eoseg.normalization import Normalization
from eoseg.predict import Predictor
from eoseg.train import Processes, Trainer

AMX = {"fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx2", "avx512f", "avx512_bf16"}
AVX2_ONLY = {"fpu", "sse4_2", "avx2", "fma"}


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has the given flags."""
    def pretend(flags: set[str]) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: set(flags))
    return pretend


@pytest.mark.parametrize("flags,expected", [(AMX, "bfloat16"), (AVX512_BF16, "bfloat16"), (AVX2_ONLY, "float32")])
def test_auto_is_bfloat16_where_the_cpu_computes_it(cpu_with, flags, expected):
    cpu_with(flags)
    chosen, reason = precision.resolve_precision("auto", "cpu")
    assert chosen == expected
    assert reason.startswith("PRECISION=auto: the CPU has")
    for explicit in ("float32", "float16"):  # an explicit value wins on any CPU
        assert precision.resolve_precision(explicit, "cpu") == (explicit, f"PRECISION={explicit}")
    chosen, reason = precision.resolve_precision("bfloat16", "cpu")
    assert chosen == "bfloat16"
    if expected == "bfloat16":
        assert reason == "PRECISION=bfloat16"
    else:  # still bfloat16, with a word on its cost
        assert reason == ("PRECISION=bfloat16, though the CPU has neither amx_bf16 nor avx512_bf16: "
                          "emulated, many times slower than float32")


def test_this_machines_flags_are_read():
    with open("/proc/cpuinfo") as handle:
        text = handle.read()
    assert precision.native_bfloat16("cpu")[0] == ("amx_bf16" in text.split() or "avx512_bf16" in text.split())


def test_hardware_line_names_the_cpu_and_its_flags(cpu_with):
    cpu_with(AVX2_ONLY)
    line = precision.describe_hardware("cpu")
    assert precision.cpu_model() in line
    assert "avx2 yes" in line and "avx512_bf16 no" in line and "amx_bf16 no" in line and torch.__version__ in line


def test_cpu_model_gives_the_family_and_model_numbers(tmp_path, monkeypatch):
    listing = tmp_path / "cpuinfo"
    listing.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n"
                       "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 amx_bf16\n\n"
                       "processor\t: 1\nmodel name\t: another\n")
    fields = precision.cpuinfo(str(listing))
    assert fields["model"] == "207" and fields["model name"] == "Intel(R) Xeon(R) Processor"  # the first processor's
    assert precision.cpuinfo(str(tmp_path / "absent")) == {}
    monkeypatch.setattr(precision, "cpuinfo", lambda: fields)
    assert precision.cpu_model() == "Intel(R) Xeon(R) Processor, family 6 model 207"
    assert precision.cpu_flags() == {"fpu", "avx2", "amx_bf16"}


@pytest.mark.parametrize("override,message", [
    ("PRECISION=bf16", "PRECISION must be one of 'auto', 'float32', 'bfloat16', 'float16', got 'bf16'"),
    ("INFER_PRECISION=fp16", "INFER_PRECISION must be one of 'auto', 'float32', 'bfloat16', 'float16', got 'fp16'"),
    ("CHANNELS_LAST='yes'", "CHANNELS_LAST must be None"),
])
def test_bad_precisions_are_refused_with_the_config(override, message):
    with pytest.raises(EosegError, match=message):
        load_config(overrides=[override])


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("flags,setting,layout,expected", [
    (AMX, "auto", None, ("bfloat16", torch.channels_last)),
    (AVX2_ONLY, "auto", None, ("float32", torch.contiguous_format)),
    (AMX, "float32", None, ("float32", torch.contiguous_format)),
    (AMX, "auto", False, ("bfloat16", torch.contiguous_format)),
    (AVX2_ONLY, "float32", True, ("float32", torch.channels_last)),
])
def test_trainer_takes_the_resolved_precision_and_its_layout(tiny_cfg, cpu_with, capsys, flags, setting, layout, expected):
    cpu_with(flags)
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", VAL_EVERY=0, PRECISION=setting, CHANNELS_LAST=layout)
    trainer = Trainer(cfg, Processes(), torch.device("cpu"), progress=True)
    assert (trainer.precision, trainer.memory_format) == expected
    assert trainer.autocast_dtype == (None if expected[0] == "float32" else torch.bfloat16)
    assert not trainer.scaler.is_enabled()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("precision:")]
    assert printed == [f"precision: {expected[0]} ({precision.resolve_precision(setting, 'cpu')[1]}); memory layout: "
                       f"{'channels_last' if expected[1] == torch.channels_last else 'contiguous'}"]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32


# ---------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("segnet", 3, 6, 0.125)


def test_predictor_auto_follows_the_cpu(tiny_model, cpu_with):
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    cpu_with(AMX)
    chosen = Predictor(tiny_model, norm, 32, 16, 4, precision="auto")
    assert chosen.precision == "bfloat16" and chosen.autocast is None  # bfloat16 weights and activations, no autocast
    assert {p.dtype for p in chosen.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}  # the caller's model is left as it was
    cpu_with(AVX2_ONLY)
    chosen = Predictor(tiny_model, norm, 32, 16, 4, precision="auto")
    assert chosen.precision == "float32" and {p.dtype for p in chosen.model.parameters()} == {torch.float32}


def test_float16_runs_under_autocast(tiny_model):
    chosen = Predictor(tiny_model, Normalization((0.0,) * 3, (255.0,) * 3), 32, 16, 4, precision="float16")
    assert chosen.autocast == torch.float16 and {p.dtype for p in chosen.model.parameters()} == {torch.float32}


def test_bfloat16_scores_are_blended_in_float32(tiny_model):
    image = np.random.default_rng(1).integers(0, 255, (3, 80, 72), dtype=np.uint8)
    norm = Normalization((0.0,) * 3, (255.0,) * 3)
    scores = Predictor(tiny_model, norm, 32, 16, 4, precision="bfloat16").scores(image)
    reference = Predictor(tiny_model, norm, 32, 16, 4, precision="float32").scores(image)
    assert scores.dtype == torch.float32
    assert (scores.argmax(0) == reference.argmax(0)).float().mean() > 0.9
    # a blend of bfloat16 window scores: more distinct values than bfloat16's 8-bit mantissa holds near 1
    assert not torch.equal(scores, scores.bfloat16().float())


class ExportedModel:
    """Stands in for an engine that runs an exported model (not a torch module)."""

    num_classes = 2

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, x):
        return torch.cat([x[:, :1], -x[:, :1]], dim=1)


def test_engines_other_than_torch_run_in_float32(cpu_with):
    cpu_with(AMX)
    norm = Normalization((0.0,), (1.0,))
    assert Predictor(ExportedModel(), norm, 32, 16, 4, precision="auto").precision == "float32"
    with pytest.raises(EosegError, match="INFER_PRECISION=bfloat16 applies to torch models"):
        Predictor(ExportedModel(), norm, 32, 16, 4, precision="bfloat16")


def test_inference_records_the_precision_that_ran(tiny_cfg, capsys):
    torch.manual_seed(0)
    weights = save_checkpoint(tiny_cfg.MODEL_FILE, tiny_cfg, model_from_config(tiny_cfg), iteration=0)
    cfg = tiny_cfg.replace(WRITE_PREVIEW=False, WRITE_COLOR=False)
    for setting in ("float32", "bfloat16"):
        out = Path(f"{cfg.INFER_DIR}-{setting}")
        run_inference(cfg.replace(INFER_PRECISION=setting), weights, out, ["4"], progress=True)
        assert any(line.startswith(f"precision: {setting} (INFER_PRECISION={setting}")
                   for line in capsys.readouterr().out.splitlines())
        assert json.loads((out / "metrics.json").read_text())["precision"] == setting
        record = json.loads((out / "top_mosaic_09cm_area4_record.json").read_text())
        assert record["made_with"]["precision"] == setting


@pytest.mark.parametrize("optimize", [True, False])
def test_bfloat16_leaves_the_callers_model_in_float32(tiny_model, optimize):
    image = np.random.default_rng(2).integers(0, 255, (3, 48, 48), dtype=np.uint8)
    predictor = Predictor(tiny_model, Normalization((0.0,) * 3, (255.0,) * 3), 32, 16, 4, precision="bfloat16",
                          optimize=optimize)
    assert predictor.scores(image).dtype == torch.float32
    assert {p.dtype for p in predictor.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in tiny_model.parameters()} == {torch.float32}
