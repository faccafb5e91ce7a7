"""Raster and file I/O: rasterio reads and writes, atomic outputs, clear errors.

Every output goes to a temporary name beside its destination and is renamed into
place when complete, so an interrupted step never leaves a file the next step accepts.
A write that finds no room (a full disk, a quota, the file size limit) is one error
naming the output, whichever library was writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import resource
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from eoseg.errors import DamagedInputError, EosegError

warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


# ---------------------------------------------------------------- failed writes
_FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
LOW_SPACE = 1 << 20  # bytes: a disk with less free counts as full
# GDAL's block cache defaults to 5% of RAM and fills up with every block of a large raster read or written (1.2 GB on
# 24 GB); reading or writing by rows needs a row of blocks per raster
GDAL_CACHE_MB = 256


def available_memory() -> int | None:
    """Bytes of memory this process can still take without swapping: Linux's MemAvailable, or less where a container
    or a batch job's cgroup (v2) sets a lower limit; None where neither says."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            found += [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or while handling."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _files(written: Path) -> list[Path]:
    return [written] if written.is_file() else [p for p in written.rglob("*") if p.is_file()]


def _no_room_left(written: Path) -> bool:
    """Whether the disk holding ``written`` (a file or folder) is full, or a file of it reached
    the process's file size limit (``ulimit -f``): a write that hits the limit writes up to it."""
    folder = written if written.is_dir() else written.parent
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(folder)
        if usage.total and usage.free < LOW_SPACE:  # some network filesystems report no size at all
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and any(f.stat().st_size >= limit for f in _files(written))
    return False


def _disk_full(error: BaseException, written: Path) -> bool:
    """Whether ``error``, raised while writing ``written`` (a file or folder), means no room was left.

    Python says so with ENOSPC, EFBIG or EDQUOT, but GDAL, numpy, LMDB and torch often lose the
    errno on the way (LMDB even reports EIO): then the disk and the file size limit are asked.
    """
    for link in causes(error):
        if getattr(link, "errno", None) in _FULL_DISK_ERRNOS or any(os.strerror(e) in str(link) for e in _FULL_DISK_ERRNOS):
            return True
    return _no_room_left(written)


def _full_disk_error(path: Path) -> EosegError:
    return EosegError(f"{path}: disk full while writing it; free space and run again")


def write_failure(error: BaseException, path: Path, written: Path | None = None) -> EosegError:
    """The one-line error for a failed write of ``path`` (whose data went to ``written``)."""
    if _disk_full(error, written or path):
        return _full_disk_error(path)
    return EosegError(f"{path}: writing failed ({_reason(error)})")


@contextlib.contextmanager
def _checked_write(path: Path, written: Path) -> Iterator[None]:
    """Run a block that writes ``written`` on the way to ``path``; no room left is a one-line error.

    Checked after the block as well: GDAL may report a failed write in a log line only and
    carry on, leaving a short file that nothing else flags.
    """
    try:
        yield
    except EosegError as err:
        # the user knows the final name, not the temporary one the block was given
        raise EosegError(str(err).replace(str(written), str(path))) from None
    except Exception as err:
        if _disk_full(err, written):
            raise _full_disk_error(path) from None
        if isinstance(err, RasterioIOError):  # said here: an input read around the block would take it for its own
            reason = _reason(err).replace(str(written), str(path))
            raise EosegError(f"{path}: cannot write this output ({reason}); check that its folder "
                             "is writable and its name not too long") from None
        raise
    if _no_room_left(written):
        raise _full_disk_error(path)


def _reason(error: BaseException) -> str:
    """The most telling line of an error: GDAL's own message rather than rasterio's "see previous"."""
    for link in causes(error):
        if not str(link).startswith(("Read failed. See previous", "Write failed. See previous")):
            return str(link).splitlines()[0] if str(link) else type(link).__name__
    return str(error)


