"""Section 6: the reduced model, its exact risk and linearisation, router training (§6, §7.3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special

import softhard as sh
from softhard import reduced as rd
from softhard import symmetry as sy
from softhard.diagnostics.setups import TABLE3_TAUS, table3_model

SQ2PI = math.sqrt(2.0 / math.pi)


def _problem(rng, d=4):
    """A random anisotropic covariance and a random (unnormalised) separator."""
    A = rng.normal(size=(d, d))
    cov = A @ A.T / d + 0.3 * np.eye(d) + np.diag(rng.uniform(0.0, 2.0, d))
    return jnp.asarray(cov), jnp.asarray(rng.normal(size=d))


def _random_model(rng, d=4):
    cov, u = _problem(rng, d)
    return rd.reduced_model(
        cov, u, rng.normal(size=d), rng.normal(size=d), student_contrast=rng.normal(size=d)
    )


# ----------------------------------------------------------------------------
# the reduced model and its risk
# ----------------------------------------------------------------------------


def test_best_shared_predictor_is_beta0(rng):
    # least squares on n = 200_000 teacher draws (seed 3) recovers β_0 within 4 stderr
    m = _random_model(rng)
    x, y = rd.reduced_sample(m, jax.random.key(3), 200_000)
    x, y = np.asarray(x), np.asarray(y)
    bhat, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ bhat
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * res.var())
    assert np.all(np.abs(bhat - np.asarray(m.beta0)) < 4 * se)
    np.testing.assert_allclose(0.5 * (m.beta1 + m.beta2), m.beta0, rtol=1e-12)


def test_reduced_risk_matches_core_moe_and_teacher(rng):
    m = _random_model(rng)
    x, y = rd.reduced_sample(m, jax.random.key(0), 500)
    teacher = rd.reduced_teacher(m)
    np.testing.assert_allclose(jax.vmap(teacher.regression)(x), y, rtol=1e-13, atol=1e-13)
    phi = jnp.asarray(rng.normal(size=4))
    for tau in (0.05, 1.0):
        np.testing.assert_allclose(
            rd.reduced_risk(m, phi, x, y, tau),
            sh.soft_risk(rd.reduced_moe(m, phi), x, y, tau),
            rtol=1e-13,
        )


def _exact_cases(rng, m):
    d = m.u.shape[0]
    u = np.asarray(m.u)
    return [
        (0.3 * rng.normal(size=d), 0.3),
        (rng.normal(size=d), 0.05),
        (3 * u, 0.01),  # aligned and sharp: the transition sits on the teacher boundary
        (100 * rng.normal(size=d), 0.01),  # sharp, oblique
        (1e3 * u + 1e-3 * rng.normal(size=d), 1e-4),
    ]


def test_exact_risk_matches_gaussian_module(rng):
    # an independent implementation: softhard.gaussian.exact_soft_risk on the core pytrees
    from softhard.gaussian import exact_soft_risk

    m = _random_model(rng)
    law = sh.Gaussian(jnp.zeros(4), m.cov)
    teacher = rd.reduced_teacher(m)
    for phi, tau in _exact_cases(rng, m):
        phi = jnp.asarray(phi)
        want = exact_soft_risk(rd.reduced_moe(m, phi), teacher, law, tau)
        np.testing.assert_allclose(rd.reduced_risk_exact(m, phi, tau), want, rtol=1e-11)


def test_exact_risk_matches_monte_carlo(rng):
    # n = 400_000 draws (seed 11), within 4 stderr, including φ = 0 (every gate 1/2)
    m = _random_model(rng)
    x, y = rd.reduced_sample(m, jax.random.key(11), 400_000)
    cases = [(np.zeros(4), 0.3)] + _exact_cases(rng, m)[:3]
    for phi, tau in cases:
        phi = jnp.asarray(phi)
        z = x @ phi
        f = x @ m.beta2 + jax.nn.sigmoid(z / tau) * (x @ (m.beta1 - m.beta2))
        loss = (y - f) ** 2
        se = float(loss.std()) / math.sqrt(loss.size)
        ex = float(rd.reduced_risk_exact(m, phi, tau))
        assert abs(ex - float(loss.mean())) < 4 * se, (ex, float(loss.mean()), se)


def test_exact_risk_float32_is_finite_and_close(rng):
    m = _random_model(rng)
    m32 = rd.ReducedModel(*(a.astype(jnp.float32) for a in m))
    for phi, tau in _exact_cases(rng, m):
        r64 = rd.reduced_risk_exact(m, jnp.asarray(phi), tau)
        r32 = rd.reduced_risk_exact(m32, jnp.asarray(phi, jnp.float32), jnp.float32(tau))
        assert r32.dtype == jnp.float32
        np.testing.assert_allclose(r32, r64, rtol=1e-4)


# ----------------------------------------------------------------------------
# exact linearisation at φ = 0
# ----------------------------------------------------------------------------


def test_exact_linearisation_matches_finite_differences_and_isserlis(rng):
    m = _random_model(rng)
    tau = 0.3
    lin = rd.exact_linearisation(m, tau)
    d = 4
    # Hessian block: central differences of the (autodiff) gradient of the exact risk
    grad = jax.jit(jax.grad(rd.reduced_risk_exact, argnums=1))
    h = 1e-5  # truncation error ≈ 4e-9 relative (it scales as h² down to here)
    e = jnp.eye(d)
    fd = np.stack([(grad(m, h * e[i], tau) - grad(m, -h * e[i], tau)) / (2 * h) for i in range(d)])
    scale = float(jnp.abs(lin.linear_part).max())
    np.testing.assert_allclose(-lin.linear_part, fd, rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(lin.drift, grad(m, jnp.zeros(d), tau), rtol=1e-12)
    # by hand (Isserlis): ∇R(0) = −E[sign(T)(γᵀX)(ΔᵀX)X]/(4τ), ∇²R(0) = E[(ΔᵀX)² XXᵀ]/(8τ²)
    cov, u = np.asarray(m.cov), np.asarray(m.u)
    D, g = np.asarray(m.beta1 - m.beta2), np.asarray(m.gamma)
    su = cov @ u
    vu = u @ su
    b = su / vu
    cw = cov - np.outer(su, su) / vu
    e1, e3 = math.sqrt(vu) * SQ2PI, 2 * vu**1.5 * SQ2PI
    E = e3 * (g @ b) * (D @ b) * b + e1 * ((g @ b) * cw @ D + (D @ b) * cw @ g + (g @ cw @ D) * b)
    np.testing.assert_allclose(lin.drift, -E / (4 * tau), rtol=1e-10)
    H = ((D @ cov @ D) * cov + 2 * np.outer(cov @ D, cov @ D)) / (8 * tau**2)
    np.testing.assert_allclose(lin.linear_part, -H, rtol=1e-10)
    # the response model's operator for comparison; the exact linear part is stable
    np.testing.assert_allclose(lin.operator, sy.effective_operator(m.cov, m.u, tau), rtol=1e-14)
    assert np.linalg.eigvalsh(np.asarray(lin.linear_part)).max() < 0
    assert np.linalg.eigvalsh(np.asarray(lin.operator)).min() > 0


# ----------------------------------------------------------------------------
# router-only training (Table 3)
# ----------------------------------------------------------------------------


def _check_table3_shape(res):
    taus = np.array(TABLE3_TAUS)
    final = {k: np.asarray(getattr(res, k)[:, -1]) for k in ("risk", "alignment", "norm")}
    mass = np.asarray(res.boundary_mass[:, -1])
    ent = np.asarray(res.entropy[:, -1])
    assert np.all(final["alignment"] > 0.99)
    assert np.all(np.diff(mass) > 0) and np.all(np.diff(ent) > 0)
    assert np.all(np.diff(final["risk"]) > 0)
    assert np.all(np.diff(final["norm"] / taus) < 0)
    return final, mass, ent


def test_train_router_table3_ordering_fast():
    # reduced size: n = 2000, 1200 steps (the full-size run is the slow test below)
    model = table3_model()
    res = rd.train_router(model, jnp.array(TABLE3_TAUS), 1200, key=jax.random.key(0), n=2000)
    T, S1 = len(TABLE3_TAUS), 1201
    for f in ("risk", "alignment", "norm", "boundary_mass", "entropy", "grad_norm"):
        assert getattr(res, f).shape == (T, S1)
    assert res.phi.shape == (T, 5) and res.stop_step.shape == (T,)
    final, mass, ent = _check_table3_shape(res)
    assert np.all(np.asarray(res.stop_step) < 1200)  # every run met the stopping rule
    assert np.all(np.asarray(res.grad_norm[:, -1]) <= 0.025)
    # started near balance with alignment 0.1; the risk falls
    np.testing.assert_allclose(res.alignment[:, 0], 0.1, rtol=1e-12)
    np.testing.assert_allclose(res.norm[:, 0], 0.01, rtol=1e-12)
    assert np.all(np.asarray(res.risk[:, -1]) < np.asarray(res.risk[:, 0]))
    # the boundary mass follows the Gaussian slab formula 2Φ(2τ/‖φ‖) − 1 (3.11)
    pred = 2 * jax.scipy.stats.norm.cdf(2 * jnp.array(TABLE3_TAUS) / final["norm"]) - 1
    np.testing.assert_allclose(mass, pred, atol=0.015)


def test_train_router_one_step_by_hand(rng):
    m = _random_model(rng)
    x, y = rd.reduced_sample(m, jax.random.key(5), 300)
    phi0 = jnp.asarray(rng.normal(size=4))
    taus = jnp.array([0.2, 0.7])
    lr = 0.1
    res = rd.train_router(
        m, taus, 1, key=jax.random.key(0), sample=(x, y), init=phi0, learning_rate=lr, gtol=0.0
    )
    for i, tau in enumerate(np.asarray(taus)):
        g = jax.grad(rd.reduced_risk, argnums=1)(m, phi0, x, y, tau)
        phi1 = phi0 - lr * g
        np.testing.assert_allclose(res.phi[i], phi1, rtol=1e-13)
        for s, phi in ((0, phi0), (1, phi1)):
            z = np.asarray(x @ phi)
            ent = special.entr(special.expit(z / tau)) + special.entr(special.expit(-z / tau))
            np.testing.assert_allclose(res.risk[i, s], rd.reduced_risk(m, phi, x, y, tau))
            np.testing.assert_allclose(res.entropy[i, s], ent.mean(), rtol=1e-12)
            np.testing.assert_allclose(res.boundary_mass[i, s], np.mean(np.abs(z) <= 2 * tau))
            np.testing.assert_allclose(res.norm[i, s], np.linalg.norm(phi), rtol=1e-14)
            np.testing.assert_allclose(res.alignment[i, s], sy.alignment(phi, m.u), rtol=1e-14)
    assert np.all(np.asarray(res.stop_step) == 1)


def test_train_router_sharp_gates_adam_and_float32():
    # huge router at tiny τ: entropies are 0·log 0 = 0, never NaN; adam and float32 run
    m = table3_model(dtype=jnp.float32)
    big = 1e6 * m.u
    res = rd.train_router(
        m,
        jnp.array([1e-8, 1e-3], jnp.float32),
        3,
        key=jax.random.key(1),
        n=256,
        init=big,
        optimizer=optax.adam(1e-3),
    )
    assert res.risk.dtype == jnp.float32
    for f in res:
        assert np.all(np.isfinite(np.asarray(f)))
    np.testing.assert_allclose(res.entropy, 0.0, atol=1e-6)
    np.testing.assert_allclose(res.boundary_mass, 0.0, atol=1e-6)


# the paper's Table 3 (TABLES.md): risk, alignment, ‖φ‖, mass, entropy
_TABLE3 = np.array(
    [
        [1.2601, 1.000, 1.430, 0.056, 0.046],
        [1.2748, 1.000, 1.997, 0.080, 0.065],
        [1.2960, 1.000, 2.780, 0.114, 0.093],
        [1.3268, 1.000, 3.840, 0.163, 0.133],
    ]
)


@pytest.mark.slow
def test_train_router_reproduces_table3_full_size():
    res = rd.train_router(table3_model(), jnp.array(TABLE3_TAUS), key=jax.random.key(0))
    final, mass, ent = _check_table3_shape(res)
    assert np.all(final["alignment"] > 0.9995)  # prints as 1.000
    np.testing.assert_allclose(final["risk"], _TABLE3[:, 0], atol=0.015)
    np.testing.assert_allclose(final["norm"], _TABLE3[:, 2], rtol=0.06)
    np.testing.assert_allclose(mass, _TABLE3[:, 3], atol=0.004)
    np.testing.assert_allclose(ent, _TABLE3[:, 4], atol=0.005)
    # the sample risk sits within sampling error of the population risk at φ_final
    for i, tau in enumerate(TABLE3_TAUS):
        ex = float(rd.reduced_risk_exact(table3_model(), res.phi[i], tau))
        assert abs(final["risk"][i] - ex) < 0.03


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    cov, u = jnp.eye(3), jnp.array([1.0, 0.0, 0.0])
    m = table3_model(3)
    key = jax.random.key(0)
    cases = [
        (lambda: rd.reduced_model(cov, u, jnp.ones(2), jnp.ones(3)), "beta0"),
        (
            lambda: rd.reduced_model(cov, u, jnp.ones(3), jnp.ones(3), student_contrast=[1.0]),
            "student_contrast",
        ),
        (lambda: rd.reduced_risk_exact(m, jnp.ones(2), 0.1), "phi"),
        (lambda: rd.reduced_risk_exact((1, 2), jnp.ones(3), 0.1), "model"),
        (lambda: rd.reduced_risk(m, jnp.ones(3), jnp.ones((4, 2)), jnp.ones(4), 0.1), "x"),
        (lambda: rd.exact_linearisation(m, -1.0), "tau"),
        (lambda: rd.train_router(m, jnp.array([0.1]), 0, key=key), "steps"),
        (lambda: rd.train_router(m, jnp.array([0.1]), 5, key=None), "key"),
        (lambda: rd.train_router(m, jnp.array([-0.1]), 5, key=key), "taus"),
        (lambda: rd.train_router(m, jnp.array([0.1]), 5, key=key, n=0), "n"),
        (
            lambda: rd.train_router(m, jnp.array([0.1]), 5, key=key, init_alignment=1.5),
            "init_alignment",
        ),
        (lambda: rd.train_router(m, jnp.array([0.1]), 5, key=key, gtol=-1.0), "gtol"),
        (lambda: rd.train_router(m, jnp.array([0.1]), 5, key=key, init=jnp.ones(2)), "init"),
        (lambda: rd.train_router(m, jnp.array([0.1]), 5, key=key, optimizer="sgd"), "optimizer"),
        (lambda: table3_model(1), "d"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            fn()
