"""Section 6: the effective operator (6.6), its spectrum and the alignment rates (§6)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from softhard import symmetry as sy

SQ2PI = math.sqrt(2.0 / math.pi)


def _problem(rng, d=4):
    """A random anisotropic covariance and a random (unnormalised) separator."""
    A = rng.normal(size=(d, d))
    cov = A @ A.T / d + 0.3 * np.eye(d) + np.diag(rng.uniform(0.0, 2.0, d))
    return jnp.asarray(cov), jnp.asarray(rng.normal(size=d))


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
    est = sy.effective_operator_mc(jax.random.key(7), cov, u, tau, resp, n=100_000, scale=0.7)
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
    dens = lambda t: math.exp(-0.5 * (t / s_u) ** 2) / (s_u * math.sqrt(2 * math.pi))
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
    pred = lambda t: (a[1:] / a[0]) ** t * (c_init[1:] / c_init[0])
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
# validation
# ----------------------------------------------------------------------------


def test_bad_inputs_raise_value_errors_naming_the_argument():
    cov, u = jnp.eye(3), jnp.array([1.0, 0.0, 0.0])
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
    ]
    for fn, name in cases:
        with pytest.raises(ValueError, match=f"`{name}"):
            fn()


def test_operator_routines_take_an_operator_or_a_matrix(rng):
    """The §6 spectra accept a `LinearOperator` (one normalising helper) like a matrix."""
    from softhard.landscape import linear_operator

    A = rng.normal(size=(4, 4))
    M = jnp.asarray(A + A.T)
    u = jnp.asarray(rng.normal(size=4))
    op = linear_operator(lambda v: M @ v, 4, M.dtype)
    lam = np.linalg.eigvalsh(np.asarray(M))[::-1]  # independent: NumPy's eigh
    np.testing.assert_allclose(sy.operator_spectrum(op, u).eigenvalues, lam, rtol=1e-12)
    np.testing.assert_allclose(sy.operator_spectrum(M, u).eigenvalues, lam, rtol=1e-12)
    eta = 0.05
    a = 1 + eta * lam
    np.testing.assert_allclose(sy.alignment_rate(op, eta), np.max(np.abs(a[1:])) / a[0], rtol=1e-12)
    np.testing.assert_allclose(sy.alignment_rate_small_step(op, eta), 1 - eta * (lam[0] - lam[1]))
    np.testing.assert_allclose(sy.rayleigh_quotient(op, u), u @ M @ u / (u @ u), rtol=1e-12)
    with pytest.raises(ValueError, match="linear_operator"):
        sy.operator_spectrum(lambda v: M @ v, u)  # a bare matvec is never guessed at
