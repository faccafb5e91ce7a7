"""Bad inputs through the real scripts: one clear line and exit 2, or handled as decided.

Each case runs a script as a user would and checks that stderr holds exactly one line,
starting "error: ", naming the file and what to do, with no traceback, and that nothing
half-written is left where the next step would find it. Inputs that are not errors by
decision (a PNG named .tif, 16-bit or float imagery with its normalisation declared,
NaN and nodata pixels, a tile smaller than the window) are checked to work.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from eoseg.checkpoint import save_checkpoint
from eoseg.models import model_from_config

from .conftest import as_arguments, make_tiny_config, run_script, tiny_overrides
from .test_cli import assert_one_line_error

pytestmark = pytest.mark.faults

IMAGE = "top/top_mosaic_09cm_area{id}.tif"
LABELS = "labels/top_mosaic_09cm_area{id}.tif"
COLOR_GT = "gts_for_participants/top_mosaic_09cm_area{id}.tif"
ERODED_GT = "gts_eroded_for_participants/top_mosaic_09cm_area{id}_noBoundary.tif"
FOUR_CLASSES = {"CLASS_NAMES": ["a", "b", "c", "d"], "PALETTE": [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]}
FOUR_BANDS = {"BANDS": [1, 2, 3, 4], "BAND_NAMES": ["IR", "R", "G", "DSM"],
              "NORM_MEAN": [0.0] * 4, "NORM_STD": [255.0] * 4}


# ---------------------------------------------------------------- helpers
def arguments(root: Path, data: Path, **extra) -> list[str]:
    """KEY=VALUE arguments of the tiny config reading ``data`` and writing under ``root``."""
    return as_arguments({**tiny_overrides(root), "DATA_ROOT": str(data), "WRITE_PREVIEW": False, **extra})


def copy_dataset(sample_root: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(sample_root / "data", data)
    return data


def write_tif(path: Path, array: np.ndarray, nodata=None, like: Path | None = None) -> Path:
    """A GeoTIFF of ``array`` (C, H, W), georeferenced like ``like`` when given."""
    profile = dict(driver="GTiff", width=array.shape[2], height=array.shape[1], count=array.shape[0],
                   dtype=array.dtype.name, nodata=nodata)
    if like is not None:
        with rasterio.open(like) as src:
            profile.update(crs=src.crs, transform=src.transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000))  # a TIFF signature, then noise
    return path


def random_image(rows: int, cols: int, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (bands, rows, cols), dtype=np.uint8)


def assert_left_nothing(folder: Path, allowed: set[str] = frozenset()) -> None:
    """``folder`` is absent or holds only ``allowed``: no output, temporary file or lock."""
    siblings = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    assert not siblings, siblings
    if folder.exists():
        assert {p.name for p in folder.iterdir()} <= set(allowed)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny weights for the tiny config, and for 4 classes and for 4 bands."""
    root = tmp_path_factory.mktemp("weights")
    made = {}
    for name, extra in (("tiny", {}), ("classes4", FOUR_CLASSES), ("bands4", FOUR_BANDS)):
        cfg = make_tiny_config(root, **extra)
        torch.manual_seed(0)
        made[name] = save_checkpoint(root / f"{name}.pt", cfg, model_from_config(cfg), iteration=0)
    return made


# ---------------------------------------------------------------- corrupt files
def test_truncated_image_given_to_inference(tmp_path, sample_root, weights):
    image = truncate(shutil.copy(sample_root / "data" / IMAGE.format(id=1), tmp_path / "cut.tif"))
    out = tmp_path / "out"
    result = run_script("inference.py", "--images", str(image), "--weights", str(weights["tiny"]), "--out", str(out),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "cut.tif", "truncated or corrupt", "replace it")
    assert_left_nothing(out, {"config.json"})


def test_garbage_tiff_given_to_inference(tmp_path, sample_root, weights):
    out = tmp_path / "out"
    result = run_script("inference.py", "--images", str(garbage(tmp_path / "noise.tif")), "--weights",
                        str(weights["tiny"]), "--out", str(out), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "noise.tif", "cannot open this image", "replace it")
    assert not out.exists()


