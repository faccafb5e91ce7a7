"""eoseg.lmdb_store: record encoding, writing, reading, completeness and metadata checks."""

from __future__ import annotations

import pickle

import lmdb
import numpy as np
import pytest

from eoseg import lmdb_store
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.lmdb_store import (
    COMPLETE_KEY,
    LmdbPatches,
    create_lmdb,
    decode_record,
    encode_record,
    read_lmdb_meta,
    write_lmdb,
)
from eoseg.metadata import data_signature

PATCH = 16


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=[f"PATCH_SIZE={PATCH}"])


def make_records(n: int, dtype=np.uint8, bands: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    out = []
    for i in range(n):
        image = rng.integers(0, high, size=(bands, PATCH, PATCH), endpoint=True).astype(dtype)
        label = rng.integers(0, 6, size=(PATCH, PATCH)).astype(np.uint8)
        label[0, 0] = 255
        image[0, 0, 0] = i % (high + 1)  # makes records distinguishable by position
        out.append((image, label))
    return out


def meta_for(cfg, **extra) -> dict:
    return {"signature": data_signature(cfg), "split": "train", "patch_shape": [3, PATCH, PATCH], **extra}


# ---------------------------------------------------------------- encode / decode
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_decode_round_trip(dtype):
    (image, label), = make_records(1, dtype=dtype, bands=4, seed=3)
    image[1, 2, 3] = np.iinfo(dtype).max
    buffer = encode_record(image, label)
    assert isinstance(buffer, bytes)
    got_image, got_label = decode_record(buffer)
    assert got_image.dtype == dtype and got_image.shape == (4, PATCH, PATCH)
    assert got_label.dtype == np.uint8 and got_label.shape == (PATCH, PATCH)
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_label, label)
    # decoding a memoryview (what LMDB hands out with buffers=True) works as well
    got_image, got_label = decode_record(memoryview(buffer))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_label, label)


def test_encode_non_contiguous_arrays():
    image = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)[:, ::-1, :]  # a flipped view
    label = np.arange(64, dtype=np.uint8).reshape(8, 8).T
    got_image, got_label = decode_record(encode_record(image, label))
    np.testing.assert_array_equal(got_image, image)
    np.testing.assert_array_equal(got_label, label)


def test_encode_record_size_is_header_plus_raw_bytes():
    image = np.zeros((3, PATCH, PATCH), dtype=np.uint16)
    label = np.zeros((PATCH, PATCH), dtype=np.uint8)
    buffer = encode_record(image, label)
    assert image.nbytes + label.nbytes < len(buffer) < image.nbytes + label.nbytes + 200


# ---------------------------------------------------------------- write / read
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_write_and_read_back_in_order(tmp_path, cfg, dtype):
    records = make_records(7, dtype=dtype)
    path = tmp_path / "train.lmdb"
    write_lmdb(path, iter(records), len(records), meta_for(cfg, dtype=np.dtype(dtype).name), progress=False)
    meta = read_lmdb_meta(path)
    assert meta["count"] == 7
    assert meta["signature"] == data_signature(cfg)
    assert meta["dtype"] == np.dtype(dtype).name
    patches = LmdbPatches(path, expected_signature=data_signature(cfg))
    assert len(patches) == 7
    for i, (image, label) in enumerate(records):
        got_image, got_label = patches[i]
        assert got_image.dtype == dtype
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)
        assert got_image.flags.writeable  # a copy, not a view of LMDB's buffer
    with pytest.raises(IndexError):
        patches[7]
    with pytest.raises(IndexError):
        patches[-1]


def test_many_records_across_commits(tmp_path, cfg, monkeypatch):
    monkeypatch.setattr(lmdb_store, "COMMIT_EVERY", 4)
    records = make_records(11)
    path = tmp_path / "train.lmdb"
    write_lmdb(path, records, 11, meta_for(cfg), progress=False)
    patches = LmdbPatches(path)
    assert len(patches) == 11
    for i in (0, 3, 4, 10):
        np.testing.assert_array_equal(patches[i][0], records[i][0])


