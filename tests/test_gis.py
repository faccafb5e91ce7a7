"""eoseg.gis and polygonize.py: Cloud-Optimized GeoTIFFs and class polygons for GIS software."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from pyogrio.raw import read as read_vector
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

import polygonize as polygonize_script
from eoseg.errors import EosegError
from eoseg.gis import brief_crs, polygonize_labels, to_cog
from eoseg.io import RasterInfo, RasterWriter

from .conftest import SHARED, run_script
from .test_cli import assert_one_line_error

CLASSES = ["impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"]
IGNORE = 255
PIXEL = 0.5  # metres
TRANSFORM = from_origin(500000.0, 5400000.0, PIXEL, PIXEL)  # UTM zone 32N


def write_labels(path, labels, crs="EPSG:32632", transform=TRANSFORM, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                       dtype=labels.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(labels, 1)
        if labels.dtype == np.uint8:
            dst.write_colormap(1, {i: (40 * i, 255 - 40 * i, 0, 255) for i in range(len(CLASSES))})
    return path


def scene(height=180, width=240, seed=0) -> np.ndarray:
    """Blocky regions of every class, single-pixel islands, holes, and ignored pixels."""
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(0, len(CLASSES), (height // 12, width // 12)), np.ones((12, 12), np.int64)).astype(np.uint8)
    islands = rng.random(labels.shape) < 0.003
    labels[islands] = (labels[islands] + 1) % len(CLASSES)
    labels[:6, :9] = IGNORE
    return labels


def rasterized(path, shape, transform):
    meta, _, geometries, (class_ids, class_names) = read_vector(path)
    polygons = shapely.from_wkb(geometries)
    burnt = rasterio.features.rasterize(zip(polygons, class_ids), out_shape=shape, transform=transform, fill=IGNORE, dtype="uint8")
    return meta, polygons, class_ids, class_names, burnt


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_polygons_reproduce_the_label_map(tmp_path, suffix):
    labels = scene()
    source = write_labels(tmp_path / "labels.tif", labels)
    summary = polygonize_labels(source, tmp_path / f"classes{suffix}", CLASSES, [IGNORE])
    meta, polygons, class_ids, class_names, burnt = rasterized(summary.path, labels.shape, TRANSFORM)
    assert meta["crs"] == "EPSG:32632" and summary.crs == "EPSG:32632"
    assert meta["geometry_type"] == "Polygon" and list(meta["fields"]) == ["class_id", "class_name"]
    assert summary.features == len(polygons) > 100
    assert (burnt == labels).mean() >= 0.99
    assert (burnt == labels).all()  # without simplification the polygons follow the pixel edges exactly
    assert [CLASSES[i] for i in class_ids] == list(class_names)
    assert set(class_ids) == set(range(len(CLASSES)))


@pytest.mark.parametrize("transform", [TRANSFORM, Affine(PIXEL, 0, 500000.0, 0, PIXEL, 5400000.0),
                                       Affine(-PIXEL, 0, 500000.0, 0, -PIXEL, 5400000.0)],
                         ids=["north-up", "south-up", "west-pointing"])
@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_polygon_rings_follow_the_right_hand_rule_on_any_grid(tmp_path, transform, suffix):
    """RFC 7946: outer rings counter-clockwise, holes clockwise. A grid whose rows run north or columns west mirrors
    the rings traced on its pixels: they were written clockwise around, counter-clockwise in holes."""
    labels = scene(60, 60)
    source = write_labels(tmp_path / "labels.tif", labels, transform=transform)
    summary = polygonize_labels(source, tmp_path / f"classes{suffix}", CLASSES, [IGNORE], block_rows=7)  # seams merged too
    _, polygons, _, _, burnt = rasterized(summary.path, labels.shape, transform)
    holes = [ring for polygon in polygons for ring in polygon.interiors]
    assert holes and all(polygon.exterior.is_ccw for polygon in polygons) and not any(ring.is_ccw for ring in holes)
    assert (burnt == labels).all()


def test_min_area_and_simplification(tmp_path):
    labels = scene(seed=1)
    source = write_labels(tmp_path / "labels.tif", labels)
    min_area = 4 * PIXEL * PIXEL  # regions under four pixels go
    summary = polygonize_labels(source, tmp_path / "simple.gpkg", CLASSES, [IGNORE], simplify=2 * PIXEL, min_area=min_area)
    _, polygons, _, _, burnt = rasterized(summary.path, labels.shape, TRANSFORM)
    exact = polygonize_labels(source, tmp_path / "exact.gpkg", CLASSES, [IGNORE])
    assert summary.dropped > 0 and summary.features == exact.features - summary.dropped
    assert shapely.is_valid(polygons).all()
    assert min(shapely.area(polygons)) >= min_area * 0.5  # simplification moves edges a little
    # simplified together, neighbours stay edge to edge: no overlaps, and the islands' holes are filled
    union = shapely.union_all(polygons)
    assert shapely.area(polygons).sum() == pytest.approx(union.area, rel=1e-6)
    assert union.area == pytest.approx((labels != IGNORE).sum() * PIXEL * PIXEL, rel=0.01)
    assert sum(len(p.interiors) for p in polygons) < sum(len(p.interiors) for p in shapely.from_wkb(read_vector(exact.path)[2]))
    assert (burnt == labels).mean() > 0.95


@pytest.mark.parametrize("block_rows", [7, 1024])
def test_min_area_fills_small_islands_but_never_a_gap_of_unlabelled_pixels(tmp_path, block_rows):
    """A 6 x 6 px nodata gap in a tree region took the tree's class under POLYGON_MIN_AREA (review)."""
    labels = np.full((40, 40), 3, np.uint8)
    labels[10:13, 10:13] = IGNORE  # a gap in the mosaic, under the minimum area
    labels[25:27, 25:27] = 1  # a small island of another class
    labels[0:12, 30:40] = IGNORE  # a collar crossing block seams, beside the region
    source = write_labels(tmp_path / "labels.tif", labels)
    summary = polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE], min_area=10 * PIXEL * PIXEL,
                                block_rows=block_rows)
    burnt = rasterized(summary.path, labels.shape, TRANSFORM)[4]
    assert (burnt[labels == IGNORE] == IGNORE).all()  # no polygon over unlabelled pixels
    assert (burnt[25:27, 25:27] == 3).all() and (burnt[labels == 3] == 3).all()  # the island merged into the trees


