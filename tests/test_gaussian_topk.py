"""Exact top-k values for Gaussian inputs (EQUATIONS.md §T): K = 3, k = 2 against references.

The references are independent of `softhard.gaussian`: for `d = 2` the risks
are 2-D integrals over the input plane, done here in polar coordinates about
the router's tie point with `scipy.integrate.quad` over the angle (split at
every interface direction) and a graded Gauss–Legendre rule along each ray
(split at the teacher's interfaces, the mode and the radius where the soft
top-2 mask's cap switches). The soft top-2 mask (T.3) is found by bisection
on θ, not by sorting; the hard top-2 set (T.2) by a stable sort. Monte Carlo
(`softhard.risk_sweep`) covers `d = 4`, where the teacher's cells are random
given the student's logits.
"""

from __future__ import annotations

import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss
from scipy import integrate, optimize

from softhard import (
    Gaussian,
    LinearExperts,
    LinearRouter,
    LinearTarget,
    MoE,
    StandardGaussian,
    Teacher,
    risk_sweep,
)
from softhard.gaussian import (
    exact_boundary_mass,
    exact_gap_coefficient,
    exact_hard_risk,
    exact_risk_gap,
    exact_risk_sweep,
    exact_soft_risk,
    gaussian_interface_density,
    gaussian_slab_probability,
)
from softhard.gaussian.risks import _route

LN2 = math.log(2.0)

# ----------------------------------------------------------------------------
# problems (d = 2: every target is a function of the student's logits)
# ----------------------------------------------------------------------------


def _law2():
    return Gaussian(np.array([0.3, -0.2]), np.array([[1.0, 0.3], [0.3, 0.6]]))


def _problem(name, seed=3):
    """A K = 3, k = 2 student on d = 2 and a target `name`."""
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=3) * 0.3
    B, c = rng.normal(size=(3, 2)), rng.normal(size=3)
    rho = 1.0 if name.startswith("rho") else None
    model = MoE(LinearRouter(W, b), LinearExperts(B, c), k=2, combine_temperature=rho)
    Bt, ct = rng.normal(size=(3, 2)), rng.normal(size=3)
    Wo, bo = rng.normal(size=(3, 2)), rng.normal(size=3) * 0.3
    if name == "same":
        target = Teacher(model.router, LinearExperts(Bt, ct), 0.2, k=2)
    elif name == "other":
        target = Teacher(LinearRouter(Wo, bo), LinearExperts(Bt, ct), 0.2, k=2)
    elif name == "top1 teacher":
        target = Teacher(LinearRouter(Wo, bo), LinearExperts(Bt, ct), 0.2)
    elif name == "linear":
        target = LinearTarget(rng.normal(size=2), 0.3, 0.2)
    elif name == "rho same":  # ρ = 1 student and teacher: Mixtral-style combine weights
        target = Teacher(model.router, LinearExperts(Bt, ct), 0.2, k=2, combine_temperature=1.0)
    elif name == "rho realizable":
        target = Teacher(model.router, model.experts, k=2, combine_temperature=1.0)
    elif name == "realizable":
        target = Teacher(model.router, model.experts, k=2)
    else:
        raise KeyError(name)
    return _law2(), model, target


def _np_params(router):
    return np.asarray(router.W, np.float64), np.asarray(router.b, np.float64)


# ----------------------------------------------------------------------------
# the independent reference: predictors in NumPy
# ----------------------------------------------------------------------------


def _soft_mask(a, tau, k=2):
    """T.3 by bisection on θ: `Σ_j min(1, exp((a_j − θ)/τ)) = k`; `a: [N, K]`."""
    srt = -np.sort(-a, axis=1)
    lo = srt[:, k - 1] - 0.0  # the k largest are 1: the sum is ≥ k
    hi = srt[:, 0] + tau * math.log(a.shape[1] / k)  # every entry ≤ k/K: the sum is ≤ k
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        s = np.sum(np.exp(np.minimum((a - mid[:, None]) / tau, 0.0)), axis=1)
        lo, hi = np.where(s > k, mid, lo), np.where(s > k, hi, mid)
    theta = 0.5 * (lo + hi)
    return np.exp(np.minimum((a - theta[:, None]) / tau, 0.0))


