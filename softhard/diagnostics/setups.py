"""The paper's Section 7 set-ups and grids (TABLES.md): every table's model and its τ grid.

Tables 1 and 2 are `(model, teacher, law)` triples for the core toolkit;
Table 3 is the §6 reduced model (`softhard.reduced`).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from .._validate import check_count
from ..models import Gaussian, LinearExperts, LinearRouter, MoE, Teacher
from ..reduced import ReducedModel, reduced_model

__all__ = [
    "TABLE1_TAUS",
    "TABLE1_CONTRAST_SQ",
    "TABLE2_OFFSETS",
    "TABLE3_TAUS",
    "TABLE4_TAUS",
    "table1_setup",
    "table2_setup",
    "table3_model",
    "table4_setup",
]

#: the temperatures of Table 1 (§7.1)
TABLE1_TAUS = (0.02, 0.05, 0.1, 0.2, 0.45, 0.6)
#: the interface offsets of Table 2 (§7.2)
TABLE2_OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.25)
#: the temperatures of Table 3 (§7.3)
TABLE3_TAUS = (0.05, 0.1, 0.2, 0.4)

#: the temperatures of Table 4 (top-2 routing, this toolkit's extension)
TABLE4_TAUS = (0.2, 0.1, 0.05, 0.025, 0.0125)

#: E[(f_1 − f_2)² | s = 0] of the Table 1 setup, read off the paper's gap/τ (TABLES.md)
TABLE1_CONTRAST_SQ = 3.9


def _binary_gaussian_setup(W, B, d, dtype, b=None):
    """`(MoE, Teacher, Gaussian)`: a realizable binary router over `X ~ N(0, I_d)`."""
    router = LinearRouter(W, jnp.zeros(2, dtype) if b is None else b)
    experts = LinearExperts(B, jnp.zeros(2, dtype))
    law = Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))
    return MoE(router, experts), Teacher(router, experts), law


def table1_setup(*, d: int = 2, dtype=None):
    """Table 1 (§7.1): realizable two-expert problem with `E[(f_1 − f_2)² | s = 0] = 3.9`.

    `X ~ N(0, I_d)`, logits `(x_1, 0)` (so `Δ = |s|`, `s = x_1`), experts
    `f_1 = √3.9 · x_2`, `f_2 = 0`; the teacher is the hard predictor of the same
    router. The paper's exact contrast is not recoverable (TABLES.md); this
    choice matches its gap/τ level, and the checks are about shape.
    """
    dtype = dtype or jnp.result_type(float)
    W = jnp.zeros((2, d), dtype).at[0, 0].set(1.0)
    B = jnp.zeros((2, d), dtype).at[0, 1].set(math.sqrt(TABLE1_CONTRAST_SQ))
    return _binary_gaussian_setup(W, B, d, dtype)


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
    return _binary_gaussian_setup(W, B, d, dtype, b)


def table3_model(d: int = 5, *, dtype=None) -> ReducedModel:
    """The reduced model behind this toolkit's reproduction of Table 3 (§7.3).

    `Σ = I_d`, `u = e_1`, `β_0 = (1, …, 1)/√d`, teacher contrast
    `γ = 0.25 e_1 + 2.94 e_2` (almost tangent to the separator, with a small
    positive component along `u`, (6.8)), and student contrast `Δ = γ/4`
    around the best shared predictor `β_0`. The paper does not print its
    configuration; these values were chosen so that the population risk
    along `u`, `R = R_0 + C τ/‖φ‖ + O((τ/‖φ‖)³)`, has the `R_0 ≈ 1.224` and
    `C ≈ 0.98` that Table 3's risk and norm columns imply
    (`R_0 = |γ − Δ|²/4`, `C = φ(0)(2 ln 2 γ_⊥·Δ_⊥ − |Δ_⊥|²)` [X]). With
    `softhard.reduced.train_router`'s defaults it gives Table 3 to within a
    few per cent.

    Args:
        d: input dimension `≥ 2`.
        dtype: float dtype (default: JAX's default float).

    Returns:
        `ReducedModel`.
    """
    d = check_count(d, "d", 2)
    dtype = dtype or jnp.result_type(float)
    e = jnp.eye(d, dtype=dtype)
    gamma = 0.25 * e[0] + 2.94 * e[1]
    return reduced_model(e, e[0], jnp.ones(d, dtype) / math.sqrt(d), gamma, contrast=0.25)


def table4_setup(K: int = 3, *, rho=None, dtype=None):
    """Table 4 (top-2 routing, EQUATIONS.md §T [X]): a realizable top-2 problem.

    `K = 3` (the exact columns): `X ~ N(0, I_2)`, logits `a_j = u_jᵀx + b_j`
    with `u_j` at 90°, 210° and 330° and `b = (0.3, 0, −0.2)`, so the hard
    top-2 set drops the smallest logit and the interfaces `Γ_ij^2` are the
    three rays where the two smallest logits tie (T.11); experts
    `f_j = v_jᵀx + c_j` with distinct slopes and offsets. `K = 8`
    (Monte Carlo): `X ~ N(0, I_4)`, a fixed random linear router and expert
    bank (NumPy seed 8, so the set-up is the same on every machine). The
    teacher routes top-2 with the same router, experts and combine
    temperature `rho` (`None`: `ρ = ∞`, equal weights; `1.0`: renormalised
    softmax), so the problem is realizable and `L_0 = 0`.

    Args:
        K: 3 or 8.
        rho: combine temperature (T.4), `None` or `> 0`.
        dtype: float dtype (default: JAX's default float).

    Returns:
        `(model, teacher, law)`: a top-2 `MoE`, a top-2 `Teacher`, a `Gaussian`.
    """
    import numpy as np

    dtype = dtype or jnp.result_type(float)
    if K == 3:
        ang = np.deg2rad([90.0, 210.0, 330.0])
        W = np.stack([np.cos(ang), np.sin(ang)], axis=1)
        b = np.array([0.3, 0.0, -0.2])
        B = np.array([[1.0, 0.5], [-0.5, 1.0], [0.3, -1.0]])
        c = np.array([0.5, -0.2, 0.1])
    elif K == 8:
        rng = np.random.default_rng(8)
        W = rng.normal(size=(8, 4))
        b = 0.3 * rng.normal(size=8)
        B = rng.normal(size=(8, 4))
        c = 0.5 * rng.normal(size=8)
    else:
        raise ValueError(f"`K` must be 3 or 8 for the Table 4 setup, got {K!r}")
    d = W.shape[1]
    router = LinearRouter(jnp.asarray(W, dtype), jnp.asarray(b, dtype))
    experts = LinearExperts(jnp.asarray(B, dtype), jnp.asarray(c, dtype))
    law = Gaussian(jnp.zeros(d, dtype), jnp.eye(d, dtype=dtype))
    model = MoE(router, experts, k=2, combine_temperature=rho)
    teacher = Teacher(router, experts, k=2, combine_temperature=rho)
    return model, teacher, law