def test_nodata_and_ignored_pixels_get_no_polygon(tmp_path):
    labels = scene().astype(np.int16)
    labels[-10:, -10:] = -1
    source = write_labels(tmp_path / "labels.tif", labels, nodata=-1)
    summary = polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE])
    burnt = rasterized(summary.path, labels.shape, TRANSFORM)[-1]
    assert (burnt[-10:, -10:] == IGNORE).all() and (burnt[:6, :9] == IGNORE).all()


def test_labels_outside_the_classes_are_refused(tmp_path):
    labels = scene()
    labels[50, 50] = 9
    source = write_labels(tmp_path / "labels.tif", labels)
    with pytest.raises(EosegError, match=r"class ids \[9\] but there are 6 classes"):
        polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE])
    with pytest.raises(EosegError, match="unsupported vector format"):
        polygonize_labels(source, tmp_path / "classes.shp", CLASSES, [IGNORE])


@pytest.mark.skipif(not (SHARED / "geotiff_real").is_dir(), reason="../shared/data/geotiff_real is not present")
def test_real_building_mask_on_its_utm_grid(tmp_path):
    # a real building footprint mask (0 / 255) and the real UTM GeoTIFF of the same 900 x 900 grid
    with rasterio.open(SHARED / "geotiff_real" / "sample_fp_mask.tif") as mask, \
         rasterio.open(SHARED / "geotiff_real" / "sample_geotiff.tif") as grid:
        labels = (mask.read(1) > 0).astype(np.uint8)
        crs, transform = grid.crs, grid.transform
    source = write_labels(tmp_path / "buildings.tif", labels, crs=crs, transform=transform)
    summary = polygonize_labels(source, tmp_path / "buildings.gpkg", ["background", "building"])
    meta, polygons, class_ids, _, burnt = rasterized(summary.path, labels.shape, transform)
    assert meta["crs"] == "EPSG:32616"
    assert (burnt == labels).mean() >= 0.99
    assert (np.asarray(class_ids) == 1).sum() > 10  # many separate buildings


