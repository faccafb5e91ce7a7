"""Injected faults: a disk that fills up, SIGKILL at random points, two processes at once.

Whatever the fault, no partial artifact is accepted afterwards, and a rerun ends with the
outputs an uninterrupted run makes. Kill points vary (seeded random delays after a marker
shows the step at work); the outcome does not depend on where the kill lands.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import from_origin

from eoseg.checkpoint import save_checkpoint
from eoseg.errors import EosegError
from eoseg.extract import extract_patches, read_manifest
from eoseg.infer import RECORD_SUFFIX, run_inference
from eoseg.io import RasterWriter, atomic_path, atomic_write_text
from eoseg.lmdb_store import LmdbPatches, create_lmdb, read_lmdb_meta
from eoseg.models import model_from_config

from .conftest import ROOT, as_arguments, make_tiny_config, run_script, tiny_overrides
from .test_cli import assert_one_line_error

pytestmark = pytest.mark.faults

SCENES = 8
# GDAL's bundled libtiff reports a failed write on stderr itself, from C, beside the error
GDAL_OWN_LINE = re.compile(r"^(ERROR \d+: |_tiff\w+: )")


# ---------------------------------------------------------------- helpers
def overrides(root: Path, data: Path, **extra) -> dict:
    return {**tiny_overrides(root), "DATA_ROOT": str(data), "WRITE_PREVIEW": False, **extra}


def environment() -> dict:
    # no bytecode: a process under a file size limit could leave a truncated .pyc for the next
    return {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}


def start(script: str, *args: str, file_size_limit: int | None = None) -> subprocess.Popen:
    def limit_file_size():
        # without SIGXFSZ ignored the kernel kills the writer; with it, the write fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen([sys.executable, str(ROOT / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=environment(),
                            preexec_fn=limit_file_size if file_size_limit else None)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill_when(script: str, args: list[str], started, delay: float) -> int:
    """Run ``script``; ``delay`` seconds after ``started(pid, since)`` holds, SIGKILL it. Its exit status.

    ``since`` is the start time in ns: what a killed run left behind must not count.
    """
    since = time.time_ns()
    process = start(script, *args)
    deadline = time.monotonic() + 120
    while not started(process.pid, since) and process.poll() is None:
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.005)
    if process.poll() is None:
        time.sleep(delay)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    return process.returncode


def building(folder: Path):
    """Marker of a step at work: the temporary folder it builds ``folder`` in, made by this run."""
    temporary = folder.with_name(f".{folder.name}.tmp")

    def started(pid: int, since: int) -> bool:
        try:
            return temporary.stat().st_ctime_ns >= since
        except FileNotFoundError:
            return False

    return started


def labelling(out: Path):
    """Marker of inference at work: a temporary output of this very process in ``out``."""
    def started(pid: int, since: int) -> bool:
        return out.is_dir() and any(f".tmp-{pid}." in p.name for p in out.iterdir())

    return started


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temporary files, folders and locks in or beside ``folder``."""
    hidden = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    if folder.is_dir():
        hidden += [p.name for p in folder.iterdir() if p.name.startswith(".")]
    return hidden


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def write_scenes(folder: Path, count: int = SCENES, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = np.random.default_rng(index).integers(1, 256, (3, size, size), dtype=np.uint8)
        path = folder / f"scene{index}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                           crs=CRS.from_epsg(32632), transform=from_origin(500000, 5400000, 0.5, 0.5)) as dst:
            dst.write(pixels)
        paths.append(path)
    return paths


def assert_full_disk_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """One "error:" line saying the disk is full; GDAL's own C-level lines are let through."""
    result.stderr = "\n".join(line for line in result.stderr.splitlines() if not GDAL_OWN_LINE.match(line))
    assert_one_line_error(result, "disk full while writing", "free space and run again", *fragments)


@pytest.fixture
def weights(tmp_path) -> Path:
    cfg = make_tiny_config(tmp_path)
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "weights.pt", cfg, model_from_config(cfg), iteration=0)


# ---------------------------------------------------------------- a full disk
def test_full_disk_while_extracting(tmp_path, sample_root):
    args = as_arguments(overrides(tmp_path, sample_root / "data"))
    result = finish(start("extract_images.py", *args, file_size_limit=5_000))  # one patch is 12 kB
    assert_full_disk_error(result, str(tmp_path / "patches"))
    assert not (tmp_path / "patches").exists() and not leftovers(tmp_path / "patches")
    with pytest.raises(EosegError, match="run extract_images.py first"):
        read_manifest(tmp_path / "patches")


