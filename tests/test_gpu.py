"""Device tests (marker ``gpu``): they run on a CUDA GPU and skip elsewhere; bench/gpu.sh runs them.

The last test runs bench/gpu.sh itself in its quick mode on whatever machine it is on, so
that every part of the GPU check is known to run before a GPU is at hand.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from eoseg.checkpoint import load_checkpoint
from eoseg.config import load_config
from eoseg.normalization import Normalization
from eoseg.predict import Predictor
from eoseg.train import Processes, Trainer

from .conftest import ROOT, as_arguments
from .test_checkpoint import trained_like_model
from .test_train import DISTRIBUTED_WORKER, initial_weights, lmdb_dir, overrides_for, read_log, script_environment  # noqa: F401

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
TINY = ["MODEL_WIDTH=0.125"]


@pytest.fixture(scope="module")
def model():
    return trained_like_model(load_config(overrides=TINY), seed=3)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(5).integers(0, 256, (3, 200, 176), dtype=np.uint8)


@pytest.mark.gpu
@needs_cuda
def test_predictor_on_the_gpu_matches_the_cpu(model, image):
    settings = dict(normalization=Normalization((0.0,) * 3, (255.0,) * 3), window=64, stride=32, batch_size=4)
    on_cpu = Predictor(model, device="cpu", **settings).scores(image)
    on_gpu = Predictor(model, device="cuda", **settings)
    scores = on_gpu.scores(image)
    assert scores.device.type == "cuda" and scores.dtype == torch.float32
    assert (scores.cpu() - on_cpu).abs().max() < 1e-3
    auto = Predictor(model, device="cuda", precision="auto", **settings)
    expected = "bfloat16" if torch.cuda.get_device_capability()[0] >= 8 else "float32"
    assert auto.precision == expected
    assert (auto.predict(image) == on_cpu.argmax(0).numpy()).mean() > 0.95


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_training_steps_with_channels_last(tiny_cfg, precision):
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    cfg = tiny_cfg.replace(TRAIN_SOURCE="tiles", ITERATIONS=4, LOG_EVERY=1, VAL_EVERY=2, PRECISION=precision,
                           CHANNELS_LAST=True, DEVICE="cuda")
    trainer = Trainer(cfg, Processes(), torch.device("cuda"), progress=False)
    assert trainer.scaler.is_enabled() == (precision == "float16")
    start = initial_weights(cfg)
    weights = trainer.run()
    rows = read_log(cfg.TRAIN_DIR)
    assert len(rows) == 4 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert rows[-1]["val_mean_f1"]
    state = load_checkpoint(weights)["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert not torch.equal(state["conv1_1.weight"], start["conv1_1.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP with NCCL needs 2 or more GPUs")
def test_ddp_with_nccl_on_every_gpu(sample_root, lmdb_dir, tmp_path):  # noqa: F811
    worker = tmp_path / "worker.py"
    worker.write_text(DISTRIBUTED_WORKER)
    gpus = torch.cuda.device_count()
    arguments = as_arguments(overrides_for(sample_root, lmdb_dir, tmp_path, ITERATIONS=3, LOG_EVERY=1, VAL_EVERY=3,
                                           DEVICE="cuda", PRECISION="auto"))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", str(worker),
         str(tmp_path), *arguments],
        cwd=ROOT, env=script_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(gpus)]
    assert all(r["world_size"] == gpus for r in ranks)
    for other in ranks[1:]:
        for name, value in ranks[0]["parameters"].items():
            assert torch.equal(value, other["parameters"][name]), f"{name} differs between processes"


@pytest.mark.gpu
@needs_cuda
def test_onnx_runtime_cuda_provider(model, image):
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    from eoseg.onnx_engine import OnnxModel

    engine = OnnxModel.from_module(model)
    assert engine.providers[0] == "CUDAExecutionProvider"
    settings = dict(normalization=Normalization((0.0,) * 3, (255.0,) * 3), window=64, stride=32, batch_size=4)
    torch_scores = Predictor(model, **settings).scores(image)
    assert (Predictor(engine, **settings).scores(image) - torch_scores).abs().max() < 1e-2


def test_gpu_check_runs_here_in_quick_mode(tmp_path):
    results = tmp_path / "results.txt"
    environment = {**script_environment(), "GPU_CHECK_QUICK": "1", "GPU_CHECK_WORK": str(tmp_path / "work"),
                   "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), str(results)], cwd=ROOT, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = results.read_text()
    for section in ("== machine", "== device tests", "== inference benchmark", "== training benchmark", "== done"):
        assert section in text, section
    assert "machine: " in text and "| training step, segnet, width 0.0625" in text and "naive" in text
    assert "network segnet (SegNet) width 0.0625" in text  # the method's network, not the config's default
    assert "| segnet, width 0.0625 | sgd | " in text  # the optimizer step, loop against fused
    if not torch.cuda.is_available():
        assert "no CUDA GPU: the device tests skip and the benchmarks run on the CPU" in text
        assert " passed" not in text.split("== device tests")[1].split("== inference")[0]  # every device test skipped
