"""`fit`: training any MoE at τ or along an annealing schedule (issue 14, "A training API").

Independent references: a hand-written optax loop (and, for an equinox
router, one written with equinox's own `eqx.partition`/`eqx.combine`), the
schedule's own values, `soft_risk` recomputed at the returned model, and a
full-batch run against a minibatch run whose batch is the whole sample.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import k3_teacher
from sklearn.datasets import load_diabetes

import softhard as sh

K, D, N = 3, 2, 300
#: one optimiser object for every test, so that `fit`'s compiled blocks are shared (speed)
ADAM = optax.adam(0.05)


@pytest.fixture(scope="module")
def problem():
    """A K = 3 linear teacher in d = 2 (noise 0.1), N = 300 samples, a random student."""
    teacher = k3_teacher()
    x, y = teacher.sample(jax.random.key(0), sh.StandardGaussian(D), N)
    ks = jax.random.split(jax.random.key(1), 3)
    model = sh.MoE(
        sh.LinearRouter(0.5 * jax.random.normal(ks[0], (K, D)), jnp.zeros(K)),
        sh.LinearExperts(0.5 * jax.random.normal(ks[1], (K, D)), jnp.zeros(K)),
    )
    return model, x, y


_HAND_STEPS = {}


def _hand_loop(model, x, y, taus, opt):
    """The reference: a plain Python loop of optax updates on `soft_risk` (one jitted step)."""
    if id(opt) not in _HAND_STEPS:

        @jax.jit
        def step(m, state, tau):
            loss, g = jax.value_and_grad(sh.soft_risk)(m, x, y, tau)
            upd, state = opt.update(g, state, m)
            return optax.apply_updates(m, upd), state, loss

        _HAND_STEPS[id(opt)] = (opt, step)
    step = _HAND_STEPS[id(opt)][1]
    state = opt.init(model)
    losses = []
    for tau in taus:
        model, state, loss = step(model, state, jnp.asarray(tau, x.dtype))
        losses.append(float(loss))
    return model, np.asarray(losses)


def _assert_trees_close(a, b, rtol=1e-10):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=1e-13)


def test_fixed_tau_matches_hand_loop_and_converges(problem):
    model, x, y = problem
    opt, steps, tau = ADAM, 240, 0.1
    res = sh.fit(model, x, y, tau, optimizer=opt, steps=steps, record_every=80)
    h = res.history
    assert h.status == "ok" and h.diverged_at == -1
    assert h.loss.shape == h.grad_norm.shape == h.tau.shape == (steps,)
    np.testing.assert_array_equal(np.asarray(h.step), np.arange(steps))
    np.testing.assert_array_equal(np.asarray(h.record_step), [0, 80, 160, 240])
    ref_model, ref_loss = _hand_loop(model, x, y, [tau] * steps, opt)
    np.testing.assert_allclose(np.asarray(h.loss), ref_loss, rtol=1e-10)
    _assert_trees_close(res.model, ref_model)
    # the loss decreases and the returned point is nearly stationary
    assert float(h.loss[-1]) < 0.1 * float(h.loss[0])
    assert float(h.final_grad_norm) < 1e-2 * float(h.grad_norm[0])
    g = jax.grad(sh.soft_risk)(res.model, x, y, tau)
    np.testing.assert_allclose(float(optax.tree.norm(g)), float(h.final_grad_norm), rtol=1e-10)
    np.testing.assert_allclose(
        float(sh.soft_risk(res.model, x, y, tau)), float(h.final_loss), rtol=1e-12
    )
    # path diagnostics: boundary mass at 2τ from the logits, certificates with statuses
    a = sh.logits(res.model.router, x)
    want = float(sh.boundary_mass(a, 2 * tau).value)
    np.testing.assert_allclose(float(h.boundary_mass.value[-1]), want, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(h.width), 2 * tau)
    assert len(h.certificate_status) == 4
    for status, bound, gap in zip(h.certificate_status, h.certificate, h.gap.value):
        assert status in ("ok", "misfit")
        assert np.isfinite(bound) and float(bound) >= abs(float(gap))
    cert = sh.certify(res.model, x, y, jnp.array([tau]))
    np.testing.assert_allclose(float(h.certificate[-1]), float(cert.bound[0]), rtol=1e-12)
    # readable and JSON-ready
    assert "certificate_status" in repr(h) and "FitResult" in repr(res)
    d = res.to_dict()
    assert d["history"]["status"] == "ok" and len(d["history"]["loss"]) == steps
    assert any("W" in name for name in d["model"])


def test_annealing_schedule(problem):
    model, x, y = problem
    schedule = optax.exponential_decay(0.5, transition_steps=40, decay_rate=0.5)
    steps = 200
    res = sh.fit(model, x, y, schedule=schedule, optimizer=ADAM, steps=steps, record_every=80)
    h = res.history
    want = np.array([float(schedule(t)) for t in range(steps + 1)])
    rec = [0, 80, 160, 200]
    np.testing.assert_allclose(np.asarray(h.tau), want[:steps], rtol=1e-14)
    np.testing.assert_array_equal(np.asarray(h.record_step), rec)
    np.testing.assert_allclose(np.asarray(h.record_tau), want[rec], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(h.width), 2 * want[rec], rtol=1e-14)
    ref_model, ref_loss = _hand_loop(model, x, y, want[:steps], ADAM)
    np.testing.assert_allclose(np.asarray(h.loss), ref_loss, rtol=1e-10)
    _assert_trees_close(res.model, ref_model)
    np.testing.assert_allclose(
        float(h.final_loss), float(sh.soft_risk(res.model, x, y, want[steps])), rtol=1e-12
    )


class EqxBank(eqx.Module):
    """An equinox expert bank with a function leaf and an integer-array leaf."""

    B: jax.Array
    c: jax.Array
    post: object
    tag: jax.Array

    def __call__(self, x):
        return self.post(self.B @ x + self.c)


def _identity(v):
    return v


def test_equinox_model_trains_and_keeps_static_leaves(problem):
    _, x, y = problem
    router = eqx.nn.MLP(D, K, 8, 1, activation=jax.nn.tanh, key=jax.random.key(4))
    bank = EqxBank(0.3 * jnp.ones((K, D)), jnp.zeros(K), _identity, jnp.arange(K))
    model = sh.MoE(router, bank)
    opt, steps, tau = optax.adam(0.02), 60, 0.2
    res = sh.fit(
        model, x, y, tau, optimizer=opt, steps=steps, record_every=steps, certificate=False
    )
    h = res.history
    assert h.status == "ok" and float(h.loss[-1]) < float(h.loss[0])
    assert res.model.router.activation is router.activation
    assert res.model.experts.post is _identity
    np.testing.assert_array_equal(np.asarray(res.model.experts.tag), np.arange(K))
    assert res.model.experts.tag.dtype == bank.tag.dtype
    # the reference, written with equinox's own filtering
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def step(p, state):
        loss, g = jax.value_and_grad(lambda q: sh.soft_risk(eqx.combine(q, static), x, y, tau))(p)
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state, loss

    state, losses = opt.init(params), []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    np.testing.assert_allclose(np.asarray(h.loss), losses, rtol=1e-10)
    want = eqx.filter(eqx.combine(params, static), eqx.is_inexact_array)
    got = eqx.filter(res.model, eqx.is_inexact_array)
    _assert_trees_close(got, want)


def test_divergence_is_caught_and_model_stays_finite(problem):
    model, x, y = problem

    def update(g, state, params=None):  # plain SGD, but the update at step 5 is NaN
        upd = jax.tree_util.tree_map(lambda v: -0.05 * v, g)
        bad = state.count == 5
        upd = jax.tree_util.tree_map(lambda u: jnp.where(bad, jnp.nan, u), upd)
        return upd, optax.ScaleByScheduleState(count=state.count + 1)

    opt = optax.GradientTransformation(
        lambda p: optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32)), update
    )
    res = sh.fit(model, x, y, 0.1, optimizer=opt, steps=20, record_every=8, certificate=False)
    h = res.history
    assert h.status == "diverged" and h.diverged_at == 5
    assert h.loss.shape == (6,) and bool(np.all(np.isfinite(np.asarray(h.loss))))
    assert int(h.record_step[-1]) == 5
    ref_model, _ = _hand_loop(model, x, y, [0.1] * 5, optax.sgd(0.05))
    _assert_trees_close(res.model, ref_model)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(res.model))
    assert h.certificate_status == ("skipped",) * len(h.record_step)


def test_atom_recorded_not_raised(problem):
    """A router with all logits tied has an atom at Δ = 0: no certificate, training goes on."""
    model, x, y = problem
    # experts 2 and 3 tie wherever x_1 < 0 (about half the sample): an atom of mass ~1/2
    W = jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    tied = sh.MoE(sh.LinearRouter(W, jnp.zeros(K)), model.experts)
    with pytest.raises(ValueError, match="atom"):
        sh.certify(tied, x, y, jnp.array([0.1]))
    res = sh.fit(tied, x, y, 0.1, optimizer=ADAM, steps=80, record_every=80)
    h = res.history
    assert h.status == "ok" and h.certificate_status[0] == "atom"
    assert np.isnan(float(h.certificate[0])) and np.isnan(float(h.gap.value[0]))
    atom = float(jnp.mean(x[:, 0] < 0))
    assert float(h.boundary_mass.value[0]) >= atom
    # every logit tied: certify refuses before any fit; still recorded as "atom"
    flat = sh.MoE(sh.LinearRouter(jnp.zeros((K, D)), jnp.zeros(K)), model.experts)
    res = sh.fit(flat, x, y, 0.1, optimizer=ADAM, steps=80, record_every=80)
    assert res.history.certificate_status[0] == "atom"
    np.testing.assert_allclose(float(res.history.boundary_mass.value[0]), 1.0)


def test_minibatch_of_whole_sample_equals_full_batch(problem):
    model, x, y = problem
    kw = dict(optimizer=ADAM, steps=80, record_every=80, certificate=False)
    full = sh.fit(model, x, y, 0.1, **kw)
    mini = sh.fit(model, x, y, 0.1, batch_size=N, key=jax.random.key(0), **kw)
    np.testing.assert_allclose(np.asarray(mini.history.loss), full.history.loss, rtol=1e-10)
    again = sh.fit(model, x, y, 0.1, batch_size=N, key=jax.random.key(0), **kw)
    np.testing.assert_array_equal(np.asarray(again.history.loss), np.asarray(mini.history.loss))
    assert mini.history.status == "ok"


def test_float32_stays_float32(problem):
    model, x, y = problem
    m32 = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), model)
    res = sh.fit(m32, x, y, 0.1, optimizer=ADAM, steps=80, record_every=80, certificate=False)
    for leaf in jax.tree_util.tree_leaves(res.model):
        assert leaf.dtype == jnp.float32
    h = res.history
    assert h.loss.dtype == jnp.float32 and h.grad_norm.dtype == jnp.float32
    assert h.status == "ok" and float(h.loss[-1]) < float(h.loss[0])


def test_bad_input(problem):
    model, x, y = problem
    sched = optax.constant_schedule(0.1)
    with pytest.raises(ValueError, match="exactly one of `tau`"):
        sh.fit(model, x, y, 0.1, schedule=sched)
    with pytest.raises(ValueError, match="exactly one of `tau`"):
        sh.fit(model, x, y)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="`tau`"):
            sh.fit(model, x, y, bad)
    with pytest.raises(ValueError, match="`tau`"):
        sh.fit(model, x, y, True)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="`steps`"):
            sh.fit(model, x, y, 0.1, steps=bad)
    with pytest.raises(ValueError, match="`y`"):
        sh.fit(model, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match="`x`"):
        sh.fit(model, x[:, 0], y, 0.1)
    with pytest.raises(ValueError, match="`optimizer`"):
        sh.fit(model, x, y, 0.1, optimizer=object())
    with pytest.raises(ValueError, match="`schedule`"):
        sh.fit(model, x, y, schedule=optax.linear_schedule(0.1, 0.0, 10), steps=10)
    with pytest.raises(ValueError, match="`schedule`"):
        sh.fit(model, x, y, schedule=0.1)
    with pytest.raises(ValueError, match="`key`"):
        sh.fit(model, x, y, 0.1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`key`"):
        sh.fit(model, x, y, 0.1, batch_size=10)
    with pytest.raises(ValueError, match="`batch_size`"):
        sh.fit(model, x, y, 0.1, batch_size=N + 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`record_every`"):
        sh.fit(model, x, y, 0.1, record_every=0)
    with pytest.raises(ValueError, match="`width`"):
        sh.fit(model, x, y, 0.1, width=-1.0)
    with pytest.raises(ValueError, match="`model`"):
        sh.fit(model.router, x, y, 0.1)
    nan_model = sh.MoE(
        sh.LinearRouter(model.router.W.at[0, 0].set(jnp.nan), model.router.b), model.experts
    )
    with pytest.raises(ValueError, match="`model"):
        sh.fit(nan_model, x, y, 0.1)


def test_diabetes_k4():
    """scikit-learn's bundled diabetes data (N = 442, d = 10, no download), K = 4."""
    X, Y = load_diabetes(return_X_y=True)
    x = jnp.asarray((X - X.mean(0)) / X.std(0))
    y = jnp.asarray((Y - Y.mean()) / Y.std())
    n, d = x.shape
    assert (n, d) == (442, 10)
    ks = jax.random.split(jax.random.key(11), 2)
    model = sh.MoE(
        sh.LinearRouter(0.3 * jax.random.normal(ks[0], (4, d)), jnp.zeros(4)),
        sh.LinearExperts(0.3 * jax.random.normal(ks[1], (4, d)), jnp.zeros(4)),
    )
    tau = 0.1
    res = sh.fit(model, x, y, tau, optimizer=ADAM, steps=300, record_every=100)
    h = res.history
    assert h.status == "ok"
    # standardised y: a linear fit explains about half the variance; the MoE does better
    assert float(h.final_loss) < 0.55 < float(h.loss[0])
    assert len(h.certificate_status) == 4
    for status, bound in zip(h.certificate_status, h.certificate):
        assert status in ("ok", "misfit", "atom") or status.startswith("refused")
        assert np.isfinite(float(bound)) == (status in ("ok", "misfit"))
    trained = res.model

    taus = jnp.array([0.02, 0.05, 0.1, 0.2])
    sweep = sh.risk_sweep(trained, x, y, taus)
    assert bool(jnp.all(jnp.isfinite(sweep.soft.value))) and bool(jnp.isfinite(sweep.hard.value))
    np.testing.assert_allclose(
        float(sweep.soft.value[2]), float(sh.soft_risk(trained, x, y, tau)), rtol=1e-10
    )
    c = sh.gap_coefficient(trained, x, y)
    assert np.isfinite(float(c.value)) and np.isfinite(float(c.stderr))

    def loss(m):
        return sh.soft_risk(m, x, y, tau)

    spec = sh.hessian_spectrum(loss, trained, k=3, num_matvecs=24)
    assert spec.eigenvalues.shape == (3,) and bool(jnp.all(jnp.isfinite(spec.eigenvalues)))
    assert bool(jnp.all(jnp.diff(spec.eigenvalues) >= 0))
    cls = sh.classify_critical_point(loss, trained)
    np.testing.assert_allclose(cls.grad_norm, float(h.final_grad_norm), rtol=1e-8)
    # honest: a point whose gradient exceeds the tolerance is "not critical", never a minimum
    if cls.grad_norm > cls.grad_tol:
        assert cls.kind == "not critical"
    else:
        assert cls.kind in ("minimum", "strict saddle", "degenerate")
    assert np.isfinite(cls.lambda_min) and np.isfinite(cls.lambda_max)
    np.testing.assert_allclose(cls.lambda_max, float(spec.eigenvalues[-1]), rtol=1e-6)