# ---------------------------------------------------------------- atomic writes
def _temp_name(path: Path) -> Path:
    # keep the suffix so that format drivers chosen by extension still work
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    make_folder(path.parent)
    tmp = _temp_name(path)
    try:
        with _checked_write(path, tmp):
            yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | Path) -> dict:
    """What tells later whether ``path`` is the file it is now: its size, modification time and SHA-256."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(path)}


_unchanged: dict[tuple, bool] = {}  # (path, its size and time now, the record) -> whether it is the recorded file


def unchanged_since(path: str | Path, record: dict) -> bool:
    """Whether ``path`` is the file :func:`file_record` described: the same size and time, or, for a copy (a new
    time), the same bytes. Hashed once per process and state."""
    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, record.get("size"), record.get("mtime_ns"), record.get("sha256"))
    if key not in _unchanged:
        _unchanged[key] = (stat.st_size == record.get("size") and
                           (stat.st_mtime_ns == record.get("mtime_ns") or file_sha256(path) == record.get("sha256")))
    return _unchanged[key]


@contextlib.contextmanager
def _lock_file(path: Path, lock: Callable[[IO], None]) -> Iterator[None]:
    """Hold the lock file ``path``, taken by ``lock(handle)``, for a block; the file is removed on release.

    A process that locked a file removed meanwhile (by the holder it waited for) tries again.
    """
    while True:
        handle = open(path, "a")
        lock(handle)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before releasing: a waiter must not take a file that is about to go
        handle.close()


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold the lock file ``path``: processes writing the same outputs take turns.

    The lock goes with its process, even a killed one.
    """
    with _lock_file(Path(path), lambda handle: fcntl.flock(handle, fcntl.LOCK_EX)):
        yield


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest parent that exists: where a new file under ``path`` would be made."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _existing_folder(folder: Path, what: str) -> Path:
    """``folder``'s nearest existing part (:func:`_nearest_existing`), refused where it is a file: the folder cannot be
    made (mkdir would say only "File exists")."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise EosegError(f"{what} {folder} cannot be made: {existing} is a file, not a folder; choose another {what}")
    return existing


def make_folder(folder: str | Path, what: str = "output folder") -> None:
    """``folder`` and its parents, made where missing; refused in one line where a file stands in the way."""
    _existing_folder(Path(folder).absolute(), what)
    Path(folder).mkdir(parents=True, exist_ok=True)


def check_writable(folder: str | Path, what: str) -> None:
    """Refuse, before any work, a folder that outputs cannot be written into.

    A probe file is made in ``folder``, or in its nearest existing parent when it does not
    exist yet (nothing is created): permissions alone would not tell, root ignores them,
    read-only mounts and immutable folders do not.
    """
    folder = Path(folder).absolute()
    existing = _existing_folder(folder, what)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".eoseg-write-probe-"):
            pass
    except OSError as err:
        raise EosegError(f"{what} {folder} cannot be written ({err.strerror or _reason(err)} in {existing}); "
                         f"choose a writable {what} or fix its permissions") from None


def check_output_file(path: str | Path, what: str) -> None:
    """Refuse, before any work, an output file that could not be written when the work is done: its folder not
    writable (:func:`check_writable`), a folder in its place, or a name too long for the file system (with the
    temporary name it is written under first)."""
    path = Path(path).absolute()
    check_writable(path.parent, f"folder of {what}")
    if path.is_dir():
        raise EosegError(f"{what} {path} is a folder; give a file name")
    longest = os.pathconf(_nearest_existing(path.parent), "PC_NAME_MAX")
    if len(os.fsencode(_temp_name(path).name)) > longest:
        raise EosegError(f"{what} {path}: its name is too long for the file system ({len(os.fsencode(path.name))} bytes; "
                         f"with the temporary name it is first written under, over {longest}); choose a shorter name")


@contextlib.contextmanager
def exclusive_or_refuse(path: str | Path, busy: str) -> Iterator[None]:
    """Hold the lock file ``path`` for a block; if another process holds it, refuse with ``busy``.

    Like :func:`exclusive`, without waiting: for work that must not run twice at once. A POSIX
    record lock, not flock: forked children (DataLoader workers) do not inherit it, so a killed
    run's lock goes with the run even while its workers linger.
    """
    path = Path(path)
    make_folder(path.parent)

    def lock_or_refuse(handle: IO) -> None:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES, as the system reports a held lock
            handle.close()
            raise EosegError(busy) from None

    with _lock_file(path, lock_or_refuse):
        yield


@contextlib.contextmanager
def atomic_directory(path: str | Path, force: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name; move it to ``path`` when complete.

    An existing ``path`` (but an empty folder) is refused unless ``force``, in which case it is
    replaced only once the new one is complete, and only where it holds ``marker`` (what every folder the step
    builds holds): a folder of other files (the data, another step's results) is never deleted; a link is followed,
    a file refused. One process at a time builds ``path``; what a killed one left behind is removed by the next.
    """
    path = Path(path).absolute()  # "." has no name to build beside
    if path.is_symlink():  # replaced where it leads: the link stays, and so does the storage it was made to reach
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise EosegError(f"{path} is a file, not a folder; remove it or choose another path")
    if os.path.ismount(path):  # built beside it, on the disk it hides, then refused the rename
        raise EosegError(f"{path} is a mount point, which a finished folder cannot be renamed onto; give a folder "
                         f"inside it ({path / path.name})")
    check_writable(path.parent, "output folder")  # before any work, not when the first file is written
    make_folder(path.parent)
    with exclusive(path.with_name(f".{path.name}.lock")):
        if path.exists() and any(path.iterdir()):  # an empty one (made for the result) holds nothing to lose
            if not force:
                raise EosegError(f"{path} already exists; pass --force to replace it")
            if marker is not None and not (path / marker).exists():
                raise EosegError(f"{path} holds files but no {marker}, so it is not a result of this step, and --force "
                                 "would delete them: choose another folder for it")
        tmp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
        for leftover in (tmp, old):  # a killed builder's: no one else holds the lock
            if leftover.exists():
                shutil.rmtree(leftover)
        tmp.mkdir()
        try:
            with _checked_write(path, tmp):
                yield tmp
            if path.exists():
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