def _hard_mask(a, k):
    order = np.argsort(-a, axis=1, kind="stable")
    mask = np.zeros_like(a)
    np.put_along_axis(mask, order[:, :k], 1.0, axis=1)
    return mask


def _predict(mu, a, f, rho):
    c = np.ones_like(a) if rho is None else np.exp((a - a.max(axis=1, keepdims=True)) / rho)
    u = mu * c
    return np.sum(u * f, axis=1) / np.sum(u, axis=1)


def _moe_np(model):
    W, b = _np_params(model.router)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    return W, b, B, c


def _target_fn(target):
    """`x: [N, 2] -> E[Y | x]` in NumPy, and the noise variance."""
    if isinstance(target, LinearTarget):
        w, c = np.asarray(target.w), float(target.c)
        return (lambda x: x @ w + c), float(target.noise_std) ** 2
    W, b, B, c = _moe_np(target)

    def fn(x):
        a = x @ W.T + b
        return _predict(_hard_mask(a, target.k), a, x @ B.T + c, target.combine_temperature)

    return fn, float(target.noise_std) ** 2


# ----------------------------------------------------------------------------
# the independent reference: polar quadrature about the tie point (d = 2)
# ----------------------------------------------------------------------------

_GL_X, _GL_W = leggauss(16)


def _graded(lo, hi, n_levels=20, ratio=0.3):
    """Nodes/weights on [lo, hi], geometrically graded towards both ends."""
    xs, ws = [], []
    mid = 0.5 * (lo + hi)
    for a, b in ((lo, mid), (hi, mid)):
        edges = a + (b - a) * ratio ** np.arange(n_levels)[::-1]
        edges = np.concatenate([[a], edges])
        for p, q in zip(edges[:-1], edges[1:]):
            xs.append(p + (q - p) * (_GL_X + 1) / 2)
            ws.append(abs(q - p) * _GL_W / 2)
    return np.concatenate(xs), np.concatenate(ws)


class _Polar:
    """`∫ g(x) p(x) dx` over R² in polar coordinates about the student's tie point."""

    def __init__(self, law, W, b, target=None):
        self.mean, self.cov = np.asarray(law.mean), np.asarray(law.cov)
        self.prec = np.linalg.inv(self.cov)
        self.norm = 1.0 / (2 * math.pi * math.sqrt(np.linalg.det(self.cov)))
        D, q = W[:2] - W[2], b[:2] - b[2]
        self.x0 = np.linalg.solve(D, -q)
        self.D = D
        self.lines = []  # (normal, offset) of the target's interfaces a*_k = a*_l
        if isinstance(target, Teacher):
            Wt, bt = _np_params(target.router)
            for i in range(3):
                for j in range(i + 1, 3):
                    self.lines.append((Wt[i] - Wt[j], bt[i] - bt[j]))
        far = np.linalg.norm(self.x0 - self.mean)
        self.rmax = far + 14.0 * math.sqrt(np.linalg.eigvalsh(self.cov).max())

    def angles(self, W):
        """Interface directions (both ways) of the student's pairs, and the mean's direction."""
        out = []
        for i in range(3):
            for j in range(i + 1, 3):
                n = W[i] - W[j]
                t = math.atan2(n[0], -n[1])
                out += [t, t + math.pi]
        for n, _ in self.lines:  # where a ray runs parallel to a target interface
            t = math.atan2(n[0], -n[1])
            out += [t, t + math.pi]
        dm = self.mean - self.x0
        out.append(math.atan2(dm[1], dm[0]))
        return np.sort(np.mod(out, 2 * math.pi))

    def ray(self, theta, extra=()):
        """Radial nodes `x: [N, 2]` and weights including `r p(x)` along direction `theta`."""
        u = np.array([math.cos(theta), math.sin(theta)])
        breaks = [0.0, self.rmax]
        bm = (self.mean - self.x0) @ self.prec @ u / (u @ self.prec @ u)
        breaks.append(bm)
        for n, off in self.lines:
            den = n @ u
            if den != 0:
                breaks.append(-(n @ self.x0 + off) / den)
        breaks += list(extra)
        pts = np.unique(np.clip(breaks, 0.0, self.rmax))
        rs, ws = [], []
        for lo, hi in zip(pts[:-1], pts[1:]):
            if hi > lo:
                r, w = _graded(lo, hi)
                rs.append(r)
                ws.append(w)
        r, w = np.concatenate(rs), np.concatenate(ws)
        x = self.x0 + r[:, None] * u
        dx = x - self.mean
        dens = self.norm * np.exp(-0.5 * np.einsum("ni,ij,nj->n", dx, self.prec, dx))
        return x, r, w * r * dens

    def integrate(self, fn, W, extra=lambda theta: ()):
        """`∫ fn(x) p(x) dx`, `fn: [N, 2] -> [M, N]`; angles by adaptive `quad_vec`."""

        def inner(theta):
            x, _, w = self.ray(theta, extra(theta))
            return np.sum(w * fn(x), axis=-1)

        edges = self.angles(W)
        edges = np.concatenate([edges, [edges[0] + 2 * math.pi]])
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                val, _ = integrate.quad_vec(inner, lo, hi, epsabs=0.0, epsrel=1e-11, limit=400)
                total = total + val
        return total


