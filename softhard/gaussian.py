"""Exact population values for Gaussian inputs and linear models (Example 3.8, §3, §5).

For `X ~ N(μ, Σ)`, a `LinearRouter`, `LinearExperts` and a linear target
(a hard-routed linear `Teacher` or a `LinearTarget`), every population quantity
of the paper reduces to a low-dimensional Gaussian integral:

- the closed forms of Example 3.8: `gaussian_slab_probability` (3.11),
  `gaussian_interface_density` (3.14) and its Hausdorff-measure variant
  `gaussian_interface_area` ([X], `|β| φ(m/σ_s)/σ_s`);
- `exact_soft_risk` (2.5), `exact_hard_risk` (2.11), `exact_risk_gap` (4.5),
  including the noise variance `σ_ξ²` (5.3);
- `exact_boundary_mass` (2.13, 2.14) and `exact_ambiguity_mass` (5.5);
- `exact_gap_coefficient`: the first-order coefficient `c` in
  `L_τ − L_0 = c τ + o(τ)` (EQUATIONS.md §3, "General target, K=2" [X]).

How the integrals are done
--------------------------
All linear functionals involved (student logit differences `z_k = a_k − a_K`,
teacher logit differences `t_k = a*_k − a*_{K*}`, the experts' outputs and the
target) are jointly Gaussian. A (guarded) partial Cholesky factorisation
conditions everything on the student coordinates, whitened so that the tie
point of the router (all logits equal) is the origin: `ζ = L_zz⁻¹ z ~ N(μ', I)`.
Given `ζ`,

- the gates `π^τ(ζ)` and the hard winner are known;
- the teacher coordinates are Gaussian with a mean affine in `ζ` and a fixed
  (possibly singular) covariance, so each teacher cell — an intersection of at
  most two half-planes for `K* ≤ 3` — has closed-form probability and first and
  second moments (half-plane: `Φ`, `φ`; quadrant: the bivariate normal CDF
  computed by the Drezner–Wesolowsky/Genz method, plus Tallis' boundary terms);
- the squared error is a square of a Gaussian: `E[U²] = mean² + variance`.

What is left is an integral over `ζ ∈ R^{K−1}`: along the two half-lines from
the tie point for `K = 2`, and in polar coordinates around the tie point for
`K = 3`, where the three top-two interfaces are rays. Every integral is split
at the features — the student interface (the boundary layer of width `τ`),
the (conditional-mean) teacher interfaces, the mode of the density — and each
panel is integrated with a geometrically graded composite Gauss–Legendre rule
clustered at both ends. That rule resolves a layer of *any* width at a panel
end without knowing its scale (down to `1e-16` of the panel for `K = 2`,
`2e-7` for `K = 3`), so one fixed node set serves every `τ`, a teacher
interface that coincides with, nearly coincides with, or crosses the
student's, and the node count stays fixed: everything is `jit`-able,
`vmap`-able over `τ` and differentiable in the model parameters (gradients
flow through the node positions; see `_soft_integrals` for the one place
where the derivative needs care, a teacher that shares the student's
interface). Measured relative accuracy: about `1e-13` for `K = 2` with
`τ ∈ [1e-4, 10]`; for `K = 3` about `1e-10` for risks and `1e-8` for gaps with
`τ ≥ 1e-4`; about `1e-13` for the masses, whose radial integrals are closed
form.

Scope: `K ∈ {2, 3}` student experts; a `Teacher` with `K* ∈ {2, 3}` experts or
a `LinearTarget`. For `K ≥ 4` the integral is over `K − 1 ≥ 3` dimensions with
boundary layers on a polyhedral fan; the functions raise a `ValueError`
pointing to the Monte Carlo estimators (`softhard.risk_sweep`) instead.

Conventions: score `s(x) = βᵀx + b` for the closed forms (Example 3.8); for
`K = 2` the student score is `s = a_1 − a_2`, expert 1 wins on `s > 0` (ties go
to the lowest index, (2.9), a null set here).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr
from numpy.polynomial.legendre import leggauss

from ._validate import (
    check_delta,
    check_finite_params,
    check_tau,
    check_taus,
    check_width,
    is_concrete,
)
from .models import Gaussian, LinearExperts, LinearRouter, LinearTarget, Teacher

__all__ = [
    "gaussian_slab_probability",
    "gaussian_interface_density",
    "gaussian_interface_area",
    "exact_soft_risk",
    "exact_hard_risk",
    "exact_risk_gap",
    "exact_risk_sweep",
    "ExactRisks",
    "exact_boundary_mass",
    "exact_ambiguity_mass",
    "exact_gap_coefficient",
]

_LN2 = math.log(2.0)
_TWO_PI = 2.0 * math.pi
_HCLIP = 40.0  # |h| beyond this is ±∞ for Φ and φ in float64 (φ(40) = 0)
_RCUT = 10.0  # radial integrals stop this many standard deviations past the mode
#: jitter on (nearly) degenerate teacher scores for derivatives, in standard deviations
#: (see `_soft_integrals`); each quadrature rule resolves layers well below it
_JITTER = {2: 1e-10, 3: 3e-6}


# ----------------------------------------------------------------------------
# quadrature rules
# ----------------------------------------------------------------------------


def _graded_rule(ratio: float, orders: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre rule on [0, 1], geometrically graded towards 0.

    Sub-interval `k` is `[ratio^{k+1}, ratio^k]` (the last one reaches 0) with
    `orders[k]` Gauss–Legendre nodes: a feature of any width down to
    `ratio^len(orders)` at 0 is resolved about as well as one of width 1. The
    outer sub-intervals, which also carry the smooth Gaussian variation of the
    panel, get the higher orders.
    """
    xs, ws, hi = [], [], 1.0
    for i, order in enumerate(orders):
        lo = ratio * hi if i < len(orders) - 1 else 0.0
        x, w = leggauss(order)
        xs.append(lo + (hi - lo) * (x + 1.0) / 2.0)
        ws.append((hi - lo) * w / 2.0)
        hi = lo
    return np.concatenate(xs), np.concatenate(ws)


#: 368 nodes per half panel: ~1e-13 relative on layers of width 1e-16 … 1 (K = 2)
_RULE_FINE = _graded_rule(0.2, (16,) * 23)
#: 108 nodes per half panel, down to 2e-7: ~1e-9 relative (each axis of the K = 3 rule)
_RULE_COARSE = _graded_rule(0.3, (12,) + (8,) * 12)


def _rule(rule, dtype):
    return jnp.asarray(rule[0], dtype), jnp.asarray(rule[1], dtype)


def _split_panels(pts: jax.Array, rule) -> tuple[jax.Array, jax.Array]:
    """Nodes and weights on consecutive panels `[pts_i, pts_{i+1}]` of sorted `pts`.

    Each panel is cut in half and each half gets the graded rule towards its
    outer end, so both ends of every panel are resolved.

    Args:
        pts: `[..., m]` sorted panel ends.
        rule: `(x, w)`, `[n]` each, on [0, 1] graded towards 0.

    Returns:
        `(nodes, weights)`, each `[..., 2 (m − 1) n]`.
    """
    x, w = rule
    a, c = pts[..., :-1, None], pts[..., 1:, None]
    half = 0.5 * (c - a)
    nodes = jnp.concatenate([a + half * x, c - half * x], axis=-1)
    weights = jnp.concatenate([half * w, half * w], axis=-1)
    return nodes.reshape(*nodes.shape[:-2], -1), weights.reshape(*weights.shape[:-2], -1)


def _interval_nodes(lo, hi, breaks, rule):
    """Graded composite rule on `[lo, hi]` (`[...]`) split at `breaks` (`[..., m]`)."""
    b = jnp.clip(breaks, lo[..., None], hi[..., None])
    pts = jnp.sort(jnp.concatenate([lo[..., None], b, hi[..., None]], axis=-1), axis=-1)
    return _split_panels(pts, rule)


def _circle_nodes(angles, rule):
    """Graded composite rule on the circle split at `angles` (`[m]`, any real values)."""
    a = jnp.sort(jnp.mod(angles, _TWO_PI))
    pts = jnp.concatenate([a, a[:1] + _TWO_PI])
    return _split_panels(pts, rule)


# ----------------------------------------------------------------------------
# Gaussian helpers
# ----------------------------------------------------------------------------


def _npdf(x):
    return jnp.exp(-0.5 * x * x) / math.sqrt(_TWO_PI)


def _ncdf_between(lo, hi):
    """`Φ(hi) − Φ(lo)` for `lo ≤ hi`, without cancellation in either tail."""
    upper = ndtr(-lo) - ndtr(-hi)  # accurate when both are positive
    lower = ndtr(hi) - ndtr(lo)  # accurate when both are negative
    return jnp.where(lo > 0, upper, lower)


