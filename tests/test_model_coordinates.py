"""What a model learns from MD: each system kind's model coordinates, torsion windows, and the flow that
``stages.flow.fit_flow`` builds on them (its class, standardization and circular coordinates)."""

import math

import numpy as np
import pytest
import torch
import xarray as xr

from boltzflow.flows import MixedSplineCouplingFlow, SplineCouplingFlow
from boltzflow.settings import FlowSettings
from boltzflow.stages.flow import fit_flow
from boltzflow.systems import molecule_system_from_config, toy_system_from_config
from boltzflow.torsions import NARROW_TORSION_RESULTANT, TORSION_CUT_BINS, cut_window_centres, narrow_window_centres
from workflow_helpers import ROOT

ONE_STEP = FlowSettings(n_layers=2, hidden=8, steps=1, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def toy():
    return toy_system_from_config("well", {"type": "toy2d", "energy": "x^2 + 2*y^2", "temperatures": [300],
                                           "states": {"a": {"x": [-5, 0]}, "b": {"x": [0, 5]}}})


@pytest.fixture(scope="module")
def molecule():
    return molecule_system_from_config("aldp", {
        "type": "molecule", "pdb": str(ROOT / "data/alanine_dipeptide.pdb"),
        "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"], "constraints": "none", "temperatures": [300],
        "cv_units": "degrees", "cvs": {"phi": [4, 6, 8, 10], "psi": [6, 8, 10, 16]},
        "states": {"a": {"phi": [-180, 0]}, "b": {"phi": [0, 180]}}})


@pytest.fixture(scope="module")
def frames(molecule):
    """Alanine dipeptide frames near the PDB geometry, with two torsions spread over the whole circle."""
    coordinates = molecule.model_coordinates(molecule.load_molecule().positions_nm[None]).coordinate_map.coordinates
    ic0, _, _ = coordinates.to_internal(torch.as_tensor(molecule.load_molecule().positions_nm[None]))
    generator = torch.Generator().manual_seed(0)
    ic = ic0.repeat(400, 1)
    ic = ic + 1e-3 * torch.randn(ic.shape, generator=generator, dtype=torch.float64)
    wide = torch.nonzero(coordinates.is_torsion)[-2:, 0]
    ic[:, wide] = (torch.rand(400, 2, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    positions, _ = coordinates.to_cartesian(ic)
    return positions.numpy(), wide


def test_model_coordinates_are_float64_for_every_system_kind(toy, molecule, frames):
    positions, _ = frames
    assert toy.model_coordinates(np.zeros((3, 2), dtype=np.float32)).y.dtype == torch.float64
    assert molecule.model_coordinates(positions).y.dtype == torch.float64


def test_toy_flow_is_a_spline_coupling_flow_standardized_by_the_data(toy):
    data = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 0.1], size=(500, 2))
    generator, _ = fit_flow(toy, xr.Dataset({"positions": (("sample", "cv"), data)}), ONE_STEP, log=lambda _: None)
    assert type(generator.flow) is SplineCouplingFlow
    expected = torch.as_tensor(data, dtype=torch.float32)
    torch.testing.assert_close(generator.flow.loc, expected.mean(0))
    torch.testing.assert_close(generator.flow.scale, expected.std(0))


def test_molecule_flow_keeps_wide_torsions_on_the_circle_and_standardizes_the_rest(molecule, frames):
    positions, wide = frames
    md = xr.Dataset({"positions": (("sample", "atom", "spatial"), positions)})
    generator, _ = fit_flow(molecule, md, ONE_STEP, log=lambda _: None)
    flow, coordinate_map = generator.flow, generator.coordinate_map
    assert type(flow) is MixedSplineCouplingFlow
    assert flow.circular_idx.tolist() == wide.tolist()
    y = coordinate_map.model_coordinates(torch.as_tensor(positions)).float()
    real = torch.ones(y.shape[1], dtype=torch.bool)
    real[wide] = False
    torch.testing.assert_close(flow.loc[real], y[:, real].mean(0))
    torch.testing.assert_close(flow.scale[real], y[:, real].std(0).clamp_min(1e-6))
    assert (flow.loc[wide] == 0).all() and (flow.scale[wide] == 1).all()
    # Every other torsion is narrow: unwrapped in a window around its circular mean.
    torsion = coordinate_map.coordinates.is_torsion
    assert coordinate_map.windowed.tolist() == (torsion & real).tolist()


