"""Exact boundary-mass profiles (2.13, 2.14) and ambiguity mass (5.5), Gaussian inputs.

For a linear router alone: `K = 2` is a slab probability (3.11); for `K = 3`
the radial integrals about the tie point are closed form (`_ray_mass`) and one
angular integral remains (`_k3_mass`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from .._validate import check_delta, check_k, check_kind, check_tau, check_width, poisons
from ._normal import _HCLIP, _TWO_PI, _ncdf_between, _safe_div
from ._problem import _check_router_law, _reduce_router, _Router
from ._quadrature import _RULE_FINE, _angles, _circle_nodes, _rule


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


@functools.partial(jax.jit, static_argnames=("kind", "k"))
def _boundary_mass(router, law, w, kind: str, k: int = 1):
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
            # Δ_k along the ray is r·rate (2.6, T.1)
            rate = a1 - a2 if k == 1 else a2 - a3
        else:
            rate = jnp.minimum(a1 - a2, a2 - a3)  # δ along the ray (2.12)
        return _safe_div(wv, rate[:, None]) + jnp.where(rate[:, None] > 0, 0.0, jnp.inf)

    def extra(g):
        if kind == "top2":
            return []
        return [2 * g[0] - g[1] - g[2], 2 * g[1] - g[0] - g[2], 2 * g[2] - g[0] - g[1]]

    return _k3_mass(red, radius, extra).reshape(shape)


@poisons(w="width")
def exact_boundary_mass(router, law, w, kind: str = "top2", *, k: int = 1):
    """Boundary-mass profiles `M_k(w) = P(Δ_k(X) ≤ w)` (2.13, T.7) or `M_pair(w)` (2.14).

    For a linear router and Gaussian inputs. `K = 2`: both equal the slab
    probability (3.11) of `s = a_1 − a_2`. `K = 3`: the regions are polyhedral
    in the plane of the logit differences; in polar coordinates about the tie
    point the margin grows linearly along each ray, so the radial integral is
    closed form and one angular integral remains (graded Gauss–Legendre, split
    at every kink), accurate to about 1e-13. `k = 2` (K = 3) uses the top-2
    margin `Δ_2 = a_(2) − a_(3)` (T.1), whose level set is the top-2 interfaces.

    Args:
        router: `LinearRouter` with `W: [K, d]`, `K ∈ {2, 3}`.
        law: `Gaussian(mean: [d], cov: [d, d])`.
        w: scalar or `[W]` widths `≥ 0`.
        kind: "top2" for `M_k` (top-k margin Δ_k, 2.6, T.1; `k = 1`: `M` of
            2.13) or "pairwise" for `M_pair` (smallest pairwise separation δ,
            2.12; it does not depend on k, so only with `k = 1`).
        k: experts per input, `1 <= k < K`.

    Returns:
        scalar or `[W]`, like `w`.

    >>> from softhard import LinearRouter, StandardGaussian
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> round(float(exact_boundary_mass(r, StandardGaussian(2), 0.2)), 4)  # Table 2, b = 0
    0.1585
    """
    K = _check_router_law(router, law)
    w = check_width(w)
    check_kind(kind, "kind", ("top2", "pairwise"))
    k = check_k(k, K, "k")
    if kind == "pairwise" and k != 1:
        raise ValueError(
            f"`kind` = 'pairwise' (the smallest pairwise separation δ, 2.12) does not depend "
            f"on k; pass kind='top2' for the top-k margin Δ_k, got k = {k}"
        )
    return _boundary_mass(router, law, w, kind, k)


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


@poisons(tau="tau", delta="delta")
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
