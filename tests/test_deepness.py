"""export_onnx.py --deepness: a model the Deepness QGIS plugin loads and runs as eoseg would.

The plugin is not installed here (it needs QGIS). What it does with a model is written out
below from its documentation ("Adding metadata to ONNX model", "Model classes and
requirements") and its processing code: how it parses the metadata, how it preprocesses a
tile, how it tiles a raster and stitches the tiles' results.
"""

from __future__ import annotations

import ast
import json

import numpy as np
import onnxruntime
import pytest
import rasterio

from eoseg.checkpoint import save_checkpoint
from eoseg.errors import EosegError
from eoseg.infer import run_inference
from eoseg.io import read_raster
from eoseg.onnx_engine import OnnxModel
from eoseg.weights import load_weights

from .conftest import as_arguments, run_script, tiny_overrides
from .test_checkpoint import trained_like_model
from .test_cli import assert_one_line_error

TEST_TILE = "4"


# ---------------------------------------------------------------- the plugin, as documented
def parse_like_deepness(path) -> dict:
    """The model's parameters as Deepness reads them: each metadata value is JSON; class names a
    {id: name} dict (ids as strings, or as integers through Python literals), consecutive from 0."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    inputs, outputs = session.get_inputs(), session.get_outputs()
    assert len(inputs) == 1, "Deepness takes models with one input"
    assert len(outputs) == 1 and len(outputs[0].shape) == 4, "a Segmentor has one (N, classes, H, W) output"
    assert outputs[0].name == "probabilities", "named as what it holds: a softmax's, not logits (review)"
    try:
        names = json.loads(meta["class_names"])
    except json.JSONDecodeError:
        names = ast.literal_eval(meta["class_names"])
    ordered = sorted(names.items(), key=lambda item: int(item[0]))
    assert [int(key) for key, _ in ordered] == list(range(len(ordered))), "class ids must be consecutive from 0"
    shape = inputs[0].shape  # [batch (1 or dynamic), channels, size, size]
    assert isinstance(shape[-1], int) and shape[-1] == shape[-2], "Deepness tiles are square, of the model's input size"
    return {
        "session": session,
        "model_type": str(json.loads(meta["model_type"])).capitalize(),
        "class_names": [name for _, name in ordered],
        "resolution_cm": float(json.loads(meta["resolution"])),
        "tile_size": int(json.loads(meta["tile_size"])),
        "tiles_overlap_percent": int(json.loads(meta["tiles_overlap"])),
        "mean": [float(m) for m in json.loads(meta["standardization_mean"])],
        "std": [float(s) for s in json.loads(meta["standardization_std"])],
        "seg_thresh": float(json.loads(meta["seg_thresh"])),
        "input_shape": shape,
    }


def deepness_tile_scores(model: dict, tiles_hwc: np.ndarray, std_scale: float = 1.0) -> np.ndarray:
    """A batch of uint8 (N, H, W, C) tiles through the plugin's preprocessing and the model:
    first C channels, /255, standardised, NCHW; then every output under seg_thresh set to 0."""
    channels = model["input_shape"][-3]
    x = np.float32(tiles_hwc[..., :channels] * (1.0 / 255.0))
    x = (x - np.array(model["mean"], np.float32)) / (np.array(model["std"], np.float32) * std_scale)
    session = model["session"]
    (scores,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))})
    scores[scores < model["seg_thresh"]] = 0.0
    return scores


def deepness_segment(model: dict, image_hwc: np.ndarray, std_scale: float = 1.0):
    """The plugin's tiling: square tiles every tile_size - overlap px, each tile's argmax kept in
    its own part (the overlap split halfway between neighbours). Returns the labels and, per
    tile, its start (row, col) and argmax, for the caller to compare tiles with each other."""
    size = model["tile_size"]
    overlap = round(size * model["tiles_overlap_percent"] / 100)
    stride = size - overlap
    height, width, _ = image_hwc.shape
    assert (height - size) % stride == 0 and (width - size) % stride == 0, "the test raster fits the tiles exactly"
    starts = [(r, c) for r in range(0, height - size + 1, stride) for c in range(0, width - size + 1, stride)]
    tiles = np.stack([image_hwc[r:r + size, c:c + size] for r, c in starts])
    best = deepness_tile_scores(model, tiles, std_scale).argmax(axis=1)
    labels = np.zeros((height, width), np.uint8)
    for (r, c), tile in zip(starts, best):
        top = 0 if r == 0 else overlap // 2
        left = 0 if c == 0 else overlap // 2
        bottom = size if r + size == height else size - overlap // 2
        right = size if c + size == width else size - overlap // 2
        labels[r + top:r + bottom, c + left:c + right] = tile[top:bottom, left:right]
    return labels, starts, best


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def exported(sample_root, tmp_path_factory):
    """A trained-like tiny network, exported for Deepness by the script from its checkpoint."""
    folder = tmp_path_factory.mktemp("deepness")
    overrides = {**tiny_overrides(folder), "DATA_ROOT": str(sample_root / "data"), "WRITE_PREVIEW": False}
    from eoseg.config import load_config

    cfg = load_config(overrides=as_arguments(overrides))
    checkpoint = save_checkpoint(folder / "model.pt", cfg, trained_like_model(cfg, seed=11), iteration=1)
    out = folder / "qgis" / "model.onnx"
    result = run_script("export_onnx.py", str(checkpoint), "--deepness", "--out", str(out), *as_arguments(overrides))
    assert result.returncode == 0, result.stderr
    assert "for Deepness: 64 px tiles, 9 cm/px" in result.stdout
    return cfg, checkpoint, out


def test_metadata_parses_as_the_plugin_parses_it(exported):
    cfg, _, path = exported
    model = parse_like_deepness(path)
    assert model["model_type"] == "Segmentor"
    assert model["class_names"] == cfg.CLASS_NAMES
    assert model["resolution_cm"] == pytest.approx(9.0)  # the sample tiles' 0.09 m pixels
    assert model["tile_size"] == cfg.WINDOW == model["input_shape"][-1]
    assert model["tiles_overlap_percent"] == 50  # WINDOW 64, STRIDE 32
    assert model["mean"] == pytest.approx([m / 255 for m in cfg.NORM_MEAN])
    assert model["std"] == pytest.approx([s / 255 for s in cfg.NORM_STD])
    assert model["seg_thresh"] == 0.0 and model["input_shape"][1] == cfg.num_bands
    # eoseg's own record is there too, and inference.py takes the file at its tile size only
    engine, _ = load_weights(path, cfg)
    assert isinstance(engine, OnnxModel) and engine.probabilities
    with pytest.raises(EosegError, match="takes 64 px windows only; set WINDOW=64"):
        load_weights(path, cfg.replace(WINDOW=128, STRIDE=64))


def test_plugin_tiling_labels_as_inference_does_except_where_the_blend_decides(exported, tmp_path):
    cfg, checkpoint, path = exported
    image_path = cfg.tile_path("IMAGE_PATTERN", TEST_TILE)
    single = run_inference(cfg, checkpoint, tmp_path / "eoseg", image_paths=[image_path], progress=False)
    eoseg_labels = read_raster(single.images[0].outputs["labels"])[0]
    with rasterio.open(image_path) as src:
        image = np.moveaxis(src.read(), 0, -1)
    model = parse_like_deepness(path)
    labels, starts, tile_best = deepness_segment(model, image)
    assert len(np.unique(labels)) >= 2  # not one class everywhere

    # How the difference is measured. Inference averages the scores of every window over a
    # pixel (uniform blend); the plugin keeps one window's argmax there. Where every window
    # over a pixel has the same argmax, the average has it too (each window's winning score
    # leads every other class, so the mean leads as well): both must give that class. Only
    # where the windows disagree may the blend pick another class than the kept window.
    size = model["tile_size"]
    votes = np.zeros((cfg.num_classes, *labels.shape), np.int32)
    for (r, c), best in zip(starts, tile_best):  # the plugin's tiles are inference's windows here
        for k in range(cfg.num_classes):
            votes[k, r:r + size, c:c + size] += best == k
    agreed = (votes > 0).sum(axis=0) == 1
    differ = labels != eoseg_labels
    blend_zone = 1 - agreed.mean()
    print(f"\nDeepness tiling vs inference.py on tile {TEST_TILE} ({labels.size} px): "
          f"{differ.mean():.2%} of pixels differ; the windows disagree on {blend_zone:.2%}; "
          f"differing where they agree: {int((differ & agreed).sum())} px")
    assert 0 < blend_zone < 0.5  # the comparison has both kinds of pixels
    # float32 rounding of two runtimes may flip a near tie; a wrong preprocessing flips thousands
    assert (differ & agreed).sum() <= 0.001 * agreed.sum()
    assert differ.mean() <= blend_zone

    # the check can fail: the same tiling with the standardisation misread labels otherwise
    wrong, _, _ = deepness_segment(model, image, std_scale=255.0)
    assert ((wrong != eoseg_labels) & agreed).sum() > 0.05 * agreed.sum()


def test_inference_py_runs_the_deepness_export_like_the_checkpoint(exported, tmp_path):
    cfg, checkpoint, path = exported
    image_path = cfg.tile_path("IMAGE_PATTERN", TEST_TILE)
    torch_labels = read_raster(run_inference(cfg, checkpoint, tmp_path / "torch", image_paths=[image_path],
                                             progress=False).images[0].outputs["labels"])[0]
    onnx_labels = read_raster(run_inference(cfg, path, tmp_path / "onnx", image_paths=[image_path],
                                            progress=False).images[0].outputs["labels"])[0]
    # log-probabilities differ from the logits by one constant per window and pixel, the same
    # for every class: blended, they pick the same class but at float32 near ties
    assert (torch_labels != onnx_labels).mean() <= 0.001


def test_deepness_export_errors(exported, tmp_path):
    cfg, checkpoint, _ = exported
    out = tmp_path / "m.onnx"
    assert_one_line_error(run_script("export_onnx.py", str(checkpoint), "--out", str(out), "--resolution-cm", "9",
                                     "MODEL=segnet", "MODEL_WIDTH=0.125"), "--resolution-cm takes a positive number")
    # tiles that are not georeferenced in metres: the resolution must be given
    assert_one_line_error(run_script("export_onnx.py", str(checkpoint), "--deepness", "--out", str(out), "MODEL=segnet",
                                     "MODEL_WIDTH=0.125", "WINDOW=64", "STRIDE=32", f"DATA_ROOT={tmp_path / 'none'}"),
                          "pass --resolution-cm")
    result = run_script("export_onnx.py", str(checkpoint), "--deepness", "--resolution-cm", "12.5", "--out", str(out),
                        "MODEL=segnet", "MODEL_WIDTH=0.125", "WINDOW=64", "STRIDE=32", f"DATA_ROOT={tmp_path / 'none'}")
    assert result.returncode == 0, result.stderr
    assert parse_like_deepness(out)["resolution_cm"] == 12.5
    # weights that record their training imagery's pixel size need neither the tiles nor the flag
    recorded = save_checkpoint(tmp_path / "recorded.pt", cfg, trained_like_model(cfg, seed=11), iteration=1,
                               trained_on={"pixel_size_m": [0.3, 0.3]})
    result = run_script("export_onnx.py", str(recorded), "--deepness", "--out", str(tmp_path / "recorded.onnx"), "MODEL=segnet",
                        "MODEL_WIDTH=0.125", "WINDOW=64", "STRIDE=32", f"DATA_ROOT={tmp_path / 'none'}")
    assert result.returncode == 0, result.stderr
    assert parse_like_deepness(tmp_path / "recorded.onnx")["resolution_cm"] == 30.0
    # a flag that says otherwise than the record would have the plugin resample the imagery to another scale
    assert_one_line_error(run_script("export_onnx.py", str(recorded), "--deepness", "--resolution-cm", "9", "--out",
                                     str(tmp_path / "flag.onnx"), "MODEL=segnet", "MODEL_WIDTH=0.125", "WINDOW=64",
                                     "STRIDE=32"), "trained on 30 cm pixels, but --resolution-cm 9", "leave --resolution-cm out")
    result = run_script("export_onnx.py", str(recorded), "--deepness", "--resolution-cm", "30", "--out",
                        str(tmp_path / "same.onnx"), "MODEL=segnet", "MODEL_WIDTH=0.125", "WINDOW=64", "STRIDE=32")
    assert result.returncode == 0, result.stderr
    # the plugin feeds 8-bit values: weights of 16-bit imagery would see values 257 times too small
    sixteen_bit = save_checkpoint(tmp_path / "uint16.pt", cfg, trained_like_model(cfg, seed=11), iteration=1,
                                  trained_on={"pixel_size_m": [0.3, 0.3], "input_dtype": "uint16"})
    assert_one_line_error(run_script("export_onnx.py", str(sixteen_bit), "--deepness", "--out", str(tmp_path / "u16.onnx"),
                                     "MODEL=segnet", "MODEL_WIDTH=0.125", "WINDOW=64", "STRIDE=32"),
                          "trained on uint16 imagery, and Deepness feeds 8-bit values")
