"""MD a user already has: trajectory files read with mdtraj and checked against the system's PDB.

Conventions: positions in nm ([frame, atom, 3] float32, as the files store them), atoms in the order of
the system's PDB file, one file = one independent run (its frames in the order they were written).

A file is checked before any energy is computed: it must have the PDB's atom count, and where its format
carries atom names (a multi-model PDB) the same atoms in the same order (element and name). Each problem is
an :class:`~boltzflow.physics_errors.InputFileError` with one line that names the config key and the file.
Which file formats are accepted is declared once, in :data:`TRAJECTORY_FORMATS` (the config checks refuse
any other extension before a job starts). This module imports mdtraj and pymbar only inside its functions:
the config checks in the Snakemake process import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boltzflow.physics_errors import InputFileError

#: File extensions mdtraj reads with the PDB as topology: DCD, GROMACS XTC and TRR, AMBER NetCDF, and
#: multi-model PDB (whose atom names are checked too). HDF5 would need PyTables, which is not a dependency.
TRAJECTORY_FORMATS = (".dcd", ".xtc", ".trr", ".nc", ".ncdf", ".netcdf", ".pdb")
#: Formats whose files name their atoms: they are checked atom by atom against the PDB, not only counted.
NAMED_FORMATS = (".pdb",)


@dataclass(frozen=True)
class TrajectoryFrames:
    """The frames of one file: positions [frame, atom, 3] in nm (float32) and the times mdtraj reads
    (ps; formats that store none, such as DCD, count frames from 0)."""

    path: str
    positions_nm: np.ndarray
    time_ps: np.ndarray


def read_trajectory(path: str | Path, pdb_path: str | Path, key: str) -> TrajectoryFrames:
    """Read one trajectory file in the atom order of ``pdb_path``; ``key`` (``systems.x.md.files.300``)
    starts every error message."""
    import mdtraj

    path, pdb_path = Path(path), Path(pdb_path)
    where = f"{key}: '{path}'"
    suffix = path.suffix.lower()
    if suffix not in TRAJECTORY_FORMATS:
        raise InputFileError(f"{where} is not a trajectory format boltzflow reads; expected one of "
                             f"{', '.join(TRAJECTORY_FORMATS)}")
    if not path.is_file():
        raise InputFileError(f"{where} does not exist")
    topology = mdtraj.load_topology(str(pdb_path))
    if suffix in NAMED_FORMATS:
        trajectory = _load(mdtraj.load, where, str(path))
        check_atoms(trajectory.topology, topology, where, pdb_path)
    else:
        n_atoms = _atom_count(path, where)
        if n_atoms != topology.n_atoms:
            raise InputFileError(f"{where} has {n_atoms} atoms, '{pdb_path}' has {topology.n_atoms}; "
                                 "expected the atoms of the PDB, in its order")
        trajectory = _load(mdtraj.load, where, str(path), top=topology)
    if trajectory.n_frames < 2:
        raise InputFileError(f"{where} has {trajectory.n_frames} frame(s); expected a time series of at least 2")
    positions = np.asarray(trajectory.xyz, dtype=np.float32)
    if not np.isfinite(positions).all():
        frame = int(np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)))[0])
        raise InputFileError(f"{where}: frame {frame} has non-finite coordinates")
    return TrajectoryFrames(str(path), positions, np.asarray(trajectory.time, dtype=float))


def check_atoms(found, expected, where: str, pdb_path) -> None:
    """The atoms of mdtraj topology ``found`` must be those of ``expected``, in order (element and name)."""
    if found.n_atoms != expected.n_atoms:
        raise InputFileError(f"{where} has {found.n_atoms} atoms, '{pdb_path}' has {expected.n_atoms}; "
                             "expected the atoms of the PDB, in its order")
    for index, (atom, reference) in enumerate(zip(found.atoms, expected.atoms)):
        if _describe(atom) != _describe(reference):
            raise InputFileError(f"{where}: atom {index} is {_describe(atom)}, in '{pdb_path}' it is "
                                 f"{_describe(reference)}; expected the atoms of the PDB, in its order")


def _describe(atom) -> str:
    element = atom.element.symbol if atom.element is not None else "?"
    return f"{atom.name} ({element}) of {atom.residue.name}"


def _atom_count(path: Path, where: str) -> int:
    """Atoms per frame as the file itself says (its first frame), before mdtraj pairs it with a topology."""
    import mdtraj

    def first_frame():
        with mdtraj.open(str(path)) as handle:
            frames = handle.read(n_frames=1)
        return frames[0] if isinstance(frames, tuple) else frames

    coordinates = _load(first_frame, where)
    if coordinates.ndim != 3 or len(coordinates) == 0:
        raise InputFileError(f"{where} has no frames")
    return int(coordinates.shape[1])


def _load(function, where: str, *args, **kwargs):
    """Call a reader; any failure means the same to a user: the file cannot be read as its extension says."""
    try:
        return function(*args, **kwargs)
    except InputFileError:
        raise
    except Exception as error:  # mdtraj and its plugins raise OSError, ValueError, IndexError, ...
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputFileError(f"{where} cannot be read by mdtraj: {text}") from None
