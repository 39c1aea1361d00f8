"""The connectome reservoir: configuration errors, spectral radius, backends, batching, the update
rule, divergence, and memory capacity on networks whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from graphnet.memory_capacity import delay_targets, memory_capacity, squared_correlation
from graphnet.reservoir import (BACKENDS, Reservoir, ReservoirConfig, ReservoirDivergedError,
                                connectome_reservoir, scale_to_spectral_radius, spectral_radius)
from graphnet.testing import synthetic_graph, torch_threads


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    with torch_threads(1):
        yield


def random_matrix(n: int = 60, density: float = 0.1, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.random(n, n, density=density, random_state=rng, data_rvs=rng.standard_normal, format="csr")


def delay_line(n: int) -> sp.csr_matrix:
    """Shift register: unit i+1 takes unit i's state (ones on the subdiagonal)."""
    return sp.diags([np.ones(n - 1)], [-1], shape=(n, n), format="csr")


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, field", [
    ({"rho": 0.0}, "rho"), ({"rho": -1.0}, "rho"), ({"rho": float("nan")}, "rho"),
    ({"leak": 0.0}, "leak"), ({"leak": 1.5}, "leak"), ({"activation": "relu"}, "activation"),
    ({"backend": "cuda"}, "backend"), ({"input_scale": 0.0}, "input_scale"),
    ({"washout": -1}, "washout"), ({"input_populations": "all"}, "input_populations"),
    ({"output_populations": ()}, "output_populations"),
])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"ReservoirConfig.{field}"):
        ReservoirConfig(**kw)


def test_config_round_trips_and_parses_population_lists():
    c = ReservoirConfig(rho=1.2, output_populations="23P, 5P-IT", input_populations=["4P"])
    assert c.output_populations == ("23P", "5P-IT")
    assert ReservoirConfig.from_dict(c.to_dict()) == c
    assert ReservoirConfig(output_populations="all").output_populations == "all"
    with pytest.raises(ValueError, match="unknown ReservoirConfig field"):
        ReservoirConfig.from_dict({"rho": 1.0, "radius": 2})


def test_unknown_population_is_named_with_its_field():
    from graphnet.plan import plan_network

    plan = plan_network(synthetic_graph(seed=3))
    with pytest.raises(ValueError, match=r"ReservoirConfig.output_populations.*'7P'"):
        connectome_reservoir(plan, ReservoirConfig(output_populations=("23P", "7P")))
    with pytest.raises(ValueError, match=r"ReservoirConfig.input_populations.*'L4'"):
        connectome_reservoir(plan, ReservoirConfig(input_populations=("L4",)))


# -- spectral radius -------------------------------------------------------------------------------
def test_spectral_radius_matches_a_dense_solve_and_scaling_hits_rho():
    w = random_matrix(80, 0.08, seed=1)
    dense = np.abs(np.linalg.eigvals(w.toarray())).max()
    assert spectral_radius(w) == pytest.approx(dense, rel=1e-8)
    scaled = scale_to_spectral_radius(w, 0.7)
    assert np.abs(np.linalg.eigvals(scaled.toarray())).max() == pytest.approx(0.7, rel=1e-8)


def test_spectral_radius_falls_back_to_a_dense_solve_when_arpack_fails(monkeypatch):
    import scipy.sparse.linalg as spla

    def no_convergence(*a, **k):
        raise spla.ArpackNoConvergence("no convergence", np.array([]), np.array([]))

    monkeypatch.setattr(spla, "eigs", no_convergence)
    w = random_matrix(50, 0.1, seed=2)
    assert spectral_radius(w) == pytest.approx(np.abs(np.linalg.eigvals(w.toarray())).max(), rel=1e-10)
    monkeypatch.setattr("graphnet.spectral.DENSE_EIG_MAX", 10)
    with pytest.raises(ValueError, match="ARPACK did not find the spectral radius"):
        spectral_radius(w)


def test_a_matrix_without_recurrence_cannot_be_scaled():
    """A zero matrix and a short delay line (nilpotent; small enough for the exact dense solve:
    a long one's eigenvalues are ill-conditioned, ~eps^(1/n) in any floating-point solver)."""
    for w in (sp.csr_matrix((30, 30)), delay_line(10)):
        assert spectral_radius(w) == 0.0
        with pytest.raises(ValueError, match="spectral radius 0"):
            scale_to_spectral_radius(w, 0.9)
    with pytest.raises(ValueError, match="rho must be > 0"):
        scale_to_spectral_radius(random_matrix(), 0.0)


