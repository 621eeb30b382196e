"""Logits to gates: softmax and soft top-k routing at τ, hard top-1 / top-k, margins (§2, §3, T).

Batch conventions: `x: [N, d]`, `logits: [N, K]`. All functions are pure and
compose with `jit`, `vmap` and `grad`; arguments are validated in Python
(shapes always, values when they are concrete). A traced `tau` outside its
domain (`<= 0`, NaN, inf) gives NaN gates (NaN poisoning, `_validate`); a τ
too small for the dtype gives the hard limit (`_validate.inv_temperature`).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from . import _gating
from ._validate import (
    check_dim,
    check_finite_params,
    check_k,
    check_logits,
    check_tau,
    check_x,
    input_dim,
    poisons,
)

__all__ = [
    "logits",
    "expert_outputs",
    "gates",
    "log_gates",
    "hard_gates",
    "winner",
    "top_two_margin",
    "topk_margin",
    "pairwise_min_margin",
    "pairwise_scores",
    "pair_indices",
]


def _batched(fn, x: jax.Array, name: str) -> jax.Array:
    """`vmap(fn)(x)`, a shape error (a router of another input dimension) named as such."""
    try:
        return jax.vmap(fn)(x)
    except TypeError as e:
        if "dot_general" not in str(e) and "shape" not in str(e).lower():
            raise
        raise ValueError(
            f"`x` of shape {x.shape} does not fit `{name}` (x must be [N, d] with the input "
            f"dimension d that `{name}` takes): {e}"
        ) from e


def logits(router, x: jax.Array) -> jax.Array:
    """Router logits `a(x; φ)` (2.2) for a batch.

    Args:
        router: any pytree with `__call__(x: [d]) -> [K]`.
        x: `[N, d]` inputs.

    Returns:
        `[N, K]` logits.

    >>> from softhard import LinearRouter
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 1.0]], b=[0.0, 0.5])
    >>> logits(r, jnp.array([[1.0, 1.0]])).tolist()
    [[1.0, 1.5]]
    """
    x = check_dim(check_x(x), input_dim(router), "x", "router")
    check_finite_params(router, "router")
    a = _batched(router, x, "router")
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(
            f"`router` must map x: [d] to logits [K] with K >= 2; got batched shape {a.shape}"
        )
    return a


def expert_outputs(experts, x: jax.Array) -> jax.Array:
    """Outputs of every expert `f_k(x; θ_k)` (2.2) for a batch.

    Args:
        experts: any pytree with `__call__(x: [d]) -> [K]`.
        x: `[N, d]` inputs.

    Returns:
        `[N, K]` expert outputs.
    """
    x = check_dim(check_x(x), input_dim(experts), "x", "experts")
    check_finite_params(experts, "experts")
    f = _batched(experts, x, "experts")
    if f.ndim != 2:
        raise ValueError(f"`experts` must map x: [d] to outputs [K]; got batched shape {f.shape}")
    return f


@poisons(tau="tau")
def gates(logits: jax.Array, tau, *, k: int = 1) -> jax.Array:
    """Softmax gates (2.3), or for `k > 1` the soft top-k mask `μ^τ` (T.3).

    `k = 1`: `π_k^τ = exp(a_k/τ) / Σ_j exp(a_j/τ)` by log-sum-exp. `k > 1`:
    `μ_j^τ = min(1, exp((a_j − θ)/τ))` with `Σ_j μ_j^τ = k`, the entropic
    relaxation of the hard top-k mask on the capped simplex, solved exactly by
    sorting and a cumulative log-sum-exp (no root-finding). Stable for τ down
    to 1e-8 and logits of 1e6; differentiable (the capped count is a discrete
    choice; gradients flow through θ).

    Args:
        logits: `[N, K]`.
        tau: scalar temperature `> 0`.
        k: experts per input, `1 <= k <= K` (`k = K` gives ones).

    Returns:
        `[N, K]` gates in `[0, 1]`, each row summing to `k`.

    >>> gates(jnp.array([[0.0, 0.0]]), 1.0).tolist()
    [[0.5, 0.5]]
    >>> [round(v, 6) for v in gates(jnp.array([[2.0, 0.0, 0.0]]), 1.0, k=2)[0].tolist()]
    [1.0, 0.5, 0.5]
    """
    logits = check_logits(logits)
    check_tau(tau)
    k = check_k(k, logits.shape[1], allow_all=True)
    return _gating.topk_mask(logits, tau, k)


@poisons(tau="tau")
def log_gates(logits: jax.Array, tau) -> jax.Array:
    """`log π_k^τ` (2.3), finite wherever the logits are: `[N, K]`.

    A loser's log gate is `−(a_(1) − a_k)/τ`, which is `−inf` only when that
    overflows (τ far below the logit gaps); never NaN.
    """
    logits = check_logits(logits)
    check_tau(tau)
    return jax.nn.log_softmax(_gating.scaled(logits, tau), axis=-1)


def winner(logits: jax.Array) -> jax.Array:
    """Hard winner `k*(x) = min argmax_k a_k(x)` (2.9): `[N]` integer indices.

    Ties go to the lowest index (`jnp.argmax` returns the first maximum).
    """
    logits = check_logits(logits)
    return jnp.argmax(logits, axis=-1)


def hard_gates(logits: jax.Array, *, k: int = 1) -> jax.Array:
    """Hard top-1 weights `π_k^0 = 1{k = k*}` (4.2), or the hard top-k mask (T.2).

    The `k` largest logits, ties to the lowest index (order by `(−a_j, j)`;
    for `k = 1` the rule (2.9)).

    Args:
        logits: `[N, K]`.
        k: experts per input, `1 <= k <= K`.

    Returns:
        `[N, K]` 0/1 rows summing to `k`, in the dtype of `logits`.

    >>> hard_gates(jnp.array([[1.0, 1.0, 0.0]])).tolist()
    [[1.0, 0.0, 0.0]]
    >>> hard_gates(jnp.array([[0.0, 1.0, 1.0, 1.0]]), k=2).tolist()
    [[0.0, 1.0, 1.0, 0.0]]
    """
    logits = check_logits(logits)
    k = check_k(k, logits.shape[1], allow_all=True)
    return _gating.hard_mask(logits, k)


def top_two_margin(logits: jax.Array) -> jax.Array:
    """Top-two margin `Δ(x) = a_(1) − a_(2)` (2.6): `[N]`, `≥ 0`, zero on ties (2.8)."""
    logits = check_logits(logits)
    k = jnp.argmax(logits, axis=-1)
    first = jnp.take_along_axis(logits, k[:, None], axis=-1)[:, 0]
    # the runner-up: the max over the other entries (a tie with the winner gives Δ = 0)
    others = jnp.where(jax.nn.one_hot(k, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return first - jnp.max(others, axis=-1)


def topk_margin(logits: jax.Array, k: int) -> jax.Array:
    """Top-k margin `Δ_k(x) = a_(k) − a_(k+1)` (T.1): `[N]`, `≥ 0`, zero on ties.

    `k = 1` is the top-two margin Δ (2.6).

    Args:
        logits: `[N, K]`.
        k: `1 <= k < K`.

    >>> topk_margin(jnp.array([[3.0, 1.0, 2.0, 0.5]]), 2).tolist()
    [1.0]
    """
    logits = check_logits(logits)
    k = check_k(k, logits.shape[1])
    if k == 1:
        return top_two_margin(logits)
    top = jax.lax.top_k(logits, k + 1)[0]
    return top[:, k - 1] - top[:, k]


def pairwise_min_margin(logits: jax.Array) -> jax.Array:
    """Smallest pairwise separation `δ(x) = min_{i<j} |a_i − a_j|` (2.12, 3.3): `[N]`.

    Computed as the smallest gap between consecutive sorted logits, so it costs
    `O(K log K)` rather than `O(K²)`. Always `δ ≤ Δ`.
    """
    logits = check_logits(logits)
    s = jnp.sort(logits, axis=-1)
    return jnp.min(jnp.diff(s, axis=-1), axis=-1)


def pair_indices(K: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays `(i, j)`, each `[K(K−1)/2]`, of all pairs `i < j` in lexicographic order."""
    if int(K) < 2:
        raise ValueError(f"`K` must be >= 2, got {K!r}")
    pairs = np.array(list(itertools.combinations(range(int(K)), 2)), dtype=np.int32)
    return pairs[:, 0], pairs[:, 1]


def pairwise_scores(logits: jax.Array) -> jax.Array:
    """Pairwise scores `s_ij = a_i − a_j` for `i < j` (3.1): `[N, K(K−1)/2]`.

    Columns follow `pair_indices(K)` (lexicographic: (0,1), (0,2), …, (K−2,K−1)).
    """
    logits = check_logits(logits)
    i, j = pair_indices(logits.shape[1])
    return logits[:, i] - logits[:, j]
