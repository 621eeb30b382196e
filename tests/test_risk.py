"""Soft/hard predictors and risks (2.4, 2.5, 2.10, 2.11), temperature sweeps."""

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from scipy import integrate, stats

import softhard as sh


def _random_problem(rng, K: int, d: int, n: int, dtype):
    """A random linear MoE with Gaussian `x: [n, d]`, `y: [n]`, all in `dtype`."""

    def arr(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    m = sh.MoE(sh.LinearRouter(arr(K, d), arr(K)), sh.LinearExperts(arr(K, d), arr(K)))
    return m, arr(n, d), arr(n)


def _tiny_model():
    # K = 2, d = 1 by hand: logits (x, -x), experts (1 + x, -1)
    r = sh.LinearRouter(W=[[1.0], [-1.0]], b=[0.0, 0.0])
    e = sh.LinearExperts(B=[[1.0], [0.0]], c=[1.0, -1.0])
    return sh.MoE(r, e)


def test_soft_and_hard_risk_hand_computation():
    m = _tiny_model()
    x = jnp.array([[0.5], [-1.0], [0.0]])
    y = jnp.array([1.0, 0.0, 2.0])
    tau = 0.5
    # gate of expert 0: σ(2x/τ); experts: (1 + x, −1)
    p = 1 / (1 + np.exp(-2 * np.array([0.5, -1.0, 0.0]) / tau))
    f1 = 1 + np.array([0.5, -1.0, 0.0])
    f_soft = p * f1 + (1 - p) * (-1.0)
    np.testing.assert_allclose(sh.soft_predict(m, x, tau), f_soft, rtol=1e-14)
    np.testing.assert_allclose(sh.soft_risk(m, x, y, tau), np.mean((np.array(y) - f_soft) ** 2))
    # hard: x = 0.5 -> expert 0 (1.5); x = -1 -> expert 1 (-1); x = 0 is a tie -> expert 0 (1.0)
    np.testing.assert_allclose(sh.hard_predict(m, x), [1.5, -1.0, 1.0])
    np.testing.assert_allclose(sh.hard_risk(m, x, y), (0.25 + 1.0 + 1.0) / 3)


def test_grad_soft_risk_matches_central_differences(rng):
    d, H, K = 3, 5, 3
    router = sh.MLPRouter(
        rng.normal(size=(H, d)), rng.normal(size=H), rng.normal(size=(K, H)), rng.normal(size=K)
    )
    experts = sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K))
    m = sh.MoE(router, experts)
    x = jnp.asarray(rng.normal(size=(64, d)))
    y = jnp.asarray(rng.normal(size=64))
    tau = 0.3
    flat, unravel = jax.flatten_util.ravel_pytree(m)
    f = lambda v: sh.soft_risk(unravel(v), x, y, tau)
    g = jax.grad(f)(flat)
    h = 1e-6
    fd = np.array(
        [(f(flat.at[i].add(h)) - f(flat.at[i].add(-h))) / (2 * h) for i in range(flat.size)]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("tau", [1e-8, 1e-3])
def test_risks_finite_at_extremes(dtype, tau):
    r = sh.LinearRouter(W=jnp.array([[1e6], [-1e6]], dtype), b=jnp.zeros(2, dtype))
    e = sh.LinearExperts(B=jnp.array([[1.0], [0.0]], dtype), c=jnp.array([0.0, 1.0], dtype))
    m = sh.MoE(r, e)
    x = jnp.array([[1.0], [-1.0], [0.0], [1e-7]], dtype)
    y = jnp.zeros(4, dtype)
    ls = sh.soft_risk(m, x, y, tau)
    assert ls.dtype == dtype and bool(jnp.isfinite(ls))
    assert bool(jnp.isfinite(sh.hard_risk(m, x, y)))
    g = jax.grad(sh.soft_risk)(m, x, y, tau)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g))
    sweep = sh.risk_sweep(m, x, y, jnp.array([tau, 1.0], dtype))
    assert bool(jnp.all(jnp.isfinite(sweep.soft.value)))
    # a subnormal τ (1/τ overflows): the fused kernels give the τ → 0 limit (hard
    # routing, exact ties split evenly), no NaN
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    diag = sh.diagnostic_sweep(m, x, y, jnp.array([tiny, tau], dtype))
    for est in (diag.soft, diag.gap, diag.entropy, diag.ambiguity):
        assert bool(jnp.all(jnp.isfinite(est.value)))
    np.testing.assert_allclose(diag.soft.value[0], sh.soft_risk(m, x, y, 1e-30), rtol=1e-6)


