"""The structured soft-risk Hessian-vector product (issue 18).

`hessian_operator(sh.soft_risk, model, data=(x, y), tau=...)` on a built-in
`MoE` takes the Gauss–Newton split in logit/output space
(`softhard.landscape._structured`). Each case is checked against an
independent forward-over-reverse HVP of the whole-sample loss
(`jax.jvp(jax.grad(f))` on the raveled parameters), for every router and
expert family and the top-k / combine-temperature / selection routing, with
and without chunking; the closed-form top-1 `C_n` against `jax.hessian` of a
hand-written per-sample loss; and the Lanczos spectrum against a dense `eigh`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softhard as sh
from softhard import landscape as L
from softhard._trees import ravel_arrays
from softhard.landscape import _structured as S

K, D, H, N, TAU = 4, 3, 3, 119, 0.3  # N = 7 * 17


def _router(kind, rng):
    if kind == "linear":
        return sh.LinearRouter(rng.normal(size=(K, D)), rng.normal(size=K))
    if kind == "mlp":
        return sh.MLPRouter(
            rng.normal(size=(H, D)), rng.normal(size=H), rng.normal(size=(K, H)), rng.normal(size=K)
        )
    return sh.NormalizedRouter(rng.normal(size=(K, D)), rng.normal(size=K), scale=2.0)


def _experts(kind, rng):
    if kind == "linear":
        return sh.LinearExperts(rng.normal(size=(K, D)), rng.normal(size=K))
    return sh.MLPExperts(
        rng.normal(size=(K, H, D)),
        rng.normal(size=(K, H)),
        rng.normal(size=(K, H)),
        rng.normal(size=K),
    )


def _shift(a):
    return a + jnp.arange(a.shape[-1], dtype=a.dtype) * 0.2


CASES = {
    "linear": ("linear", "linear", {}),
    "mlp_router": ("mlp", "linear", {}),
    "normalized_router": ("normalized", "linear", {}),
    "mlp_experts": ("linear", "mlp", {}),
    "top2_combine": ("linear", "linear", {"k": 2, "combine_temperature": 0.5}),
    "selection": ("linear", "linear", {"selection": _shift}),
    "mlp_top2": ("mlp", "mlp", {"k": 2}),
}


def _problem(case, dtype=jnp.float64, seed=0):
    rng = np.random.default_rng(seed)
    r, e, routing = CASES[case]
    model = sh.MoE(_router(r, rng), _experts(e, rng), **routing)
    model = jax.tree.map(lambda a: jnp.asarray(a, dtype), model)
    x = jnp.asarray(rng.normal(size=(N, D)), dtype)
    y = jnp.asarray(rng.normal(size=N), dtype)
    return model, x, y


def _reference(model, x, y, tau, U):
    """Forward-over-reverse HVPs of the whole-sample soft risk, `[M, P]`."""
    flat, unravel = ravel_arrays(model)
    grad = jax.grad(lambda p: sh.soft_risk(unravel(p), x, y, tau))
    return jax.jit(jax.vmap(lambda u: jax.jvp(grad, (flat,), (u,))[1]))(U)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture
def small_block(monkeypatch):
    """Blocks of 32 samples in the whole-sample linear top-1 matvec: 3 full + a tail of 23."""
    monkeypatch.setattr(S, "FAST_BLOCK", 32)


#: the MLP router with MLP experts at top-2 is the one slow case (19 s): the slow set
_F64_CASES = [
    pytest.param(c, marks=pytest.mark.slow) if c == "mlp_top2" else c for c in sorted(CASES)
]


@pytest.mark.parametrize("case", _F64_CASES)
def test_structured_equals_generic_float64(case, small_block):
    model, x, y = _problem(case)
    U = jax.random.normal(jax.random.key(1), (2, ravel_arrays(model)[0].size), jnp.float64)
    ref = _reference(model, x, y, TAU, U)
    # whole sample; chunks of 20 (ragged tail of 19); chunks of 17 (divides N)
    chunks = {"linear": [None, 20, 17], "mlp_top2": [None]}.get(case, [None, 20])
    for chunk in chunks:
        before = dict(S.BUILDS)
        op = L.hessian_operator(sh.soft_risk, model, data=(x, y), chunk_size=chunk, tau=TAU)
        route = "whole" if chunk is None else "chunked"
        assert S.BUILDS[route] == before[route] + 1  # the structured path was taken
        assert _rel(jax.jit(jax.vmap(op.matvec))(U), ref) < 1e-12, chunk


@pytest.mark.parametrize("case", ["linear", "top2_combine", "mlp_experts"])
def test_structured_equals_generic_float32(case, small_block):
    model, x, y = _problem(case, jnp.float32)
    U = jax.random.normal(jax.random.key(1), (2, ravel_arrays(model)[0].size), jnp.float32)
    ref = _reference(model, x, y, TAU, U)
    for chunk in [None] if case == "top2_combine" else [None, 20]:
        op = L.hessian_operator(sh.soft_risk, model, data=(x, y), chunk_size=chunk, tau=TAU)
        assert op.dtype == jnp.float32
        got = jax.jit(jax.vmap(op.matvec))(U)
        assert got.dtype == jnp.float32
        assert _rel(got, ref) < 2e-5, chunk


def test_top1_closed_form_c_matches_autodiff_hessian(rng):
    # C_n = ∇²_z (y − Σ softmax(a/τ)_j f_j)², by jax.hessian of a hand-written loss
    a, f = rng.normal(size=(5, K)), rng.normal(size=(5, K))
    y, tau = rng.normal(size=5), 0.4

    def ell(z, yy):
        w = jax.nn.softmax(z[:K] / tau)
        return (yy - jnp.dot(w, z[K:])) ** 2

    zz = jnp.concatenate([a, f], 1)
    C, g = jax.jit(lambda z, t: (jax.vmap(jax.hessian(ell))(z, t), jax.vmap(jax.grad(ell))(z, t)))(
        zz, y
    )  # [5, 2K, 2K], [5, 2K]
    model = sh.MoE(_router("linear", rng), _experts("linear", rng))
    V = jnp.asarray(rng.normal(size=(5, 2 * K)))

    @jax.jit
    def structured(a, f, y, V):
        fac, (ga, gf) = S._factors(model, a, f, y, tau)
        ca, cf = S._apply_c(fac, V[:, :K], V[:, K:])
        return jnp.concatenate([ga, gf], 1), jnp.concatenate([ca, cf], 1)

    gz, CV = structured(jnp.asarray(a), jnp.asarray(f), jnp.asarray(y), V)
    np.testing.assert_allclose(gz, g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(CV, np.einsum("nij,nj->ni", C, V), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["linear", "mlp_router"])
def test_opt_out_and_gauge(case):
    model, x, y = _problem(case, seed=1)
    before = dict(S.BUILDS)
    generic = L.hessian_operator(
        sh.soft_risk, model, data=(x, y), tau=TAU, gauge="auto", structured=False
    )
    assert S.BUILDS == before  # opted out
    op = L.hessian_operator(sh.soft_risk, model, data=(x, y), tau=TAU, gauge="auto")
    assert S.BUILDS["whole"] == before["whole"] + 1
    assert op.gauge_dim == generic.gauge_dim > 0
    U = jax.random.normal(jax.random.key(2), (3, op.size), jnp.float64)
    got, ref = jax.jit(jax.vmap(op.matvec))(U), jax.jit(jax.vmap(generic.matvec))(U)
    assert _rel(got, ref) < 1e-12
    np.testing.assert_allclose(op.gauge.T @ got.T, 0.0, atol=1e-12)  # projection applied


def test_other_losses_take_the_generic_path():
    model, x, y = _problem("linear")
    before = dict(S.BUILDS)
    L.hessian_operator(lambda m, xc, yc: sh.soft_risk(m, xc, yc, TAU), model, data=(x, y))
    L.hessian_operator(sh.hard_risk, model, data=(x, y))
    L.hessian_operator(lambda m: sh.soft_risk(m, x, y, TAU), model)
    assert S.BUILDS == before


def test_bad_structured_flag():
    model, x, y = _problem("linear")
    with pytest.raises(ValueError, match="structured"):
        L.hessian_operator(sh.soft_risk, model, data=(x, y), tau=TAU, structured="yes")


@pytest.mark.parametrize("case", ["linear", "top2_combine"])
def test_spectrum_via_structured_path_matches_dense_eigh(case, small_block):
    model, x, y = _problem(case, seed=2)
    flat, unravel = ravel_arrays(model)
    Hd = jax.hessian(lambda p: sh.soft_risk(unravel(p), x, y, TAU))(flat)
    ev = np.linalg.eigh(np.asarray(Hd))[0]
    before = S.BUILDS["whole"]
    spec = L.hessian_spectrum(sh.soft_risk, model, k=3, data=(x, y), tau=TAU)
    assert S.BUILDS["whole"] > before
    np.testing.assert_allclose(spec.eigenvalues, ev[-3:], rtol=1e-9, atol=1e-10)
