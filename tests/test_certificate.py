"""The Theorem 4.5 certificate and the Theorem 4.7 check on a parameter box (§4).

`soft_hard_bound` is checked by hand and against direct integration of its
margin-tail step; `certify` must never fall below the gap it bounds on
bounded (clipped) experts; `gamma_check` must find sup-gaps under the
certificate that shrink with τ, and L_τ-minimisers whose hard risk approaches
the minimum of L_0.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import softhard as sh
from softhard.boundary import margin_tail_fit
from softhard.certificate import certify, gamma_check, soft_hard_bound


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BoundedExperts:
    """Linear experts bounded by `bound` (Assumption 4.3): `x: [d] -> [K]`.

    Clipped to `[−bound, bound]`, or with `smooth` the smooth
    `bound · tanh((Bx + c)/bound)` (for gradient ascent).
    """

    B: jax.Array
    c: jax.Array
    bound: float = dataclasses.field(default=1.0, metadata={"static": True})
    smooth: bool = dataclasses.field(default=False, metadata={"static": True})

    def __call__(self, x):
        z = self.B @ x + self.c
        if self.smooth:
            return self.bound * jnp.tanh(z / self.bound)
        return jnp.clip(z, -self.bound, self.bound)


# ----------------------------------------------------------------------------
# soft_hard_bound
# ----------------------------------------------------------------------------


def test_soft_hard_bound_by_hand():
    tau, B_Y, B_f, K, C_m, alpha, w0 = 0.05, 2.0, 1.5, 3, 0.8, 1.3, 0.4
    got = soft_hard_bound(tau, B_Y, B_f, K, C_m, alpha, w0)
    ref = (
        4
        * B_f
        * (B_Y + B_f)
        * (K - 1)
        * (C_m * math.gamma(alpha + 1) * tau**alpha + math.exp(-w0 / tau))
    )
    assert float(got) == pytest.approx(ref, rel=1e-13)
    taus = jnp.array([1e-4, 1e-2, 0.3])
    vec = soft_hard_bound(taus, B_Y, B_f, K, C_m, alpha, w0)
    assert vec.shape == (3,)
    for t, v in zip(taus, vec):
        assert float(v) == pytest.approx(float(soft_hard_bound(t, B_Y, B_f, K, C_m, alpha, w0)))
    assert np.all(np.diff(np.asarray(vec)) > 0)
    assert soft_hard_bound(jnp.float32(0.1), 1.0, 1.0, 2, 1.0, 1.0, 1.0).dtype == jnp.float32


def test_margin_integral_step_of_the_proof():
    # E[e^{−Δ/τ}] ≤ C_m Γ(α+1) τ^α + e^{−w0/τ} when P(Δ ≤ w) = min(1, C_m w^α) on [0, w0]
    C_m, alpha, w0 = 2.0, 0.7, 0.3
    for tau in (0.01, 0.1, 1.0):
        # E[e^{−Δ/τ}] = ∫_0^∞ (1/τ) e^{−w/τ} P(Δ ≤ w) dw, with P(Δ ≤ w) ≤ 1 beyond w0
        head = integrate.quad(lambda w, t=tau: math.exp(-w / t) / t * C_m * w**alpha, 0, w0)[0]
        tail = math.exp(-w0 / tau)
        bound = C_m * special.gamma(alpha + 1) * tau**alpha + math.exp(-w0 / tau)
        assert head + tail <= bound * (1 + 1e-12)
        cert = soft_hard_bound(tau, 1.0, 1.0, 2, C_m, alpha, w0)
        assert float(cert) == pytest.approx(8 * bound, rel=1e-12)


def test_soft_hard_bound_bad_input():
    ok = dict(tau=0.1, B_Y=1.0, B_f=1.0, K=2, C_m=1.0, alpha=1.0, w0=1.0)
    for name, bad in [
        ("tau", 0.0),
        ("tau", -1.0),
        ("tau", jnp.array([0.1, 0.0])),
        ("tau", jnp.ones((2, 2))),
        ("B_Y", -1.0),
        ("B_f", -0.5),
        ("K", 1),
        ("K", 2.5),
        ("C_m", -1.0),
        ("alpha", -0.1),
        ("w0", 0.0),
        ("B_Y", jnp.ones(2)),
    ]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            soft_hard_bound(**{**ok, name: bad})


# ----------------------------------------------------------------------------
# certify: never below the measured gap
# ----------------------------------------------------------------------------


def _clipped_model(rng, K, d, bound=1.0):
    router = sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K))
    return sh.MoE(router, BoundedExperts(rng.normal(size=(K, d)), rng.normal(size=K), bound))


TAUS = jnp.geomspace(1e-3, 1.0, 10)


@pytest.mark.parametrize("K", [2, 3])
def test_certificate_never_below_the_gap(rng, K):
    d, n = 3, 2**15
    model = _clipped_model(rng, K, d)
    x = sh.StandardGaussian(d).sample(jax.random.key(K), n)
    # a non-realizable bounded target: a clipped teacher with other experts, plus bounded noise
    teacher = _clipped_model(rng, K, d, bound=1.5)
    y = sh.hard_predict(teacher, x) + 0.2 * jax.random.uniform(jax.random.key(9), (n,), minval=-1)
    cert = certify(model, x, y, TAUS)
    assert cert.bound.shape == TAUS.shape and cert.gap.value.shape == TAUS.shape
    gap = np.abs(np.asarray(cert.gap.value))
    assert np.all(np.asarray(cert.bound) >= gap)
    # the gap is measured exactly on the sample: it equals L̂_τ − L̂_0
    t = 3
    direct = sh.soft_risk(model, x, y, TAUS[t]) - sh.hard_risk(model, x, y)
    assert float(cert.gap.value[t]) == pytest.approx(float(direct), rel=1e-10, abs=1e-15)
    # the constants read off the data
    assert float(cert.B_f) <= 1.0 and float(cert.B_Y) <= 1.7
    assert float(cert.tail.alpha.value) == pytest.approx(1.0, abs=0.15)  # linear router
    # and the bound is informative at small τ: it vanishes like τ
    assert float(cert.bound[0]) < 0.05 * float(cert.bound[-1])


def test_certificate_with_given_bounds_and_widths(rng):
    d, n = 2, 2**14
    model = _clipped_model(rng, 2, d, bound=0.5)
    x = sh.StandardGaussian(d).sample(jax.random.key(1), n)
    y = jnp.clip(x[:, 0], -1.0, 1.0)
    ws = np.geomspace(0.01, 0.2, 6)
    cert = certify(model, x, y, TAUS, ws=ws, B_Y=1.0, B_f=0.5)
    tail = margin_tail_fit(sh.logits(model.router, x), ws)
    np.testing.assert_allclose(cert.tail.C_env, tail.C_env)
    ref = soft_hard_bound(TAUS, 1.0, 0.5, 2, tail.C_env, tail.alpha.value, tail.w0)
    np.testing.assert_allclose(cert.bound, ref, rtol=1e-12)
    assert np.all(np.asarray(cert.bound) >= np.abs(np.asarray(cert.gap.value)))


def test_certify_bad_input(rng):
    model = _clipped_model(rng, 2, 2)
    x = jnp.ones((16, 2))
    with pytest.raises(ValueError, match="taus"):
        certify(model, x, jnp.ones(16), jnp.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="`y`"):
        certify(model, x, jnp.ones(15), TAUS)
    # all logits tied: no margin tail, no certificate
    tied = sh.MoE(sh.LinearRouter(np.zeros((2, 2)), np.zeros(2)), model.experts)
    xs = sh.StandardGaussian(2).sample(jax.random.key(0), 256)
    with pytest.raises(ValueError, match="margin"):
        certify(tied, xs, jnp.zeros(256), TAUS)


# ----------------------------------------------------------------------------
# gamma_check: Theorem 4.7 on a box
# ----------------------------------------------------------------------------


def test_gamma_check_uniform_gap_and_almost_minimisers():
    # K = 2, d = 2; box: router rows W_0 ∈ [0.5, 2]×[−1, 1], W_1 = 0 ± 0.25 (so the
    # score direction stays away from 0: a uniform margin tail), biases ±0.5;
    # experts' slopes and offsets in [−1.5, 1.5], bounded by 2 tanh(·/2).
    d, n = 2, 2**11
    x = sh.StandardGaussian(d).sample(jax.random.key(0), n)
    teacher = sh.MoE(
        sh.LinearRouter([[1.0, 0.5], [0.0, 0.0]], [0.2, 0.0]),
        BoundedExperts(
            jnp.array([[1.0, -0.5], [-1.0, 0.5]]), jnp.array([0.5, -0.5]), 2.0, smooth=True
        ),
    )
    y = sh.hard_predict(teacher, x)
    model = sh.MoE(
        sh.LinearRouter([[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0]),
        BoundedExperts(jnp.zeros((2, 2)), jnp.zeros(2), 2.0, smooth=True),
    )
    lower = sh.MoE(
        sh.LinearRouter([[0.5, -1.0], [-0.25, -0.25]], [-0.5, -0.5]),
        BoundedExperts(jnp.full((2, 2), -1.5), jnp.full(2, -1.5), 2.0, smooth=True),
    )
    upper = sh.MoE(
        sh.LinearRouter([[2.0, 1.0], [0.25, 0.25]], [0.5, 0.5]),
        BoundedExperts(jnp.full((2, 2), 1.5), jnp.full(2, 1.5), 2.0, smooth=True),
    )
    taus = jnp.array([0.3, 0.1, 0.03])
    out = gamma_check(
        model, x, y, taus, lower=lower, upper=upper, key=jax.random.key(1),
        n_starts=2, steps=150, reference=teacher,
    )  # fmt: skip
    assert out.sup_gap.shape == (3,) and out.certificate.shape == (3,)
    sup = np.asarray(out.sup_gap)
    # (4.9): the uniform gap is under the certificate and shrinks with τ
    assert np.all(sup <= np.asarray(out.certificate))
    assert np.all(np.diff(sup) < 0) and sup[-1] < 0.2 * sup[0]
    # the ascent does at least as well as the unoptimised start
    start_gap = abs(float(sh.soft_risk(model, x, y, taus[0]) - sh.hard_risk(model, x, y)))
    assert sup[0] >= start_gap
    # maximisers stay in the box
    for leaf, lo, hi in zip(
        jax.tree.leaves(out.maximisers), jax.tree.leaves(lower), jax.tree.leaves(upper)
    ):
        assert np.all(np.asarray(leaf) >= np.asarray(lo) - 1e-12)
        assert np.all(np.asarray(leaf) <= np.asarray(hi) + 1e-12)
    # (iii): the hard risk at the L_τ-minimiser approaches min L_0 = 0 (the teacher)
    assert float(out.hard_min) == 0.0
    excess = np.asarray(out.excess)
    assert excess[-1] < excess[0] and excess[-1] < 0.02 * float(jnp.var(y))


def test_gamma_check_bad_input(rng):
    model = _clipped_model(rng, 2, 2)
    x, y = jnp.ones((8, 2)), jnp.ones(8)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="compact"):
        gamma_check(model, x, y, TAUS, lower=-jnp.inf, upper=1.0, key=key)
    with pytest.raises(ValueError, match="upper"):
        gamma_check(model, x, y, TAUS, lower=1.0, upper=1.0, key=key)
    with pytest.raises(ValueError, match="n_starts"):
        gamma_check(model, x, y, TAUS, lower=-1.0, upper=1.0, key=key, n_starts=0)
    with pytest.raises(ValueError, match="lower"):
        gamma_check(model, x, y, TAUS, lower={"a": 1.0}, upper=1.0, key=key)


def test_top1_certificate_equals_before_to_rounding():
    # values recorded from the implementation before the top-k changes; equal to rounding
    # (jaxlib builds differ by a few ulps in summation order), not to the bit
    rng = np.random.default_rng(99)
    m = sh.MoE(
        sh.LinearRouter(rng.normal(size=(3, 2)), rng.normal(size=3)),
        sh.LinearExperts(rng.normal(size=(3, 2)), rng.normal(size=3)),
    )
    x, y = jnp.asarray(rng.normal(size=(4096, 2))), jnp.asarray(rng.normal(size=4096))
    c = certify(m, x, y, jnp.array([0.01, 0.1]))
    want = [float.fromhex("0x1.8dee597536c89p+2"), float.fromhex("0x1.0f23711cf3a0fp+6")]
    np.testing.assert_array_max_ulp(np.asarray(c.bound), np.array(want), maxulp=16)
    c_env = np.array(float.fromhex("0x1.bb764f7f5e85fp-1"))
    np.testing.assert_array_max_ulp(np.asarray(float(c.tail.C_env)), c_env, maxulp=16)
    got = soft_hard_bound(0.07, 1.3, 0.9, 4, 0.8, 1.1, 0.3, k=1)
    assert float(got) == float.fromhex("0x1.64f1389d2b63ep+0")  # a closed form: to the bit
