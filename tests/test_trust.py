"""Trust (issue 15): no silent wrong result, no lost run, one clear line for every user mistake.

Each case runs the real script as a user would, with the tiny sample and tiny settings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .conftest import as_arguments, run_script, tiny_overrides
from .test_scripts import assert_one_line_error

pytestmark = pytest.mark.faults


def arguments(root: Path, data: Path, **extra) -> list[str]:
    return as_arguments({**tiny_overrides(root), "DATA_ROOT": str(data), "WRITE_PREVIEW": False, **extra})


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("override,fragments", [
    ("SEED=4294967296", ["SEED must be in 0..4294967295", "4294967296"]),
    ("SHUFFLE_SEED=-1", ["SHUFFLE_SEED must be in 0..4294967295"]),
    ("BASE_LR=-0.01", ["BASE_LR must not be negative", "-0.01"]),
    ("TEST_IDS=['a/b']", ["TEST_IDS", "'a/b'", "cannot be part of a file name"]),
    ("TRAIN_IDS=['..']", ["TRAIN_IDS", "'..'", "cannot be part of a file name"]),
])
def test_numbers_and_tile_ids_that_would_fail_later(override, fragments):
    assert_one_line_error(run_script("convert_gt.py", "--from-color", override), *fragments)


def test_json_given_as_config(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"config": {"WRITE_COG": False, "VGG16_BN_WEIGHTS": None}}))
    assert_one_line_error(run_script("convert_gt.py", "--from-color", "--config", str(config)),
                          "config.json", "this is JSON", "Python file")
