"""eoseg.io: atomic files and folders, locks, one-line write errors, raster reading and writing."""

from __future__ import annotations

import errno
import hashlib
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from eoseg.errors import EosegError
from eoseg.io import (RasterWriter, alpha_band_problem, atomic_directory, atomic_path, atomic_write_text, causes, check_output_file,
                      check_writable, exclusive, exclusive_or_refuse, expand_colour_table, file_sha256, nodata_kind, open_raster, raster_info,
                      read_label, read_raster, unlabelled_by_mask, valid_mask, write_class_table, write_failure,
                      write_raster)

from .conftest import ROOT
from .test_tiles import copy_raster


def write_tif(path, pixels, **profile):
    """``pixels`` (C, H, W) as a georeferenced GeoTIFF at ``path``."""
    count, height, width = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=pixels.dtype.name,
                       crs=CRS.from_epsg(32632), transform=from_origin(500000, 5400000, 0.5, 0.5), **profile) as dst:
        dst.write(pixels)
    return path


# ---------------------------------------------------------------- failed writes
def write_failed(code: int, text: str) -> RuntimeError:
    """GDAL's write error, raised from the OSError ``code`` beneath it, as a failed write raises it."""
    try:
        try:
            raise OSError(code, text)
        except OSError as inner:
            raise RuntimeError("Write failed. See previous") from inner
    except RuntimeError as outer:
        return outer


def test_causes_follows_the_chain_once():
    chain = list(causes(write_failed(errno.ENOSPC, "No space left on device")))
    assert [type(link) for link in chain] == [RuntimeError, OSError]
    looped = ValueError("a")
    looped.__context__ = looped
    assert list(causes(looped)) == [looped]


def test_a_write_failure_is_a_full_disk_only_when_it_says_so(tmp_path):
    out = tmp_path / "out.tif"
    full = write_failure(write_failed(errno.EDQUOT, "Disk quota exceeded"), out)
    assert str(full) == f"{out}: disk full while writing it; free space and run again"
    other = write_failure(PermissionError(errno.EACCES, "Permission denied"), out)
    assert str(other) == f"{out}: writing failed ([Errno {errno.EACCES}] Permission denied)"