@pytest.mark.parametrize("damage,message", [(truncate, "truncated or corrupt"), (garbage, "cannot open this image")])
def test_damaged_image_given_to_extraction(tmp_path, sample_root, damage, message):
    data = copy_dataset(sample_root, tmp_path)
    damage(data / IMAGE.format(id=2))
    result = run_script("extract_images.py", *arguments(tmp_path, data))
    assert_one_line_error(result, "area2.tif", message)
    assert_left_nothing(tmp_path / "patches")


def test_truncated_colour_ground_truth(tmp_path, sample_root):
    data = copy_dataset(sample_root, tmp_path)
    truncate(data / COLOR_GT.format(id=3), keep=0.3)
    shutil.rmtree(data / "labels")
    result = run_script("convert_gt.py", "--from-color", *arguments(tmp_path, data))
    assert_one_line_error(result, "area3.tif", "truncated or corrupt")
    assert not (data / LABELS.format(id=3)).exists()
    assert not [p for p in (data / "labels").iterdir() if p.name.startswith(".")]


def test_png_named_tif_is_read_by_its_content(tmp_path, sample_root, weights):
    """Decided: GDAL recognises a format by its content, so a PNG named .tif is simply read."""
    pixels = random_image(70, 90)
    png = tmp_path / "scenes" / "scene.png"
    png.parent.mkdir()
    with rasterio.open(png, "w", driver="PNG", width=90, height=70, count=3, dtype="uint8") as dst:
        dst.write(pixels)
    shutil.copy(png, tmp_path / "scenes" / "renamed.tif")
    out = tmp_path / "out"
    result = run_script("inference.py", "--images", str(tmp_path / "scenes"), "--weights", str(weights["tiny"]),
                        "--out", str(out), *arguments(tmp_path, sample_root / "data"))
    assert result.returncode == 0, result.stderr
    # not georeferenced: PNG outputs, the same labels for both names
    assert np.array_equal(read(out / "renamed_labels.png"), read(out / "scene_labels.png"))
    # the weights that labelled, as the config beside the maps records them (review: it named MODEL_FILE's)
    assert json.loads((out / "config.json").read_text())["config"]["MODEL_FILE"] == str(weights["tiny"])
    assert json.loads((out / "metrics.json").read_text())["weights"] == str(weights["tiny"].absolute())


# ---------------------------------------------------------------- sizes
def test_ground_truth_of_another_size_in_inference(tmp_path, sample_root, weights):
    data = copy_dataset(sample_root, tmp_path)
    write_tif(data / ERODED_GT.format(id=4), random_image(100, 120))
    result = run_script("inference.py", "--weights", str(weights["tiny"]), *arguments(tmp_path, data))
    assert_one_line_error(result, "area4_noBoundary.tif", "120 x 100 px", "same grid")
    assert not (tmp_path / "inference").exists()


def test_tile_smaller_than_patch_refused_by_extraction(tmp_path, sample_root):
    data = copy_dataset(sample_root, tmp_path)
    write_tif(data / IMAGE.format(id=2), random_image(40, 50))
    write_tif(data / LABELS.format(id=2), np.zeros((1, 40, 50), np.uint8))
    result = run_script("extract_images.py", *arguments(tmp_path, data))
    assert_one_line_error(result, "area2.tif", "50 x 40 px", "smaller than PATCH_SIZE 64", "lower PATCH_SIZE")
    assert_left_nothing(tmp_path / "patches")


