"""Labelling beyond one machine: --shard K/N job arrays with a merged report, torchrun over two nodes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import inference as inference_script
from eoseg.checkpoint import save_checkpoint
from eoseg.errors import EosegError
from eoseg.infer import Job, merge_shard_reports, parse_shard, run_inference, shard_of
from eoseg.models import model_from_config

from .conftest import ROOT, as_arguments, run_script
from .test_infer import random_image, write_geotiff
from .test_cli import assert_one_line_error

TILES = ["1", "2", "3", "4"]


@pytest.fixture
def weights(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "w.pt", tiny_cfg, model_from_config(tiny_cfg), iteration=0)


def test_shards_cover_the_sorted_inputs_once_whatever_their_order():
    jobs = [Job(None, name) for name in ("d", "a", "e", "c", "b")]
    shares = [[job.name for job in shard_of(jobs, k, 3)] for k in (1, 2, 3)]
    assert shares == [["a", "d"], ["b", "e"], ["c"]]
    assert [[job.name for job in shard_of(jobs[::-1], k, 3)] for k in (1, 2, 3)] == shares
    assert parse_shard("2/7") == (2, 7) and parse_shard(" 7 / 7 ") == (7, 7)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/3"):
        with pytest.raises(EosegError, match="--shard takes K/N"):
            parse_shard(bad)


def test_three_shards_label_each_tile_once_and_merge_to_a_single_runs_metrics(tiny_cfg, weights, tmp_path):
    cfg = tiny_cfg.replace(WRITE_PREVIEW=False)
    single = run_inference(cfg, weights, tmp_path / "single", TILES, progress=False)
    shared = tmp_path / "shards"
    shares = [run_inference(cfg, weights, shared, TILES, progress=False, shard=(k, 3)) for k in (1, 2, 3)]
    labelled = [image.name for share in shares for image in share.images]
    assert sorted(labelled) == sorted(image.name for image in single.images) and len(labelled) == len(TILES)
    assert not (shared / "metrics.json").exists()  # each share reports on its own, nothing is overwritten
    assert sorted(p.name for p in shared.glob("metrics.shard-*")) == [f"metrics.shard-{k}-of-3.json" for k in (1, 2, 3)]

    # the report merged by the script is the single run's, image by image and overall
    result = subprocess.run([sys.executable, str(ROOT / "inference.py"), "--merge-metrics", str(shared),
                             "--out", str(tmp_path / "merged"), *as_arguments(cfg.to_dict())],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    merged = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    expected = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert merged["overall"] == expected["overall"] and merged["merged_shards"] == 3
    assert {name: entry["metrics"] for name, entry in merged["images"].items()} == \
           {name: entry["metrics"] for name, entry in expected["images"].items()}
    assert (tmp_path / "merged" / "metrics.txt").read_text() == (tmp_path / "single" / "metrics.txt").read_text()
    assert (tmp_path / "merged" / "confusion_matrix.png").is_file()

    # a rerun of a share (a requeued array job) keeps what it finds done
    again = run_inference(cfg, weights, shared, TILES, progress=False, shard=(2, 3))
    assert [image.reused for image in again.images] == [True]


def test_merging_refuses_missing_or_foreign_shares(tiny_cfg, weights, tmp_path):
    cfg = tiny_cfg.replace(WRITE_PREVIEW=False)
    run_inference(cfg, weights, tmp_path / "a", TILES[:2], progress=False, shard=(1, 2))
    with pytest.raises(EosegError, match="shares 2 of 2 have no report yet"):
        merge_shard_reports(cfg, [tmp_path / "a"], tmp_path / "out")
    with pytest.raises(EosegError, match="no shard reports"):
        merge_shard_reports(cfg, [tmp_path / "out"], tmp_path / "out")
    run_inference(cfg.replace(BLEND="gaussian"), weights, tmp_path / "b", TILES[:2], progress=False, shard=(2, 2))
    with pytest.raises(EosegError, match=r"shares 2 were made with other config than share 1 \(BLEND='uniform' in share "
                                         r"1, 'gaussian' in share 2\)"):
        merge_shard_reports(cfg, [tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    run_inference(cfg, weights, tmp_path / "c", TILES[:2], progress=False, shard=(2, 2))
    run_inference(cfg, weights, tmp_path / "d", TILES[:3], progress=False, shard=(2, 2))  # a longer list: its share 2
    with pytest.raises(EosegError, match=r"shares 2 were cut from another list of inputs than share 1 \(2 and 3 inputs\): "
                                         r"the merge would miss some"):
        merge_shard_reports(cfg, [tmp_path / "a", tmp_path / "d"], tmp_path / "out")
    with pytest.raises(EosegError, match="labelled with another config"):
        merge_shard_reports(cfg.replace(BLEND="gaussian"), [tmp_path / "a", tmp_path / "c"], tmp_path / "out")
    with pytest.raises(EosegError, match="labels nothing"):
        inference_script.main(["--merge-metrics", "--shard", "1/2"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_torchrun_two_nodes_over_localhost_label_each_image_once(tiny_cfg, weights, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for index in range(4):
        write_geotiff(folder / f"scene{index}.tif", random_image(90, 80, seed=index))
    overrides = as_arguments({k: tiny_cfg.to_dict()[k] for k in ("WINDOW", "STRIDE", "MODEL_WIDTH", "DEVICE")})
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # two node agents, as two machines would start them, meeting at node 0's address (static rendezvous, gloo)
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
                                "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                                str(ROOT / "inference.py"), "--images", str(folder), "--weights", str(weights),
                                "--out", str(tmp_path / "out"), "WRITE_PREVIEW=False", *overrides],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
              for node in (0, 1)]
    outputs = [agent.communicate(timeout=300) for agent in agents]
    for agent, (_, stderr) in zip(agents, outputs):
        assert agent.returncode == 0, stderr[-3000:]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]
    assert sorted(report) == [f"scene{i}" for i in range(4)]
    assert sorted(entry["rank"] for entry in report.values()) == [0, 0, 1, 1]  # each labelled by one node
    records = sorted(p.name for p in (tmp_path / "out").glob("*_record.json"))
    assert records == [f"scene{i}_record.json" for i in range(4)]
    # another run of other settings writing the folder: every rank stops before it removes or writes a map, also
    # with --force (code review: rank 1 replaced its share's outputs, refused only at rank 0)
    import fcntl

    before = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("scene*")}
    with open(tmp_path / "out" / ".labelling-1-other.lock", "w") as running:
        fcntl.flock(running, fcntl.LOCK_EX)
        running.write("other weights and settings")
        running.flush()
        port = free_port()
        agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={node}",
                                    "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                                    str(ROOT / "inference.py"), "--images", str(folder), "--weights", str(weights),
                                    "--out", str(tmp_path / "out"), "--force", "WRITE_PREVIEW=False", "STRIDE=16",
                                    *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   cwd=tmp_path)
                  for node in (0, 1)]
        outputs = [agent.communicate(timeout=300) for agent in agents]
    assert all(agent.returncode != 0 for agent in agents)
    assert "another labelling run, with other weights or labelling settings, is writing" in outputs[0][1]
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").glob("scene*")} == before


@pytest.mark.faults
def test_an_image_a_share_could_not_label_stays_failed_in_the_merged_report(tiny_cfg, weights, tmp_path):
    """A truncated image among the inputs of two shares (the other its tile 4): the merge reports it as a single run would, and the script
    ends with the error that says how many could not be labelled, not with exit 0."""
    cfg = tiny_cfg.replace(WRITE_PREVIEW=False)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a0", "a1", "a2"):
        write_geotiff(images / f"{name}.tif", random_image())
    damaged = images / "a1.tif"
    damaged.write_bytes(damaged.read_bytes()[:3000])
    shared = tmp_path / "shards"
    for k in (1, 2):
        run_inference(cfg, weights, shared, ["4"], image_paths=[images], progress=False, shard=(k, 2))
    result = run_script("inference.py", "--merge-metrics", str(shared), "--out", str(tmp_path / "merged"),
                        *as_arguments(cfg.to_dict()))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"not labelled: {damaged}")
    assert lines[-1].startswith("error: 1 of 4 images could not be labelled")
    merged = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    assert list(merged["failed"]) == [str(damaged)] and len(merged["images"]) == 3 and "a1" not in merged["images"]


def test_bad_shard_and_premature_merge_are_one_line_errors(tmp_path):
    assert_one_line_error(run_script("inference.py", "--images", str(tmp_path), "--shard", "4/3"), "--shard takes K/N")
    assert_one_line_error(run_script("inference.py", "--merge-metrics", "--out", str(tmp_path)), "no shard reports")
