"""Top-k routing (EQUATIONS.md §T): the soft top-k mask, margins, predictors, risks, sweeps.

Independent references: a bisection root-finder for θ in T.3 (`scipy.optimize.brentq`),
NumPy hand computations of T.2 and T.5, central differences, the gate bound T.8,
and the worked check case of §T (`L_τ/τ → 0.385273`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from scipy.optimize import brentq

import softhard as sh


def _mask_by_root_finding(a: np.ndarray, tau: float, k: int) -> np.ndarray:
    def excess(theta):
        return np.minimum(1.0, np.exp(np.minimum((a - theta) / tau, 50.0))).sum() - k

    lo, hi = a.min() - 60 * tau - 10.0, a.max() + 60 * tau + 10.0
    theta = brentq(excess, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
    return np.minimum(1.0, np.exp(np.minimum((a - theta) / tau, 0.0)))


def test_soft_topk_mask_against_root_finder(rng):
    a = rng.normal(size=(400, 6)) * rng.choice([0.1, 1.0, 5.0], size=(400, 1))
    for k in (1, 2, 3, 5):
        for tau in (0.03, 0.3, 3.0):
            mu = np.asarray(sh.gates(jnp.asarray(a), tau, k=k))
            ref = np.stack([_mask_by_root_finding(row, tau, k) for row in a])
            np.testing.assert_allclose(mu, ref, atol=1e-11)
            np.testing.assert_allclose(mu.sum(-1), k, rtol=1e-12)
            assert np.all((mu >= 0) & (mu <= 1))


def test_k1_is_softmax_and_k_equal_K_is_ones(rng, dtype):
    a = jnp.asarray(rng.normal(size=(64, 5)) * 3, dtype)
    np.testing.assert_allclose(
        sh.gates(a, 0.4, k=1), jax.nn.softmax(a / 0.4, -1), rtol=tol(dtype, 1e-12, 1e-5)
    )
    np.testing.assert_array_equal(sh.gates(a, 0.4, k=1), sh.gates(a, 0.4))
    np.testing.assert_allclose(sh.gates(a, 0.4, k=5), np.ones((64, 5)))


def test_mask_is_continuous_across_the_cap_switch():
    # a_0 moves up through the point where it becomes capped (k = 2, τ = 1)
    base = np.array([0.0, 0.0, -1.0])
    grid = np.linspace(-1.0, 3.0, 4001)
    a = np.stack([base + np.array([t, 0.0, 0.0]) for t in grid])
    mu = np.asarray(sh.gates(jnp.asarray(a), 1.0, k=2))
    assert np.max(np.abs(np.diff(mu, axis=0))) < 5e-3  # steps of 1e-3 in a_0: no jump
    assert mu[0, 0] < 1 and mu[-1, 0] == 1.0  # uncapped at the start, capped at the end


@pytest.mark.parametrize("k", [2, 3])
def test_mask_gradient_matches_central_differences(rng, k):
    a0 = rng.normal(size=5)
    w = rng.normal(size=5)

    def f(a):
        return jnp.sum(w * sh.gates(a[None, :], 0.7, k=k)[0])

    g = jax.grad(f)(jnp.asarray(a0))
    eps = 1e-6
    fd = [
        (f(jnp.asarray(a0 + eps * e)) - f(jnp.asarray(a0 - eps * e))) / (2 * eps) for e in np.eye(5)
    ]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("tau", [1e-8, 1e-3])
def test_extreme_temperatures_and_logits(dtype, tau):
    a = jnp.asarray([[1e6, 0.0, -1e6, 3.0], [0.0, 0.0, 0.0, 0.0]], dtype)
    mu = sh.gates(a, tau, k=2)
    assert bool(jnp.all(jnp.isfinite(mu)))
    np.testing.assert_allclose(mu[0], [1, 0, 0, 1])
    np.testing.assert_allclose(mu[1], [0.5] * 4, rtol=tol(dtype, 1e-12, 1e-6))
    g = jax.grad(lambda a: jnp.sum(sh.gates(a, tau, k=2)[:, 1]))(a)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_gate_bound_and_zero_temperature_limit(rng):
    """T.8: Σ_{j∉S_k} μ_j = Σ_{j∈S_k}(1 − μ_j) ≤ (K − k) e^{−Δ_k/τ}; τ → 0 gives T.2."""
    K = 7
    a = jnp.asarray(rng.normal(size=(2000, K)))
    for k in range(1, K):
        hard = sh.hard_gates(a, k=k)
        dk = sh.topk_margin(a, k)
        for tau in (0.01, 0.1, 1.0, 10.0):
            mu = sh.gates(a, tau, k=k)
            out = jnp.sum(jnp.where(hard > 0, 0.0, mu), -1)
            short = jnp.sum(jnp.where(hard > 0, 1.0 - mu, 0.0), -1)
            np.testing.assert_allclose(out, short, atol=1e-12)
            assert bool(jnp.all(out <= (K - k) * jnp.exp(-dk / tau) * (1 + 1e-12) + 1e-15))
        cold = sh.gates(a, 1e-6, k=k)
        clear = np.asarray(dk) > 1e-3
        np.testing.assert_allclose(np.asarray(cold)[clear], np.asarray(hard)[clear], atol=1e-12)


def test_ties_go_to_the_lowest_index():
    a = jnp.array([[0.0, 1.0, 1.0, 1.0, 0.5]])
    np.testing.assert_array_equal(sh.hard_gates(a, k=2), [[0, 1, 1, 0, 0]])
    np.testing.assert_array_equal(sh.hard_gates(a, k=1), [[0, 1, 0, 0, 0]])
    assert float(sh.topk_margin(a, 2)[0]) == 0.0 and float(sh.topk_margin(a, 3)[0]) == 0.5
    # the soft mask treats tied logits alike
    mu = sh.gates(a, 0.1, k=2)[0]
    np.testing.assert_allclose(mu[1], mu[2])
    np.testing.assert_allclose(mu[2], mu[3])


def test_topk_margin_against_sorting(rng):
    a = rng.normal(size=(300, 6))
    s = -np.sort(-a, axis=1)
    for k in range(1, 6):
        np.testing.assert_allclose(sh.topk_margin(jnp.asarray(a), k), s[:, k - 1] - s[:, k])
    np.testing.assert_array_equal(sh.topk_margin(jnp.asarray(a), 1), sh.top_two_margin(a))


def _random_moe(rng, K, d, **routing):
    r = sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K))
    e = sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K))
    return sh.MoE(r, e, **routing)


@pytest.mark.parametrize("rho", [None, 1.0, 0.3])
def test_topk_predictors_by_hand(rng, rho):
    """T.5 in NumPy: weights μ c / Σ μ c with μ from the root-finder and c = e^{a/ρ}."""
    K, d, k, tau = 5, 3, 2, 0.2
    m = _random_moe(rng, K, d, k=k, combine_temperature=rho)
    x = rng.normal(size=(200, d))
    a = x @ np.asarray(m.router.W).T + np.asarray(m.router.b)
    f = x @ np.asarray(m.experts.B).T + np.asarray(m.experts.c)
    c = np.ones_like(a) if rho is None else np.exp(a / rho)
    mu = np.stack([_mask_by_root_finding(row, tau, k) for row in a])
    soft = (mu * c * f).sum(1) / (mu * c).sum(1)
    top = np.argsort(-a, axis=1, kind="stable")[:, :k]
    sel = np.zeros_like(a)
    np.put_along_axis(sel, top, 1.0, axis=1)
    hard = (sel * c * f).sum(1) / (sel * c).sum(1)
    np.testing.assert_allclose(sh.soft_predict(m, x, tau), soft, rtol=1e-9)
    np.testing.assert_allclose(sh.hard_predict(m, x), hard, rtol=1e-12)
    y = rng.normal(size=200)
    np.testing.assert_allclose(sh.soft_risk(m, x, y, tau), np.mean((y - soft) ** 2), rtol=1e-9)
    np.testing.assert_allclose(sh.hard_risk(m, x, y), np.mean((y - hard) ** 2), rtol=1e-12)
    # one input at a time (the model's __call__ / hard) agrees with the batch
    np.testing.assert_allclose(jax.vmap(lambda v: m(v, tau))(x), soft, rtol=1e-9)
    np.testing.assert_allclose(jax.vmap(m.hard)(x), hard, rtol=1e-12)


def test_selection_scores_pick_experts_and_logits_combine(rng):
    K, d = 4, 2
    bias = np.array([0.0, 3.0, 0.0, -3.0])
    m = _random_moe(rng, K, d, k=2, combine_temperature=1.0, selection=lambda a: a + bias)
    x = rng.normal(size=(100, d))
    a = x @ np.asarray(m.router.W).T + np.asarray(m.router.b)
    f = x @ np.asarray(m.experts.B).T + np.asarray(m.experts.c)
    top = np.argsort(-(a + bias), axis=1, kind="stable")[:, :2]
    sel = np.zeros_like(a)
    np.put_along_axis(sel, top, 1.0, axis=1)
    c = np.exp(a)
    np.testing.assert_allclose(sh.hard_predict(m, x), (sel * c * f).sum(1) / (sel * c).sum(1))


def test_worked_check_case_of_section_T():
    """§T: a = (5, x_1, 0), f = (0, 2x_2 + 1, −x_2), k = 2, Y = f_0: L_τ/τ → 0.385273.

    N = 2^21, seed 0; at τ = 0.01 and 0.02 the O(τ) remainder is below the
    Monte Carlo error, so each estimate lies within 3 stderr of the limit.
    """
    r = sh.LinearRouter([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], [5.0, 0.0, 0.0])
    e = sh.LinearExperts([[0.0, 0.0], [0.0, 2.0], [0.0, -1.0]], [0.0, 1.0, 0.0])
    teacher = sh.Teacher(r, e, k=2)
    x, y = teacher.sample(jax.random.key(0), sh.StandardGaussian(2), 2**21)
    taus = jnp.array([0.01, 0.02])
    d = sh.diagnostic_sweep(sh.MoE(r, e, k=2), x, y, taus)
    assert float(d.hard.value) == 0.0
    ratio, se = np.asarray(d.gap.value / taus), np.asarray(d.gap.stderr / taus)
    assert np.all(np.abs(ratio - 0.385273) < 3 * se) and np.all(se < 0.01)
    # M_2(2τ) = P(|x_1| ≤ 2τ) here
    from scipy import stats

    exact = 2 * stats.norm.cdf(2 * np.asarray(taus)) - 1
    assert np.all(np.abs(np.asarray(d.mass.value) - exact) < 4 * np.asarray(d.mass.stderr))


@pytest.mark.parametrize("rho", [None, 1.0])
def test_topk_sweeps_equal_per_tau_objectives(rng, dtype, rho):
    K, d, n, k = 6, 3, 2100, 2
    m = jax.tree.map(
        lambda v: jnp.asarray(v, dtype), _random_moe(rng, K, d, k=k, combine_temperature=rho)
    )
    x = jnp.asarray(rng.normal(size=(n, d)), dtype)
    y = jnp.asarray(rng.normal(size=n), dtype)
    taus = jnp.array([1e-6, 0.05, 0.5, 3.0], dtype)
    out = sh.diagnostic_sweep(m, x, y, taus, chunk_size=512)
    rt = tol(dtype, 1e-11, 5e-5)
    a = sh.logits(m.router, x)
    margin = sh.topk_margin(a, k)
    sel = sh.hard_gates(a, k=k) > 0
    for i, t in enumerate(taus):
        np.testing.assert_allclose(out.soft.value[i], sh.soft_risk(m, x, y, t), rtol=rt)
        mu = sh.gates(a, t, k=k)
        amb = jnp.mean(jnp.min(jnp.where(sel, mu, 1.0), -1) < 0.9)
        np.testing.assert_allclose(out.ambiguity.value[i], amb, atol=2 / n)
        np.testing.assert_allclose(out.mass.value[i], jnp.mean(margin <= 2 * t), atol=1e-12)
        w = mu * (1.0 if rho is None else jnp.exp(a / rho))
        w = w / jnp.sum(w, -1, keepdims=True)
        ent = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), -1)
        np.testing.assert_allclose(out.entropy.value[i], jnp.mean(ent), rtol=rt, atol=1e-6)
    np.testing.assert_allclose(out.hard.value, sh.hard_risk(m, x, y), rtol=rt)
    # the two front ends share the kernel (the per-τ objectives above are the
    # independent check); at τ = 1e-6 a float32 logit's rounding (6e-8) moves
    # a near-tied mask by O(0.1), so compilation-dependent rounding is compared
    # only where the problem is well-conditioned
    rs = sh.risk_sweep(m, x, y, taus)
    np.testing.assert_allclose(rs.soft.value[1:], out.soft.value[1:], rtol=rt)


def test_k1_passed_explicitly_is_bit_identical(rng):
    base = _random_moe(rng, 4, 3)
    explicit = sh.MoE(base.router, base.experts, k=1)
    x, y = jnp.asarray(rng.normal(size=(500, 3))), jnp.asarray(rng.normal(size=500))
    taus = jnp.array([0.01, 0.3])
    for f in (
        lambda m: sh.soft_risk(m, x, y, 0.1),
        lambda m: sh.hard_risk(m, x, y),
        lambda m: sh.diagnostic_sweep(m, x, y, taus),
        lambda m: jax.grad(lambda mm: sh.soft_risk(mm, x, y, 0.1))(m).router.W,
    ):
        for u, v in zip(jax.tree.leaves(f(base)), jax.tree.leaves(f(explicit))):
            np.testing.assert_array_equal(u, v)


def test_bad_routing_input_names_the_argument(rng):
    r = sh.LinearRouter(rng.normal(size=(3, 2)), rng.normal(size=3))
    e = sh.LinearExperts(rng.normal(size=(3, 2)), rng.normal(size=3))
    for bad in (0, 3, 4, 1.5, True):
        with pytest.raises(ValueError, match="`k`"):
            sh.MoE(r, e, k=bad)
    for bad in (0.0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError, match="combine_temperature"):
            sh.MoE(r, e, k=2, combine_temperature=bad)
    a = jnp.asarray(rng.normal(size=(4, 3)))
    for bad in (0, 4, 2.5, True):
        with pytest.raises(ValueError, match="`k`"):
            sh.gates(a, 0.1, k=bad)
        with pytest.raises(ValueError, match="`k`"):
            sh.hard_gates(a, k=bad)
    with pytest.raises(ValueError, match="`k`"):
        sh.topk_margin(a, 3)  # k < K


def test_top1_only_estimators_refuse_a_topk_model(rng):
    """Where the top-k form is not built yet, a top-k model gets an error, not a top-1 answer."""
    m = _random_moe(rng, 3, 2, k=2)
    x, y = jnp.asarray(rng.normal(size=(64, 2))), jnp.asarray(rng.normal(size=64))
    for call in (lambda: sh.hard_risk_gradient(m, x, y),):
        with pytest.raises(ValueError, match="top-1"):
            call()


def test_topk_boundary_mass_against_sorting(rng):
    a = jnp.asarray(rng.normal(size=(3000, 5)))
    w = jnp.array([0.0, 0.05, 0.2, 1.0])
    s = -np.sort(-np.asarray(a), axis=1)
    for k in (1, 2, 4):
        est = sh.boundary_mass(a, w, k=k)
        ref = np.mean((s[:, k - 1] - s[:, k])[None, :] <= np.asarray(w)[:, None], axis=1)
        np.testing.assert_allclose(est.value, ref)
        np.testing.assert_allclose(est.stderr, np.sqrt(ref * (1 - ref) / 3000))
    with pytest.raises(ValueError, match="kind"):
        sh.boundary_mass(a, w, kind="pairwise", k=2)
    with pytest.raises(ValueError, match="`k`"):
        sh.boundary_mass(a, w, k=5)


@pytest.mark.parametrize("rho", [pytest.param(None, marks=pytest.mark.slow), 1.0])
def test_landscape_on_a_topk_loss(rng, rho):
    """Hessian spectra of a top-2 loss: Lanczos = dense eigh, and the router gauge is exact.

    Top-k masks are invariant to adding one function of x to every logit, as softmax
    is, so the Hessian vanishes on the translations of the router rows (`gauge="auto"`).
    """
    from jax.flatten_util import ravel_pytree

    m = _random_moe(rng, 4, 2, k=2, combine_temperature=rho)
    x = jnp.asarray(rng.normal(size=(256, 2)))
    y = jnp.asarray(rng.normal(size=256))
    loss = lambda mm: sh.soft_risk(mm, x, y, 0.3)
    flat, unravel = ravel_pytree(m)
    H = jax.hessian(lambda v: loss(unravel(v)))(flat)
    dense = np.linalg.eigvalsh(np.asarray(H))
    np.testing.assert_allclose(sh.hessian_spectrum(loss, m).eigenvalues, dense, atol=1e-10)
    G = np.asarray(sh.gauge_directions(m))
    assert G.shape == (flat.size, 3)  # d + 1 translations of the router rows
    np.testing.assert_allclose(np.asarray(H) @ G, 0.0, atol=1e-10)
    fixed = sh.hessian_spectrum(loss, m, gauge="auto").eigenvalues
    assert fixed.shape == (flat.size - 3,)
    # the gauge zeros are gone, the rest of the spectrum is unchanged
    nonzero = np.sort(np.delete(dense, np.argsort(np.abs(dense))[:3]))
    np.testing.assert_allclose(np.sort(fixed), nonzero, atol=1e-9)


_BIAS = (0.3, -0.2, 0.0, 0.1, -0.4, 0.2)


def _biased(a):
    return a + jnp.asarray(_BIAS, a.dtype)


@pytest.mark.parametrize(
    "k, rho, selection",
    [
        (2, None, None),
        pytest.param(3, None, None, marks=pytest.mark.slow),
        pytest.param(2, 1.0, None, marks=pytest.mark.slow),
        (3, 0.5, None),
        (2, 1.0, _biased),
    ],
)
def test_topk_risk_sweep_equals_the_objective(rng, k, rho, selection):
    """The risk-only sweep (top k + 1 order, tail sums) against `soft_risk` at every τ.

    Its own path since it no longer sorts: checked down to τ = 1e-8, with exact ties
    (two identical router rows, lowest index first) and logits of 1e6.
    """
    K, d, n = 6, 3, 1500
    m = _random_moe(rng, K, d, k=k, combine_temperature=rho, selection=selection)
    W = np.asarray(m.router.W).copy()
    b = np.asarray(m.router.b).copy()
    W[3], b[3] = W[1], b[1]  # experts 1 and 3 tie everywhere
    m = sh.MoE(sh.LinearRouter(W, b), m.experts, k=k, combine_temperature=rho, selection=selection)
    x = jnp.asarray(rng.normal(size=(n, d)))
    y = jnp.asarray(rng.normal(size=n))
    taus = jnp.array([1e-8, 1e-3, 0.05, 0.5, 3.0])
    rs = sh.risk_sweep(m, x, y, taus, chunk_size=512)
    ds = sh.diagnostic_sweep(m, x, y, taus, chunk_size=512)  # the sorting kernel
    for i, t in enumerate(taus):
        # at τ = 1e-8 a logit's rounding (eps |a| ~ 1e-16) is 1e-8 in an exponent: both
        # kernels and the objective agree only to that conditioning there (seen: 4e-10)
        rt = 1e-8 if t < 1e-6 else 1e-11
        np.testing.assert_allclose(rs.soft.value[i], sh.soft_risk(m, x, y, t), rtol=rt)
        np.testing.assert_allclose(rs.soft.value[i], ds.soft.value[i], rtol=rt)
    np.testing.assert_allclose(rs.hard.value, sh.hard_risk(m, x, y), rtol=1e-11)
    big = sh.MoE(sh.LinearRouter(1e6 * W, 1e6 * b), m.experts, k=k)
    rb = sh.risk_sweep(big, x, y, jnp.array([1e-8, 1.0]))
    assert np.all(np.isfinite(np.asarray(rb.soft.value)))
    # τ = 1: logit differences of 1e6 are far above τ except on the tie (experts 1, 3),
    # where the soft mask splits and the hard one takes the lower index (an atom);
    # at τ = 1e-8 the tie's rounding (1e-10 at logits of 1e6) is an O(0.01) exponent,
    # so only finiteness is a kernel-independent fact there
    np.testing.assert_allclose(rb.soft.value[1], sh.soft_risk(big, x, y, 1.0), rtol=1e-9)
