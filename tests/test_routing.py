"""Routing kernels: gates (2.3), hard gates (2.9, 4.2), margins (2.6, 2.12), Lemma 4.1."""

import itertools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from hypothesis import given, settings
from hypothesis import strategies as st

import softhard as sh


def _random_logits(rng, n=64, K=5, scale=3.0):
    return jnp.asarray(rng.normal(scale=scale, size=(n, K)))


def test_gates_sum_to_one_and_match_softmax(rng, dtype):
    a = _random_logits(rng).astype(dtype)
    for tau in [1e-3, 0.1, 1.0, 10.0]:
        g = sh.gates(a, tau)
        assert g.dtype == dtype
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=tol(dtype, 1e-13, 1e-6))
        # independent reference: NumPy softmax in float64
        an = np.asarray(a, np.float64) / tau
        ref = np.exp(an - an.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
        np.testing.assert_allclose(g, ref, rtol=tol(dtype, 1e-12, 2e-5), atol=1e-30)


def test_gates_gauge_invariant(rng):
    """Adding one scalar function c(x) to every logit leaves the gates unchanged."""
    a = _random_logits(rng)
    c = jnp.asarray(rng.normal(scale=100.0, size=(a.shape[0], 1)))
    for tau in [0.01, 0.5, 3.0]:
        np.testing.assert_allclose(sh.gates(a + c, tau), sh.gates(a, tau), rtol=1e-10, atol=1e-300)


def test_gates_permutation_equivariant_and_soft_predict_invariant(rng):
    K = 4
    a = _random_logits(rng, K=K)
    f = jnp.asarray(rng.normal(size=a.shape))
    perm = np.array([2, 0, 3, 1])
    for tau in [0.05, 1.0]:
        np.testing.assert_allclose(sh.gates(a[:, perm], tau), sh.gates(a, tau)[:, perm], rtol=1e-13)
    # soft_predict: permute router rows and expert rows together
    d = 3
    x = jnp.asarray(rng.normal(size=(50, d)))
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    B, c = rng.normal(size=(K, d)), rng.normal(size=K)
    m = sh.MoE(sh.LinearRouter(W, b), sh.LinearExperts(B, c))
    mp = sh.MoE(sh.LinearRouter(W[perm], b[perm]), sh.LinearExperts(B[perm], c[perm]))
    np.testing.assert_allclose(sh.soft_predict(mp, x, 0.3), sh.soft_predict(m, x, 0.3), rtol=1e-12)
    np.testing.assert_allclose(sh.hard_predict(mp, x), sh.hard_predict(m, x), rtol=1e-12)
    del f


def test_hard_gates_tie_rule_lowest_index():
    a = jnp.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 5.0, 5.0]])
    np.testing.assert_array_equal(sh.winner(a), [1, 0, 2])
    np.testing.assert_array_equal(sh.hard_gates(a), [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    # the τ → 0 limit of the gates at a tie splits mass equally over the tie set;
    # the hard rule (2.9) picks the lowest index of that set
    g = sh.gates(a, 1e-8)
    np.testing.assert_allclose(g[0], [0, 0.5, 0.5, 0], atol=1e-12)
    assert int(jnp.argmax(g[0])) == int(sh.winner(a)[0])


def test_gates_tend_to_hard_gates_where_margin_positive(rng):
    a = _random_logits(rng, n=500, K=6)
    delta = sh.top_two_margin(a)
    hard = sh.hard_gates(a)
    for tau in [1e-1, 1e-2, 1e-3]:
        err = jnp.max(jnp.abs(sh.gates(a, tau) - hard), axis=-1)
        # (2.16): |π_k^τ − 1{k=k*}| ≤ (K−1) e^{−Δ/τ}
        bound = (a.shape[1] - 1) * jnp.exp(-delta / tau)
        assert bool(jnp.all(err <= bound + 1e-15))
    # at τ = 1e-6 every row with Δ > 1e-4 is one-hot to double precision
    sel = delta > 1e-4
    np.testing.assert_allclose(sh.gates(a, 1e-6)[sel], hard[sel], atol=1e-30)


@pytest.mark.parametrize("tau", [1e-8, 1e-6])
def test_extreme_temperatures_and_logits_are_finite(dtype, tau):
    a = jnp.array([[1e6, -1e6, 0.0], [1e6, 1e6 - 1.0, 3.0], [0.0, 0.0, 0.0]], dtype=dtype)
    g = sh.gates(a, tau)
    lg = sh.log_gates(a, tau)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(jnp.isfinite(lg)))
    np.testing.assert_allclose(g[:2], sh.hard_gates(a)[:2], atol=0)
    np.testing.assert_allclose(g[2], 1 / 3, rtol=1e-6)
    # gradients through the gates stay finite too
    jac = jax.jacobian(lambda z: sh.gates(z, tau))(a)
    assert bool(jnp.all(jnp.isfinite(jac)))


def test_margins_match_brute_force(rng):
    a = _random_logits(rng, n=40, K=5)
    an = np.asarray(a)
    srt = np.sort(an, -1)[:, ::-1]
    np.testing.assert_allclose(sh.top_two_margin(a), srt[:, 0] - srt[:, 1], rtol=1e-14)
    pairs = list(itertools.combinations(range(5), 2))
    brute = np.min([np.abs(an[:, i] - an[:, j]) for i, j in pairs], axis=0)
    np.testing.assert_allclose(sh.pairwise_min_margin(a), brute, rtol=1e-14)
    assert bool(jnp.all(sh.pairwise_min_margin(a) <= sh.top_two_margin(a)))
    s = sh.pairwise_scores(a)
    assert s.shape == (40, 10)
    np.testing.assert_allclose(s, np.stack([an[:, i] - an[:, j] for i, j in pairs], -1))
    i, j = sh.pair_indices(5)
    assert list(zip(i.tolist(), j.tolist())) == pairs
    # ties give zero margins
    t = jnp.array([[2.0, 2.0, 1.0]])
    assert float(sh.top_two_margin(t)[0]) == 0.0 and float(sh.pairwise_min_margin(t)[0]) == 0.0


logit_rows = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=7),
    elements=st.floats(-50, 50, allow_nan=False),
)