# -- simulation ------------------------------------------------------------------------------------
def test_one_step_is_the_leaky_update():
    w = random_matrix(20, 0.3, seed=4)
    r = Reservoir(w, [0, 1, 2], np.arange(20), leak=0.3, activation="tanh", dtype="float64")
    win = np.array([[0.5], [-0.2], [0.1]])
    u = np.array([[[0.7]], [[-0.4]]])                              # T=2, B=1, d=1
    states = r.run(u, win)
    x1 = np.zeros(20)
    pre = np.zeros(20)
    pre[:3] += win[:, 0] * 0.7
    x1 = 0.7 * x1 + 0.3 * np.tanh(pre)
    pre2 = w @ x1
    pre2[:3] += win[:, 0] * -0.4
    x2 = 0.7 * x1 + 0.3 * np.tanh(pre2)
    np.testing.assert_allclose(states[:, 0], np.stack([x1, x2]), atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_backends_give_the_same_states(activation):
    w = scale_to_spectral_radius(random_matrix(70, 0.1, seed=5), 0.9)
    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, (50, 3, 2))
    win = rng.uniform(-1, 1, (10, 2))
    out = {b: Reservoir(w, np.arange(10), np.arange(30, 70), leak=0.6, activation=activation,
                        backend=b, dtype="float64").run(u, win) for b in BACKENDS}
    for b in BACKENDS:
        np.testing.assert_allclose(out[b], out["dense"], atol=1e-10)
    r32 = Reservoir(w, np.arange(10), np.arange(30, 70), leak=0.6, activation=activation).run(u, win)
    np.testing.assert_allclose(r32, out["dense"], atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_equals_its_sequences_run_one_at_a_time(backend):
    w = scale_to_spectral_radius(random_matrix(40, 0.15, seed=6), 1.1)
    rng = np.random.default_rng(1)
    u = rng.uniform(-1, 1, (30, 3, 1))
    win = rng.uniform(-1, 1, (3, 8, 1))                          # one W_in per sequence
    r = Reservoir(w, np.arange(8), np.arange(40), backend=backend, dtype="float64")
    batch = r.run(u, win)
    for b in range(3):
        np.testing.assert_allclose(batch[:, b], r.run(u[:, b:b + 1], win[b])[:, 0], atol=1e-12)


def test_run_constant_is_the_last_state_of_a_held_input():
    w = scale_to_spectral_radius(random_matrix(40, 0.15, seed=7), 0.8)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 5))
    win = rng.standard_normal((6, 5))
    for backend in BACKENDS:
        r = Reservoir(w, np.arange(6), np.arange(20, 40), leak=0.5, backend=backend, dtype="float64")
        held = r.run(np.repeat(x[None], 7, axis=0), win)
        np.testing.assert_allclose(r.run_constant(x, win, 7), held[-1], atol=1e-12)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        r.run_constant(x, win, 0)


