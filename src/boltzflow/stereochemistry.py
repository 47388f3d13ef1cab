"""Stereochemistry that MD must keep: no tetrahedral centre of a molecule may turn into its mirror image.

A classical force field gives a molecule and its mirror image the same energy, so its true equilibrium
is racemic; the ensemble every estimate here refers to is that of the molecule as built (L-alanine, not
D), which is what the models learn and MBAR measures as long as no centre inverts. The barrier is high
(about 90 kJ/mol for alanine's Cα: 36 kT at 300 K), but a replica exchange ladder that reaches 1000 K
and more brings it within reach, and one inverted replica that walks down to the target temperature
cannot invert back there: it would silently move the reference towards a mixture of both mirror images
(for alanine dipeptide, towards ΔF(φ > 0) = 0). So MD is checked frame by frame.

A tetrahedral centre is an atom with four bonded neighbours; its handedness is the sign of the volume
spanned by its three lowest-numbered neighbours, seen from the centre. A methyl group's sign turns only
by an umbrella inversion, which is as unphysical here as a Cα one, so every such atom is checked.

Measured on the default ladder (alanine dipeptide up to 1200 K): without a restraint, a methyl carbon or
Cα of the 1200 K replica inverts within 0.1-0.3 ns. So every molecule's System carries a flat-bottom
restraint on each centre's chirality (:func:`boltzflow.molecules.chirality_restraint`): zero until the
centre is well on its way to planar, which thermal motion at the target temperature does not reach, and
rising to 640 kJ/mol in the mirror image. The ensemble is then that of the molecule as built at every
temperature of a ladder; the check below stays, for MD that still inverts (a restraint too weak for a
hotter ladder). It counts a centre as inverted once it is well on the mirror side (``INVERTED_CHIRALITY``),
not at every thermal excursion a little past planar, which the restraint pushes back
(``benchmarks/chirality_excursions.py`` measures how far centres stray).
"""

from __future__ import annotations

import numpy as np


def tetrahedral_centres(bonds: list[tuple[int, int]], n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre indices [m], their three lowest-numbered neighbours [m, 3]) of every atom with four bonds."""
    neighbours = [[] for _ in range(n_atoms)]
    for a, b in bonds:
        neighbours[a].append(b)
        neighbours[b].append(a)
    centres = [atom for atom in range(n_atoms) if len(neighbours[atom]) == 4]
    return (np.array(centres, dtype=int),
            np.array([sorted(neighbours[atom])[:3] for atom in centres], dtype=int).reshape(-1, 3))


def _bonds(positions: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> list[np.ndarray]:
    """The three bond vectors a-c, b-c, d-c of each centre c: positions [..., atom, 3] → 3 x [..., m, 3]."""
    centre = positions[..., centres, :]
    return [positions[..., neighbours[:, i], :] - centre for i in range(3)]


def signed_volumes(positions: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(a-c)·((b-c)×(d-c)) of each centre c and its neighbours a, b, d in each frame (nm³):
    positions [..., atom, 3] → [..., m]."""
    a, b, c = _bonds(positions, centres, neighbours)
    return np.einsum("...i,...i->...", a, np.cross(b, c))


def chirality(positions: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """The signed volume over the product of the three bond lengths: about ±0.77 for a tetrahedral centre,
    0 when it is planar (dimensionless): positions [..., atom, 3] → [..., m]."""
    a, b, c = _bonds(positions, centres, neighbours)
    lengths = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) * np.linalg.norm(c, axis=-1)
    return np.einsum("...i,...i->...", a, np.cross(b, c)) / lengths


def handedness(positions: np.ndarray, centres: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Sign (+1 or -1) of each centre's neighbour volume in each frame: positions [..., atom, 3] → [..., m]."""
    return np.sign(signed_volumes(positions, centres, neighbours))


#: A centre counts as inverted where its chirality, in the reference's handedness, is below minus this: well
#: on the mirror side (a mirror image has about -0.77), where the restraint of ``molecules.chirality_restraint``
#: costs K (1 + 0.3/onset)², 200 kJ/mol with the shipped K = 50 and onset 0.3 (20 kT at 1200 K), and pushes
#: back harder than the force field pulls on. A centre just past planar is a thermal excursion, not an
#: inversion: on the default ladder, ALA2 CB of the 1200 K replica (run 3) reached -0.027 for one 0.1 ps frame
#: and was back at +0.71 in the next; that frame stopped a 14-minute run when any sign change counted.
INVERTED_CHIRALITY = 0.3


def first_inversion(positions: np.ndarray, reference: np.ndarray, centres: np.ndarray,
                    neighbours: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """(index of the first frame, centre atom) where a centre is inverted against ``reference`` ([atom, 3]):
    its chirality of the reference's sign below -``INVERTED_CHIRALITY``, over frames ``positions``
    [..., atom, 3] in C order of the leading axes; None if none is."""
    if not len(centres):
        return None
    signs = handedness(reference, centres, neighbours)
    inverted = chirality(positions, centres, neighbours) * signs < -INVERTED_CHIRALITY
    hits = np.argwhere(inverted)
    if not len(hits):
        return None
    first = hits[0]
    return tuple(int(i) for i in first[:-1]), int(centres[first[-1]])