def test_no_records_refused(tmp_path, cfg):
    with pytest.raises(EosegError, match="no patches"):
        write_lmdb(tmp_path / "empty.lmdb", iter([]), 0, meta_for(cfg), progress=False)


# ---------------------------------------------------------------- incomplete databases
def failing_records(records, fail_after: int):
    for i, record in enumerate(records):
        if i == fail_after:
            raise RuntimeError("disk on fire")
        yield record


@pytest.mark.parametrize("commit_every", [2, 512])
def test_interrupted_writer_leaves_database_that_readers_refuse(tmp_path, cfg, monkeypatch, commit_every):
    # with a small COMMIT_EVERY some records reach the disk before the failure
    monkeypatch.setattr(lmdb_store, "COMMIT_EVERY", commit_every)
    records = make_records(10)
    path = tmp_path / "train.lmdb"
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_lmdb(path, failing_records(records, 5), 10, meta_for(cfg), progress=False)
    assert (path / "data.mdb").is_file()
    with pytest.raises(EosegError, match="incomplete"):
        read_lmdb_meta(path)
    with pytest.raises(EosegError, match="incomplete"):
        LmdbPatches(path, expected_signature=data_signature(cfg))


def test_fewer_records_than_announced_refused(tmp_path, cfg):
    path = tmp_path / "train.lmdb"
    with pytest.raises(EosegError, match="expected 10 patches, got 4"):
        write_lmdb(path, make_records(4), 10, meta_for(cfg), progress=False)
    with pytest.raises(EosegError, match="incomplete"):
        read_lmdb_meta(path)


def test_missing_completion_marker_refused(tmp_path, cfg):
    # as if the writer died between the metadata commit and the completion marker
    path = tmp_path / "train.lmdb"
    write_lmdb(path, make_records(3), 3, meta_for(cfg), progress=False)
    env = lmdb.open(str(path), subdir=True)
    with env.begin(write=True) as txn:
        assert txn.delete(COMPLETE_KEY)
    env.close()
    with pytest.raises(EosegError, match="incomplete"):
        LmdbPatches(path)


def test_missing_database_refused(tmp_path):
    with pytest.raises(EosegError, match="no LMDB database"):
        read_lmdb_meta(tmp_path / "nothing.lmdb")
    with pytest.raises(EosegError, match="create_lmdb"):
        LmdbPatches(tmp_path / "nothing.lmdb")


# ---------------------------------------------------------------- metadata checks
@pytest.fixture
def written(tmp_path, cfg):
    path = tmp_path / "train.lmdb"
    write_lmdb(path, make_records(3), 3, meta_for(cfg), progress=False)
    return path


@pytest.mark.parametrize(
    "overrides,field",
    [
        ([f"PATCH_SIZE={PATCH * 2}"], "patch_size"),
        (["CLASS_NAMES=['a', 'b', 'c', 'd', 'e', 'f']"], "class_names"),
        (["BAND_NAMES=['R', 'G', 'B']"], "band_names"),
        (["PALETTE=[[255,255,255],[0,0,255],[0,255,255],[0,255,0],[255,255,0],[255,0,1]]"], "palette"),
        (["IGNORE_LABEL=254"], "ignore_label"),
        (["BANDS=[3, 2, 1]"], "bands"),  # the same band names, read from other bands of the files
        (["TRAIN_IDS=['1']"], "train_tiles"),  # a training tile moved out: its patches must not stay
        # where the labels are read from, how nodata is read, how the tiles were cut and augmented: other pixels
        (["LABEL_PATTERN=labels_v2/{id}.tif"], "LABEL_PATTERN"),
        (["NODATA_ZERO=True"], "NODATA_ZERO"),
        (["FLIPS=False"], "FLIPS"),
        (["TRAIN_STRIDE=32"], "TRAIN_STRIDE"),
    ],
)
def test_signature_mismatch_refused_naming_field(written, overrides, field):
    other = load_config(overrides=[f"PATCH_SIZE={PATCH}", *overrides])
    with pytest.raises(EosegError) as info:
        LmdbPatches(written, expected_signature=data_signature(other))
    message = str(info.value)
    assert f"{field} =" in message or f"made with {field}" in message
    assert str(written) in message