def test_bad_input_weights_shape_is_refused():
    r = Reservoir(random_matrix(20), [0, 1], np.arange(20))
    with pytest.raises(ValueError, match=r"input_weights must have shape \(2, 1\)"):
        r.run(np.zeros((5, 1, 1)), np.zeros((3, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_names_rho_and_the_step(backend):
    w = scale_to_spectral_radius(random_matrix(50, 0.2, seed=8), 1.5)
    r = Reservoir(w, np.arange(50), np.arange(50), activation="linear", backend=backend, rho=1.5)
    u = np.random.default_rng(0).uniform(-1, 1, (400, 1, 1))
    with pytest.raises(ReservoirDivergedError, match=r"diverged at step \d+ .*rho=1.5"):
        r.run(u, np.ones((50, 1)))
    # tanh units stay bounded at the same rho
    r_tanh = Reservoir(w, np.arange(50), np.arange(50), activation="tanh", backend=backend, rho=1.5)
    assert np.abs(r_tanh.run(u, np.ones((50, 1)))).max() <= 1.0


def test_non_finite_input_is_divergence():
    r = Reservoir(random_matrix(20), [0], np.arange(20), rho=0.5)
    with pytest.raises(ReservoirDivergedError, match="step 1 .*rho=0.5"):
        r.run(np.full((3, 1, 1), np.nan), np.ones((1, 1)))


# -- memory capacity -------------------------------------------------------------------------------
def test_delay_targets_and_squared_correlation():
    u = np.arange(10.0)
    np.testing.assert_array_equal(delay_targets(u, 5, 7, 3), [[4, 3, 2], [5, 4, 3]])
    a = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    np.testing.assert_allclose(squared_correlation(a, -a[:, :1] * np.ones((1, 2))), [1.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_delay_line_remembers_exactly_as_many_steps_as_it_has_units(backend):
    n, k = 10, 15
    r = Reservoir(delay_line(n), [0], np.arange(n), activation="linear", backend=backend, dtype="float64")
    mc = memory_capacity(r, seeds=[1, 2], max_delay=k, washout=k, n_train=1000, n_test=1000,
                         input_weights=np.ones((1, 1)))
    assert np.all(mc.r2[:, :n] > 0.999)                  # delays 1..N: exact copies
    assert np.all(mc.r2[:, n:] < 0.02)                   # beyond: chance (~1/n_test)
    np.testing.assert_allclose(mc.mc, n, atol=0.05)
    # K < N: capped at K
    short = memory_capacity(r, seeds=[1], max_delay=6, washout=10, n_train=500, n_test=500,
                            input_weights=np.ones((1, 1)))
    assert short.mc[0] == pytest.approx(6.0, abs=0.01)


@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_no_recurrence_gives_memory_capacity_one(leak):
    """Without recurrence the state is one leaky trace z(t) = a sum_j (1-a)^j u(t-1-j) of the
    input: r_k^2 = (1-(1-a)^2) (1-a)^(2(k-1)), summing to 1 - (1-a)^(2K) -- for a = 1 only
    delay 1, r^2 = 1."""
    n, k = 12, 20
    r = Reservoir(sp.csr_matrix((n, n)), np.arange(4), np.arange(n), activation="linear",
                  leak=leak, dtype="float64")
    mc = memory_capacity(r, seeds=[1, 2], max_delay=k, washout=k, n_train=2000, n_test=2000)
    expected_r2 = (1 - (1 - leak) ** 2) * (1 - leak) ** (2 * np.arange(k))
    np.testing.assert_allclose(mc.r2.mean(0)[:4], expected_r2[:4], atol=0.03)
    # the in-sample lags of u are not exactly orthogonal: a few hundredths either way
    np.testing.assert_allclose(mc.mc, 1 - (1 - leak) ** (2 * k), atol=0.08)


def test_memory_capacity_checks_its_settings():
    r = Reservoir(delay_line(5), [0], np.arange(5), activation="linear")
    with pytest.raises(ValueError, match="washout .* must be >= max_delay"):
        memory_capacity(r, seeds=[1], max_delay=20, washout=10)
    with pytest.raises(ValueError, match="max_delay must be >= 1"):
        memory_capacity(r, seeds=[1], max_delay=0)
    with pytest.raises(ValueError, match="at least one input seed"):
        memory_capacity(r, seeds=[])


# -- the real column -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def column_plan(column_graph):
    from graphnet.plan import plan_network

    return plan_network(column_graph.graph)


def test_the_real_column_reservoir_has_the_asked_spectral_radius(column_plan):
    assert column_plan.size == 1351 and len(column_plan.pre) == 75251
    for rho in (0.3, 1.6):
        r = connectome_reservoir(column_plan, ReservoirConfig(rho=rho))
        dense = np.linalg.eigvals(r.weights.toarray().astype(np.float64))
        assert np.abs(dense).max() == pytest.approx(rho, rel=1e-5)
    # Dale's signs and synapse counts, one common factor
    w = connectome_reservoir(column_plan, ReservoirConfig(rho=1.0, dtype="float64")).weights
    counts = column_plan.count_matrix()
    ratio = w.data / counts.data
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    assert ratio[0] > 0


def test_the_real_column_reservoir_reads_the_asked_populations(column_plan):
    r = connectome_reservoir(column_plan, ReservoirConfig(rho=0.9))
    assert r.n_inputs_units == 266                     # 4P
    assert r.n_readout == 349 + 185                    # 23P and the 5P types
    assert connectome_reservoir(column_plan, ReservoirConfig(output_populations="all")).n_readout == 1351


def test_the_real_column_has_memory(column_plan):
    r = connectome_reservoir(column_plan, ReservoirConfig(rho=0.9))
    mc = memory_capacity(r, seeds=[1], max_delay=30, washout=100, n_train=800, n_test=400)
    # the input reaches the readout populations one step after 4P: delay 1 is not readable
    assert mc.r2[0, 0] < 0.05
    assert np.all(mc.r2[0, 1:4] > 0.9)
    assert 3.0 < mc.mc[0] < r.n_readout