def test_cloud_optimized_geotiff(tmp_path):
    labels = np.kron(scene(height=300, width=360, seed=2), np.ones((3, 3), np.uint8))  # 900 x 1080
    source = write_labels(tmp_path / "labels.tif", labels)
    cog = to_cog(source, tmp_path / "out" / "labels_cog.tif", blocksize=256)
    assert sorted(p.name for p in cog.parent.iterdir()) == ["labels_cog.tif"]
    with rasterio.open(source) as src, rasterio.open(cog) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.block_shapes[0] == (256, 256)
        factors = dst.overviews(1)
        assert factors[:2] == [2, 4] and max(labels.shape) / factors[-1] <= 256  # down to one block
        assert (dst.crs, dst.transform) == (src.crs, src.transform)
        assert dst.colormap(1)[1] == src.colormap(1)[1]
        assert np.array_equal(dst.read(1), labels)
        # the overview holds class ids only (nearest neighbour), never blends of them
        overview = dst.read(1, out_shape=(labels.shape[0] // 4, labels.shape[1] // 4))
        assert set(np.unique(overview)) <= set(np.unique(labels))
    # in place: the finished GeoTIFF is replaced by its COG only once that is complete
    to_cog(source, source)
    with rasterio.open(source) as converted:
        assert converted.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and np.array_equal(converted.read(1), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "out"]
    with pytest.raises(EosegError, match="must end in .tif"):
        to_cog(source, tmp_path / "labels.png")


def test_polygonize_script(tmp_path):
    source = write_labels(tmp_path / "labels.tif", scene())
    out = tmp_path / "vector" / "classes.gpkg"
    result = run_script("polygonize.py", str(source), "--out", str(out), "--min-area", "1", "--simplify", "0.5")
    assert result.returncode == 0, result.stderr
    assert "polygons to" in result.stdout and "EPSG:32632" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["classes.gpkg", "classes.gpkg.config.json"]
    help_text = run_script("polygonize.py", "--help")
    assert help_text.returncode == 0 and "--min-area A" in help_text.stdout and "KEY=VALUE" in help_text.stdout
    assert_one_line_error(run_script("polygonize.py", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "nope.gpkg")),
                          "label map not found")
    # an existing output is replaced only with --force
    out.write_bytes(b"earlier polygons")
    assert_one_line_error(run_script("polygonize.py", str(source), "--out", str(out)),
                          f"{out} exists; pass --force to replace it")
    assert out.read_bytes() == b"earlier polygons"
    assert run_script("polygonize.py", str(source), "--out", str(out), "--force").returncode == 0
    assert len(read_vector(out)[2]) > 100
    # never over the config's vector ground truth, even with --force (review: its 16 polygons became 5 predicted)
    truth = tmp_path / "truth.gpkg"
    truth.write_bytes(b"the ground truth polygons")
    config = tmp_path / "vector_labels.py"
    config.write_text(f"DATA_ROOT = {str(tmp_path)!r}\nIMAGE_PATTERN = '{{id}}.tif'\nLABEL_PATTERN = 'truth.gpkg'\n"
                      "VECTOR_CLASS_FIELD = 'code'\nTRAIN_IDS = ['labels']\nTEST_IDS = []\n")
    assert_one_line_error(run_script("polygonize.py", str(source), "--out", str(truth), "--force", "--config", str(config)),
                          f"{truth} would overwrite tile labels's LABEL_PATTERN file; choose another --out")
    assert truth.read_bytes() == b"the ground truth polygons"


def test_polygonize_script_applies_the_configs_polygon_settings_unless_its_flags_are_given(tmp_path):
    """POLYGON_SIMPLIFY and POLYGON_MIN_AREA were passed over (the flags alone applied), and the config saved beside
    the polygons recorded 0 for them."""
    source = write_labels(tmp_path / "labels.tif", scene())

    def polygons(name, *arguments):
        out = tmp_path / f"{name}.gpkg"
        polygonize_script.main([str(source), "--out", str(out), *arguments])
        recorded = json.loads(out.with_name(f"{out.name}.config.json").read_text())["config"]
        return len(read_vector(out)[2]), (recorded["POLYGON_SIMPLIFY"], recorded["POLYGON_MIN_AREA"])

    exact = polygons("exact")
    by_config = polygons("config", "POLYGON_SIMPLIFY=0.5", "POLYGON_MIN_AREA=1")
    by_flags = polygons("flags", "--simplify", "0.5", "--min-area", "1")
    assert exact[1] == (0, 0) and by_config[1] == by_flags[1] == (0.5, 1)
    assert by_config[0] == by_flags[0] < exact[0]  # the single-pixel islands merged into their regions
    assert polygons("flags_win", "POLYGON_SIMPLIFY=0.5", "POLYGON_MIN_AREA=1", "--simplify", "0", "--min-area", "0") == exact


def test_polygon_filters_in_a_crs_in_degrees_are_refused(tmp_path):
    # CRS units are degrees: a minimum area of 1 would be a square degree, and drop every polygon
    source = write_labels(tmp_path / "labels.tif", scene(), crs="EPSG:4326", transform=from_origin(8.4, 49.0, 1e-5, 1e-5))
    for filters in ({"min_area": 1.0}, {"simplify": 0.5}):
        with pytest.raises(EosegError, match=r"labels.tif: its CRS EPSG:4326 is in degrees, and POLYGON_SIMPLIFY .* are in "
                                             r"CRS units: .*; set them to 0, or reproject the image to a CRS in metres"):
            polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE], **filters)
    assert not (tmp_path / "classes.gpkg").exists()
    assert polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE]).features > 100  # exact edges: fine
    assert_one_line_error(run_script("polygonize.py", str(source), "--out", str(tmp_path / "m.gpkg"), "--min-area", "1"),
                          "is in degrees", "set them to 0")
    with pytest.raises(EosegError, match=r"POLYGON_SIMPLIFY \(0\) and POLYGON_MIN_AREA \(1\)"):  # as the config sets them
        polygonize_script.main([str(source), "--out", str(tmp_path / "c.gpkg"), "POLYGON_MIN_AREA=1"])


