"""Normal-distribution kernels: safe helpers, the bivariate normal, truncated moments.

- `_npdf`, `_ncdf_between` (`Φ(hi) − Φ(lo)` without cancellation), and the
  gradient-safe `_safe_div`, `_safe_norm`;
- `_bvn_upper`: the standard bivariate normal upper orthant probability
  (Drezner–Wesolowsky with Genz's changes);
- `_Moments`, `_halfspace_moments`, `_quadrant_moments`: the probability and
  first and second moments of `ξ ~ N(0, I)` over a half-plane or the
  intersection of two (Tallis 1961): the teacher cells of `softhard.gaussian`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr
from numpy.polynomial.legendre import leggauss

_TWO_PI = 2.0 * math.pi
_HCLIP = 40.0  # |h| beyond this is ±∞ for Φ and φ in float64 (φ(40) = 0)


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


def _bvn_rule(h):
    """The 20-point rule `(x, w)` on [-1, 1], each `[1.., 20]`: one axis past `h`'s."""
    shape = (1,) * h.ndim + (-1,)
    x, w = jnp.asarray(_BVN_X, h.dtype), jnp.asarray(_BVN_W, h.dtype)
    return x.reshape(shape), w.reshape(shape)


def _bvn_moderate(h, k, r):
    x, w = _bvn_rule(h)
    asr = jnp.arcsin(jnp.clip(r, -0.925, 0.925))
    sn = jnp.sin(asr * (x + 1.0) / 2.0)  # [1.., 20]
    hk = (h * k)[..., None]
    hs = ((h * h + k * k) / 2.0)[..., None]
    total = jnp.sum(w * jnp.exp((sn * hk - hs) / (1.0 - sn * sn)), axis=-1)
    return total * asr / (2.0 * _TWO_PI) + ndtr(-h) * ndtr(-k)


def _bvn_strong(h, k, r):
    x, w = _bvn_rule(h)
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
    xs = (a2 * (x + 1.0)) ** 2  # [1.., 20]
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