def test_narrow_torsions_get_a_window_at_their_mean_and_wide_ones_stay_circular():
    generator = torch.Generator().manual_seed(1)
    narrow = (3.0 + 0.1 * torch.randn(2000, generator=generator, dtype=torch.float64) + math.pi) % (2 * math.pi) - math.pi
    wide = (torch.rand(2000, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    bond = 0.1 + 0.001 * torch.randn(2000, generator=generator, dtype=torch.float64)
    ic = torch.stack([bond, narrow, wide], dim=1)
    is_torsion = torch.tensor([False, True, True])
    centres, circular, mean = narrow_window_centres(ic, is_torsion)
    assert circular.tolist() == [False, False, True]
    assert math.isnan(centres[0]) and math.isnan(centres[2])
    assert centres[1] == pytest.approx(3.0, abs=0.01)
    assert torch.sqrt(narrow.cos().mean() ** 2 + narrow.sin().mean() ** 2) > NARROW_TORSION_RESULTANT


def test_cut_windows_put_their_edge_in_the_emptiest_bin():
    # Two peaks with an empty gap around 2.2 rad: the window (c - π, c + π] must be cut there.
    generator = torch.Generator().manual_seed(2)
    peaks = torch.tensor([-2.0, 0.5], dtype=torch.float64)[torch.randint(2, (4000,), generator=generator)]
    angles = peaks + 0.3 * torch.randn(4000, generator=generator, dtype=torch.float64)
    angles = (angles + math.pi) % (2 * math.pi) - math.pi
    centres = cut_window_centres(angles[:, None], torch.tensor([True]))
    edge = math.remainder(float(centres[0]) + math.pi, 2 * math.pi)
    counts, bin_edges = np.histogram(angles.numpy(), bins=np.linspace(-math.pi, math.pi, TORSION_CUT_BINS + 1))
    emptiest = int(np.argmin(counts))
    assert bin_edges[emptiest] <= edge <= bin_edges[emptiest + 1]
    assert counts[emptiest] == 0


def test_model_coordinate_energy_is_u_minus_the_log_jacobian(molecule):
    # p(y) ∝ exp(-u(x(y))) |det ∂x/∂y|, and every bond r enters |det| as r²: with u = 0, doubling one bond
    # lowers the model-coordinate energy by exactly 2 ln 2.
    positions = molecule.load_molecule().positions_nm[None]
    coordinate_map = molecule.model_coordinates(positions).coordinate_map
    y0 = coordinate_map.model_coordinates(torch.as_tensor(positions))
    y1 = y0.clone()
    y1[0, int(coordinate_map.coordinates.bond_columns[-1])] *= 2.0
    energy = coordinate_map.reduced_energy_internal(lambda x: torch.zeros(x.shape[0], dtype=torch.float64))
    assert float(energy(y1) - energy(y0)) == pytest.approx(-2 * math.log(2.0), abs=1e-12)


def test_a_temperature_scales_the_energy_and_not_the_log_jacobian(molecule):
    # At T = r T₁ the model-coordinate energy is u(x(y)) / r − J(y): with u ≡ 1, ratios 1 and 4 differ by
    # exactly 1 − 1/4 whatever J is (a scaled J would make it 0.75 (1 − J), and J is far from 0 here).
    from boltzflow.stages.flow import energy_at_temperature

    positions = molecule.load_molecule().positions_nm[None]
    coordinate_map = molecule.model_coordinates(positions).coordinate_map
    y = coordinate_map.model_coordinates(torch.as_tensor(positions))
    one = lambda x: torch.ones(x.shape[0], dtype=torch.float64)  # noqa: E731
    at = {ratio: float(energy_at_temperature(coordinate_map, one, ratio)(y)) for ratio in (1.0, 4.0)}
    assert at[1.0] - at[4.0] == pytest.approx(0.75, abs=1e-12)
    assert abs(float(coordinate_map.log_jacobian(y))) > 10


def test_energy_refinement_continues_the_training_and_pulls_the_flow_onto_the_target(toy):
    # MD samples 1.5x too broad for u = (x² + 2y²) / kT: maximum likelihood learns the broad Gaussian
    # (KL(q || p) = 2 × (1.5² - 1 - ln 1.5²) / 2 = 0.44 nats); the refinement's reverse KL pulls q onto p.
    kt = 0.0083144626 * 300.0
    sigma = np.sqrt(kt / 2.0) * np.array([1.0, 1.0 / np.sqrt(2.0)]) * 1.5
    data = np.random.default_rng(1).normal(0.0, sigma, size=(4000, 2))
    md = xr.Dataset({"positions": (("sample", "cv"), data)})
    log_z = math.log(math.pi * kt / math.sqrt(2.0))  # ∫ exp(-(x² + 2y²)/kT) dx dy

    def kl(generator):
        with torch.no_grad():
            x, log_q = generator.sample(20000, generator=torch.Generator().manual_seed(2))
        u = (x[:, 0] ** 2 + 2 * x[:, 1] ** 2).double() / kt
        return (u + log_q.double()).mean().item() + log_z

    settings = dict(n_layers=2, hidden=16, steps=300, batch_size=256, learning_rate=1e-2, device="cpu")
    ml, ml_curves = fit_flow(toy, md, FlowSettings(**settings), log=lambda _: None)
    refined, curves = fit_flow(toy, md, FlowSettings(**settings, refine_steps=200, refine_energy_weight=20.0,
                                                     refine_learning_rate=1e-2), log=lambda _: None)
    assert kl(ml) == pytest.approx(0.44, abs=0.1)
    assert kl(refined) < 0.05
    # One run of records: the refinement's steps continue the first phase's; only it has a reverse KL.
    n = len(ml_curves["step"])
    np.testing.assert_array_equal(curves["step"][:n], ml_curves["step"])
    assert curves["step"][-1] == 500 and np.all(np.diff(curves["step"]) > 0)
    assert np.isnan(curves["reverse_kl"][:n]).all() and np.isfinite(curves["reverse_kl"][n:]).all()


def test_replay_buffer_self_training_pulls_the_flow_onto_the_target_without_forces(toy):
    # The same too-broad MD as above; the refinement has no reverse KL, only the NLL of the flow's own samples
    # resampled by importance weight, which is the forward KL to p: it narrows q towards p.
    kt = 0.0083144626 * 300.0
    sigma = np.sqrt(kt / 2.0) * np.array([1.0, 1.0 / np.sqrt(2.0)]) * 1.5
    md = xr.Dataset({"positions": (("sample", "cv"), np.random.default_rng(1).normal(0.0, sigma, size=(4000, 2)))})
    log_z = math.log(math.pi * kt / math.sqrt(2.0))
    settings = dict(n_layers=2, hidden=16, steps=300, batch_size=256, learning_rate=1e-2, device="cpu",
                    refine_steps=300, refine_energy_weight=0.0, refine_learning_rate=1e-2)
    refined, curves = fit_flow(toy, md, FlowSettings(**settings, refine_buffer_weight=20.0, refine_buffer_samples=1024,
                                                     refine_buffer_refresh_every=10), log=lambda _: None)
    with torch.no_grad():
        x, log_q = refined.sample(20000, generator=torch.Generator().manual_seed(2))
    kl = ((x[:, 0] ** 2 + 2 * x[:, 1] ** 2).double() / kt + log_q.double()).mean().item() + log_z
    assert kl < 0.05  # maximum likelihood alone: 0.44 (the test above)
    n = int(np.isnan(curves["buffer_nll"]).sum())
    assert n == int((curves["step"] <= 300).sum())  # only the refinement has a buffer
    assert np.isfinite(curves["buffer_ess_fraction"][n:]).all() and np.isnan(curves["reverse_kl"]).all()
    assert curves["buffer_ess_fraction"][-1] > curves["buffer_ess_fraction"][n]
