"""Gate kernels on the last axis `[..., K]`: softmax, soft and hard top-k, combine weights.

Unvalidated, pure and shape-polymorphic: the public, checked versions are in
`softhard.routing`; `models.MoE` and the fused sweeps in `softhard.risk` call
these directly (they sit under every module, like `_validate` and `_stats`).

The soft top-k mask (EQUATIONS.md T.3) is the entropic relaxation of the hard
top-k mask on the capped simplex,

    μ^τ = argmax_{m ∈ [0, 1]^K, Σ m = k} ⟨a, m⟩ − τ Σ_j m_j log m_j,
    μ_j^τ = min(1, exp((a_j − θ)/τ)),  θ fixed by Σ_j μ_j^τ = k,

solved exactly by sorting: with the `r` largest entries capped at 1, the rest
is `(k − r) · softmax` of the remaining logits; `r` is the smallest value in
`{0, …, k − 1}` whose largest uncapped entry is `≤ 1`. For `k = 1` the cap
never binds and `μ^τ` is the softmax (2.3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._validate import inv_temperature


def scaled(a: jax.Array, tau) -> jax.Array:
    """`(a − max a)/τ`: every entry `≤ 0`, the largest exactly 0 (no overflow for τ ≥ 1e-8).

    The division is a product with the capped inverse `min(1/τ, finfo.max)`
    (`_validate.inv_temperature`, the sweep kernel's rule), so a τ that
    underflows in `a`'s dtype (1e-300 in float32, a subnormal flushed to 0)
    gives the hard limit, never `0/0 = NaN`.
    """
    a_max = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
    return (a - a_max) * inv_temperature(tau, jnp.result_type(a, float))


def softmax_gates(a: jax.Array, tau) -> jax.Array:
    """Softmax gates (2.3) by log-sum-exp: `[..., K]`."""
    return jax.nn.softmax(scaled(a, tau), axis=-1)


def ranks(a: jax.Array) -> jax.Array:
    """Rank of each entry in the order `(−a_j, j)` (T.2): `[..., K]` integers.

    `0` for the largest, ties to the lowest index; `rank < k` is the hard top-k set `S_k`.
    """
    order = jnp.argsort(-a, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True)


def hard_mask(a: jax.Array, k: int) -> jax.Array:
    """Hard top-k mask `μ_j^0 = 1{j ∈ S_k}` (T.2) in `a`'s dtype; `k = 1` is one-hot of (2.9)."""
    if k == 1:
        return jax.nn.one_hot(jnp.argmax(a, axis=-1), a.shape[-1], dtype=a.dtype)
    return (ranks(a) < k).astype(a.dtype)


class TopkParts(NamedTuple):
    """The τ-free pieces of T.3 for logits `a: [..., K]`: computed once, reused over a τ grid."""

    shifted: jax.Array  # a − max a (the max under stop_gradient), [..., K]
    desc: jax.Array  # `shifted` sorted descending, no gradient, [..., K]
    rank: jax.Array  # ranks(a): rank < k is S_k (T.2), [..., K]


def topk_parts(a: jax.Array) -> TopkParts:
    """Shifted logits, their descending sort and their ranks (two sorts and an argsort)."""
    a_max = jax.lax.stop_gradient(jnp.max(a, axis=-1, keepdims=True))
    shifted = a - a_max
    desc = jnp.sort(jax.lax.stop_gradient(shifted), axis=-1, descending=True)
    return TopkParts(shifted, desc, ranks(a))


def topk_mask(a: jax.Array, tau, k: int) -> jax.Array:
    """Soft top-k mask `μ^τ` (T.3): `[..., K]`, entries in `[0, 1]`, rows summing to `k`.

    The capped count `r` is found from the sorted scaled logits and a reverse
    cumulative log-sum-exp (all `r` at once, no root-finding); it is a
    discrete choice, so gradients flow through `θ`, a log-sum-exp over the
    uncapped entries, and through `exp(min(z − θ, 0))`, which stays finite
    for capped entries at any τ. `k = 1` returns the softmax (2.3) itself.
    """
    if k == 1:
        return softmax_gates(a, tau)
    return topk_mask_of(topk_parts(a), tau, k)


def topk_mask_of(parts: TopkParts, tau, k: int) -> jax.Array:
    """`topk_mask` from `topk_parts(a)`: no sort per τ (a sweep sorts each row once).

    Bit-identical to `topk_mask(a, tau, k)` for `k ≥ 2`: sorting commutes with
    the positive scaling `1/τ`, so `sort(a − max a)/τ` is the sort of `(a − max a)/τ`.
    """
    shifted, desc, rank = parts
    inv = inv_temperature(tau, jnp.result_type(shifted, float))
    z = shifted * inv  # [..., K], ≤ 0: `scaled(a, tau)`
    zs = desc * inv  # z sorted descending
    tail = jax.lax.cumlogsumexp(zs, axis=zs.ndim - 1, reverse=True)  # log Σ_{l ≥ r} e^{zs_l}
    r = jnp.arange(k, dtype=z.dtype).reshape((1,) * (z.ndim - 1) + (k,))
    # the largest uncapped entry with r capped, (k − r) e^{zs_r − tail_r}, is ≤ 1
    fits = jnp.log(k - r) + zs[..., :k] - tail[..., :k] <= 0  # [..., k]; r = k − 1 always fits
    r_star = jnp.argmax(fits, axis=-1)[..., None]  # [..., 1], the first r that fits
    capped = rank < r_star
    theta = jax.nn.logsumexp(jnp.where(capped, -jnp.inf, z), axis=-1, keepdims=True)
    theta = theta - jnp.log((k - r_star).astype(z.dtype))
    return jnp.where(capped, 1.0, jnp.exp(jnp.minimum(z - theta, 0.0))).astype(z.dtype)


def combine_weights(a: jax.Array, rho) -> jax.Array | None:
    """Combine weights `c_j = exp(a_j/ρ)` (T.4), scaled by `exp(−max a/ρ)`; `None` for `ρ = ∞`."""
    if rho is None:
        return None
    return jnp.exp(scaled(a, rho))


def route(select: jax.Array, combine: jax.Array, tau, k: int, rho) -> jax.Array:
    """Normalised routing weights of the predictors (T.5): `[..., K]`, rows summing to 1.

    `w_j = μ_j c_j / Σ_l μ_l c_l` with `μ = μ^τ(select)` (T.3) at `tau > 0`, or
    the hard mask (T.2) for `tau=None`, and `c = exp(combine/ρ)` (T.4; `c = 1`
    for `rho=None`). For `k = 1`, `ρ = ∞` these are exactly the softmax gates
    (2.3) / the one-hot hard gates (4.2).
    """
    mu = hard_mask(select, k) if tau is None else topk_mask(select, tau, k)
    c = combine_weights(combine, rho)
    if c is None:
        return mu if k == 1 else mu / jnp.sum(mu, axis=-1, keepdims=True)
    u = mu * c
    return u / jnp.sum(u, axis=-1, keepdims=True)