def check_outputs(outputs: Sequence[Path], inputs: dict[Path, str], force: bool, where: str, why: str = "") -> None:
    """Refuse, before anything is written, an output that is one of ``inputs`` (resolved paths, each with what it
    is: the files a run reads, which a pattern typed wrong would write over), even with ``force``, and outputs that
    exist, without ``force`` (``why``: what makes them another's, after "exists"). ``where``: the setting that places
    the outputs."""
    for output in outputs:
        if output.resolve() in inputs:
            raise EosegError(f"{output} would overwrite {inputs[output.resolve()]}; choose another {where}")
    existing = [output for output in outputs if output.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more of the outputs)" if len(existing) > 1 else ""
        raise EosegError(f"{existing[0]} exists{more}{why}; pass --force to replace it")


# ---------------------------------------------------------------- rasters
@dataclass(frozen=True)
class RasterInfo:
    """Size, band count, data type and georeference of a raster on disk."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: object
    transform: object
    nodata: float | None
    colorinterp: tuple[str, ...] = ()  # GDAL's colour interpretation of each band: "red", "gray", "undefined"...
    colour_table: ColourTable | None = None  # a paletted raster's RGB of each value, and which are transparent
    descriptions: tuple[str | None, ...] = ()  # each band's description (its name in the file), if any
    ground_control: bool = False  # ground control points or RPCs, which place it only once warped by them
    scales: tuple[float, ...] = ()  # each band's GDAL scale and offset: its values are stored * scale + offset
    offsets: tuple[float, ...] = ()
    dtypes: tuple[str, ...] = ()  # each band's data type (``dtype`` is the first's): a VRT can stack bands of several

    def stored_scaling(self, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """(scale, offset) of ``bands`` (1-based), each shaped (bands, 1, 1), where any band's stored values are not
        its values (a GDAL scale other than 1 or offset other than 0: heights in cm as int16, reflectance as
        uint16); None where they all are."""
        scales = np.array([self.scales[band - 1] if self.scales else 1.0 for band in bands], dtype=np.float64)
        offsets = np.array([self.offsets[band - 1] if self.offsets else 0.0 for band in bands], dtype=np.float64)
        if (scales == 1).all() and (offsets == 0).all():
            return None
        return scales[:, None, None], offsets[:, None, None]

    @property
    def georeferenced(self) -> bool:
        """Placed on the ground: a geotransform (a CRS alone places no pixel)."""
        return not self.transform.is_identity

    @property
    def unplaced(self) -> str:
        """Why a raster with ground control points, RPCs or a CRS but no geotransform is not placed, and what to do;
        "" for others."""
        if not self.transform.is_identity:
            return ""
        if self.ground_control:
            return (f"{self.path.name} has ground control points or RPCs but no geotransform, which eoseg reads: warp it "
                    "by them first (gdalwarp -tps, or -rpc, with -t_srs)")
        if self.crs is not None:
            return (f"{self.path.name} has a CRS but no geotransform, which places no pixel: give it one (gdal_edit.py "
                    "-a_ullr ULX ULY LRX LRY FILE, or a world file)")
        return ""


def crs_command(file: str, crs: str = "EPSG:CODE") -> str:
    """The command that gives raster ``file`` the CRS ``crs``, where it has a geotransform but no CRS."""
    return f"gdal_edit.py -a_srs {crs} {file}"


VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".gml", ".kml", ".sqlite")  # vector labels' files


@contextlib.contextmanager
def open_raster(path: str | Path, what: str = "raster") -> Iterator[rasterio.DatasetReader]:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DamagedInputError(f"{path}: broken link (its target {os.readlink(path)} does not exist); fix or remove the link")
    if not path.exists():
        if path.parts[1:2] and path.parts[1].startswith("vsi"):
            raise EosegError(f"{what} {path}: GDAL virtual paths (/vsizip/, /vsicurl/, ...) are not read; extract or "
                             "download the file and give its path on disk")
        raise EosegError(f"{what} not found: {path}")
    try:
        src = rasterio.open(path)
    except RasterioIOError as err:
        if path.suffix.lower() in (*VECTOR_SUFFIXES, ".zip"):  # a complete file of another kind: no good copy to get
            raise DamagedInputError(f"{path}: a vector file (polygons) or archive, where a {what} (a raster) is read; "
                                    "give a raster here (polygons label tiles through LABEL_PATTERN; unzip an archive "
                                    "and give the file inside)") from None
        raise DamagedInputError(f"{path}: cannot open this {what} ({_reason(err)}); "
                                "is it a complete raster file? replace it with a good copy") from None
    except UnicodeEncodeError:  # GDAL takes UTF-8 names; a name in another encoding cannot be passed
        raise DamagedInputError(f"{ascii(str(path))}: the file name is not valid UTF-8, which GDAL cannot open; "
                                "rename the file") from None
    with src:
        if src.transform.determinant == 0:  # a world file's 0 line, a -a_ullr of one corner twice: no pixel has an area
            raise DamagedInputError(f"{path}: its geotransform {tuple(src.transform)[:6]} gives its pixels no width or "
                                    "height, so they lie nowhere; set the right one (gdal_edit.py -a_ullr ULX ULY "
                                    "LRX LRY FILE) or remove it (gdal_edit.py -unsetgt FILE)")
        missing = [name for name in src.files[1:] if not name.startswith("/vsi") and not Path(name).exists()]
        if missing and src.driver == "VRT":  # GDAL then reads zeros for the whole mosaic, as valid pixels
            raise DamagedInputError(f"{path}: this VRT lists {len(missing)} file(s) that do not exist ({missing[0]}"
                                    f"{', ...' if len(missing) > 1 else ''}); put them back or rebuild the VRT")
        try:
            yield src
        except RasterioIOError as err:  # reads in the block: the header was fine, the data is not
            if src.driver == "VRT":  # a mosaic of other files: one of them is what failed
                raise DamagedInputError(f"{path}: cannot read this {what} ({_reason(err)}); a VRT reads the files it "
                                        "lists: check that each is complete") from None
            raise DamagedInputError(f"{path}: cannot read this {what} ({_reason(err)}); "
                             "the file is truncated or corrupt: replace it with a complete copy") from None


def raster_info(path: str | Path, what: str = "raster") -> RasterInfo:
    with open_raster(path, what) as src:
        return RasterInfo(Path(path), src.width, src.height, src.count, src.dtypes[0], src.crs, src.transform, src.nodata,
                          tuple(interp.name for interp in src.colorinterp), colour_table(src), tuple(src.descriptions),
                          bool(src.gcps[0]) or src.rpcs is not None,
                          tuple(float(value) for value in src.scales), tuple(float(value) for value in src.offsets),
                          tuple(src.dtypes))


class ColourTable(tuple):
    """A paletted raster's colour table: a tuple of the RGB of each value from 0 (None for a value it leaves out), and
    in ``transparent`` the values whose entry is fully transparent (alpha 0: "not drawn" in a drawing tool's PNG, whose
    colour beneath means nothing), kept apart so that readers of the colours see RGB."""

    def __new__(cls, colours, transparent=frozenset()):
        table = super().__new__(cls, colours)
        table.transparent = frozenset(transparent)
        return table

    def transparent_pixels(self, values: np.ndarray) -> np.ndarray | None:
        """Where ``values`` of the raster are of a transparent entry; None if no entry is."""
        return np.isin(values, sorted(self.transparent)) if self.transparent else None


def colour_table(src: rasterio.DatasetReader) -> ColourTable | None:
    """The colour table of a paletted single-band raster (an indexed PNG, a classified GeoTIFF); None for other
    rasters."""
    if src.count != 1 or src.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        table = src.colormap(1)
    except ValueError:  # "palette" stated, but no table
        return None
    return ColourTable((tuple(table[value][:3]) if value in table else None for value in range(max(table) + 1)),
                       (value for value, rgba in table.items() if rgba[3] == 0))


def expand_colour_table(values: np.ndarray, table: Sequence[tuple[int, int, int] | None], source: str) -> np.ndarray:
    """(H, W) values of a paletted raster -> (3, H, W) uint8 RGB through its colour table ``table``."""
    lookup = np.zeros((max(len(table), int(values.max()) + 1 if values.size else 1), 3), dtype=np.uint8)
    known = np.zeros(len(lookup), dtype=bool)
    for value, rgb in enumerate(table):
        if rgb is not None:
            lookup[value], known[value] = rgb, True
    missing = np.unique(values[~known[values]])
    if missing.size:
        raise EosegError(f"{source}: values {missing.tolist()[:10]} have no colour in its colour table")
    return np.moveaxis(lookup[values], -1, 0)


def read_raster(
    path: str | Path,
    bands: list[int] | None = None,
    window: Window | None = None,
    what: str = "raster",
) -> np.ndarray:
    """Read ``bands`` (1-based; all if None) of a raster, optionally a window: (C, H, W)."""
    with open_raster(path, what) as src:
        if bands is not None and max(bands) > src.count:
            raise EosegError(
                f"{path}: {what} has {src.count} bands but the config asks for bands {bands}; check BANDS"
            )
        return src.read(bands, window=window)


# GDAL mask values (0 none, 255 all; an alpha band's own values) at or above this hold data: a JPEG-compressed alpha
# band reads 1-12 over a transparent collar (review), an anti-aliased edge is half transparent
MASK_HOLDS_DATA = 128


def holds_data(masks: np.ndarray) -> np.ndarray:
    """Where GDAL masks (``read_masks``) say a raster holds data (see MASK_HOLDS_DATA)."""
    return masks >= MASK_HOLDS_DATA


def unlabelled_by_mask(src, window: Window | None = None) -> np.ndarray | None:
    """Pixels of a ground truth raster (an open dataset) that its alpha band or internal mask marks empty, or None
    if it has neither. A nodata value is not read so: in colour it is per band, and would blank every class colour
    with a channel at that value; a label raster's every value means something (a 0/255 mask tagged nodata 0)."""
    flags = src.mask_flag_enums[0]
    if MaskFlags.alpha in flags or (MaskFlags.per_dataset in flags and MaskFlags.nodata not in flags):
        return ~holds_data(src.read_masks(1, window=window))
    return None


