"""The notebooks: stored without outputs, and executed in order on a tiny sample as a user runs them.

Tiny settings are injected by replacing each notebook's settings cell (the one cell tagged
``parameters``, its first code cell) with the test's values: OVERRIDES = the KEY=VALUE list
of conftest's tiny settings with every data and output folder under tmp_path. The kernel is
started in notebooks/, as Jupyter starts it; the notebook moves to the repository root, but
everything it writes goes where the overridden folders say.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from eoseg.config import load_config

from .conftest import ROOT, as_arguments, tiny_overrides

NOTEBOOKS = ROOT / "notebooks"
ORDER = [
    "1_convert_ground_truth.ipynb",
    "2_extract_patches.ipynb",
    "3_create_lmdb.ipynb",
    "4_train.ipynb",
    "5_inference.ipynb",
]
PARAMETERS_TAG = "parameters"
KERNEL = "python3"  # in the venv this is ipykernel's own spec; the test below checks which interpreter it starts
TILE_SIZE = 96  # px: tiny tiles for notebook 1 to draw (a multiple of nothing in particular; >= SegNet's 32)
CELL_TIMEOUT_S = 300


def notebook_paths() -> list[Path]:
    return [NOTEBOOKS / name for name in ORDER]


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def parameters_cell(nb, name: str):
    tagged = [cell for cell in nb.cells if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged {PARAMETERS_TAG!r}, found {len(tagged)}"
    assert tagged[0] is code_cells(nb)[0], f"{name}: the settings cell must be the first code cell"
    return tagged[0]


def assigned_names(source: str) -> dict:
    """Names the settings cell assigns, with their literal values."""
    names = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), \
            f"the settings cell may only assign plain names, found: {ast.unparse(node)}"
        names[node.targets[0].id] = ast.literal_eval(node.value)
    return names


def test_notebooks_are_the_five_steps_in_order():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ORDER


@pytest.mark.parametrize("name", ORDER)
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(code_cells(nb)):
        assert cell.outputs == [], f"{name}: code cell {index} is stored with outputs; clear them before committing"
        assert cell.execution_count is None, f"{name}: code cell {index} is stored with an execution count"
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL


@pytest.mark.parametrize("name", ORDER)
def test_settings_cell_reads_config_py(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    values = assigned_names(parameters_cell(nb, name).source)
    # as stored, a notebook runs on config.py as it is: no override a user did not ask for
    assert values["OVERRIDES"] == [] and values["CONFIG_FILE"] is None, f"{name}: {values}"
    source = "\n".join(cell.source for cell in code_cells(nb))
    assert "load_config(CONFIG_FILE, OVERRIDES)" in source, f"{name} does not load the config the settings describe"


def execute(nb, name: str, out_dir: Path) -> None:
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{name} failed (executed copy in {out_dir}):\n{err}", pytrace=False)
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / name)  # the executed copy, outputs included, to look at


def outputs_of(nb) -> tuple[str, int]:
    """All text the cells printed, and the number of images they displayed."""
    text, images = [], 0
    for cell in code_cells(nb):
        for output in cell.outputs:
            if "text" in output:
                text.append(output["text"])
            data = output.get("data", {})
            images += "image/png" in data
            text.append(data.get("text/plain", ""))
    return "\n".join(text), images


def test_kernel_runs_this_interpreter():
    """kernel_name "python3" must start the project's interpreter (its packages), not another Python."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    NotebookClient(nb, kernel_name=KERNEL, timeout=60).execute()
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert os.path.realpath(printed) == os.path.realpath(sys.executable)