def test_test_tile_smaller_than_patch_left_out_of_test_patches(tmp_path, sample_root, capsys):
    """Nothing trains on test patches, and inference labels the tile whole: it is no reason to stop extraction."""
    from eoseg.config import load_config
    from eoseg.extract import extract_patches, read_manifest

    data = copy_dataset(sample_root, tmp_path)
    write_tif(data / IMAGE.format(id=4), random_image(40, 50))
    write_tif(data / LABELS.format(id=4), np.zeros((1, 40, 50), np.uint8))
    cfg = load_config(overrides=arguments(tmp_path, data, TRAIN_IDS=["1", "2"], TEST_IDS=["3", "4"]))
    manifest = extract_patches(cfg, cfg.PATCHES_DIR, progress=True)
    assert manifest["counts"]["test"] > 0
    _, rows = read_manifest(cfg.PATCHES_DIR)
    assert {row["tile"] for row in rows if row["split"] == "test"} == {"3"}
    assert "note: test tiles 4 are smaller than PATCH_SIZE 64: no test patch of them" in capsys.readouterr().err


def test_image_smaller_than_window_padded_by_inference(tmp_path, sample_root, weights):
    source = write_tif(tmp_path / "small.tif", random_image(20, 30), like=sample_root / "data" / IMAGE.format(id=1))
    result = run_script("inference.py", "--images", str(source), "--weights", str(weights["tiny"]),
                        "--out", str(tmp_path / "out"), *arguments(tmp_path, sample_root / "data"))
    assert result.returncode == 0, result.stderr
    labels = read(tmp_path / "out" / "small_labels.tif")
    assert labels.shape == (1, 20, 30) and (labels < 6).all()


# ---------------------------------------------------------------- palettes
def test_colours_outside_the_palette(tmp_path, sample_root):
    colours = read(sample_root / "data" / COLOR_GT.format(id=1))
    colours[:, :3, :5] = np.array([12, 34, 56], np.uint8)[:, None, None]
    source = write_tif(tmp_path / "gt.tif", colours)
    result = run_script("convert_gt.py", str(source), "--from-color", "--out", str(tmp_path / "labels"),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "gt.tif", "15 pixels", "(12, 34, 56)", "UNKNOWN_LABELS_TO_IGNORE=True",
                          "--unknown-to-ignore")
    assert not list(tmp_path.glob("labels/*"))  # refused once every row is read: no map written
    result = run_script("convert_gt.py", str(source), "--from-color", "--out", str(tmp_path / "labels"),
                        *arguments(tmp_path, sample_root / "data", UNKNOWN_LABELS_TO_IGNORE=True))  # as the flag does
    assert result.returncode == 0, result.stderr
    assert (read(tmp_path / "labels" / "gt.tif")[0, :3, :5] == 255).all()


def test_colours_outside_the_palette_in_the_eroded_ground_truth_scored(tmp_path, sample_root, weights):
    """A stray colour in a test tile's colour eroded ground truth: check_data says so, and inference refuses it
    before labelling, not after; UNKNOWN_LABELS_TO_IGNORE=True reads it as unlabelled in both."""
    from eoseg.config import load_config
    from eoseg.datacheck import check_dataset

    data = copy_dataset(sample_root, tmp_path)
    eroded = data / ERODED_GT.format(id=4)
    colours = read(eroded)
    colours[:, :3, :5] = np.array([12, 34, 56], np.uint8)[:, None, None]
    write_tif(eroded, colours, like=eroded)
    problem = f"{eroded}: 15 pixels have colours outside the palette ((12, 34, 56) x 15 px)"
    for unknown_to_ignore in (False, True):
        cfg = load_config(overrides=arguments(tmp_path, data, UNKNOWN_LABELS_TO_IGNORE=unknown_to_ignore))
        assert any(text.startswith(problem) for text in check_dataset(cfg).problems) is not unknown_to_ignore
        out = tmp_path / f"out_{unknown_to_ignore}"
        result = run_script("inference.py", "--tiles", "4", "--weights", str(weights["tiny"]), "--out", str(out),
                            *arguments(tmp_path, data, UNKNOWN_LABELS_TO_IGNORE=unknown_to_ignore))
        if unknown_to_ignore:
            assert result.returncode == 0, result.stderr
        else:
            assert_one_line_error(result, problem, "UNKNOWN_LABELS_TO_IGNORE=True")
            assert not out.exists()  # refused before labelling


