"""Statistical inefficiency of replica exchange against AR(1) series of known inefficiency (1 + ρ) / (1 − ρ)."""

import numpy as np

from boltzflow.replica_exchange import replica_trajectories, statistical_inefficiencies

RHO = 0.9
G_AR1 = (1 + RHO) / (1 - RHO)  # 19 frames


def _ar1(n_series, n_frames, rng):
    x = np.empty((n_series, n_frames))
    x[:, 0] = rng.normal(size=n_series)
    noise = rng.normal(scale=np.sqrt(1 - RHO ** 2), size=(n_series, n_frames))
    for t in range(1, n_frames):
        x[:, t] = RHO * x[:, t - 1] + noise[:, t]
    return x


def test_replica_trajectories_invert_the_state_index():
    by_replica = np.arange(12.0).reshape(3, 4)
    replica = np.array([[0, 1, 2, 2], [1, 0, 0, 1], [2, 2, 1, 0]])
    by_state = np.take_along_axis(by_replica, replica, axis=0)
    np.testing.assert_array_equal(replica_trajectories(by_state, replica), by_replica)


def test_without_swaps_both_are_the_ar1_value():
    rng = np.random.default_rng(0)
    series = _ar1(8, 20000, rng)
    replica = np.repeat(np.arange(8)[:, None], 20000, axis=1)
    g_state, g_replica = statistical_inefficiencies([series], replica, state=0)
    assert abs(g_state / G_AR1 - 1) < 0.25
    assert abs(g_replica / G_AR1 - 1) < 0.12


def test_swaps_hide_the_slow_replicas_from_the_state_series():
    # Eight replicas, each an AR(1) series, shuffled over the states at every frame: the state series
    # meets the same replica again only one frame in eight, so it decorrelates about 8 times faster,
    # while each replica trajectory keeps the AR(1) inefficiency. The larger is the honest one.
    rng = np.random.default_rng(1)
    n_replicas, n_frames = 8, 20000
    by_replica = _ar1(n_replicas, n_frames, rng)
    replica = np.stack([rng.permutation(n_replicas) for _ in range(n_frames)], axis=1)
    by_state = np.take_along_axis(by_replica, replica, axis=0)
    g_state, g_replica = statistical_inefficiencies([by_state], replica, state=0)
    # A series that meets its replica again with probability 1/8 has g = 1 + (G_AR1 - 1) / 8.
    assert abs(g_state / (1 + (G_AR1 - 1) / n_replicas) - 1) < 0.3
    assert abs(g_replica / G_AR1 - 1) < 0.12
    assert g_replica > 3 * g_state


def test_a_constant_observable_constrains_nothing():
    replica = np.zeros((1, 100), dtype=int)
    assert statistical_inefficiencies([np.ones((1, 100))], replica, state=0) == (1.0, 1.0)


def test_a_slow_walk_over_temperatures_alone_is_not_a_correlation():
    # Independent samples in every state (white noise around a mean that grows with the state, like the
    # energy with temperature), replicas reshuffled only every 200 frames: each replica's raw values
    # jump between state means slowly, but the samples within a state are independent (g = 1).
    rng = np.random.default_rng(2)
    n_states, n_frames = 4, 20000
    by_state = 10.0 * np.arange(n_states)[:, None] + rng.normal(size=(n_states, n_frames))
    replica = np.repeat(np.stack([rng.permutation(n_states) for _ in range(n_frames // 200)], axis=1), 200, axis=1)
    g_state, g_replica = statistical_inefficiencies([by_state], replica, state=0)
    assert g_state < 1.2 and g_replica < 1.2


# Independent runs of one ladder ([run, state, frame]).
def test_every_run_enters_both_inefficiencies():
    # Run 1 is white noise, run 2 an AR(1) with g = 19 in every state; no swaps (replica k stays in state k).
    rng = np.random.default_rng(0)
    K, T = 3, 4000
    obs = np.stack([rng.normal(size=(K, T)), _ar1(K, T, rng)])
    replica = np.broadcast_to(np.arange(K)[None, :, None], (2, K, T))
    g_state, g_replica = statistical_inefficiencies([obs], replica, 0)
    assert g_state > 4 and g_replica > 4  # run 1 alone gives about 1


def test_replica_standardization_is_pooled_over_runs():
    # Each run sits at its own offset in every state (a basin it never leaves); swaps every frame.
    rng = np.random.default_rng(1)
    K, T = 3, 2000
    obs = np.stack([1.0 + 0.3 * rng.normal(size=(K, T)), -1.0 + 0.3 * rng.normal(size=(K, T))])
    replica = np.stack([np.array([rng.permutation(K) for _ in range(T)]).T for _ in range(2)])
    _, g_replica = statistical_inefficiencies([obs], replica, 0)
    assert g_replica > 50  # per-run standardization would remove the offsets and give about 1


def test_runs_stuck_in_different_basins_are_not_independent_samples():
    rng = np.random.default_rng(0)
    K, T = 3, 2000
    indicator = np.stack([np.ones((K, T)), np.zeros((K, T))])  # run 1 always in the state, run 2 never
    replica = np.stack([np.array([rng.permutation(K) for _ in range(T)]).T for _ in range(2)])
    g_state, g_replica = statistical_inefficiencies([indicator], replica, 0)
    assert g_state > T / 4 and g_replica > T / 4
