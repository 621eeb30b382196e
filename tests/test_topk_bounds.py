"""Top-k gate bounds (T.8, T.9), top-k ambiguity mass and tail fits (T.7, T.1), the top-k
certificate (T.10) and atoms in the margin law.

References: an independent bisection for θ of T.3 written here, scipy quadrature of
the order-statistics law of i.i.d. Gaussian logits, the weights of `MoE.weights`
(softhard's own routing), and sample-exact inequalities. Monte Carlo checks use
fixed seeds and state the number of stderrs allowed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import softhard as sh
from softhard.boundary import ambiguity_mass, fit_tail_profile, margin_tail_fit, tail_widths
from softhard.certificate import certify, gamma_check, gate_tv_bound, soft_hard_bound


def _soft_topk_numpy(a, tau, k):
    # T.3 by bisection on θ: Σ_j min(1, e^{(a_j − θ)/τ}) = k
    lo, hi = a.max(1) - 60 * tau - 10, a.max(1) + 10.0
    for _ in range(200):
        th = (lo + hi) / 2
        s = np.minimum(1.0, np.exp((a - th[:, None]) / tau)).sum(1)
        lo, hi = np.where(s > k, th, lo), np.where(s > k, hi, th)
    return np.minimum(1.0, np.exp((a - ((lo + hi) / 2)[:, None]) / tau))


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 7),
    kk=st.integers(1, 6),
    log_tau=st.floats(-6, 1),
    scale=st.floats(0.01, 10),
    seed=st.integers(0, 2**31),
    grid=st.booleans(),
)
def test_t8_gate_bound_random_logits(K, kk, log_tau, scale, seed, grid):
    k, tau = 1 + (kk - 1) % (K - 1), 10.0**log_tau
    a = np.random.default_rng(seed).normal(size=(64, K)) * scale
    if grid:  # exact ties
        a = np.round(a / scale)
    a = jnp.asarray(a)
    mu, hard = sh.gates(a, tau, k=k), sh.hard_gates(a, k=k)
    eps = np.asarray(jnp.sum(mu * (1 - hard), -1))
    np.testing.assert_allclose(eps, np.asarray(jnp.sum((1 - mu) * hard, -1)), atol=1e-12)
    bound = (K - k) * np.exp(-np.asarray(sh.topk_margin(a, k)) / tau)
    assert np.all(eps <= bound * (1 + 1e-9) + 1e-14)
    tv = np.asarray(jnp.sum(jnp.abs(mu - hard), -1))
    assert np.all(tv <= 2 * bound * (1 + 1e-9) + 1e-13)


def _moe(rng, K, d, k, rho=None, selection=None):
    r = sh.LinearRouter(rng.normal(size=(K, d)) * 2, rng.normal(size=K))
    e = sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K))
    return sh.MoE(r, e, k=k, combine_temperature=rho, selection=selection)


@pytest.mark.parametrize("K, k", [(3, 1), (4, 2), (5, 3)])
@pytest.mark.parametrize("rho", [None, 1.0, 0.3])
def test_t9_gate_tv_bound_against_moe_weights(rng, K, k, rho):
    bias = jnp.asarray(rng.normal(size=K))
    for sel in (None, lambda a: a + bias):
        if sel is not None and rho is None:
            continue
        m = _moe(rng, K, 2, k, rho, sel)
        x = jnp.asarray(rng.normal(size=(400, 2)))
        a = sh.logits(m.router, x)
        s = a if sel is None else jax.vmap(sel)(a)
        hard = sh.hard_gates(s, k=k)
        w0 = jax.vmap(m.weights)(x)
        worst = 0.0
        for tau in (1e-3, 0.03, 0.3, 3.0):
            w = jax.vmap(lambda xi, t=tau, m=m: m.weights(xi, t))(x)
            tv = np.asarray(jnp.sum(jnp.abs(w - w0), -1))
            eps = jnp.sum(sh.gates(s, tau, k=k) * (1 - hard), -1)
            if rho is None:  # exact: ‖w^τ − w^0‖_1 = 2ε/k
                np.testing.assert_allclose(tv, 2 * np.asarray(eps) / k, atol=1e-12)
                continue
            c = jnp.exp(a / rho - jnp.max(a, -1, keepdims=True) / rho)
            r = jnp.max(c, -1) / jnp.sum(hard * c, -1)
            b = np.asarray(gate_tv_bound(eps, r))
            assert np.all(tv <= b * (1 + 1e-6) + 1e-12)
            assert np.all(b <= 4 * np.asarray(r * eps) + 1e-15)
            worst = max(worst, float(np.max(np.where(b > 1e-6, tv / np.maximum(b, 1e-300), 0))))
        if rho is not None:
            assert worst > 0.3  # the bound is not vacuous


@pytest.mark.parametrize(
    "k, rho, sel",
    [
        (2, None, False),
        (3, None, False),
        (2, 1.0, False),
        (3, 1.0, False),
        (1, 1.0, False),
        (2, 1.0, True),
    ],
)
def test_topk_certificate_bounds_the_gap(rng, k, rho, sel):
    K, d, n = 4, 2, 2**13
    bias = jnp.asarray(rng.normal(size=K)) if sel else None
    m = _moe(rng, K, d, k, rho, (lambda a: a + bias) if sel else None)
    x = jnp.asarray(rng.normal(size=(n, d)))
    y = sh.hard_predict(_moe(rng, K, d, k), x) + 0.1 * jnp.asarray(rng.normal(size=n))
    taus = jnp.array([1e-3, 1e-2, 0.1, 0.5])
    cert = certify(m, x, y, taus)
    assert cert.tail.k == k and cert.tail.status in ("ok", "misfit")
    gap = np.abs(np.asarray(cert.gap.value))
    assert np.all(np.asarray(cert.bound) >= gap)
    # the sample-exact chain: |L̂_τ − L̂_0| ≤ 2(B_Y + B_f) B_f mean_n gate bound (T.8, T.9)
    a = sh.logits(m.router, x)
    s = a if bias is None else a + bias[None, :]
    hard = sh.hard_gates(s, k=k)
    c = jnp.ones_like(a) if rho is None else jnp.exp(a / rho - jnp.max(a, -1, keepdims=True) / rho)
    r = jnp.max(c, -1) / jnp.sum(hard * c, -1)
    for t, tau in enumerate(taus):
        eps = jnp.sum(sh.gates(s, tau, k=k) * (1 - hard), -1)
        tvb = 2 * eps / k if rho is None else gate_tv_bound(eps, r)
        chain = 2 * (cert.B_Y + cert.B_f) * cert.B_f * jnp.mean(tvb)
        assert gap[t] <= float(chain) * (1 + 1e-9)


def test_soft_hard_bound_topk_forms():
    args = (0.05, 2.0, 1.5, 5, 0.8, 1.3, 0.4)
    tail = 0.8 * float(jax.scipy.special.gamma(2.3)) * 0.05**1.3 + np.exp(-0.4 / 0.05)
    assert float(soft_hard_bound(*args, k=2)) == pytest.approx(4 * 1.5 * 3.5 * 3 / 2 * tail)
    assert float(soft_hard_bound(*args, k=2, rho=1.0)) == pytest.approx(8 * 1.5 * 3.5 * 3 * tail)
    r = 1 / (1 + np.exp(-2.0))
    got = soft_hard_bound(*args, k=2, rho=1.0, logit_range=2.0)
    assert float(got) == pytest.approx(8 * 1.5 * 3.5 * 3 * r * tail)
    t1 = 0.05 / 1.05
    tail1 = 0.8 * float(jax.scipy.special.gamma(2.3)) * t1**1.3 + np.exp(-0.4 / t1)
    assert float(soft_hard_bound(*args, rho=1.0)) == pytest.approx(4 * 1.5 * 3.5 * 4 * tail1)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="rho"):
            soft_hard_bound(*args, k=2, rho=bad)
    for bad in (0, 5, 2.5):
        with pytest.raises(ValueError, match="`k`"):
            soft_hard_bound(*args, k=bad)
    with pytest.raises(ValueError, match="weight_ratio"):
        soft_hard_bound(*args, k=2, rho=1.0, weight_ratio=0.4)
    with pytest.raises(ValueError, match="finite `rho`"):
        soft_hard_bound(*args, k=2, logit_range=1.0)


def test_topk_ambiguity_mass_against_bisection(rng):
    a = rng.normal(size=(3000, 5))
    for k, tau, delta in ((2, 0.3, 0.1), (3, 1.0, 0.2), (2, 0.05, 0.3)):
        mu = _soft_topk_numpy(a, tau, k)
        order = np.argsort(-a, axis=1, kind="stable")[:, :k]
        low = np.take_along_axis(mu, order, 1).min(1)
        ref = np.mean(low < 1 - delta)
        got = ambiguity_mass(jnp.asarray(a), tau, delta, k=k)
        assert float(got.value) == pytest.approx(ref, abs=1e-12)
        assert 0 < ref < 1
    assert float(ambiguity_mass(jnp.asarray(a), 0.3, 0.1, k=1).value) == float(
        ambiguity_mass(jnp.asarray(a), 0.3, 0.1).value
    )


def _iid_gauss_m2(w):
    # P(a_(2) − a_(3) ≤ w) for K = 4 i.i.d. N(0, 1) logits (order-statistics density)
    phi, Phi = stats.norm.pdf, stats.norm.cdf
    f = lambda v: 12 * phi(v) * Phi(v) * ((1 - Phi(v)) ** 2 - (1 - Phi(v + w)) ** 2)
    return integrate.quad(f, -10, 10, epsabs=1e-14, epsrel=1e-12, limit=200)[0]


@pytest.fixture(scope="module")
def gauss4():
    return jax.random.normal(jax.random.key(5), (2**20, 4))


def test_tail_fit_on_delta2_recovers_alpha_1(gauss4):
    ws = np.geomspace(0.001, 0.016, 8)
    fit = margin_tail_fit(gauss4, ws, k=2)
    assert fit.k == 2 and fit.status == "ok" and float(fit.atom.value) == 0.0
    al, se = float(fit.alpha.value), float(fit.alpha.stderr)
    assert abs(al - 1.0) < 3 * se
    X = np.stack([np.ones_like(ws), np.log(ws)], 1)
    exact = np.linalg.lstsq(X, np.log([_iid_gauss_m2(w) for w in ws]), rcond=None)[0]
    assert abs(al - exact[1]) < 3 * se
    # the profile-level fitter on the same counts gives the same fit
    prof = fit_tail_profile(ws, fit.mass, 2**20, atom=fit.atom, k=2)
    assert float(prof.alpha.value) == float(fit.alpha.value)
    assert float(prof.C_env) == float(fit.C_env)


def test_atoms_are_flagged_and_fitted_above(gauss4):
    n = 2**18
    a = np.array(gauss4[:n])
    tie = np.asarray(jax.random.bernoulli(jax.random.key(2), 0.01, (n,)))
    srt = np.argsort(-a, axis=1, kind="stable")
    rows = np.flatnonzero(tie)
    a[rows, srt[rows, 2]] = a[rows, srt[rows, 1]]  # a_(3) = a_(2): Δ_2 = 0
    ws = tail_widths(np.asarray(sh.topk_margin(jnp.asarray(a), 2)))
    fit = margin_tail_fit(jnp.asarray(a), ws, k=2)
    assert fit.status == "atom"
    assert abs(float(fit.atom.value) - 0.01) < 3 * float(fit.atom.stderr)
    assert float(fit.atom.value) == pytest.approx(tie.mean())
    # above the atom, the continuous part is still ~ linear (α ≈ 1 within 0.1 on this grid)
    assert abs(float(fit.alpha.value) - 1.0) < 0.1
    # a top-2 model whose selection clamps scores (ReLU-like ties) gets no certificate
    rng = np.random.default_rng(0)
    m = _moe(rng, 3, 2, 2, selection=lambda s: jnp.maximum(s, 0.0))
    x = jnp.asarray(rng.normal(size=(2048, 2)))
    with pytest.raises(ValueError, match="atom"):
        certify(m, x, jnp.zeros(2048), jnp.array([0.1]))


def test_goodness_of_fit_flags_a_broken_power_law():
    n = 2**14
    u = jax.random.uniform(jax.random.key(7), (n,))
    b = jax.random.bernoulli(jax.random.key(8), 0.5, (n,))
    a = jnp.stack([jnp.where(b, 0.02 * u, u), jnp.zeros(n)], 1)  # slope 1 → 0 → 1
    fit = margin_tail_fit(a, np.geomspace(0.002, 0.2, 8))
    assert fit.status == "misfit" and float(fit.residual.p_value) < 1e-6
    assert fit.residual.dof == 6 and float(fit.residual.max_z) > 5
    # calibration under a true power law (P(Δ ≤ w) = w²): χ² has mean ≈ dof
    chis = []
    for s in range(12):
        v = jnp.sqrt(jax.random.uniform(jax.random.key(100 + s), (n,)))
        f = margin_tail_fit(jnp.stack([v, jnp.zeros(n)], 1), np.geomspace(0.05, 0.5, 8))
        chis.append(float(f.residual.chi2))
    # 12 draws of χ²_6: mean 6, stderr sqrt(12/12) = 1; allow 3 stderrs
    assert abs(np.mean(chis) - 6.0) < 3.0


def test_gamma_check_topk_model(rng):
    m = _moe(rng, 3, 2, 2, 1.0)
    x = jnp.asarray(rng.normal(size=(512, 2)))
    y = sh.hard_predict(m, x)
    out = gamma_check(
        m, x, y, jnp.array([0.3, 0.03]), lower=-3.0, upper=3.0, key=jax.random.key(0),
        n_starts=1, steps=20, tail=(2.0, 1.0, 0.5),
    )  # fmt: skip
    assert np.all(np.asarray(out.sup_gap) <= np.asarray(out.certificate))
    assert out.maximisers.k == 2
