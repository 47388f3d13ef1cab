"""netCDF input and output: atomic writes, provenance, and the units contract.

Every variable written has ``units`` and ``long_name`` attributes (checked here, so a file that breaks
the contract is never written), and every file records the package version and the config values that
made it (as JSON in the global attribute ``config``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import xarray as xr

import boltzflow


class ContractError(ValueError):
    """A dataset is missing the attributes that every output must carry."""


def check_attributes(dataset: xr.Dataset) -> None:
    for name, variable in {**dataset.data_vars, **dataset.coords}.items():
        if variable.dtype.kind in "OUS":  # labels (estimator, state names) have no unit
            continue
        missing = [attr for attr in ("units", "long_name") if attr not in variable.attrs]
        if missing:
            raise ContractError(f"variable {name!r} lacks attribute(s) {', '.join(missing)}")


def write_netcdf(dataset: xr.Dataset, path: str | Path, config: dict | None = None) -> None:
    """Write ``dataset`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    check_attributes(dataset)
    dataset = dataset.copy()
    dataset.attrs["boltzflow_version"] = boltzflow.__version__
    dataset.attrs["config"] = json.dumps(config or {}, sort_keys=True, default=str)
    with atomic_path(path) as temporary:
        dataset.to_netcdf(temporary, engine="netcdf4")


def read_netcdf(path: str | Path) -> xr.Dataset:
    """Load a whole file into memory and close it (outputs here are small)."""
    with xr.open_dataset(path, engine="netcdf4") as dataset:
        return dataset.load()


def atomic_path(path: str | Path):
    """A context manager giving a temporary path that is renamed onto ``path`` only on success."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                             suffix=self.path.suffix)
        os.close(handle)
        self.temporary = Path(temporary)
        return self.temporary

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
        return False