def not_one_band(path: str | Path, count: int, colorinterp: Sequence[str] = ()) -> EosegError:
    """The error for a label raster of ``count`` bands (``colorinterp``, where known) where a numeric label map has
    one."""
    if count == 2 and tuple(colorinterp[1:]) == ("alpha",):  # grey and alpha: what gdalwarp -dstalpha writes
        return EosegError(f"{path}: a numeric label map has one band, this one has its values and an alpha band; make "
                          "the alpha its mask, which leaves the pixels it hides unlabelled: gdal_translate -b 1 -mask 2 "
                          "FILE FILE_labels.tif, and read that")
    return EosegError(f"{path}: a numeric label map has one band, this one has {count}; if it is colour-coded, "
                      "point GT_COLOR_PATTERN at it and run convert_gt.py --from-color")


def read_label(path: str | Path, what: str = "label map") -> np.ndarray:
    """Read a single-band numeric label map as (H, W) uint8."""
    array = read_raster(path, what=what)
    if array.shape[0] != 1:
        raise not_one_band(path, array.shape[0])
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise EosegError(f"{path}: label ids must lie in 0..255")
        array = array.astype(np.uint8)
    return array[0]


def spread_windows(height: int, width: int, side: int, size: int) -> list[Window]:
    """``side`` x ``side`` windows of ``size`` px that show what a ``height`` x ``width`` raster holds, in a few reads,
    none read twice: spread from edge to edge (the first and last flush with the raster's edges, where collars lie),
    or, where ``side`` windows would overlap, the raster cut into ``side`` x ``side`` cells read whole (windows
    overlapping in a small raster's middle took its edges at a fraction of their share: review, 16.7% zeros measured
    of 24.5%)."""
    def spans(length: int) -> list[tuple[int, int]]:
        if side * size >= length:
            edges = np.linspace(0, length, side + 1).round().astype(int)
            return [(int(start), int(end - start)) for start, end in zip(edges[:-1], edges[1:]) if end > start]
        return [(int(start), size) for start in np.linspace(0, length - size, side).round().astype(int)]

    return [Window(col, row, cols, rows) for row, rows in spans(height) for col, cols in spans(width)]


