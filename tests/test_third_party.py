"""Third-party models through every public function family (issue 14, "Third-party models").

A user's router or expert bank is an equinox module (function and integer
leaves), a flax `nnx` module, or a flax `linen` module wrapped in
`softhard.models.LinenModule`. Each one here computes the *same function* as a
built-in `LinearRouter` / `LinearExperts` (weights copied), so the built-in
model is the independent reference: every estimator must return its values.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import k3_teacher
from flax import linen, nnx

import softhard as sh
from softhard import landscape as L
from softhard._trees import combine, partition, ravel_arrays
from softhard.models import LinenModule

K, D = 3, 2


class EqxBank(eqx.Module):
    """An equinox expert bank `f_k(x) = B_k·x + c_k` with a function and an integer leaf."""

    B: jax.Array
    c: jax.Array
    post: object  # a function leaf (identity)
    steps: jax.Array  # an integer array leaf (never a parameter)

    def __call__(self, x):
        return self.post(self.B @ x + self.c)


def _identity(v):
    return v


@pytest.fixture(scope="module")
def problem():
    teacher = k3_teacher()
    law = sh.StandardGaussian(D)
    x, y = teacher.sample(jax.random.key(0), law, 512)
    ks = jax.random.split(jax.random.key(1), 3)
    ref = sh.MoE(
        sh.LinearRouter(jax.random.normal(ks[0], (K, D)), jax.random.normal(ks[1], (K,))),
        sh.LinearExperts(jax.random.normal(ks[2], (K, D)), jnp.array([0.1, 0.0, -0.1])),
    )
    return teacher, law, x, y, ref


def _eqx_router(W, b):
    """`eqx.nn.MLP` of depth 0 (one linear layer): activation function leaves, ReLU unused."""
    mlp = eqx.nn.MLP(D, K, 4, 0, key=jax.random.key(9))
    mlp = eqx.tree_at(lambda m: m.layers[0].weight, mlp, W)
    return eqx.tree_at(lambda m: m.layers[0].bias, mlp, b)


def _nnx_router(W, b):
    lin = nnx.Linear(D, K, rngs=nnx.Rngs(0), param_dtype=W.dtype)
    lin.kernel[...] = W.T
    lin.bias[...] = b
    return lin


def _linen_router(W, b):
    return LinenModule(linen.Dense(K), {"params": {"kernel": W.T, "bias": b}})


def _third_party(ref, family):
    W, b = ref.router.W, ref.router.b
    router = {"equinox": _eqx_router, "nnx": _nnx_router, "linen": _linen_router}[family](W, b)
    experts = ref.experts
    if family == "equinox":
        experts = EqxBank(ref.experts.B, ref.experts.c, _identity, jnp.arange(3))
    return sh.MoE(router, experts)


FAMILIES = ["equinox", "nnx", "linen"]


def _close(a, b, rtol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_sweeps_match_builtin(problem, family):
    teacher, law, x, y, ref = problem
    model = _third_party(ref, family)
    taus = jnp.array([0.05, 0.5])
    for fn in (sh.risk_sweep, sh.diagnostic_sweep):
        got, want = fn(model, x, y, taus), fn(ref, x, y, taus)
        for g, w in zip(got, want):
            _close(g.value, w.value)
            _close(g.stderr, w.stderr)
    key = jax.random.key(3)
    got = sh.population_sweep(model, teacher, law, taus, key=key, n=300, diagnostics=True)
    want = sh.population_sweep(ref, teacher, law, taus, key=key, n=300, diagnostics=True)
    _close(got.gap.value, want.gap.value)
    _close(got.mass.value, want.mass.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_objectives_under_jit_and_grad(problem, family):
    _, _, x, y, ref = problem
    model = _third_party(ref, family)

    def grad_norm(m, tau):
        params, static = partition(m)
        g = jax.jit(jax.grad(lambda p: sh.soft_risk(combine(p, static), x, y, tau)))(params)
        return np.linalg.norm(ravel_arrays(g)[0])

    _close(grad_norm(model, 0.3), grad_norm(ref, 0.3))
    _close(eqx.filter_jit(sh.hard_risk)(model, x, y), sh.hard_risk(ref, x, y))
    g = eqx.filter_jit(eqx.filter_grad(sh.soft_risk))(model, x, y, 0.3)
    _close(np.linalg.norm(ravel_arrays(g)[0]), grad_norm(ref, 0.3))


@pytest.mark.parametrize("family", FAMILIES)
def test_transfer_and_teacher_metrics_match_builtin(problem, family):
    teacher, _, x, y, ref = problem
    model = _third_party(ref, family)
    got, want = sh.hard_risk_gradient(model, x, y), sh.hard_risk_gradient(ref, x, y)
    # the same numbers, in the third-party router's own layout
    _close(np.sort(ravel_arrays(got.value)[0]), np.sort(ravel_arrays(want.value)[0]), 1e-8)
    taus = jnp.array([0.05, 0.2])
    tg, tw = sh.transfer_gap(model, x, y, taus), sh.transfer_gap(ref, x, y, taus)
    _close(tg.router, tw.router, 1e-8)
    _close(tg.experts, tw.experts)
    te, we = sh.teacher_equivalence(model, teacher, x), sh.teacher_equivalence(ref, teacher, x)
    _close(te.total.value, we.total.value)
    _close(sh.recovery_error(model, teacher, x).expert_error.value,
           sh.recovery_error(ref, teacher, x).expert_error.value)  # fmt: skip
    _close(sh.misrouting_mass(model, teacher, x, 0.1, 0.2).value,
           sh.misrouting_mass(ref, teacher, x, 0.1, 0.2).value)  # fmt: skip
    _close(sh.expert_separation(model, teacher, x, 0.3).rho.value,
           sh.expert_separation(ref, teacher, x, 0.3).rho.value)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_gauge_spectrum_and_classification(problem, family):
    teacher, _, x, y, ref = problem
    model = _third_party(ref, family)
    G = np.asarray(L.gauge_directions(model, x=x))
    P = ravel_arrays(model)[0].size
    assert P == ravel_arrays(ref)[0].size == 18  # the integer leaf is not a parameter
    assert G.shape == (P, D + 1)
    # the numerical gauge spans exact null vectors of the Hessian (any point)
    loss = lambda m: sh.soft_risk(m, x, y, 0.3)
    H = np.asarray(L.hessian(loss, model))
    assert np.max(np.abs(H @ G)) < 1e-10 * np.max(np.abs(H))
    # the gauge-fixed spectrum equals the built-in one (coordinates permuted only)
    s_ref = L.hessian_spectrum(loss, ref, gauge="auto").eigenvalues
    s_got = L.hessian_spectrum(loss, model, gauge=G).eigenvalues
    _close(s_got, s_ref, 1e-8)


@pytest.mark.parametrize("family", ["equinox", "linen"])
def test_find_and_classify_minimum(problem, family):
    teacher, _, x, y, _ = problem
    start = sh.MoE(teacher.router, teacher.experts)
    model = _third_party(start, family)

    def loss(m, t):
        # soft risk + a penalty on the centred logits: gauge invariant for any router, and
        # it keeps the minimiser at finite sharpness (a strict minimum after the gauge)
        a = sh.logits(m.router, x)
        return sh.soft_risk(m, x, y, t) + 1e-2 * jnp.mean((a - a.mean(1, keepdims=True)) ** 2)

    tau = jnp.asarray(0.1)
    got = L.find_critical_points(loss, [model], args=(tau,), adam_steps=0)
    want = L.find_critical_points(loss, [start], args=(tau,), adam_steps=0)
    assert len(got) == len(want) == 1 and got.runs[0].status == "converged"
    _close(got[0].loss, want[0].loss, 1e-9)
    cls = L.classify_critical_point(loss, got[0].params, args=(tau,), gauge_x=x)
    ref = L.classify_critical_point(loss, want[0].params, args=(tau,))
    assert cls.kind == ref.kind == "minimum" and cls.gauge_dim == ref.gauge_dim == D + 1
    assert ref.lambda_min > 1e3 * ref.tol
    _close(cls.lambda_min, ref.lambda_min, 1e-6)
    # without a sample the custom router's gauge is unknown: degenerate, and it says so
    with pytest.warns(RuntimeWarning, match="gauge_x"):
        assert L.classify_critical_point(loss, got[0].params, args=(tau,)).kind == "degenerate"


def test_numeric_gauge_float32_matches_float64():
    """A ReLU `eqx.nn.MLP` router: the same gauge (translations and dead units) in both dtypes."""
    key = jax.random.key(0)
    counts = {}
    for dt in (jnp.float64, jnp.float32):
        r = eqx.nn.MLP(3, K, 8, 1, key=key)
        r = jax.tree.map(lambda a, dt=dt: a.astype(dt) if eqx.is_inexact_array(a) else a, r)
        x = jax.random.normal(key, (200, 3), dt)
        counts[dt] = L.gauge_directions(r, x=x).shape[1]
    # 9 output-layer translations (H + 1) plus the exact invariances of dead ReLU units
    assert counts[jnp.float32] == counts[jnp.float64] >= 9
    with pytest.raises(ValueError, match="rtol"):
        L.gauge_directions(r, x=x, rtol=0.0)
    with pytest.raises(ValueError, match="rtol"):
        L.gauge_directions(r, x=x, rtol=-1e-3)


def test_linen_module_wrapper():
    dense = linen.Dense(K)
    x = jnp.ones(D)
    wrapped = LinenModule(dense, dense.init(jax.random.key(0), x))
    np.testing.assert_allclose(wrapped(x), dense.apply(wrapped.variables, x))
    leaves = jax.tree_util.tree_leaves(wrapped)
    assert len(leaves) == 2 and all(isinstance(v, jax.Array) for v in leaves)
    doubled = jax.tree.map(lambda v: 2 * v, wrapped)
    assert doubled.module == dense
    with pytest.raises(ValueError, match="module"):
        LinenModule(lambda v: v, {})