def test_notebooks_run_in_order_on_the_tiny_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the kernel inherits it
    overrides = as_arguments(tiny_overrides(tmp_path))
    cfg = load_config(overrides=overrides)
    # every folder and file the notebooks write lies under tmp_path, never in the repository
    for key, value in cfg.to_dict().items():
        if key.endswith(("_DIR", "_ROOT", "_FILE")) and isinstance(value, str) and value:
            assert Path(value).is_relative_to(tmp_path), f"{key}={value} is not redirected into tmp_path"
    injected = {"OVERRIDES": overrides, "CONFIG_FILE": None, "SAMPLE_SIZE": TILE_SIZE, "SPLIT": "test", "WEIGHTS": None,
                "CAFFE_MEAN": None}

    executed = {}
    timings = {}
    for path in notebook_paths():
        nb = nbformat.read(path, as_version=4)
        cell = parameters_cell(nb, path.name)
        names = assigned_names(cell.source)
        unknown = set(names) - set(injected)
        assert not unknown, f"{path.name}: the test does not know the settings {sorted(unknown)}; give them tiny values here"
        cell.source = "\n".join(f"{key} = {injected[key]!r}" for key in names)
        start = time.perf_counter()
        execute(nb, path.name, tmp_path / "executed")
        timings[path.name] = time.perf_counter() - start
        executed[path.name] = outputs_of(nb)
    print("notebook run times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items()))

    # each step left what the next one reads, under tmp_path
    labels = [cfg.tile_path("LABEL_PATTERN", t) for t in cfg.tile_ids("train") + cfg.tile_ids("test")]
    assert all(path.is_file() for path in labels)
    assert (tmp_path / "patches" / "manifest.json").is_file()
    assert (tmp_path / "lmdb" / "train.lmdb" / "data.mdb").is_file()
    assert (tmp_path / "model.pt").is_file()
    assert (tmp_path / "inference" / "metrics.json").is_file()
    # the figures were shown: tile, two patch grids, class frequencies and records, loss and snapshot per
    # chunk (ITERATIONS / SNAPSHOT_EVERY of them), previews of the test tiles and the confusion matrix
    chunks = -(-cfg.ITERATIONS // cfg.SNAPSHOT_EVERY)
    expected_images = [1, 2, 2, 2 * chunks, len(cfg.tile_ids("test")) + 1]
    assert [executed[name][1] for name in ORDER] == expected_images
    assert "overall accuracy" in executed["5_inference.ipynb"][0] and "mean F1" in executed["5_inference.ipynb"][0]
    assert f"{TILE_SIZE} x {TILE_SIZE} px" in executed["1_convert_ground_truth.ipynb"][0]


def test_the_conversion_notebook_on_numeric_labels_only(sample_root, tmp_path, monkeypatch):
    """Own data without colour ground truth (GT_COLOR_PATTERN ""): nothing to convert, the labels shown in the palette."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    overrides = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "GT_COLOR_PATTERN": ""})
    nb = nbformat.read(NOTEBOOKS / ORDER[0], as_version=4)
    cell = parameters_cell(nb, ORDER[0])
    injected = {"OVERRIDES": overrides, "CONFIG_FILE": None, "SAMPLE_SIZE": TILE_SIZE}
    cell.source = "\n".join(f"{key} = {injected[key]!r}" for key in assigned_names(cell.source))
    execute(nb, ORDER[0], tmp_path / "executed")
    text, images = outputs_of(nb)
    assert "GT_COLOR_PATTERN is empty: the labels (LABEL_PATTERN) are numeric already, nothing to convert" in text
    assert images == 1


def test_the_conversion_notebook_never_draws_the_sample_over_data(sample_root, tmp_path, monkeypatch):
    """Tiles laid out as ISPRS ships them (no nDSM) under the default DATASET "sample": a missing file of one tile
    made the notebook draw the synthetic sample over the real images and ground truth (review). It draws as
    make_sample.py does, which refuses a folder holding any of the tiles' files."""
    import hashlib
    import shutil

    monkeypatch.setenv("MPLBACKEND", "Agg")
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    shutil.rmtree(data / "ndsm")
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in data.rglob("*.tif")}
    overrides = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(data)})
    nb = nbformat.read(NOTEBOOKS / ORDER[0], as_version=4)
    cell = parameters_cell(nb, ORDER[0])
    injected = {"OVERRIDES": overrides, "CONFIG_FILE": None, "SAMPLE_SIZE": TILE_SIZE}
    cell.source = "\n".join(f"{key} = {injected[key]!r}" for key in assigned_names(cell.source))
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.raises(CellExecutionError, match=r"already exists; pass --force to replace"):
        client.execute()
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in data.rglob("*.tif")} == before