# ---------------------------------------------------------------- atomic files and folders
def test_atomic_write_replaces_the_file_only_when_complete(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_text(path, "first")
    assert path.read_text() == "first"
    with pytest.raises(KeyError):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".json" and tmp != path
            tmp.write_text("half")
            raise KeyError("interrupted")
    assert path.read_text() == "first" and [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_file_sha256(tmp_path):
    path = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000  # over one read chunk
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_atomic_directory_publishes_complete_folders_and_replaces_only_when_forced(tmp_path):
    path = tmp_path / "out"
    with atomic_directory(path) as tmp:
        assert tmp != path and not path.exists()
        (tmp / "a").write_text("1")
    assert (path / "a").read_text() == "1"
    with pytest.raises(EosegError, match=r"out already exists; pass --force"):
        with atomic_directory(path):
            pass
    with pytest.raises(ZeroDivisionError):
        with atomic_directory(path, force=True) as tmp:
            (tmp / "b").write_text("2")
            1 / 0
    assert [p.name for p in path.iterdir()] == ["a"]  # the old one stays until a new one is complete
    with atomic_directory(path, force=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in path.iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder or lock left
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty) as tmp:  # an empty folder holds nothing to lose
        (tmp / "c").write_text("3")
    assert [p.name for p in empty.iterdir()] == ["c"]


def test_forced_atomic_directory_replaces_only_a_folder_of_its_step(tmp_path):
    """PATCHES_DIR set to the data's folder (or LMDB_DIR to the patches'): --force deleted all it held. A folder
    without the step's marker is refused, with force too, and left as it is; one with it is replaced."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tile.tif").write_text("image")
    with pytest.raises(EosegError, match=r"data holds files but no manifest.json, so it is not a result of this step, "
                                         r"and --force would delete them: choose another folder for it"):
        with atomic_directory(data, force=True, marker="manifest.json") as tmp:
            (tmp / "manifest.json").write_text("{}")
    assert [p.name for p in data.iterdir()] == ["tile.tif"]
    with atomic_directory(tmp_path / "patches", marker="manifest.json") as tmp:
        (tmp / "manifest.json").write_text("{}")
    with atomic_directory(tmp_path / "patches", force=True, marker="manifest.json") as tmp:
        (tmp / "manifest.json").write_text("{}")
        (tmp / "new").write_text("")
    assert sorted(p.name for p in (tmp_path / "patches").iterdir()) == ["manifest.json", "new"]


def test_outputs_are_checked_before_the_work(tmp_path):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    with pytest.raises(EosegError, match=r"output folder .*file/sub cannot be made: .*file is a file, not a folder"):
        check_writable(in_the_way / "sub", "output folder")
    check_writable(tmp_path / "new" / "deeper", "output folder")
    assert not (tmp_path / "new").exists()  # nothing made
    with pytest.raises(EosegError, match=rf"report {tmp_path} is a folder; give a file name"):
        check_output_file(tmp_path, "report")
    with pytest.raises(EosegError, match=r"its name is too long for the file system"):
        check_output_file(tmp_path / ("n" * 250 + ".json"), "report")
    check_output_file(tmp_path / "new" / "report.json", "report")


# ---------------------------------------------------------------- locks
@pytest.mark.faults
def test_an_exclusive_lock_makes_a_second_holder_wait(tmp_path):
    lock = tmp_path / ".x.lock"
    order = []
    second_tries = threading.Event()

    def second():
        second_tries.set()
        with exclusive(lock):
            order.append("second")

    with exclusive(lock):
        thread = threading.Thread(target=second)
        thread.start()
        second_tries.wait()
        time.sleep(0.2)  # time enough for the second to take the lock, were it free
        order.append("first")
    thread.join()
    assert order == ["first", "second"] and not lock.exists()


def test_exclusive_or_refuse_refuses_while_another_process_holds_it(tmp_path):
    lock = tmp_path / ".run.lock"
    probe = textwrap.dedent("""
        import sys
        from eoseg.errors import EosegError
        from eoseg.io import exclusive_or_refuse
        try:
            with exclusive_or_refuse(sys.argv[1], "busy: another run holds it"):
                print("took it")
        except EosegError as err:
            print(err)
    """)

    def other_process():
        return subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip()

    with exclusive_or_refuse(lock, "busy"):
        assert other_process() == "busy: another run holds it"
    assert not lock.exists()
    assert other_process() == "took it"


# ---------------------------------------------------------------- reading rasters
def test_read_raster_reads_bands_and_windows_and_refuses_bands_it_lacks(tmp_path):
    pixels = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    path = write_tif(tmp_path / "a.tif", pixels)
    np.testing.assert_array_equal(read_raster(path), pixels)
    np.testing.assert_array_equal(read_raster(path, [3, 1], rasterio.windows.Window(1, 2, 3, 2)), pixels[[2, 0], 2:4, 1:4])
    with pytest.raises(EosegError, match=r"a.tif: image has 3 bands but the config asks for bands \[1, 4\]; check BANDS"):
        read_raster(path, [1, 4], what="image")


def test_open_raster_names_what_is_wrong_with_the_file(tmp_path):
    with pytest.raises(EosegError, match=r"^image not found: .*none.tif$"):
        with open_raster(tmp_path / "none.tif", "image"):
            pass
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(EosegError, match=r"broken.tif: cannot open this image .*replace it with a good copy"):
        with open_raster(tmp_path / "broken.tif", "image"):
            pass
    (tmp_path / "link.tif").symlink_to(tmp_path / "gone.tif")
    with pytest.raises(EosegError, match=r"link.tif: broken link \(its target .*gone.tif does not exist\)"):
        with open_raster(tmp_path / "link.tif", "image"):
            pass


def test_a_geotransform_whose_pixels_have_no_height_is_refused_in_one_line(tmp_path):
    """A world file's 0 line gave ZeroDivisionError and TransformNotInvertibleError tracebacks (review)."""
    from rasterio.transform import Affine

    with rasterio.open(tmp_path / "flat.tif", "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                       crs="EPSG:32632", transform=Affine(0.5, 0, 500000, 0, 0, 5400000)) as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(EosegError, match=r"flat.tif: its geotransform \(0.5, 0.0, 500000.0, 0.0, 0.0, 5400000.0\) gives "
                                         r"its pixels no width or height.*gdal_edit.py -a_ullr"):
        raster_info(tmp_path / "flat.tif", "image")


@pytest.mark.faults
def test_gdal_virtual_path_refused_as_such(tmp_path):
    """/vsizip/ paths are not files on disk: say so, rather than "not found" beside a zip that exists."""
    with pytest.raises(EosegError, match=r"image /vsizip/.*GDAL virtual paths .* are not read; extract"):
        with open_raster(f"/vsizip/{tmp_path}/scenes.zip/a.tif", "image"):
            pass
    with pytest.raises(EosegError, match=r"^image not found: "):
        with open_raster(tmp_path / "vsizip" / "a.tif", "image"):
            pass


def test_read_label_takes_one_band_of_ids_0_to_255(tmp_path):
    ids = np.array([[[0, 1], [5, 255]]], dtype=np.uint16)
    labels = read_label(write_tif(tmp_path / "ok.tif", ids))
    assert labels.dtype == np.uint8 and labels.tolist() == [[0, 1], [5, 255]]
    with pytest.raises(EosegError, match=r"label ids must lie in 0..255"):
        read_label(write_tif(tmp_path / "big.tif", ids + 1))
    with pytest.raises(EosegError, match=r"a numeric label map has one band, this one has 3; .*GT_COLOR_PATTERN"):
        read_label(write_tif(tmp_path / "rgb.tif", np.zeros((3, 2, 2), np.uint8)))


def test_raster_info_reads_georeference_and_stored_scaling(tmp_path):
    path = write_tif(tmp_path / "cm.tif", np.ones((1, 3, 4), np.int16))
    with rasterio.open(path, "r+") as dst:
        dst.scales, dst.offsets = [0.01], [5.0]
    info = raster_info(path)
    assert (info.width, info.height, info.count, info.dtype) == (4, 3, 1, "int16")
    assert info.georeferenced and info.unplaced == "" and info.crs == CRS.from_epsg(32632)
    scale, offset = info.stored_scaling([1])
    assert scale.shape == (1, 1, 1) and scale.item() == pytest.approx(0.01) and offset.item() == 5.0
    plain = tmp_path / "plain.png"
    with rasterio.open(plain, "w", driver="PNG", width=4, height=3, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 3, 4), np.uint8))
    assert not raster_info(plain).georeferenced and raster_info(plain).stored_scaling([1]) is None


