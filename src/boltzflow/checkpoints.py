"""Checkpoint files of long runs (MD, replica exchange, training), so that a killed run can resume.

A :class:`Checkpoint` is one file holding a dict of named values and a key of the settings that wrote
it. It is written atomically (a temporary file renamed into place), so a kill mid-write leaves the
previous checkpoint intact; it is ignored when it was written with other settings or cannot be read,
so a resumed run never mixes in state from another run; and it is removed when the run completes.

Two storage formats:

- ``"npz"``: values are numpy arrays (and scalars) in a ``.npz`` archive, read without pickle;
- ``"torch"``: values may be tensors, state dicts and lists (anything ``torch.load(weights_only=True)``
  reads back), for training state.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

from boltzflow.io import atomic_path

FORMATS = ("npz", "torch")

#: Name of the entry holding the settings key, in either format.
_KEY = "settings_key"

#: What reading a truncated or foreign file can raise: such a file is ignored (and later overwritten).
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)


def settings_key(settings) -> str:
    """A short fingerprint of ``settings``: nested lists, dicts, numbers and strings (others by ``str``).

    Dict keys are sorted, and floats are written exactly (shortest repr), so two settings get the
    same key exactly when they are equal.
    """
    description = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(description.encode()).hexdigest()


class Checkpoint:
    """One checkpoint file at ``path`` (a file, not a folder) for the run described by ``settings``.

    ``save(state)`` writes the dict ``state`` atomically, tagged with ``settings_key(settings)``;
    ``load()`` returns that dict, or None when there is no file, the file is unreadable, or it was
    written with other settings; ``remove()`` deletes the file (no error if it is absent).
    """

    def __init__(self, path: str | Path, settings, format: str = "npz"):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        self.path = Path(path)
        self.key = settings_key(settings)
        self.format = format

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            saved = self._read()
        except _UNREADABLE:
            return None
        if saved.pop(_KEY, None) != self.key:
            return None
        return saved

    def save(self, state: dict) -> None:
        if _KEY in state:
            raise ValueError(f"{_KEY!r} is reserved for the settings key")
        with atomic_path(self.path) as temporary:
            if self.format == "npz":
                # Through a handle: np.savez given a path would append '.npz' to the temporary name.
                with open(temporary, "wb") as handle:
                    np.savez(handle, **state, **{_KEY: np.array(self.key)})
            else:
                import torch

                torch.save({**state, _KEY: self.key}, temporary)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict:
        if self.format == "npz":
            loaded = np.load(self.path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"{self.path} is not an .npz archive")
            with loaded as file:
                saved = {name: file[name] for name in file.files}
            if _KEY in saved:
                saved[_KEY] = str(saved[_KEY])
            return saved
        import torch

        saved = torch.load(self.path, weights_only=True, map_location="cpu")
        if not isinstance(saved, dict):
            raise ValueError(f"{self.path} does not hold a dict")
        return saved