def test_numeric_labels_given_as_colour_ground_truth(tmp_path, sample_root):
    result = run_script("convert_gt.py", str(sample_root / "data" / LABELS.format(id=1)), "--from-color",
                        "--out", str(tmp_path / "labels"), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "area1.tif", "already a numeric label map")
    assert not (tmp_path / "labels").exists()


# ---------------------------------------------------------------- bands and data types
def test_too_few_bands_for_inference(tmp_path, sample_root, weights):
    source = write_tif(tmp_path / "two.tif", random_image(50, 60, bands=2))
    result = run_script("inference.py", "--images", str(source), "--weights", str(weights["tiny"]),
                        "--out", str(tmp_path / "out"), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "two.tif", "has 2 bands", "BANDS")
    assert not (tmp_path / "out").exists()  # refused before the model loads


def test_too_few_bands_for_extraction(tmp_path, sample_root):
    data = copy_dataset(sample_root, tmp_path)
    image = data / IMAGE.format(id=3)
    write_tif(image, read(image)[:2])
    result = run_script("extract_images.py", *arguments(tmp_path, data))
    assert_one_line_error(result, "area3.tif", "has 2 bands", "set BANDS")
    assert_left_nothing(tmp_path / "patches")


def test_tiles_of_mixed_data_types_refused(tmp_path, sample_root):
    data = copy_dataset(sample_root, tmp_path)
    image = data / IMAGE.format(id=2)
    write_tif(image, read(image).astype(np.uint16) * 40, like=image)
    result = run_script("extract_images.py", *arguments(tmp_path, data))
    assert_one_line_error(result, "area2.tif", "uint16", "uint8", "one data type")
    assert_left_nothing(tmp_path / "patches")


def test_bands_of_several_data_types_in_one_image_refused(tmp_path, sample_root):
    """A VRT stacking a uint8 RGB and a uint16 near-infrared, the usual way to add NIR: refused in one line naming
    each band's type and the gdal_translate line that gives them one (GDAL reads a window's bands as one array)."""
    data = copy_dataset(sample_root, tmp_path)
    image = data / IMAGE.format(id=3)
    nir = write_tif(tmp_path / "nir.tif", read(image)[:1].astype(np.uint16) * 16, like=image)
    sources = [(image, 1, "Byte"), (image, 2, "Byte"), (image, 3, "Byte"), (nir, 1, "UInt16")]
    with rasterio.open(image) as src:
        width, height, transform, crs = src.width, src.height, src.transform, src.crs.to_wkt()
    bands = "".join(f'<VRTRasterBand dataType="{kind}" band="{index}"><SimpleSource><SourceFilename>{path}'
                    f'</SourceFilename><SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>'
                    for index, (path, band, kind) in enumerate(sources, 1))
    (data / "top" / "stacked3.vrt").write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{crs.replace("<", "&lt;")}</SRS><GeoTransform>'
        f'{", ".join(str(value) for value in transform.to_gdal())}</GeoTransform>{bands}</VRTDataset>')
    result = run_script("extract_images.py", *arguments(tmp_path, data, IMAGE_PATTERN="top/stacked{id}.vrt",
                                                          TRAIN_IDS=["3"], TEST_IDS=[], **FOUR_BANDS))
    assert_one_line_error(result, "stacked3.vrt", "band 3 uint8, band 4 uint16", "gdal_translate -of VRT -ot UInt16")
    assert_left_nothing(tmp_path / "patches")