def _cap_switch(g, tau):
    """Radius along a ray with logit rates `g: [3]` where `Σ_j exp(r(g_j − max g)/τ) = 2`."""
    d = np.sort(g.max() - g)[1:]  # ≥ 0: the two others' rates below the top
    if d[0] <= 0:
        return ()
    f = lambda s: np.sum(np.exp(-s * d)) - 1.0
    return (tau * optimize.brentq(f, 0.0, 800.0 / d[0], xtol=1e-300, rtol=1e-15),)


def _reference(model, target, law, tau):
    """`(soft, hard, gap)` risks including the noise variance, by polar quadrature."""
    W, b, B, c = _moe_np(model)
    y_fn, noise = _target_fn(target)
    pol = _Polar(law, W, b, target)
    rho, k = model.combine_temperature, model.k

    def preds(x):
        a, f = x @ W.T + b, x @ B.T + c
        return _predict(_soft_mask(a, tau, k), a, f, rho), _predict(_hard_mask(a, k), a, f, rho)

    def rows(x):
        s, h = preds(x)
        y = y_fn(x)
        return np.stack([(y - s) ** 2, (y - h) ** 2, (y - s) ** 2 - (y - h) ** 2])

    def switch(theta):
        u = np.array([math.cos(theta), math.sin(theta)])
        return _cap_switch(W @ u, tau)

    soft, hard, gap = pol.integrate(rows, W, switch)
    return soft + noise, hard + noise, gap


def _reference_mass(router, law, w):
    """`M_2(w) = P(a_(2) − a_(3) ≤ w)` by polar quadrature (d = 2)."""
    W, b = _np_params(router)
    pol = _Polar(law, W, b)

    def radius(theta):
        g = np.sort(W @ np.array([math.cos(theta), math.sin(theta)]))
        rate = g[1] - g[0]
        return (w / rate,) if rate > 0 else ()

    def inside(x):
        s = np.sort(x @ W.T + b, axis=1)
        return (s[:, 1] - s[:, 0] <= w).astype(float)[None]

    return pol.integrate(inside, W, radius)[0]


# ----------------------------------------------------------------------------
# exact risks against the reference
# ----------------------------------------------------------------------------

_REL = 1e-8


def _assert_matches_reference(name, tau):
    law, model, target = _problem(name)
    soft, hard, gap = _reference(model, target, law, tau)
    out = exact_risk_sweep(model, target, law, jnp.array([tau]))
    for got, want in ((out.soft[0], soft), (out.hard, hard), (out.gap[0], gap)):
        assert float(got) == pytest.approx(want, rel=_REL, abs=1e-14), (name, tau, got, want)