ALPHA_SAMPLE_WINDOWS, ALPHA_SAMPLE_SIZE = 3, 256  # windows a side, and their size, read to judge a band
DATA_IN_ALPHA_SHARE = 0.1  # of the pixels sampled, more than this between 0 and 255: data, not feathered edges


def alpha_band_problem(info: RasterInfo, bands) -> str:
    """Why a band of ``info`` left out of ``bands`` is misread as to transparency, or "": uint8 holding 0 and 255
    and nothing else but not tagged alpha, in a file with no mask or nodata value (its empty pixels are labelled as
    data); or tagged alpha but holding other values as data does (near-infrared: pixels where it is 0 are dropped
    as nodata). Judged on a few windows spread over the raster."""
    if info.dtype != "uint8" or info.nodata is not None:
        return ""
    left_out = [band for band in range(1, info.count + 1) if band not in bands]
    if not left_out:
        return ""
    windows = spread_windows(info.height, info.width, ALPHA_SAMPLE_WINDOWS, ALPHA_SAMPLE_SIZE)
    with open_raster(info.path, "image") as src:
        masked = any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums)
        for band in left_out:
            tagged = info.colorinterp[band - 1] == "alpha"
            if masked and not tagged:
                continue  # a mask or an alpha band GDAL reads already marks the empty pixels
            values = np.concatenate([src.read(band, window=window).ravel() for window in windows])
            between = np.mean((values > 0) & (values < 255))
            if tagged and between > DATA_IN_ALPHA_SHARE:
                return (f"{info.path}: band {band} is tagged as its alpha band, so GDAL reads the pixels where it is 0 as "
                        f"nodata, but {between:.0%} of it lies between 0 and 255, as data does (near-infrared?): if it is "
                        f"data, retag it (gdal_edit.py -colorinterp_{band} undefined FILE)")
            if not tagged and between == 0 and (values == 0).any() and (values == 255).any():
                return (f"{info.path}: band {band} holds only 0 and 255, as an alpha band does, but is not tagged as one: "
                        f"if it is transparency, its empty pixels are labelled as data; tag it (gdal_edit.py "
                        f"-colorinterp_{band} alpha FILE)")
    return ""


