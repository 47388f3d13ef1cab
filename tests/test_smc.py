"""Latent-space SMC (single runs and independent replicates) and independence Metropolis against quadrature on a 2D double well."""

import math

import numpy as np
import pytest
import torch

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.samplers import independence_metropolis
from boltzflow.settings import SMCSettings
from boltzflow.smc import replicate_seeds, run_smc, run_smc_replicates, systematic_resample
from boltzflow.stages.samplers import smc_stage
from boltzflow.systems import system_from_config

# These checks are in float64 (the fixture restores the default dtype for the other modules).
pytestmark = pytest.mark.usefixtures("float64_default")


def reduced_energy(x):
    """A tilted double well: two states, x < 0 and x > 0, about 1 kT apart, barrier about 3 kT."""
    return 3.0 * (x[:, 0] ** 2 - 1.0) ** 2 - 0.5 * x[:, 0] + 2.0 * x[:, 1] ** 2


def quadrature():
    """(ΔF = -ln P(x > 0)/P(x < 0), ln Z) by the midpoint rule."""
    h = 0.002
    x = torch.arange(-3, 3, h) + h / 2
    grid = torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1).reshape(-1, 2)
    density = torch.exp(-reduced_energy(grid))
    right = float(density[grid[:, 0] > 0].sum())
    left = float(density[grid[:, 0] <= 0].sum())
    return -math.log(right / left), math.log((right + left) * h * h)


class GaussianModel:
    """A deliberately poor model: one broad Gaussian over both wells, as a latent map ξ → x."""

    latent_dim = 2
    loc = torch.tensor([0.0, 0.0], dtype=torch.float64)
    scale = torch.tensor([1.6, 1.0], dtype=torch.float64)

    def decode(self, latent):
        x = self.loc + self.scale * latent
        log_q = (-0.5 * latent.pow(2).sum(-1) - math.log(2 * math.pi) - torch.log(self.scale).sum())
        return x, log_q


def weighted_delta_f(x, log_w):
    w = np.exp(log_w - log_w.max())
    right = x[:, 0] > 0
    return -math.log(w[right].sum() / w[~right].sum())


def test_smc_raises_ess_over_importance_sampling_and_matches_quadrature():
    truth, log_z_truth = quadrature()
    model = GaussianModel()
    settings = SMCSettings(n_particles=2000, moves_per_level=5)
    delta_f, log_z, ess_smc = [], [], []
    for seed in range(4):
        result = run_smc(model.decode, reduced_energy, model.latent_dim,
                         SMCSettings(**{**settings.__dict__, "seed": seed}), log=lambda message: None)
        delta_f.append(weighted_delta_f(result.positions, result.log_w))
        log_z.append(result.log_z)
        w = np.exp(result.log_w - result.log_w.max())
        ess_smc.append(w.sum() ** 2 / (w**2).sum() / len(w))
        # The stored weights are shifted so that their log-mean-exp is the SMC ln Z.
        assert np.log(np.mean(np.exp(result.log_w))) == pytest.approx(result.log_z)
    # Plain importance sampling with the same model and particle count.
    x, log_q = model.decode(torch.randn(2000, 2, generator=torch.Generator().manual_seed(9)))
    log_w_is = (-reduced_energy(x) - log_q).numpy()
    w_is = np.exp(log_w_is - log_w_is.max())
    ess_is = w_is.sum() ** 2 / (w_is**2).sum() / len(w_is)
    assert np.mean(ess_smc) > ess_is + 0.2, (ess_smc, ess_is)
    error = np.std(delta_f, ddof=1) / 2
    assert abs(np.mean(delta_f) - truth) < 3 * error + 0.05, (delta_f, truth)
    assert abs(np.mean(log_z) - log_z_truth) < 0.05, (log_z, log_z_truth)