def table2_problem(offset, n, key, dtype=jnp.float64):
    """TABLES.md Table 2: X ~ N(0, I_2), s = x_1 − b, f_1 − f_2 = 2 x_2, realizable."""
    r = sh.LinearRouter(
        W=jnp.array([[1.0, 0.0], [0.0, 0.0]], dtype), b=jnp.array([-offset, 0.0], dtype)
    )
    e = sh.LinearExperts(B=jnp.array([[0.0, 2.0], [0.0, 0.0]], dtype), c=jnp.zeros(2, dtype))
    law = sh.Gaussian(jnp.zeros(2, dtype), jnp.eye(2, dtype=dtype))
    x, y = sh.Teacher(r, e).sample(key, law, n)
    return sh.MoE(r, e), x, y


def _table2_gap_quadrature(offset, tau):
    # E[(v·X)²] = 4 and independent of s: gap = 4 E[(σ(s/τ) − 1{s > 0})²], s ~ N(−b, 1)
    def f(u):
        return 4 * (0.5 * (1 + np.tanh(u / (2 * tau))) - (u > 0)) ** 2 * stats.norm.pdf(u + offset)

    return integrate.quad(f, -np.inf, 0)[0] + integrate.quad(f, 0, np.inf)[0]


def test_risk_sweep_table2_gap_within_3_stderr():
    """Table 2, offset 0, τ = 0.1: gap 0.06139 (exact), N = 2^20, seed 0, 3 stderr."""
    m, x, y = table2_problem(0.0, 2**20, jax.random.key(0))
    sweep = sh.risk_sweep(m, x, y, jnp.array([0.1]))
    ref = _table2_gap_quadrature(0.0, 0.1)
    assert abs(ref - 0.06139) < 5e-6
    est = sweep.gap
    assert abs(float(est.value[0]) - ref) < 3 * float(est.stderr[0])
    assert float(est.stderr[0]) < 1e-3  # it is a real test, not a wide interval
    assert float(sweep.hard.value) == 0.0  # realizable


@pytest.mark.parametrize("K", [5, 40])  # the kernel unrolls K <= 32 and scans above
def test_risk_sweep_equals_per_tau_objectives(rng, dtype, K):
    """The fused chunked sweep equals soft_risk / hard_risk at each τ (incl. τ = 1e-6)."""
    d, n = 4, 3001  # n not a multiple of the chunk: exercises the tail chunk
    m, x, y = _random_problem(rng, K, d, n, dtype)
    taus = jnp.array([1e-6, 1e-2, 0.3, 2.0], dtype)
    sweep = sh.risk_sweep(m, x, y, taus, chunk_size=512)
    assert sweep.soft.value.dtype == dtype and sweep.soft.value.shape == (4,)
    rt = tol(dtype, 1e-12, 2e-5)
    for i, t in enumerate(taus):
        np.testing.assert_allclose(sweep.soft.value[i], sh.soft_risk(m, x, y, t), rtol=rt)
    hard = sh.hard_risk(m, x, y)
    np.testing.assert_allclose(sweep.hard.value, hard, rtol=rt)
    np.testing.assert_allclose(
        sweep.gap.value, sweep.soft.value - hard, rtol=rt, atol=rt * float(hard)
    )
    # standard errors: the sample standard deviation over sqrt(n)
    lh = (y - sh.hard_predict(m, x)) ** 2
    np.testing.assert_allclose(
        sweep.hard.stderr, jnp.std(lh, ddof=1) / np.sqrt(n), rtol=tol(dtype, 1e-10, 1e-4)
    )
    # the chunk size does not change the answer
    other = sh.risk_sweep(m, x, y, taus, chunk_size=n)
    np.testing.assert_allclose(other.soft.value, sweep.soft.value, rtol=rt)
    np.testing.assert_allclose(other.soft.stderr, sweep.soft.stderr, rtol=tol(dtype, 1e-9, 1e-4))