# both in the slow set: test_k3_top2_risks_match_polar_quadrature_wide runs the same
# comparison for every name in the default run
@pytest.mark.parametrize("name", ["other", "rho same"])
@pytest.mark.slow
def test_k3_top2_risks_match_polar_quadrature(name):
    # relative 1e-8 at τ = 0.05 against the scipy reference (soft, hard, gap)
    _assert_matches_reference(name, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["same", "other", "linear", "top1 teacher", "rho same", "rho realizable"]
)
@pytest.mark.parametrize("tau", [1e-3, 1e-2, 0.05, 0.5])
def test_k3_top2_risks_match_polar_quadrature_wide(name, tau):
    _assert_matches_reference(name, tau)


@pytest.mark.slow  # tens of seconds of top-2 quadrature compiles; CI keeps the fast cases
def test_public_functions_agree_with_the_sweep():
    law, model, target = _problem("other")
    out = exact_risk_sweep(model, target, law, jnp.array([0.05, 0.2]))
    assert float(exact_soft_risk(model, target, law, 0.2)) == pytest.approx(
        float(out.soft[1]), rel=1e-13
    )
    assert float(exact_risk_gap(model, target, law, 0.05)) == pytest.approx(
        float(out.gap[0]), rel=1e-13
    )
    assert float(exact_hard_risk(model, target, law)) == pytest.approx(float(out.hard), rel=1e-13)


def test_node_gates_are_the_toolkit_gates():
    """The quadrature's top-2 weights (T.3–T.5) equal the sweep kernel's, ties included."""
    from softhard import _gating

    rng = np.random.default_rng(5)
    a = rng.normal(size=(400, 3)) * 3
    a[:50, 1] = a[:50, 0]  # top ties
    a[50:100, 2] = a[50:100, 1]  # ties below
    a[100:110] = 0.7  # all equal
    aj = jnp.asarray(a)
    cols = [aj[:, j] for j in range(3)]
    for tau in (None, 1e-3, 0.3, 5.0):
        for rho in (None, 1.0):
            got = np.stack(_route(cols, tau, 2, rho), axis=1)
            want = np.asarray(_gating.route(aj, aj, tau, 2, rho))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # and the bisection reference of T.3
    np.testing.assert_allclose(
        np.stack(_route(cols, 0.3, 2, None), axis=1) * 2, _soft_mask(a, 0.3), rtol=1e-12
    )


# ----------------------------------------------------------------------------
# Monte Carlo: d = 4, a top-2 teacher whose cells are random given the student
# ----------------------------------------------------------------------------


def _problem_d4(rho=None, seed=11):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(4, 4))
    law = Gaussian(rng.normal(size=4) * 0.3, A @ A.T / 4 + 0.3 * np.eye(4))
    model = MoE(
        LinearRouter(rng.normal(size=(3, 4)), rng.normal(size=3) * 0.3),
        LinearExperts(rng.normal(size=(3, 4)), rng.normal(size=3)),
        k=2,
        combine_temperature=rho,
    )
    target = Teacher(
        LinearRouter(rng.normal(size=(3, 4)), rng.normal(size=3) * 0.3),
        LinearExperts(rng.normal(size=(3, 4)), rng.normal(size=3)),
        0.3,
        k=2,
    )
    return law, model, target


@pytest.mark.parametrize("rho", [pytest.param(None, marks=pytest.mark.slow), 1.0])
def test_risk_sweep_agrees_with_exact_top2(rho):
    # N = 2^18 samples, seed 12, within 3 standard errors (soft, hard, gap)
    law, model, target = _problem_d4(rho)
    taus = jnp.array([1e-3, 0.05, 0.5])
    x, y = target.sample(jax.random.key(12), law, 1 << 18)
    mc = risk_sweep(model, x, y, taus)
    exact = exact_risk_sweep(model, target, law, taus)
    for est, val in ((mc.soft, exact.soft), (mc.hard, exact.hard), (mc.gap, exact.gap)):
        z = np.abs(np.asarray(est.value) - np.asarray(val)) / np.asarray(est.stderr)
        assert np.all(z <= 3.0), (np.asarray(val), np.asarray(est.value), z)


# ----------------------------------------------------------------------------
# the gap coefficient (T.11)
# ----------------------------------------------------------------------------


