"""Tests for softhard.landscape.teacher and .transfer (§5): teacher recovery, the
shape-derivative gradient of the hard risk (5.8) and the transfer gap (Assumption 5.13).

References: exact Gaussian probabilities (`scipy.stats.norm`),
`softhard.gaussian.exact_hard_risk` (K = 2), the interface integral (5.8) by
quadrature (K = 3, itself checked against the exact risk at K = 2) and, in the
slow run, a common-random-numbers finite difference of the hard risk on 2^22
samples. Monte Carlo comparisons state their seed, sample size and the number
of standard errors allowed.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import integrate, stats
from test_landscape import _student2, _student3, _teacher2, _teacher3

import softhard as sh
from softhard import landscape as L

# ----------------------------------------------------------------------------
# teacher side
# ----------------------------------------------------------------------------


def _parallel_setup(N=1 << 16, seed=0):
    """K = 2 teacher with boundary u·x + c = 0 and a student whose boundary is shifted."""
    u = jnp.array([0.6, 0.8])  # unit
    c = 0.2
    teacher = sh.Teacher(
        sh.LinearRouter(jnp.stack([u, -u]) / 2, jnp.array([c, -c]) / 2),
        sh.LinearExperts(jnp.zeros((2, 2)), jnp.array([0.0, 1.0])),
    )
    x = sh.StandardGaussian(2).sample(jax.random.key(seed), N)
    return teacher, x, u, c


def test_teacher_equivalence_against_gaussian_probabilities():
    shift = 0.3
    teacher, x, u, c = _parallel_setup()
    # student boundary u·x + c + shift = 0, experts relabelled (student 1 <-> teacher 0)
    student = sh.MoE(
        sh.LinearRouter(jnp.stack([-u, u]), jnp.array([-(c + shift), c + shift])),
        sh.LinearExperts(jnp.zeros((2, 2)), jnp.array([1.0, 0.0])),
    )
    teq = L.teacher_equivalence(student, teacher, x)
    assert tuple(teq.permutation) == (1, 0)
    # z = u·X ~ N(0, 1): C_0 = {z > −c}, matched student cell = {z > −c − shift}
    exact = stats.norm.cdf(-c) - stats.norm.cdf(-c - shift)
    np.testing.assert_allclose(
        teq.symmetric_difference.value,
        [exact, exact],
        atol=1e-12 + 4 * float(teq.symmetric_difference.stderr[0]),
    )
    assert abs(float(teq.total.value) - 2 * exact) <= 4 * float(teq.total.stderr)
    # the teacher is equivalent to itself
    self_teq = L.teacher_equivalence(teacher.router, teacher, x)
    assert float(self_teq.total.value) == 0.0 and tuple(self_teq.permutation) == (0, 1)


def test_recovery_misrouting_and_separation_against_hand_computation():
    shift = 0.3
    teacher, x, u, c = _parallel_setup()
    eps = 0.1
    student = sh.MoE(
        sh.LinearRouter(jnp.stack([u, -u]), jnp.array([c + shift, -(c + shift)])),
        sh.LinearExperts(jnp.zeros((2, 2)), jnp.array([eps, 1.0])),
    )
    p0 = stats.norm.cdf(c)  # P(C_0) = P(z > −c)
    rec = L.recovery_error(student, teacher, x)
    assert tuple(rec.permutation) == (0, 1)
    # (5.16): expert 0 is off by eps on C_0, expert 1 exact
    assert (
        abs(float(rec.expert_error.value) - eps**2 * p0)
        <= 4 * float(rec.expert_error.stderr) + 1e-12
    )
    # (5.17): Σ_k P(C_k Δ C_π(k)) = 2 P(−c − shift < z < −c)
    wrong = stats.norm.cdf(-c) - stats.norm.cdf(-c - shift)
    assert abs(float(rec.partition_error.value) - 2 * wrong) <= 4 * float(
        rec.partition_error.stderr
    )
    # (5.11) at tau, delta: student score s = 2(z + c + shift); expert 1 confidently
    # chosen when s ≤ −w, w = tau log((1 − δ)/δ); on C_0 = {z > −c}
    tau, delta = 0.05, 0.1
    w = tau * np.log((1 - delta) / delta)
    # z ≤ −c − shift − w/2 never meets C_0, so only C_1 = {z < −c} contributes, where
    # expert 0 is confidently chosen: s ≥ w, i.e. z ≥ −c − shift + w/2
    exact = stats.norm.cdf(-c) - stats.norm.cdf(-c - shift + w / 2)
    mm = L.misrouting_mass(student, teacher, x, tau, delta)
    assert abs(float(mm.value) - exact) <= 4 * float(mm.stderr) + 1e-12
    assert float(mm.value) > 0
    # (5.9): expert outputs are constants, so each entry is P(C_k) or 0
    sep = L.expert_separation(student, teacher, x, 0.5)
    table = np.asarray(sep.table.value)
    close = np.abs(np.array([eps, 1.0])[None, :] - np.array([0.0, 1.0])[:, None]) < 0.5
    pk = np.array([p0, 1 - p0])
    np.testing.assert_allclose(
        table, close * pk[:, None], atol=4 * np.max(np.asarray(sep.table.stderr)) + 1e-12
    )
    assert tuple(sep.permutation) == (0, 1) and float(sep.rho.value) == 0.0


# ----------------------------------------------------------------------------
# the hard-risk gradient by the shape derivative (5.8)
# ----------------------------------------------------------------------------


def _shape_gradient_by_quadrature(model, teacher):
    """Population `∇_φ L_0` for linear models on `N(0, I_2)`: (5.8) by quadrature, `[Pφ]`.

    For each pair `i < j` the interface `S_ij = {s_ij = 0, a_i = a_j ≥ a_k}` is a
    part (a half-line for K = 3) of the line `s_ij(x) = n·x + off = 0`; along it,
    `∂L_0/∂φ = Σ_{i<j} ∫_{S_ij} D_ij(x) ∂_φ s_ij(x) p(x) / |n| dH¹(x)` with
    `D_ij = (f* − f_i)² − (f* − f_j)²` (the noise cancels) and
    `∂s_ij/∂(W_i, b_i) = (x, 1) = −∂s_ij/∂(W_j, b_j)`. `scipy.integrate.quad` on
    the pieces between the points where a teacher interface crosses the line
    (where `f*` jumps). Shares nothing with the kernel-smoothed estimator.
    """
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    Wt, bt = np.asarray(teacher.router.W), np.asarray(teacher.router.b)
    Bt, ct = np.asarray(teacher.experts.B), np.asarray(teacher.experts.c)
    K = W.shape[0]
    g = np.zeros((K, 3))  # per expert k: ∂/∂W_k (2 columns), ∂/∂b_k
    for i, j in itertools.combinations(range(K), 2):
        n, off = W[i] - W[j], b[i] - b[j]
        norm = np.linalg.norm(n)
        x0, e = -off * n / norm**2, np.array([-n[1], n[0]]) / norm  # x(r) = x0 + r e
        lo, hi = -np.inf, np.inf  # where a_i(x(r)) ≥ a_k(x(r)) for the other k
        for k in set(range(K)) - {i, j}:
            alpha, beta = (W[i] - W[k]) @ x0 + b[i] - b[k], (W[i] - W[k]) @ e
            if beta > 0:
                lo = max(lo, -alpha / beta)
            elif beta < 0:
                hi = min(hi, -alpha / beta)
        cuts = []
        for p, q in itertools.combinations(range(K), 2):
            beta = (Wt[p] - Wt[q]) @ e
            r = -((Wt[p] - Wt[q]) @ x0 + bt[p] - bt[q]) / beta if beta != 0 else np.nan
            if lo < r < hi:
                cuts.append(r)
        edges = [lo, *sorted(cuts), hi]

        def integrand(r, comp, x0=x0, e=e, i=i, j=j, norm=norm):
            x = x0 + r * e
            f = B @ x + c
            fstar = (Bt @ x + ct)[np.argmax(Wt @ x + bt)]
            contrast = (fstar - f[i]) ** 2 - (fstar - f[j]) ** 2
            return contrast * np.r_[x, 1.0][comp] * np.exp(-0.5 * x @ x) / (2 * np.pi * norm)

        for comp in range(3):
            val = sum(
                integrate.quad(integrand, a, z, args=(comp,), epsabs=1e-13, epsrel=1e-12)[0]
                for a, z in zip(edges[:-1], edges[1:])
                if z > a
            )
            g[i, comp] += val
            g[j, comp] -= val
    return np.r_[g[:, :2].ravel(), g[:, 2]]  # the raveled order of LinearRouter(W, b)


def test_hard_risk_gradient_matches_exact_hard_risk_k2():
    from softhard.gaussian import exact_hard_risk

    teacher, law, model = _teacher2(noise_std=0.3), sh.StandardGaussian(2), _student2()
    flat, unravel = ravel_pytree(model.router)
    risk = jax.jit(lambda p: exact_hard_risk(sh.MoE(unravel(p), model.experts), teacher, law))
    h = 1e-4
    fd = np.array([(risk(flat + h * e) - risk(flat - h * e)) / (2 * h) for e in np.eye(flat.size)])
    # the quadrature reference of the K = 3 test, checked here against the exact risk
    np.testing.assert_allclose(_shape_gradient_by_quadrature(model, teacher), fd, atol=1e-7)
    x, y = teacher.sample(jax.random.key(0), law, 1 << 19)
    est = L.hard_risk_gradient(model, x, y)
    assert isinstance(est.value, sh.LinearRouter) and est.value.W.shape == (2, 2)
    v, se = ravel_pytree(est.value)[0], ravel_pytree(est.stderr)[0]
    assert np.all(np.asarray(se) < 0.03 * np.max(np.abs(fd)))
    assert np.all(np.abs(np.asarray(v) - fd) <= 4 * np.asarray(se)), (v, fd, se)
    # gauge: rows of the gradient sum to zero (adding a common row changes nothing)
    np.testing.assert_allclose(np.sum(est.value.W, 0), 0, atol=1e-12)


def _estimate_k3(n_est):
    teacher, law, model = _teacher3(noise_std=0.3), sh.StandardGaussian(2), _student3()
    x, y = teacher.sample(jax.random.key(2), law, n_est)
    est = L.hard_risk_gradient(model, x, y)
    v, se = np.asarray(ravel_pytree(est.value)[0]), np.asarray(ravel_pytree(est.stderr)[0])
    return teacher, model, v, se


def test_hard_risk_gradient_matches_interface_quadrature_k3():
    """K = 3 (triple junction) against the exact population gradient, N = 2^21 (seed 2).

    The reference has no Monte Carlo error, so the whole 4-standard-error band is
    the estimator's: measured 4·max(se) = 0.27·max|∇L_0| (the `h`-vs-`2h` bias check
    included), asserted below 0.3, every component within 4 se.
    """
    teacher, model, v, se = _estimate_k3(1 << 21)
    exact = _shape_gradient_by_quadrature(model, teacher)
    assert np.all(4 * se < 0.3 * np.max(np.abs(exact))), (se, exact)
    assert np.all(np.abs(v - exact) <= 4 * se), (v, exact, se)


@jax.jit
def _hard_losses(router, experts, x, y):
    return (y - sh.hard_predict(sh.MoE(router, experts), x)) ** 2


@pytest.mark.slow
def test_hard_risk_gradient_matches_crn_finite_differences_k3_large():
    """Central differences of the hard risk on 2^22 common random numbers (K = 3).

    Independent of both the estimator and the quadrature reference, which it checks too.
    """
    teacher, model, v, se = _estimate_k3(1 << 21)
    law = sh.StandardGaussian(2)
    flat, unravel = ravel_pytree(model.router)
    n_fd = 1 << 22
    xs, ys = teacher.sample(jax.random.key(1), law, n_fd)
    h = 0.02
    fd, fd_se = [], []
    for e in np.eye(flat.size):
        up = _hard_losses(unravel(flat + h * e), model.experts, xs, ys)
        down = _hard_losses(unravel(flat - h * e), model.experts, xs, ys)
        dd = (up - down) / (2 * h)  # paired: only the flipped samples differ
        fd.append(float(dd.mean()))
        fd_se.append(float(dd.std() / np.sqrt(n_fd)))
    fd, fd_se = np.array(fd), np.array(fd_se)
    tol = 4 * np.sqrt(se**2 + fd_se**2)
    assert np.all(tol < 0.4 * np.max(np.abs(fd)))
    assert np.all(np.abs(v - fd) <= tol), (v, fd, se, fd_se)
    exact = _shape_gradient_by_quadrature(model, teacher)
    assert np.all(np.abs(fd - exact) <= 4 * fd_se), (fd, exact, fd_se)


# ----------------------------------------------------------------------------
# transfer gap (Assumption 5.13)
# ----------------------------------------------------------------------------


def test_transfer_gap_decreases_at_the_fitted_rate():
    teacher, law, model = _teacher2(), sh.StandardGaussian(2), _student2()
    x, y = teacher.sample(jax.random.key(3), law, 1 << 19)
    taus = jnp.array([0.05, 0.1, 0.2, 0.4])
    gap = L.transfer_gap(model, x, y, taus)
    for vals, rate in ((gap.router, gap.router_rate), (gap.experts, gap.experts_rate)):
        vals = np.asarray(vals)
        assert np.all(np.diff(vals) > 0)  # decreases as tau -> 0
        # the reported rate describes the data: each gap within 15% of the fitted power law
        fit = np.exp(np.mean(np.log(vals) - rate * np.log(np.asarray(taus))))
        np.testing.assert_allclose(vals, fit * np.asarray(taus) ** rate, rtol=0.15)
        assert 0.8 < rate < 1.25  # O(tau) for a regular router
    assert np.all(np.asarray(gap.router) > 3 * np.asarray(gap.router_stderr))
    np.testing.assert_allclose(gap.total, np.hypot(gap.router, gap.experts), rtol=1e-12)