def test_settings_typed_as_tuples_match_their_record(tmp_path):
    """A record reads back from JSON with lists: ROTATIONS typed (90, 180) is what it recorded."""
    cfg = load_config(overrides=[f"PATCH_SIZE={PATCH}", "ROTATIONS=(90, 180)"])
    write_lmdb(tmp_path / "rotated.lmdb", make_records(3), 3, meta_for(cfg), progress=False)
    assert len(LmdbPatches(tmp_path / "rotated.lmdb", expected_signature=data_signature(cfg))) == 3


def test_a_copy_of_the_data_elsewhere_reads_the_same_patches(written):
    """DATA_ROOT is not recorded: a dataset copied to another disk stands for the same tiles."""
    other = load_config(overrides=[f"PATCH_SIZE={PATCH}", "DATA_ROOT=/mnt/fast/vaihingen"])
    assert len(LmdbPatches(written, expected_signature=data_signature(other))) == 3


def test_a_record_made_before_bands_and_tiles_were_recorded_is_read(tmp_path, cfg):
    meta = meta_for(cfg)
    meta["signature"] = {key: value for key, value in meta["signature"].items() if key not in ("bands", "train_tiles")}
    write_lmdb(tmp_path / "old.lmdb", make_records(3), 3, meta, progress=False)
    other = load_config(overrides=[f"PATCH_SIZE={PATCH}", "BANDS=[3, 2, 1]"])
    assert len(LmdbPatches(tmp_path / "old.lmdb", expected_signature=data_signature(other))) == 3


def test_changed_norm_std_accepted_as_the_records_hold_raw_pixels(written):
    other = load_config(overrides=[f"PATCH_SIZE={PATCH}", "NORM_STD=[1.0, 1.0, 1.0]"])
    assert len(LmdbPatches(written, expected_signature=data_signature(other))) == 3


def test_matching_signature_accepted(written, cfg):
    same = load_config(overrides=[f"PATCH_SIZE={PATCH}", "SEED=3", "BATCH_SIZE=2"])  # unrelated names differ
    assert len(LmdbPatches(written, expected_signature=data_signature(same))) == 3
    assert len(LmdbPatches(written)) == 3  # no check requested


# ---------------------------------------------------------------- pickling for DataLoader workers
def test_lmdb_patches_pickle_round_trip(tmp_path, cfg):
    records = make_records(3)
    path = tmp_path / "train.lmdb"
    write_lmdb(path, records, 3, meta_for(cfg), progress=False)
    patches = LmdbPatches(path, expected_signature=data_signature(cfg))
    np.testing.assert_array_equal(patches[0][0], records[0][0])  # opens the environment
    blob = pickle.dumps(patches)  # no open environment travels: the clone opens its own or shares this process's
    del patches
    clone = pickle.loads(blob)
    assert clone.meta["count"] == 3
    assert len(clone) == 3
    for i, (image, label) in enumerate(records):
        got_image, got_label = clone[i]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_lmdb_patches_in_dataloader_workers(tmp_path, cfg, context):
    from torch.utils.data import DataLoader

    records = make_records(6)
    path = tmp_path / "train.lmdb"
    write_lmdb(path, records, 6, meta_for(cfg), progress=False)
    # spawn pickles the dataset into each worker; fork copies it
    workers = 1 if context == "spawn" else 2  # a spawned worker re-imports torch: keep it to one
    loader = DataLoader(LmdbPatches(path), batch_size=2, num_workers=workers, multiprocessing_context=context)
    batches = list(loader)
    images = np.concatenate([batch[0].numpy() for batch in batches])
    labels = np.concatenate([batch[1].numpy() for batch in batches])
    np.testing.assert_array_equal(images, np.stack([r[0] for r in records]))
    np.testing.assert_array_equal(labels, np.stack([r[1] for r in records]))


