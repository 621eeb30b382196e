"""The vectorised gap coefficient (one segment-summed pass over every sample's own pair).

References are independent of `softhard.coarea`'s code: a direct NumPy loop
over the pairs implementing the same estimator at a fixed bandwidth (top two
by `np.argsort`, weighted least squares by `np.linalg.solve`), the exact
Gaussian coefficient (`exact_gap_coefficient`, K = 3), and a model with a dead
expert against the same model without it.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softhard as sh
from softhard import coarea
from softhard.coarea import gap_coefficient

TWO_LN2 = 2 * math.log(2)
# boundary kernel (c0 + c1 z) φ(z) 1{z ≥ 0}: ∫ = 1, ∫ z = 0 (solved by hand from half-moments)
_M0, _M1, _M2 = 0.5, 1 / math.sqrt(2 * math.pi), 0.5
_C = np.linalg.solve([[_M0, _M1], [_M1, _M2]], [1.0, 0.0])


def _linear_model(K, d, seed, k=1):
    rng = np.random.default_rng(seed)
    r = sh.LinearRouter(W=rng.normal(size=(K, d)), b=0.3 * rng.normal(size=K))
    e = sh.LinearExperts(B=rng.normal(size=(K, d)), c=rng.normal(size=K))
    return sh.MoE(r, e, k=k), r, e


def _np_right_limit(u, g, n, h):
    """p_on(0+) μ_on(0+): local-linear intercept × boundary-kernel density, at bandwidth h."""
    z = u / h
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * (z >= 0)
    w = phi / h
    X = np.stack([np.ones_like(z), z], 1)
    S = (X * w[:, None]).T @ X / n
    T = (X * w[:, None]).T @ g / n
    mu = np.linalg.solve(S, T)[0]
    dens = np.sum((_C[0] + _C[1] * z) * phi / h) / n
    return dens * mu


def _np_gap(a, f, y, h):
    # top-1 routing, K > 2: each sample's own pair (i < j) from its top two logits
    n, K = a.shape
    order = np.argsort(-a, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    rows = np.arange(n)
    s = a[rows, lo] - a[rows, hi]
    df = f[rows, lo] - f[rows, hi]
    g = df * (y - f[rows, first])
    total = 0.0
    for i in range(K):
        for j in range(i + 1, K):
            on = (lo == i) & (hi == j)
            if not on.any():
                continue
            u, gj, sq = s[on], g[on], df[on] ** 2
            jump = _np_right_limit(u, gj, n, h) - _np_right_limit(-u, gj, n, h)
            both = 0.5 * (_np_right_limit(u, sq, n, h) + _np_right_limit(-u, sq, n, h))
            total += TWO_LN2 * jump + (TWO_LN2 - 1) * both
    return total


def test_equals_a_numpy_loop_over_pairs_at_fixed_bandwidth():
    model, r, e = _linear_model(4, 2, 0)
    x = jax.random.normal(jax.random.key(0), (2**14, 2))
    y = sh.hard_predict(model, x) + 0.2 * jax.random.normal(jax.random.key(1), (2**14,))
    a, f = np.asarray(sh.logits(r, x)), np.asarray(sh.expert_outputs(e, x))
    for h in (0.15, 0.4):
        est = gap_coefficient(model, x, y, bandwidth=h)
        ref = _np_gap(a, f, np.asarray(y), h)
        np.testing.assert_allclose(float(est.value), ref, rtol=1e-10, atol=1e-12)
        assert np.isfinite(float(est.stderr)) and float(est.stderr) > 0


@pytest.mark.parametrize("case", ["realizable", "jump"])
def test_k3_against_the_exact_gaussian_coefficient(case):
    model, r, e = _linear_model(3, 2, 3)
    law = sh.StandardGaussian(2)
    if case == "realizable":
        teacher = sh.Teacher(r, e)
    else:  # same interfaces, other experts: the regression function jumps across them
        rng = np.random.default_rng(9)
        teacher = sh.Teacher(r, sh.LinearExperts(B=rng.normal(size=(3, 2)), c=rng.normal(size=3)))
    x = jax.random.normal(jax.random.key(7), (2**18, 2))
    y = sh.hard_predict(sh.MoE(r, teacher.experts), x)
    y = y + 0.1 * jax.random.normal(jax.random.key(8), y.shape)
    exact = float(sh.exact_gap_coefficient(model, teacher, law))
    est = gap_coefficient(model, x, y)
    assert abs(float(est.value) - exact) < 3 * float(est.stderr), (est, exact)
    assert float(est.stderr) < 0.2 * abs(exact)


def test_dead_expert_pairs_are_exactly_zero():
    # K = 4 with expert 3 at logit −100: pairs (·, 3) never meet; equals the K = 3 model
    m3, r3, e3 = _linear_model(3, 2, 5)
    W = np.vstack([np.asarray(r3.W), np.zeros((1, 2))])
    b = np.concatenate([np.asarray(r3.b), [-100.0]])
    B = np.vstack([np.asarray(e3.B), [[2.0, -1.0]]])
    c = np.concatenate([np.asarray(e3.c), [4.0]])
    m4 = sh.MoE(sh.LinearRouter(W=W, b=b), sh.LinearExperts(B=B, c=c))
    x = jax.random.normal(jax.random.key(3), (2**14, 2))
    y = sh.hard_predict(m3, x) + 0.1 * jax.random.normal(jax.random.key(4), (2**14,))
    e4_, e3_ = gap_coefficient(m4, x, y), gap_coefficient(m3, x, y)
    np.testing.assert_allclose(float(e4_.value), float(e3_.value), rtol=1e-12)
    np.testing.assert_allclose(float(e4_.stderr), float(e3_.stderr), rtol=1e-12)
    # the per-pair parts of the dead pairs (0,3), (1,3), (2,3) are 0 ± 0 exactly
    a = sh.logits(m4.router, x)
    f = sh.expert_outputs(m4.experts, x)
    it = coarea._interfaces(a, a, f, 1, None)
    (g_r, g_l, g_sq), _ = coarea._gap_terms(it, y, jnp.ones(()), True)
    s = (jnp.take_along_axis(a, it.lo[:, None], 1) - jnp.take_along_axis(a, it.hi[:, None], 1))[
        :, 0
    ]
    G = jnp.stack([jnp.stack([g_r, g_sq], -1), jnp.stack([g_l, g_sq], -1)], 1)
    parts = coarea._gap_parts(s, it.pair, G, jnp.asarray(jnp.nan), num=6, chunk=4096)
    _, jj = sh.pair_indices(4)
    dead = np.asarray(jj) == 3
    assert np.all(np.asarray(parts.value)[dead] == 0.0)
    assert np.all(np.asarray(parts.stderr)[dead] == 0.0)
    assert np.all(np.asarray(parts.stderr)[~dead] > 0.0)


def test_k64_runs_in_one_compile_and_float32_stays_float32():
    model, _, _ = _linear_model(64, 8, 11)
    x = jax.random.normal(jax.random.key(5), (2**14, 8))
    y = sh.hard_predict(model, x) + 0.1 * jax.random.normal(jax.random.key(6), (2**14,))
    before = coarea._gap_parts._cache_size()
    est = gap_coefficient(model, x, y)
    assert coarea._gap_parts._cache_size() == before + 1  # one compile for 2016 pairs
    assert np.isfinite(float(est.value)) and np.isfinite(float(est.stderr))
    # many pairs hold 1 or 2 samples: no NaN, a finite bound instead
    m32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), _linear_model(8, 4, 12)[0])
    x32 = jax.random.normal(jax.random.key(9), (2**14, 4), jnp.float32)
    est32 = gap_coefficient(m32, x32, sh.hard_predict(m32, x32))
    assert est32.value.dtype == jnp.float32 and est32.stderr.dtype == jnp.float32
    assert np.isfinite(float(est32.value)) and np.isfinite(float(est32.stderr))
