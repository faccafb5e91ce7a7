"""eoseg.allocator: glibc's malloc told to keep and reuse freed memory, once per process, and nowhere else."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from eoseg import allocator

from .conftest import ROOT


class FakeLibc:
    """A C library whose mallopt records its calls and answers ``accepts`` (glibc: 1 for a taken setting)."""

    def __init__(self, accepts=1, glibc=True):
        self.calls, self.accepts = [], accepts
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.99"

    def mallopt(self, parameter, value):
        self.calls.append((parameter, value))
        return self.accepts


@pytest.fixture
def fresh(monkeypatch):
    """The module as in a process that has not applied the setting, on Linux."""
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    return monkeypatch


def test_glibc_is_told_to_serve_every_block_from_its_heap_and_keep_freed_memory(fresh):
    libc = FakeLibc()
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.reuse_freed_memory() is True
    assert libc.calls == [(allocator.M_MMAP_MAX, 0), (allocator.M_TRIM_THRESHOLD, allocator.KEEP_FREED_BYTES)]
    assert allocator.reuse_freed_memory() is True and len(libc.calls) == 2  # once per process


def test_a_setting_glibc_refuses_is_not_reported_applied(fresh):
    libc = FakeLibc(accepts=0)
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: libc)
    assert allocator.reuse_freed_memory() is False and allocator._applied is False


def test_another_c_library_or_system_is_left_alone(fresh):
    other = FakeLibc(glibc=False)  # musl has mallopt, but not glibc's parameters
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: other)
    assert allocator.reuse_freed_memory() is False and other.calls == []

    def no_library(name):
        raise OSError("not found")

    fresh.setattr(allocator.ctypes, "CDLL", no_library)
    assert allocator.reuse_freed_memory() is False
    fresh.setattr(allocator.sys, "platform", "darwin")
    fresh.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("a C library was loaded"))
    assert allocator.reuse_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_reuse_freed_memory_stops_page_faults_on_reallocation():
    """In a fresh process (the setting is process-wide): freed large blocks are reused, not mapped afresh."""
    probe = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from eoseg.allocator import reuse_freed_memory
        applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
        def allocate():
            block = np.ones(2**24, dtype=np.float32)  # 64 MB, above glibc's mmap threshold
            del block
        allocate()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            allocate()
        print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    results = {}
    for mode in ("default", "reuse"):
        output = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True, cwd=ROOT, check=True)
        applied, faults = output.stdout.split()
        results[mode] = (applied == "True", int(faults))
    assert results["reuse"][0]  # glibc took the setting
    assert results["reuse"][1] * 10 < results["default"][1]