def test_risk_sweep_under_jit_and_grad(rng):
    # the fused sweep kernel, jitted and differentiated, against the plain per-τ
    # objective `soft_risk` (a separate code path: softmax gates, no streaming)
    m, x, y = table2_problem(0.5, 4096, jax.random.key(1))
    taus = jnp.array([0.05, 0.1])

    @jax.jit
    def swept(mm, x, y):
        return sh.risk_sweep(mm, x, y, taus).soft.value.sum()

    def direct(mm, x, y):
        return sh.soft_risk(mm, x, y, 0.05) + sh.soft_risk(mm, x, y, 0.1)

    chex.assert_trees_all_close(swept(m, x, y), direct(m, x, y), rtol=1e-12)
    g = jax.jit(jax.grad(swept))(m, x, y)
    chex.assert_trees_all_close(g, jax.grad(direct)(m, x, y), rtol=1e-10, atol=1e-14)
    # the sweep is also jittable with its inputs traced (shapes are static)
    out = jax.jit(lambda mm, x, y: sh.risk_sweep(mm, x, y, taus))(m, x, y)
    chex.assert_trees_all_close(out.soft.value.sum(), direct(m, x, y), rtol=1e-12)


def test_bad_input_raises(rng):
    m = _tiny_model()
    x = jnp.zeros((4, 1))
    y = jnp.zeros(4)
    with pytest.raises(ValueError, match="tau"):
        sh.soft_risk(m, x, y, 0.0)
    with pytest.raises(ValueError, match="taus"):
        sh.risk_sweep(m, x, y, jnp.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="`y`"):
        sh.soft_risk(m, x, jnp.zeros(3), 0.1)
    with pytest.raises(ValueError, match="`x`"):
        sh.hard_risk(m, jnp.zeros(4), y)
    bad = sh.MoE(sh.LinearRouter(W=[[np.nan], [0.0]], b=[0.0, 0.0]), m.experts)
    with pytest.raises(ValueError, match=r"router.*W"):
        sh.soft_risk(bad, x, y, 0.1)
    with pytest.raises(ValueError, match=r"model.*W"):
        sh.risk_sweep(bad, x, y, jnp.array([0.1]))
    with pytest.raises(ValueError, match="chunk_size"):
        sh.risk_sweep(m, x, y, jnp.array([0.1]), chunk_size=0)


@pytest.mark.slow
def test_population_sweep_ten_million_samples_bounded_memory():
    """N = 10^7 fresh samples, d = 2, T = 32: the working set is one chunk, well under 4 GB."""
    from softhard.diagnostics import table2_setup

    model, teacher, law = table2_setup(0.0)
    taus = jnp.array([0.1] + list(np.geomspace(0.01, 1.0, 31)))
    out = sh.population_sweep(model, teacher, law, taus, key=jax.random.key(2), n=10**7)
    ref = _table2_gap_quadrature(0.0, 0.1)
    assert abs(float(out.gap.value[0]) - ref) < 3 * float(out.gap.stderr[0])
    with open("/proc/self/status") as fh:
        hwm_kb = int(next(line for line in fh if line.startswith("VmHWM")).split()[1])
    assert hwm_kb / 2**20 < 4.0