def test_same_lmdb_opened_twice_in_one_process(written):
    first = LmdbPatches(written)
    first[0]
    assert read_lmdb_meta(written)["count"] == 3
    second = LmdbPatches(written)
    np.testing.assert_array_equal(second[1][0], first[1][0])
    clone = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(clone[2][0], first[2][0])


def test_patches_cut_from_files_changed_since_are_refused(tiny_cfg, tmp_path):
    """Labels corrected in place after extraction: packing the old patches, or training on an LMDB of them, is
    refused, naming the file; a copy of the data (new times, same bytes) under another DATA_ROOT is not."""
    import os
    import shutil

    import rasterio

    from eoseg.data import training_data
    from eoseg.extract import extract_patches

    data = tmp_path / "data"
    shutil.copytree(tiny_cfg.DATA_ROOT, data)
    cfg = tiny_cfg.replace(DATA_ROOT=str(data), TRAIN_IDS=["1", "2"], TEST_IDS=["4"])
    extract_patches(cfg, cfg.PATCHES_DIR, progress=False)
    create_lmdb(cfg, cfg.PATCHES_DIR, cfg.LMDB_DIR, progress=False)
    copy = tmp_path / "copy"
    shutil.copytree(data, copy, copy_function=shutil.copyfile)  # new modification times
    assert os.stat(copy / cfg.LABEL_PATTERN.format(id="2")).st_mtime_ns != os.stat(data / cfg.LABEL_PATTERN.format(id="2")).st_mtime_ns
    assert len(training_data(cfg.replace(DATA_ROOT=str(copy)))) > 0
    labels = data / cfg.LABEL_PATTERN.format(id="2")
    with rasterio.open(labels, "r+") as dst:  # corrected in place
        dst.write(np.ones_like(dst.read()))
    key = cfg.LABEL_PATTERN.format(id="2")
    changed = (rf"was cut from {key} under the DATA_ROOT of then, and {labels} is not that file: changed since \(its "
               rf"patches hold the old pixels or labels: rebuild them .*\), or DATA_ROOT {data} holds other data")
    with pytest.raises(EosegError, match=rf"LMDB .*train.lmdb {changed}"):
        training_data(cfg)
    with pytest.raises(EosegError, match=rf"patches in .* {changed}"):
        create_lmdb(cfg, cfg.PATCHES_DIR, tmp_path / "again", progress=False)


def test_a_patch_cut_short_or_rewritten_since_extraction_is_refused(tiny_cfg, tmp_path):
    """A patch cut short by an interrupted copy gave a numpy traceback; a label patch rewritten with another position's
    labels was packed without a word (review). Each is refused by its checksum in patches.csv."""
    import shutil

    from eoseg.extract import extract_patches, read_manifest

    extract_patches(tiny_cfg, tiny_cfg.PATCHES_DIR, progress=False)
    patches = tmp_path / "copied_patches"
    _, rows = read_manifest(tiny_cfg.PATCHES_DIR)
    train = [row for row in rows if row["split"] == "train"]
    for case in ("cut", "rewritten"):
        shutil.rmtree(patches, ignore_errors=True)
        shutil.copytree(tiny_cfg.PATCHES_DIR, patches)
        if case == "cut":
            image = patches / train[3]["image"]
            image.write_bytes(image.read_bytes()[:200])
            message = rf"{train[3]['image']}: cannot read this patch \(.*\); the folder changed since extraction"
        else:
            shutil.copyfile(patches / train[0]["label"], patches / train[3]["label"])
            message = rf"{train[3]['label']}: not the patch extraction wrote \(its checksum differs\); the folder changed"
        with pytest.raises(EosegError, match=message):
            create_lmdb(tiny_cfg, patches, tmp_path / f"lmdb_{case}", progress=False)
