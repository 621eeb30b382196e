"""Section 6: effective operator, spectra and rates, reduced model, router training (§6, §7.3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate, special

import softhard as sh
from softhard import symmetry as sy

SQ2PI = math.sqrt(2.0 / math.pi)


def _problem(rng, d=4):
    """A random anisotropic covariance and a random (unnormalised) separator."""
    A = rng.normal(size=(d, d))
    cov = A @ A.T / d + 0.3 * np.eye(d) + np.diag(rng.uniform(0.0, 2.0, d))
    return jnp.asarray(cov), jnp.asarray(rng.normal(size=d))


def _random_model(rng, d=4):
    cov, u = _problem(rng, d)
    return sy.reduced_model(
        cov, u, rng.normal(size=d), rng.normal(size=d), student_contrast=rng.normal(size=d)
    )


def _user_kappa(t):
    # a smooth slope that is neither even nor of the form |t|: Lemma 6.1 still holds
    return t * jnp.arctan(2.0 * t) + 0.5 * t


# ----------------------------------------------------------------------------
# the effective operator (6.6) and Lemma 6.1 / 6.2
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("response", ["sign", "smooth", "callable"])
def test_effective_operator_matches_monte_carlo(rng, response):
    # Monte Carlo E[κ(T) X Xᵀ]/(2τ), n = 100_000, seed 7; every entry within 3 stderr
    cov, u = _problem(rng)
    resp = _user_kappa if response == "callable" else response
    tau = 0.3
    M = sy.effective_operator(cov, u, tau, resp, scale=0.7)
    est = sy.effective_operator_mc(jax.random.key(7), cov, u, tau, resp, 100_000, scale=0.7)
    assert est.value.shape == (4, 4) and est.stderr.shape == (4, 4)
    z = np.abs(np.asarray(M - est.value)) / np.asarray(est.stderr)
    assert z.max() < 3.0, z
    np.testing.assert_allclose(M, M.T, rtol=0, atol=1e-14)


def test_sign_response_rayleigh_quotient_is_lemma_6_2(rng):
    cov, u = _problem(rng)
    tau = 0.17
    M = sy.effective_operator(cov, u, tau, "sign")
    s_u = math.sqrt(float(u @ cov @ u))
    np.testing.assert_allclose(u @ M @ u, s_u**3 * SQ2PI / tau, rtol=1e-12)
    np.testing.assert_allclose(
        sy.rayleigh_quotient(M, u) * (u @ u), s_u**3 * SQ2PI / tau, rtol=1e-12
    )
    # Lemma 6.1's quadratic form for a random v, c_0 = σ_u√(2/π), c_2 = 2σ_u³√(2/π)
    v = jnp.asarray(rng.normal(size=4))
    vSu, vSv = v @ cov @ u, v @ cov @ v
    c0, c2 = s_u * SQ2PI, 2 * s_u**3 * SQ2PI
    want = (vSu**2 * c2 / s_u**4 + (vSv - vSu**2 / s_u**2) * c0) / (2 * tau)
    np.testing.assert_allclose(v @ M @ v, want, rtol=1e-12)


@pytest.mark.parametrize("response", ["sign", "smooth", "callable"])
def test_response_moments_match_scipy_quad(response):
    s_u, scale = 1.7, 0.6
    kappa = {
        "sign": abs,
        "smooth": lambda t: t * math.tanh(t / scale),
        "callable": lambda t: float(_user_kappa(t)),
    }[response]
    resp = _user_kappa if response == "callable" else response
    dens = lambda t: math.exp(-0.5 * (t / s_u) ** 2) / (s_u * math.sqrt(2 * math.pi))  # noqa: E731
    want0 = integrate.quad(lambda t: kappa(t) * dens(t), -np.inf, np.inf, epsabs=1e-13)[0]
    want2 = integrate.quad(lambda t: kappa(t) * t * t * dens(t), -np.inf, np.inf, epsabs=1e-13)[0]
    c0, c2 = sy.response_moments(jnp.asarray(s_u), resp, scale=scale)
    np.testing.assert_allclose([c0, c2], [want0, want2], rtol=1e-11)


def test_effective_operator_float32(rng):
    cov, u = _problem(rng)
    M64 = sy.effective_operator(cov, u, 0.2, "smooth")
    M32 = sy.effective_operator(cov.astype(jnp.float32), u.astype(jnp.float32), 0.2, "smooth")
    assert M32.dtype == jnp.float32
    np.testing.assert_allclose(M32, M64, rtol=2e-5, atol=2e-5 * float(jnp.abs(M64).max()))


# ----------------------------------------------------------------------------
# spectra and Prop 6.3
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("response", ["sign", "smooth"])
def test_identity_covariance_top_eigenvector_is_u(response):
    d = 5
    u = jnp.array([1.0, 2.0, 0.0, -1.0, 0.5])
    tau = 0.1
    M = sy.effective_operator(jnp.eye(d), u, tau, response)
    sp = sy.operator_spectrum(M, u)
    assert int(sp.aligned_index) == 0
    np.testing.assert_allclose(sp.overlaps[0], 1.0, rtol=1e-12)
    c0, c2 = sy.response_moments(jnp.linalg.norm(u), response)
    uhat = u / jnp.linalg.norm(u)
    # M = (c_0 (I − ûûᵀ) + c_2/σ_u² ûûᵀ)/(2τ): eigenvalue c_2/(2τσ_u²) on u, c_0/(2τ) elsewhere
    np.testing.assert_allclose(sp.eigenvalues[0], c2 / (2 * tau * (u @ u)), rtol=1e-12)
    np.testing.assert_allclose(sp.eigenvalues[1:], c0 / (2 * tau), rtol=1e-12)
    np.testing.assert_allclose(jnp.abs(sp.eigenvectors[:, 0] @ uhat), 1.0, rtol=1e-12)


@pytest.mark.parametrize("response", ["sign", "indefinite"])
def test_prop_6_3_positive_eigenvector_overlaps_u(rng, response):
    cov, u = _problem(rng, d=6)
    s2 = float(u @ cov @ u)
    # κ(t) = t² − 2σ_u²: c_0 = −σ_u² < 0 but c_2 = σ_u⁴ > 0, so M is indefinite
    resp = "sign" if response == "sign" else (lambda t: t**2 - 2.0 * s2)
    M = sy.effective_operator(cov, u, 0.25, resp)
    sp = sy.operator_spectrum(M, u)
    assert float(u @ M @ u) > 0
    if response == "indefinite":
        assert float(sp.eigenvalues[-1]) < 0  # the indefinite case really is indefinite
    # uᵀMu = Σ λ_i ⟨e_i, u⟩²
    np.testing.assert_allclose(
        jnp.sum(sp.eigenvalues * sp.overlaps**2) * (u @ u), u @ M @ u, rtol=1e-10
    )
    unstable = np.asarray(sp.eigenvalues) > 0
    assert np.any(unstable & (np.asarray(sp.overlaps) > 1e-3))


def test_power_iteration_decays_at_predicted_rate(rng):
    # φ ← (I + ηM)φ: each coefficient ratio follows (6.10) and max_{i≥2}|c_i|/|c_1| decays at ρ
    cov, u = _problem(rng, d=4)
    M = sy.effective_operator(cov, u, 0.5, "sign")
    lam, vec = np.linalg.eigh(np.asarray(M))
    lam, vec = lam[::-1], vec[:, ::-1]
    eta = 0.5 / lam[0]
    rho = float(sy.alignment_rate(M, eta))
    assert bool(sy.is_sign_stable(M, eta))
    a = 1 + eta * lam
    np.testing.assert_allclose(sy.amplification(M, eta), a, rtol=1e-12)
    np.testing.assert_allclose(rho, np.max(np.abs(a[1:])) / a[0], rtol=1e-12)

    phi = jnp.asarray(rng.normal(size=4))
    c_init = vec.T @ np.asarray(phi)
    # predicted (6.10): c_i(t)/c_1(t) = (a_i/a_1)^t c_i(0)/c_1(0); run until i = 2 dominates
    pred = lambda t: (a[1:] / a[0]) ** t * (c_init[1:] / c_init[0])  # noqa: E731
    t_star = next(t for t in range(1, 10_000) if np.argmax(np.abs(pred(t))) == 0)
    steps = t_star + 5
    assert np.abs(pred(steps))[0] > 1e-8  # still far above rounding

    def body(p, _):
        p = p + eta * (M @ p)
        return p / jnp.linalg.norm(p), p / jnp.linalg.norm(p)

    _, traj = jax.lax.scan(body, phi, None, length=steps)
    c = np.asarray(traj) @ vec  # [steps, d]
    want = np.stack([pred(t) for t in range(1, steps + 1)])
    np.testing.assert_allclose(c[:, 1:] / c[:, :1], want, rtol=1e-9, atol=1e-14)
    ratio = np.max(np.abs(c[:, 1:]), axis=1) / np.abs(c[:, 0])
    measured = ratio[-1] / ratio[-2]
    np.testing.assert_allclose(measured, rho, rtol=1e-6)


def test_small_step_form_and_saturation(rng):
    cov, u = _problem(rng, d=5)
    M = sy.effective_operator(cov, u, 0.2, "smooth")
    lam = np.linalg.eigvalsh(np.asarray(M))[::-1]
    for eta in (1e-3, 1e-4):
        rho = float(sy.alignment_rate(M, eta))
        small = float(sy.alignment_rate_small_step(M, eta))
        np.testing.assert_allclose(small, 1 - eta * (lam[0] - lam[1]), rtol=1e-12)
        assert abs(rho - small) <= 2 * (eta * lam[0]) ** 2  # (6.12) is first order in η
    # τ → 0 at fixed η: ρ → λ̃_2/λ̃_1 with λ̃ the eigenvalues of τM
    sat = float(sy.saturation_rate(cov, u, "smooth"))
    lt = np.linalg.eigvalsh(np.asarray(sy.effective_operator(cov, u, 1.0, "smooth")))[::-1]
    np.testing.assert_allclose(sat, lt[1] / lt[0], rtol=1e-12)
    rhos = [
        float(sy.alignment_rate(sy.effective_operator(cov, u, t, "smooth"), 1.0))
        for t in (1e-2, 1e-4, 1e-7)
    ]
    assert abs(rhos[0] - sat) > abs(rhos[1] - sat) > abs(rhos[2] - sat)
    np.testing.assert_allclose(rhos[2], sat, rtol=1e-5)


def test_sign_stability_fails_for_large_steps_on_indefinite_operator(rng):
    cov, u = _problem(rng)
    s2 = float(u @ cov @ u)
    M = sy.effective_operator(cov, u, 0.3, lambda t: t**2 - 2.0 * s2)
    lam_min = float(np.linalg.eigvalsh(np.asarray(M))[0])
    assert lam_min < 0
    assert bool(sy.is_sign_stable(M, 0.5 / abs(lam_min)))
    assert not bool(sy.is_sign_stable(M, 2.0 / abs(lam_min)))


def test_alignment():
    u = jnp.array([1.0, 0.0, 0.0])
    v = jnp.array([[1.0, 1.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(sy.alignment(v, u), [1 / math.sqrt(2), 1.0, 0.0], rtol=1e-14)


# ----------------------------------------------------------------------------
# the reduced model and its risk
# ----------------------------------------------------------------------------


def test_best_shared_predictor_is_beta0(rng):
    # least squares on n = 200_000 teacher draws (seed 3) recovers β_0 within 4 stderr
    m = _random_model(rng)
    x, y = sy.reduced_sample(m, jax.random.key(3), 200_000)
    x, y = np.asarray(x), np.asarray(y)
    bhat, *_ = np.linalg.lstsq(x, y, rcond=None)
    res = y - x @ bhat
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * res.var())
    assert np.all(np.abs(bhat - np.asarray(m.beta0)) < 4 * se)
    np.testing.assert_allclose(0.5 * (m.beta1 + m.beta2), m.beta0, rtol=1e-12)


def test_reduced_risk_matches_core_moe_and_teacher(rng):
    m = _random_model(rng)
    x, y = sy.reduced_sample(m, jax.random.key(0), 500)
    teacher = sy.reduced_teacher(m)
    np.testing.assert_allclose(jax.vmap(teacher.regression)(x), y, rtol=1e-13, atol=1e-13)
    phi = jnp.asarray(rng.normal(size=4))
    for tau in (0.05, 1.0):
        np.testing.assert_allclose(
            sy.reduced_risk(m, phi, x, y, tau),
            sh.soft_risk(sy.reduced_moe(m, phi), x, y, tau),
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
    teacher = sy.reduced_teacher(m)
    for phi, tau in _exact_cases(rng, m):
        phi = jnp.asarray(phi)
        want = exact_soft_risk(sy.reduced_moe(m, phi), teacher, law, tau)
        np.testing.assert_allclose(sy.reduced_risk_exact(m, phi, tau), want, rtol=1e-11)


def test_exact_risk_matches_monte_carlo(rng):
    # n = 400_000 draws (seed 11), within 4 stderr, including φ = 0 (every gate 1/2)
    m = _random_model(rng)
    x, y = sy.reduced_sample(m, jax.random.key(11), 400_000)
    cases = [(np.zeros(4), 0.3)] + _exact_cases(rng, m)[:3]
    for phi, tau in cases:
        phi = jnp.asarray(phi)
        z = x @ phi
        f = x @ m.beta2 + jax.nn.sigmoid(z / tau) * (x @ (m.beta1 - m.beta2))
        loss = (y - f) ** 2
        se = float(loss.std()) / math.sqrt(loss.size)
        ex = float(sy.reduced_risk_exact(m, phi, tau))
        assert abs(ex - float(loss.mean())) < 4 * se, (ex, float(loss.mean()), se)


def test_exact_risk_float32_is_finite_and_close(rng):
    m = _random_model(rng)
    m32 = sy.ReducedModel(*(a.astype(jnp.float32) for a in m))
    for phi, tau in _exact_cases(rng, m):
        r64 = sy.reduced_risk_exact(m, jnp.asarray(phi), tau)
        r32 = sy.reduced_risk_exact(m32, jnp.asarray(phi, jnp.float32), jnp.float32(tau))
        assert r32.dtype == jnp.float32
        np.testing.assert_allclose(r32, r64, rtol=1e-4)


# ----------------------------------------------------------------------------
# exact linearisation at φ = 0
# ----------------------------------------------------------------------------


def test_exact_linearisation_matches_finite_differences_and_isserlis(rng):
    m = _random_model(rng)
    tau = 0.3
    lin = sy.exact_linearisation(m, tau)
    d = 4
    # Hessian block: central differences of the (autodiff) gradient of the exact risk
    grad = jax.jit(jax.grad(sy.reduced_risk_exact, argnums=1))
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
    taus = np.array(sy.TABLE3_TAUS)
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
    model = sy.table3_model()
    res = sy.train_router(model, jnp.array(sy.TABLE3_TAUS), 1200, key=jax.random.key(0), n=2000)
    T, S1 = len(sy.TABLE3_TAUS), 1201
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
    pred = 2 * jax.scipy.stats.norm.cdf(2 * jnp.array(sy.TABLE3_TAUS) / final["norm"]) - 1
    np.testing.assert_allclose(mass, pred, atol=0.015)


def test_train_router_one_step_by_hand(rng):
    m = _random_model(rng)
    x, y = sy.reduced_sample(m, jax.random.key(5), 300)
    phi0 = jnp.asarray(rng.normal(size=4))
    taus = jnp.array([0.2, 0.7])
    lr = 0.1
    res = sy.train_router(
        m, taus, 1, key=jax.random.key(0), sample=(x, y), init=phi0, learning_rate=lr, gtol=0.0
    )
    for i, tau in enumerate(np.asarray(taus)):
        g = jax.grad(sy.reduced_risk, argnums=1)(m, phi0, x, y, tau)
        phi1 = phi0 - lr * g
        np.testing.assert_allclose(res.phi[i], phi1, rtol=1e-13)
        for s, phi in ((0, phi0), (1, phi1)):
            z = np.asarray(x @ phi)
            ent = special.entr(special.expit(z / tau)) + special.entr(special.expit(-z / tau))
            np.testing.assert_allclose(res.risk[i, s], sy.reduced_risk(m, phi, x, y, tau))
            np.testing.assert_allclose(res.entropy[i, s], ent.mean(), rtol=1e-12)
            np.testing.assert_allclose(res.boundary_mass[i, s], np.mean(np.abs(z) <= 2 * tau))
            np.testing.assert_allclose(res.norm[i, s], np.linalg.norm(phi), rtol=1e-14)
            np.testing.assert_allclose(res.alignment[i, s], sy.alignment(phi, m.u), rtol=1e-14)
    assert np.all(np.asarray(res.stop_step) == 1)


def test_train_router_sharp_gates_adam_and_float32():
    # huge router at tiny τ: entropies are 0·log 0 = 0, never NaN; adam and float32 run
    m = sy.table3_model(dtype=jnp.float32)
    big = 1e6 * m.u
    res = sy.train_router(
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
    res = sy.train_router(sy.table3_model(), jnp.array(sy.TABLE3_TAUS), key=jax.random.key(0))
    final, mass, ent = _check_table3_shape(res)
    assert np.all(final["alignment"] > 0.9995)  # prints as 1.000
    np.testing.assert_allclose(final["risk"], _TABLE3[:, 0], atol=0.015)
    np.testing.assert_allclose(final["norm"], _TABLE3[:, 2], rtol=0.06)
    np.testing.assert_allclose(mass, _TABLE3[:, 3], atol=0.004)
    np.testing.assert_allclose(ent, _TABLE3[:, 4], atol=0.005)
    # the sample risk sits within sampling error of the population risk at φ_final
    for i, tau in enumerate(sy.TABLE3_TAUS):
        ex = float(sy.reduced_risk_exact(sy.table3_model(), res.phi[i], tau))
        assert abs(final["risk"][i] - ex) < 0.03


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    cov, u = jnp.eye(3), jnp.array([1.0, 0.0, 0.0])
    m = sy.table3_model(3)
    key = jax.random.key(0)
    cases = [
        (lambda: sy.effective_operator(jnp.ones(3), u, 0.1), "cov"),
        (lambda: sy.effective_operator(jnp.array([[1.0, 2.0], [0.0, 1.0]]), u[:2], 0.1), "cov"),
        (lambda: sy.effective_operator(-jnp.eye(3), u, 0.1), "cov"),
        (lambda: sy.effective_operator(cov, jnp.zeros(3), 0.1), "u"),
        (lambda: sy.effective_operator(cov, u[:2], 0.1), "u"),
        (lambda: sy.effective_operator(cov, u, 0.0), "tau"),
        (lambda: sy.effective_operator(cov, u, 0.1, "cosine"), "response"),
        (lambda: sy.effective_operator(cov, u, 0.1, "smooth", scale=-1.0), "scale"),
        (lambda: sy.effective_operator(cov, u, 0.1, lambda t: t[:1]), "response"),
        (lambda: sy.effective_operator_mc(None, cov, u, 0.1), "key"),
        (lambda: sy.effective_operator_mc(key, cov, u, 0.1, n=1), "n"),
        (lambda: sy.alignment_rate(jnp.ones((2, 3)), 0.1), "M"),
        (lambda: sy.alignment_rate(jnp.eye(3), 0.0), "eta"),
        (lambda: sy.alignment_rate(jnp.eye(1), 0.1), "M"),
        (lambda: sy.is_sign_stable(jnp.array([[1.0, 2.0], [0.0, 1.0]]), 0.1), "M"),
        (lambda: sy.rayleigh_quotient(jnp.eye(3), jnp.zeros(3)), "v"),
        (lambda: sy.operator_spectrum(jnp.eye(3), jnp.ones(2)), "u"),
        (lambda: sy.reduced_model(cov, u, jnp.ones(2), jnp.ones(3)), "beta0"),
        (
            lambda: sy.reduced_model(cov, u, jnp.ones(3), jnp.ones(3), student_contrast=[1.0]),
            "student_contrast",
        ),
        (lambda: sy.reduced_risk_exact(m, jnp.ones(2), 0.1), "phi"),
        (lambda: sy.reduced_risk_exact((1, 2), jnp.ones(3), 0.1), "model"),
        (lambda: sy.reduced_risk(m, jnp.ones(3), jnp.ones((4, 2)), jnp.ones(4), 0.1), "x"),
        (lambda: sy.exact_linearisation(m, -1.0), "tau"),
        (lambda: sy.train_router(m, jnp.array([0.1]), 0, key=key), "steps"),
        (lambda: sy.train_router(m, jnp.array([0.1]), 5, key=None), "key"),
        (lambda: sy.train_router(m, jnp.array([-0.1]), 5, key=key), "taus"),
        (lambda: sy.train_router(m, jnp.array([0.1]), 5, key=key, n=0), "n"),
        (
            lambda: sy.train_router(m, jnp.array([0.1]), 5, key=key, init_alignment=1.5),
            "init_alignment",
        ),
        (lambda: sy.train_router(m, jnp.array([0.1]), 5, key=key, gtol=-1.0), "gtol"),
        (lambda: sy.train_router(m, jnp.array([0.1]), 5, key=key, init=jnp.ones(2)), "init"),
        (lambda: sy.train_router(m, jnp.array([0.1]), 5, key=key, optimizer="sgd"), "optimizer"),
        (lambda: sy.table3_model(1), "d"),
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            fn()