@pytest.mark.parametrize("K", [4, 40])  # the kernel unrolls K <= 32 and scans above
def test_diagnostic_sweep_equals_per_tau_references(rng, dtype, K):
    """The fused kernel equals per-τ computations from the public kernels, incl. τ = 1e-6."""
    d, n = 3, 2500
    m, x, y = _random_problem(rng, K, d, n, dtype)
    taus = jnp.array([1e-6, 0.05, 0.5, 3.0], dtype)
    out = sh.diagnostic_sweep(m, x, y, taus, mass_factor=2.0, delta=0.1, chunk_size=700)
    rt = tol(dtype, 1e-11, 5e-5)
    a = sh.logits(m.router, x)
    margin = sh.top_two_margin(a)
    for i, t in enumerate(taus):
        np.testing.assert_allclose(out.soft.value[i], sh.soft_risk(m, x, y, t), rtol=rt)
        g, lg = sh.gates(a, t), sh.log_gates(a, t)
        ent = -jnp.sum(jnp.where(g > 0, g * lg, 0.0), -1)
        np.testing.assert_allclose(out.entropy.value[i], jnp.mean(ent), rtol=rt, atol=1e-6)
        amb = jnp.mean(jnp.max(g, -1) < 0.9)
        np.testing.assert_allclose(out.ambiguity.value[i], amb, atol=2 / n)
        np.testing.assert_allclose(out.mass.value[i], jnp.mean(margin <= 2 * t), atol=1e-12)
    np.testing.assert_allclose(out.hard.value, sh.hard_risk(m, x, y), rtol=rt)
    # risk_sweep shares the fused kernel with diagnostic_sweep, so this only checks
    # the two front ends agree; the independent references are the per-τ
    # soft_risk / hard_risk, gates and margins above
    ref = sh.risk_sweep(m, x, y, taus)
    np.testing.assert_allclose(out.gap.value, ref.gap.value, rtol=rt, atol=1e-6)
    # binary stderr of a mass: sqrt(p(1-p)/(n-1)) up to the n/(n-1) factor
    p = out.mass.value
    np.testing.assert_allclose(
        # atol: where every margin is inside the slab (p = 1, K = 40 at τ = 3) the
        # streamed variance is rounding noise, ~1e-19 (f64) / ~1e-10 (f32), not 0
        out.mass.stderr,
        jnp.sqrt(p * (1 - p) / (n - 1)),
        rtol=1e-3,
        atol=tol(dtype, 1e-15, 1e-8),
    )
    with pytest.raises(ValueError, match="delta"):
        sh.diagnostic_sweep(m, x, y, taus, delta=0.7)


def test_population_sweep_streams_fresh_samples():
    """Chunk i is drawn from fold_in(key, i): equal to risk_sweep on those very samples.

    Every chunk is drawn whole (one trace of the sampler); the last chunk's
    draws past `n` are masked out, so the sample is the first `n` rows.
    """
    from softhard.diagnostics import table2_setup

    model, teacher, law = table2_setup(0.5)
    key, n, chunk = jax.random.key(4), 5000, 1024
    taus = jnp.array([0.05, 0.2])
    out = sh.population_sweep(model, teacher, law, taus, key=key, n=n, chunk_size=chunk)
    parts = [
        jax.tree.map(
            lambda a, i=i: a[: n - i * chunk],
            teacher.sample(jax.random.fold_in(key, i), law, chunk),
        )
        for i in range(-(-n // chunk))
    ]
    x = jnp.concatenate([p[0] for p in parts])
    y = jnp.concatenate([p[1] for p in parts])
    ref = sh.risk_sweep(model, x, y, taus)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    again = sh.population_sweep(model, teacher, law, taus, key=key, n=n, chunk_size=chunk)
    np.testing.assert_array_equal(again.gap.value, out.gap.value)
    diag = sh.population_sweep(model, teacher, law, taus, key=key, n=n, diagnostics=True)
    assert isinstance(diag, sh.SweepDiagnostics)
    with pytest.raises(ValueError, match="`n`"):
        sh.population_sweep(model, teacher, law, taus, key=key, n=1)