def test_16_bit_imagery_through_its_declared_normalisation(tmp_path, sample_root):
    """Decided: any data type works through NORM_MEAN/NORM_STD, given on its raw scale.

    uint8 pixels x 257 fill uint16 exactly; with NORM_STD 65535 instead of 255 the network
    sees the same inputs, so the same weights give the same labels.
    """
    pixels = random_image(90, 110)
    like = sample_root / "data" / IMAGE.format(id=1)
    write_tif(tmp_path / "in8" / "scene.tif", pixels, like=like)
    write_tif(tmp_path / "in16" / "scene.tif", pixels.astype(np.uint16) * 257, like=like)
    torch.manual_seed(0)
    model = model_from_config(make_tiny_config(tmp_path))
    labels = []
    for folder, std in (("in8", 255.0), ("in16", 65535.0)):
        norm = {"NORM_STD": [std] * 3}
        weights = save_checkpoint(tmp_path / f"{folder}.pt", make_tiny_config(tmp_path, **norm), model, iteration=0)
        result = run_script("inference.py", "--images", str(tmp_path / folder), "--weights", str(weights),
                            "--out", str(tmp_path / f"out_{folder}"), *arguments(tmp_path, sample_root / "data", **norm))
        assert result.returncode == 0, result.stderr
        labels.append(read(tmp_path / f"out_{folder}" / "scene_labels.tif"))
    assert (labels[0] == labels[1]).mean() > 0.999


def weights_trained_on(pixels: np.ndarray, tmp_path: Path) -> tuple[Path, dict]:
    """Untrained tiny weights that record ``pixels`` (uint16) as their training values, and the normalisation
    settings fitted to them."""
    trained = pixels.reshape(3, -1).astype(np.float64)
    statistics = {"mean": trained.mean(axis=1).tolist(), "std": trained.std(axis=1).tolist()}
    norm = {"NORM_MEAN": statistics["mean"], "NORM_STD": statistics["std"]}
    cfg = make_tiny_config(tmp_path, **norm)
    torch.manual_seed(0)
    weights = save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), iteration=0,
                              trained_on={"input_dtype": "uint16", "input_statistics": statistics})
    return weights, norm