def _assert_gap_over_tau_tends_to(model, target, law, c):
    """`gap/τ → c` with an O(τ) remainder over τ = 1e-2, 1e-3, 1e-4."""
    taus = np.array([1e-2, 1e-3, 1e-4])
    gaps = np.asarray(exact_risk_sweep(model, target, law, jnp.asarray(taus)).gap)
    err = np.abs(gaps / taus - c)
    # O(τ): err/τ bounded, up to the quadrature's floor (gap/τ to ~1e-9 absolute, 1e-6 relative)
    floor = (1e-6 * abs(c) + 1e-9) / taus
    assert np.all(err / taus <= 1.5 * err[0] / taus[0] + floor), (gaps / taus, c)
    assert err[2] <= 2e-2 * err[0] + 1e-7 * abs(c), (gaps / taus, c)


def _worked_case(rho=None):
    """§T check case (logits (5, x1, 0), experts (0, 2x2 + 1, −x2)), made non-degenerate.

    `a_1 = 5 + x_3/2` instead of 5 (d = 3) so the logit differences have a
    non-singular covariance; expert 1 then leaves the top two only where
    `x_3 < −10`, which changes the coefficient by less than 1e-20.
    """
    r = LinearRouter([[0.0, 0.0, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [5.0, 0.0, 0.0])
    e = LinearExperts([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, -1.0, 0.0]], [0.0, 1.0, 0.0])
    model = MoE(r, e, k=2, combine_temperature=rho)
    return StandardGaussian(3), model, Teacher(r, e, k=2, combine_temperature=rho)


def test_worked_check_case_of_section_t():
    law, model, teacher = _worked_case()
    c = float(exact_gap_coefficient(model, teacher, law))
    want = (2 * LN2 - 1) / math.sqrt(2 * math.pi) * 10.0 / 4.0  # 0.385273
    assert c == pytest.approx(want, rel=1e-12)
    assert round(c, 6) == 0.385273
    _assert_gap_over_tau_tends_to(model, teacher, law, c)


def test_worked_check_case_with_rho_one():
    # ω = σ((a_i − a_1)/ρ) = σ(−5 − x_3/2) on Γ = {x_1 = 0}:
    # c = (2 ln 2 − 1) φ(0) E[(3 X_2 + 1)²] E[σ(−5 − X_3/2)²]
    law, model, teacher = _worked_case(1.0)
    c = float(exact_gap_coefficient(model, teacher, law))
    e_w2, _ = integrate.quad(
        lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi) / (1 + math.exp(5 + t / 2)) ** 2,
        -40,
        40,
        epsabs=0,
        epsrel=1e-13,
    )
    want = (2 * LN2 - 1) / math.sqrt(2 * math.pi) * 10.0 * e_w2
    assert c == pytest.approx(want, rel=1e-10)
    _assert_gap_over_tau_tends_to(model, teacher, law, c)


