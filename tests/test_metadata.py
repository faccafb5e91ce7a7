"""eoseg.metadata: the data signature artifacts record, and the checks that refuse a record of another config."""

from __future__ import annotations

import pytest

from eoseg.errors import EosegError
from eoseg.metadata import CHECKED_FIELDS, check_compatible, check_stored_data, data_signature
from eoseg.normalization import TRAINING_MEAN_FILL

from .conftest import make_tiny_config

NDSM = {"pattern": "ndsm/{id}.tif", "bands": [1], "band_names": ["nDSM"], "mean": [0.0], "std": [10.0]}


@pytest.fixture
def cfg(tmp_path):
    return make_tiny_config(tmp_path)


def test_the_signature_records_what_the_data_mean(cfg):
    signature = data_signature(cfg.replace(EXTRA_SOURCES=[NDSM]))
    assert signature["class_names"] == list(cfg.CLASS_NAMES) and signature["ignore_label"] == cfg.IGNORE_LABEL
    assert signature["band_names"] == ["IR", "R", "G", "nDSM"] and signature["bands"] == [1, 2, 3]
    assert signature["normalization"]["std"] == [255.0, 255.0, 255.0, 10.0]
    assert signature["patch_size"] == 64 and data_signature(cfg, patch_size=32)["patch_size"] == 32
    assert signature["train_tiles"] == ["1", "2", "3"] and signature["holdout"] is None
    # what the source reads, not how it is normalised (that is "normalization")
    (source,) = signature["made_from"]["EXTRA_SOURCES"]
    assert source["pattern"] == "ndsm/{id}.tif" and source["bands"] == [1]
    assert set(source) <= {"pattern", "bands", "resampling"}


def test_weights_record_no_training_tiles_or_how_they_were_cut(cfg):
    signature = data_signature(cfg, holdout=False)
    assert not {"holdout", "train_tiles", "made_from"} & set(signature)
    assert set(CHECKED_FIELDS) <= set(signature)


def test_settings_are_recorded_as_they_read_back_from_json(cfg):
    made_from = data_signature(cfg.replace(ROTATIONS=(90, 180)))["made_from"]
    assert made_from["ROTATIONS"] == [90, 180] and made_from["TRAIN_STRIDE"] == cfg.TRAIN_STRIDE


def test_a_differing_field_is_refused_by_name(cfg):
    recorded = data_signature(cfg)
    check_compatible(recorded, data_signature(cfg.replace(ITERATIONS=99)), "weights w.pt")  # not a data setting
    with pytest.raises(EosegError, match=r"^weights w.pt was made with band_names = \['IR', 'R', 'G'\], but the config "
                                         r"has \['R', 'G', 'B'\]; use the config it was made with or rebuild it$"):
        check_compatible(recorded, data_signature(cfg.replace(BAND_NAMES=["R", "G", "B"])), "weights w.pt")
    other_palette = data_signature(cfg.replace(PALETTE=[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 1]]))
    with pytest.raises(EosegError, match="palette"):
        check_compatible(recorded, other_palette, "weights w.pt")
    check_compatible(recorded, other_palette, "weights w.pt", fields=("class_names", "band_names"))  # only those


def test_fields_recorded_later_are_compared_only_where_recorded(cfg):
    old = {key: value for key, value in data_signature(cfg).items() if key not in ("bands", "label_values")}
    check_compatible(old, data_signature(cfg.replace(BANDS=[3, 2, 1])), "old.lmdb", fields=("bands",))  # not recorded
    check_compatible(old, data_signature(cfg), "old.lmdb", fields=("label_values",))  # absent means none: as now
    with pytest.raises(EosegError, match=r"old.lmdb was made with label_values = \[\]"):
        check_compatible(old, data_signature(cfg.replace(LABEL_VALUES={"0": 0, "255": 1})), "old.lmdb",
                         fields=("label_values",))


def test_stored_patches_hold_raw_pixels_of_the_settings_that_read_them(cfg):
    recorded = data_signature(cfg)
    # raw pixels, their nodata the training tiles' mean: another normalisation reads them alike
    other = data_signature(cfg.replace(NORM_MEAN=[1.0, 1.0, 1.0], NORM_STD=[1.0, 1.0, 1.0]))
    check_stored_data(recorded, other, "train.lmdb", TRAINING_MEAN_FILL)
    # made before that record: their nodata pixels hold NORM_MEAN
    with pytest.raises(EosegError, match=r"train.lmdb was made with NORM_MEAN \[0.0, 0.0, 0.0\] \(the value of its "
                                         r"nodata pixels\), but the config has \[1.0, 1.0, 1.0\]"):
        check_stored_data(recorded, other, "train.lmdb")
    with pytest.raises(EosegError, match=r"train.lmdb was made with FLIPS=True, but the config has FLIPS=False; .*--force"):
        check_stored_data(recorded, data_signature(cfg.replace(FLIPS=False)), "train.lmdb")
    with pytest.raises(EosegError, match="patch_size = 64"):
        check_stored_data(recorded, data_signature(cfg, patch_size=32), "train.lmdb")
    older = {key: value for key, value in recorded.items() if key != "made_from"}
    check_stored_data(older, data_signature(cfg.replace(FLIPS=False)), "train.lmdb")  # made before it was recorded


def test_patches_are_stale_when_a_file_read_with_a_source_changes(tmp_path):
    """A shapefile's attributes edited in QGIS change only its .dbf, a GeoPackage kept open its -wal, a tile given as
    a VRT its source: the patches cut before were trained on with exit 0 (review). Those files are recorded too; an
    SQLite -shm, which readers write, is not."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from eoseg.metadata import check_source_files, source_files_record

    for name in ("labels.shp", "labels.dbf", "labels.prj", "labels.gpkg", "labels.gpkg-wal", "labels.gpkg-shm",
                 "labels.qml", "labels.shp.xml"):  # a GIS's style and metadata are no part (code review)
        (tmp_path / name).write_bytes(b"0" * 10)
    tile = tmp_path / "tile.tif"
    with rasterio.open(tile, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8", crs="EPSG:32632",
                       transform=from_origin(0, 4, 1, 1)) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    (tmp_path / "tile.vrt").write_text(
        '<VRTDataset rasterXSize="4" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        '<SourceFilename relativeToVRT="1">tile.tif</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand></VRTDataset>")
    record = source_files_record(tmp_path, [tmp_path / "labels.shp", tmp_path / "labels.gpkg", tmp_path / "tile.vrt"])
    assert sorted(record) == ["labels.dbf", "labels.gpkg", "labels.gpkg-wal", "labels.prj", "labels.shp", "tile.tif",
                              "tile.vrt"]
    (tmp_path / "labels.gpkg-shm").write_bytes(b"1" * 12)  # a reader's index
    check_source_files(record, tmp_path, "patches")
    for changed in ("labels.dbf", "labels.gpkg-wal", "tile.tif"):
        edited = tmp_path / changed
        original = edited.read_bytes()
        edited.write_bytes(original + b"1")
        with pytest.raises(EosegError, match=f"patches was cut from {changed} under the DATA_ROOT of then"):
            check_source_files(record, tmp_path, "patches")
        edited.write_bytes(original)
