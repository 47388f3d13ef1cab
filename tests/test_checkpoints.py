"""The checkpoint file shared by MD, replica exchange and training (checkpoints.py)."""

import numpy as np
import pytest
import torch

from boltzflow.checkpoints import Checkpoint, settings_key

SETTINGS = {"steps": 40, "learning_rate": 1e-3, "temperatures_k": [300.0, 310.5]}


def test_npz_checkpoint_round_trips_and_is_removed(tmp_path):
    path = tmp_path / "run.checkpoint"
    checkpoint = Checkpoint(path, SETTINGS)
    assert checkpoint.load() is None
    state = {"frames": np.array(3), "positions": np.arange(6.0).reshape(2, 3), "blob": np.frombuffer(b"ab", np.uint8)}
    checkpoint.save(state)
    assert [p.name for p in tmp_path.iterdir()] == ["run.checkpoint"]  # no temporary file left, no suffix added

    loaded = Checkpoint(path, dict(reversed(SETTINGS.items()))).load()  # key order is irrelevant
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name], value)
    checkpoint.remove()
    assert not path.exists()
    checkpoint.remove()  # removing twice is fine


def test_torch_checkpoint_round_trips_state_dicts(tmp_path):
    model = torch.nn.Linear(2, 3)
    path = tmp_path / "train.checkpoint"
    Checkpoint(path, SETTINGS, format="torch").save({"model": model.state_dict(), "records": {"loss": [1.5, 0.5]}})
    loaded = Checkpoint(path, SETTINGS, format="torch").load()
    assert loaded["records"] == {"loss": [1.5, 0.5]}
    for name, value in model.state_dict().items():
        assert torch.equal(loaded["model"][name], value)


@pytest.mark.parametrize("format", ["npz", "torch"])
def test_checkpoint_of_other_settings_or_unreadable_is_ignored(tmp_path, format):
    path = tmp_path / "run.checkpoint"
    Checkpoint(path, SETTINGS, format=format).save({"frames": np.array(3)})
    assert Checkpoint(path, {**SETTINGS, "steps": 41}, format=format).load() is None
    assert Checkpoint(path, SETTINGS, format="torch" if format == "npz" else "npz").load() is None
    path.write_bytes(b"not a checkpoint")
    assert Checkpoint(path, SETTINGS, format=format).load() is None
    np.save(tmp_path / "plain.npy", np.zeros(3))  # an array file, not an archive
    assert Checkpoint(tmp_path / "plain.npy", SETTINGS, format=format).load() is None


def test_settings_key_tells_floats_apart_exactly():
    assert settings_key([0.1 + 0.2]) != settings_key([0.3])
    assert settings_key({"a": 1, "b": [2.0]}) == settings_key({"b": [2.0], "a": 1})


def test_the_settings_key_entry_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        Checkpoint(tmp_path / "c", SETTINGS).save({"settings_key": np.array(1)})