def test_polygons_take_the_class_names_the_label_map_records(tmp_path, capsys):
    labels = (scene() % 2).astype(np.uint8)
    named = ["background", "building"]
    like = RasterInfo(tmp_path / "like.tif", labels.shape[1], labels.shape[0], 1, "uint8", rasterio.crs.CRS.from_epsg(32632),
                      TRANSFORM, None)
    with RasterWriter(tmp_path / "labels.tif", like, 1, "uint8", class_names=named) as writer:  # as inference.py writes it
        writer.write(labels)
    source = tmp_path / "labels.tif"
    polygonize_script.main([str(source), "--out", str(tmp_path / "classes.gpkg")])  # config.py's ISPRS CLASS_NAMES
    assert "class names as the label map records them" in capsys.readouterr().out
    _, _, class_ids, class_names, burnt = rasterized(tmp_path / "classes.gpkg", labels.shape, TRANSFORM)
    assert list(class_names) == [named[i] for i in class_ids] and set(class_names) == set(named)
    assert (burnt == labels).all()
    # a config that names them too must agree
    config = tmp_path / "buildings.py"
    config.write_text(f"CLASS_NAMES = {named!r}\nPALETTE = [[255, 255, 255], [255, 0, 0]]\n")
    polygonize_script.main([str(source), "--out", str(tmp_path / "agreed.gpkg"), "--config", str(config)])
    config.write_text("CLASS_NAMES = ['ground', 'roof']\nPALETTE = [[255, 255, 255], [255, 0, 0]]\n")
    result = run_script("polygonize.py", str(source), "--out", str(tmp_path / "other.gpkg"), "--config", str(config))
    assert_one_line_error(result, "records the class names ['background', 'building'], the config gives CLASS_NAMES "
                                  "['ground', 'roof']; set CLASS_NAMES to the label map's")
    with pytest.raises(EosegError, match=r"the config gives CLASS_NAMES \['impervious surfaces'"):
        polygonize_script.main([str(source), "--out", str(tmp_path / "preset.gpkg"), "DATASET=vaihingen"])
    # a label map that records none is named by the config
    polygonize_script.main([str(write_labels(tmp_path / "plain.tif", labels)), "--out", str(tmp_path / "plain.gpkg")])
    assert "CLASS_NAMES of the config: the label map records none" in capsys.readouterr().out
    assert set(rasterized(tmp_path / "plain.gpkg", labels.shape, TRANSFORM)[3]) == set(CLASSES[:2])


