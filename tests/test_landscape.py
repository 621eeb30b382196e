"""Tests for softhard.landscape (§5): the operator layer, Hessians and their spectra.

Shared test problems live here too (`test_landscape_gauge.py` and
`test_landscape_teacher.py` import them). Every estimator is checked against
something independent: finite differences of the gradient, closed-form
spectra, exact traces. Where a test compares two paths that share the
Hessian-vector-product kernel (Lanczos and `eigh` of the same linearised
HVP), it says so and keeps an independent reference beside it: the dense
Hessian from central differences of the gradient (`big_fd`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy import stats

import softhard as sh
from softhard import landscape as L

#: eigenvalue agreement with the finite-difference Hessian `big_fd` (h = 1e-4)
FD_ATOL = 1e-6

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


def _fd_hessian(loss, model, h):
    """`[P, P]`: row `i` is the central difference `(∇L(p + h e_i) − ∇L(p − h e_i)) / 2h`."""
    flat, unravel = ravel_pytree(model)

    def grad(p):
        return ravel_pytree(jax.grad(loss)(unravel(p)))[0]

    fd = jax.vmap(lambda e: (grad(flat + h * e) - grad(flat - h * e)) / (2 * h))
    return np.asarray(jax.jit(fd)(jnp.eye(flat.size)))


@pytest.fixture(scope="module")
def big_fd(big):
    """Independent reference for `big`: the Hessian by central differences of the gradient.

    Shares no code with the linearised HVP behind `L.hessian`/Lanczos (reverse-mode
    gradients only, h = 1e-4: truncation ~h² and rounding ~eps/h both below 1e-9).
    """
    model, x, y, loss, H, evals = big
    fd = _fd_hessian(loss, model, 1e-4)
    return 0.5 * (fd + fd.T)


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
    flat = ravel_pytree(model)[0]
    fd = _fd_hessian(loss, model, 1e-5).T
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
    # hvp agrees with the dense matrix (one linearised kernel behind both; `hessian` is
    # checked against finite differences of the gradient above)
    v = jax.random.normal(jax.random.key(0), (Pr + Pe,))
    _, unravel = ravel_pytree(model)
    hv = ravel_pytree(jax.jit(lambda m, u: L.hvp(loss, m, u))(model, unravel(v)))[0]
    np.testing.assert_allclose(hv, H @ np.asarray(v), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# the operator layer
# ----------------------------------------------------------------------------


def test_hessian_operator_dense_matvec_and_gauge(mlp_problem):
    model, x, y = mlp_problem

    def loss(m):
        return sh.soft_risk(m, x, y, 0.3)

    flat, unravel = ravel_pytree(model)
    P = flat.size
    v = jax.random.normal(jax.random.key(1), (P,))
    seen = {}  # the operators' static attributes, recorded while tracing

    @jax.jit
    def parts(m, u):
        op = L.hessian_operator(loss, m)
        opg = L.hessian_operator(loss, m, gauge="auto")
        seen.update(op=op, opg=opg, tree=op.unravel(op.matvec(u)))
        return op.dense(), op.dense(batch_size=7), op.matvec(u), opg.dense(), opg.matvec(u)

    dense, dense7, hv_op, dense_g, hv_g = (np.asarray(a) for a in parts(model, v))
    op, opg = seen["op"], seen["opg"]
    assert op.size == P and op.shape == (P, P) and op.dtype == flat.dtype and op.gauge is None
    assert isinstance(seen["tree"], sh.MoE)
    # dense(): the same matrix as `hessian` (checked against finite differences of the
    # gradient in test_hessian_matches_finite_differences_of_grad), in batches or not
    H = np.asarray(jax.jit(lambda m: L.hessian(loss, m))(model))
    np.testing.assert_allclose(dense, H, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dense7, H, rtol=1e-13, atol=1e-13)
    # matvec: the pytree hvp on raveled vectors (the same linearised kernel), and the
    # textbook forward-over-reverse product jvp(grad) as an independent reference
    hv = ravel_pytree(jax.jit(lambda m, u: L.hvp(loss, m, u))(model, unravel(v)))[0]
    np.testing.assert_allclose(hv_op, hv, rtol=1e-12, atol=1e-13)
    jvp = jax.jit(lambda m, u: jax.jvp(jax.grad(loss), (m,), (u,))[1])(model, unravel(v))
    np.testing.assert_allclose(hv_op, ravel_pytree(jvp)[0], rtol=1e-12, atol=1e-13)
    # with the gauge: Π H Π, Π the projector onto the complement of the gauge directions
    G = np.asarray(L.gauge_directions(model))
    assert opg.gauge_dim == G.shape[1] == 5 and opg.free_size == P - 5  # H + 1 for an MLP router
    Pi = np.eye(P) - G @ G.T
    np.testing.assert_allclose(dense_g, Pi @ H @ Pi, atol=1e-12)
    np.testing.assert_allclose(hv_g, Pi @ H @ Pi @ np.asarray(v), atol=1e-12)


def _known_spectrum(P=60, seed=3):
    """A symmetric `[P, P]` matrix with a known spectrum: outliers −3, −2, 2.5, 4 and a bulk."""
    lam = np.r_[-3.0, -2.0, np.linspace(-1.0, 1.0, P - 4), 2.5, 4.0]
    Q = np.linalg.qr(np.random.default_rng(seed).normal(size=(P, P)))[0]
    return jnp.asarray((Q * lam) @ Q.T), lam, Q


def test_spectral_routines_take_a_matrix_or_a_matvec():
    M, lam, Q = _known_spectrum()
    P = lam.size
    ref = np.linalg.eigvalsh(np.asarray(M))
    np.testing.assert_allclose(ref, lam, atol=1e-13)  # eigh's answer is the construction's
    op = L.linear_operator(lambda u: M @ u, P)
    assert op.size == P and op.dtype == jnp.float64
    for obj in (M, np.asarray(M), op):
        np.testing.assert_allclose(L.hessian_spectrum(obj).eigenvalues, ref, atol=1e-12)
        both = L.hessian_spectrum(obj, None, 2, which="both", num_matvecs=40)
        np.testing.assert_allclose(both.eigenvalues, np.r_[ref[:2], ref[-2:]], atol=1e-10)
    np.testing.assert_allclose(op.dense(), M, atol=1e-15)
    assert L.as_operator(op) is op
    # a gauge basis on an operator: the −3 eigenvector projected out
    sp = L.hessian_spectrum(op, gauge=Q[:, :1])
    np.testing.assert_allclose(sp.eigenvalues, ref[1:], atol=1e-12)
    # trace and classification of an operator (no gradient: grad_norm is NaN)
    tr = L.hessian_trace(M, key=jax.random.key(0), num_matvecs=90)
    assert abs(float(tr.value) - lam.sum()) <= 4 * float(tr.stderr)
    cls = L.classify_critical_point(op)
    assert cls.kind == "strict saddle" and cls.num_negative == int(np.sum(lam < -cls.tol))
    np.testing.assert_allclose([cls.lambda_min, cls.lambda_max], [-3.0, 4.0], atol=1e-12)
    assert np.isnan(cls.grad_norm)
    # a bare callable is a loss, never a matvec
    with pytest.raises(ValueError, match="linear_operator"):
        L.hessian_spectrum(lambda u: M @ u)
    with pytest.raises(ValueError, match="auto"):
        L.hessian_spectrum(M, gauge="auto")
    with pytest.raises(ValueError, match="symmetric"):
        L.hessian_spectrum(jnp.triu(M))
    with pytest.raises(ValueError, match="`matvec`"):
        L.linear_operator(lambda u: u[:2], P)


# ----------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------


def test_lanczos_extremes_match_eigh(big, big_fd):
    model, x, y, loss, H, evals = big
    assert H.shape == (528, 528)
    top = L.hessian_spectrum(loss, model, 10, eigenvectors=True)
    # Lanczos and `eigh` here run on the same linearised HVP (`H` is `L.hessian`), so
    # this checks the iteration, not the kernel; the finite-difference Hessian is the
    # independent reference for both
    np.testing.assert_allclose(top.eigenvalues, evals[-10:], rtol=0, atol=1e-8)
    np.testing.assert_allclose(evals, np.linalg.eigvalsh(big_fd), rtol=0, atol=FD_ATOL)
    np.testing.assert_allclose(top.eigenvalues, np.linalg.eigvalsh(big_fd)[-10:], atol=FD_ATOL)
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


def test_gauge_fixed_lanczos_excludes_gauge_zeros(big, big_fd):
    model, x, y, loss, H, evals = big
    G = np.asarray(L.gauge_directions(model))
    assert G.shape[1] == 33  # d + 1 for the linear router
    Q = np.linalg.svd(G, full_matrices=True)[0][:, 33:]
    fixed = np.linalg.eigvalsh(Q.T @ H @ Q)
    sp = L.hessian_spectrum(loss, model, 5, which="magnitude", gauge="auto", eigenvectors=True)
    want = np.sort(fixed[np.argsort(np.abs(fixed))[-5:]])
    # same HVP kernel on both sides (see test_lanczos_extremes_match_eigh); the
    # finite-difference Hessian restricted to the complement is the independent check
    np.testing.assert_allclose(sp.eigenvalues, want, atol=1e-8)
    fixed_fd = np.linalg.eigvalsh(Q.T @ big_fd @ Q)
    want_fd = np.sort(fixed_fd[np.argsort(np.abs(fixed_fd))[-5:]])
    np.testing.assert_allclose(sp.eigenvalues, want_fd, atol=FD_ATOL)
    assert np.max(np.abs(G.T @ np.asarray(sp.eigenvectors))) < 1e-10


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
