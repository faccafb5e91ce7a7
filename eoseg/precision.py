"""Which floating-point precision a device computes in: the one place that decides "auto".

bfloat16 has float32's range with 8 bits of mantissa: networks train and label in it with
float32 master weights and float32 accumulated scores, at two to five times the speed where
the hardware computes it natively: CPUs with AMX (``amx_bf16``) or AVX-512-BF16
(``avx512_bf16``), CUDA GPUs of compute capability 8.0 or newer. Elsewhere bfloat16 is
emulated and slower than float32, so "auto" keeps float32 there.
"""

from __future__ import annotations

import os
import platform

import torch

from eoseg.errors import EosegError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either computes bfloat16 natively
CPU_REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what the benchmarks name


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo; empty elsewhere."""
    fields = {}
    try:
        with open(path) as handle:
            for line in handle:
                if not line.strip():  # the first processor's block ends
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; elsewhere what torch's cpuinfo detects)."""
    flags = cpuinfo().get("flags")
    if flags is not None:
        return set(flags.split())
    detected = {"avx2": torch.cpu._is_avx2_supported(), "avx512f": torch.cpu._is_avx512_supported(),
                "avx512_bf16": torch.cpu._is_avx512_bf16_supported(), "amx_bf16": torch.cpu._is_amx_tile_supported()}
    return {flag for flag, present in detected.items() if present}


def cpu_model() -> str:
    """The CPU's name, with its family and model numbers where known: they tell apart CPUs that
    share a name (virtual machines often report a bare "Intel(R) Xeon(R) Processor")."""
    info = cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        return f"{name}, family {info['cpu family']} model {info['model']}"
    return name


def native_bfloat16(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and why, in words."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) computes bfloat16"
        return False, f"{name} (compute capability {major}.{minor}) has no bfloat16 units"
    if device.type == "cpu":
        present = [flag for flag in CPU_BF16_FLAGS if flag in cpu_flags()]
        if present:
            return True, f"the CPU has {' and '.join(present)}"
        return False, f"the CPU has neither {' nor '.join(CPU_BF16_FLAGS)}"
    return False, f"no bfloat16 check for {device.type} devices"


def check_precision(setting: str, name: str) -> None:
    if setting not in PRECISIONS:
        raise EosegError(f"{name} must be one of {', '.join(map(repr, PRECISIONS))}, got {setting!r}")


def resolve_precision(setting: str, device: torch.device | str, name: str = "PRECISION") -> tuple[str, str]:
    """(precision, reason): ``setting`` itself unless it is "auto", which is bfloat16 where
    ``device`` computes it natively and float32 elsewhere."""
    check_precision(setting, name)
    if setting not in ("auto", "bfloat16"):
        return setting, f"{name}={setting}"
    native, why = native_bfloat16(device)
    if setting == "bfloat16":
        # the user's choice stands; the note is there because it costs 9-13x on an AVX2 CPU (bench/RESULTS.md)
        return setting, f"{name}=bfloat16" + ("" if native else f", though {why}: emulated, many times slower than float32")
    return ("bfloat16" if native else "float32"), f"{name}=auto: {why}"


def describe_hardware(device: torch.device | str = "cpu") -> str:
    """One line naming the CPU and its relevant flags, or the GPU, with the torch build."""
    device = torch.device(device)
    flags = cpu_flags()
    cpu = (f"{os.cpu_count()} CPU cores ({cpu_model()}; "
           + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_REPORTED_FLAGS) + ")")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        gpu = f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}, CUDA {torch.version.cuda})"
        return f"{gpu}; {cpu}; torch {torch.__version__}"
    return f"{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"