def test_polygons_of_raw_codes_take_the_classes_label_values_give_them(tmp_path, capsys):
    """Ground truth of raw codes (LoveDA's 0 = no data, 1..n; a 0/255 mask) is read through LABEL_VALUES, as every
    step reads label rasters: code k is class k - 1, not CLASS_NAMES[k], and 255 a building, not unlabelled."""
    def write_codes(path, codes):  # without a colour table
        with rasterio.open(path, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0], count=1, dtype="uint8",
                           crs="EPSG:32632", transform=TRANSFORM) as dst:
            dst.write(codes, 1)
        return path

    ids = (scene() % 6).astype(np.uint8)
    codes = np.where(ids == IGNORE, 0, ids + 1).astype(np.uint8)
    source = write_codes(tmp_path / "codes.tif", codes)
    loveda = "LABEL_VALUES={0: 'ignore', 1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}"
    polygonize_script.main([str(source), "--out", str(tmp_path / "codes.gpkg"), loveda])
    _, _, class_ids, class_names, burnt = rasterized(tmp_path / "codes.gpkg", codes.shape, TRANSFORM)
    assert (burnt == np.where(codes == 0, IGNORE, codes - 1)).all()
    assert list(class_names) == [CLASSES[i] for i in class_ids]
    mask = np.where(ids % 2 == 1, 255, 0).astype(np.uint8)
    write_codes(tmp_path / "mask.tif", mask)
    polygonize_script.main([str(tmp_path / "mask.tif"), "--out", str(tmp_path / "mask.gpkg"), "LABEL_VALUES={0: 0, 255: 1}",
                            "CLASS_NAMES=['background', 'building']", "PALETTE=[[0, 0, 0], [255, 255, 255]]", "IGNORE_COLOR=None"])
    assert (rasterized(tmp_path / "mask.gpkg", mask.shape, TRANSFORM)[4] == mask // 255).all()
    with rasterio.open(tmp_path / "mask.tif", "r+") as dst:  # tagged nodata 0, as many masks are: its 0 is still a class
        dst.nodata = 0
    polygonize_script.main([str(tmp_path / "mask.tif"), "--out", str(tmp_path / "tagged.gpkg"), "LABEL_VALUES={0: 0, 255: 1}",
                            "CLASS_NAMES=['background', 'building']", "PALETTE=[[0, 0, 0], [255, 255, 255]]", "IGNORE_COLOR=None"])
    assert (rasterized(tmp_path / "tagged.gpkg", mask.shape, TRANSFORM)[4] == mask // 255).all()  # background kept (review)
    # read as class ids, the mask is refused, naming LABEL_VALUES (its buildings were left out as unlabelled)
    with pytest.raises(EosegError, match=r"a 0/255 mask\? map its values with LABEL_VALUES"):
        polygonize_script.main([str(tmp_path / "mask.tif"), "--out", str(tmp_path / "unmapped.gpkg")])
    # a label map eoseg wrote holds class ids, whatever LABEL_VALUES says of raw codes
    like = RasterInfo(tmp_path / "like.tif", ids.shape[1], ids.shape[0], 1, "uint8", CRS.from_epsg(32632), TRANSFORM, None)
    with RasterWriter(tmp_path / "written.tif", like, 1, "uint8", class_names=CLASSES) as writer:
        writer.write(ids)
    polygonize_script.main([str(tmp_path / "written.tif"), "--out", str(tmp_path / "written.gpkg"), loveda])
    assert (rasterized(tmp_path / "written.gpkg", ids.shape, TRANSFORM)[4] == ids).all()


def test_a_label_map_without_crs_is_refused_before_its_pixels_are_read(tmp_path, monkeypatch):
    """The CRS needs only the metadata: polygonize.py read the whole raster through LABEL_VALUES first, and a 0/255
    mask without CRS was refused for its values, not for the CRS it lacks."""
    mask = np.where(scene(36, 48) % 2 == 1, 255, 0).astype(np.uint8)
    with rasterio.open(tmp_path / "mask.png", "w", driver="PNG", width=48, height=36, count=1, dtype="uint8") as png:
        png.write(mask[None])

    def no_read(*args):
        raise AssertionError("pixels read before the CRS was checked")

    monkeypatch.setattr(polygonize_script, "label_map_reader", no_read)
    with pytest.raises(EosegError, match=r"mask.png is not georeferenced \(no CRS\)"):
        polygonize_script.main([str(tmp_path / "mask.png"), "--out", str(tmp_path / "mask.gpkg")])


def test_polygons_of_a_label_map_without_crs_are_said_to_be_in_its_own_coordinates(tmp_path, capsys):
    """A transform without a CRS puts them in the transform's units: "pixel columns and rows" was said (review)."""
    labels = scene(36, 48).astype(np.uint8)
    for name, transform, units in (("placed", TRANSFORM, "its transform's units"),
                                   ("plain", Affine.identity(), "pixel columns and rows")):
        write_labels(tmp_path / f"{name}.tif", labels, crs=None, transform=transform)
        polygonize_script.main([str(tmp_path / f"{name}.tif"), "--out", str(tmp_path / f"{name}.gpkg"),
                                "--pixel-coordinates"])
        assert f"(no CRS: coordinates are {units}, not places on a map;" in capsys.readouterr().out


@pytest.mark.parametrize("block_rows", [1, 7, 32])
def test_polygons_by_blocks_equal_the_whole_raster_pass(tmp_path, block_rows):
    labels = scene(seed=2)
    source = write_labels(tmp_path / "labels.tif", labels)
    whole = polygonize_labels(source, tmp_path / "whole.gpkg", CLASSES, [IGNORE], block_rows=labels.shape[0])
    blocks = polygonize_labels(source, tmp_path / "blocks.gpkg", CLASSES, [IGNORE], block_rows=block_rows)
    assert blocks.features == whole.features
    for summary in (whole, blocks):
        assert (rasterized(summary.path, labels.shape, TRANSFORM)[-1] == labels).all()

    def regions(path):
        _, polygons, class_ids, _, _ = rasterized(path, labels.shape, TRANSFORM)
        return sorted((int(c), round(p.area, 6), len(p.interiors)) for p, c in zip(polygons, class_ids))

    assert regions(blocks.path) == regions(whole.path)
    with_min_area = [polygonize_labels(source, tmp_path / f"m{rows}.gpkg", CLASSES, [IGNORE], min_area=4 * PIXEL * PIXEL,
                                       block_rows=rows) for rows in (labels.shape[0], block_rows)]
    assert with_min_area[0].dropped == with_min_area[1].dropped > 0


SHIFTED_DATUM = "+proj=utm +zone=32 +ellps=WGS84 +towgs84=100,100,100 +units=m +no_defs"  # ~85 m from EPSG:32632


def test_polygons_carry_the_label_maps_exact_crs(tmp_path):
    """A UTM zone on a shifted datum (TOWGS84) was written as EPSG:32632, the nearest code, which drops the shift: a
    GIS reprojecting on the fly showed the polygons ~85 m off the label map."""
    source = write_labels(tmp_path / "labels.tif", scene(60, 60), crs=SHIFTED_DATUM)
    with rasterio.open(source) as src:
        crs = src.crs
    summary = polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE])
    assert summary.crs != "EPSG:32632" and rasterio.crs.CRS.from_user_input(summary.crs) == crs
    written = rasterio.crs.CRS.from_user_input(pyogrio.read_info(tmp_path / "classes.gpkg")["crs"])
    assert written == crs and written != rasterio.crs.CRS.from_epsg(32632)
    # a CRS that its code equals is written as the code (GeoJSON records nothing else)
    plain = polygonize_labels(write_labels(tmp_path / "utm.tif", scene(60, 60)), tmp_path / "utm.geojson", CLASSES, [IGNORE])
    assert plain.crs == "EPSG:32632" and pyogrio.read_info(tmp_path / "utm.geojson")["crs"] == "EPSG:32632"


