"""Target systems: what p(x) ∝ exp(-u(x)) is sampled, and the OpenMM system that samples it.

A :class:`Toy2DSystem` is a potential energy E(x, y) in kJ/mol over positions in nm, given as an
expression string. The same string drives both sides of every comparison: OpenMM integrates it as a
``CustomExternalForce`` and torch evaluates it (through the whitelist parser) for flows and reweighting.

Reduced energies are u = E / kT (dimensionless), with kT in kJ/mol at the temperature in K.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from boltzflow.expression import Expression, parse_expression

#: Molar gas constant in kJ/(mol K) (CODATA 2018, the value OpenMM uses).
MOLAR_GAS_CONSTANT_KJ_MOL_K = 8.314462618e-3


def kt_kj_mol(temperature_k: float) -> float:
    """Thermal energy kT in kJ/mol at a temperature in K."""
    return MOLAR_GAS_CONSTANT_KJ_MOL_K * temperature_k


@dataclass(frozen=True)
class StateBox:
    """A metastable state: a box in CV space, half-open intervals [lo, hi) per CV."""

    name: str
    intervals: dict[str, tuple[float, float]]

    def contains(self, cvs: dict[str, np.ndarray]) -> np.ndarray:
        inside = np.ones(len(next(iter(cvs.values()))), dtype=bool)
        for cv, (lo, hi) in self.intervals.items():
            inside &= (cvs[cv] >= lo) & (cvs[cv] < hi)
        return inside


@dataclass(frozen=True)
class Toy2DSystem:
    """A particle in a 2D potential E(x, y); z is held near 0 by a harmonic restraint in MD only.

    The restraint is separable, so the x-y marginal of the MD samples is exactly
    ∝ exp(-E(x, y) / kT); every energy and free energy reported refers to E(x, y) alone.
    """

    name: str
    energy_expression: str
    temperatures_k: tuple[float, ...]
    states: tuple[StateBox, ...]
    bounds: dict[str, tuple[float, float]] | None = None
    cvs: tuple[str, ...] = ("x", "y")
    expression: Expression = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "expression", parse_expression(self.energy_expression, self.cvs))

    @property
    def dim(self) -> int:
        return len(self.cvs)

    @property
    def target_temperature_k(self) -> float:
        return self.temperatures_k[0]

    def energy_kj_mol(self, xy):
        """E(x, y) in kJ/mol for positions of shape [..., 2] in nm (torch tensor or numpy array)."""
        import torch

        as_numpy = isinstance(xy, np.ndarray)
        tensor = torch.as_tensor(xy, dtype=torch.float64) if as_numpy else xy
        energy = self.expression(x=tensor[..., 0], y=tensor[..., 1])
        energy = energy.expand(tensor.shape[:-1])  # a constant expression still has one value per point
        return energy.detach().numpy() if as_numpy else energy

    def reduced_energy(self, xy, temperature_k: float | None = None):
        """u = E / kT at ``temperature_k`` (default: the target temperature); dimensionless."""
        temperature_k = self.target_temperature_k if temperature_k is None else temperature_k
        return self.energy_kj_mol(xy) / kt_kj_mol(temperature_k)

    def cv_values(self, xy: np.ndarray) -> dict[str, np.ndarray]:
        return {cv: xy[:, i] for i, cv in enumerate(self.cvs)}

    def openmm_system(self, n_walkers: int, mass_amu: float, z_spring_kj_mol_nm2: float):
        """An OpenMM System of ``n_walkers`` non-interacting particles, each feeling E(x, y) + k z² / 2."""
        import openmm

        system = openmm.System()
        # Lepton definitions ("main; a = ...") follow the main expression: add the restraint to main.
        main, separator, definitions = self.energy_expression.partition(";")
        force = openmm.CustomExternalForce(
            f"({main}) + 0.5*{z_spring_kj_mol_nm2!r}*z^2{separator}{definitions}")
        for index in range(n_walkers):
            system.addParticle(mass_amu)
            force.addParticle(index, [])
        system.addForce(force)
        return system


def toy_system_from_config(name: str, system_config: dict) -> Toy2DSystem:
    """Build a toy system from its validated config block (see config/schema.yaml).

    Stages receive only the keys they depend on (so that Snakemake reruns exactly what a change
    affects): ``states`` and ``bounds`` may be absent.
    """
    from boltzflow.config import state_box

    states = [StateBox(state, state_box(f"states.{state}", box))
              for state, box in system_config.get("states", {}).items()]
    bounds = system_config.get("bounds")
    return Toy2DSystem(
        name=name,
        energy_expression=system_config["energy"],
        temperatures_k=tuple(float(t) for t in system_config["temperatures"]),
        states=tuple(states),
        bounds={cv: (float(lo), float(hi)) for cv, (lo, hi) in bounds.items()} if bounds else None,
    )