def test_full_disk_while_packing_lmdb(tmp_path, sample_root):
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"))
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    args = as_arguments(overrides(tmp_path, sample_root / "data"))
    result = finish(start("create_lmdb.py", *args, file_size_limit=300_000))  # the training patches need 1 MB
    assert_full_disk_error(result, str(tmp_path / "lmdb" / "train.lmdb"))
    assert not (tmp_path / "lmdb").exists() and not leftovers(tmp_path / "lmdb")
    with pytest.raises(EosegError, match="run create_lmdb.py first"):
        read_lmdb_meta(tmp_path / "lmdb" / "train.lmdb")
    # with room again, the step runs as if nothing had happened
    assert run_script("create_lmdb.py", *args).returncode == 0
    assert len(LmdbPatches(tmp_path / "lmdb" / "train.lmdb")) == 81


def test_full_disk_while_writing_label_maps(tmp_path, sample_root, weights):
    """GDAL carries on after a failed write; the short file must still not be published."""
    scene = write_scenes(tmp_path / "scenes", count=1, size=160)[0]
    settings = overrides(tmp_path, sample_root / "data", WRITE_PROBABILITIES=True, STRIDE=64)
    cfg = make_tiny_config(tmp_path, **settings)
    reference = run_inference(cfg, weights, tmp_path / "reference", image_paths=[scene], progress=False).images[0]
    largest = max(path.stat().st_size for path in reference.outputs.values())
    limit = largest // 2
    assert limit > 8_000  # room for config.json and the record, not for the largest map
    out = tmp_path / "out"
    args = ["--images", str(scene), "--weights", str(weights), "--out", str(out), *as_arguments(settings)]
    assert_full_disk_error(finish(start("inference.py", *args, file_size_limit=limit)), str(out))
    assert not (out / f"scene0{RECORD_SUFFIX}").exists() and not leftovers(out)
    result = run_script("inference.py", *args)
    assert result.returncode == 0, result.stderr
    assert "kept" not in result.stdout  # nothing counted as done
    for key, path in reference.outputs.items():
        assert np.array_equal(read(out / path.name), read(path)), key


