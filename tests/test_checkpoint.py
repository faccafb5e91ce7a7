"""eoseg.checkpoint: saving and loading weights safely, refusing ones that do not fit."""

from __future__ import annotations

import json

import pytest
import torch

from eoseg.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from eoseg.config import load_config
from eoseg.errors import EosegError
from eoseg.models import model_from_config

TINY = ["MODEL=segnet", "MODEL_WIDTH=0.125"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=TINY)


def trained_like_model(cfg, seed: int = 0):
    """A tiny model whose weights and BN statistics differ from a fresh init."""
    torch.manual_seed(seed)
    model = model_from_config(cfg)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, cfg.num_bands, 32, 32) * 3 + 1)  # moves BN running stats
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, cfg):
    model = trained_like_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    returned = save_checkpoint(path, cfg, model, iteration=17)
    assert returned == path
    return path, model


def test_round_trip_gives_same_outputs(saved, cfg):
    path, model = saved
    loaded, payload = load_model(path, cfg)
    assert loaded is not model
    loaded.eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # every tensor, BN buffers included
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert payload["iteration"] == 17
    assert payload["format"] == FORMAT
    assert payload["model"] == {"name": "segnet", "in_channels": 3, "num_classes": 6, "width": 0.125}
    assert json.loads(payload["config"])["MODEL_WIDTH"] == 0.125


def test_a_fresh_model_differs(saved, cfg):
    # guards the round-trip test: a model with other weights gives other outputs
    path, model = saved
    other = model_from_config(cfg).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x))


def test_no_temporary_files_left(saved):
    path, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_recorded_width_is_used_not_the_configs(saved):
    path, _ = saved
    wider = load_config(overrides=["MODEL=segnet", "MODEL_WIDTH=0.25"])
    loaded, _ = load_model(path, wider)
    assert loaded.conv1_1.out_channels == 8  # 64 * 0.125, as recorded


def test_five_class_config_refused(saved):
    path, _ = saved
    five = load_config(overrides=TINY + [
        "CLASS_NAMES=['impervious surfaces', 'building', 'low vegetation', 'tree', 'car']",
        "PALETTE=[[255, 255, 255], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0]]",
    ])
    assert five.num_classes == 5
    with pytest.raises(EosegError) as info:
        load_model(path, five)
    message = str(info.value)
    assert "6 classes" in message and "has 5" in message
    assert str(path) in message


def test_four_band_config_refused(saved):
    path, _ = saved
    four = load_config(overrides=TINY + [
        "BANDS=[1, 2, 3, 4]", "BAND_NAMES=['IR', 'R', 'G', 'DSM']",
        "NORM_MEAN=[0.0, 0.0, 0.0, 0.0]", "NORM_STD=[255.0, 255.0, 255.0, 255.0]",
    ])
    with pytest.raises(EosegError) as info:
        load_model(path, four)
    message = str(info.value)
    assert "3 input bands" in message and "has 4" in message


@pytest.mark.parametrize(
    "override,field",
    [
        ("CLASS_NAMES=['road', 'building', 'low vegetation', 'tree', 'car', 'clutter']", "class_names"),
        ("BAND_NAMES=['R', 'G', 'B']", "band_names"),
        ("NORM_MEAN=[10.0, 0.0, 0.0]", "normalization"),
        ("IGNORE_LABEL=6", "ignore_label"),
    ],
)
def test_same_shape_but_other_data_refused(saved, override, field):
    path, _ = saved
    other = load_config(overrides=TINY + [override])
    with pytest.raises(EosegError, match=rf"{field} ="):
        load_model(path, other)


def test_training_state_round_trip(tmp_path, cfg):
    model = trained_like_model(cfg, seed=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "python_seed": 123}
    path = save_checkpoint(tmp_path / "iter.pt", cfg, model, iteration=5, training_state=state)
    payload = load_checkpoint(path)
    assert payload["training_state"]["python_seed"] == 123
    assert torch.equal(payload["training_state"]["torch_rng"], state["torch_rng"])
    restored = torch.optim.SGD(model_from_config(cfg).parameters(), lr=0.1, momentum=0.9)
    restored.load_state_dict(payload["training_state"]["optimizer"])
    buffers = [s["momentum_buffer"] for s in restored.state_dict()["state"].values()]
    assert buffers and all(b is not None for b in buffers)


