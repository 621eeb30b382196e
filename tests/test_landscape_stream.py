"""Streamed and sharded Hessian-vector products, non-array leaves, and bad counts (issue 18, 15).

The streamed operator (`data=(x, y)`, per-chunk loss, `lax.scan` over chunks,
a weighted ragged tail) is checked against the unchunked linearised HVP of
the whole-sample loss, and against an independent dense Hessian
(`jax.hessian` of a hand-written loss); the sharded one (4 simulated CPU
devices, in a subprocess) against the unchunked one too.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_on_cpu_devices

import softhard as sh
from softhard import landscape as L


def _problem(dtype=jnp.float64, K=3, d=2, n=1003, seed=0):
    rng = np.random.default_rng(seed)
    model = sh.MoE(
        sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K)),
        sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K)),
    )
    model = jax.tree.map(lambda a: jnp.asarray(a, dtype), model)
    x = jnp.asarray(rng.normal(size=(n, d)), dtype)
    y = jnp.asarray(rng.normal(size=n), dtype)
    return model, x, y


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("chunk", [1003, 59, 17, 1, 2000])  # 59 * 17 = 1003: divides / does not
def test_streamed_hvp_equals_unchunked(dtype, chunk):
    model, x, y = _problem(dtype)
    tau = jnp.asarray(0.3, dtype)
    whole = L.hessian_operator(lambda m: sh.soft_risk(m, x, y, tau), model)
    op = L.hessian_operator(sh.soft_risk, model, data=(x, y), chunk_size=chunk, tau=tau)
    assert op.size == whole.size == 18 and op.dtype == dtype
    U = jax.random.normal(jax.random.key(1), (3, op.size), dtype)
    got, ref = jax.vmap(op.matvec)(U), jax.vmap(whole.matvec)(U)
    assert got.dtype == dtype
    assert _rel(got, ref) < (1e-13 if dtype == jnp.float64 else 2e-5)


def test_streamed_hessian_against_independent_dense():
    # an independent reference: jax.hessian (reverse-over-forward of a hand-written
    # loss on a flat vector), not the operator layer
    model, x, y = _problem(K=2, d=2, n=301)
    tau = 0.2

    def flat_loss(p):
        W, b, B, c = p[:4].reshape(2, 2), p[4:6], p[6:10].reshape(2, 2), p[10:12]
        g = jax.nn.softmax((x @ W.T + b[None, :]) / tau, axis=-1)
        return jnp.mean((y - jnp.sum(g * (x @ B.T + c[None, :]), -1)) ** 2)

    p0 = jnp.concatenate(
        [model.router.W.ravel(), model.router.b, model.experts.B.ravel(), model.experts.c]
    )
    H_ref = jax.hessian(flat_loss)(p0)
    H = L.hessian(sh.soft_risk, model, data=(x, y), chunk_size=50, tau=tau)
    np.testing.assert_allclose(H, H_ref, rtol=1e-10, atol=1e-12)
    g = L.loss_gradient(sh.soft_risk, model, data=(x, y), chunk_size=50, tau=tau)
    np.testing.assert_allclose(g, jax.grad(flat_loss)(p0), rtol=1e-11, atol=1e-13)


def test_spectral_routines_accept_data():
    model, x, y = _problem(n=300)
    tau = 0.3
    loss = lambda m: sh.soft_risk(m, x, y, tau)
    kw = {"data": (x, y), "chunk_size": 70, "tau": tau}
    ref = L.hessian_spectrum(loss, model, k=3, which="both").eigenvalues
    got = L.hessian_spectrum(sh.soft_risk, model, k=3, which="both", **kw).eigenvalues
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    dense = np.linalg.eigvalsh(np.asarray(L.hessian(loss, model)))
    np.testing.assert_allclose(got, np.r_[dense[:3], dense[-3:]], rtol=1e-9, atol=1e-11)
    key = jax.random.key(3)
    t_ref = L.hessian_trace(loss, model, key=key, num_matvecs=9)
    t_got = L.hessian_trace(sh.soft_risk, model, key=key, num_matvecs=9, **kw)
    np.testing.assert_allclose(t_got.value, t_ref.value, rtol=1e-10)
    grid = jnp.linspace(-2.0, 5.0, 7)
    d_ref = L.spectral_density(
        loss, model, key=key, num_matvecs=8, num_probes=3, grid=grid, sigma=0.5
    )
    d_got = L.spectral_density(
        sh.soft_risk, model, key=key, num_matvecs=8, num_probes=3, grid=grid, sigma=0.5, **kw
    )
    np.testing.assert_allclose(d_got.density.value, d_ref.density.value, rtol=1e-8, atol=1e-12)


def test_classify_accepts_data():
    """`classify_critical_point(sh.soft_risk, model, data=(x, y), tau=...)` = the closure form."""
    model, x, y = _problem(n=300)
    tau = 0.3
    loss = lambda m: sh.soft_risk(m, x, y, tau)
    start = L.find_critical_points(loss, [model], adam_steps=0)[0].params  # a critical point
    ref = L.classify_critical_point(loss, start)
    for chunk in (None, 70):
        got = L.classify_critical_point(sh.soft_risk, start, data=(x, y), chunk_size=chunk, tau=tau)
        assert got.kind == ref.kind != "not critical" and got.gauge_dim == ref.gauge_dim == 3
        np.testing.assert_allclose(got.lambda_max, ref.lambda_max, rtol=1e-9)
        np.testing.assert_allclose(got.lambda_min, ref.lambda_min, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.grad_tol, ref.grad_tol, rtol=1e-12)
        assert got.grad_norm <= got.grad_tol
    # a point that is not critical says so here too
    assert L.classify_critical_point(sh.soft_risk, model, data=(x, y), tau=tau).kind == (
        "not critical"
    )
    with pytest.raises(ValueError, match="need `data"):
        L.classify_critical_point(loss, start, tau=tau)
    with pytest.raises(ValueError, match="`args` empty"):
        L.classify_critical_point(sh.soft_risk, start, args=(1,), data=(x, y), tau=tau)


def test_spectrum_sweep_streams():
    model, x, y = _problem(n=400)
    taus = jnp.array([0.1, 1.0])
    ref = L.spectrum_sweep(lambda m, t: sh.soft_risk(m, x, y, t), model, taus, k=2)
    got = L.spectrum_sweep(sh.soft_risk, model, taus, k=2, data=(x, y), chunk_size=150)
    np.testing.assert_allclose(got.eigenvalues, ref.eigenvalues, rtol=1e-10)


@jax.tree_util.register_pytree_node_class
class ActRouter:
    """A router `W act(x) + b` whose activation is a pytree *leaf* (as equinox stores it)."""

    def __init__(self, W, b, act):
        self.W, self.b, self.act = W, b, act

    def tree_flatten(self):
        return (self.W, self.b, self.act), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __call__(self, x):
        return self.W @ self.act(x) + self.b


def test_non_array_leaf_router():
    _, x, y = _problem(K=2, d=2, n=200)
    rng = np.random.default_rng(5)
    W, b, B, c = (jnp.asarray(rng.normal(size=s)) for s in ((2, 2), (2,), (2, 2), (2,)))
    model = sh.MoE(ActRouter(W, b, jax.nn.relu), sh.LinearExperts(B, c))
    assert jax.nn.relu in jax.tree_util.tree_leaves(model)
    tau = 0.5

    def flat_loss(p):  # independent: relu closed over, the flat vector by hand
        a = jax.nn.relu(x) @ p[:4].reshape(2, 2).T + p[None, 4:6]
        f = x @ p[6:10].reshape(2, 2).T + p[None, 10:12]
        return jnp.mean((y - jnp.sum(jax.nn.softmax(a / tau, -1) * f, -1)) ** 2)

    ref = np.linalg.eigvalsh(
        np.asarray(jax.hessian(flat_loss)(jnp.concatenate([W.ravel(), b, B.ravel(), c])))
    )
    full = L.hessian_spectrum(lambda m: sh.soft_risk(m, x, y, tau), model)
    np.testing.assert_allclose(full.eigenvalues, ref, rtol=1e-10, atol=1e-12)
    top = L.hessian_spectrum(sh.soft_risk, model, k=2, data=(x, y), chunk_size=64, tau=tau)
    np.testing.assert_allclose(top.eigenvalues, ref[-2:], rtol=1e-10)
    v = jax.tree.map(lambda a: jnp.ones_like(a) if isinstance(a, jax.Array) else a, model)
    out = L.hvp(lambda m: sh.soft_risk(m, x, y, tau), model, v)
    assert out.router.act is jax.nn.relu and out.router.W.shape == (2, 2)


# ----------------------------------------------------------------------------
# bad counts and arguments (issue 15, items 4, 6, 18, 19)
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    model, x, y = _problem(K=2, d=2, n=50)  # P = 12
    return model, x, y, (lambda m: sh.soft_risk(m, x, y, 0.3))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 100}, "`k` must be <= the 12"),
        ({"k": 13}, "`k` must be <= the 12"),
        ({"k": True}, "`k` must be an integer"),
        ({"k": 2.5}, "`k` must be an integer"),
        ({"k": float("nan")}, "`k` must be an integer"),
        ({"k": 0}, "`k` must be an integer"),
        ({"k": 2, "num_matvecs": 2.5}, "`num_matvecs` must be an integer"),
        ({"k": 2, "num_matvecs": 0}, "`num_matvecs` must be an integer"),
        ({"k": 2, "num_matvecs": True}, "`num_matvecs` must be an integer"),
        ({"batch_size": 0}, "`batch_size` must be an integer"),
    ],
)
def test_hessian_spectrum_rejects_bad_counts(small, kwargs, match):
    model, _, _, loss = small
    with pytest.raises(ValueError, match=match):
        L.hessian_spectrum(loss, model, **kwargs)


def test_hessian_spectrum_k_equal_p_is_fine(small):
    model, _, _, loss = small
    assert L.hessian_spectrum(loss, model, k=12).eigenvalues.shape == (12,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": -1.0}, "`sigma`"),
        ({"sigma": 0.0}, "`sigma`"),
        ({"sigma": float("nan")}, "`sigma`"),
        ({"num_probes": 0}, "`num_probes`"),
        ({"num_probes": -3}, "`num_probes`"),
        ({"num_probes": 2.5}, "`num_probes`"),
        ({"num_matvecs": 0}, "`num_matvecs`"),
        ({"num_matvecs": True}, "`num_matvecs`"),
        ({"num_points": 0}, "`num_points`"),
        ({"key": None}, "`key`"),
    ],
)
def test_spectral_density_rejects_bad_input(small, kwargs, match):
    model, _, _, loss = small
    kw = {"key": jax.random.key(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        L.spectral_density(loss, model, **kw)


def test_spectral_density_one_probe_reports_unknown_error(small):
    model, _, _, loss = small
    out = L.spectral_density(loss, model, key=jax.random.key(0), num_probes=1, num_points=5)
    assert np.all(np.isfinite(out.density.value)) and np.all(np.isinf(out.density.stderr))


def test_hessian_trace_rejects_bad_counts(small):
    model, _, _, loss = small
    for bad in (2, 2.5, True):
        with pytest.raises(ValueError, match="`num_matvecs`"):
            L.hessian_trace(loss, model, key=jax.random.key(0), num_matvecs=bad)


def test_hvp_rejects_wrong_shape_tangent():
    loss = lambda p: jnp.sum(p["a"] ** 3) + jnp.sum(p["b"]) ** 2
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="`v` must have the shapes of `params`"):
        L.hvp(loss, params, {"a": jnp.ones(4), "b": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="`v` must have the shapes of `params`"):
        L.hvp(loss, params, {"a": jnp.ones(3), "b": jnp.ones(4)})
    out = L.hvp(loss, params, {"a": jnp.array([1.0, 0.0, 0.0]), "b": jnp.zeros((2, 2))})
    np.testing.assert_allclose(out["a"], [6.0, 0.0, 0.0])  # 6 a_0, by hand


def test_bad_data_arguments(small):
    model, x, y, loss = small
    with pytest.raises(ValueError, match="`chunk_size`"):
        L.hessian_operator(sh.soft_risk, model, data=(x, y), chunk_size=0, tau=0.1)
    with pytest.raises(ValueError, match="`chunk_size` and `mesh` need `data"):
        L.hessian_operator(loss, model, chunk_size=10)
    with pytest.raises(ValueError, match="share a sample axis"):
        L.hessian_operator(sh.soft_risk, model, data=(x, y[:-1]), tau=0.1)
    with pytest.raises(ValueError, match="`mesh` must be a jax.sharding.Mesh"):
        L.hessian_operator(sh.soft_risk, model, data=(x, y), mesh="cpu", tau=0.1)
    with pytest.raises(ValueError, match="`data` is an option of a loss function"):
        L.hessian_spectrum(jnp.eye(3), data=(x, y))
    with pytest.raises(ValueError, match="`tau` is an option of a loss function"):
        L.hessian_spectrum(jnp.eye(3), tau=0.1)
    with pytest.raises(ValueError, match="extra keywords included"):
        L.hessian_spectrum(loss, model, k=2, num_matvec=5)  # a typo goes to the loss: named


SHARDED = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import softhard as sh
    from softhard import landscape as L

    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    K, d, n = 3, 2, 4 * 255
    m = sh.MoE(sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K)),
               sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K)))
    x = jnp.asarray(rng.normal(size=(n, d))); y = jnp.asarray(rng.normal(size=n))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    for dt, tol in ((jnp.float64, 1e-13), (jnp.float32, 2e-5)):
        mm = jax.tree.map(lambda a: jnp.asarray(a, dt), m)
        xx, yy = x.astype(dt), y.astype(dt)
        whole = L.hessian_operator(lambda p: sh.soft_risk(p, xx, yy, 0.3), mm)
        U = jax.random.normal(jax.random.key(0), (3, whole.size), dt)
        ref = np.asarray(jax.vmap(whole.matvec)(U), np.float64)
        # 51 divides the 255 local samples, 100 does not, None: one chunk per device
        for chunk in (51, 100, None) if dt == jnp.float64 else (100,):
            op = L.hessian_operator(sh.soft_risk, mm, data=(xx, yy), chunk_size=chunk,
                                    mesh=mesh, tau=0.3)
            got = np.asarray(jax.vmap(op.matvec)(U), np.float64)
            err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
            assert err < tol, (dt, chunk, err)
    # a sample already sharded along axis 0: the mesh is read off x
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    ref = L.hessian_spectrum(lambda p: sh.soft_risk(p, x, y, 0.3), m, k=3).eigenvalues
    got = L.hessian_spectrum(sh.soft_risk, m, k=3, data=(xs, ys), chunk_size=100, tau=0.3)
    np.testing.assert_allclose(got.eigenvalues, ref, rtol=1e-11)
    jit = jax.jit(lambda p: L.hessian_spectrum(sh.soft_risk, p, k=3, data=(x, y), mesh=mesh,
                                               chunk_size=100, tau=0.3).eigenvalues)
    np.testing.assert_allclose(jit(m), ref, rtol=1e-11)
    try:
        L.hessian_operator(sh.soft_risk, m, data=(x[:-1], y[:-1]), mesh=mesh, tau=0.3)
        raise AssertionError("N not divisible by the shards was accepted")
    except ValueError as e:
        assert "divisible by the 4 shards" in str(e), e
    print("SHARDED-HVP-OK")
    """
)


def test_sharded_hvp_equals_unchunked():
    run_on_cpu_devices(SHARDED, "SHARDED-HVP-OK")
