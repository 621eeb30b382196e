"""Level-set densities, coarea surface integrals and gap coefficients (§3, EQUATIONS.md [X]).

References are independent of the estimators: Example 3.8's closed forms
(3.11)/(3.14) written here with scipy.stats.norm, the chi-square law of
|X|² for a spherical interface, and scipy 1-D quadrature of (L_τ − L_0)/τ.
Monte Carlo checks use fixed seeds and state the number of stderrs allowed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

import softhard as sh
from softhard.coarea import (
    ambiguity_coefficient,
    gap_coefficient,
    kernel_bandwidth,
    kernel_smoothed_mean,
    level_set_density,
    pairwise_level_set_densities,
    surface_integral,
)

N_BIG = 2**20
N_SMALL = 2**15  # one other sample size (N_BIG/32), so compiled estimators are reused
TWO_LN2 = 2 * math.log(2)


# ----------------------------------------------------------------------------
# Example 3.8: linear score, anisotropic Gaussian input (d = 3)
# ----------------------------------------------------------------------------

MU = np.array([0.4, -0.3, 0.8])
_A = np.array([[1.1, 0.3, 0.0], [0.2, 0.7, 0.1], [-0.3, 0.4, 1.3]])
COV = _A @ _A.T
BETA = np.array([0.9, -1.2, 0.5])
OFFSET = -0.5


def _example_38():
    m = BETA @ MU + OFFSET
    sig = math.sqrt(BETA @ COV @ BETA)
    G = stats.norm.pdf(m / sig) / sig  # (3.14)
    return m, sig, G


@pytest.fixture(scope="module")
def gaussian_sample():
    law = sh.Gaussian(mean=MU, cov=COV)
    return law.sample(jax.random.key(38), N_BIG)


def _linear_score(v):
    return jnp.dot(jnp.asarray(BETA), v) + OFFSET


def test_example_38_level_set_density_and_surface_integrals(gaussian_sample):
    # N = 2^20, seed 38: each estimate within 1 % and within 3 reported stderrs
    x = gaussian_sample
    m, sig, G = _example_38()
    H = np.linalg.norm(BETA) * G  # ∫_{s=0} p dH^{d-1} = |β| φ(m/σ_s)/σ_s
    assert 0.3 < abs(m / sig) < 1.0  # away from φ's inflection: the bias term matters
    for est, ref in [
        (level_set_density(_linear_score, x), G),
        (surface_integral(_linear_score, x), G),
        (surface_integral(_linear_score, x, measure="hausdorff"), H),
    ]:
        assert est.value.shape == () and est.stderr.shape == ()
        assert abs(float(est.value) / ref - 1) < 0.01
        assert abs(float(est.value) - ref) < 3 * float(est.stderr)
        assert float(est.stderr) < 0.01 * ref


def test_example_38_surface_integral_with_integrand(gaussian_sample):
    # ∫_{s=0} x_0 p/|∇s| = G(0) E[X_0 | s(X) = 0], E[X | s = 0] = μ + Σβ (0 − m)/σ_s²
    x = gaussian_sample
    m, sig, G = _example_38()
    cond = MU + COV @ BETA * (-m) / sig**2
    est = surface_integral(_linear_score, x, g=lambda v: 2.0 + v[0])
    ref = G * (2.0 + cond[0])
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.02
    # a vector-valued integrand gives every coordinate at once: g = x -> [d]
    vec = surface_integral(_linear_score, x, g=lambda v: v, measure="hausdorff")
    assert vec.value.shape == (3,)
    np.testing.assert_array_less(
        np.abs(vec.value - np.linalg.norm(BETA) * G * cond), 3 * vec.stderr
    )


def test_level_set_density_at_nonzero_level(gaussian_sample):
    x = gaussian_sample
    m, sig, _ = _example_38()
    t = 0.7
    est = level_set_density(_linear_score, x, t)
    ref = stats.norm.pdf((t - m) / sig) / sig
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.01


# ----------------------------------------------------------------------------
# a non-linear router: spherical interface s(x) = |x|² − r²
# ----------------------------------------------------------------------------


def test_spherical_interface_surface_integrals():
    # X ~ N(0, I_3), N = 2^20, seed 7. G(0) = χ²_3 density at r²; ∫_{|x|=r} p dH² = p(r) 4π r²
    d, r = 3, 1.2
    x = jax.random.normal(jax.random.key(7), (N_BIG, d))

    def score(v):
        return jnp.sum(v * v) - r * r

    coarea_ref = stats.chi2.pdf(r * r, d)
    area = 2 * math.pi ** (d / 2) * r ** (d - 1) / special.gamma(d / 2)
    hausdorff_ref = (2 * math.pi) ** (-d / 2) * math.exp(-r * r / 2) * area
    assert coarea_ref == pytest.approx(hausdorff_ref / (2 * r), rel=1e-12)  # |∇s| = 2r
    co = surface_integral(score, x)
    ha = surface_integral(score, x, measure="hausdorff")
    for est, ref in [(co, coarea_ref), (ha, hausdorff_ref)]:
        assert abs(float(est.value) / ref - 1) < 0.02
        assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    # an integrand: ∫_{|x|=r} x_0² p dH² = p(r) area r²/d
    g = surface_integral(score, x, g=lambda v: v[0] ** 2, measure="hausdorff")
    assert abs(float(g.value) / (hausdorff_ref * r * r / d) - 1) < 0.02


def test_mlp_score_matches_its_linear_equivalent():
    # an MLP router with identity activation is linear: same G(0) as (3.14)
    rng = np.random.default_rng(3)
    W1, b1 = rng.normal(size=(4, 2)), rng.normal(size=4)
    W2, b2 = rng.normal(size=(2, 4)), rng.normal(size=2)
    router = sh.MLPRouter(W1, b1, W2, b2, activation=lambda u: u)
    beta = (W2[0] - W2[1]) @ W1
    off = (W2[0] - W2[1]) @ b1 + b2[0] - b2[1]
    x = jax.random.normal(jax.random.key(11), (N_SMALL, 2))
    est = level_set_density(lambda v: router(v)[0] - router(v)[1], x)
    sig = np.linalg.norm(beta)
    ref = stats.norm.pdf(off / sig) / sig
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)


# ----------------------------------------------------------------------------
# kernel_smoothed_mean: the shared estimator
# ----------------------------------------------------------------------------


def test_kernel_smoothed_mean_columns_and_bandwidth_rule():
    s = jax.random.normal(jax.random.key(1), (N_SMALL,))
    g = jnp.stack([jnp.ones_like(s), s**2, jnp.cos(s)], axis=1)  # [N, 3]
    est = kernel_smoothed_mean(s, g, t=0.5)
    assert est.value.shape == (3,) and est.stderr.shape == (3,)
    p = stats.norm.pdf(0.5)
    ref = np.array([p, 0.25 * p, math.cos(0.5) * p])
    np.testing.assert_array_less(np.abs(est.value - ref), 3 * est.stderr)
    for k in range(3):
        col = kernel_smoothed_mean(s, g[:, k], t=0.5)
        np.testing.assert_allclose(col.value, est.value[k], rtol=1e-12)
    # the automatic bandwidth scales like N^{-1/5}: 32× the samples halve it
    s_big = jax.random.normal(jax.random.key(2), (N_BIG,))
    h_big = kernel_bandwidth(s_big, jnp.ones_like(s_big), t=0.5)
    h_small = kernel_bandwidth(s, g[:, 0], t=0.5)
    assert float(h_small / h_big) == pytest.approx(32 ** (1 / 5), rel=0.25)
    # a fixed bandwidth is used as given
    fixed = kernel_smoothed_mean(s, g[:, 0], t=0.5, bandwidth=0.1)
    z = (np.asarray(s) - 0.5) / 0.1
    assert float(fixed.value) == pytest.approx(np.mean(stats.norm.pdf(z) / 0.1), rel=1e-10)


def test_kernel_constants_by_quadrature():
    # the one-sided local-linear equivalent kernel (c₀ + c₁ z) φ(z) on z > 0 (module docstring)
    from softhard.coarea import _kernel

    k = _kernel(0, 1, "right")
    c0, c1 = k.coeffs
    assert (c0, c1) == pytest.approx((5.50388, -4.39146), abs=1e-5)

    def K(z):
        return (c0 + c1 * z) * stats.norm.pdf(z)

    def quad(f):
        return integrate.quad(f, 0, np.inf)[0]

    assert quad(K) == pytest.approx(1.0, abs=1e-12)
    assert quad(lambda z: z * K(z)) == pytest.approx(0.0, abs=1e-12)
    assert quad(lambda z: z * z * K(z)) == pytest.approx(k.mu2, rel=1e-10)
    assert quad(lambda z: K(z) ** 2) == pytest.approx(k.R, rel=1e-10)
    # the two-sided second-derivative kernel is φ'' = (z² − 1) φ
    k2 = _kernel(2, 2, "both")
    assert k2.coeffs == pytest.approx((-1.0, 0.0, 1.0), abs=1e-12)
    assert _kernel(0, 0, "both").R == pytest.approx(1 / (2 * math.sqrt(math.pi)), rel=1e-14)


def test_kernel_smoothed_mean_stderr_is_calibrated():
    # 24 seeds at N = 2^15: the standardized errors have RMS near 1 (bias included)
    zs = []
    for seed in range(24):
        s = 0.8 + 1.3 * jax.random.normal(jax.random.key(100 + seed), (N_SMALL,))
        est = kernel_smoothed_mean(s, jnp.ones_like(s))
        ref = stats.norm.pdf(-0.8 / 1.3) / 1.3
        zs.append((float(est.value) - ref) / float(est.stderr))
    rms = float(np.sqrt(np.mean(np.square(zs))))
    assert 0.4 < rms < 1.5
    assert max(abs(z) for z in zs) < 4


def test_one_sided_limits_of_a_jump():
    # g jumps from b (s < 0) to a (s > 0) and has a slope: m(0±) = p_s(0) (a or b)
    s = jax.random.normal(jax.random.key(5), (N_BIG,))
    g = jnp.where(s > 0, 2.0 + 0.5 * s, -1.0 + s**2)
    p0 = stats.norm.pdf(0.0)
    right = kernel_smoothed_mean(s, g, side="right")
    left = kernel_smoothed_mean(s, g, side="left")
    both = kernel_smoothed_mean(s, g)
    assert abs(float(right.value) - 2.0 * p0) < 3 * float(right.stderr)
    assert abs(float(left.value) + 1.0 * p0) < 3 * float(left.stderr)
    assert abs(float(right.value) / (2.0 * p0) - 1) < 0.01
    # the two-sided mean sees the average of the two sides
    assert abs(float(both.value) - 0.5 * p0) < 3 * float(both.stderr)


def test_kernel_smoothed_mean_float32_and_jit():
    s64 = jax.random.normal(jax.random.key(9), (N_SMALL,))
    g64 = 1.0 + s64
    e64 = kernel_smoothed_mean(s64, g64)
    e32 = kernel_smoothed_mean(s64.astype(jnp.float32), g64.astype(jnp.float32))
    assert e32.value.dtype == jnp.float32
    np.testing.assert_allclose(e32.value, e64.value, rtol=1e-4)
    jitted = jax.jit(lambda s, g: kernel_smoothed_mean(s, g))(s64, g64)
    np.testing.assert_allclose(jitted.value, e64.value, rtol=1e-12)


def test_level_set_density_float32(gaussian_sample):
    x = gaussian_sample[:N_SMALL].astype(jnp.float32)
    _, _, G = _example_38()
    beta = jnp.asarray(BETA, jnp.float32)
    est = level_set_density(lambda v: jnp.dot(beta, v) + OFFSET, x)
    assert est.value.dtype == jnp.float32
    assert abs(float(est.value) / G - 1) < 0.02


# ----------------------------------------------------------------------------
# pairwise versions: Lemma 3.6, (3.9), Prop 3.5
# ----------------------------------------------------------------------------


def _three_expert_router():
    W = np.array([[1.0, 0.2, -0.3], [-0.4, 0.9, 0.1], [0.2, -0.5, 0.8]])
    b = np.array([0.1, -0.2, 0.0])
    return sh.LinearRouter(W, b)


def test_pairwise_level_set_densities_closed_form(gaussian_sample):
    router = _three_expert_router()
    a = sh.logits(router, gaussian_sample)
    est = pairwise_level_set_densities(a)
    assert est.value.shape == (3,)
    W, b = np.asarray(router.W), np.asarray(router.b)
    for col, (i, j) in enumerate(zip(*sh.pair_indices(3))):
        beta = W[i] - W[j]
        m = beta @ MU + b[i] - b[j]
        sig = math.sqrt(beta @ COV @ beta)
        ref = stats.norm.pdf(m / sig) / sig
        assert abs(float(est.value[col]) - ref) < 3 * float(est.stderr[col])
        assert abs(float(est.value[col]) / ref - 1) < 0.02
    # Lemma 3.6 / (3.9) and the top-two restriction: M(w) ≈ 2w Σ G^top, M_pair(w) ≈ 2w Σ G
    w = 0.01
    top = pairwise_level_set_densities(a, top_two=True)
    assert np.all(np.asarray(top.value) <= np.asarray(est.value) + 3 * np.asarray(est.stderr))
    for kind, dens in (("top2", top), ("pairwise", est)):
        from softhard.boundary import boundary_mass

        M = boundary_mass(a, w, kind=kind)
        pred = 2 * w * float(jnp.sum(dens.value))
        se = 2 * w * float(jnp.sum(dens.stderr)) + float(M.stderr)
        assert abs(float(M.value) - pred) < 3 * se


def test_ambiguity_coefficient_prop_35(gaussian_sample):
    # K = 2: C = 2 L_ε G(0), and P(ε ≤ π_1^τ ≤ 1 − ε) ≈ C τ at small τ (3.13)
    router = sh.LinearRouter(W=np.stack([BETA, np.zeros(3)]), b=[OFFSET, 0.0])
    a = sh.logits(router, gaussian_sample)
    eps, tau = 0.1, 0.005
    C = ambiguity_coefficient(a, eps)
    _, _, G = _example_38()
    L = math.log((1 - eps) / eps)
    assert abs(float(C.value) - 2 * L * G) < 3 * float(C.stderr)
    pairwise = ambiguity_coefficient(a, eps, kind="pairwise")
    np.testing.assert_allclose(pairwise.value, C.value, rtol=1e-12)  # K = 2: one interface
    pi1 = sh.gates(a, tau)[:, 0]
    frac = float(jnp.mean((pi1 >= eps) & (pi1 <= 1 - eps)))
    se_frac = math.sqrt(frac * (1 - frac) / a.shape[0])
    assert abs(frac / tau - float(C.value)) < 3 * (se_frac / tau + float(C.stderr))


# ----------------------------------------------------------------------------
# gap_coefficient against 1-D quadrature of (L_τ − L_0)/τ
# ----------------------------------------------------------------------------


def _quad_gap_over_tau(router_np, experts_np, mu, tau, interfaces):
    """(L_τ − L_0)/τ for X ~ N(0, 1), by quadrature around each interface.

    router_np/experts_np: (w [K], b [K]) and (B [K], c [K]) with a_k = w_k x + b_k,
    f_k = B_k x + c_k; mu: the regression function E[Y | X = x]. Away from the
    interfaces the integrand is exp(−|s|/τ)-small; near interface x_k we
    integrate over x = x_k + τ v (so dx/τ = dv).
    """
    w, b = router_np
    B, c = experts_np

    def integrand(v, xk):
        x = xk + tau * v
        a = w * x + b
        f = B * x + c
        z = (a - a.max()) / tau
        g = np.exp(z) / np.exp(z).sum()
        f_tau, f_0 = g @ f, f[np.argmax(a)]
        return ((mu(x) - f_tau) ** 2 - (mu(x) - f_0) ** 2) * stats.norm.pdf(x)

    total = 0.0
    for xk, slope in interfaces:
        lim = 60.0 / abs(slope)
        for lo, hi in ((-lim, 0.0), (0.0, lim)):
            total += integrate.quad(integrand, lo, hi, args=(xk,), limit=400, epsabs=1e-13)[0]
    return total


def _quad_coefficient(*args):
    # Richardson: (L_τ − L_0)/τ = c + c₁ τ + O(τ²)
    return 2 * _quad_gap_over_tau(*args[:3], 5e-4, args[3]) - _quad_gap_over_tau(
        *args[:3], 1e-3, args[3]
    )


X0, SLOPE = 0.4, 1.5
ROUTER_1D = (np.array([SLOPE, 0.0]), np.array([-SLOPE * X0, 0.0]))
EXPERTS_1D = (np.array([1.0, -0.5]), np.array([0.3, -0.2]))


def _moe_1d(router_np, experts_np):
    (w, b), (B, c) = router_np, experts_np
    return sh.MoE(sh.LinearRouter(W=w[:, None], b=b), sh.LinearExperts(B=B[:, None], c=c))


@pytest.fixture(scope="module")
def x_1d():
    return jax.random.normal(jax.random.key(2024), (N_BIG, 1))


def _target(x, router_np, experts_np):
    return np.asarray(sh.hard_predict(_moe_1d(router_np, experts_np), x))


def test_gap_coefficient_realizable(x_1d):
    # Y = f_0(X): c = (2 ln 2 − 1) Δf(x0)² p(x0)/|s'| (a positive constant times G)
    model = _moe_1d(ROUTER_1D, EXPERTS_1D)
    y = _target(x_1d, ROUTER_1D, EXPERTS_1D)

    def mu(x):
        B, c = EXPERTS_1D
        return B[0] * x + c[0] if x > X0 else B[1] * x + c[1]

    ref = _quad_coefficient(ROUTER_1D, EXPERTS_1D, mu, [(X0, SLOPE)])
    df = (1.0 - -0.5) * X0 + 0.5
    assert ref == pytest.approx((TWO_LN2 - 1) * df**2 * stats.norm.pdf(X0) / SLOPE, rel=1e-6)
    est = gap_coefficient(model, x_1d, jnp.asarray(y))
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.01


def test_gap_coefficient_with_a_jump_is_negative(x_1d):
    # teacher: same interface, other experts; its jump J is small, so c < 0 (softening helps)
    teacher_experts = (np.array([0.2, 0.1]), np.array([0.3, 0.1]))
    y = _target(x_1d, ROUTER_1D, teacher_experts)

    def mu(x):
        B, c = teacher_experts
        return B[0] * x + c[0] if x > X0 else B[1] * x + c[1]

    ref = _quad_coefficient(ROUTER_1D, EXPERTS_1D, mu, [(X0, SLOPE)])
    J = 0.1 * X0 + 0.2
    df = 1.5 * X0 + 0.5
    closed = (TWO_LN2 * df * J - df**2) * stats.norm.pdf(X0) / SLOPE
    assert ref == pytest.approx(closed, rel=1e-4) and ref < 0
    est = gap_coefficient(_moe_1d(ROUTER_1D, EXPERTS_1D), x_1d, jnp.asarray(y))
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.02


def test_gap_coefficient_continuous_target(x_1d):
    # a linear target has no jump (J = 0): c = −Δf(x0)² p(x0)/|s'|, with noise in Y
    x = x_1d
    y = 0.7 * x[:, 0] + 0.1 + 0.3 * jax.random.normal(jax.random.key(77), (N_BIG,))
    ref = _quad_coefficient(ROUTER_1D, EXPERTS_1D, lambda t: 0.7 * t + 0.1, [(X0, SLOPE)])
    df = 1.5 * X0 + 0.5
    assert ref == pytest.approx(-(df**2) * stats.norm.pdf(X0) / SLOPE, rel=1e-4)
    est = gap_coefficient(_moe_1d(ROUTER_1D, EXPERTS_1D), x, y)
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.03


def test_gap_coefficient_three_experts(x_1d):
    # K = 3 on a line: expert 0 wins for x > 0, 1 on (−1/2, 0), 2 for x < −1/2;
    # the coefficient sums the two top-two interfaces (pairs (0,1) and (1,2))
    router_np = (np.array([2.0, 0.0, -2.0]), np.array([0.0, 0.0, -1.0]))
    experts_np = (np.array([1.0, -0.5, 0.4]), np.array([0.3, -0.2, 1.0]))
    teacher_np = (np.array([0.8, 0.0, 0.2]), np.array([0.1, -0.6, 0.9]))
    y = _target(x_1d, router_np, teacher_np)

    def mu(x):
        k = int(np.argmax(router_np[0] * x + router_np[1]))
        return teacher_np[0][k] * x + teacher_np[1][k]

    ref = _quad_coefficient(router_np, experts_np, mu, [(0.0, 2.0), (-0.5, 2.0)])
    est = gap_coefficient(_moe_1d(router_np, experts_np), x_1d, jnp.asarray(y))
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert abs(float(est.value) / ref - 1) < 0.02


def test_gap_coefficient_example_38_noisy_teacher(gaussian_sample):
    # d = 3, anisotropic Gaussian, linear router/experts, a teacher on the same interface
    # with other experts and noise 0.5. Closed form: c = G(0) E[2 ln 2 Δf J − Δf² | s = 0],
    # with X | s = 0 ~ N(μ_c, Σ_c) and Δf, J affine in x.
    x = gaussian_sample
    router = sh.LinearRouter(W=np.stack([BETA, np.zeros(3)]), b=[OFFSET, 0.0])
    Bm, cm = np.array([[0.5, 0.2, -0.3], [-0.4, 0.1, 0.6]]), np.array([0.3, -0.1])
    Bt, ct = np.array([[0.3, 0.0, -0.2], [-0.1, 0.3, 0.5]]), np.array([0.2, 0.0])
    teacher = sh.Teacher(router, sh.LinearExperts(Bt, ct), noise_std=0.5)
    y = jax.vmap(teacher.regression)(x) + 0.5 * jax.random.normal(jax.random.key(8), (N_BIG,))
    m, sig, G = _example_38()
    mc = MU + COV @ BETA * (-m) / sig**2
    Sc = COV - np.outer(COV @ BETA, COV @ BETA) / sig**2

    def cond_mean_product(u, u0, v, v0):
        return (u @ mc + u0) * (v @ mc + v0) + u @ Sc @ v

    df, df0 = Bm[0] - Bm[1], cm[0] - cm[1]
    J, J0 = Bt[0] - Bt[1], ct[0] - ct[1]
    ref = G * (TWO_LN2 * cond_mean_product(df, df0, J, J0) - cond_mean_product(df, df0, df, df0))
    est = gap_coefficient(sh.MoE(router, sh.LinearExperts(Bm, cm)), x, y)
    assert abs(float(est.value) - ref) < 3 * float(est.stderr)
    assert float(est.stderr) < 0.1 * abs(ref)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


def test_bad_input_names_the_argument():
    x = jnp.ones((8, 2))
    s = jnp.linspace(-1, 1, 8)
    with pytest.raises(ValueError, match="measure"):
        surface_integral(lambda v: v[0], x, measure="volume")
    with pytest.raises(ValueError, match="score_fn"):
        level_set_density(lambda v: v, x)  # not a scalar
    with pytest.raises(ValueError, match="score_fn"):
        level_set_density(3.0, x)
    with pytest.raises(ValueError, match="`g`"):
        surface_integral(lambda v: v[0], x, g=lambda v: jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="`x`"):
        level_set_density(lambda v: v[0], jnp.ones(8))
    with pytest.raises(ValueError, match="`s`"):
        kernel_smoothed_mean(jnp.ones((8, 2)), jnp.ones(8))
    with pytest.raises(ValueError, match="`g`"):
        kernel_smoothed_mean(s, jnp.ones(7))
    with pytest.raises(ValueError, match="bandwidth"):
        kernel_smoothed_mean(s, jnp.ones(8), bandwidth=-0.1)
    with pytest.raises(ValueError, match="bandwidth"):
        kernel_smoothed_mean(s, jnp.ones((8, 2)), bandwidth=jnp.ones(3))
    with pytest.raises(ValueError, match="side"):
        kernel_smoothed_mean(s, jnp.ones(8), side="up")
    with pytest.raises(ValueError, match="`t`"):
        kernel_smoothed_mean(s, jnp.ones(8), t=jnp.zeros(2))
    with pytest.raises(ValueError, match="eps"):
        ambiguity_coefficient(jnp.ones((8, 2)), 0.5)
    with pytest.raises(ValueError, match="kind"):
        ambiguity_coefficient(jnp.ones((8, 2)), 0.1, kind="all")
    with pytest.raises(ValueError, match="logits"):
        pairwise_level_set_densities(jnp.ones((8, 1)))
    model = _moe_1d(ROUTER_1D, EXPERTS_1D)
    with pytest.raises(ValueError, match="`y`"):
        gap_coefficient(model, jnp.ones((8, 1)), jnp.ones(7))