def check_colour_alpha(info: RasterInfo) -> None:
    """Refuse a colour ground truth whose band beyond R, G, B holds transparency without being tagged alpha: its empty
    pixels would be read as the classes of their colours (a tagged one is read as transparency)."""
    if "alpha" not in info.colorinterp and (problem := alpha_band_problem(info, [1, 2, 3])):
        raise EosegError(problem)


def nodata_kind(path: str | Path, bands: Sequence[int]) -> str:
    """How the raster at ``path`` marks its pixels without data in ``bands``, as check_data.py lists it: its
    nodata value, "alpha" (an alpha band), "mask" (a mask band) or "-" (none: every pixel is data)."""
    with open_raster(path, "image") as src:
        flags = set().union(*(src.mask_flag_enums[band - 1] for band in bands))
        if src.nodata is not None:
            return f"{src.nodata:g}"
    if MaskFlags.alpha in flags:
        return "alpha"
    return "mask" if MaskFlags.per_dataset in flags else "-"


def partial_nodata_is_no_data(src: rasterio.DatasetReader, bands: list[int]) -> bool:
    """Whether a pixel at the nodata value in only some of ``bands`` has no data: yes in a float raster or
    where a nodata value is negative (-9999 in the band another sensor did not cover); no for integer
    images' 0 or 255, which a dark or bright pixel holds in one band (GDAL's own rule: data while any
    band has some)."""
    return any(value is not None and (np.issubdtype(np.dtype(src.dtypes[band - 1]), np.floating) or value < 0)
               for band, value in ((band, src.nodatavals[band - 1]) for band in bands))


def valid_mask(src: rasterio.DatasetReader, bands: list[int], pixels: np.ndarray, nodata_zero: bool,
               window: Window | None = None) -> np.ndarray:
    """(rows, cols) True where ``pixels``, ``bands`` of ``src`` read in ``window``, hold data.

    No data: masked by the raster (its nodata value, mask band or alpha) in every band, or in any band
    where a band's nodata value is no pixel value (see :func:`partial_nodata_is_no_data`); NaN or
    infinity in any band; and with ``nodata_zero`` 0 in every band.
    """
    masks = holds_data(src.read_masks(bands, window=window))
    valid = masks.all(axis=0) if partial_nodata_is_no_data(src, bands) else masks.any(axis=0)
    if np.issubdtype(pixels.dtype, np.floating):
        valid &= np.isfinite(pixels).all(axis=0)
    if nodata_zero:
        valid &= pixels.any(axis=0)
    return valid


def read_as_note(info: RasterInfo, bands: Sequence[int]) -> str:
    """' (its stored DTYPE values scaled by the file's GDAL scale/offset)' for a raster whose ``bands`` are read so,
    else ''."""
    if info.stored_scaling(bands) is None:
        return ""
    return f" (its stored {info.dtype} values scaled by the file's GDAL scale/offset)"


