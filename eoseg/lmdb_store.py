"""Patches packed into LMDB: one record per patch, image and label together.

A record is a small JSON header (shape and dtype of image and label, CRC-32 of the
bytes) followed by the raw bytes of both arrays. The database's ``__meta__`` key holds
the data signature, count and patch shape; ``__complete__`` is written in the last
transaction, and a reader refuses a database without it. A reader also refuses a file
shorter than its pages (a truncated copy would kill the process with SIGBUS when mapped)
and names a record whose bytes do not match their checksum.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Iterable

import lmdb
import numpy as np
from tqdm import tqdm

from eoseg.config import Config
from eoseg.errors import EosegError
from eoseg.extract import CHANGED_SINCE_EXTRACTION, patch_checksum, read_manifest
from eoseg.io import atomic_directory, write_failure
from eoseg.labels import check_class_ids
from eoseg.metadata import check_source_files, check_stored_data, data_signature

META_KEY = b"__meta__"
COMPLETE_KEY = b"__complete__"
COMMIT_EVERY = 512
TRAIN_LMDB = "train.lmdb"  # in every LMDB_DIR create_lmdb.py makes (beside test.lmdb where there are test patches)
_HEADER_LEN = struct.Struct("<I")


def record_key(index: int) -> bytes:
    return f"{index:010d}".encode()


def encode_record(image: np.ndarray, label: np.ndarray) -> bytes:
    payload = np.ascontiguousarray(image).tobytes() + np.ascontiguousarray(label).tobytes()
    header = json.dumps({
        "image": [list(image.shape), image.dtype.str],
        "label": [list(label.shape), label.dtype.str],
        "crc32": zlib.crc32(payload),
    }).encode()
    return _HEADER_LEN.pack(len(header)) + header + payload


def decode_record(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    (length,) = _HEADER_LEN.unpack_from(buffer)
    header = json.loads(bytes(buffer[_HEADER_LEN.size:_HEADER_LEN.size + length]))
    offset = _HEADER_LEN.size + length
    if "crc32" in header and zlib.crc32(buffer[offset:]) != header["crc32"]:
        raise ValueError("its bytes do not match their checksum")
    arrays = []
    for field in ("image", "label"):
        shape, dtype = header[field]
        count = int(np.prod(shape))
        array = np.frombuffer(buffer, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
        offset += array.nbytes
        arrays.append(array)
    return arrays[0], arrays[1]


def write_lmdb(path: Path, records: Iterable[tuple[np.ndarray, np.ndarray]], count: int, meta: dict, progress: bool = True) -> None:
    """Write ``count`` (image, label) records and their metadata; the completion marker goes last."""
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise EosegError(f"{path}: no patches to write")
    record_bytes = len(encode_record(*first))
    # LMDB needs its maximum size up front; the file grows only as data is written
    map_size = int(count * record_bytes * 1.5) + (64 << 20)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, lock=True)
    try:
        txn = env.begin(write=True)
        bar = tqdm(total=count, desc=f"pack {path.name}", unit="patch", disable=not progress)
        for index, (image, label) in enumerate(_chain(first, records)):
            txn.put(record_key(index), encode_record(image, label))
            bar.update()
            if (index + 1) % COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
        bar.close()
        if index + 1 != count:
            raise EosegError(f"{path}: expected {count} patches, got {index + 1}")
        txn.put(META_KEY, json.dumps({**meta, "count": count}).encode())
        txn.commit()
        with env.begin(write=True) as txn:
            txn.put(COMPLETE_KEY, b"1")
        env.sync(True)
    except lmdb.MapFullError:
        raise EosegError(f"{path}: LMDB map full; patches are larger than expected") from None
    except lmdb.Error as err:
        raise write_failure(err, path) from None
    finally:
        env.close()


def _chain(first, rest):
    yield first
    yield from rest


_READERS: dict[tuple[int, int, int], lmdb.Environment] = {}


def reader_environment(path: Path) -> lmdb.Environment:
    """The read-only environment of a database, one per database file and process.

    LMDB forbids opening the same database twice in a process, and an environment must
    not cross a fork; keying on the file's identity and the process id honours both
    (a database replaced by --force is a new file and gets a new environment).
    """
    data = path / "data.mdb"
    if not data.is_file():
        raise EosegError(f"{path}: no LMDB database here; run create_lmdb.py first")
    stat = data.stat()
    key = (stat.st_dev, stat.st_ino, os.getpid())
    if key not in _READERS:
        # environments inherited through fork are unusable here, and py-lmdb would refuse
        # to open their databases again while they exist: close them first
        for inherited in [k for k in _READERS if k[2] != os.getpid()]:
            _READERS.pop(inherited).close()
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=True)
        except lmdb.Error as err:
            raise _damaged(data, f"LMDB cannot open it: {err}") from None
        # every page the database uses must be in the file: a page past its end is a SIGBUS when read
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if stat.st_size < needed:
            env.close()
            raise _damaged(data, f"{stat.st_size} bytes where its pages need {needed}; the file is truncated")
        _READERS[key] = env
    return _READERS[key]


def _damaged(data: Path, why: str) -> EosegError:
    return EosegError(f"{data}: damaged LMDB ({why}); run create_lmdb.py --force to rebuild it")


def read_lmdb_meta(path: str | Path) -> dict:
    """The metadata of a complete LMDB; refuses a missing or incomplete database."""
    path = Path(path)
    with reader_environment(path).begin() as txn:
        try:
            complete, meta = txn.get(COMPLETE_KEY), txn.get(META_KEY)
        except lmdb.Error as err:
            raise _damaged(path / "data.mdb", str(err)) from None
        if complete is None:
            raise EosegError(f"{path}: the LMDB is incomplete (its writer was interrupted); run create_lmdb.py again")
        try:
            return json.loads(meta)
        except (ValueError, TypeError):
            raise _damaged(path / "data.mdb", "its metadata record is unreadable") from None


class LmdbPatches:
    """Random access to the (image, label) records of a complete LMDB.

    Reads go through :func:`reader_environment`: read-only, without locks, and opened
    anew in each DataLoader worker process.
    """

    def __init__(self, path: str | Path, expected_signature: dict | None = None):
        self.path = Path(path)
        self.meta = read_lmdb_meta(self.path)
        if expected_signature is not None:
            check_stored_data(self.meta["signature"], expected_signature, f"LMDB {self.path}", self.meta.get("nodata_fill"))

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        with reader_environment(self.path).begin(buffers=True) as txn:
            try:
                buffer = txn.get(record_key(index))
                if buffer is None:
                    raise ValueError("it is missing")
                image, label = decode_record(buffer)
            except (lmdb.Error, ValueError, TypeError, KeyError, struct.error) as err:
                raise _damaged(self.path / "data.mdb", f"record {index}: {err}") from None
            return image.copy(), label.copy()  # the buffer is only valid inside the transaction


def _patch(patches_dir: Path, row: dict, key: str, check=None) -> np.ndarray:
    """The image or label (``key``) patch of a patches.csv ``row``, refused if it cannot be read, by ``check(array,
    path)`` where given (the more telling refusal), or if it is not the array extraction wrote (its checksum, where
    the list records one: older folders' do not)."""
    path = patches_dir / row[key]
    redo = CHANGED_SINCE_EXTRACTION
    try:
        array = np.load(path)
    except (OSError, ValueError, EOFError) as err:  # cut short by an interrupted copy (review: a traceback)
        raise EosegError(f"{path}: cannot read this patch ({err}); {redo}") from None
    if check is not None:
        check(array, str(path))
    if row.get(f"{key}_crc32") and patch_checksum(array) != row[f"{key}_crc32"]:
        raise EosegError(f"{path}: not the patch extraction wrote (its checksum differs); {redo}")
    return array


def _checked_label(cfg: Config, patches_dir: Path, row: dict) -> np.ndarray:
    """A label patch (:func:`_patch`), refused if it holds ids that are neither a class nor IGNORE_LABEL."""
    return _patch(patches_dir, row, "label", lambda label, path: check_class_ids(label, cfg.num_classes,
                                                                                 cfg.IGNORE_LABEL, path))


def create_lmdb(cfg: Config, patches_dir: str | Path, lmdb_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Pack a patch folder into ``lmdb_dir``/train.lmdb (shuffled) and test.lmdb (in order)."""
    manifest, rows = read_manifest(patches_dir)
    signature = data_signature(cfg)
    check_stored_data(manifest["signature"], signature, f"patches in {patches_dir}", manifest.get("nodata_fill"))
    check_source_files(manifest.get("sources"), cfg.DATA_ROOT, f"patches in {patches_dir}")
    patches_dir = Path(patches_dir)
    summary = {}
    with atomic_directory(lmdb_dir, force=force, marker=TRAIN_LMDB) as tmp:
        for split in ("train", "test"):
            split_rows = [r for r in rows if r["split"] == split]
            if not split_rows:
                continue
            if split == "train":
                order = np.random.default_rng(cfg.SHUFFLE_SEED).permutation(len(split_rows))
                split_rows = [split_rows[i] for i in order]
            records = ((_patch(patches_dir, r, "image"), _checked_label(cfg, patches_dir, r)) for r in split_rows)
            meta = {
                "signature": signature,
                "split": split,
                "patch_shape": [cfg.num_bands, cfg.PATCH_SIZE, cfg.PATCH_SIZE],
                "dtype": manifest["dtype"],
                "pixel_size_m": manifest.get("pixel_size_m"),
                "input_statistics": manifest.get("input_statistics"),
                "nodata_fill": manifest.get("nodata_fill"),
                "image_bands": manifest.get("image_bands"),
                "class_pixels": manifest.get("class_pixels") if split == "train" else None,
                "shuffle_seed": cfg.SHUFFLE_SEED if split == "train" else None,
                "source": str(patches_dir),
                "tiles": sorted({r["tile"] for r in split_rows}),
                "sources": manifest.get("sources"),
            }
            write_lmdb(tmp / f"{split}.lmdb", records, len(split_rows), meta, progress)
            summary[split] = len(split_rows)
        cfg.save(tmp)
    return summary