def _safe_div(num, den):
    """`num / den` where `den != 0`, else 0 (with finite gradients everywhere)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _safe_norm(v):
    """Euclidean norm over the last axis with a finite gradient at 0."""
    n2 = jnp.sum(v * v, axis=-1)
    ok = n2 > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, n2, 1.0)), 0.0)


# Gauss–Legendre rule for the bivariate normal integral (20 points on [-1, 1])
_BVN_X, _BVN_W = leggauss(20)

# The integrands below work on lists of `[N]` arrays, one per component of the
# small static dimensions (K ≤ 3, K* ≤ 3), so that XLA fuses every node-wise
# operation into a few loops over the node axis.


def _bvn_upper(h, k, r):
    """`P(X > h, Y > k)` for a standard bivariate normal with correlation `r`.

    The method of Drezner & Wesolowsky (1989) with Genz's (2004) changes for
    double precision and `|r|` near 1: a 20-point Gauss–Legendre rule over the
    arcsine of the correlation for `|r| < 0.925`, and an expansion around the
    singular `|r| = 1` case otherwise. Accurate to about 1e-15. The correlation
    is a scalar (one per teacher cell), so only the branch in use is evaluated;
    each branch runs on safe inputs, so values and gradients are finite for all
    `h, k ∈ [−40, 40]`, `r ∈ [−1, 1]`.

    Args:
        h, k: `[N]` lower limits; r: scalar correlation.

    Returns:
        `[N]` probabilities.
    """
    h, k = jnp.broadcast_arrays(h, k)
    return jax.lax.cond(jnp.abs(r) < 0.925, _bvn_moderate, _bvn_strong, h, k, r)


def _bvn_moderate(h, k, r):
    x, w = jnp.asarray(_BVN_X, h.dtype), jnp.asarray(_BVN_W, h.dtype)
    asr = jnp.arcsin(jnp.clip(r, -0.925, 0.925))
    sn = jnp.sin(asr * (x + 1.0) / 2.0)  # [20]
    hk = (h * k)[..., None]
    hs = ((h * h + k * k) / 2.0)[..., None]
    total = jnp.sum(w * jnp.exp((sn * hk - hs) / (1.0 - sn * sn)), axis=-1)
    return total * asr / (2.0 * _TWO_PI) + ndtr(-h) * ndtr(-k)


def _bvn_strong(h, k, r):
    x, w = jnp.asarray(_BVN_X, h.dtype), jnp.asarray(_BVN_W, h.dtype)
    sgn = jnp.where(r < 0, -1.0, 1.0)
    k2 = sgn * k
    hk = h * k2
    r_hi = jnp.where(jnp.abs(r) >= 0.925, r, 0.95)
    as_ = (1.0 - r_hi) * (1.0 + r_hi)
    regular = as_ > 0
    as_s = jnp.where(regular, as_, 1.0)
    a = jnp.sqrt(as_s)
    bs = (h - k2) ** 2
    c = (4.0 - hk) / 8.0
    d = (12.0 - hk) / 16.0
    t1 = (
        a
        * jnp.exp(-(bs / as_s + hk) / 2.0)
        * (1.0 - c * (bs - as_s) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_s * as_s / 5.0)
    )
    b = jnp.sqrt(jnp.where(bs > 0, bs, 1.0)) * (bs > 0)
    # exp(−hk/2) Φ(−b/a), combined in the log domain (no overflow for hk << 0)
    t2 = (
        jnp.exp(-hk / 2.0 + log_ndtr(-b / a))
        * math.sqrt(_TWO_PI)
        * b
        * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0)
    )
    a2 = a / 2.0
    xs = (a2 * (x + 1.0)) ** 2  # [20]
    rs = jnp.sqrt(1.0 - xs)
    e1 = -(bs[..., None] / xs + hk[..., None]) / 2.0
    e2 = e1 - hk[..., None] * xs / (2.0 * (1.0 + rs) ** 2)
    poly = 1.0 + c[..., None] * xs * (1.0 + d[..., None] * xs)
    t3 = a2 * jnp.sum(w * (jnp.exp(e2) / rs - jnp.exp(e1) * poly), axis=-1)
    core = jnp.where(regular, -(t1 - t2 + t3) / _TWO_PI, 0.0)
    pos = core + ndtr(-jnp.maximum(h, k2))
    between = jnp.where(k2 > h, _ncdf_between(h, jnp.maximum(k2, h)), 0.0)
    return jnp.where(r > 0, pos, -core + between)


class _Moments(NamedTuple):
    """Moments of a standard normal `ξ ∈ R^n` over a region A (one teacher cell)."""

    p: jax.Array  # [N] P(A)
    m1: tuple  # n × [N]: E[ξ_i 1_A]
    m2: tuple  # n × n × [N]: E[ξ_i ξ_j 1_A]


def _unit_and_h(m, ell):
    """Unit normal `ℓ̂: [n]` and threshold `h = −m/|ℓ|: [N]` of `{m + ℓᵀξ ≥ 0}`.

    `ℓ = 0` (a deterministic constraint) gives `h = ∓40`, i.e. the indicator of
    `m ≥ 0`, with an arbitrary unit normal that then carries zero weight.
    """
    n = _safe_norm(ell)
    e0 = jnp.zeros_like(ell).at[0].set(1.0)
    pos = n > 0
    unit = jnp.where(pos, ell / jnp.where(pos, n, 1.0), e0)
    h_det = jnp.where(m >= 0, -_HCLIP, _HCLIP)
    h = jnp.where(pos, -m / jnp.where(pos, n, 1.0), h_det)
    return unit, jnp.clip(h, -_HCLIP, _HCLIP)


def _halfspace_moments(m, ell) -> _Moments:
    """Moments over `{m + ℓᵀξ ≥ 0}`; `m: [N]`, `ℓ: [n]` (the same at every node)."""
    unit, h = _unit_and_h(m, ell)
    n = ell.shape[0]
    p = ndtr(-h)
    ph = _npdf(h)
    hph = h * ph
    m1 = tuple(ph * unit[i] for i in range(n))
    m2 = tuple(
        tuple(hph * (unit[i] * unit[j]) + (p if i == j else 0.0) for j in range(n))
        for i in range(n)
    )
    return _Moments(p, m1, m2)


def _quadrant_moments(m_a, ell_a, m_b, ell_b) -> _Moments:
    """Moments over `{m_a + ℓ_aᵀξ ≥ 0} ∩ {m_b + ℓ_bᵀξ ≥ 0}` for `ξ ~ N(0, I_2)`.

    With `W = ℓ̂ᵀξ`, `h = −m/|ℓ|` and `ρ = ℓ̂_a·ℓ̂_b`: `P = P(W_a > h_a, W_b > h_b)`
    (bivariate normal), and by Gaussian integration by parts over the two faces
    (Tallis 1961) `E[ξ 1_A] = Σ_f ℓ̂_f φ(h_f) Φ(−c_f)` and
    `E[ξξᵀ 1_A] = P I + Σ_f ℓ̂_f ⊗ φ(h_f) (h_f Φ(−c_f) ℓ̂_f + φ(c_f) u_f)`, where
    `c_a = (h_b − ρ h_a)/√(1−ρ²)` and `u_f ⊥ ℓ̂_f` points into the other
    constraint. Parallel constraints are the limits of the same formulas; when
    one or both constraints are deterministic given ζ (`ℓ = 0`, a teacher
    direction inside the student's span) the cheaper half-plane or indicator
    form is used (`ℓ` is the same at every node, so this is one scalar branch).
    """
    ra = jnp.any(ell_a != 0)
    rb = jnp.any(ell_b != 0)
    index = ra.astype(jnp.int32) + 2 * rb.astype(jnp.int32)
    branches = [_quadrant_fixed, _quadrant_a_random, _quadrant_b_random, _quadrant_random]
    return jax.lax.switch(index, branches, m_a, ell_a, m_b, ell_b)


def _quadrant_fixed(m_a, ell_a, m_b, ell_b) -> _Moments:
    p = ((m_a >= 0) & (m_b >= 0)).astype(m_a.dtype)
    zero = jnp.zeros_like(p)
    return _Moments(p, (zero, zero), ((p, zero), (zero, p)))


def _quadrant_a_random(m_a, ell_a, m_b, ell_b) -> _Moments:
    half = _halfspace_moments(m_a, ell_a)
    ind = (m_b >= 0).astype(m_a.dtype)
    return _Moments(
        half.p * ind,
        tuple(v * ind for v in half.m1),
        tuple(tuple(v * ind for v in row) for row in half.m2),
    )


def _quadrant_b_random(m_a, ell_a, m_b, ell_b) -> _Moments:
    return _quadrant_a_random(m_b, ell_b, m_a, ell_a)


def _quadrant_random(m_a, ell_a, m_b, ell_b) -> _Moments:
    ua, ha = _unit_and_h(m_a, ell_a)
    ub, hb = _unit_and_h(m_b, ell_b)
    rho = jnp.clip(jnp.dot(ua, ub), -1.0, 1.0)
    tiny = 1e-300 if ua.dtype == jnp.float64 else 1e-30
    s = jnp.sqrt(jnp.maximum(1.0 - rho * rho, tiny))
    rot_a = jnp.stack([-ua[1], ua[0]])
    rot_b = jnp.stack([-ub[1], ub[0]])
    u_a = rot_a * jnp.where(jnp.dot(rot_a, ub) >= 0, 1.0, -1.0)
    u_b = rot_b * jnp.where(jnp.dot(rot_b, ua) >= 0, 1.0, -1.0)
    ca = jnp.clip((hb - rho * ha) / s, -_HCLIP, _HCLIP)
    cb = jnp.clip((ha - rho * hb) / s, -_HCLIP, _HCLIP)
    p = _bvn_upper(ha, hb, rho)
    pa, pb = _npdf(ha), _npdf(hb)
    qa, qb = ndtr(-ca), ndtr(-cb)
    fa, fb = pa * qa, pb * qb  # face masses
    ga, gb = ha * fa, hb * fb
    va, vb = pa * _npdf(ca), pb * _npdf(cb)  # both the density at the vertex
    m1 = tuple(fa * ua[i] + fb * ub[i] for i in range(2))

    def m2_entry(i, j):
        e_ij = ua[i] * (ga * ua[j] + va * u_a[j]) + ub[i] * (gb * ub[j] + vb * u_b[j])
        e_ji = ua[j] * (ga * ua[i] + va * u_a[i]) + ub[j] * (gb * ub[i] + vb * u_b[i])
        return 0.5 * (e_ij + e_ji) + (p if i == j else 0.0)

    m2 = tuple(tuple(m2_entry(i, j) for j in range(2)) for i in range(2))
    return _Moments(p, m1, m2)


# ----------------------------------------------------------------------------
# closed forms of Example 3.8
# ----------------------------------------------------------------------------


def _score_moments(beta, b, mean, cov):
    beta, mean, cov = jnp.asarray(beta), jnp.asarray(mean), jnp.asarray(cov)
    hp = jax.lax.Precision.HIGHEST
    m = jnp.dot(beta, mean, precision=hp) + b
    var = jnp.dot(beta, jnp.dot(cov, beta, precision=hp), precision=hp)
    return m, jnp.sqrt(var)


def _check_score_args(beta, b, mean, cov):
    beta, mean, cov = jnp.asarray(beta), jnp.asarray(mean), jnp.asarray(cov)
    if beta.ndim != 1:
        raise ValueError(f"`beta` must have shape [d], got {beta.shape}")
    d = beta.shape[0]
    if mean.shape != (d,):
        raise ValueError(f"`mean` must have shape [d] = ({d},) to match `beta`, got {mean.shape}")
    if cov.shape != (d, d):
        raise ValueError(f"`cov` must have shape [d, d] = ({d}, {d}), got {cov.shape}")
    if jnp.shape(b) != ():
        raise ValueError(f"`b` must be a scalar offset, got shape {jnp.shape(b)}")
    if is_concrete(beta) and is_concrete(cov):
        var = float(np.asarray(beta) @ np.asarray(cov) @ np.asarray(beta))
        if not var > 0:
            raise ValueError(
                f"`beta` must give the score a positive variance βᵀΣβ under `cov`, got {var!r}"
            )


def gaussian_slab_probability(beta, b, mean, cov, r):
    """Slab probability `P(|s(X)| ≤ r)` for `s(x) = βᵀx + b`, `X ~ N(μ, Σ)` (3.11).

    `P(|s(X)| ≤ r) = Φ((r − m)/σ_s) − Φ((−r − m)/σ_s)` with `m = βᵀμ + b`,
    `σ_s = (βᵀΣβ)^{1/2}`; evaluated without cancellation in either tail.

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.
        r: scalar or `[R]` half-widths `≥ 0`.

    Returns:
        scalar or `[R]` probabilities.

    >>> p = gaussian_slab_probability(jnp.array([1.0, 0.0]), 0.0, jnp.zeros(2), jnp.eye(2), 1.0)
    >>> round(float(p), 6)  # P(|Z| ≤ 1)
    0.682689
    """
    _check_score_args(beta, b, mean, cov)
    r = check_width(r, "r")
    m, sd = _score_moments(beta, b, mean, cov)
    return _ncdf_between((-r - m) / sd, (r - m) / sd)


def gaussian_interface_density(beta, b, mean, cov):
    """Level-set density `G(0) = ∫_{s=0} p/|∇s| dH^{d−1} = φ(m/σ_s)/σ_s` (3.14).

    This is the density of the score `s(X) = βᵀX + b` at 0 (coarea formula, 3.8).

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.

    Returns:
        scalar.

    >>> G = gaussian_interface_density(jnp.array([2.0]), 0.0, jnp.zeros(1), jnp.eye(1))
    >>> round(float(G), 6)  # φ(0)/2
    0.199471
    """
    _check_score_args(beta, b, mean, cov)
    m, sd = _score_moments(beta, b, mean, cov)
    return _npdf(m / sd) / sd


def gaussian_interface_area(beta, b, mean, cov):
    """Surface integral `∫_{s=0} p dH^{d−1} = |β| φ(m/σ_s)/σ_s` (Example 3.8, [X]).

    The Hausdorff-measure variant of (3.14): the Gaussian mass density of the
    hyperplane `{βᵀx + b = 0}` per unit area (`|∇s| = |β|` is constant).

    Args:
        beta: `[d]`; b: scalar; mean: `[d]`; cov: `[d, d]`.

    Returns:
        scalar.

    >>> A = gaussian_interface_area(jnp.array([2.0]), 0.0, jnp.zeros(1), jnp.eye(1))
    >>> round(float(A), 6)  # |β| φ(0)/2 = φ(0)
    0.398942
    """
    _check_score_args(beta, b, mean, cov)
    m, sd = _score_moments(beta, b, mean, cov)
    return jnp.linalg.norm(jnp.asarray(beta)) * _npdf(m / sd) / sd


# ----------------------------------------------------------------------------
# validation and the reduced Gaussian
# ----------------------------------------------------------------------------


class _Struct(NamedTuple):
    """Static description of a problem (hashable; a `jit` static argument)."""

    K: int  # student experts
    Kt: int  # teacher experts; 0 for a LinearTarget or no target
    linear: bool  # the target is a LinearTarget


def _dtype_of(*trees):
    leaves = [x for t in trees for x in jax.tree_util.tree_leaves(t) if hasattr(x, "dtype")]
    return jnp.result_type(*leaves, float)


def _check_law(law, d: int | None = None, name: str = "law") -> int:
    if not isinstance(law, Gaussian):
        raise ValueError(
            f"`{name}` must be a softhard.Gaussian(mean, cov) input law (the exact values "
            f"are for Gaussian inputs), got {type(law).__name__}"
        )
    if law.mean.ndim != 1 or law.cov.ndim != 2:
        raise ValueError(
            f"`{name}` must have mean [d] and cov [d, d] (no stacked laws), got "
            f"{law.mean.shape}, {law.cov.shape}"
        )
    check_finite_params(law, name)
    if d is not None and law.dim != d:
        raise ValueError(f"`{name}` has dimension d = {law.dim} but the models take d = {d}")
    return law.dim


def _check_router(router, name: str) -> tuple[int, int]:
    if not isinstance(router, LinearRouter):
        raise ValueError(
            f"`{name}` must be a softhard.LinearRouter (exact Gaussian values need linear "
            f"routing), got {type(router).__name__}"
        )
    if router.W.ndim != 2:
        raise ValueError(
            f"`{name}.W` must have shape [K, d] (no stacked routers), got {router.W.shape}"
        )
    return router.W.shape


def _check_experts(experts, K: int, d: int, name: str) -> None:
    if not isinstance(experts, LinearExperts):
        raise ValueError(
            f"`{name}` must be softhard.LinearExperts (exact Gaussian values need linear "
            f"experts), got {type(experts).__name__}"
        )
    if experts.B.shape != (K, d):
        raise ValueError(
            f"`{name}.B` must have shape [K, d] = ({K}, {d}) to match the router, got "
            f"{experts.B.shape}"
        )


def _check_student_k(K: int, name: str) -> None:
    if K > 3:
        raise ValueError(
            f"`{name}` has K = {K} experts; exact Gaussian values are implemented for "
            f"K <= 3 (for K >= 4 the integral runs over K - 1 >= 3 dimensions with boundary "
            f"layers on a polyhedral fan); use the Monte Carlo estimators (softhard.risk_sweep)"
        )


def _check_nondegenerate(router, law, name: str) -> None:
    """The student logit differences must have a non-singular covariance under `law`."""
    if not (is_concrete(router.W) and is_concrete(law.cov)):
        return
    W = np.asarray(router.W, dtype=np.float64)
    D = W[:-1] - W[-1]
    C = D @ np.asarray(law.cov, dtype=np.float64) @ D.T
    ev = np.linalg.eigvalsh(C)
    if not ev.min() > 1e-12 * max(ev.max(), 1e-300):
        raise ValueError(
            f"`{name}` has logit differences a_k - a_K with a singular covariance under the "
            f"input law (eigenvalues {ev}); the router's interfaces must be proper hyperplanes"
        )


def _check_problem(model, teacher, law) -> _Struct:
    """Validate `(model, teacher, law)` in Python and return the static structure."""
    router = getattr(model, "router", None)
    experts = getattr(model, "experts", None)
    if router is None or experts is None:
        raise ValueError(
            f"`model` must have `.router` and `.experts` (e.g. softhard.MoE), got "
            f"{type(model).__name__}"
        )
    K, d = _check_router(router, "model.router")
    _check_student_k(K, "model")
    _check_experts(experts, K, d, "model.experts")
    check_finite_params(model, "model")
    _check_law(law, d)
    if isinstance(teacher, LinearTarget):
        if teacher.w.shape != (d,):
            raise ValueError(
                f"`teacher.w` must have shape [d] = ({d},) to match `model`, got {teacher.w.shape}"
            )
        Kt, linear = 0, True
    elif isinstance(teacher, Teacher):
        Kt, dt = _check_router(teacher.router, "teacher.router")
        if dt != d:
            raise ValueError(f"`teacher` takes inputs of dimension {dt} but `model` takes d = {d}")
        if Kt > 3:
            raise ValueError(
                f"`teacher` has K* = {Kt} experts; exact Gaussian values are implemented for "
                f"K* <= 3 (each teacher cell an intersection of at most two half-planes)"
            )
        _check_experts(teacher.experts, Kt, d, "teacher.experts")
        linear = False
    else:
        raise ValueError(
            f"`teacher` must be a softhard.Teacher with linear router and experts or a "
            f"softhard.LinearTarget, got {type(teacher).__name__}"
        )
    if jnp.shape(teacher.noise_std) != ():
        raise ValueError(
            f"`teacher.noise_std` must be a scalar, got {jnp.shape(teacher.noise_std)}"
        )
    check_finite_params(teacher, "teacher")
    _check_nondegenerate(router, law, "model")
    return _Struct(K=K, Kt=Kt, linear=linear)


class _Reduced(NamedTuple):
    """Everything conditioned on the whitened student coordinates `ζ ~ N(mu, I)`.

    Layout of the outputs `o`: the K student experts, then the target (the K*
    teacher experts, or the one linear target). Given ζ and the teacher residual
    coordinates `ξ_t ~ N(0, I)`: `z = Lzz ζ` (logits a_k − a_K),
    `t = t0 + Atz ζ + Ltt ξ_t`, `o = o0 + Aoz ζ + Aot ξ_t + (residual, cov R)`.
    """

    mu: jax.Array  # [nz]
    Lzz: jax.Array  # [nz, nz] lower triangular
    t0: jax.Array  # [nt]
    Atz: jax.Array  # [nt, nz]
    Ltt: jax.Array  # [nt, nt]
    o0: jax.Array  # [no]
    Aoz: jax.Array  # [no, nz]
    Aot: jax.Array  # [no, nt]
    R: jax.Array  # [no, no]


def _partial_cholesky(G, m: int, eps, jitter):
    """First `m` columns of the lower Cholesky factor of the PSD matrix `G: [n, n]`.

    A pivot below `eps · G_jj` — a coordinate that is, to rounding, a function
    of the previous ones (a teacher with the student's separator) — counts as
    zero. A pivot `v` of column `j` with `jitter[j] > 0` becomes
    `v + ε² exp(−v/ε²)`, `ε² = jitter[j]² G_jj`: an independent Gaussian jitter of
    about `jitter[j]` standard deviations where the conditional variance is
    below that, and none where it is well above (see `_soft_integrals`). A
    coordinate with zero variance gives a zero column.
    """
    n = G.shape[0]
    rows = jnp.arange(n)
    L = jnp.zeros((n, m), G.dtype)
    for j in range(m):
        col = G[:, j] - jnp.dot(L[:, :j], L[j, :j], precision=jax.lax.Precision.HIGHEST)
        piv = jnp.where(col[j] > eps * G[j, j], col[j], 0.0)
        if jitter[j]:
            floor = jitter[j] ** 2 * G[j, j]
            piv = piv + floor * jnp.exp(-_safe_div(piv, floor))
        ok = piv > 0
        root = jnp.sqrt(jnp.where(ok, piv, 1.0))
        col = jnp.where(ok & (rows >= j), col.at[j].set(piv) / root, 0.0)
        L = L.at[:, j].set(col)
    return L


def _reduce(model, target, law, st: _Struct, jitter: float = 0.0) -> _Reduced:
    hp = jax.lax.Precision.HIGHEST
    W, b = model.router.W, model.router.b
    rows = [W[:-1] - W[-1]]
    offs = [b[:-1] - b[-1]]
    if not st.linear and st.Kt:
        Wt, bt = target.router.W, target.router.b
        rows.append(Wt[:-1] - Wt[-1])
        offs.append(bt[:-1] - bt[-1])
    rows.append(model.experts.B)
    offs.append(model.experts.c)
    if st.linear:
        rows.append(target.w[None, :])
        offs.append(jnp.reshape(target.c, (1,)))
    else:
        rows.append(target.experts.B)
        offs.append(target.experts.c)
    dt = _dtype_of(model, target, law)
    P = jnp.concatenate(rows, axis=0).astype(dt)
    q = jnp.concatenate(offs, axis=0).astype(dt)
    mean, cov = law.mean.astype(dt), law.cov.astype(dt)
    nu = jnp.dot(P, mean, precision=hp) + q
    G = jnp.dot(P, jnp.dot(cov, P.T, precision=hp), precision=hp)
    G = 0.5 * (G + G.T)
    nz = st.K - 1
    nt = 0 if st.linear else st.Kt - 1
    m = nz + nt
    eps = 100.0 * jnp.finfo(dt).eps
    L = _partial_cholesky(G, m, eps, (0.0,) * nz + (jitter,) * nt)
    Lzz = L[:nz, :nz]
    mu = jax.scipy.linalg.solve_triangular(Lzz, nu[:nz], lower=True)
    Lt = L[nz:m]
    Lo = L[m:]
    nu_t, nu_o = nu[nz:m], nu[m:]
    Atz, Ltt = Lt[:, :nz], Lt[:, nz:m]
    Aoz, Aot = Lo[:, :nz], Lo[:, nz:m]
    R = G[m:, m:] - jnp.dot(Lo, Lo.T, precision=hp)
    return _Reduced(
        mu=mu,
        Lzz=Lzz,
        t0=nu_t - jnp.dot(Atz, mu, precision=hp),
        Atz=Atz,
        Ltt=Ltt,
        o0=nu_o - jnp.dot(Aoz, mu, precision=hp),
        Aoz=Aoz,
        Aot=Aot,
        R=R,
    )


# ----------------------------------------------------------------------------
# teacher cells and lines
# ----------------------------------------------------------------------------


def _teacher_cells(Kt: int) -> list[np.ndarray]:
    """Teacher cells as constraints `c·t ≥ 0` on `t_k = a*_k − a*_{K*}` (`[n_c, K*−1]` each)."""
    if Kt == 2:
        return [np.array([[1.0]]), np.array([[-1.0]])]
    if Kt == 3:
        return [
            np.array([[1.0, 0.0], [1.0, -1.0]]),  # a1 ≥ a3, a1 ≥ a2
            np.array([[-1.0, 1.0], [0.0, 1.0]]),  # a2 ≥ a1, a2 ≥ a3
            np.array([[-1.0, 0.0], [0.0, -1.0]]),  # a3 ≥ a1, a3 ≥ a2
        ]
    return [np.zeros((0, 0))]  # a linear target: one "cell", everything


def _teacher_lines(Kt: int) -> np.ndarray:
    """All teacher pair scores `a*_k − a*_l` as rows over `t` (`[n_lines, K*−1]`)."""
    if Kt == 2:
        return np.array([[1.0]])
    if Kt == 3:
        return np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    return np.zeros((0, 0))


def _combine(coeffs, comps):
    """`Σ_j coeffs[j] comps[j]` for static NumPy coefficients, skipping zeros."""
    out = None
    for cj, v in zip(coeffs, comps):
        if cj == 0.0:
            continue
        term = v if cj == 1.0 else (-v if cj == -1.0 else cj * v)
        out = term if out is None else out + term
    return jnp.zeros_like(comps[0]) if out is None else out


def _affine(offset, matrix, comps):
    """Components of `offset + matrix @ comps`: `offset: [n]`, `matrix: [n, m]`, m × [N]."""
    out = []
    for i in range(offset.shape[0]):
        v = offset[i]
        for j, c in enumerate(comps):
            v = v + matrix[i, j] * c
        out.append(v)
    return out


def _cell_moments(red: _Reduced, tm, cell: np.ndarray) -> _Moments | None:
    """Moments of the teacher residual over one cell; `tm`: teacher means, nt × [N]."""
    if cell.shape[0] == 0:
        return None
    ms = [_combine(c, tm) for c in cell]
    ells = [red.Ltt.T @ jnp.asarray(c, red.Ltt.dtype) for c in cell]  # ℓ = Lttᵀ c
    if cell.shape[0] == 1:
        return _halfspace_moments(ms[0], ells[0])
    return _quadrant_moments(ms[0], ells[0], ms[1], ells[1])


def _complement(moms: list[_Moments]) -> _Moments:
    """Moments over the complement of disjoint cells: `1 − Σ P`, `−Σ m1`, `I − Σ m2`."""
    nt = len(moms[0].m1)
    p = 1.0 - sum(m.p for m in moms)
    m1 = tuple(-sum(m.m1[i] for m in moms) for i in range(nt))
    m2 = tuple(
        tuple((1.0 if i == j else 0.0) - sum(m.m2[i][j] for m in moms) for j in range(nt))
        for i in range(nt)
    )
    return _Moments(p, m1, m2)


def _line_coefficients(red: _Reduced, st: _Struct):
    """Teacher lines `g0 + gᵀζ = 0` (conditional-mean pair scores): `g0: [n_l]`, `g: [n_l, nz]`."""
    if st.linear:
        return None
    c = jnp.asarray(_teacher_lines(st.Kt), red.t0.dtype)
    return c @ red.t0, c @ red.Atz


# ----------------------------------------------------------------------------
# integrands
# ----------------------------------------------------------------------------


def _logits(red: _Reduced, zs):
    """Logits `(a_1 − a_K, …, a_{K−1} − a_K, 0)` at nodes; `zs`: nz × [N] -> K × [N]."""
    z = _affine(jnp.zeros(red.Lzz.shape[0], red.Lzz.dtype), red.Lzz, zs)
    return z + [jnp.zeros_like(zs[0])]


def _soft_gates(a, tau):
    """Softmax gates (2.3) by log-sum-exp; `a`: K × [N] -> K × [N]."""
    top = a[0]
    for v in a[1:]:
        top = jnp.maximum(top, v)
    top = jax.lax.stop_gradient(top)
    ex = [jnp.exp((v - top) / tau) for v in a]
    total = sum(ex[1:], ex[0])
    return [v / total for v in ex]


def _hard_gates(a):
    """One-hot of the lowest-index argmax (2.9), K × [N]."""
    out, taken = [], jnp.zeros(a[0].shape, bool)
    for i, v in enumerate(a):
        win = ~taken
        for j, u in enumerate(a):
            if j != i:
                win = win & ((v >= u) if j > i else (v > u))
        out.append(win.astype(v.dtype))
        taken = taken | win
    return out


def _expected_sq(red: _Reduced, K: int, om, mom: _Moments | None, k: int, pi):
    """`E[1_cell (g_k − Σ_j π_j f_j)² | ζ]` for target output `k`; `pi`: K × [N]."""
    R = red.R
    g = K + k
    mean = om[g] - sum(pi[j] * om[j] for j in range(K))
    var = R[g, g] - 2.0 * sum(pi[j] * R[j, g] for j in range(K))
    var = var + sum(pi[i] * pi[j] * R[i, j] for i in range(K) for j in range(K))
    if mom is None:
        return mean * mean + var
    nt = len(mom.m1)
    kappa = [red.Aot[g, t] - sum(pi[j] * red.Aot[j, t] for j in range(K)) for t in range(nt)]
    out = (mean * mean + var) * mom.p
    out = out + 2.0 * mean * sum(kappa[t] * mom.m1[t] for t in range(nt))
    return out + sum(kappa[s] * kappa[t] * mom.m2[s][t] for s in range(nt) for t in range(nt))


def _risk_integrand(red: _Reduced, red_soft: _Reduced, st: _Struct, zeta, taus, want):
    """Conditional squared errors `E[(Y − f(X))² | ζ] − σ_ξ²` at nodes `zeta: [..., nz]`.

    Everything that does not depend on the temperature (logits, conditional
    means, the teacher cells' moments) is computed once for all `taus: [T]`.
    `want` ⊆ {"soft", "hard", "gap"}; the soft values use `red_soft` (possibly
    jittered, see `_soft_integrals`), the hard ones `red`.

    Returns:
        `[M, ...]`: the requested rows, `T` each for "soft" and "gap", one for
        "hard", in the order of `want`.
    """
    shape = zeta.shape[:-1]
    zs = [zeta[..., j].ravel() for j in range(zeta.shape[-1])]
    a = _logits(red, zs)
    cells = _teacher_cells(0 if st.linear else st.Kt)

    def parts(r):
        om = _affine(r.o0, r.Aoz, zs)
        tm = _affine(r.t0, r.Atz, zs)
        moms = [_cell_moments(r, tm, c) for c in cells[:-1]]
        # the cells partition the teacher plane: the last one is the complement
        moms.append(_complement(moms) if moms else _cell_moments(r, tm, cells[-1]))
        return om, moms

    def total(r, om, moms, pi):
        return sum(_expected_sq(r, st.K, om, mom, k, pi) for k, mom in enumerate(moms))

    hard = soft = None
    if "hard" in want or "gap" in want:
        hard = total(red, *parts(red), _hard_gates(a))
    if "soft" in want or "gap" in want:
        om, moms = parts(red_soft)
        soft = jax.vmap(lambda t: total(red_soft, om, moms, _soft_gates(a, t)))(taus)
    rows = []
    for w in want:
        if w == "soft":
            rows.append(soft)
        elif w == "hard":
            rows.append(hard[None])
        else:
            # the gap integrand itself, for relative accuracy as τ → 0
            rows.append(soft - hard)
    return jnp.concatenate(rows).reshape((-1,) + shape)


# ----------------------------------------------------------------------------
# integration over ζ
# ----------------------------------------------------------------------------


def _ray_quadrature(red: _Reduced, st: _Struct, e, rule):
    """Radial nodes along unit directions `e: [A, nz]` from the tie point.

    Returns `(zeta [A, N, nz], weight [A, N])` with the weight including the
    Gaussian density and the polar Jacobian `r^{nz−1}`.
    """
    nz = e.shape[-1]
    b = e @ red.mu  # [A] mode of the density along the ray
    p2 = jnp.maximum(jnp.dot(red.mu, red.mu) - b * b, 0.0)
    rmax = jnp.maximum(b, 0.0) + _RCUT
    breaks = [jnp.maximum(b, 0.0)[:, None]]
    lines = _line_coefficients(red, st)
    if lines is not None:
        g0, g = lines
        ge = e @ g.T  # [A, n_l]
        breaks.append(jnp.where(jnp.isfinite(_safe_div(-g0, ge)), _safe_div(-g0, ge), 0.0))
    r, wr = _interval_nodes(jnp.zeros_like(rmax), rmax, jnp.concatenate(breaks, -1), rule)
    dens = jnp.exp(-0.5 * (p2[:, None] + (r - b[:, None]) ** 2)) / _TWO_PI ** (nz / 2.0)
    jac = r ** (nz - 1) if nz > 1 else 1.0
    zeta = r[..., None] * e[:, None, :]
    return zeta, wr * dens * jac


def _student_rays(red: _Reduced):
    """K = 3: the top-two interfaces, rays from the tie point ζ = 0.

    Returns `(dirs [3, 2], gamma [3, 2], pairs)`: unit directions in ζ, the
    gradients `γ` with `s_ij = a_i − a_j = γᵀζ`, and the pairs `(i, j)`.
    """
    dt = red.mu.dtype
    # in z = (a_1 − a_3, a_2 − a_3): a_1 = a_2 > a_3 along (1, 1), a_1 = a_3 > a_2 along
    # (0, −1), a_2 = a_3 > a_1 along (−1, 0)
    zdirs = jnp.asarray([[1.0, 1.0], [0.0, -1.0], [-1.0, 0.0]], dt)
    pairs = [(0, 1), (0, 2), (1, 2)]
    E = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dt)
    dirs = jax.scipy.linalg.solve_triangular(red.Lzz, zdirs.T, lower=True).T
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    gamma = jnp.stack([red.Lzz.T @ (E[i] - E[j]) for i, j in pairs])
    return dirs, gamma, pairs


def _angles(v):
    return jnp.arctan2(v[..., 1], v[..., 0])


def _polar_angles(red: _Reduced, st: _Struct):
    """Angular breakpoints for K = 3: student rays, teacher line directions, the mode."""
    dirs, _, _ = _student_rays(red)
    parts = [_angles(dirs), _angles(red.mu)[None]]
    lines = _line_coefficients(red, st)
    if lines is not None:
        _, g = lines
        along = jnp.stack([-g[:, 1], g[:, 0]], axis=-1)
        parts += [_angles(along), _angles(along) + math.pi]
    return jnp.concatenate(parts)


def _integrate(red: _Reduced, st: _Struct, fn, rule_angle, rule_radius):
    """`∫ fn(ζ) φ(ζ − μ') dζ` over `R^{K−1}`; `fn: [..., nz] -> [M, ...]`; returns `[M]`."""
    dt = red.mu.dtype
    if st.K == 2:
        e = jnp.asarray([[1.0], [-1.0]], dt)
        zeta, w = _ray_quadrature(red, st, e, _rule(rule_radius, dt))
        return jnp.sum(fn(zeta) * w, axis=(-2, -1))
    theta, wt = _circle_nodes(_polar_angles(red, st), _rule(rule_angle, dt))
    e = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    rr = _rule(rule_radius, dt)

    def per_direction(args):
        e1, w1 = args
        zeta, w = _ray_quadrature(red, st, e1[None], rr)
        return jnp.sum(fn(zeta[0]) * w[0], axis=-1) * w1  # [M]

    # rematerialise each chunk in reverse mode instead of storing its residuals
    vals = jax.lax.map(jax.checkpoint(per_direction), (e, wt), batch_size=32)
    return jnp.sum(vals, axis=0)


@functools.partial(jax.jit, static_argnames=("st", "want", "jitter"))
def _exact_risks(model, target, law, taus, st: _Struct, want: tuple[str, ...], jitter: float):
    """Integrals over ζ of the rows of `_risk_integrand` at temperatures `taus: [T]`: `[M]`.

    With `jitter > 0` the soft rows use teacher scores with a jitter of about
    `jitter` standard deviations where they are (nearly) functions of the
    student scores (see `_soft_integrals`); the hard rows never do.
    """
    red = _reduce(model, target, law, st)
    red_soft = _reduce(model, target, law, st, jitter) if jitter else red
    taus = jnp.asarray(taus, red.mu.dtype)
    rules = (_RULE_FINE, _RULE_FINE) if st.K == 2 else (_RULE_COARSE, _RULE_COARSE)

    def fn(zeta):
        return _risk_integrand(red, red_soft, st, zeta, taus, want)

    return _integrate(red, st, fn, *rules)


def _soft_integrals(model, target, law, taus, st: _Struct, want: tuple[str, ...]):
    """`_exact_risks` whose derivatives are exact also where the teacher coincides.

    Where a teacher score is a function of the student scores (a teacher with
    the student's separator, the realizable case), the teacher's conditional
    residual given ζ has zero variance, and the first-order change of the risk
    when the student moves off the teacher is a boundary term that the
    conditional representation cannot carry. The value is exact there; its
    derivatives are taken through the same computation with the teacher's
    conditional variance floored smoothly at `ε²` (an independent jitter of
    `ε` = 1e-10 (K = 2) or 3e-6 (K = 3) standard deviations on a teacher score
    that is within `ε` of a function of the student scores, none otherwise),
    which keeps the representation smooth. The jitter moves the soft risk by
    `O(ε²/τ)` and its derivatives by about `O(ε²/τ²)` relative, only near such
    coincidences; the quadrature resolves layers well below `ε`.
    """
    # flat leaves: the tangents then never pass through the models' constructors
    leaves, treedef = jax.tree_util.tree_flatten((model, target, law))
    return _soft_integrals_flat(tuple(leaves), taus, treedef, st, want)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _soft_integrals_flat(leaves, taus, treedef, st: _Struct, want: tuple[str, ...]):
    model, target, law = jax.tree_util.tree_unflatten(treedef, leaves)
    return _exact_risks(model, target, law, taus, st, want, 0.0)


@_soft_integrals_flat.defjvp
def _soft_integrals_jvp(treedef, st, want, primals, tangents):
    jitter = 0.0 if st.linear else _JITTER[st.K]

    def integrals(leaves, taus, jitter):
        model, target, law = jax.tree_util.tree_unflatten(treedef, leaves)
        return _exact_risks(model, target, law, taus, st, want, jitter)

    value, tangent = jax.jvp(functools.partial(integrals, jitter=jitter), primals, tangents)
    if jitter:
        value = integrals(*primals, 0.0)
    return value, tangent


def _noise_var(target):
    return jnp.asarray(target.noise_std) ** 2


class ExactRisks(NamedTuple):
    """Exact population risks over a temperature grid (Gaussian inputs).

    Attributes:
        soft: `L_τ` (2.5), including `σ_ξ²`; `[T]`.
        hard: `L_0` (2.11), including `σ_ξ²`; scalar.
        gap: `L_τ − L_0` (4.5), integrated directly; `[T]`.
    """

    soft: jax.Array  # [T]
    hard: jax.Array  # []
    gap: jax.Array  # [T]


def exact_risk_sweep(model, teacher, law, taus) -> ExactRisks:
    """Exact soft risk, hard risk and gap at every temperature, in one pass.

    The exact counterpart of `softhard.risk_sweep` (no standard errors): the
    conditional moments and teacher cells are computed once per node and
    shared by all temperatures, so a sweep costs little more than one `τ`.
    Accuracy as `exact_soft_risk`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        taus: `[T]` temperatures `> 0`.

    Returns:
        `ExactRisks(soft [T], hard [], gap [T])`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, LinearTarget
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> out = exact_risk_sweep(MoE(r, e), LinearTarget(w=[0.0, 0.0]), StandardGaussian(2),
    ...                        jnp.array([0.1, 1.0]))
    >>> out.soft.shape, out.hard.shape
    ((2,), ())
    """
    st = _check_problem(model, teacher, law)
    taus = check_taus(taus)
    T = taus.shape[0]
    vals = _soft_integrals(model, teacher, law, taus, st, ("soft", "hard", "gap"))
    noise = _noise_var(teacher).astype(vals.dtype)
    return ExactRisks(vals[:T] + noise, vals[T] + noise, vals[T + 1 :])


def exact_soft_risk(model, teacher, law, tau):
    """Population soft risk `L_τ = E[(Y − f_τ(X))²]` (2.5) for Gaussian inputs, exactly.

    `X ~ law = N(μ, Σ)`, `model` a `MoE` of a `LinearRouter` and `LinearExperts`
    (`K ≤ 3`), `Y` from `teacher`: a hard-routed linear `Teacher` (any router,
    `K* ≤ 3`; lowest index wins ties (2.9)) or a `LinearTarget`, each with
    Gaussian noise. Includes the noise variance: `L_τ = σ_ξ² + L̄_τ` (5.3).

    Computed by quadrature over the student logit differences with closed-form
    conditional moments (see the module docstring): relative error about 1e-13
    for `K = 2` and 1e-8 for `K = 3`, for any `τ` in `[1e-8, 10]`. `jit`-able,
    `vmap`-able over `tau` and differentiable in every parameter.

    Args:
        model: `MoE(LinearRouter, LinearExperts)` with `W: [K, d]`, `K ∈ {2, 3}`.
        teacher: `Teacher(LinearRouter, LinearExperts, noise_std)` or `LinearTarget`.
        law: `Gaussian(mean: [d], cov: [d, d])`.
        tau: scalar temperature `> 0`.

    Returns:
        scalar `L_τ`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, Teacher
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> L = exact_soft_risk(MoE(r, e), Teacher(r, e), StandardGaussian(2), 0.01)
    >>> round(float(L) / 0.01, 4)  # ≈ (2 ln 2 − 1) E[Δf²] φ(0) = 0.6164 as τ → 0
    0.6164
    """
    st = _check_problem(model, teacher, law)
    check_tau(tau)
    val = _soft_integrals(model, teacher, law, jnp.reshape(tau, (1,)), st, ("soft",))[0]
    return val + _noise_var(teacher).astype(val.dtype)


def exact_hard_risk(model, teacher, law):
    """Population hard risk `L_0 = E[(Y − f_0(X))²]` (2.11) for Gaussian inputs, exactly.

    Same models and accuracy as `exact_soft_risk`; the hard predictor (2.10)
    uses the lowest-index tie rule (2.9), a null set here. Includes `σ_ξ²`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.

    Returns:
        scalar `L_0`.
    """
    st = _check_problem(model, teacher, law)
    val = _exact_risks(model, teacher, law, jnp.ones((1,)), st, ("hard",), 0.0)[0]
    return val + _noise_var(teacher).astype(val.dtype)


def exact_risk_gap(model, teacher, law, tau):
    """Soft-to-hard gap `L_τ − L_0` (4.5) for Gaussian inputs, exactly.

    Integrates the conditional difference of the two squared errors, so the
    relative accuracy holds as `τ → 0` (the gap is `O(τ)`, Corollary 4.4).

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        tau: scalar temperature `> 0`.

    Returns:
        scalar `L_τ − L_0`.
    """
    st = _check_problem(model, teacher, law)
    check_tau(tau)
    return _soft_integrals(model, teacher, law, jnp.reshape(tau, (1,)), st, ("gap",))[0]


# ----------------------------------------------------------------------------
# boundary-mass profiles and the ambiguity mass (student router only)
# ----------------------------------------------------------------------------


class _Router(NamedTuple):
    """The router's logit differences `z = Lzz ζ`, `ζ ~ N(mu, I)` (tie point at ζ = 0)."""

    mu: jax.Array  # [nz]
    Lzz: jax.Array  # [nz, nz]


def _check_router_law(router, law, name: str = "router") -> int:
    K, d = _check_router(router, name)
    _check_student_k(K, f"{name}")
    check_finite_params(router, name)
    _check_law(law, d)
    _check_nondegenerate(router, law, name)
    return K


def _reduce_router(router, law) -> _Router:
    hp = jax.lax.Precision.HIGHEST
    dt = _dtype_of(router, law)
    D = (router.W[:-1] - router.W[-1]).astype(dt)
    q = (router.b[:-1] - router.b[-1]).astype(dt)
    nu = jnp.dot(D, law.mean.astype(dt), precision=hp) + q
    C = jnp.dot(D, jnp.dot(law.cov.astype(dt), D.T, precision=hp), precision=hp)
    Lzz = jnp.linalg.cholesky(0.5 * (C + C.T))
    return _Router(jax.scipy.linalg.solve_triangular(Lzz, nu, lower=True), Lzz)


def _ray_mass(mu, e, R):
    """`∫_0^R r φ_2(r e − μ) dr` for unit `e: [A, 2]` and radii `R: [A, ...]` (closed form).

    With `b = μ·e`, `p² = |μ|² − b²`: `(2π)^{-1} [e^{−|μ|²/2} − e^{−p²/2 − (R−b)²/2}
    + b √(2π) e^{−p²/2} (Φ(R − b) − Φ(−b))]`.
    """
    b = e @ mu
    p2 = jnp.maximum(jnp.dot(mu, mu) - b * b, 0.0)
    b = b.reshape(b.shape + (1,) * (R.ndim - 1))
    p2 = p2.reshape(b.shape)
    R = jnp.clip(R, 0.0, jnp.maximum(b, 0.0) + _HCLIP)
    head = jnp.exp(-0.5 * (p2 + b * b)) - jnp.exp(-0.5 * (p2 + (R - b) ** 2))
    tail = b * math.sqrt(_TWO_PI) * jnp.exp(-0.5 * p2) * _ncdf_between(-b, R - b)
    return (head + tail) / _TWO_PI


def _k3_logit_rows(Lzz):
    """Rows `g_k` with `a_k − a_3 = g_k·ζ` (`g_3 = 0`): `[3, 2]`."""
    return jnp.concatenate([Lzz, jnp.zeros((1, 2), Lzz.dtype)], axis=0)


def _k3_mass(red: _Router, radius_fn, extra_lines):
    """`P(|ζ| < R(θ))` in polar coordinates about the tie point, for K = 3.

    `radius_fn(e: [A, 2], a: [A, 3]) -> [A, ...]` gives the radius along each
    direction (`a` the logits at `ζ = e`); the angular rule is split at the
    directions of the lines `g·ζ = 0` for the rows `g` of `extra_lines`, at
    all lines `a_i = a_j`, and at the mode.
    """
    g = _k3_logit_rows(red.Lzz)
    lines = [g[0] - g[1], g[0] - g[2], g[1] - g[2]] + extra_lines(g)
    normals = jnp.stack(lines)
    along = jnp.stack([-normals[:, 1], normals[:, 0]], axis=-1)
    angles = jnp.concatenate([_angles(along), _angles(along) + math.pi, _angles(red.mu)[None]])
    theta, wt = _circle_nodes(angles, _rule(_RULE_FINE, red.mu.dtype))
    e = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    a = e @ g.T
    R = radius_fn(e, a)
    F = _ray_mass(red.mu, e, R)
    return jnp.tensordot(wt, F, axes=(0, 0))


def _sorted3(a):
    top = jnp.sort(a, axis=-1)
    return top[..., 2], top[..., 1], top[..., 0]


@functools.partial(jax.jit, static_argnames=("kind",))
def _boundary_mass(router, law, w, kind: str):
    red = _reduce_router(router, law)
    dt = red.mu.dtype
    w = jnp.asarray(w, dt)
    if router.W.shape[0] == 2:
        # s = Lzz ζ ~ N(Lzz μ', Lzz²): P(|s| ≤ w), (3.11)
        sd = red.Lzz[0, 0]
        m = sd * red.mu[0]
        return _ncdf_between((-w - m) / sd, (w - m) / sd)
    shape = w.shape
    wv = w.reshape(1, -1)

    def radius(e, a):
        a1, a2, a3 = _sorted3(a)
        if kind == "top2":
            rate = a1 - a2  # Δ along the ray is r·rate (2.6)
        else:
            rate = jnp.minimum(a1 - a2, a2 - a3)  # δ along the ray (2.12)
        return _safe_div(wv, rate[:, None]) + jnp.where(rate[:, None] > 0, 0.0, jnp.inf)

    def extra(g):
        if kind == "top2":
            return []
        return [2 * g[0] - g[1] - g[2], 2 * g[1] - g[0] - g[2], 2 * g[2] - g[0] - g[1]]

    return _k3_mass(red, radius, extra).reshape(shape)


def exact_boundary_mass(router, law, w, kind: str = "top2"):
    """Boundary-mass profiles `M(w) = P(Δ(X) ≤ w)` (2.13) or `M_pair(w) = P(δ(X) ≤ w)` (2.14).

    For a linear router and Gaussian inputs. `K = 2`: both equal the slab
    probability (3.11) of `s = a_1 − a_2`. `K = 3`: the regions are polyhedral
    in the plane of the logit differences; in polar coordinates about the tie
    point the margin grows linearly along each ray, so the radial integral is
    closed form and one angular integral remains (graded Gauss–Legendre, split
    at every kink), accurate to about 1e-13.

    Args:
        router: `LinearRouter` with `W: [K, d]`, `K ∈ {2, 3}`.
        law: `Gaussian(mean: [d], cov: [d, d])`.
        w: scalar or `[W]` widths `≥ 0`.
        kind: "top2" for `M` (top-two margin Δ, 2.6) or "pairwise" for
            `M_pair` (smallest pairwise separation δ, 2.12).

    Returns:
        scalar or `[W]`, like `w`.

    >>> from softhard import LinearRouter, StandardGaussian
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> round(float(exact_boundary_mass(r, StandardGaussian(2), 0.2)), 4)  # Table 2, b = 0
    0.1585
    """
    _check_router_law(router, law)
    w = check_width(w)
    if kind not in ("top2", "pairwise"):
        raise ValueError(f'`kind` must be "top2" or "pairwise", got {kind!r}')
    return _boundary_mass(router, law, w, kind)


@jax.jit
def _ambiguity_mass(router, law, tau, delta):
    red = _reduce_router(router, law)
    dt = red.mu.dtype
    tau = jnp.asarray(tau, dt)
    delta = jnp.asarray(delta, dt)
    log_odds = jnp.log1p(-delta) - jnp.log(delta)  # log((1 − δ)/δ) > 0
    if router.W.shape[0] == 2:
        # K = 2: m_δ(τ) = P(|s| < τ log((1 − δ)/δ)) (Remark 5.4)
        sd = red.Lzz[0, 0]
        m = sd * red.mu[0]
        r = tau * log_odds
        return _ncdf_between((-r - m) / sd, (r - m) / sd)

    def radius(e, a):
        # along the ray the winner's gate is 1/(1 + Σ_j e^{−r c_j/τ}), c_j = a_(1) − a_j ≥ 0;
        # it falls below 1 − δ for r < R, Σ_j e^{−R c_j/τ} = δ/(1 − δ): convex, Newton
        a1, a2, a3 = _sorted3(a)
        c2, c3 = a1 - a2, a1 - a3
        ok = c2 > 0
        c2s = jnp.where(ok, c2, 1.0)
        r = tau * log_odds / c2s  # a lower bound, where the equation is still positive

        def step(_, r):
            l2, l3 = -r * c2s / tau, -r * c3 / tau
            top = jnp.maximum(l2, l3)
            e2, e3 = jnp.exp(l2 - top), jnp.exp(l3 - top)
            f = top + jnp.log(e2 + e3) + log_odds
            slope = -(c2s * e2 + c3 * e3) / (tau * (e2 + e3))
            return r - f / slope

        r = jax.lax.fori_loop(0, 60, step, r)
        return jnp.where(ok, r, jnp.inf)[:, None]

    return _k3_mass(red, radius, lambda g: [])[0]


def exact_ambiguity_mass(router, law, tau, delta):
    """Ambiguity mass `m_δ(τ) = P(max_k π_k^τ(X) < 1 − δ)` (5.4, 5.5), exactly.

    For a linear router and Gaussian inputs. `K = 2`: `P(|s(X)| < τ log((1−δ)/δ))`
    (Remark 5.4), a slab probability (3.11). `K = 3`: along each ray from the tie
    point the winner's gate increases, so the region is `{r < R(θ)}` with
    `Σ_{j≠k} exp(−R c_j/τ) = δ/(1−δ)` solved by Newton's method (convex, started
    from below); the radial mass is closed form and one angular integral
    remains. Accurate to about 1e-13.

    Args:
        router: `LinearRouter` with `W: [K, d]`, `K ∈ {2, 3}`.
        law: `Gaussian(mean: [d], cov: [d, d])`.
        tau: scalar temperature `> 0`.
        delta: scalar in `(0, 1/2)`.

    Returns:
        scalar `m_δ(τ)`.
    """
    _check_router_law(router, law)
    check_tau(tau)
    check_delta(delta)
    return _ambiguity_mass(router, law, tau, delta)


# ----------------------------------------------------------------------------
# the first-order gap coefficient
# ----------------------------------------------------------------------------


def _pairs(K: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(K) for j in range(i + 1, K)]


def _coincidence(model, teacher, st: _Struct, tol):
    """Signs `[n_student_pairs, n_teacher_pairs]` of coinciding interfaces, else 0.

    Teacher pair score `t_kl = a*_k − a*_l` coincides with the student's
    `s_ij = a_i − a_j` when `t_kl ≡ λ s_ij` as affine functions: the coefficient
    vector `(W*_k − W*_l, b*_k − b*_l)` lies within relative distance `tol` of
    the line through `(W_i − W_j, b_i − b_j)`. The entry is `sign(λ)`.
    """
    W = jnp.concatenate([model.router.W, model.router.b[:, None]], axis=1)
    Wt = jnp.concatenate([teacher.router.W, teacher.router.b[:, None]], axis=1)
    out = []
    for i, j in _pairs(st.K):
        vs = W[i] - W[j]
        row = []
        for k, kk in _pairs(st.Kt):
            vt = Wt[k] - Wt[kk]
            lam = _safe_div(jnp.dot(vt, vs), jnp.dot(vs, vs))
            resid = _safe_norm(vt - lam * vs)
            same = (resid <= tol * _safe_norm(vt)) & (lam != 0)
            row.append(jnp.where(same, jnp.sign(lam), 0.0))
        out.append(jnp.stack(row))
    return jnp.stack(out)


def _bilinear(red: _Reduced, om, mom: _Moments | None, eu, ev):
    """`E[1_A U V | ζ]` for `U = euᵀo`, `V = evᵀo` (static coefficient vectors)."""
    mu_u = _combine(eu, om)
    mu_v = _combine(ev, om)
    eu_j, ev_j = jnp.asarray(eu, red.R.dtype), jnp.asarray(ev, red.R.dtype)
    cov = eu_j @ red.R @ ev_j
    ku = eu_j @ red.Aot  # [nt]
    kv = ev_j @ red.Aot
    if mom is None:
        return mu_u * mu_v + cov + jnp.dot(ku, kv)
    nt = len(mom.m1)
    out = (mu_u * mu_v + cov) * mom.p
    out = out + sum((mu_u * kv[t] + mu_v * ku[t]) * mom.m1[t] for t in range(nt))
    return out + sum(ku[s] * kv[t] * mom.m2[s][t] for s in range(nt) for t in range(nt))


def _interface_integrand(red: _Reduced, st: _Struct, zeta, pair, signs):
    """`E[2 ln2 Δf J − Δf² | ζ]` on the student interface of `pair = (i, j)`: `[...]`.

    `Δf = f_i − f_j`; `J` is the jump of `E[Y | X]` across the interface, from
    the `i` side (`s_ij > 0`) to the `j` side: `sign(λ) (f*_k − f*_l)` on the
    part where the coinciding teacher pair `(k, l)` is the teacher's top two,
    and 0 elsewhere (`signs`: `[n_teacher_pairs]` from `_coincidence`).
    """
    shape = zeta.shape[:-1]
    zs = [zeta[..., j].ravel() for j in range(zeta.shape[-1])]
    om = _affine(red.o0, red.Aoz, zs)
    no = red.o0.shape[0]
    i, j = pair
    e_df = np.zeros(no)
    e_df[i], e_df[j] = 1.0, -1.0
    out = -_bilinear(red, om, None, e_df, e_df)
    if signs is not None:
        tm = _affine(red.t0, red.Atz, zs)
        eye = np.eye(st.Kt - 1)
        T = np.concatenate([eye, np.zeros((1, st.Kt - 1))])  # t-coefficients of a*_k − a*_K
        for p, (k, kk) in enumerate(_pairs(st.Kt)):
            e_dg = np.zeros(no)
            e_dg[st.K + k], e_dg[st.K + kk] = 1.0, -1.0
            others = [m for m in range(st.Kt) if m not in (k, kk)]
            cell = np.stack([T[k] - T[m] for m in others]) if others else np.zeros((0, 0))
            mom = _cell_moments(red, tm, cell) if others else None
            out = out + 2.0 * _LN2 * signs[p] * _bilinear(red, om, mom, e_df, e_dg)
    return out.reshape(shape)


@functools.partial(jax.jit, static_argnames=("st",))
def _gap_coefficient(model, teacher, law, tol, st: _Struct):
    red = _reduce(model, teacher, law, st)
    dt = red.mu.dtype
    signs = None if st.linear else _coincidence(model, teacher, st, tol)
    if st.K == 2:
        # the interface is the point ζ = 0; the density of s = Lzz ζ there is φ(μ')/Lzz (3.14)
        zeta = jnp.zeros((1, 1), dt)
        dens = _npdf(red.mu[0]) / red.Lzz[0, 0]
        sg = None if signs is None else signs[0]
        return dens * _interface_integrand(red, st, zeta, (0, 1), sg)[0]
    dirs, gamma, pairs = _student_rays(red)
    total = jnp.zeros((), dt)
    for p, pair in enumerate(pairs):
        zeta, w = _ray_quadrature(red, st, dirs[p][None], _rule(_RULE_FINE, dt))
        # the polar weight has r^{nz−1} = r; the line integral needs the 2-D density alone
        r = jnp.linalg.norm(zeta[0], axis=-1)
        w = _safe_div(w[0], r) * _safe_norm(gamma[p]) ** -1
        sg = None if signs is None else signs[p]
        total = total + jnp.sum(w * _interface_integrand(red, st, zeta[0], pair, sg))
    return total


def exact_gap_coefficient(model, teacher, law, *, coincidence_tol=1e-9):
    """First-order coefficient `c` in `L_τ − L_0 = c τ + o(τ)` for Gaussian inputs.

    EQUATIONS.md §3, "General target, K=2" [X], with `Δf = f_1 − f_2`:

        c = ∫_{s=0} (2 ln 2 · Δf · J − Δf²) p/|∇s| dH^{d−1}
          = G(0) · E[2 ln 2 · Δf J − Δf² | s(X) = 0],

    `G(0)` the density of `s = a_1 − a_2` at 0 (3.14) and `J` the jump of the
    regression function `E[Y | X]` across the student interface `S = {s = 0}`,
    from the expert-1 side to the expert-2 side. For `K = 3` the sum of the same
    integral over the three top-two interfaces (rays in the logit-difference
    plane), `s_ij` in place of `s` [X].

    The jump `J`:

    - `LinearTarget`: `E[Y | X]` is continuous, `J = 0`, `c = −G(0) E[Δf² | s = 0]`
      (softening helps).
    - `Teacher` whose interface coincides with the student's (a teacher pair
      score `a*_k − a*_l ≡ λ s` as affine functions, e.g. the student's own
      router): `J = sign(λ) (f*_k − f*_l)` where `(k, l)` are the teacher's top
      two. Realizable (`f* = f`, same router): `c = (2 ln 2 − 1) G(0) E[Δf² | s = 0]`.
    - `Teacher` with any other separator: the teacher's jump lies on a
      different hyperplane, which meets `S` in a set of `H^{d−1}`-measure zero,
      so `J = 0` a.e. on `S` and `c = −G(0) E[Δf² | s = 0]`. The contribution of
      the crossing is `O(τ²)`, and the teacher's interface at a distance `D`
      from `S` contributes `O(e^{−D/τ})`: the coefficient is exact, but the
      range of `τ` where `c τ` describes the gap shrinks as the interfaces
      approach, so `c` jumps when they coincide. Coincidence is decided on the
      parameters, with relative tolerance `coincidence_tol`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        coincidence_tol: relative distance below which a teacher pair's
            coefficient vector `(W*_k − W*_l, b*_k − b*_l)` counts as parallel to
            the student's.

    Returns:
        scalar `c`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, Teacher
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> c = exact_gap_coefficient(MoE(r, e), Teacher(r, e), StandardGaussian(2))
    >>> round(float(c), 4)  # (2 ln 2 − 1) · φ(0) · E[(2 x_2)²]
    0.6164
    """
    st = _check_problem(model, teacher, law)
    bad = jnp.shape(coincidence_tol) != ()
    if not bad and is_concrete(coincidence_tol):
        bad = not float(coincidence_tol) >= 0
    if bad:
        raise ValueError(f"`coincidence_tol` must be a scalar >= 0, got {coincidence_tol!r}")
    return _gap_coefficient(model, teacher, law, coincidence_tol, st)