def _hand_coefficient_d2(law, model, target):
    """T.11 by 1-D quadrature along each top-2 interface line (d = 2), independently."""
    W, b, B, cb = _moe_np(model)
    mean, cov = np.asarray(law.mean), np.asarray(law.cov)
    prec, norm = np.linalg.inv(cov), 1 / (2 * math.pi * math.sqrt(np.linalg.det(cov)))
    y_fn, _ = _target_fn(target) if not isinstance(target, LinearTarget) else (None, 0)
    rho = model.combine_temperature

    def integrand(t, i, j, m, x0, u, n):
        x = x0 + t * u
        a = W @ x + b
        if a[m] <= a[i]:  # not the 2nd/3rd tie
            return 0.0
        dx = x - mean
        p = norm * math.exp(-0.5 * dx @ prec @ dx)
        omega = 0.5 if rho is None else 1 / (1 + math.exp((a[m] - a[i]) / rho))
        dtf = omega * ((B[i] - B[j]) @ x + cb[i] - cb[j])
        jump = 0.0
        if y_fn is not None:
            h = 1e-11 * n / np.linalg.norm(n)  # a jump is a difference, not a quotient
            jump = y_fn((x + h)[None])[0] - y_fn((x - h)[None])[0]
        return (2 * LN2 * dtf * jump - dtf**2) * p / np.linalg.norm(n)

    total = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        (m,) = [v for v in range(3) if v not in (i, j)]
        n = W[i] - W[j]
        x0 = -n * (b[i] - b[j]) / (n @ n)  # a point on s_ij = 0
        u = np.array([-n[1], n[0]]) / np.linalg.norm(n)
        # the interface is the half-line where a_m > a_i: split at its end
        dm = (W[m] - W[i]) @ u
        t_end = -((W[m] - W[i]) @ x0 + b[m] - b[i]) / dm if dm != 0 else 0.0
        for lo, hi in ((-60.0, t_end), (t_end, 60.0)):
            val, _ = integrate.quad(
                integrand, lo, hi, args=(i, j, m, x0, u, n), epsabs=0, epsrel=1e-12, limit=200
            )
            total += val
    return total


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("realizable", marks=pytest.mark.slow),
        pytest.param("same", marks=pytest.mark.slow),  # 21 s; "other" covers the same code
        "other",
        "linear",
        "rho realizable",
    ],
)
def test_gap_coefficient_top2_against_line_integrals_and_the_gap(name):
    law, model, target = _problem(name)
    c = float(exact_gap_coefficient(model, target, law))
    assert c == pytest.approx(_hand_coefficient_d2(law, model, target), rel=1e-9, abs=1e-12)
    if name != "other":  # "other": a teacher line crossing Γ; its O(τ²) needs smaller τ
        _assert_gap_over_tau_tends_to(model, target, law, c)


# ----------------------------------------------------------------------------
# the top-2 boundary mass M_2(w) (T.7)
# ----------------------------------------------------------------------------


@pytest.mark.slow  # tens of seconds of top-2 quadrature compiles; CI keeps the fast cases
def test_top2_boundary_mass_matches_polar_quadrature():
    law, model, _ = _problem("same")
    ws = np.array([0.0, 0.05, 0.4, 2.0])
    got = np.asarray(exact_boundary_mass(model.router, law, jnp.asarray(ws), k=2))
    want = [_reference_mass(model.router, law, w) for w in ws]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    # k = 1 passed explicitly is the default, bit for bit
    np.testing.assert_array_equal(
        exact_boundary_mass(model.router, law, jnp.asarray(ws), k=1),
        exact_boundary_mass(model.router, law, jnp.asarray(ws)),
    )


# ----------------------------------------------------------------------------
# k = 1 regression, gradients, precision, tiny τ, bad input
# ----------------------------------------------------------------------------


@pytest.mark.slow  # tens of seconds of top-2 quadrature compiles; CI keeps the fast cases
def test_k1_explicit_is_bit_identical():
    law, model, target = _problem("other")
    m1 = MoE(model.router, model.experts)
    m1k = MoE(model.router, model.experts, k=1)
    t1 = Teacher(target.router, target.experts, 0.2)
    t1k = Teacher(target.router, target.experts, 0.2, k=1, combine_temperature=2.0)
    taus = jnp.array([1e-3, 0.1])
    a, b = exact_risk_sweep(m1, t1, law, taus), exact_risk_sweep(m1k, t1k, law, taus)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert exact_gap_coefficient(m1, t1, law) == exact_gap_coefficient(m1k, t1k, law)


