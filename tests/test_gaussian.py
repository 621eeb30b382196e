"""Tests for softhard.gaussian: exact population values for Gaussian inputs.

Every exact value is checked against something independent:

- scipy quadrature (`scipy.integrate.quad` / `dblquad`) over the student score,
  with conditional moments of X given the scores computed here by NumPy
  regression and truncated-normal moments written from scratch (1e-9 relative
  for K = 2, teacher with the same / a different separator, a linear target);
- bivariate normal orthant probabilities from `scipy.stats.multivariate_normal`
  (boundary masses for K = 3);
- Monte Carlo estimators of the core (`softhard.risk_sweep`, fixed seeds,
  within 3 standard errors);
- the first-order expansion `L_τ − L_0 = c τ + O(τ²)` and hand-computed
  coefficients; the paper's Table 2 (TABLES.md) to the digits shown;
- central finite differences for gradients (1e-7 relative).
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from softhard import (
    Gaussian,
    LinearExperts,
    LinearRouter,
    LinearTarget,
    MLPRouter,
    MoE,
    StandardGaussian,
    Teacher,
    Uniform,
    risk_sweep,
)
from softhard.gaussian import (
    exact_ambiguity_mass,
    exact_boundary_mass,
    exact_gap_coefficient,
    exact_hard_risk,
    exact_risk_gap,
    exact_risk_sweep,
    exact_soft_risk,
    gaussian_interface_area,
    gaussian_interface_density,
    gaussian_slab_probability,
)
from softhard.gaussian._normal import _bvn_upper, _halfspace_moments, _quadrant_moments

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------


def _law(rng, d):
    """Anisotropic covariance and non-zero mean."""
    A = rng.normal(size=(d, d))
    cov = A @ A.T / d + 0.3 * np.eye(d)
    return rng.normal(size=d) * 0.5, cov


def _problem(seed, K=2, d=5):
    """A random student and three targets: same separator, other separator, linear."""
    rng = np.random.default_rng(seed)
    mean, cov = _law(rng, d)
    W, b = rng.normal(size=(K, d)), rng.normal(size=K) * 0.3
    B, c = rng.normal(size=(K, d)), rng.normal(size=K)
    model = MoE(LinearRouter(W, b), LinearExperts(B, c))
    Bt, ct = rng.normal(size=(K, d)), rng.normal(size=K)
    Wo, bo = rng.normal(size=(2, d)), rng.normal(size=2) * 0.3
    Bo, co = rng.normal(size=(2, d)), rng.normal(size=2)
    w, cw = rng.normal(size=d), 0.3
    targets = {
        "same": Teacher(LinearRouter(W, b), LinearExperts(Bt, ct), 0.2),
        "other": Teacher(LinearRouter(Wo, bo), LinearExperts(Bo, co), 0.2),
        "linear": LinearTarget(w, cw, 0.2),
    }
    return Gaussian(mean, cov), model, targets


def _np(tree):
    return jax.tree.map(np.asarray, tree)


# ----------------------------------------------------------------------------
# an independent reference for K = 2: scipy quad over s, truncated moments in t
# ----------------------------------------------------------------------------


def _reference_k2(law, model, target, tau, which):
    """`E[(Y − f(X))²]` (which = soft / hard) or the gap, by `scipy.integrate.quad`.

    Given the student score s, X is Gaussian (NumPy regression); given s, the
    teacher score t is Gaussian and the teacher's cells are half-lines in t,
    whose raw truncated moments are written out here. The outer integral over
    s is split at 0, at a geometric ladder of multiples of τ, and where the
    teacher's conditional mean vanishes.
    """
    mean, cov = np.asarray(law.mean), np.asarray(law.cov)
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    beta, b0 = W[0] - W[1], b[0] - b[1]
    ms, var_s = beta @ mean + b0, beta @ cov @ beta
    sd_s = math.sqrt(var_s)
    k = cov @ beta / var_s
    C1 = cov - np.outer(cov @ beta, cov @ beta) / var_s
    teacher = isinstance(target, Teacher)
    if teacher:
        Wt, bt = np.asarray(target.router.W), np.asarray(target.router.b)
        Bt, ct = np.asarray(target.experts.B), np.asarray(target.experts.c)
        gam, g0 = Wt[0] - Wt[1], bt[0] - bt[1]
        vt = gam @ C1 @ gam
        random_t = vt > 1e-12 * (gam @ cov @ gam)
        if random_t:
            h = C1 @ gam / vt
            C2 = C1 - np.outer(C1 @ gam, C1 @ gam) / vt
            sd_t = math.sqrt(vt)
    else:
        w, cw = np.asarray(target.w), float(target.c)

    def sq_error(s, p1):
        xm = mean + k * (s - ms)
        fw = p1 * B[0] + (1 - p1) * B[1]
        fc = p1 * c[0] + (1 - p1) * c[1]
        if not teacher:
            uw = w - fw
            return (uw @ xm + cw - fc) ** 2 + uw @ C1 @ uw
        mt = gam @ xm + g0
        total = 0.0
        for cell, side in ((0, 1.0), (1, -1.0)):
            uw, uc = Bt[cell] - fw, ct[cell] - fc
            alpha = uw @ xm + uc
            if not random_t:
                total += float(side * mt > 0) * (alpha**2 + uw @ C1 @ uw)
                continue
            # y = t − E[t | s] ~ N(0, vt); cell 1 is y > −mt, cell 2 is y < −mt
            a = -mt / sd_t
            P = special.ndtr(-side * a)
            dens = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
            Ey = side * sd_t * dens
            Ey2 = vt * (P + side * a * dens)
            slope, vres = uw @ h, uw @ C2 @ uw
            total += (alpha**2 + vres) * P + 2 * alpha * slope * Ey + slope**2 * Ey2
        return total

    def integrand(s):
        dens = math.exp(-0.5 * ((s - ms) / sd_s) ** 2) / (sd_s * math.sqrt(2 * math.pi))
        soft = sq_error(s, special.expit(s / tau)) if which in ("soft", "gap") else 0.0
        hard = sq_error(s, float(s > 0)) if which in ("hard", "gap") else 0.0
        return dens * {"soft": soft, "hard": hard, "gap": soft - hard}[which]

    lo, hi = ms - 12 * sd_s, ms + 12 * sd_s
    pts = {lo, hi, 0.0, ms}
    for j in range(9):
        for m in (1.0, 3.0):
            pts |= {m * tau * 10 ** (j / 2), -m * tau * 10 ** (j / 2)}
    if teacher:
        cross = gam @ cov @ beta
        if cross != 0:
            s0 = ms - (gam @ mean + g0) * var_s / cross
            pts |= {s0 + e for e in (0.0, -1e-6, 1e-6, -1e-3, 1e-3, -0.1, 0.1)}
    pts = sorted(p for p in pts if lo <= p <= hi)
    total = 0.0
    with warnings.catch_warnings():
        # QUADPACK may flag round-off at this tolerance; the comparison checks it
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        for a, z in zip(pts[:-1], pts[1:]):
            total += integrate.quad(integrand, a, z, epsabs=0.0, epsrel=1e-12, limit=200)[0]
    noise = float(target.noise_std) ** 2 if which != "gap" else 0.0
    return total + noise


# ----------------------------------------------------------------------------
# closed forms of Example 3.8
# ----------------------------------------------------------------------------


def test_slab_probability_matches_normal_cdf(rng):
    mean, cov = _law(rng, 4)
    beta, b = rng.normal(size=4), 0.7
    m, sd = beta @ mean + b, math.sqrt(beta @ cov @ beta)
    r = np.array([0.0, 1e-3, 0.5, 3.0])
    got = gaussian_slab_probability(beta, b, mean, cov, r)
    want = stats.norm.cdf((r - m) / sd) - stats.norm.cdf((-r - m) / sd)  # (3.11)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-16)
    # far in either tail one of the two difference forms cancels; ours must not
    for shift in (12.0, -12.0):
        m_far = beta @ mean + shift * sd
        far = gaussian_slab_probability(beta, shift * sd, mean, cov, 0.5)
        lo, hi = (-0.5 - m_far) / sd, (0.5 - m_far) / sd
        want_far = (
            stats.norm.cdf(hi) - stats.norm.cdf(lo)
            if hi < 0
            else stats.norm.sf(lo) - stats.norm.sf(hi)
        )
        assert want_far > 0
        np.testing.assert_allclose(far, want_far, rtol=1e-10)


def test_interface_density_is_the_score_density_and_the_slab_slope(rng):
    mean, cov = _law(rng, 4)
    beta, b = rng.normal(size=4), -0.4
    m, sd = beta @ mean + b, math.sqrt(beta @ cov @ beta)
    G0 = float(gaussian_interface_density(beta, b, mean, cov))
    assert G0 == pytest.approx(stats.norm.pdf(0.0, m, sd), rel=1e-13)  # (3.14)
    # (3.12): P(|s| ≤ r) = 2 r G(0) + O(r³)
    for r in (1e-2, 1e-3):
        slab = float(gaussian_slab_probability(beta, b, mean, cov, r))
        assert abs(slab / (2 * r) - G0) <= 0.1 * r


def test_interface_area_is_a_line_integral_of_the_density(rng):
    # d = 2: integrate the Gaussian density along the line βᵀx + b = 0 by arc length
    mean, cov = _law(rng, 2)
    beta, b = np.array([1.3, -0.6]), 0.25
    x0 = -b * beta / (beta @ beta)
    t_dir = np.array([-beta[1], beta[0]]) / np.linalg.norm(beta)
    pdf = stats.multivariate_normal(mean, cov).pdf
    line, _ = integrate.quad(lambda t: pdf(x0 + t * t_dir), -np.inf, np.inf, epsabs=1e-14)
    got = float(gaussian_interface_area(beta, b, mean, cov))
    assert got == pytest.approx(line, rel=1e-9)
    dens = float(gaussian_interface_density(beta, b, mean, cov))
    assert got == pytest.approx(np.linalg.norm(beta) * dens, rel=1e-14)


# ----------------------------------------------------------------------------
# building blocks: the bivariate normal and the teacher-cell moments
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0.0, 0.2, -0.6, 0.8, 0.93, -0.97, 0.9999, 1.0, -1.0])
def test_bivariate_normal_upper_orthant(r):
    hs = np.array([0.3, 1.5, -2.0, 3.0, -0.7, 0.0])
    ks = np.array([-0.2, 2.0, -1.0, -3.0, -0.7, 0.0])
    got = np.asarray(_bvn_upper(jnp.asarray(hs), jnp.asarray(ks), jnp.float64(r)))
    if abs(r) < 1:
        law = stats.multivariate_normal([0.0, 0.0], [[1.0, r], [r, 1.0]])
        want = np.array([law.cdf([-h, -k]) for h, k in zip(hs, ks)])
    elif r == 1:  # X = Y
        want = stats.norm.sf(np.maximum(hs, ks))
    else:  # Y = −X: P(X > h, X < −k)
        want = np.maximum(stats.norm.cdf(-ks) - stats.norm.cdf(hs), 0.0)
    np.testing.assert_allclose(got, want, atol=2e-15)


def test_quadrant_moments_match_dblquad():
    # A = {0.4 + ℓ_aᵀξ ≥ 0} ∩ {−0.3 + ℓ_bᵀξ ≥ 0}: for fixed ξ_1 both constraints bound ξ_2
    # from below, so dblquad integrates a smooth integrand between the boundaries
    ell_a, ell_b = np.array([1.2, 0.5]), np.array([-0.3, 0.9])
    m_a, m_b = 0.4, -0.3

    def lower(x):
        return max(-(m_a + ell_a[0] * x) / ell_a[1], -(m_b + ell_b[0] * x) / ell_b[1])

    kink = -(m_a / ell_a[1] - m_b / ell_b[1]) / (ell_a[0] / ell_a[1] - ell_b[0] / ell_b[1])

    def moment(f):
        def g(y, x):
            return f(x, y) * math.exp(-0.5 * (x * x + y * y)) / (2 * math.pi)

        return sum(
            integrate.dblquad(g, lo, hi, lower, 12.0, epsabs=1e-13, epsrel=1e-12)[0]
            for lo, hi in ((-12.0, kink), (kink, 12.0))
        )

    got = _quadrant_moments(
        jnp.array([m_a]), jnp.asarray(ell_a), jnp.array([m_b]), jnp.asarray(ell_b)
    )
    assert float(got.p[0]) == pytest.approx(moment(lambda x, y: 1.0), abs=1e-11)
    assert float(got.m1[0][0]) == pytest.approx(moment(lambda x, y: x), abs=1e-11)
    assert float(got.m1[1][0]) == pytest.approx(moment(lambda x, y: y), abs=1e-11)
    assert float(got.m2[0][0][0]) == pytest.approx(moment(lambda x, y: x * x), abs=1e-11)
    assert float(got.m2[0][1][0]) == pytest.approx(moment(lambda x, y: x * y), abs=1e-11)
    assert float(got.m2[1][0][0]) == float(got.m2[0][1][0])
    assert float(got.m2[1][1][0]) == pytest.approx(moment(lambda x, y: y * y), abs=1e-11)


def test_degenerate_constraints_reduce_to_half_planes():
    quadrant = jax.jit(_quadrant_moments)
    # ℓ_b = 0: the second constraint is the indicator of m_b ≥ 0
    m_a = jnp.array([0.3, -0.8])
    ell_a = jnp.array([0.6, -1.1])
    half = _halfspace_moments(m_a, ell_a)
    for m_b, ind in ((0.5, 1.0), (-0.5, 0.0)):
        q = quadrant(m_a, ell_a, jnp.full(2, m_b), jnp.zeros(2))
        np.testing.assert_allclose(q.p, ind * half.p, atol=1e-15)
        np.testing.assert_allclose(q.m2[0][1], ind * half.m2[0][1], atol=1e-15)
    # parallel constraints (ρ = 1): the intersection is the stricter half-plane
    q = quadrant(m_a, ell_a, m_a - 0.2, 2.0 * ell_a)
    stricter = _halfspace_moments(jnp.minimum(m_a, (m_a - 0.2) / 2.0), ell_a)
    np.testing.assert_allclose(q.p, stricter.p, atol=1e-14)
    np.testing.assert_allclose(q.m1[0], stricter.m1[0], atol=1e-14)
    np.testing.assert_allclose(q.m2[1][1], stricter.m2[1][1], atol=1e-14)


# ----------------------------------------------------------------------------
# K = 2 risks against scipy quadrature
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["same", "other", "linear"])
def test_k2_risks_match_scipy_quadrature(name):
    law, model, targets = _problem(11)
    target = targets[name]
    taus = jnp.array([1e-3, 0.1])
    got = exact_risk_sweep(model, target, law, taus)
    for i, tau in enumerate(np.asarray(taus)):
        want = _reference_k2(law, model, target, tau, "soft")
        assert float(got.soft[i]) == pytest.approx(want, rel=1e-9)
    want_hard = _reference_k2(law, model, target, 0.1, "hard")
    assert float(got.hard) == pytest.approx(want_hard, rel=1e-9)
    want_gap = _reference_k2(law, model, target, 1e-3, "gap")
    assert float(got.gap[0]) == pytest.approx(want_gap, rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["same", "other", "linear"])
@pytest.mark.parametrize("tau", [1e-4, 1e-3, 1e-2, 1.0, 10.0])
def test_k2_risks_match_scipy_quadrature_wide(name, tau):
    law, model, targets = _problem(12)
    target = targets[name]
    for which, fn in (
        ("soft", lambda: exact_soft_risk(model, target, law, tau)),
        ("gap", lambda: exact_risk_gap(model, target, law, tau)),
    ):
        assert float(fn()) == pytest.approx(_reference_k2(law, model, target, tau, which), rel=1e-9)


def test_k2_dblquad_cross_check_of_the_reference():
    # the 2-D integral over (s, t) with scipy.stats.multivariate_normal, independent of
    # the truncated-moment algebra in _reference_k2 (teacher with another separator)
    law, model, targets = _problem(13, d=4)
    target = targets["other"]
    mean, cov = np.asarray(law.mean), np.asarray(law.cov)
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    Wt, bt = np.asarray(target.router.W), np.asarray(target.router.b)
    Bt, ct = np.asarray(target.experts.B), np.asarray(target.experts.c)
    A = np.stack([W[0] - W[1], Wt[0] - Wt[1]])
    a0 = np.array([b[0] - b[1], bt[0] - bt[1]])
    S = A @ cov @ A.T
    nu = A @ mean + a0
    K = cov @ A.T @ np.linalg.inv(S)
    C = cov - K @ A @ cov
    pdf = stats.multivariate_normal(nu, S).pdf
    tau = 0.3

    def integrand(t, s):
        xm = mean + K @ (np.array([s, t]) - nu)
        p1 = special.expit(s / tau)
        uw = Bt[0 if t > 0 else 1] - p1 * B[0] - (1 - p1) * B[1]
        uc = ct[0 if t > 0 else 1] - p1 * c[0] - (1 - p1) * c[1]
        return ((uw @ xm + uc) ** 2 + uw @ C @ uw) * pdf([s, t])

    L = 9.0 * np.sqrt(np.diag(S))
    total = 0.0
    for s_lo, s_hi in ((nu[0] - L[0], 0.0), (0.0, nu[0] + L[0])):
        for t_lo, t_hi in ((nu[1] - L[1], 0.0), (0.0, nu[1] + L[1])):
            total += integrate.dblquad(integrand, s_lo, s_hi, t_lo, t_hi, epsabs=1e-9)[0]
    total += float(target.noise_std) ** 2
    assert float(exact_soft_risk(model, target, law, tau)) == pytest.approx(total, rel=1e-7)
    assert _reference_k2(law, model, target, tau, "soft") == pytest.approx(total, rel=1e-7)


def test_public_functions_agree_with_the_sweep():
    law, model, targets = _problem(14)
    target = targets["other"]
    taus = jnp.array([0.02, 0.5])
    sweep = exact_risk_sweep(model, target, law, taus)
    for i, tau in enumerate([0.02, 0.5]):
        assert float(exact_soft_risk(model, target, law, tau)) == pytest.approx(
            float(sweep.soft[i]), rel=1e-13
        )
        assert float(exact_risk_gap(model, target, law, tau)) == pytest.approx(
            float(sweep.gap[i]), rel=1e-12
        )
        assert float(sweep.gap[i]) == pytest.approx(float(sweep.soft[i] - sweep.hard), rel=1e-10)
    assert float(exact_hard_risk(model, target, law)) == pytest.approx(float(sweep.hard), rel=1e-13)


def test_jit_and_vmap_over_tau():
    law, model, targets = _problem(15)
    target = targets["same"]
    taus = jnp.array([1e-3, 0.05, 2.0])
    swept = jax.vmap(lambda t: exact_soft_risk(model, target, law, t))(taus)
    jitted = jax.jit(lambda m, t: exact_soft_risk(m, target, law, t))
    for i in range(3):
        direct = exact_soft_risk(model, target, law, float(taus[i]))
        assert float(swept[i]) == pytest.approx(float(direct), rel=1e-13)
        assert float(jitted(model, taus[i])) == pytest.approx(float(direct), rel=1e-13)


def test_float32_path():
    law, model, targets = _problem(16)
    target = targets["other"]
    f32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), (law, model, target))
    got = exact_soft_risk(f32[1], f32[2], f32[0], jnp.float32(0.05))
    assert got.dtype == jnp.float32
    want = exact_soft_risk(model, target, law, 0.05)
    assert float(got) == pytest.approx(float(want), rel=2e-5)


# ----------------------------------------------------------------------------
# Monte Carlo estimators of the core against the exact values
# ----------------------------------------------------------------------------


def _assert_mc_agrees(model, target, law, taus, n, seed, n_se=3.0):
    x, y = target.sample(jax.random.key(seed), law, n)
    mc = risk_sweep(model, x, y, taus)
    exact = exact_risk_sweep(model, target, law, taus)
    for est, val in ((mc.soft, exact.soft), (mc.hard, exact.hard), (mc.gap, exact.gap)):
        z = np.abs(np.asarray(est.value) - np.asarray(val)) / np.asarray(est.stderr)
        assert np.all(z <= n_se), (np.asarray(val), np.asarray(est.value), z)


@pytest.mark.parametrize("name", ["same", "other", "linear"])
def test_risk_sweep_agrees_with_exact_k2(name):
    # N = 2^17 samples, seed 7, within 3 standard errors
    law, model, targets = _problem(17)
    _assert_mc_agrees(model, targets[name], law, jnp.array([1e-3, 0.1, 1.0]), 1 << 17, 7)


def test_risk_sweep_agrees_with_exact_k3():
    # K = 3 student, two-expert teacher with another router; N = 2^17, seed 8, 3 s.e.
    law, model, _ = _problem(18, K=3, d=4)
    rng = np.random.default_rng(0)
    target = Teacher(
        LinearRouter(rng.normal(size=(2, 4)), rng.normal(size=2)),
        LinearExperts(rng.normal(size=(2, 4)), rng.normal(size=2)),
        0.3,
    )
    _assert_mc_agrees(model, target, law, jnp.array([1e-3, 0.1, 1.0]), 1 << 17, 8)


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["same router", "other router", "linear"])
def test_risk_sweep_agrees_with_exact_k3_other_targets(teacher):
    # three-expert teachers (the student's router, another router) and a linear target;
    # N = 2^18, seed 9, within 3 standard errors
    law, model, _ = _problem(19, K=3, d=4)
    rng = np.random.default_rng(1)
    experts = LinearExperts(rng.normal(size=(3, 4)), rng.normal(size=3))
    if teacher == "same router":
        target = Teacher(model.router, experts, 0.3)
    elif teacher == "other router":
        target = Teacher(LinearRouter(rng.normal(size=(3, 4)), rng.normal(size=3)), experts, 0.3)
    else:
        target = LinearTarget(rng.normal(size=4), 0.5, 0.3)
    _assert_mc_agrees(model, target, law, jnp.array([1e-3, 0.1, 1.0]), 1 << 18, 9)


# ----------------------------------------------------------------------------
# the first-order gap coefficient
# ----------------------------------------------------------------------------


def _conditional_at_interface(law, model):
    """Mean and covariance of X given s(X) = 0 (K = 2), and the density G(0)."""
    mean, cov = np.asarray(law.mean), np.asarray(law.cov)
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    beta, b0 = W[0] - W[1], b[0] - b[1]
    var = beta @ cov @ beta
    xm = mean + cov @ beta * (0.0 - beta @ mean - b0) / var
    C = cov - np.outer(cov @ beta, cov @ beta) / var
    G0 = stats.norm.pdf(0.0, beta @ mean + b0, math.sqrt(var))
    return xm, C, G0


def _hand_coefficient(law, model, target):
    """`G(0) E[2 ln2 Δf J − Δf² | s = 0]` with J from the teacher when it shares the router."""
    xm, C, G0 = _conditional_at_interface(law, model)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    df_w, df_c = B[0] - B[1], c[0] - c[1]
    e_df2 = (df_w @ xm + df_c) ** 2 + df_w @ C @ df_w
    coef = -e_df2
    if isinstance(target, Teacher) and np.array_equal(target.router.W, model.router.W):
        Bt, ct = np.asarray(target.experts.B), np.asarray(target.experts.c)
        j_w, j_c = Bt[0] - Bt[1], ct[0] - ct[1]
        coef += 2 * LN2 * ((df_w @ xm + df_c) * (j_w @ xm + j_c) + df_w @ C @ j_w)
    return G0 * coef


def _assert_gap_over_tau_tends_to(model, target, law, c, slack, final_slack=None):
    """Exact `gap/τ → c` with an O(τ) remainder over τ = 1e-2, 1e-3, 1e-4.

    The error `|gap/τ − c|` divided by τ never grows (up to 20 % and `slack`),
    and with `final_slack` it has shrunk a hundredfold over the two decades.
    """
    taus = np.array([1e-2, 1e-3, 1e-4])
    gaps = np.asarray(exact_risk_sweep(model, target, law, jnp.asarray(taus)).gap)
    err = np.abs(gaps / taus - c)
    assert np.all(err / taus <= 1.2 * err[0] / taus[0] + slack)
    if final_slack is not None:
        assert err[2] <= 1.2e-2 * err[0] + final_slack


@pytest.mark.parametrize("name", ["realizable", "same", "other", "linear"])
def test_gap_over_tau_tends_to_the_coefficient_linearly(name):
    law, model, targets = _problem(20)
    target = targets.get(name) or Teacher(model.router, model.experts)
    c = float(exact_gap_coefficient(model, target, law))
    assert c == pytest.approx(_hand_coefficient(law, model, target), rel=1e-12)
    if name == "realizable":
        xm, C, G0 = _conditional_at_interface(law, model)
        dfw = np.asarray(model.experts.B[0] - model.experts.B[1])
        dfc = float(model.experts.c[0] - model.experts.c[1])
        e_df2 = (dfw @ xm + dfc) ** 2 + dfw @ C @ dfw
        assert c == pytest.approx((2 * LN2 - 1) * G0 * e_df2, rel=1e-12)  # §3 [X]
    # O(τ) remainder: the error shrinks (at least) linearly with τ
    _assert_gap_over_tau_tends_to(model, target, law, c, 1e-6, 1e-9)


def test_gap_coefficient_k3_linear_target():
    law, model, _ = _problem(21, K=3, d=4)
    target = LinearTarget(np.random.default_rng(2).normal(size=4), 0.1)
    c = float(exact_gap_coefficient(model, target, law))
    _assert_gap_over_tau_tends_to(model, target, law, c, 1e-5, 1e-7)


@pytest.mark.slow
def test_gap_coefficient_k3_teacher_with_relabelled_router():
    # a teacher whose router is the student's scaled by 2 with its experts relabelled:
    # the interfaces coincide with λ = 2, J comes from the teacher
    law, model, _ = _problem(22, K=3, d=4)
    perm = [2, 0, 1]
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    target = Teacher(LinearRouter(2 * W[perm], 2 * b[perm]), LinearExperts(B[perm], c[perm]))
    coef = float(exact_gap_coefficient(model, target, law))
    assert coef > 0  # realizable: (2 ln 2 − 1) Σ G_ij E[Δf_ij²] > 0
    same = float(exact_gap_coefficient(model, Teacher(model.router, model.experts), law))
    assert coef == pytest.approx(same, rel=1e-12)
    _assert_gap_over_tau_tends_to(model, target, law, coef, 1e-5)


# ----------------------------------------------------------------------------
# Table 2 of the paper (TABLES.md), bracketed exact values
# ----------------------------------------------------------------------------


TABLE2 = [  # offset b, boundary mass M(2τ), risk gap L_τ − L_0
    (0.00, "0.1585", "0.06139"),
    (0.50, "0.1401", "0.05423"),
    (1.00, "0.0968", "0.03739"),
    (1.50, "0.0522", "0.02011"),
    (2.00, "0.0220", "0.00844"),
    (2.25, "0.0130", "0.00499"),
]


@pytest.mark.parametrize("offset, mass, gap", TABLE2)
def test_table2_bracketed_values(offset, mass, gap):
    # X ~ N(0, I_3), s = uᵀx − b with u = e_1, f_1 − f_2 = vᵀx with v = 2 e_2 ⊥ u,
    # realizable teacher (the hard predictor of the same router), τ = 0.1
    tau = 0.1
    router = LinearRouter(W=[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], b=[-offset, 0.0])
    experts = LinearExperts(B=[[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]], c=[0.0, 0.0])
    law = StandardGaussian(3)
    got_mass = float(exact_boundary_mass(router, law, 2 * tau))
    got_gap = float(exact_risk_gap(MoE(router, experts), Teacher(router, experts), law, tau))
    assert f"{got_mass:.4f}" == mass
    assert f"{got_gap:.5f}" == gap


# ----------------------------------------------------------------------------
# gradients against central finite differences
# ----------------------------------------------------------------------------


def _check_gradient(model, target, law, tau, h=1e-5, rtol=1e-7):
    flat, unravel = jax.flatten_util.ravel_pytree(model)

    def f(v):
        return exact_soft_risk(unravel(v), target, law, tau)

    grad = np.asarray(jax.grad(f)(flat))
    fj = jax.jit(f)
    fd = np.array(
        [(fj(flat.at[i].add(h)) - fj(flat.at[i].add(-h))) / (2 * h) for i in range(flat.size)]
    )
    assert np.max(np.abs(grad - fd)) <= rtol * np.max(np.abs(fd)), (grad, fd)


@pytest.mark.parametrize("name", ["realizable", "same", "other", "linear"])
def test_soft_risk_gradient_matches_finite_differences_k2(name):
    # "realizable" and "same" differentiate at a teacher that shares the router
    law, model, targets = _problem(23, d=4)
    target = targets.get(name) or Teacher(model.router, model.experts)
    _check_gradient(model, target, law, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("teacher_k", [0, 2, 3])
def test_soft_risk_gradient_matches_finite_differences_k3(teacher_k):
    law, model, _ = _problem(24, K=3, d=3)
    rng = np.random.default_rng(3)
    if teacher_k == 3:
        target = Teacher(model.router, LinearExperts(rng.normal(size=(3, 3)), rng.normal(size=3)))
    elif teacher_k == 2:
        target = Teacher(
            LinearRouter(rng.normal(size=(2, 3)), rng.normal(size=2)),
            LinearExperts(rng.normal(size=(2, 3)), rng.normal(size=2)),
        )
    else:
        target = LinearTarget(rng.normal(size=3), 0.2)
    # h = 1e-4: the K = 3 values carry ~1e-11 of quadrature error that moves when a
    # teacher line splits off a student ray, which a step of 1e-5 would amplify to 1e-6
    _check_gradient(model, target, law, 0.05, h=1e-4)


# ----------------------------------------------------------------------------
# boundary and ambiguity masses
# ----------------------------------------------------------------------------


def test_k2_masses_are_slab_probabilities():
    law, model, _ = _problem(25)
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    beta, b0 = W[0] - W[1], b[0] - b[1]
    w = jnp.array([0.0, 0.01, 0.3, 2.0])
    slab = gaussian_slab_probability(beta, b0, law.mean, law.cov, w)
    for kind in ("top2", "pairwise"):
        np.testing.assert_allclose(
            exact_boundary_mass(model.router, law, w, kind), slab, rtol=1e-13
        )
    tau, delta = 0.2, 0.1
    amb = exact_ambiguity_mass(model.router, law, tau, delta)
    want = gaussian_slab_probability(beta, b0, law.mean, law.cov, tau * math.log(9.0))
    assert float(amb) == pytest.approx(float(want), rel=1e-13)  # Remark 5.4


def _k3_orthant_masses(law, router, w):
    """`P(Δ > w)` and `P(δ > w)` for K = 3 as sums of bivariate normal orthants."""
    mean, cov = np.asarray(law.mean), np.asarray(law.cov)
    W, b = np.asarray(router.W), np.asarray(router.b)

    def upper(rows, offs):
        # P(rows x + offs > w for both rows)
        A = np.stack(rows)
        m, S = A @ mean + np.array(offs), A @ cov @ A.T
        return stats.multivariate_normal(-m, S).cdf([-w, -w])

    top = sum(
        upper([W[k] - W[i], W[k] - W[j]], [b[k] - b[i], b[k] - b[j]])
        for k, i, j in ((0, 1, 2), (1, 0, 2), (2, 0, 1))
    )
    pair = sum(
        upper([W[p] - W[q], W[q] - W[r]], [b[p] - b[q], b[q] - b[r]])
        for p, q, r in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
    )
    return top, pair


def test_k3_boundary_masses_match_bivariate_orthants():
    law, model, _ = _problem(26, K=3, d=4)
    w = np.array([0.02, 0.3, 1.5])
    top = exact_boundary_mass(model.router, law, jnp.asarray(w), "top2")
    pair = exact_boundary_mass(model.router, law, jnp.asarray(w), "pairwise")
    for i, wi in enumerate(w):
        p_top, p_pair = _k3_orthant_masses(law, model.router, wi)
        assert float(top[i]) == pytest.approx(1.0 - p_top, abs=1e-10)  # (2.13)
        assert float(pair[i]) == pytest.approx(1.0 - p_pair, abs=1e-10)  # (2.14)
        assert float(top[i]) <= float(pair[i])


def test_k3_ambiguity_mass_against_monte_carlo_and_bounds():
    law, model, _ = _problem(27, K=3, d=4)
    tau, delta = 0.3, 0.1
    m = float(exact_ambiguity_mass(model.router, law, tau, delta))
    # Monte Carlo: N = 2^20, seed 10, within 3 standard errors
    x = np.asarray(law.sample(jax.random.key(10), 1 << 20))
    a = x @ np.asarray(model.router.W).T + np.asarray(model.router.b)
    top = np.max(special.softmax(a / tau, axis=1), axis=1)
    p = np.mean(top < 1 - delta)
    assert abs(m - p) <= 3 * math.sqrt(p * (1 - p) / x.shape[0])
    # (5.6): P(Δ < w) ≤ m_δ(τ) ≤ P(Δ < w̄), w = τ log((1−δ)/δ), w̄ = τ log((K−1)(1−δ)/δ)
    lo = float(exact_boundary_mass(model.router, law, tau * math.log((1 - delta) / delta)))
    hi = float(exact_boundary_mass(model.router, law, tau * math.log(2 * (1 - delta) / delta)))
    assert lo <= m <= hi


def test_monte_carlo_estimators_of_core_and_geometry_agree_with_exact_values():
    """`boundary_mass`, `ambiguity_mass`, `level_set_density` and `gap_coefficient`.

    K = 3 student with a noisy linear target (interfaces with a jump-free
    target, so the coefficient is negative) and a K = 2 problem with a teacher
    on another separator; N = 2^19, seed 11, each within 3 of its stderrs.
    """
    from softhard import (
        ambiguity_mass,
        boundary_mass,
        gap_coefficient,
        level_set_density,
        logits,
    )

    law, model, _ = _problem(29, K=3, d=4)
    rng = np.random.default_rng(3)
    target = LinearTarget(rng.normal(size=4), 0.2, 0.3)
    x, y = target.sample(jax.random.key(11), law, 1 << 19)
    a = logits(model.router, x)
    w = jnp.array([0.05, 0.4, 1.5])
    for kind in ("top2", "pairwise"):
        mc = boundary_mass(a, w, kind=kind)
        ex = np.asarray(exact_boundary_mass(model.router, law, w, kind))
        assert np.all(np.abs(np.asarray(mc.value) - ex) <= 3 * np.asarray(mc.stderr)), kind
    mc = ambiguity_mass(a, 0.3, 0.1)
    ex = float(exact_ambiguity_mass(model.router, law, 0.3, 0.1))
    assert abs(float(mc.value) - ex) <= 3 * float(mc.stderr)
    mc = gap_coefficient(model, x, y)
    ex = float(exact_gap_coefficient(model, target, law))
    assert ex < 0
    assert abs(float(mc.value) - ex) <= 3 * float(mc.stderr), (mc, ex)

    law2, model2, targets2 = _problem(30, d=4)
    x2, y2 = targets2["other"].sample(jax.random.key(12), law2, 1 << 19)
    W, b = np.asarray(model2.router.W), np.asarray(model2.router.b)
    beta, b0 = W[0] - W[1], b[0] - b[1]
    mc = level_set_density(lambda z: jnp.dot(beta, z) + b0, x2)
    ex = float(gaussian_interface_density(beta, b0, law2.mean, law2.cov))
    assert abs(float(mc.value) - ex) <= 3 * float(mc.stderr)
    mc = gap_coefficient(model2, x2, y2)
    ex = float(exact_gap_coefficient(model2, targets2["other"], law2))
    assert abs(float(mc.value) - ex) <= 3 * float(mc.stderr), (mc, ex)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    law, model, targets = _problem(28, d=4)
    teacher = targets["other"]
    with pytest.raises(ValueError, match="`tau`"):
        exact_soft_risk(model, teacher, law, 0.0)
    with pytest.raises(ValueError, match="`tau`"):
        exact_risk_gap(model, teacher, law, -1.0)
    with pytest.raises(ValueError, match="`taus`"):
        exact_risk_sweep(model, teacher, law, jnp.array([0.1, 0.0]))
    with pytest.raises(ValueError, match="`law`"):
        exact_soft_risk(model, teacher, Uniform(-np.ones(4), np.ones(4)), 0.1)
    with pytest.raises(ValueError, match="`law`"):
        exact_hard_risk(model, teacher, StandardGaussian(3))
    mlp = MLPRouter(np.ones((3, 4)), np.zeros(3), np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="`model.router`"):
        exact_soft_risk(MoE(mlp, model.experts), teacher, law, 0.1)
    with pytest.raises(ValueError, match="`teacher.w`"):
        exact_soft_risk(model, LinearTarget(np.ones(3)), law, 0.1)
    with pytest.raises(ValueError, match="`teacher.router`"):
        exact_soft_risk(model, Teacher(mlp, teacher.experts), law, 0.1)
    with pytest.raises(ValueError, match="`teacher`"):
        exact_soft_risk(model, "y", law, 0.1)
    wide = MoE(
        LinearRouter(np.ones((4, 4)), np.zeros(4)), LinearExperts(np.ones((4, 4)), np.zeros(4))
    )
    with pytest.raises(ValueError, match="`model`"):
        exact_soft_risk(wide, teacher, law, 0.1)
    with pytest.raises(ValueError, match="`model`"):  # parallel logit differences
        flat = LinearRouter(np.array([[1.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 0]]), np.zeros(3))
        exact_soft_risk(MoE(flat, LinearExperts(np.ones((3, 4)), np.zeros(3))), teacher, law, 0.1)
    with pytest.raises(ValueError, match="`w`"):
        exact_boundary_mass(model.router, law, -0.1)
    with pytest.raises(ValueError, match="`kind`"):
        exact_boundary_mass(model.router, law, 0.1, kind="median")
    with pytest.raises(ValueError, match="`router`"):
        exact_boundary_mass(mlp, law, 0.1)
    with pytest.raises(ValueError, match="`delta`"):
        exact_ambiguity_mass(model.router, law, 0.1, 0.7)
    with pytest.raises(ValueError, match="`coincidence_tol`"):
        exact_gap_coefficient(model, teacher, law, coincidence_tol=-1.0)
    with pytest.raises(ValueError, match="`cov`"):
        gaussian_interface_density(np.ones(3), 0.0, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="`r`"):
        gaussian_slab_probability(np.ones(2), 0.0, np.zeros(2), np.eye(2), -1.0)


@pytest.mark.slow
def test_k2_student_with_three_expert_teacher():
    # K* = 3 teacher whose experts 1, 2 share the student's interface where expert 3 does
    # not win: J = f*_1 − f*_2 on part of S only. Monte Carlo (N = 2^19, seed 3, 3 s.e.)
    # and the O(τ) approach of gap/τ to the coefficient.
    law, model, _ = _problem(29, d=4)
    rng = np.random.default_rng(4)
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    router = LinearRouter(np.stack([W[0], W[1], rng.normal(size=4)]), np.array([b[0], b[1], -1.0]))
    target = Teacher(router, LinearExperts(rng.normal(size=(3, 4)), rng.normal(size=3)), 0.2)
    _assert_mc_agrees(model, target, law, jnp.array([1e-3, 0.1, 1.0]), 1 << 19, 3)
    c = float(exact_gap_coefficient(model, target, law))
    _assert_gap_over_tau_tends_to(model, target, law, c, 1e-6, 1e-9)
