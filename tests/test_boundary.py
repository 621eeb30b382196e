"""Boundary-mass profiles, ambiguity mass, slab widths and margin-tail fits (§2, §3, §5.4).

References: Example 3.8's closed form (3.11) written here with
scipy.stats.norm, sample-exact inclusions ((3.9), (5.6)) and hand computations.
Monte Carlo checks use fixed seeds and state the number of stderrs allowed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import softhard as sh
from softhard.boundary import (
    ambiguity_mass,
    ambiguity_widths,
    boundary_mass,
    margin_tail_fit,
    pairwise_slab_mass,
    slab_width,
    tail_widths,
)

N_BIG = 2**20

# Example 3.8 with an anisotropic covariance, non-zero mean and offset (d = 3)
MU = np.array([0.4, -0.3, 0.8])
_A = np.array([[1.1, 0.3, 0.0], [0.2, 0.7, 0.1], [-0.3, 0.4, 1.3]])
COV = _A @ _A.T
BETA = np.array([0.9, -1.2, 0.5])
OFFSET = -0.5


def _slab_probability(r):
    # (3.11): P(|s(X)| ≤ r) = Φ((r − m)/σ_s) − Φ((−r − m)/σ_s)
    m = BETA @ MU + OFFSET
    sig = math.sqrt(BETA @ COV @ BETA)
    return stats.norm.cdf((r - m) / sig) - stats.norm.cdf((-r - m) / sig)


@pytest.fixture(scope="module")
def logits2():
    # K = 2: a_1 − a_2 = βᵀx + b
    x = sh.Gaussian(mean=MU, cov=COV).sample(jax.random.key(38), N_BIG)
    router = sh.LinearRouter(W=np.stack([BETA, np.zeros(3)]), b=[OFFSET, 0.0])
    return sh.logits(router, x)


@pytest.fixture(scope="module")
def logits3():
    x = sh.Gaussian(mean=MU, cov=COV).sample(jax.random.key(39), 2**16)
    W = np.array([[1.0, 0.2, -0.3], [-0.4, 0.9, 0.1], [0.2, -0.5, 0.8]])
    return sh.logits(sh.LinearRouter(W, [0.1, -0.2, 0.0]), x)


def test_example_38_boundary_mass_matches_311(logits2):
    # N = 2^20, seed 38: within 3 binomial stderrs of (3.11) at every width
    ws = jnp.array([0.01, 0.05, 0.2, 0.5, 1.0, 2.5])
    est = boundary_mass(logits2, ws)
    assert est.value.shape == ws.shape and est.stderr.shape == ws.shape
    ref = _slab_probability(np.asarray(ws))
    np.testing.assert_array_less(np.abs(np.asarray(est.value) - ref), 3 * np.asarray(est.stderr))
    # the stderr is the binomial one
    np.testing.assert_allclose(est.stderr, np.sqrt(est.value * (1 - est.value) / N_BIG))
    # a scalar width gives a scalar
    one = boundary_mass(logits2, 0.2)
    assert one.value.shape == ()
    assert float(one.value) == pytest.approx(float(est.value[2]), rel=1e-14)


def test_k2_profiles_and_pairwise_sum_coincide(logits2):
    ws = jnp.array([0.0, 0.1, 0.7])
    top = boundary_mass(logits2, ws)
    pair = boundary_mass(logits2, ws, kind="pairwise")
    union = pairwise_slab_mass(logits2, ws)
    assert union.value.shape == (3, 1)
    np.testing.assert_array_equal(top.value, pair.value)
    np.testing.assert_array_equal(top.value, union.value[:, 0])
    assert float(top.value[0]) == 0.0  # no exact ties in a continuous sample


def test_k3_profile_ordering_39(logits3):
    # sample-exact: M(w) ≤ M_pair(w) ≤ Σ_{i<j} P(|s_ij| ≤ w) (3.9), and all increase in w
    ws = jnp.geomspace(1e-3, 3.0, 25)
    M = np.asarray(boundary_mass(logits3, ws).value)
    Mp = np.asarray(boundary_mass(logits3, ws, kind="pairwise").value)
    per_pair = pairwise_slab_mass(logits3, ws)
    assert per_pair.value.shape == (25, 3)
    union = np.asarray(per_pair.value).sum(axis=-1)
    assert np.all(M <= Mp) and np.all(Mp <= union + 1e-15)
    assert np.all(np.diff(M) >= 0) and np.all(np.diff(Mp) >= 0)
    assert np.any(M < Mp)  # K = 3: non-top pairs cross too
    # a hand count on a few rows
    a = np.asarray(logits3[:50])
    srt = np.sort(a, axis=1)
    w = 0.3
    got = boundary_mass(logits3[:50], w)
    assert float(got.value) == pytest.approx(np.mean(srt[:, 2] - srt[:, 1] <= w))
    got = boundary_mass(logits3[:50], w, kind="pairwise")
    assert float(got.value) == pytest.approx(np.mean(np.min(np.diff(srt, axis=1), axis=1) <= w))


@pytest.mark.parametrize("tau, delta", [(0.05, 0.1), (0.2, 0.3), (1.0, 0.02)])
def test_ambiguity_mass_sandwich_56(logits3, tau, delta):
    m = float(ambiguity_mass(logits3, tau, delta).value)
    lo, hi = ambiguity_widths(tau, delta, 3)
    below_lo = float(boundary_mass(logits3, lo).value)
    below_hi = float(boundary_mass(logits3, hi).value)
    pair_hi = float(boundary_mass(logits3, hi, kind="pairwise").value)
    assert below_lo <= m <= below_hi <= pair_hi
    assert below_lo < below_hi  # K = 3: a real sandwich


def test_ambiguity_mass_k2_coincides(logits2):
    # K = 2: m_δ(τ) = P(|s| < τ log((1−δ)/δ)) and both widths agree
    tau, delta = 0.1, 0.2
    lo, hi = ambiguity_widths(tau, delta, 2)
    assert float(lo) == pytest.approx(float(hi), rel=1e-15)
    assert float(lo) == pytest.approx(tau * math.log(4.0), rel=1e-15)
    m = ambiguity_mass(logits2, tau, delta)
    assert float(m.value) == float(boundary_mass(logits2, lo).value)
    ref = _slab_probability(float(lo))
    assert abs(float(m.value) - ref) < 3 * float(m.stderr)


def test_slab_width_is_the_gate_slab_35(logits2):
    # {ε ≤ σ(s/τ) ≤ 1−ε} = {|s| ≤ w_{τ,ε}} (3.5), sample by sample
    tau, eps = 0.3, 0.15
    w = slab_width(tau, eps)
    assert float(w) == pytest.approx(tau * math.log(0.85 / 0.15), rel=1e-15)
    pi1 = sh.gates(logits2, tau)[:, 0]
    frac = float(jnp.mean((pi1 >= eps) & (pi1 <= 1 - eps)))
    assert frac == pytest.approx(float(boundary_mass(logits2, w).value), abs=2 / N_BIG)
    taus = jnp.array([0.1, 0.2])
    np.testing.assert_allclose(slab_width(taus, eps), taus * math.log(0.85 / 0.15), rtol=1e-15)
    np.testing.assert_allclose(ambiguity_widths(taus, 0.1, 4).upper, taus * math.log(27.0))


def test_margin_tail_fit_power_law_exponent():
    # P(Δ ≤ w) = w² on [0, 1]: logits (V, 0) with |V| = U^{1/2}; α = 2, C_m = 1
    u = jax.random.uniform(jax.random.key(3), (N_BIG,))
    sign = jnp.where(jax.random.bernoulli(jax.random.key(4), 0.5, (N_BIG,)), 1.0, -1.0)
    a = jnp.stack([sign * jnp.sqrt(u), jnp.zeros(N_BIG)], axis=1)
    ws = jnp.geomspace(0.02, 0.5, 10)
    fit = margin_tail_fit(a, ws)
    assert abs(float(fit.alpha.value) - 2.0) < 3 * float(fit.alpha.stderr)
    assert abs(float(fit.C_m.value) - 1.0) < 3 * float(fit.C_m.stderr)
    assert 0 < float(fit.alpha.stderr) < 0.02
    assert float(fit.w0) == pytest.approx(0.5)
    # the envelope bounds the profile on the grid
    assert np.all(np.asarray(fit.mass.value) <= float(fit.C_env) * np.asarray(ws) ** 2.0 + 1e-12)


def test_margin_tail_fit_example_38(logits2):
    # linear router: M(w) ≈ 2 G(0) w, so α ≈ 1; compare with the same regression on (3.11)
    ws = np.geomspace(0.005, 0.1, 8)
    fit = margin_tail_fit(logits2, ws)
    X = np.stack([np.ones_like(ws), np.log(ws)], axis=1)
    exact = np.linalg.lstsq(X, np.log(_slab_probability(ws)), rcond=None)[0]
    assert abs(float(fit.alpha.value) - exact[1]) < 3 * float(fit.alpha.stderr)
    assert abs(float(fit.C_m.value) - math.exp(exact[0])) < 3 * float(fit.C_m.stderr)
    assert exact[1] == pytest.approx(1.0, abs=0.01)
    # the stderr accounts for the nested (correlated) masses: bootstrap-free check by
    # comparison with a fit on an independent half of the sample
    other = margin_tail_fit(logits2[: N_BIG // 2], ws)
    diff = float(other.alpha.value - fit.alpha.value)
    assert abs(diff) < 4 * float(other.alpha.stderr)


def test_float32_and_jit(logits2):
    a32 = logits2[: 2**16].astype(jnp.float32)
    ws = jnp.array([0.1, 0.4], jnp.float32)
    e32 = boundary_mass(a32, ws)
    assert e32.value.dtype == jnp.float32
    e64 = boundary_mass(logits2[: 2**16], ws.astype(jnp.float64))
    np.testing.assert_allclose(e32.value, e64.value, atol=2 / 2**16)
    jitted = jax.jit(lambda a, w: boundary_mass(a, w, kind="pairwise"))(logits2[: 2**16], ws)
    np.testing.assert_allclose(jitted.value, boundary_mass(logits2[: 2**16], ws).value)
    m32 = ambiguity_mass(a32, jnp.float32(0.1), 0.2)
    assert m32.value.dtype == jnp.float32
    # tiny temperatures and huge logits stay finite
    big = jnp.array([[1e6, 0.0, -1e6], [0.0, 1e-9, 0.0]])
    m = ambiguity_mass(big, 1e-8, 0.1)
    assert float(m.value) == pytest.approx(0.5)


def test_bad_input_names_the_argument(logits3):
    with pytest.raises(ValueError, match="`w`"):
        boundary_mass(logits3, -0.1)
    with pytest.raises(ValueError, match="`w`"):
        boundary_mass(logits3, jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="kind"):
        boundary_mass(logits3, 0.1, kind="all")
    with pytest.raises(ValueError, match="logits"):
        boundary_mass(jnp.ones(5), 0.1)
    with pytest.raises(ValueError, match="logits"):
        boundary_mass(jnp.ones((5, 1)), 0.1)
    with pytest.raises(ValueError, match="`w`"):
        pairwise_slab_mass(logits3, -1.0)
    for bad in (0.0, 0.5, 0.7, -0.1):
        with pytest.raises(ValueError, match="delta"):
            ambiguity_mass(logits3, 0.1, bad)
        with pytest.raises(ValueError, match="delta"):
            ambiguity_widths(0.1, bad, 3)
        with pytest.raises(ValueError, match="eps"):
            slab_width(0.1, bad)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="tau"):
            ambiguity_mass(logits3, bad, 0.1)
        with pytest.raises(ValueError, match="tau"):
            slab_width(bad, 0.1)
    with pytest.raises(ValueError, match="tau"):
        slab_width(jnp.array([0.1, 0.0]), 0.1)
    with pytest.raises(ValueError, match="`K`"):
        ambiguity_widths(0.1, 0.1, 1)
    with pytest.raises(ValueError, match="ws"):
        margin_tail_fit(logits3, [0.1])
    with pytest.raises(ValueError, match="ws"):
        margin_tail_fit(logits3, [0.0, 0.1])
    with pytest.raises(ValueError, match="ws"):
        margin_tail_fit(logits3, [1e-12, 2e-12])  # no margin that small: M(w) = 0


def test_pairwise_slab_mass_streams_and_matches_unstreamed(rng):
    a = jnp.asarray(rng.normal(size=(5000, 4)))
    ws = jnp.array([0.0, 0.05, 0.3, 2.0])
    i, j = sh.pair_indices(4)
    gaps = np.abs(np.asarray(a)[:, i] - np.asarray(a)[:, j])  # [N, P], the old [N, P, W] way
    ref = np.mean(gaps[:, :, None] <= np.asarray(ws)[None, None, :], axis=0).T
    for chunk in (None, 1000, 777):  # one chunk, even chunks, a ragged last chunk
        got = pairwise_slab_mass(a, ws, chunk_size=chunk)
        np.testing.assert_allclose(got.value, ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(got.stderr, np.sqrt(ref * (1 - ref) / 5000), atol=1e-13)
    # the working set does not grow with N (compiled temporaries at two sizes)
    from softhard.boundary import _pairwise_slab_mass

    temps = [
        _pairwise_slab_mass.lower(jnp.zeros((n, 16)), jnp.ones(4), chunk=1024)
        .compile()
        .memory_analysis()
        .temp_size_in_bytes
        for n in (2**14, 2**17)
    ]
    assert temps[1] <= temps[0] * 1.01


def test_non_finite_rows_are_refused(logits3):
    bad = logits3[:100].at[7, 1].set(jnp.nan).at[9, 0].set(jnp.inf)
    for call in (
        lambda: boundary_mass(bad, 0.1),
        lambda: boundary_mass(bad, 0.1, kind="pairwise"),
        lambda: ambiguity_mass(bad, 0.1, 0.1),
        lambda: pairwise_slab_mass(bad, 0.1),
        lambda: margin_tail_fit(bad, [0.1, 0.2]),
    ):
        with pytest.raises(ValueError, match=r"`logits`.*2 of 100 rows.*row 7"):
            call()


def test_k1_results_equal_before_to_rounding():
    # values recorded from the implementation before the top-k / atom changes; equal to
    # rounding (jaxlib builds differ by a few ulps in summation order), not to the bit
    a = jnp.asarray(np.random.default_rng(1234).normal(size=(4096, 4)))
    fit = margin_tail_fit(a, np.geomspace(0.02, 0.4, 7))
    got = [fit.C_m.value, fit.C_m.stderr, fit.alpha.value, fit.alpha.stderr]
    want = ["0x1.be5d93991b32dp-1", "0x1.8fa838bb5eca4p-5", "0x1.f0aaa912c65cbp-1"]
    want.append("0x1.2212bd50d9e26p-5")
    got, want = np.array([float(v) for v in got]), np.array([float.fromhex(h) for h in want])
    np.testing.assert_array_max_ulp(got, want, maxulp=16)
    c_env = np.array(float.fromhex("0x1.aed103cfaf6e4p+0"))
    np.testing.assert_array_max_ulp(np.asarray(float(fit.C_env)), c_env, maxulp=16)
    assert fit.status == "ok" and fit.k == 1 and float(fit.atom.value) == 0.0
    assert float(ambiguity_mass(a, 0.3, 0.1, k=1).value) == float.fromhex("0x1.29a0000000000p-1")
    f32 = margin_tail_fit(a.astype(jnp.float32), np.geomspace(0.02, 0.4, 7))
    assert float(f32.alpha.value) == float.fromhex("0x1.f0aaaa0000000p-1")
    assert f32.alpha.value.dtype == jnp.float32


def test_tail_widths_above_an_atom():
    m = np.concatenate([np.zeros(500), np.linspace(0.001, 1.0, 9500)])
    ws = tail_widths(m)
    assert ws[0] > 0 and ws[-1] == pytest.approx(np.quantile(m[m > 0], 0.25))
    np.testing.assert_array_equal(tail_widths(m[500:]), ws)
    with pytest.raises(ValueError, match="margin"):
        tail_widths(np.zeros(100))