def test_smc_replicates_are_independent_and_their_pooled_log_z_matches_quadrature():
    truth, log_z_truth = quadrature()
    model = GaussianModel()
    settings = SMCSettings(n_particles=500, replicates=6, moves_per_level=5, seed=3)
    result = run_smc_replicates(model.decode, reduced_energy, model.latent_dim, settings, log=lambda message: None)
    seeds = replicate_seeds(3, 6)
    assert result.seeds == seeds and len(set(seeds)) == 6
    assert replicate_seeds(4, 6)[0] not in seeds  # another base seed, other streams
    # Different seeds: no particle of one replicate coincides with one of another (continuous latents).
    positions = [run.positions for run in result.runs]
    for a in range(6):
        for b in range(a + 1, 6):
            distance = np.abs(positions[a][:, None, :] - positions[b][None, :, :]).sum(-1)
            assert distance.min() > 0, (a, b)
    # Within each replicate the stored weights average to its own ln Z; pooled, to ln mean_r Z_r.
    replicate = result.replicate
    np.testing.assert_array_equal(np.bincount(replicate), [500] * 6)
    for r in range(6):
        log_w = result.log_w[replicate == r]
        assert math.log(np.mean(np.exp(log_w))) == pytest.approx(result.log_z[r])
    assert math.log(np.mean(np.exp(result.log_w))) == pytest.approx(result.pooled_log_z)
    assert result.pooled_log_z == pytest.approx(math.log(np.mean(np.exp(result.log_z))))
    # The replicates disagree (independent noise), and the truth lies within their spread.
    spread = np.std(result.log_z, ddof=1)
    assert spread > 1e-3, result.log_z
    assert abs(result.pooled_log_z - log_z_truth) < 3 * spread / math.sqrt(6) + 0.02, (result.log_z, log_z_truth)
    delta_f = [weighted_delta_f(result.positions[replicate == r], result.log_w[replicate == r]) for r in range(6)]
    assert abs(np.mean(delta_f) - truth) < 3 * np.std(delta_f, ddof=1) / math.sqrt(6) + 0.03, (delta_f, truth)
    # Per-level records: one row per replicate, NaN-padded to the longest run.
    betas = result.per_level("betas")
    assert betas.shape == (6, max(len(run.betas) - 1 for run in result.runs))
    for r, run in enumerate(result.runs):
        np.testing.assert_array_equal(betas[r, :len(run.betas) - 1], run.betas[1:])
        assert np.isnan(betas[r, len(run.betas) - 1:]).all() and run.betas[-1] == 1.0


def test_smc_samples_file_pools_the_replicates_with_their_labels_and_log_z(tmp_path):
    system = system_from_config("well", {"type": "toy2d", "energy": "3*(x^2 - 1)^2 - 0.5*x + 2*y^2",
                                         "temperatures": [120.27], "states": {"left": {"x": [-3, 0]}, "right": {"x": [0, 3]}}})
    dataset = smc_stage(system, GaussianModel(), SMCSettings(n_particles=200, replicates=3, moves_per_level=2),
                        log=lambda message: None)
    write_netcdf(dataset, tmp_path / "smc.nc")
    samples = read_netcdf(tmp_path / "smc.nc")
    replicate = samples["replicate"].values
    np.testing.assert_array_equal(replicate, np.repeat([0, 1, 2], 200))
    log_w = samples["log_w"].values
    for r in range(3):
        assert math.log(np.mean(np.exp(log_w[replicate == r]))) == pytest.approx(float(samples["replicate_log_z"][r]))
    assert samples.attrs["smc_log_z"] == pytest.approx(math.log(np.mean(np.exp(log_w))))
    assert samples["beta"].dims == ("replicate", "level") and samples["beta"].shape[0] == 3
    assert np.nanmax(samples["beta"].values, axis=1) == pytest.approx([1.0] * 3)
    assert all("units" in samples[name].attrs and "long_name" in samples[name].attrs
               for name in ["replicate", "replicate_log_z", "beta", "acceptance", "level_ess_fraction"])


def test_systematic_resampling_keeps_the_weights_in_expectation():
    rng = np.random.default_rng(0)
    log_w = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    counts = np.zeros(4)
    for _ in range(2000):
        counts += np.bincount(systematic_resample(log_w, rng), minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.01)


def test_independence_metropolis_samples_the_target():
    # Proposal N(0, 2²), target N(1, 1): the chain states' mean and variance are the target's.
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 2.0, 200_000)
    log_q = -0.5 * (x / 2.0) ** 2 - math.log(2.0)
    log_p = -0.5 * (x - 1.0) ** 2
    index, rate = independence_metropolis(log_p - log_q, n_chains=100, burn_in=20, seed=0)
    states = x[index]
    assert 0.3 < rate < 0.9
    assert states.mean() == pytest.approx(1.0, abs=0.03)
    assert states.var() == pytest.approx(1.0, abs=0.05)


def test_independence_metropolis_needs_more_draws_than_burn_in():
    with pytest.raises(ValueError, match="burn_in"):
        independence_metropolis(np.zeros(100), n_chains=10, burn_in=10, seed=0)