@settings(max_examples=12, deadline=None)
@given(a=logit_rows, log_tau=st.floats(-4, 1))
def test_lemma_4_1_property(a, log_tau):
    """Lemma 4.1: p_k ≤ exp(−(z_(1) − z_k)/τ), hence 1 − max p ≤ (K−1) e^{−Δ/τ} (2.16)."""
    tau = 10.0**log_tau
    a = jnp.asarray(a)
    g = sh.gates(a, tau)
    K = a.shape[1]
    gap = jnp.max(a, -1, keepdims=True) - a
    assert bool(jnp.all(g <= jnp.exp(-gap / tau) * (1 + 1e-12) + 1e-300))
    delta = sh.top_two_margin(a)
    lhs = 1.0 - jnp.max(g, -1)
    assert bool(jnp.all(lhs <= (K - 1) * jnp.exp(-delta / tau) + 1e-12))
    hard = sh.hard_gates(a)
    assert bool(jnp.all(jnp.abs(g - hard) <= (K - 1) * jnp.exp(-delta / tau)[:, None] + 1e-12))


def test_bad_input_raises():
    a = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="tau"):
        sh.gates(a, 0.0)
    with pytest.raises(ValueError, match="tau"):
        sh.gates(a, -1.0)
    with pytest.raises(ValueError, match="tau"):
        sh.gates(a, jnp.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="K >= 2"):
        sh.gates(jnp.zeros((3, 1)), 1.0)
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        sh.top_two_margin(jnp.zeros(3))
    with pytest.raises(ValueError, match="K"):
        sh.pair_indices(1)


def test_gates_jit_and_vmap_over_tau(rng):
    a = _random_logits(rng)
    taus = jnp.array([0.1, 1.0, 2.0])
    swept = jax.jit(jax.vmap(lambda t: sh.gates(a, t)))(taus)
    for i, t in enumerate(taus):
        np.testing.assert_allclose(swept[i], sh.gates(a, float(t)), rtol=1e-13)