def test_expand_colour_table():
    table = ((0, 0, 0), None, (255, 0, 0))
    rgb = expand_colour_table(np.array([[0, 2], [2, 0]]), table, "x.png")
    assert rgb.shape == (3, 2, 2) and rgb[:, 0, 1].tolist() == [255, 0, 0] and rgb[:, 0, 0].tolist() == [0, 0, 0]
    with pytest.raises(EosegError, match=r"x.png: values \[1, 3\] have no colour in its colour table"):
        expand_colour_table(np.array([[0, 1], [3, 2]]), table, "x.png")


def test_a_nearly_transparent_alpha_holds_no_data(tmp_path):
    """A JPEG-compressed alpha band reads 1-12 over a transparent collar: its black pixels were trained as road (review).
    Alpha under half holds no data, for images and ground truth alike."""
    from rasterio.enums import ColorInterp

    alpha = np.array([[0, 5, 12, 127, 128, 255]], np.uint8)
    with rasterio.open(tmp_path / "rgba.tif", "w", driver="GTiff", width=6, height=1, count=4, dtype="uint8") as dst:
        dst.write(np.concatenate([np.zeros((3, 1, 6), np.uint8), alpha[None]]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with rasterio.open(tmp_path / "rgba.tif") as src:
        assert valid_mask(src, [1, 2, 3], src.read([1, 2, 3]), False).tolist() == [[False] * 4 + [True] * 2]
        assert unlabelled_by_mask(src).tolist() == [[True] * 4 + [False] * 2]


def test_valid_mask_of_a_float_raster_with_a_nodata_value_in_one_band(tmp_path):
    pixels = np.ones((2, 2, 3), np.float32)
    pixels[0, 0, 0] = -9999  # one band without data: the pixel has none
    pixels[:, 1, 2] = np.nan
    path = write_tif(tmp_path / "f.tif", pixels, nodata=-9999)
    assert nodata_kind(path, [1, 2]) == "-9999"
    with rasterio.open(path) as src:
        valid = valid_mask(src, [1, 2], src.read(), nodata_zero=False)
    assert valid.tolist() == [[False, True, True], [True, True, False]]
    assert nodata_kind(write_tif(tmp_path / "none.tif", np.ones((1, 2, 2), np.uint8)), [1]) == "-"


# ---------------------------------------------------------------- writing rasters
def test_raster_writer_writes_blocks_and_keeps_the_georeference(tmp_path):
    like = raster_info(write_tif(tmp_path / "like.tif", np.zeros((1, 6, 5), np.uint8)))
    with RasterWriter(tmp_path / "out.tif", like, 2, "uint16", band_names=["a", "b"]) as writer:
        writer.write(np.full((2, 4, 5), 7, np.uint16), row=0)
        writer.write(np.full((2, 2, 5), 9, np.uint16), row=4)
    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.crs == like.crs and src.transform == like.transform and src.descriptions == ("a", "b")
        assert src.read(1)[:, 0].tolist() == [7, 7, 7, 7, 9, 9]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["like.tif", "out.tif"]


def test_a_raster_left_by_an_error_is_not_written(tmp_path):
    with pytest.raises(RuntimeError):
        with RasterWriter(tmp_path / "out.tif", None, 1, "uint8", width=4, height=4) as writer:
            writer.write(np.zeros((2, 4), np.uint8))
            raise RuntimeError("interrupted")
    assert not list(tmp_path.iterdir())
    with pytest.raises(EosegError, match=r"out.jpg: unsupported output format; use .tif or .png"):
        RasterWriter(tmp_path / "out.jpg", None, 1, "uint8", width=4, height=4)
    with pytest.raises(EosegError, match=r"1 band names for 2 bands"):
        RasterWriter(tmp_path / "out.tif", None, 2, "uint8", width=4, height=4, band_names=["a"])
    assert not list(tmp_path.iterdir())


def test_a_plain_image_is_written_as_png(tmp_path):
    labels = np.array([[0, 1, 2]], np.uint8)
    path = write_raster(tmp_path / "labels.png", labels)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(read_raster(path), labels[None])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_class_table_names_each_value_for_gis_software(tmp_path):
    path = write_raster(tmp_path / "labels.tif", np.zeros((2, 2), np.uint8))
    side = write_class_table(path, ["road & path", "tree"], {0: (255, 255, 255, 255), 1: (0, 255, 0, 255)})
    assert side == tmp_path / "labels.tif.aux.xml"
    band = ET.parse(side).getroot().find("PAMRasterBand")
    assert [c.text for c in band.find("CategoryNames")] == ["road & path", "tree"]
    rows = [[f.text for f in row.findall("F")] for row in band.find("GDALRasterAttributeTable").findall("Row")]
    assert rows == [["0", "road & path", "255", "255", "255"], ["1", "tree", "0", "255", "0"]]


def test_a_band_misread_as_to_transparency_is_pointed_out(tiny_cfg, tmp_path):
    """RGBA written without saying the 4th band is alpha (ExtraSamples unspecified): GDAL masks nothing, so
    the transparent pixels would be labelled as data; RGB + near-infrared tagged alpha: its dark pixels would be
    nodata. check_data and inference say so."""
    from eoseg.datacheck import check_dataset

    source = tiny_cfg.tile_path("IMAGE_PATTERN", "1")
    pixels = read_raster(source)
    alpha = np.full_like(pixels[:1], 255)
    alpha[:, :, :20] = 0
    rgba = copy_raster(source, tmp_path / "rgba" / "1.tif", np.concatenate([pixels, alpha]), count=4)
    with rasterio.open(rgba, "r+") as dst:  # ExtraSamples "unspecified"
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    info = raster_info(rgba)
    assert alpha_band_problem(info, [1, 2, 3]) == (f"{rgba}: band 4 holds only 0 and 255, as an alpha band does, but is not "
                                               "tagged as one: if it is transparency, its empty pixels are labelled as "
                                               "data; tag it (gdal_edit.py -colorinterp_4 alpha FILE)")
    cfg = tiny_cfg.replace(DATA_ROOT=str(tmp_path / "rgba"), IMAGE_PATTERN="{id}.tif", TRAIN_IDS=["1"], TEST_IDS=[])
    assert alpha_band_problem(info, [1, 2, 3]) in check_dataset(cfg).notes  # a mask band of data would look alike
    # tagged, GDAL reads it as the mask; a band of data (near-infrared) holds other values
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    assert alpha_band_problem(raster_info(rgba), [1, 2, 3]) == ""
    nir = copy_raster(source, tmp_path / "rgbn" / "1.tif", np.concatenate([pixels, pixels[:1]]), count=4)
    with rasterio.open(nir, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    assert raster_info(nir).colorinterp[3] == "undefined" and alpha_band_problem(raster_info(nir), [1, 2, 3]) == ""
    # near-infrared tagged alpha (GDAL's default for a fourth band of an RGB file): its dark pixels would be nodata
    with rasterio.open(nir, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    assert alpha_band_problem(raster_info(nir), [1, 2, 3]).startswith(
        f"{nir}: band 4 is tagged as its alpha band, so GDAL reads the pixels where it is 0 as nodata, but ")
    assert "retag it (gdal_edit.py -colorinterp_4 undefined FILE)" in alpha_band_problem(raster_info(nir), [1, 2, 3])


def test_an_output_whose_folder_is_a_file_is_refused_in_one_line(tmp_path):
    """mkdir said only "File exists", naming no file."""
    (tmp_path / "afile").write_text("")
    with pytest.raises(EosegError, match=r"output folder .*afile/sub cannot be made: .*afile is a file, not a folder"):
        atomic_write_text(tmp_path / "afile" / "sub" / "x.json", "{}")
    with pytest.raises(EosegError, match=r"output folder .*afile cannot be made: .*afile is a file, not a folder"):
        RasterWriter(tmp_path / "afile" / "x.tif", None, 1, "uint8", width=4, height=4)


@pytest.mark.parametrize("height, width", [(512, 512), (700, 300), (2000, 2000), (5, 3000)])
def test_spread_windows_read_no_pixel_twice_and_reach_every_edge(height, width):
    """Windows spread from edge to edge overlapped in a small raster's middle: a collar of zeros along its edges,
    24.5% of a real-looking scene, was sampled as 16.7% (review), short of the note's fifth. A raster the windows
    would overlap in is read whole; a larger one from edge to edge, where collars lie (windows in the middles of
    its cells missed a collar of 29% whole: code review)."""
    from eoseg.io import spread_windows

    windows = spread_windows(height, width, 4, 256)
    taken = np.zeros((height, width), dtype=int)
    for window in windows:
        taken[window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width] += 1
    assert taken.max() == 1  # no pixel read twice
    assert taken[0, 0] == taken[-1, -1] == taken[0, -1] == taken[-1, 0] == 1  # every edge reached
    if height <= 1024 and width <= 1024:
        assert taken.all()  # a raster of the windows' size in all is read whole
    border = np.ones((height, width), dtype=bool)
    border[height // 10:height - height // 10, width // 10:width - width // 10] = False  # a collar on every side
    assert border[taken == 1].mean() >= border.mean() - 0.02  # not missed: taken at its share at least


def test_a_vector_file_given_where_a_raster_is_read_is_named_so(tmp_path):
    """A .gpkg given to polygonize.py or inference.py --images was called possibly incomplete, to be replaced with a
    good copy (review)."""
    polygons = tmp_path / "buildings.geojson"
    polygons.write_text('{"type": "FeatureCollection", "features": []}')
    archive = tmp_path / "labels.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    for path in (polygons, archive):
        with pytest.raises(EosegError, match=rf"{path.name}: a vector file \(polygons\) or archive, where a label map "
                                             r"\(a raster\) is read; give a raster here"):
            raster_info(path, "label map")


def test_a_label_raster_of_values_and_alpha_gets_the_line_that_makes_the_alpha_its_mask(tmp_path):
    """What gdalwarp -dstalpha writes was told to be colour-coded ground truth (review)."""
    from eoseg.io import not_one_band

    assert "gdal_translate -b 1 -mask 2 FILE FILE_labels.tif" in str(not_one_band("l.tif", 2, ("gray", "alpha")))
    assert "point GT_COLOR_PATTERN at it" in str(not_one_band("l.tif", 3, ("red", "green", "blue")))