@pytest.mark.slow  # tens of seconds of top-2 quadrature compiles; CI keeps the fast cases
def test_soft_risk_gradient_matches_finite_differences_top2():
    law, model, target = _problem("other")
    flat, unravel = jax.flatten_util.ravel_pytree(model)

    def f(v):
        return exact_soft_risk(unravel(v), target, law, 0.1)

    grad = np.asarray(jax.grad(f)(flat))
    fj, h = jax.jit(f), 1e-5
    fd = np.array([(fj(flat.at[i].add(h)) - fj(flat.at[i].add(-h))) / (2 * h) for i in range(9)])
    np.testing.assert_allclose(grad[:9], fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.slow  # tens of seconds of top-2 quadrature compiles; CI keeps the fast cases
def test_float32_and_tiny_temperatures():
    law, model, target = _problem("same")
    f32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), (law, model, target))
    got = exact_soft_risk(f32[1], f32[2], f32[0], jnp.float32(0.05))
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(float(exact_soft_risk(model, target, law, 0.05)), rel=3e-5)
    hard64 = float(exact_hard_risk(model, target, law))
    # τ that underflows (float32) or is subnormal: the capped 1/τ gives the hard limit
    for tau in (1e-300, 5e-324, 1e-45):
        for lw, m, t, rel in ((f32[0], f32[1], f32[2], 3e-5), (law, model, target, 1e-12)):
            for mm in (m, MoE(m.router, m.experts)):  # top-2 and top-1
                tt = t if mm.k == 2 else Teacher(t.router, t.experts, t.noise_std)
                soft = float(exact_soft_risk(mm, tt, lw, tau))
                gap = float(exact_risk_gap(mm, tt, lw, tau))
                assert np.isfinite(soft) and np.isfinite(gap), (tau, soft, gap)
                if mm.k == 2:
                    assert soft == pytest.approx(hard64, rel=rel)
                    assert abs(gap) <= rel * hard64


def test_bad_input_names_the_argument():
    law, model, target = _problem("other")
    # a non-covariance in every closed form (issue 15, item 3)
    for cov in ([[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.2], [0.3, 1.0]], [[1.0, np.nan], [0, 1]]):
        with pytest.raises(ValueError, match="`cov`"):
            gaussian_slab_probability([0.0, 1.0], 0.0, np.zeros(2), cov, 1.0)
        with pytest.raises(ValueError, match="`cov`"):
            gaussian_interface_density([0.0, 1.0], 0.0, np.zeros(2), cov)
    with pytest.raises(ValueError, match="`mean`"):
        gaussian_slab_probability([0.0, 1.0], 0.0, [0.0, np.inf], np.eye(2), 1.0)
    with pytest.raises(ValueError, match="`mean`"):
        gaussian_slab_probability([0.0, 1.0], 0.0, np.zeros(3), np.eye(2), 1.0)
    with pytest.raises(ValueError, match="`beta`"):
        gaussian_slab_probability([0.0, np.nan], 0.0, np.zeros(2), np.eye(2), 1.0)
    # routing the exact values cannot do
    sel = MoE(model.router, model.experts, k=2, selection=lambda a: a + 1.0)
    with pytest.raises(ValueError, match="`model.selection`"):
        exact_soft_risk(sel, target, law, 0.1)
    far = Teacher(target.router, target.experts, 0.2, k=2, combine_temperature=1.0)
    law4, model4, target4 = _problem_d4()
    far4 = Teacher(target4.router, target4.experts, 0.2, k=2, combine_temperature=1.0)
    with pytest.raises(ValueError, match="`teacher.combine_temperature`"):
        exact_soft_risk(model4, far4, law4, 0.1)
    assert np.isfinite(float(exact_soft_risk(model, far, law, 0.1)))  # d = 2: in the span
    with pytest.raises(ValueError, match="`kind`"):
        exact_boundary_mass(model.router, law, 0.1, kind="pairwise", k=2)
    with pytest.raises(ValueError, match="`k`"):
        exact_boundary_mass(model.router, law, 0.1, k=3)
    with pytest.raises(ValueError, match="`k`"):
        exact_boundary_mass(LinearRouter(np.eye(2), np.zeros(2)), law, 0.1, k=2)


def test_float32_top2_stays_float32():
    """The fast float32 case (the full tiny-τ grid is in the slow set)."""
    law, model, target = _problem("same")
    f32 = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), (law, model, target))
    got = exact_soft_risk(f32[1], f32[2], f32[0], jnp.float32(0.05))
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(float(exact_soft_risk(model, target, law, 0.05)), rel=3e-5)
    tiny = float(exact_soft_risk(f32[1], f32[2], f32[0], 1e-300))
    assert tiny == pytest.approx(float(exact_hard_risk(model, target, law)), rel=3e-5)