def test_no_room_left_is_found_even_when_the_writer_says_nothing(tmp_path, monkeypatch):
    """A disk found full after a write that reported no error fails the write all the same."""
    import eoseg.io

    monkeypatch.setattr(eoseg.io.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    with pytest.raises(EosegError, match=r"out\.tif: disk full while writing it; free space and run again"):
        with RasterWriter(tmp_path / "out.tif", None, 1, "uint8", width=40, height=30) as writer:
            writer.write(np.zeros((30, 40), np.uint8))
    with pytest.raises(EosegError, match=r"a\.json: disk full"):
        atomic_write_text(tmp_path / "a.json", "{}")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_reported_by_python(tmp_path, sample_root, monkeypatch, code):
    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(np, "save", full)
    cfg = make_tiny_config(tmp_path, DATA_ROOT=str(sample_root / "data"))
    with pytest.raises(EosegError, match=r"patches: disk full while writing it"):
        extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    assert not (tmp_path / "patches").exists() and not leftovers(tmp_path / "patches")


def test_other_write_failures_are_not_called_a_full_disk(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.txt") as tmp:
            raise PermissionError(errno.EACCES, "denied", str(tmp))
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- SIGKILL at random points
def kill_delays(seed: int, longest: float) -> list[float]:
    """Where to kill: at once (so at least one kill lands), then at two seeded random points."""
    rng = random.Random(seed)
    return [0.0] + [rng.uniform(0.0, longest) for _ in range(2)]


def kill_while_building(script: str, args: list[str], folder: Path, seed: int, read_folder) -> None:
    """SIGKILL ``script`` while it builds ``folder``, at a few delays, until a kill lands; after
    each kill that lands first, the half-built folder is never where the next step looks:
    ``read_folder()`` refuses it, telling the user to run ``script``."""
    codes = []
    for delay in kill_delays(seed, 0.4):
        codes.append(kill_when(script, args, building(folder), delay))
        if folder.exists():
            break  # published before the kill landed: complete, as the caller checks
        with pytest.raises(EosegError, match=f"run {re.escape(script)} first"):
            read_folder()
    assert -signal.SIGKILL in codes


def test_killed_extraction_never_leaves_patches_and_is_redone(tmp_path, sample_root):
    settings = overrides(tmp_path, sample_root / "data", TRAIN_STRIDE=16, ROTATIONS=[90, 180, 270])
    args = as_arguments(settings)
    patches = tmp_path / "patches"
    kill_while_building("extract_images.py", args, patches, 1, lambda: read_manifest(patches))
    if not patches.exists():
        assert run_script("extract_images.py", *args).returncode == 0
    reference = tmp_path / "reference"
    assert run_script("extract_images.py", "--out", str(reference), *args).returncode == 0
    made, expected = files_of(patches), files_of(reference)
    configs = [json.loads(files.pop("config.json"))["config"] for files in (made, expected)]
    assert made == expected
    assert configs[1].pop("PATCHES_DIR") == str(reference)  # the saved config names where --out put them
    assert configs[0].pop("PATCHES_DIR") == str(patches) and configs[0] == configs[1]
    assert not leftovers(patches)


def test_killed_lmdb_creation_is_refused_and_redone(tmp_path, sample_root):
    settings = overrides(tmp_path, sample_root / "data", TRAIN_STRIDE=16, ROTATIONS=[90, 180, 270])
    cfg = make_tiny_config(tmp_path, **settings)
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    args = as_arguments(settings)
    lmdb_dir = tmp_path / "lmdb"
    kill_while_building("create_lmdb.py", args, lmdb_dir, 2, lambda: read_lmdb_meta(lmdb_dir / "train.lmdb"))
    if not lmdb_dir.exists():
        assert run_script("create_lmdb.py", *args).returncode == 0
    reference = tmp_path / "reference"
    create_lmdb(cfg, cfg.PATCHES_DIR, reference, progress=False)
    for split in ("train", "test"):
        made, expected = LmdbPatches(lmdb_dir / f"{split}.lmdb"), LmdbPatches(reference / f"{split}.lmdb")
        assert made.meta == expected.meta and len(made) == len(expected) > 0
        for index in range(len(made)):
            assert all(np.array_equal(a, b) for a, b in zip(made[index], expected[index]))
    assert not leftovers(lmdb_dir)


def test_killed_inference_resumes_from_its_completion_records(tmp_path, sample_root, weights):
    scenes = write_scenes(tmp_path / "scenes")
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    reference = run_inference(cfg, weights, tmp_path / "reference", image_paths=scenes, progress=False)
    out = tmp_path / "out"
    args = ["--images", str(tmp_path / "scenes"), "--weights", str(weights), "--out", str(out),
            *as_arguments(overrides(tmp_path, sample_root / "data"))]
    codes = []
    for delay in kill_delays(3, 0.5):
        codes.append(kill_when("inference.py", args, labelling(out), delay))
        if codes[-1] == 0:
            break
    assert -signal.SIGKILL in codes
    records = {p.name: json.loads(p.read_text()) for p in out.glob(f"*{RECORD_SUFFIX}")}
    done = [name for name, record in records.items() if record["complete"]]
    # what the killed run published is listed by a record: the rerun replaces it, as its own
    listed = {entry["file"] for record in records.values() for entry in record["outputs"].values()}
    assert {p.name for p in out.glob("scene*") if not p.name.endswith((".json", ".aux.xml"))} <= listed
    result = run_script("inference.py", *args)
    assert result.returncode == 0, result.stderr
    if done:
        assert f"kept {len(done)} image(s)" in result.stdout
    for image in reference.images:
        for key, path in image.outputs.items():
            assert np.array_equal(read(out / path.name), read(path)), (image.name, key)
    assert not leftovers(out)


def test_completion_records_redo_what_changed(tmp_path, weights):
    scenes = write_scenes(tmp_path / "scenes", count=3, size=64)
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    out = tmp_path / "out"

    def redone(run_cfg=cfg, run_weights=weights, force=False) -> list[str]:
        summary = run_inference(run_cfg, run_weights, out, image_paths=scenes, progress=False, force=force)
        return [image.name for image in summary.images if not image.reused]

    assert redone() == ["scene0", "scene1", "scene2"]
    assert redone() == []
    # an output changed after its record was written is not taken on trust
    labels = out / "scene1_labels.tif"
    damaged = bytearray(labels.read_bytes())
    damaged[-1] ^= 0xFF
    labels.write_bytes(bytes(damaged))
    assert redone() == ["scene1"]
    (out / f"scene2{RECORD_SUFFIX}").unlink()  # its outputs, vouched for by no record, are not replaced unasked
    with pytest.raises(EosegError, match=r"scene2_labels.tif exists \(and 1 more of the outputs\), and no record of an earlier"):
        redone()
    for output in out.glob("scene2_*"):
        output.unlink()
    assert redone() == ["scene2"]
    with rasterio.open(scenes[0], "r+") as dst:  # a new version of an input
        dst.write(np.full((3, 64, 64), 7, np.uint8))
    assert redone() == ["scene0"]
    # settings that labelling does not read, or that change only its speed, keep the results
    assert redone(run_cfg=cfg.replace(BASE_LR=0.5, INFER_BATCH_SIZE=3, INFER_BLOCK_ROWS=16)) == []
    # another config or other weights would overwrite the results, and leave the folder mixing two runs
    with pytest.raises(EosegError, match=r"out holds results made with another config \(BLEND='uniform', now "
                                         r"'gaussian'; TTA=\[\], now \['fliplr'\]\): scene0, scene1, scene2; label into "
                                         r"another --out, or pass --force"):
        redone(run_cfg=cfg.replace(BLEND="gaussian", TTA=["fliplr"]))
    with pytest.raises(EosegError, match=r"another config \(WRITE_COLOR=True, now False\)"):  # what it writes counts
        redone(run_cfg=cfg.replace(WRITE_COLOR=False))
    assert redone(run_cfg=cfg.replace(BLEND="gaussian"), force=True) == ["scene0", "scene1", "scene2"]
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.pt", cfg, model_from_config(cfg), iteration=0)
    with pytest.raises(EosegError, match="out holds results made with other weights: scene0"):
        redone(run_weights=other, run_cfg=cfg.replace(BLEND="gaussian"))
    with pytest.raises(EosegError, match=r"made with other weights and another config \(BLEND='gaussian', now 'uniform'\)"):
        redone(run_weights=other)
    assert redone(run_weights=other, run_cfg=cfg.replace(BLEND="gaussian"), force=True) == ["scene0", "scene1", "scene2"]
    assert redone(run_weights=other, run_cfg=cfg.replace(BLEND="gaussian")) == []


def test_an_interrupted_forced_run_is_continued_without_force(tmp_path, weights, monkeypatch):
    """--force with new settings, stopped after one image: the images it had not reached are not counted as
    another run's results, so the plain rerun goes on where it stopped."""
    import eoseg.infer

    scenes = write_scenes(tmp_path / "scenes", count=3, size=64)
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    out = tmp_path / "out"
    run_inference(cfg, weights, out, image_paths=scenes, progress=False)
    changed = cfg.replace(BLEND="gaussian")
    label_for_real, labelled = eoseg.infer.label_raster, []

    def stopped_after_one(*args, **kwargs):
        if labelled:
            raise KeyboardInterrupt
        labelled.append(label_for_real(*args, **kwargs))
        return labelled[-1]

    monkeypatch.setattr(eoseg.infer, "label_raster", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_inference(changed, weights, out, image_paths=scenes, progress=False, force=True)
    monkeypatch.undo()
    # the replaced run's maps of the images not reached went with their records: none looks current
    assert sorted(p.name for p in out.glob("scene*")) == sorted(p.name for p in out.glob("scene0*"))
    summary = run_inference(changed, weights, out, image_paths=scenes, progress=False)
    assert [image.name for image in summary.images if not image.reused] == ["scene1", "scene2"]
    reference = run_inference(changed, weights, tmp_path / "reference", image_paths=scenes, progress=False)
    for image in reference.images:
        for key, path in image.outputs.items():
            assert np.array_equal(read(out / path.name), read(path)), (image.name, key)


def test_completion_records_redo_an_input_whose_companion_files_changed(tmp_path, weights):
    """GDAL reads a VRT's tiles and a PNG's world file with the named file: a new one makes its labels stale."""
    tiles = write_scenes(tmp_path / "scenes", count=2, size=32)
    sources = {band: "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">scenes/{tile.name}</SourceFilename><SourceBand>{band}'
        f'</SourceBand><DstRect xOff="{32 * index}" yOff="0" xSize="32" ySize="32"/></SimpleSource>'
        for index, tile in enumerate(tiles)) for band in (1, 2, 3)}
    mosaic = tmp_path / "mosaic.vrt"
    mosaic.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="32"><SRS>EPSG:32632</SRS>'
                      f'<GeoTransform>500000, 0.5, 0, 5400000, 0, -0.5</GeoTransform>'
                      + "".join(f'<VRTRasterBand dataType="Byte" band="{band}">{sources[band]}</VRTRasterBand>'
                                for band in (1, 2, 3)) + "</VRTDataset>")
    plain = tmp_path / "plain.png"
    with rasterio.open(plain, "w", driver="PNG", width=32, height=32, count=3, dtype="uint8") as dst:
        dst.write(np.random.default_rng(5).integers(1, 256, (3, 32, 32), dtype=np.uint8))
    world_file = tmp_path / "plain.pgw"
    world_file.write_text("0.5\n0\n0\n-0.5\n500000.25\n5400000.25\n")
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    out = tmp_path / "out"

    def redone() -> list[str]:
        summary = run_inference(cfg, weights, out, image_paths=[mosaic, plain], progress=False)
        return [image.name for image in summary.images if not image.reused]

    assert redone() == ["mosaic", "plain"]
    assert redone() == []
    with rasterio.open(tiles[1], "r+") as dst:  # one tile of the mosaic made anew
        dst.write(np.full((3, 32, 32), 7, np.uint8))
    assert redone() == ["mosaic"]
    world_file.write_text("0.5\n0\n0\n-0.5\n503000.25\n5400000.25\n")  # the image placed 3 km further east
    assert redone() == ["plain"]
    with rasterio.open(out / "plain_labels.tif") as labels:
        assert labels.transform.c == 503000.0
    # a tile of the mosaic gone: GDAL would read zeros for the whole mosaic, as valid pixels; it is not labelled
    tiles[0].unlink()
    summary = run_inference(cfg, weights, tmp_path / "gone", image_paths=[mosaic, plain], progress=False)
    assert [image.name for image in summary.images] == ["plain"]
    assert summary.failed[str(mosaic)] == (f"{mosaic}: this VRT lists 1 file(s) that do not exist ({tiles[0]}); put them "
                                           "back or rebuild the VRT")


def test_another_image_of_the_same_name_does_not_replace_the_outputs(tmp_path, weights):
    """Drone projects all name their mosaic odm_orthophoto.tif: two in one --out would replace each other."""
    first, second = (write_scenes(tmp_path / project, count=2, size=64)[index] for index, project in enumerate("ab"))
    second = second.rename(second.with_name(first.name))
    cfg = make_tiny_config(tmp_path, WRITE_PREVIEW=False)
    out = tmp_path / "out"
    with pytest.raises(EosegError, match=r"inputs of the same name would write the same outputs: .*a/scene0.tif, "
                                         r".*b/scene0.tif; label them into different --out folders"):
        run_inference(cfg, weights, out, image_paths=[first, second], progress=False)
    run_inference(cfg, weights, out, image_paths=[first], progress=False)

    def made_from() -> str:
        return json.loads((out / f"scene0{RECORD_SUFFIX}").read_text())["made_with"]["image"]["path"]

    with pytest.raises(EosegError, match=r"out holds the outputs of .*a/scene0.tif, which .*b/scene0.tif would replace "
                                         r"\(the same name\); label it into another --out, or pass --force"):
        run_inference(cfg, weights, out, image_paths=[second], progress=False)
    assert made_from() == str(first.resolve())
    replaced = run_inference(cfg, weights, out, image_paths=[second], progress=False, force=True).images[0]
    assert not replaced.reused and made_from() == str(second.resolve())
    # the other file's run killed before any output: its pending record vouches for nothing to lose (the last note)
    record = json.loads((out / f"scene0{RECORD_SUFFIX}").read_text())
    for entry in record["outputs"].values():
        (out / entry["file"]).unlink()
    (out / f"scene0{RECORD_SUFFIX}").write_text(json.dumps({**record, "complete": False}))
    assert not run_inference(cfg, weights, out, image_paths=[first], progress=False).images[0].reused
    assert made_from() == str(first.resolve())


# ---------------------------------------------------------------- two processes at once
def test_two_inference_processes_share_an_output_folder(tmp_path, sample_root, weights):
    scenes = write_scenes(tmp_path / "scenes")
    settings = overrides(tmp_path, sample_root / "data")
    cfg = make_tiny_config(tmp_path, **settings)
    reference = run_inference(cfg, weights, tmp_path / "reference", image_paths=scenes, progress=False)
    out = tmp_path / "out"
    common = ["--weights", str(weights), "--out", str(out), *as_arguments(settings)]
    # overlapping lists, in opposite orders so that both want the shared images at the same time
    first = start("inference.py", "--images", *map(str, scenes[:4]), *common)
    second = start("inference.py", "--images", *map(str, scenes[:1:-1]), *common)
    for result in (finish(first), finish(second)):
        assert result.returncode == 0, result.stderr
    for image in reference.images:
        for key, path in image.outputs.items():
            assert np.array_equal(read(out / path.name), read(path)), (image.name, key)
    again = run_inference(cfg, weights, out, image_paths=scenes, progress=False)
    assert all(image.reused for image in again.images)  # the same config: every record matches its outputs
    assert not leftovers(out)