@pytest.mark.parametrize("crs", [SHIFTED_DATUM, 'LOCAL_CS["site",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'])
def test_geojson_polygons_of_a_crs_without_an_equal_code_are_refused(tmp_path, crs):
    """GDAL's GeoJSON writer records a CRS only as a code and dropped these without a word: readers took the
    coordinates for WGS84 degrees. A GeoPackage keeps them."""
    source = write_labels(tmp_path / "labels.tif", scene(60, 60), crs=crs)
    with pytest.raises(EosegError, match=r"labels.tif: its CRS .* has no authority code \(EPSG:...\) equal to it, and "
                                         r"GeoJSON records a CRS only as such a code .*; write a GeoPackage \(.gpkg\) instead"):
        polygonize_labels(source, tmp_path / "classes.geojson", CLASSES, [IGNORE])
    assert not (tmp_path / "classes.geojson").exists()
    assert_one_line_error(run_script("polygonize.py", str(source), "--out", str(tmp_path / "c.geojson")),
                          "has no authority code", ".gpkg")
    assert polygonize_labels(source, tmp_path / "classes.gpkg", CLASSES, [IGNORE]).features > 10


def test_a_crs_is_named_briefly_by_its_code_or_its_name():
    assert brief_crs(CRS.from_epsg(32632)) == "EPSG:32632"
    custom = CRS.from_proj4("+proj=tmerc +lon_0=7 +ellps=WGS84").to_wkt()
    assert brief_crs(CRS.from_wkt(custom)) == "unknown (tmerc)"
    # WKT doubles a quote inside a name
    assert brief_crs(CRS.from_wkt(custom.replace('"unknown"', '"Site ""North"" grid"', 1))) == 'Site "North" grid'
    assert brief_crs(CRS.from_wkt(custom.replace('"unknown"', f'"{"x" * 40}"', 1))) == "x" * 27 + "..."