def apply_scaling(pixels: np.ndarray, scaling: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Stored values -> the values they stand for (see :meth:`RasterInfo.stored_scaling`), as float32."""
    if scaling is None:
        return pixels
    scale, offset = scaling
    return pixels.astype(np.float32) * scale.astype(np.float32) + offset.astype(np.float32)


def output_suffix(info: RasterInfo) -> str:
    """GeoTIFF for georeferenced inputs and those placed by ground control points or RPCs (which their outputs
    carry), PNG for plain images."""
    return ".tif" if info.georeferenced or info.ground_control else ".png"


def _ground_control(info: RasterInfo) -> tuple:
    """(GCPs and their CRS, RPCs or None) of the raster ``info`` describes."""
    with open_raster(info.path) as src:
        return src.gcps, src.rpcs


class RasterWriter:
    """A raster written block by block, published atomically when complete.

    Blocks go into a tiled, deflate-compressed GeoTIFF under a temporary name (with
    ``like``'s CRS and transform when it is georeferenced). ``close()`` publishes it at
    ``path``: renamed for ``.tif``, converted for ``.png``. Leaving the ``with`` block
    by an exception deletes it instead, so a half-written output is never left.
    """

    def __init__(self, path: str | Path, like: RasterInfo | None, count: int, dtype: str,
                 colormap: dict | None = None, nodata: float | None = None, width: int | None = None,
                 height: int | None = None, band_names: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None, masked: bool = False, colour: bool | None = None):
        """``band_names``: each band's description (GeoTIFF); ``class_names``: what the values
        0, 1, ... of a one-band label map mean, written into the GeoTIFF's band metadata and,
        once published, as GDAL category names and attribute table beside it (see
        :func:`write_class_table`), or into a PNG's text chunk (see :func:`class_names_tag`); ``masked``: blocks
        come with their valid pixels, kept as the GeoTIFF's internal mask or a PNG's alpha band (GIS software
        shows the rest transparent; a PNG's ``nodata`` is its transparent palette entry); ``colour``: whether
        the bands are red, green and blue (None: three uint8 bands are), else each band is a grey level of its
        own (without it GDAL takes a fourth uint8 band for alpha, and masks pixels by it)."""
        self.path = Path(path)
        png = self.path.suffix.lower() == ".png"
        self.masked, self.alpha = masked and not png, masked and png  # a PNG holds no mask: an alpha band instead
        if band_names is not None and len(band_names) != count:
            raise EosegError(f"{self.path}: {len(band_names)} band names for {count} bands")
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.colormap = colormap
        suffix = self.path.suffix.lower()
        if suffix not in (".tif", ".tiff", ".png"):
            raise EosegError(f"{self.path}: unsupported output format; use .tif or .png")
        width = like.width if width is None else width
        height = like.height if height is None else height
        profile = dict(driver="GTiff", count=count + self.alpha, width=width, height=height, dtype=dtype,
                       compress="deflate", tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER")
        colour = count == 3 and dtype == "uint8" if colour is None else colour
        profile["photometric"] = "RGB" if colour else "MINISBLACK"
        if self.alpha:
            profile["alpha"] = "YES"
        if not png and like is not None and like.georeferenced:
            profile.update(crs=like.crs, transform=like.transform)
        placing = _ground_control(like) if not png and like is not None and like.ground_control else None
        if nodata is not None:
            profile["nodata"] = nodata
        make_folder(self.path.parent)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}.tif")
        try:
            with _checked_write(self.path, self._tmp):
                self._dst = rasterio.open(self._tmp, "w", **profile)
                if placing is not None:  # on the image's own pixel grid: its points place these pixels alike
                    gcps, rpcs = placing
                    if gcps[0]:
                        self._dst.gcps = gcps
                    if rpcs is not None:
                        self._dst.rpcs = rpcs
                if colormap is not None:
                    self._dst.write_colormap(1, colormap)
                for band, name in enumerate(band_names or (), start=1):
                    self._dst.set_band_description(band, str(name))
                if self.class_names is not None:
                    names = json.dumps(self.class_names)
                    if png:  # the PNG driver keeps the dataset's metadata only (as text chunks: see close)
                        self._dst.update_tags(CLASS_NAMES=names)
                    else:
                        self._dst.update_tags(1, CLASS_NAMES=names)
        except BaseException:
            self._remove_temp()
            raise

    def write(self, array: np.ndarray, row: int = 0, valid: np.ndarray | None = None) -> None:
        """Write a (C, h, W) or (h, W) block whose first row is ``row``; of a ``masked`` writer, with the
        (h, W) mask of its ``valid`` pixels."""
        if array.ndim == 2:
            array = array[None]
        window = Window(0, row, array.shape[2], array.shape[1])
        with _checked_write(self.path, self._tmp):
            self._dst.write(array, indexes=list(range(1, array.shape[0] + 1)), window=window)
            if self.alpha:
                self._dst.write(np.where(valid, 255, 0).astype(np.uint8), self._dst.count, window=window)
            if self.masked:
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):  # inside the file: a sidecar would miss the rename
                    self._dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)

    def close(self) -> Path:
        try:
            with _checked_write(self.path, self._tmp):
                self._dst.close()  # flushes the last blocks
            if self.path.suffix.lower() == ".png":
                with atomic_path(self.path) as png:
                    # metadata (CLASS_NAMES) as text chunks in the file: the .aux.xml GDAL would put it in is dropped
                    rasterio.shutil.copy(self._tmp, png, driver="PNG", WRITE_METADATA_AS_TEXT="YES")
                    for extra in png.parent.glob(png.name + ".aux.xml"):
                        extra.unlink()
            else:
                os.replace(self._tmp, self.path)
                if self.class_names is not None:
                    write_class_table(self.path, self.class_names, self.colormap)
        finally:
            self._remove_temp()
        return self.path

    def abort(self) -> None:
        if not self._dst.closed:
            with contextlib.suppress(Exception):  # the error that made us abort is the one to report
                self._dst.close()
        self._remove_temp()

    def _remove_temp(self) -> None:
        for leftover in (self._tmp, self._tmp.with_name(self._tmp.name + ".aux.xml")):
            if leftover.exists():
                leftover.unlink()

    def __enter__(self) -> "RasterWriter":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_raster(
    path: str | Path,
    array: np.ndarray,
    like: RasterInfo | None = None,
    colormap: dict | None = None,
    nodata: float | None = None,
) -> Path:
    """Write a whole (C, H, W) or (H, W) array atomically (see :class:`RasterWriter`)."""
    if array.ndim == 2:
        array = array[None]
    count, height, width = array.shape
    with RasterWriter(path, like, count, array.dtype.name, colormap, nodata, width=width, height=height) as writer:
        writer.write(array)
    return Path(path)


# ---------------------------------------------------------------- class names for GIS software
def class_names_tag(src: rasterio.DatasetReader) -> str | None:
    """The CLASS_NAMES tag (a JSON list) of a label map eoseg wrote: its band 1's, or a PNG's dataset's (a text chunk:
    GDAL's PNG driver keeps no band metadata); None for a raster without."""
    return src.tags(1).get("CLASS_NAMES", src.tags().get("CLASS_NAMES"))


def recorded_class_names(label_path: str | Path) -> list[str] | None:
    """The class names of the values 0, 1, ... that a label map written by eoseg records (its
    CLASS_NAMES tag, see :func:`class_names_tag`); None for one without."""
    with open_raster(label_path, "label map") as src:
        text = class_names_tag(src)
    if text is None:
        return None
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not (isinstance(names, list) and names and all(isinstance(name, str) for name in names)):
        raise EosegError(f"{label_path}: its CLASS_NAMES tag is not a JSON list of names ({text[:80]!r}); fix or remove "
                         "the tag (without it the config's CLASS_NAMES name the classes)")
    return names


def write_class_table(path: str | Path, class_names: Sequence[str], colormap: dict | None = None) -> Path:
    """Name the values 0..n-1 of the one-band GeoTIFF ``path`` in ``PATH.aux.xml``, atomically.

    GDAL keeps category names and raster attribute tables of GeoTIFFs in that side file
    (its PAM format): ``gdalinfo`` lists them, QGIS shows the names in the layer's legend
    (paletted renderer, "classify") and its attribute table. The table has the value, the
    class name and, with ``colormap``, the class colour.
    """
    path = Path(path)
    categories = "".join(f"      <Category>{escape(name)}</Category>\n" for name in class_names)
    fields = [("Value", 0, 5), ("Class", 2, 2)]  # (name, GDAL field type, usage): integer min-max, string name
    if colormap is not None:
        fields += [("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    columns = "".join(f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type><Usage>{usage}</Usage></FieldDefn>\n'
                      for i, (name, kind, usage) in enumerate(fields))
    rows = []
    for value, name in enumerate(class_names):
        cells = [str(value), escape(name)] + ([str(int(c)) for c in colormap[value][:3]] if colormap is not None else [])
        rows.append(f'      <Row index="{value}">' + "".join(f"<F>{cell}</F>" for cell in cells) + "</Row>\n")
    text = ('<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n' + categories + '    </CategoryNames>\n'
            '    <GDALRasterAttributeTable tableType="thematic">\n' + columns + "".join(rows) +
            '    </GDALRasterAttributeTable>\n  </PAMRasterBand>\n</PAMDataset>\n')
    side = path.with_name(path.name + ".aux.xml")
    atomic_write_text(side, text)
    return side
