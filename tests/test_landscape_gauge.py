"""Tests for softhard.landscape.gauge and .critical (§2 "Symmetries", §5): gauge bases and
permutations by dispatch (built-in and user-registered routers), critical points and their
classification, and the Theorem 5.17 report (`softhard.diagnostics.saddles`).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_landscape import _symmetric_point, _teacher2

import softhard as sh
from softhard import landscape as L
from softhard.diagnostics.saddles import SaddleRow, format_report, strict_saddle_report
from softhard.landscape.critical import _same_point

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


# ----------------------------------------------------------------------------
# symmetries by dispatch: a user's router
# ----------------------------------------------------------------------------


def _affine_type(name: str, fields: str):
    """A user's affine map `x ↦ A x + c` (fields `A [K, d]`, `c [K]`) as a namedtuple
    subclass: a pytree for JAX with no registration, and no softhard registrations."""

    def call(self, x):
        return jnp.dot(self[0], x, precision=jax.lax.Precision.HIGHEST) + self[1]

    base = collections.namedtuple(name, fields)
    return type(name, (base,), {"__call__": call, "__slots__": ()})


_AffineRouter = _affine_type("_AffineRouter", "W b")  # registered below
_PlainRouter = _affine_type("_PlainRouter", "W b")  # never registered
_PlainBank = _affine_type("_PlainBank", "B c")


@L.gauge_basis.register(_AffineRouter)
def _affine_translations(router):
    """The user's gauge basis: `W ↦ W + 1uᵀ` (one column per input) and `b ↦ b + c1`."""
    K, d = router.W.shape
    c = 1.0 / np.sqrt(K)
    zW, zb = jnp.zeros((K, d)), jnp.zeros(K)
    cols = [_AffineRouter(zW.at[:, j].set(c), zb) for j in range(d)]
    cols.append(_AffineRouter(zW, jnp.full((K,), c)))
    return jnp.stack([ravel_pytree(col)[0] for col in cols], axis=1)


L.permute_router.register(_AffineRouter, lambda r, perm: _AffineRouter(r.W[perm], r.b[perm]))


def _user_problem(router_cls, K=3, d=2, N=256):
    """`(model with router_cls, the same model with a LinearRouter, x, y)`."""
    ks = jax.random.split(jax.random.key(21), 5)
    W, b = jax.random.normal(ks[0], (K, d)), jax.random.normal(ks[1], (K,))
    experts = sh.LinearExperts(jax.random.normal(ks[2], (K, d)), jax.random.normal(ks[3], (K,)))
    x = jax.random.normal(ks[4], (N, d))
    y = jnp.sin(x[:, 0]) + x[:, 1]
    return sh.MoE(router_cls(W, b), experts), sh.MoE(sh.LinearRouter(W, b), experts), x, y


def test_user_registered_gauge_and_permutation():
    model, linear, x, y = _user_problem(_AffineRouter)

    def loss(m):
        return sh.soft_risk(m, x, y, 0.4)

    # the user's registration is found in the pytree like a built-in router's; the
    # model is a LinearRouter's function with the same raveled layout: the same basis
    G = np.asarray(L.gauge_directions(model))
    P = ravel_pytree(model)[0].size
    assert G.shape == (P, 3)
    np.testing.assert_allclose(G, L.gauge_directions(linear), atol=0)
    # independent checks: exact Hessian null vectors, the numerical null space of the
    # centred logits, and the same gauge-fixed spectrum as the built-in router's
    H = np.asarray(jax.jit(lambda m: L.hessian(loss, m))(model))
    assert np.max(np.abs(H @ G)) < 1e-10 * np.max(np.abs(H))
    np.testing.assert_allclose(_projector(L.gauge_directions(model, x=x)), _projector(G), atol=1e-8)
    cls, ref = (L.classify_critical_point(loss, m) for m in (model, linear))
    assert cls.gauge_dim == 3
    np.testing.assert_allclose(cls.lambda_min, ref.lambda_min, rtol=1e-10)
    # permutation through the user's `permute_router`: the predictor is unchanged
    perm = [2, 0, 1]
    moved = L.permute_experts(model, perm)
    assert isinstance(moved.router, _AffineRouter)
    np.testing.assert_allclose(moved.router.W, model.router.W[np.array(perm)])
    np.testing.assert_allclose(
        sh.soft_predict(moved, x, 0.4), sh.soft_predict(model, x, 0.4), rtol=1e-12
    )
    assert _same_point(moved, model, 1e-12)  # deduplication up to relabelling


def test_unregistered_router_permutation_error_and_numeric_gauge():
    model, linear, x, _ = _user_problem(_PlainRouter)
    with pytest.raises(ValueError, match=r"permute_router\.register\(_PlainRouter\)"):
        L.permute_experts(model, [1, 0, 2])
    plain_bank = sh.MoE(linear.router, _PlainBank(linear.experts.B, linear.experts.c))
    with pytest.raises(ValueError, match=r"permute_bank\.register\(_PlainBank\)"):
        L.permute_experts(plain_bank, [1, 0, 2])
    # no analytic gauge without a sample; with one, the numerical null space spans the
    # d + 1 translations of the LinearRouter's analytic basis
    assert L.gauge_directions(model).shape[1] == 0
    Gn = L.gauge_directions(model, x=x)
    np.testing.assert_allclose(_projector(Gn), _projector(L.gauge_directions(linear)), atol=1e-8)
    # an unregistered router is its own canonical form; deduplication does not permute it
    assert L.canonical_router(model.router) is model.router
    assert _same_point(model, model, 1e-12)


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
        decay = jnp.sum((W - W.mean(0, keepdims=True)) ** 2) + jnp.sum((b - b.mean()) ** 2)
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
    loss = lambda p: penalised(p, x, y, tau)
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
            assert not _same_point(a.params, b.params, 1e-5)


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
    rep = strict_saddle_report(
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
        rows = [r for r in rep.rows if r.tau == tau]
        best = [r for r in rows if r.global_min]
        assert len(best) == 1 and best[0].kind == "minimum" and best[0].teacher_equivalent
        assert any(r.kind == "strict saddle" and not r.teacher_equivalent for r in rows)
    assert all(isinstance(r, SaddleRow) for r in rep.rows)
    # the global minimiser's partition error grows with tau (5.17)
    pe = rep.recovery.partition_error.value
    assert pe.shape == (2,) and 0 < pe[0] < pe[1]
    text = format_report(rep)
    assert "strict saddle" in text and "slopes" in text