def test_images_on_another_value_scale(tmp_path, sample_root):
    """Weights trained on 12-bit values refuse the same scene stretched to 16 bits (16 times the values:
    one data type, so the type check passes) and nothing is written; the refusal names the
    INFER_VALUE_SCALE that labels it as the 12-bit scene is labelled. At 2.5 times, and with
    INFER_VALUE_CHECK=False, the scene is labelled with a note naming the factor. The scene cast to
    8 bits (a sixteenth of the values) is refused for its type, and labelled with INFER_VALUE_SCALE=16."""
    pixels = random_image(90, 110).astype(np.uint16) * 16  # 12-bit values, as the weights were trained on
    like = sample_root / "data" / IMAGE.format(id=1)
    weights, norm = weights_trained_on(pixels, tmp_path)

    def label(name: str, values: np.ndarray, **extra):
        scene = write_tif(tmp_path / name / "scene.tif", values, like=like)
        return run_script("inference.py", "--images", str(scene), "--weights", str(weights), "--out",
                          str(tmp_path / f"out_{name}"), *arguments(tmp_path, sample_root / "data", **norm, **extra))

    result = label("12bit", pixels)
    assert result.returncode == 0 and "times those" not in result.stderr, result.stderr
    stretched = pixels * 16
    result = label("16bit", stretched)
    assert_one_line_error(result, "scene.tif", "16 times those the weights were trained on", "INFER_VALUE_SCALE=0.0625",
                          "INFER_VALUE_CHECK=False")
    assert not (tmp_path / "out_16bit").exists()
    for name, values, extra, factor in (("brighter", (pixels * 2.5).astype(np.uint16), {}, 2.5),
                                        ("unchecked", stretched, {"INFER_VALUE_CHECK": False}, 16)):
        result = label(name, values, **extra)
        assert result.returncode == 0, result.stderr
        assert f"its values are {factor:.2g} times those the weights were trained on" in result.stderr
        assert (tmp_path / f"out_{name}" / "scene_labels.tif").is_file()
    cast = (pixels // 16).astype(np.uint8)
    refused = label("8bit", cast)
    assert_one_line_error(refused, "uint8", "uint16", "INFER_VALUE_SCALE")
    suggested = re.search(r"INFER_VALUE_SCALE=([0-9.]+) \(([0-9.]+) measured on its values\)", refused.stderr)
    assert suggested.group(1) == "16" and 15 < float(suggested.group(2)) < 17.5  # the values were divided by 16
    for name, values, factor in (("16bit", stretched, 0.0625), ("8bit", cast, 16)):
        result = label(name, values, INFER_VALUE_SCALE=factor)
        assert result.returncode == 0 and "times those" not in result.stderr, result.stderr
        np.testing.assert_array_equal(read(tmp_path / f"out_{name}" / "scene_labels.tif"),
                                      read(tmp_path / "out_12bit" / "scene_labels.tif"))


def test_16_bit_tiles_extract_and_pack(tmp_path, sample_root):
    data = copy_dataset(sample_root, tmp_path)
    for tile in "1234":
        image = data / IMAGE.format(id=tile)
        write_tif(image, read(image).astype(np.uint16) * 39, like=image)  # reflectance-like, 0..10000
    args = arguments(tmp_path, data, NORM_STD=[10000.0] * 3)
    for script in ("extract_images.py", "create_lmdb.py"):
        result = run_script(script, *args)
        assert result.returncode == 0, result.stderr
    from eoseg.lmdb_store import LmdbPatches

    patches = LmdbPatches(tmp_path / "lmdb" / "train.lmdb")
    assert patches.meta["dtype"] == "uint16" and patches[0][0].dtype == np.uint16
    assert patches.meta["signature"]["normalization"]["std"] == [10000.0] * 3


def test_nan_infinite_and_nodata_pixels_in_inference(tmp_path, sample_root, weights):
    like = sample_root / "data" / IMAGE.format(id=1)
    floats = (random_image(80, 100) / 255).astype(np.float32)
    floats[:, 10:20, 30:40] = np.nan
    floats[1, 10:20, 40:50] = np.inf  # infinity in one band is no data either, not a pixel 3.4e38 bright
    # -9999 in one band: the band another sensor did not cover there
    one_band = (random_image(80, 100) / 255).astype(np.float32)
    one_band[0, 30:45, 60:90] = -9999.0
    masked = random_image(80, 100)
    masked[:, 50:70, 5:25] = 0
    masked[1, 5:15, 60:80] = 0  # a dark pixel holds 0 in one band of an 8-bit image: data, as GDAL has it
    write_tif(tmp_path / "scenes" / "floats.tif", floats, like=like)
    write_tif(tmp_path / "scenes" / "one_band.tif", one_band, nodata=-9999.0, like=like)
    write_tif(tmp_path / "scenes" / "masked.tif", masked, nodata=0, like=like)
    result = run_script("inference.py", "--images", str(tmp_path / "scenes"), "--weights", str(weights["tiny"]),
                        "--out", str(tmp_path / "out"), *arguments(tmp_path, sample_root / "data"))
    assert result.returncode == 0, result.stderr
    for name, (rows, cols) in (("floats", (slice(10, 20), slice(30, 50))), ("masked", (slice(50, 70), slice(5, 25))),
                               ("one_band", (slice(30, 45), slice(60, 90)))):
        labels = read(tmp_path / "out" / f"{name}_labels.tif")[0]
        inside = np.zeros(labels.shape, bool)
        inside[rows, cols] = True
        assert (labels[inside] == 255).all() and (labels[~inside] < 6).all(), name


def test_nan_and_nodata_pixels_in_extraction(tmp_path, sample_root):
    """No data in an image means no training signal: IGNORE_LABEL in the label patches, no NaN in the image ones."""
    data = copy_dataset(sample_root, tmp_path)
    for tile in "1234":
        image = data / IMAGE.format(id=tile)
        floats = read(image).astype(np.float32)
        nodata = None
        if tile == "1":
            floats[:, :20, :30] = np.nan
        if tile == "2":
            floats[:, 100:, 100:] = -1.0
            nodata = -1.0
        write_tif(image, floats, nodata=nodata, like=image)
    result = run_script("extract_images.py", *arguments(tmp_path, data))
    assert result.returncode == 0, result.stderr
    patches = tmp_path / "patches"
    corner = np.load(patches / "labels" / "train" / "1_0_0_orig.npy")
    assert (corner[:20, :30] == 255).all() and (corner[20:] != 255).any()
    assert not np.isnan(np.load(patches / "images" / "train" / "1_0_0_orig.npy")).any()
    far = np.load(patches / "labels" / "train" / "2_96_96_orig.npy")
    assert (far[4:, 4:] == 255).all() and (far[:4] != 255).any()


# ---------------------------------------------------------------- missing things
def test_missing_dataset_folder(tmp_path):
    result = run_script("extract_images.py", *arguments(tmp_path, tmp_path / "nowhere"))
    assert_one_line_error(result, "tile 1", "nowhere", "check DATA_ROOT")
    assert_left_nothing(tmp_path / "patches")


def test_empty_image_folder(tmp_path, sample_root, weights):
    (tmp_path / "empty").mkdir()
    result = run_script("inference.py", "--images", str(tmp_path / "empty"), "--weights", str(weights["tiny"]),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "empty", "holds no raster files")


@pytest.mark.parametrize("make", [lambda p: p, lambda p: p.mkdir() or p], ids=["missing", "empty"])
def test_missing_or_empty_patches_folder(tmp_path, sample_root, make):
    patches = make(tmp_path / "patches")
    result = run_script("create_lmdb.py", *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, str(patches), "run extract_images.py first")
    assert_left_nothing(tmp_path / "lmdb")


def test_an_empty_split_says_which_list_is_empty(tmp_path, sample_root, weights):
    result = run_script("inference.py", "--split", "official_test", "--weights", str(weights["tiny"]),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "--split official_test labels the tiles of OFFICIAL_TEST_IDS, and it is empty")


def test_tile_id_without_a_file(tmp_path, sample_root, weights):
    result = run_script("inference.py", "--tiles", "4", "42", "--weights", str(weights["tiny"]),
                        *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "tile 42", "area42.tif", "IMAGE_PATTERN")
    result = run_script("convert_gt.py", "--from-color", *arguments(tmp_path, sample_root / "data", TEST_IDS=["42"]))
    assert_one_line_error(result, "tile 42", "colour ground truth not found")


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("text,fragments", [
    ("PATCH_SIZE = (64\n", ["bad.py, line 1", "syntax error"]),
    ("PATCH_SIZ = 64\n", ["bad.py", "unknown config name PATCH_SIZ", "did you mean PATCH_SIZE"]),
    ("TRAIN_IDS = 3\n", ["bad.py", "TRAIN_IDS expects a list of str"]),
])
def test_bad_config_file(tmp_path, text, fragments):
    (tmp_path / "bad.py").write_text(text)
    assert_one_line_error(run_script("convert_gt.py", "--from-color", "--config", str(tmp_path / "bad.py")), *fragments)


@pytest.mark.parametrize("override,fragments", [
    ("WINDOW=abc", ["WINDOW expects an int", "got 'abc'"]),
    ("WINDOW=1.5", ["WINDOW expects an int"]),
    ("NORM_STD=['a', 'b', 'c']", ["NORM_STD expects a list of float"]),
    ("NORM_MEAN=[None, 0, 0]", ["NORM_MEAN expects a list of float"]),
    ("TEST_IDS=[[4]]", ["TEST_IDS expects a list of str"]),
    ("PALETTE=[[1, 2, 300], [1, 2, 3], [1, 2, 4], [1, 2, 5], [1, 2, 6], [1, 2, 7]]", ["PALETTE", "0..255", "[1, 2, 300]"]),
    ("IGNORE_COLOR=[1, 2]", ["IGNORE_COLOR", "[R, G, B]", "[1, 2]"]),
    ("CLASS_WEIGHTS=['x', 'x', 'x', 'x', 'x', 'x']", ["CLASS_WEIGHTS holds one number per class"]),
    ("STRIDES=3", ["unknown config name STRIDES", "did you mean STRIDE"]),
])
def test_bad_override(override, fragments):
    assert_one_line_error(run_script("convert_gt.py", "--from-color", override), *fragments)


@pytest.mark.parametrize("override,fragments", [
    ("OPTIMIZER=adam", ["OPTIMIZER must be one of 'sgd', 'adamw'", "got 'adam'"]),
    ("LR_SCHEDULE=linear", ["LR_SCHEDULE must be one of 'step', 'poly', 'cosine'"]),
    ("LOSS=dice", ["LOSS must be one of 'ce', 'ce_dice', 'focal', 'ohem'"]),
    ("TRAIN_MINUTES=-5", ["TRAIN_MINUTES must be >= 0", "got -5.0"]),
    ("WARMUP_FRACTION=1", ["WARMUP_FRACTION must be below 1"]),
])
def test_bad_recipe_refused_before_training(tmp_path, override, fragments):
    assert_one_line_error(run_script("training.py", f"TRAIN_DIR={tmp_path / 'train'}", override), *fragments)
    assert not (tmp_path / "train").exists()


def test_tile_ids_typed_as_numbers_are_their_text():
    from eoseg.config import load_config

    assert load_config(overrides=["TRAIN_IDS=[1, 3]"]).TRAIN_IDS == ["1", "3"]


# ---------------------------------------------------------------- weights
@pytest.mark.parametrize("name,fragments", [
    ("classes4", ["trained for 4 classes", "the config has 6"]),
    ("bands4", ["trained for 4 input bands", "the config has 3"]),
])
def test_weights_for_other_classes_or_bands(tmp_path, sample_root, weights, name, fragments):
    result = run_script("inference.py", "--weights", str(weights[name]), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, f"{name}.pt", *fragments)
    assert not (tmp_path / "inference").exists()


def test_truncated_weights(tmp_path, sample_root, weights):
    cut = truncate(shutil.copy(weights["tiny"], tmp_path / "cut.pt"))
    result = run_script("inference.py", "--weights", str(cut), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "cut.pt", "truncated or not a torch file")


@pytest.mark.parametrize("content", [b"", b"\x80\x02"])  # empty (a copy interrupted at once); a pickle's first bytes
def test_empty_or_nearly_empty_weights(tmp_path, sample_root, content):
    """torch raises EOFError('') for these, whose empty message the error line must not trip on."""
    stub = tmp_path / "stub.pt"
    stub.write_bytes(content)
    result = run_script("inference.py", "--weights", str(stub), *arguments(tmp_path, sample_root / "data"))
    assert_one_line_error(result, "stub.pt", "not a loadable weights file", "empty" if not content else "EOFError")


def test_a_zero_collar_without_a_nodata_tag_is_named_as_the_cause(tmp_path, sample_root):
    """A scene in a black collar (no nodata tag) reads as darker values: the refusal names NODATA_ZERO, not only a
    value scale that would label the collar as land; a smaller collar is noted; with NODATA_ZERO nothing is said."""
    pixels = random_image(64, 64).astype(np.uint16) * 16
    like = sample_root / "data" / IMAGE.format(id=1)
    weights, norm = weights_trained_on(pixels, tmp_path)

    def label(name: str, side: int, **extra):
        collared = np.zeros((3, side, side), np.uint16)
        collared[:, :64, :64] = pixels
        scene = write_tif(tmp_path / name / "scene.tif", collared, like=like)
        return run_script("inference.py", "--images", str(scene), "--weights", str(weights), "--out",
                          str(tmp_path / f"out_{name}"), *arguments(tmp_path, sample_root / "data", **norm, **extra))

    assert_one_line_error(label("wide", 256), "times those the weights were trained on", "are 0 in every band with no "
                          "nodata tag", "NODATA_ZERO=True")
    result = label("narrow", 80)
    assert result.returncode == 0 and "are 0 in every band with no nodata tag" in result.stderr, result.stderr
    result = label("masked", 256, NODATA_ZERO=True)
    assert result.returncode == 0 and "nodata tag" not in result.stderr, result.stderr
