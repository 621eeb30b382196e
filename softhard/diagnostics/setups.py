"""The paper's Section 7 setups (TABLES.md), as model/teacher/law triples."""

from __future__ import annotations

import jax.numpy as jnp

from ..models import Gaussian, LinearExperts, LinearRouter, MoE, Teacher

__all__ = ["table2_setup"]


def table2_setup(offset: float = 0.0, *, d: int = 2, dtype=None):
    """Table 2 (§7.2, verified): controlled boundary geometry.

    `X ~ N(0, I_d)`; binary router with logits `(s(x), 0)`, `s(x) = uᵀx − b`,
    `u = e_1`; experts with `f_1 − f_2 = vᵀx`, `v = 2 e_2 ⊥ u`; the teacher is
    the hard predictor of the same router (realizable, so `L_0 = 0` and the
    soft risk is the soft–hard gap). The top-two margin is `Δ = |s|`, so the
    boundary mass is `M(2τ) = P(|s(X)| ≤ 2τ)`.

    Args:
        offset: `b`, the translation of the interface.
        d: input dimension (≥ 2).
        dtype: float dtype (default: JAX's default float).

    Returns:
        `(model, teacher, law)`: `MoE`, `Teacher`, `Gaussian`.
    """
    if int(d) < 2:
        raise ValueError(f"`d` must be >= 2 for the Table 2 setup, got {d!r}")
    dtype = dtype or jnp.result_type(float)
    W = jnp.zeros((2, d), dtype).at[0, 0].set(1.0)
    b = jnp.array([-offset, 0.0], dtype)
    B = jnp.zeros((2, d), dtype).at[0, 1].set(2.0)
    router = LinearRouter(W, b)
    experts = LinearExperts(B, jnp.zeros(2, dtype))
    law = Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))
    return MoE(router, experts), Teacher(router, experts), law
