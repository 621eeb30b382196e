"""Quadrature over the whitened student coordinates ζ (see `softhard.gaussian`).

- `_graded_rule`, `_RULE_FINE`, `_RULE_COARSE`: composite Gauss–Legendre rules
  on [0, 1], geometrically graded towards 0, that resolve a layer of any width
  at a panel end;
- `_split_panels`, `_interval_nodes`, `_circle_nodes`: the rules on panels
  split at the features (interfaces, the mode), graded towards both ends;
- `_ray_quadrature`, `_student_rays`, `_polar_angles`, `_integrate`: the
  integral over `ζ ∈ R^{K−1}` along the two half-lines (K = 2) or in polar
  coordinates about the tie point (K = 3).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from ._normal import _TWO_PI, _safe_div
from ._problem import _line_coefficients, _Reduced, _Struct

_RCUT = 10.0  # radial integrals stop this many standard deviations past the mode


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
    shape = (1,) * pts.ndim + (-1,)  # the rule along a new last axis
    x, w = rule[0].reshape(shape), rule[1].reshape(shape)
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
# integration over ζ
# ----------------------------------------------------------------------------


def _ray_quadrature(red: _Reduced, st: _Struct, e, rule, extra=None):
    """Radial nodes along unit directions `e: [A, nz]` from the tie point.

    `extra`: optional further radial breakpoints `[A, m]` (any real values;
    they are clipped to the ray).

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
        cross = _safe_div(-g0[None, :], ge)  # [A, n_l] radii where the ray meets a line
        breaks.append(jnp.where(jnp.isfinite(cross), cross, 0.0))
    if extra is not None:
        breaks.append(jnp.where(jnp.isfinite(extra), extra, 0.0))
    r, wr = _interval_nodes(jnp.zeros_like(rmax), rmax, jnp.concatenate(breaks, -1), rule)
    dens = jnp.exp(-0.5 * (p2[:, None] + (r - b[:, None]) ** 2)) / _TWO_PI ** (nz / 2.0)
    jac = r ** (nz - 1) if nz > 1 else 1.0
    zeta = r[..., None] * e[:, None, :]
    return zeta, wr * dens * jac


def _student_rays(red: _Reduced, k: int = 1):
    """K = 3: the student's interfaces for top-`k` routing, rays from the tie point ζ = 0.

    `k = 1`: the top-two interfaces `a_i = a_j > a_m`; `k = 2`: the interfaces
    `a_i = a_j < a_m` of the hard top-2 (T.11: `i, j` the 2nd and 3rd), the
    opposite rays.

    Returns `(dirs [3, 2], gamma [3, 2], pairs)`: unit directions in ζ, the
    gradients `γ` with `s_ij = a_i − a_j = γᵀζ`, and the pairs `(i, j)`.
    """
    dt = red.mu.dtype
    # in z = (a_1 − a_3, a_2 − a_3): a_1 = a_2 > a_3 along (1, 1), a_1 = a_3 > a_2 along
    # (0, −1), a_2 = a_3 > a_1 along (−1, 0); the same ties below the third expert opposite
    zdirs = jnp.asarray([[1.0, 1.0], [0.0, -1.0], [-1.0, 0.0]], dt) * (1.0 if k == 1 else -1.0)
    pairs = [(0, 1), (0, 2), (1, 2)]
    E = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dt)
    dirs = jax.scipy.linalg.solve_triangular(red.Lzz, zdirs.T, lower=True).T
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    gamma = jnp.stack([red.Lzz.T @ (E[i] - E[j]) for i, j in pairs])
    return dirs, gamma, pairs


def _angles(v):
    return jnp.arctan2(v[..., 1], v[..., 0])


def _polar_angles(red: _Reduced, st: _Struct):
    """Angular breakpoints for K = 3: student rays, teacher line directions, the mode.

    Top-k students (`k = 2`) add the opposite rays, their interfaces (T.11).
    """
    dirs, _, _ = _student_rays(red)
    parts = [_angles(dirs), _angles(red.mu)[None]]
    if st.k > 1:
        parts.append(_angles(-dirs))
    lines = _line_coefficients(red, st)
    if lines is not None:
        g0, g = lines
        along = jnp.stack([-g[:, 1], g[:, 0]], axis=-1)
        parts += [_angles(along), _angles(along) + math.pi]
        if st.Kt == 3:
            parts.append(_angles(_teacher_tie_point(g0[:2], g[:2]))[None])
    return jnp.concatenate(parts)


