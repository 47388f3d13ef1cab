"""Boltzmann generator for molecules: the log-density of its samples, the torsion window, saving."""

import math

import numpy as np
import pytest
import torch

from boltzflow.coordinates import build_zmatrix
from boltzflow.flows import MixedSplineCouplingFlow
from boltzflow.generators import boltzmann_generator
from boltzflow.molecules import load_molecule
from boltzflow.stages.flow import load_flow, save_flow
from workflow_helpers import ROOT


@pytest.fixture(scope="module")
def generator():
    molecule = load_molecule(ROOT / "data/alanine_dipeptide.pdb")
    zmatrix = build_zmatrix(molecule.bonds, molecule.n_atoms, molecule.heavy)
    probe = boltzmann_generator(zmatrix, None)
    ic = probe.coordinate_map.to_internal(torch.as_tensor(molecule.positions_nm)[None])[0]
    torsions = probe.coordinate_map.coordinates.is_torsion
    # Two torsions windowed around their value in the PDB, the others circular; bonds and angles
    # standardized around the PDB geometry with small spreads.
    windowed = torch.zeros_like(torsions)
    windowed[torch.nonzero(torsions)[:2, 0]] = True
    centre = torch.where(windowed, ic, torch.full_like(ic, math.nan))
    circular = torsions & ~windowed
    loc = torch.where(circular, torch.zeros_like(ic), ic).float()
    scale = torch.where(torsions, torch.full_like(ic, 0.3), torch.full_like(ic, 0.003)).float()
    torch.manual_seed(0)
    flow = MixedSplineCouplingFlow(dim=len(ic), circular=circular.tolist(), n_layers=4, hidden=16,
                                   loc=loc, scale=scale)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return boltzmann_generator(zmatrix, flow, centre)


def assert_log_q_is_the_generator_density(generator, x, log_q):
    """Most of 500 samples are in the map, and their log q is the flow's density of their internal
    coordinates minus the Jacobian."""
    valid = torch.isfinite(log_q)
    assert valid.sum() > 400
    y = generator.coordinate_map.flow_coordinates(generator.coordinate_map.to_internal(x[valid]))
    with torch.no_grad():
        expected = generator.flow.log_prob(y.float()).double() - generator.coordinate_map.log_jacobian(y)
    np.testing.assert_allclose(log_q[valid].numpy(), expected.numpy(), atol=2e-3)


def test_sample_log_q_is_the_flow_density_of_its_internal_coordinates_minus_the_jacobian(generator):
    x, log_q = generator.sample(500, generator=torch.Generator().manual_seed(1))
    assert x.shape == (500, 22, 3) and x.dtype == torch.float64
    assert_log_q_is_the_generator_density(generator, x, log_q)


def test_windowed_torsions_are_unwrapped_around_their_centre_and_dropped_outside(generator):
    column = int(torch.nonzero(generator.coordinate_map.windowed)[0, 0])
    centre = float(generator.coordinate_map.window_centre[column])
    ic = generator.coordinate_map.to_internal(torch.as_tensor(load_molecule(ROOT / "data/alanine_dipeptide.pdb").positions_nm)[None])
    for offset in (-3.0, -0.5, 0.5, 3.0):
        shifted = ic.clone()
        shifted[0, column] = (centre + offset + math.pi) % (2 * math.pi) - math.pi  # an angle in [-π, π)
        y = generator.coordinate_map.flow_coordinates(shifted)
        assert y[0, column].item() == pytest.approx(centre + offset, abs=1e-9)
        assert torch.isfinite(generator.coordinate_map.log_jacobian(y)).all()
    outside = generator.coordinate_map.flow_coordinates(ic)
    outside[0, column] = centre + math.pi + 0.1
    assert torch.isnan(generator.coordinate_map.log_jacobian(outside)).all()


def test_saved_generator_reloads_with_weights_only(generator, tmp_path):
    path = tmp_path / "flow.pt"
    save_flow(generator, path)
    assert set(torch.load(path, weights_only=True)) == {"config", "state_dict"}
    reloaded = load_flow(path)
    a = generator.sample(50, generator=torch.Generator().manual_seed(3))
    b = reloaded.sample(50, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], equal_nan=True)


def test_flow_latent_decodes_to_the_generators_samples_and_log_q(generator):
    # ξ ~ N(0, I) through the CDF onto the uniform base of the circular coordinates: same density.
    from boltzflow.generators import FlowLatent

    latent_model = FlowLatent(generator)
    latent = torch.randn(500, latent_model.latent_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    latent[0, :] = 8.0  # far in the tail: the CDF is 1 in float32, the angle must still be on the circle
    x, log_q = latent_model.decode(latent)
    assert x.shape == (500, 22, 3)
    assert_log_q_is_the_generator_density(generator, x, log_q)


def test_score_generator_log_q_is_the_probability_flow_density_after_standardization():
    # decode's ln q (exact divergence, standardized coordinates) minus Σ ln scale must equal the ODE
    # density of the same points computed backwards, after the change of variables.
    from boltzflow.generators import CartesianMap, ScoreGenerator
    from boltzflow.probability_flow import probability_flow_log_prob
    from boltzflow.scores import UnconstrainedScore

    torch.manual_seed(0)
    network = UnconstrainedScore(3, hidden=16, n_hidden_layers=2).double()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))  # a nonlinear field, not the reference Gaussian
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.1, 2.0, 0.7])
    model = ScoreGenerator(network, loc, scale, CartesianMap(3))
    latent = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, log_q = model.decode(latent, "exact", n_steps=40)
    expected = probability_flow_log_prob(network, network.schedule, model.standardize(y), n_steps=40)
    expected = expected - torch.log(scale.double()).sum()
    np.testing.assert_allclose(log_q.numpy(), expected.numpy(), atol=1e-3)
    # The flow-perturbation latent holds the prior draw first: the same z gives the same sample.
    probes = torch.randn(200, 3 * 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_multistep, _ = model.decode(torch.cat([latent, probes], 1), "perturbation_multistep", n_steps=40)
    torch.testing.assert_close(y_multistep, y)
