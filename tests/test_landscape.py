"""Tests for softhard.landscape (§5): Hessians, spectra, gauge, critical points,
teacher recovery, the shape-derivative gradient of the hard risk and transfer gaps.

Every estimator is checked against something independent: finite differences,
dense `eigh`, exact traces, exact Gaussian probabilities (`scipy.stats.norm`),
`softhard.gaussian.exact_hard_risk` (K = 2) or a common-random-numbers finite
difference of the hard risk on 2^22 samples (K = 3). Monte Carlo comparisons
state their seed, sample size and the number of standard errors allowed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import stats

import softhard as sh
from softhard import landscape as L

# ----------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------


def _teacher2(noise_std=0.0):
    """K = 2 linear teacher in d = 2 with an offset boundary and an expert contrast."""
    return sh.Teacher(
        sh.LinearRouter(jnp.array([[1.0, 0.3], [-1.0, -0.3]]), jnp.array([0.3, -0.3])),
        sh.LinearExperts(jnp.array([[1.0, 1.0], [-1.0, 0.5]]), jnp.array([0.5, -0.2])),
        noise_std=noise_std,
    )


def _teacher3(noise_std=0.0):
    ang = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + 0.2
    return sh.Teacher(
        sh.LinearRouter(
            jnp.array(np.stack([np.cos(ang), np.sin(ang)], 1)), jnp.array([0.2, 0, -0.1])
        ),
        sh.LinearExperts(
            jnp.array([[1.0, 0.5], [-1.0, 0.5], [0.3, -1.2]]), jnp.array([0.5, -0.2, 0.1])
        ),
        noise_std=noise_std,
    )


def _symmetric_point(x, y, K=2):
    """Identical experts (the least-squares line) and a balanced linear router."""
    d = x.shape[1]
    X1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], 1)
    beta = jnp.linalg.lstsq(X1, y)[0]
    router = sh.LinearRouter(jnp.zeros((K, d)), jnp.zeros(K))
    experts = sh.LinearExperts(jnp.tile(beta[:d], (K, 1)), jnp.full((K,), beta[d]))
    return sh.MoE(router, experts)


@pytest.fixture(scope="module")
def big():
    """K = 8, d = 32 linear MoE (P = 8·32·2 + 16 = 528) on 1024 samples, its dense Hessian."""
    K, d, N = 8, 32, 1024
    ks = jax.random.split(jax.random.key(7), 5)
    model = sh.MoE(
        sh.LinearRouter(
            jax.random.normal(ks[0], (K, d)) / np.sqrt(d), 0.1 * jax.random.normal(ks[1], (K,))
        ),
        sh.LinearExperts(jax.random.normal(ks[2], (K, d)) / np.sqrt(d), jnp.zeros(K)),
    )
    x = jax.random.normal(ks[3], (N, d))
    y = jax.random.normal(ks[4], (N,))

    def loss(p):
        return sh.soft_risk(p, x, y, 0.5)

    H = np.asarray(jax.jit(lambda m: L.hessian(loss, m))(model))
    return model, x, y, loss, H, np.linalg.eigvalsh(H)


@pytest.fixture(scope="module")
def mlp_problem():
    """MoE with an MLP router (d = 3, H = 4, K = 3) and linear experts, 256 samples."""
    d, H, K, N = 3, 4, 3, 256
    ks = jax.random.split(jax.random.key(11), 8)
    router = sh.MLPRouter(
        jax.random.normal(ks[0], (H, d)),
        0.1 * jax.random.normal(ks[1], (H,)),
        jax.random.normal(ks[2], (K, H)),
        0.1 * jax.random.normal(ks[3], (K,)),
    )
    experts = sh.LinearExperts(jax.random.normal(ks[4], (K, d)), jax.random.normal(ks[5], (K,)))
    x = jax.random.normal(ks[6], (N, d))
    y = jnp.sin(x[:, 0]) + x[:, 1] * x[:, 2]
    return sh.MoE(router, experts), x, y


# ----------------------------------------------------------------------------
# Hessians
# ----------------------------------------------------------------------------


def test_hessian_matches_finite_differences_of_grad(mlp_problem):
    model, x, y = mlp_problem

    def loss(m):
        return sh.soft_risk(m, x, y, 0.3)

    # the lax.map path (batches of 5 tangents) and the plain jacfwd path, under jit
    H = np.asarray(jax.jit(lambda m: L.hessian(loss, m, batch_size=5))(model))
    H_all = np.asarray(jax.jit(lambda m: L.hessian(loss, m, batch_size=None))(model))
    flat, unravel = ravel_pytree(model)

    def grad(p):
        return ravel_pytree(jax.grad(loss)(unravel(p)))[0]

    h = 1e-5
    fd = jax.jit(jax.vmap(lambda e: (grad(flat + h * e) - grad(flat - h * e)) / (2 * h)))(
        jnp.eye(flat.size)
    )
    fd = np.asarray(fd).T
    assert H.shape == (flat.size, flat.size)
    np.testing.assert_allclose(H, H.T, atol=0)
    assert np.max(np.abs(H - fd)) <= 1e-6 * np.max(np.abs(H))
    np.testing.assert_allclose(H_all, H, rtol=1e-12, atol=1e-12)


def test_hessian_float32_agrees_with_float64(mlp_problem):
    model, x, y = mlp_problem
    m32 = jax.tree.map(lambda a: a.astype(jnp.float32), model)
    H64 = np.asarray(jax.jit(lambda m: L.hessian(lambda p: sh.soft_risk(p, x, y, 0.3), m))(model))
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    H32 = jax.jit(lambda m: L.hessian(lambda p: sh.soft_risk(p, x32, y32, 0.3), m))(m32)
    assert H32.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(H32) - H64)) <= 1e-4 * np.max(np.abs(H64))


def test_hessian_blocks_and_hvp(mlp_problem):
    model, x, y = mlp_problem

    def loss(m):
        return sh.soft_risk(m, x, y, 0.3)

    H, blocks = jax.jit(lambda m: (L.hessian(loss, m), L.hessian_blocks(loss, m)))(model)
    H = np.asarray(H)
    Pr = ravel_pytree(model.router)[0].size
    Pe = ravel_pytree(model.experts)[0].size
    assert blocks.router_router.shape == (Pr, Pr)
    assert blocks.router_experts.shape == (Pr, Pe)
    assert blocks.experts_experts.shape == (Pe, Pe)
    # router block = Hessian of the loss in the router alone (independent computation)
    rflat, runravel = ravel_pytree(model.router)
    Hr = jax.jit(jax.hessian(lambda r: loss(sh.MoE(runravel(r), model.experts))))(rflat)
    np.testing.assert_allclose(blocks.router_router, Hr, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(blocks.router_experts, H[:Pr, Pr:], rtol=1e-12, atol=1e-14)
    # hvp agrees with the dense matrix
    v = jax.random.normal(jax.random.key(0), (Pr + Pe,))
    _, unravel = ravel_pytree(model)
    hv = ravel_pytree(jax.jit(lambda m, u: L.hvp(loss, m, u))(model, unravel(v)))[0]
    np.testing.assert_allclose(hv, H @ np.asarray(v), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------


def test_lanczos_extremes_match_eigh(big):
    model, x, y, loss, H, evals = big
    assert H.shape == (528, 528)
    top = L.hessian_spectrum(loss, model, 10, eigenvectors=True)
    np.testing.assert_allclose(top.eigenvalues, evals[-10:], rtol=0, atol=1e-8)
    V = np.asarray(top.eigenvectors)
    assert V.shape == (528, 10)
    resid = np.linalg.norm(H @ V - V * np.asarray(top.eigenvalues), axis=0)
    assert np.max(resid) < 1e-6
    # both ends, from a random start vector, under jit
    both = jax.jit(lambda m: L.hessian_spectrum(loss, m, 4, which="both", key=jax.random.key(1)))(
        model
    )
    np.testing.assert_allclose(both.eigenvalues, np.r_[evals[:4], evals[-4:]], atol=1e-8)


@pytest.mark.parametrize(
    "method",
    ["hutch++", *(pytest.param(m, marks=pytest.mark.slow) for m in ("hutchinson", "xtrace"))],
)
def test_trace_within_stated_error(big, method):
    model, x, y, loss, H, evals = big
    exact = np.trace(H)
    est = L.hessian_trace(loss, model, key=jax.random.key(3), num_matvecs=90, method=method)
    se = float(est.stderr)
    assert 0 < se < 0.05 * abs(exact), (method, se)
    assert abs(float(est.value) - exact) <= 4 * se, (method, float(est.value), exact, se)


def test_spectral_density_matches_broadened_eigenvalues(big):
    model, x, y, loss, H, evals = big
    grid = jnp.linspace(evals[0] - 0.2, evals[-1] + 0.2, 60)
    sigma = 0.05
    dens = L.spectral_density(
        loss, model, key=jax.random.key(5), grid=grid, sigma=sigma, num_matvecs=50, num_probes=16
    )
    exact = stats.norm.pdf((np.asarray(grid)[:, None] - evals[None, :]) / sigma).mean(1) / sigma
    v, se = np.asarray(dens.density.value), np.asarray(dens.density.stderr)
    assert np.all(np.abs(v - exact) <= 4 * se + 1e-3 * exact.max())
    mass = float(np.sum(v) * (grid[1] - grid[0]))
    assert abs(mass - 1.0) < 0.02


def test_spectra_vmap_over_temperatures(mlp_problem):
    model, x, y = mlp_problem
    taus = jnp.array([0.1, 0.3, 1.0])

    def loss(m, t):
        return sh.soft_risk(m, x, y, t)

    sweep = jax.jit(lambda m: L.spectrum_sweep(loss, m, taus))(model)
    flat, unravel = ravel_pytree(model)
    assert sweep.eigenvalues.shape == (3, flat.size)
    # reference: plain jax.hessian + eigvalsh at each temperature
    ref = jax.jit(
        jax.vmap(lambda t: jnp.linalg.eigvalsh(jax.hessian(lambda p: loss(unravel(p), t))(flat)))
    )(taus)
    np.testing.assert_allclose(sweep.eigenvalues, ref, atol=1e-10)
    # the documented one-liner: Lanczos extremes at every temperature from one vmap
    top = jax.jit(
        jax.vmap(
            lambda t: L.hessian_spectrum(lambda p: loss(p, t), model, 2, num_matvecs=20).eigenvalues
        )
    )(taus)
    np.testing.assert_allclose(top, sweep.eigenvalues[:, -2:], atol=1e-8)


@pytest.mark.slow
def test_lanczos_float32_with_float64_accumulation():
    K, d, N = 4, 8, 512
    ks = jax.random.split(jax.random.key(2), 5)
    model = sh.MoE(
        sh.LinearRouter(jax.random.normal(ks[0], (K, d)), jax.random.normal(ks[1], (K,))),
        sh.LinearExperts(jax.random.normal(ks[2], (K, d)), jnp.zeros(K)),
    )
    x, y = jax.random.normal(ks[3], (N, d)), jax.random.normal(ks[4], (N,))
    H = jax.jit(lambda m: L.hessian(lambda p: sh.soft_risk(p, x, y, 0.5), m))(model)
    ref = np.linalg.eigvalsh(np.asarray(H))
    m32 = jax.tree.map(lambda a: a.astype(jnp.float32), model)
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    sp = jax.jit(
        lambda m: L.hessian_spectrum(
            lambda p: sh.soft_risk(p, x32, y32, 0.5),
            m,
            3,
            num_matvecs=30,
            lanczos_dtype=jnp.float64,
        )
    )(m32)
    assert sp.eigenvalues.dtype == jnp.float64
    np.testing.assert_allclose(sp.eigenvalues, ref[-3:], rtol=1e-4)


# ----------------------------------------------------------------------------
# gauge
# ----------------------------------------------------------------------------


def _projector(G):
    G = np.asarray(G)
    return G @ np.linalg.pinv(G)


@pytest.mark.parametrize("router_kind", ["linear", "mlp", "normalized"])
def test_gauge_directions_are_exact_null_vectors(router_kind):
    K, d, Hh, N = 3, 2, 4, 128
    ks = jax.random.split(jax.random.key(4), 8)
    if router_kind == "linear":
        router = sh.LinearRouter(jax.random.normal(ks[0], (K, d)), jax.random.normal(ks[1], (K,)))
        G_expected = d + 1
    elif router_kind == "mlp":
        router = sh.MLPRouter(
            jax.random.normal(ks[0], (Hh, d)),
            jax.random.normal(ks[1], (Hh,)),
            jax.random.normal(ks[2], (K, Hh)),
            jax.random.normal(ks[3], (K,)),
        )
        G_expected = Hh + 1
    else:
        router = L.NormalizedRouter(
            3.0 * jax.random.normal(ks[0], (K, d)), jax.random.normal(ks[1], (K,))
        )
        G_expected = K + 1
    model = sh.MoE(router, sh.LinearExperts(jax.random.normal(ks[4], (K, d)), jnp.zeros(K)))
    x = jax.random.normal(ks[5], (N, d))
    y = jax.random.normal(ks[6], (N,))

    def loss(m):
        return sh.soft_risk(m, x, y, 0.4)

    G = np.asarray(L.gauge_directions(model))
    P = ravel_pytree(model)[0].size
    assert G.shape == (P, G_expected)
    np.testing.assert_allclose(G.T @ G, np.eye(G_expected), atol=1e-12)
    H = np.asarray(jax.jit(lambda m: L.hessian(loss, m))(model))
    flat, unravel = ravel_pytree(model)
    if router_kind == "normalized":
        # scale invariance f(c w_k) = f(w) gives H w_k = −∇_{row k} f (Euler), so the
        # radial directions are null vectors exactly at critical points; the bias
        # shift is a translation and is null everywhere
        g = np.asarray(ravel_pytree(jax.grad(loss)(model))[0])
        norms = np.linalg.norm(np.asarray(router.W), axis=1)
        for k in range(K):
            mask = np.abs(G[:, k]) > 0
            want = -np.where(mask, g, 0.0) / norms[k]
            np.testing.assert_allclose(H @ G[:, k], want, atol=1e-10)
        assert np.max(np.abs(H @ G[:, K])) < 1e-10 * np.max(np.abs(H))
    else:
        assert np.max(np.abs(H @ G)) < 1e-10 * np.max(np.abs(H))
        # gauge-fixed dense spectrum: exactly the P − G remaining eigenvalues
        full = np.linalg.eigvalsh(H)
        fixed = jax.jit(lambda m: L.hessian_spectrum(loss, m, gauge="auto").eigenvalues)(model)
        assert fixed.shape == (P - G_expected,)
        zeros = np.argsort(np.abs(full))[:G_expected]
        np.testing.assert_allclose(fixed, np.sort(np.delete(full, zeros)), atol=1e-10)
    # moving along a gauge direction leaves the loss unchanged
    moved = unravel(flat + 0.3 * G[:, 0])
    np.testing.assert_allclose(loss(moved), loss(model), rtol=1e-12)
    # the numerical null space of the centred-logit Jacobian spans the same space
    Gn = np.asarray(L.gauge_directions(model, x=x))
    np.testing.assert_allclose(_projector(Gn), _projector(G), atol=1e-8)


def test_gauge_fixed_lanczos_excludes_gauge_zeros(big):
    model, x, y, loss, H, evals = big
    G = np.asarray(L.gauge_directions(model))
    assert G.shape[1] == 33  # d + 1 for the linear router
    Q = np.linalg.svd(G, full_matrices=True)[0][:, 33:]
    fixed = np.linalg.eigvalsh(Q.T @ H @ Q)
    sp = L.hessian_spectrum(loss, model, 5, which="magnitude", gauge="auto", eigenvectors=True)
    want = np.sort(fixed[np.argsort(np.abs(fixed))[-5:]])
    np.testing.assert_allclose(sp.eigenvalues, want, atol=1e-8)
    assert np.max(np.abs(G.T @ np.asarray(sp.eigenvectors))) < 1e-10


# ----------------------------------------------------------------------------
# critical points and their classification
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saddle_problem():
    teacher = _teacher2()
    x, y = teacher.sample(jax.random.key(1), sh.StandardGaussian(2), 2048)
    tau = jnp.asarray(0.2)
    mu = 1e-2

    def penalised(p, xx, yy, t):
        # soft risk + a weight decay on the gauge-fixed (centred) router: keeps the
        # sharpness finite and the gauge exact
        W, b = p.router.W, p.router.b
        decay = jnp.sum((W - W.mean(0)) ** 2) + jnp.sum((b - b.mean()) ** 2)
        return sh.soft_risk(p, xx, yy, t) + mu * decay

    return teacher, x, y, tau, penalised


def test_symmetric_point_is_strict_saddle(saddle_problem):
    teacher, x, y, tau, penalised = saddle_problem
    sym = _symmetric_point(x, y)

    def loss(p):
        return sh.soft_risk(p, x, y, tau)

    cls = L.classify_critical_point(loss, sym, None)
    assert cls.grad_norm < 1e-12  # critical by construction (Δf = 0, least squares)
    assert cls.kind == "strict saddle"
    assert cls.lambda_min < -0.1 and cls.num_negative >= 1
    assert cls.gauge_dim == 3
    # an independent witness of negative curvature: split the experts along the
    # teacher contrast while sharpening the router along the teacher direction
    _, unravel = ravel_pytree(sym)
    v = sh.MoE(
        sh.LinearRouter(jnp.array([[1.0, 0.3], [-1.0, -0.3]]), jnp.zeros(2)),
        sh.LinearExperts(jnp.array([[1.0, 0.25], [-1.0, -0.25]]), jnp.array([0.35, -0.35])),
    )
    vflat = ravel_pytree(v)[0]
    quad = float(vflat @ ravel_pytree(L.hvp(loss, sym, unravel(vflat)))[0])
    assert quad < 0


def test_minimum_near_teacher_is_minimum_after_gauge_projection(saddle_problem):
    teacher, x, y, tau, penalised = saddle_problem
    sym = _symmetric_point(x, y)
    start = sh.MoE(teacher.router, teacher.experts)
    swapped = L.permute_experts(start, [1, 0])
    cps = L.find_critical_points(penalised, [start, swapped, sym], args=(x, y, tau), kind="any")
    best = cps[0]
    assert best.grad_norm <= 1e-8
    assert best.count >= 2  # the permuted start lands on the same point
    loss = lambda p: penalised(p, x, y, tau)  # noqa: E731
    cls = L.classify_critical_point(loss, best.params, None)
    assert cls.kind == "minimum" and cls.gauge_dim == 3 and cls.lambda_min > 1e-4
    # without the gauge projection the d + 1 = 3 exact zeros make it look degenerate
    assert L.classify_critical_point(loss, best.params, None, gauge=None).kind == "degenerate"
    teq = L.teacher_equivalence(best.params, teacher, x)
    assert float(teq.total.value) < 0.1
    # the saddle is found too, and classified as one
    kinds = {L.classify_critical_point(loss, c.params).kind for c in cps}
    assert "strict saddle" in kinds
    # duplicates up to permutation were merged
    for i, a in enumerate(cps):
        for b in cps[i + 1 :]:
            assert not L._same_point(a.params, b.params, 1e-5)


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


def _student2():
    return sh.MoE(
        sh.LinearRouter(jnp.array([[0.8, -0.5], [-0.2, 0.4]]), jnp.array([0.1, -0.2])),
        sh.LinearExperts(jnp.array([[0.9, 1.1], [-0.7, 0.4]]), jnp.array([0.3, 0.1])),
    )


def _student3():
    ang = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + 0.5
    return sh.MoE(
        sh.LinearRouter(
            jnp.array(np.stack([np.cos(ang), 1.3 * np.sin(ang)], 1)), jnp.array([0.0, 0.1, -0.2])
        ),
        sh.LinearExperts(
            jnp.array([[1.6, 0.8], [-1.8, 1.4], [0.4, -2.0]]), jnp.array([0.4, -0.1, 0.2])
        ),
    )


def test_hard_risk_gradient_matches_exact_hard_risk_k2():
    from softhard.gaussian import exact_hard_risk

    teacher, law, model = _teacher2(noise_std=0.3), sh.StandardGaussian(2), _student2()
    flat, unravel = ravel_pytree(model.router)
    risk = jax.jit(lambda p: exact_hard_risk(sh.MoE(unravel(p), model.experts), teacher, law))
    h = 1e-4
    fd = np.array([(risk(flat + h * e) - risk(flat - h * e)) / (2 * h) for e in np.eye(flat.size)])
    x, y = teacher.sample(jax.random.key(0), law, 1 << 19)
    est = L.hard_risk_gradient(model, x, y)
    assert isinstance(est.value, sh.LinearRouter) and est.value.W.shape == (2, 2)
    v, se = ravel_pytree(est.value)[0], ravel_pytree(est.stderr)[0]
    assert np.all(np.asarray(se) < 0.03 * np.max(np.abs(fd)))
    assert np.all(np.abs(np.asarray(v) - fd) <= 4 * np.asarray(se)), (v, fd, se)
    # gauge: rows of the gradient sum to zero (adding a common row changes nothing)
    np.testing.assert_allclose(np.sum(est.value.W, 0), 0, atol=1e-12)


@jax.jit
def _hard_losses(router, experts, x, y):
    return (y - sh.hard_predict(sh.MoE(router, experts), x)) ** 2


def _crn_check_k3(n_fd, n_est, rel):
    """Central differences of the hard risk on `n_fd` common random numbers (K = 3)."""
    teacher, law, model = _teacher3(noise_std=0.3), sh.StandardGaussian(2), _student3()
    flat, unravel = ravel_pytree(model.router)
    xs, ys = teacher.sample(jax.random.key(1), law, n_fd)
    h = 0.02
    fd, fd_se = [], []
    for e in np.eye(flat.size):
        up = _hard_losses(unravel(flat + h * e), model.experts, xs, ys)
        down = _hard_losses(unravel(flat - h * e), model.experts, xs, ys)
        dd = (up - down) / (2 * h)  # paired: only the flipped samples differ
        fd.append(float(dd.mean()))
        fd_se.append(float(dd.std() / np.sqrt(n_fd)))
    x, y = teacher.sample(jax.random.key(2), law, n_est)
    est = L.hard_risk_gradient(model, x, y)
    v, se = np.asarray(ravel_pytree(est.value)[0]), np.asarray(ravel_pytree(est.stderr)[0])
    fd, fd_se = np.array(fd), np.array(fd_se)
    tol = 4 * np.sqrt(se**2 + fd_se**2)
    assert np.all(tol < rel * np.max(np.abs(fd)))
    assert np.all(np.abs(v - fd) <= tol), (v, fd, se, fd_se)


def test_hard_risk_gradient_matches_crn_finite_differences_k3():
    _crn_check_k3(n_fd=1 << 21, n_est=1 << 19, rel=0.8)


@pytest.mark.slow
def test_hard_risk_gradient_matches_crn_finite_differences_k3_large():
    _crn_check_k3(n_fd=1 << 22, n_est=1 << 21, rel=0.4)


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


# ----------------------------------------------------------------------------
# the Theorem 5.17 experiment
# ----------------------------------------------------------------------------


def _family2(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return sh.MoE(
        L.NormalizedRouter(jax.random.normal(k1, (2, 2)), 0.3 * jax.random.normal(k2, (2,))),
        sh.LinearExperts(jax.random.normal(k3, (2, 2)), jnp.zeros(2)),
    )


def test_strict_saddle_report_small():
    teacher = _teacher2()
    x, y = teacher.sample(jax.random.key(9), sh.StandardGaussian(2), 1024)
    sym = _symmetric_point(x, y)
    # the hand-built saddle (parallel rows: balanced router, identical experts) and a
    # start near the teacher (teacher's row directions, wrong experts)
    sym = sh.MoE(L.NormalizedRouter(jnp.array([[1.0, 0.0], [1.0, 0.0]]), jnp.zeros(2)), sym.experts)
    near = sh.MoE(
        L.NormalizedRouter(teacher.router.W, jnp.zeros(2)),
        sh.LinearExperts(jnp.zeros((2, 2)), jnp.zeros(2)),
    )
    rep = L.strict_saddle_report(
        teacher,
        _family2,
        jnp.array([0.1, 0.2]),
        law=sh.StandardGaussian(2),
        key=jax.random.key(9),
        num_samples=1024,
        num_eval=1 << 13,
        num_inits=0,
        extra_inits=[near, sym],
        adam_steps=50,
    )
    assert rep.consistent
    for tau in (0.1, 0.2):
        rows = [r for r in rep.rows if r["tau"] == tau]
        best = [r for r in rows if r["global_min"]]
        assert len(best) == 1 and best[0]["kind"] == "minimum" and best[0]["teacher_equivalent"]
        assert any(r["kind"] == "strict saddle" and not r["teacher_equivalent"] for r in rows)
    # the global minimiser's partition error grows with tau (5.17)
    pe = rep.recovery["partition_error"]
    assert pe.shape == (2,) and 0 < pe[0] < pe[1]
    text = L.format_report(rep)
    assert "strict saddle" in text and "slopes" in text


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------


def test_validation_errors(mlp_problem):
    model, x, y = mlp_problem

    def loss(m):
        return sh.soft_risk(m, x, y, 0.3)

    with pytest.raises(ValueError, match="`k`"):
        L.hessian_spectrum(loss, model, 0)
    with pytest.raises(ValueError, match="`which`"):
        L.hessian_spectrum(loss, model, 2, which="top")
    with pytest.raises(ValueError, match="`gauge`"):
        L.hessian_spectrum(loss, model, gauge=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="scalar"):
        L.hessian(lambda m: sh.soft_predict(m, x, 0.3), model)
    with pytest.raises(ValueError, match="`inits`"):
        L.find_critical_points(lambda p: loss(p), [])
    with pytest.raises(ValueError, match="`method`"):
        L.hessian_trace(loss, model, key=jax.random.key(0), method="exact")
    with pytest.raises(ValueError, match="permutation"):
        L.permute_experts(model, [0, 0, 1])
    teacher = _teacher2()
    with pytest.raises(ValueError, match="K = 3"):
        L.teacher_equivalence(_student3(), teacher, x[:, :2])
    with pytest.raises(ValueError, match="delta"):
        L.misrouting_mass(_student2(), teacher, x[:, :2], 0.1, 0.7)
    with pytest.raises(ValueError, match="NaN"):
        L.hessian(loss, jax.tree.map(lambda a: a * jnp.nan, model))