def _teacher_tie_point(g0, g):
    """Where the teacher's (conditional-mean) lines `g0 + g ζ = 0` meet (`[2]`, `[2, 2]`).

    The teacher's cells meet there: the radial integral has a kink in the
    angle that points at it. Parallel lines (no such point) give the origin.
    """
    det = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
    ok = jnp.abs(det) > 1e-12 * (jnp.sum(g * g) + 1e-300)
    inv_det = _safe_div(1.0, jnp.where(ok, det, 0.0))
    x = -(g[1, 1] * g0[0] - g[0, 1] * g0[1]) * inv_det
    y = -(-g[1, 0] * g0[0] + g[0, 0] * g0[1]) * inv_det
    return jnp.stack([x, y])


def _cap_switch_radii(red: _Reduced, e, taus):
    """K = 3, k = 2: radii `[A, T]` where the soft top-2 mask's cap switches (T.3).

    Along `ζ = r e` the logits are `r g` (`g = (Lzz e, 0)`); the largest entry
    is capped at 1 beyond `S(r) = Σ_j exp(−r (g_max − g_j)/τ) = 2`, a kink of
    the mask. With `d_1 ≤ d_2` the other two rates below the top, `r = τ s`,
    `e^{−s d_1} + e^{−s d_2} = 1`: convex and decreasing in `s`, solved by
    Newton's method from `s = 0` (monotone convergence). No switch (`d_1 = 0`,
    on a top-two interface) gives 0.
    """
    z = e @ red.Lzz.T  # [A, 2]
    g = jnp.concatenate([z, jnp.zeros_like(z[:, :1])], axis=-1)  # [A, 3]
    d = jnp.sort(jnp.max(g, axis=-1, keepdims=True) - g, axis=-1)[:, 1:]  # [A, 2] ≥ 0
    ok = d[:, 0] > 0
    d = jnp.where(ok[:, None], d, 1.0)

    def step(_, s):
        u, v = jnp.exp(-s * d[:, 0]), jnp.exp(-s * d[:, 1])
        return s + (u + v - 1.0) / (d[:, 0] * u + d[:, 1] * v)

    s = jax.lax.fori_loop(0, 60, step, jnp.zeros_like(d[:, 0]))
    s = jnp.where(ok, s, 0.0)
    return s[:, None] * taus[None, :]


def _integrate(red: _Reduced, st: _Struct, fn, rule_angle, rule_radius, taus=None):
    """`∫ fn(ζ) φ(ζ − μ') dζ` over `R^{K−1}`; `fn: [..., nz] -> [M, ...]`; returns `[M]`.

    With `taus: [T]` and a top-2 student the radial rule is also split where
    the soft mask's cap switches at each τ (`_cap_switch_radii`).
    """
    dt = red.mu.dtype
    if st.K == 2:
        e = jnp.asarray([[1.0], [-1.0]], dt)
        zeta, w = _ray_quadrature(red, st, e, _rule(rule_radius, dt))
        return jnp.sum(fn(zeta) * w[None], axis=(-2, -1))
    theta, wt = _circle_nodes(_polar_angles(red, st), _rule(rule_angle, dt))
    e = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    rr = _rule(rule_radius, dt)

    def per_direction(args):
        e1, w1 = args
        extra = None if taus is None or st.k == 1 else _cap_switch_radii(red, e1[None], taus)
        zeta, w = _ray_quadrature(red, st, e1[None], rr, extra)
        return jnp.sum(fn(zeta[0]) * w[0][None], axis=-1) * w1  # [M]

    # rematerialise each chunk in reverse mode instead of storing its residuals
    vals = jax.lax.map(jax.checkpoint(per_direction), (e, wt), batch_size=32)
    return jnp.sum(vals, axis=0)
