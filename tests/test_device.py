"""eoseg.device: DEVICE, torchrun's variables and process groups; and the package's imports flow one way."""

from __future__ import annotations

import ast

import pytest
import torch

from eoseg.device import Processes, distributed_rank, process_device, process_group, resolve_device
from eoseg.errors import EosegError

from .conftest import ROOT

TORCHRUN = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EosegError, match="is not a device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EosegError, match="no CUDA GPU is available; use DEVICE=cpu"):
            resolve_device("cuda:1")


def test_processes_read_torchrun_variables(monkeypatch):
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    alone = Processes.from_environment()
    assert alone == Processes(0, 0, 1) and alone.is_main and not alone.distributed
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    job = Processes.from_environment()
    assert job == Processes(rank=3, local_rank=1, world_size=4) and job.distributed and not job.is_main
    assert process_device("cpu", job) == torch.device("cpu")  # CPU processes share the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_each_torchrun_process_takes_the_gpu_of_its_local_rank():
    job = Processes(rank=3, local_rank=1, world_size=4)
    assert process_device("cuda", job) == torch.device("cuda", 1)
    with pytest.raises(EosegError, match="under torchrun: use DEVICE=cuda"):
        process_device("cuda:0", job)


def test_without_torchrun_no_process_group_is_joined(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group("cpu") as (processes, device):
        assert processes == Processes() and device == torch.device("cpu")
        assert not torch.distributed.is_initialized()
    assert distributed_rank() == (0, 1) and not torch.distributed.is_initialized()


def package_imports() -> dict[str, set[str]]:
    """Module -> the eoseg modules it imports anywhere in its source (lazy imports in functions too)."""
    modules = {}
    for path in (ROOT / "eoseg").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "eoseg":
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {module for module in found if module in modules and module != name}
    return graph


def test_the_package_has_no_import_loop():
    graph = package_imports()
    assert "eoseg.weights" not in graph["eoseg.onnx_engine"]  # the loop there once
    assert not {"eoseg.train", "eoseg.data", "eoseg.lmdb_store"} & graph["eoseg.infer"]  # inference needs no training
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            assert state.get(imported) != "open", "import loop: " + " -> ".join(path[path.index(imported):] + [imported])
            if imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
