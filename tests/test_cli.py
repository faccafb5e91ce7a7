"""The five scripts as a user runs them: --help, the whole chain, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from eoseg.errors import EosegError

from .conftest import as_arguments, run_script, tiny_overrides

SCRIPTS = ["make_sample.py", "convert_gt.py", "extract_images.py", "create_lmdb.py", "training.py", "inference.py",
           "make_composite.py", "check_data.py", "polygonize.py", "export_onnx.py", "convert_weights.py"]
# what the usage line says the script takes besides options and KEY=VALUEs
ARGUMENTS = {"convert_gt.py": " (--from-color | --to-color | --from-values) [FILE ...] ", "polygonize.py": " --out FILE LABELS ",
             "export_onnx.py": " --out FILE [WEIGHTS] ", "convert_weights.py": " --out FILE WEIGHTS "}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "--config FILE" in result.stdout and "KEY=VALUE" in result.stdout
    usage = result.stdout.splitlines()[0]
    assert usage == f"usage: {script} [options]{ARGUMENTS.get(script, ' ')}[KEY=VALUE ...]"


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_whole_chain_through_the_scripts(tmp_path):
    overrides = tiny_overrides(tmp_path)
    overrides["DATA_ROOT"] = str(tmp_path / "data")
    args = as_arguments(overrides)
    steps = [
        ("make_sample.py", "--size", "160"),
        ("convert_gt.py", "--from-color"),
        ("extract_images.py",),
        ("create_lmdb.py",),
        ("training.py",),
        ("inference.py",),
    ]
    for script, *options in steps:
        result = run_script(script, *options, *args)
        assert result.returncode == 0, f"{script}: {result.stderr}"
    assert "overall accuracy" in result.stdout and "confusion_plot" in result.stdout
    # every step leaves the effective config beside what it wrote
    for folder in ("patches", "lmdb", "train", "inference"):
        record = json.loads((tmp_path / folder / "config.json").read_text())
        assert record["config"]["PATCH_SIZE"] == 64
    assert (tmp_path / "data" / "labels" / "config.convert_gt.json").is_file()
    assert (tmp_path / "model.pt").is_file()
    assert (tmp_path / "inference" / "top_mosaic_09cm_area4_labels.tif").is_file()


def test_wrong_path_is_one_line(tmp_path, sample_root):
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data")})
    assert_one_line_error(run_script("inference.py", "--images", str(tmp_path / "nope.tif"), *args), "nope.tif")
    assert_one_line_error(run_script("convert_gt.py", str(tmp_path / "nope.tif"), "--from-color", "--out", str(tmp_path)), "not found")


def test_missing_tile_is_one_line(tmp_path, sample_root):
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "TRAIN_IDS": ["1", "42"]})
    assert_one_line_error(run_script("extract_images.py", *args), "tile 42", "IMAGE_PATTERN")


def test_label_image_size_mismatch_is_one_line(tmp_path, sample_root):


    labels = tmp_path / "labels_1.tif"
    with rasterio.open(labels, "w", driver="GTiff", width=20, height=30, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 30, 20), "uint8"))
    args = as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data"), "TRAIN_IDS": ["1"],
                         "LABEL_PATTERN": str(tmp_path / "labels_{id}.tif")})
    assert_one_line_error(run_script("extract_images.py", *args), "20 x 30 px", "same grid")


def test_bad_config_names_are_one_line(tmp_path):
    assert_one_line_error(run_script("training.py", "ITERATONS=5"), "did you mean ITERATIONS")
    config = tmp_path / "broken.py"
    config.write_text("ITERATIONS = (\n")
    assert_one_line_error(run_script("training.py", "--config", str(config)), "broken.py", "syntax error")


def test_overrides_argparse_would_misread_are_one_line():
    """A lower-case override is no unrecognized argument; a second --config does not silently replace the first."""
    from eoseg.cli import make_parser, parse

    with pytest.raises(EosegError, match=r"^'iterations=5': config names are upper case, as in config.py: ITERATIONS=5$"):
        parse(make_parser("test"), ["iterations=5"])
    with pytest.raises(EosegError, match="--config is given more than once"):
        parse(make_parser("test"), ["--config", "a.py", "--config=b.py"])
    for split in (["PATCH_SIZE", "=", "64"], ["PATCH_SIZE", "=64", "--force"], ["PATCH_SIZE=", "64"]):  # review
        with pytest.raises(EosegError, match=r"^'PATCH_SIZE ?= ?64': write an override as one argument, without spaces "
                                             r"around '=': PATCH_SIZE=64$"):
            parse(make_parser("test"), split)
    with pytest.raises(SystemExit):  # not taken for --config: argparse's usage error
        parse(make_parser("test"), ["--conf", "a.py", "--config", "b.py"])
    parser = make_parser("test")
    parser.add_argument("images", nargs="*")
    assert parse(parser, ["photo=1.tif"])[0].images == ["photo=1.tif"]  # not a config name: a file


@pytest.fixture
def own_handlers():
    """run() installs SIGINT and SIGTERM handlers for a script's process: put this process's back."""
    import signal

    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_progress_bars_into_a_log_file_are_redrawn_every_30_seconds(own_handlers, monkeypatch):
    """tqdm reads TQDM_MININTERVAL when imported, long before a script knows where stderr goes."""
    from tqdm import tqdm

    from eoseg.cli import run

    monkeypatch.setattr(tqdm, "__init__", tqdm.__dict__["__init__"])  # put back after the test
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    intervals = []

    def main(argv):
        with tqdm(range(2), disable=False) as bar, tqdm(range(2), mininterval=2) as chosen:
            intervals.extend([bar.mininterval, chosen.mininterval])

    run(main, [])  # pytest's stderr is no terminal
    assert intervals == [30.0, 2]


def test_sigterm_stops_a_script_as_ctrl_c_does(own_handlers, capsys):
    """timeout and batch schedulers send SIGTERM: a one-line stop, with the cleanup a KeyboardInterrupt gets."""
    import os
    import signal
    import time

    from eoseg.cli import run

    cleaned = []

    def main(argv):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives here
        finally:
            cleaned.append(True)

    with pytest.raises(SystemExit) as stopped:
        run(main, [])
    assert stopped.value.code == 143 and cleaned == [True] and capsys.readouterr().err == "terminated\n"


@pytest.mark.parametrize("error, line", [
    (PermissionError(13, "Permission denied", "/data/out/x.tif"), "error: /data/out/x.tif: Permission denied"),
    (OSError(36, "File name too long", "/data/" + "y" * 300), "error: /data/" + "y" * 300 + ": File name too long"),
    (NotADirectoryError(20, "Not a directory", "/data/afile/c1.tif"), "error: /data/afile/c1.tif: Not a directory"),
])
def test_a_path_the_file_system_refuses_is_one_line(own_handlers, capsys, error, line):
    from eoseg.cli import run

    def main(argv):
        raise error

    with pytest.raises(SystemExit) as stopped:
        run(main, [])
    assert stopped.value.code == 2 and capsys.readouterr().err == line + "\n"


def test_output_piped_into_a_reader_that_stops_ends_quietly(tmp_path, sample_root):
    import shlex
    import subprocess
    import sys

    from .conftest import ROOT

    args = shlex.join(as_arguments({**tiny_overrides(tmp_path), "DATA_ROOT": str(sample_root / "data")}))
    result = subprocess.run(f"{sys.executable} {ROOT / 'check_data.py'} --out {tmp_path / 'check'} {args} | head -1",
                            shell=True, capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "images:" and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_a_broken_pipe_of_the_work_itself_is_no_quiet_exit(own_handlers):
    """Only the output's reader going away ends a script quietly: a worker's pipe breaking is a fault, shown."""
    import multiprocessing

    from eoseg.cli import run

    def main(argv):
        reader, writer = multiprocessing.Pipe(duplex=False)
        reader.close()
        writer.send("labels")

    with pytest.raises(BrokenPipeError):
        run(main, [])