def test_missing_file(tmp_path, cfg):
    with pytest.raises(EosegError, match=r"weights file not found.*training\.py"):
        load_model(tmp_path / "nope.pt", cfg)


def test_not_an_eoseg_file_refused(tmp_path, cfg):
    plain = tmp_path / "plain.pt"
    torch.save(model_from_config(cfg).state_dict(), plain)
    with pytest.raises(EosegError, match="not an eoseg weights file"):
        load_model(plain, cfg)
    newer = tmp_path / "newer.pt"
    torch.save({**load_checkpoint(save_checkpoint(tmp_path / "w.pt", cfg, model_from_config(cfg), 0)),
                "format": "eoseg-checkpoint-2"}, newer)
    with pytest.raises(EosegError, match=r"newer.pt: eoseg weights of format 'eoseg-checkpoint-2', which this eoseg "
                                         r"\(reading 'eoseg-checkpoint-1'\) does not know"):
        load_model(newer, cfg)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(EosegError, match="not a loadable"):
        load_model(garbage, cfg)


def test_weights_that_do_not_fit_the_recorded_model_refused(tmp_path, saved, cfg):
    path, _ = saved
    payload = load_checkpoint(path)
    payload["state_dict"]["conv1_1.weight"] = torch.zeros(1, 1, 3, 3)
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(EosegError, match=r"do not fit model segnet \(size mismatch for conv1_1.weight: copying a param "
                                         r"with shape torch.Size\(\[1, 1, 3, 3\]\)"):  # the layer named (review)
        load_model(broken, cfg)


class _Payload:
    """Unpickling this runs exec(), which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_malicious_pickle_refused_without_running_code(tmp_path, saved, cfg):
    path, _ = saved
    marker = tmp_path / "marker.txt"
    # a genuine checkpoint with a code-running object slipped in
    payload = load_checkpoint(path)
    payload["extra"] = _Payload(marker)
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    with pytest.raises(EosegError) as info:
        load_model(evil, cfg)
    assert "refused to load this weights file" in str(info.value) and "exec" in str(info.value)
    assert "\n" not in str(info.value)  # one line for the terminal
    with pytest.raises(EosegError):
        load_checkpoint(evil)
    assert not marker.exists(), "loading the weights file ran code"
    # the payload is live: an unrestricted load would have run it
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path, cfg, monkeypatch):
    """torch's file writer reports a failed write (a full or failing disk) as a RuntimeError without the OS error."""
    def failing_save(payload, path):
        path.write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 77391488 vs 77391376")

    monkeypatch.setattr("eoseg.checkpoint.torch.save", failing_save)
    target = tmp_path / "iter_0000001.pt"
    with pytest.raises(EosegError, match=rf"^{target}: writing failed \(.*unexpected pos"):
        save_checkpoint(target, cfg, model_from_config(cfg), iteration=1)
    assert list(tmp_path.iterdir()) == []


def test_an_index_band_computed_from_other_bands_than_in_training_is_refused(tmp_path):
    """NDVI of red and near-infrared swapped (its negative), or of the green band, was labelled with exit 0: the
    weights recorded only its name (review)."""
    ndvi = load_config(overrides=TINY + ['EXTRA_SOURCES=[{"derived": "ndvi"}]'])
    path = save_checkpoint(tmp_path / "ndvi.pt", ndvi, trained_like_model(ndvi), iteration=1)
    load_model(path, ndvi)
    for swapped in ('EXTRA_SOURCES=[{"derived": "ndvi", "red": "IR", "nir": "R"}]', 'RED_BAND=G'):
        with pytest.raises(EosegError, match=r"ndvi.pt was made with extra_sources = \[\{'derived': 'ndvi', 'red': 'R', "
                                             r"'nir': 'IR'\}\], but the config has"):
            load_model(path, load_config(overrides=TINY + ['EXTRA_SOURCES=[{"derived": "ndvi"}]', swapped]))
