"""The teacher side of Theorem 5.17: equivalence, recovery, misrouting, separation (§5).

For a hard-routed teacher (5.1) with cells `C_k`, these compare a student
with the teacher on a sample of the input law: `teacher_equivalence` (the
hard partitions up to relabelling, 5.10), `recovery_error` (5.16–5.17),
`misrouting_mass` (the confidently misrouted set, 5.11) and
`expert_separation` (the constants of Assumption 5.11, 5.9). Masses and
errors are sample means with standard errors (`softhard._stats.mean_estimate`).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._stats import Estimate, mean_estimate
from .._validate import (
    check_delta,
    check_dim,
    check_finite_params,
    check_permutation,
    check_positive,
    check_same_experts,
    check_x,
    input_dim,
)
from ..models import require_top1
from ..routing import expert_outputs, gates, logits

__all__ = [
    "TeacherEquivalence",
    "Recovery",
    "ExpertSeparation",
    "teacher_equivalence",
    "recovery_error",
    "misrouting_mass",
    "expert_separation",
]


class TeacherEquivalence(NamedTuple):
    """Hard-partition agreement with the teacher up to permutation (5.10, Thm 5.17).

    Attributes:
        permutation: `[K]` ints, `π(k)` = the student expert matched to teacher cell `k`.
        symmetric_difference: `Estimate` `[K]` of `P(C_k Δ C_π(k)(φ))`.
        total: `Estimate` of `Σ_k P(C_k Δ C_π(k)(φ))` (= 2 P(misrouted)).
        confusion: `[K, K]` `P(X ∈ C_k, k*(X; φ) = j)` (teacher `k`, student `j`).
    """

    permutation: np.ndarray  # [K]
    symmetric_difference: Estimate  # [K]
    total: Estimate  # []
    confusion: np.ndarray  # [K, K]


class Recovery(NamedTuple):
    """Teacher-recovery errors of a student (5.16–5.17).

    Attributes:
        permutation: `[K]`, `π(k)` = student expert matched to teacher cell `k`.
        expert_error: `Estimate` of `Σ_k E[(f_π(k) − f*_k)² 1_{C_k}]` (5.16).
        partition_error: `Estimate` of `Σ_k P(C_k Δ C_π(k)(φ))` (5.17).
        cell_errors: `[K, K]` matrix `E[(f_j − f*_k)² 1_{C_k}]` (teacher `k`, student `j`).
    """

    permutation: np.ndarray  # [K]
    expert_error: Estimate  # []
    partition_error: Estimate  # []
    cell_errors: np.ndarray  # [K, K]


class ExpertSeparation(NamedTuple):
    """The probabilistic expert-separation constants of Assumption 5.11 (5.9).

    Attributes:
        permutation: `[K]`, the matching `π` that minimises `ρ`.
        rho: `Estimate` of `ρ = max_{k, j ≠ π(k)} P(X ∈ C_k, |f_j − f*_k| < κ)`.
        table: `Estimate` `[K, K]` of `P(X ∈ C_k, |f_j(X) − f*_k(X)| < κ)`.
        kappa: the separation radius κ.
    """

    permutation: np.ndarray  # [K]
    rho: Estimate  # []
    table: Estimate  # [K, K]
    kappa: float


def _router_of(obj):
    return obj.router if hasattr(obj, "router") else obj


def _best_permutation(cost: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """`argmin_π Σ_k cost[k, π(k)]` (or `max_k`), by enumeration for K ≤ 8."""
    K = cost.shape[0]
    if K > 8:
        if reduce != "sum":
            raise ValueError(f"min-max matching is implemented for K <= 8, got K = {K}")
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError as err:  # pragma: no cover - scipy is a dev dependency
            raise ValueError(f"matching K = {K} > 8 experts needs scipy") from err
        return np.asarray(linear_sum_assignment(cost)[1])
    perms = np.array(list(itertools.permutations(range(K))))  # [K!, K]
    vals = cost[np.arange(K)[None, :], perms]  # [K!, K]
    score = vals.sum(1) if reduce == "sum" else vals.max(1)
    return perms[int(np.argmin(score))]


def _cells(router, teacher, x):
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    s = jnp.argmax(logits(_router_of(router), x), axis=-1)
    return t, s


def _check_perm(permutation, K):
    return None if permutation is None else check_permutation(permutation, K, "permutation")


def teacher_equivalence(router, teacher, x: jax.Array, *, permutation=None) -> TeacherEquivalence:
    """Agreement of the student's hard cells with the teacher's, up to relabelling.

    With teacher cells `C_k` (5.1) and the student's hard cells
    `C_j(φ) = {x : k*(x; φ) = j}` (5.10, lowest index wins ties (2.9)), the
    best matching `π` minimises `Σ_k P(C_k Δ C_π(k)(φ))`; the partition is
    teacher-equivalent up to permutation when all these masses are 0
    (Theorem 5.17). Masses are sample means over `x ~` the input law.

    Args:
        router: the student router, or an MoE-like model with `.router`.
        teacher: a `Teacher` (its `.router` defines `C_k`).
        x: `[N, d]` inputs drawn from the input law.
        permutation: optional fixed `[K]` matching (default: the best one).

    Returns:
        `TeacherEquivalence(permutation [K], symmetric_difference Estimate [K],
        total Estimate, confusion [K, K])`.
    """
    require_top1(teacher, "teacher_equivalence")
    x = check_x(x)
    t, s = _cells(router, teacher, x)
    K = int(logits(teacher.router, x[:1]).shape[1])
    Ks = int(logits(_router_of(router), x[:1]).shape[1])
    if Ks != K:
        raise ValueError(f"student has K = {Ks} experts but the teacher has K = {K}")
    T1 = jax.nn.one_hot(t, K, dtype=x.dtype)
    S1 = jax.nn.one_hot(s, K, dtype=x.dtype)
    conf = np.asarray(T1.T @ S1) / x.shape[0]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = _best_permutation(-conf, "sum")
    ind = jnp.abs(T1 - S1[:, perm])  # [N, K]: 1{x ∈ C_k Δ C_π(k)}
    return TeacherEquivalence(perm, mean_estimate(ind), mean_estimate(ind.sum(1)), conf)


def _check_pair(student, teacher, x, where: str) -> jax.Array:
    """The student and the teacher must share `K` and `d`, and `x` must be `[N, d]`."""
    check_same_experts(student, teacher, where, names=("model", "teacher"))
    x = check_x(x)
    return check_dim(x, input_dim(teacher), "x", "teacher")


def _teacher_outputs(model, teacher, x):
    f = expert_outputs(model.experts, x)  # [N, K] student
    fs = expert_outputs(teacher.experts, x)  # [N, K] teacher
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    fstar = jnp.take_along_axis(fs, t[:, None], axis=1)[:, 0]  # f*(x) (5.2)
    return f, fstar, t


def recovery_error(model, teacher, x: jax.Array, *, permutation=None) -> Recovery:
    """Teacher-recovery errors (5.16) and (5.17) of a student MoE.

    `Σ_k E[(f_π(k)(X) − f*_k(X))² 1{X ∈ C_k}]` (5.16) and
    `Σ_k P(C_k Δ C_π(k)(φ))` (5.17) for one matching `π`, by default the one
    minimising the expert error (5.16), the same `π` for both (as in the
    theorem). Theorem 5.17 predicts both are `O(τ + δ² + ρ)` / `O(τ + ρ)` at
    a global minimiser of `L_τ`.

    Args:
        model: the student (`.router`, `.experts`).
        teacher: a `Teacher`.
        x: `[N, d]` inputs from the input law.
        permutation: optional fixed `[K]` matching.

    Returns:
        `Recovery(permutation, expert_error, partition_error, cell_errors [K, K])`.
    """
    require_top1(model, "recovery_error")
    require_top1(teacher, "recovery_error")
    x = _check_pair(model, teacher, x, "recovery_error")
    check_finite_params(model, "model")
    f, fstar, t = _teacher_outputs(model, teacher, x)
    K = f.shape[1]
    T1 = jax.nn.one_hot(t, K, dtype=f.dtype)
    cost = np.asarray(jnp.einsum("nk,nj->kj", T1, (f - fstar[:, None]) ** 2)) / x.shape[0]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = _best_permutation(cost, "sum")
    matched = jnp.take_along_axis(f, jnp.asarray(perm)[t][:, None], axis=1)[:, 0]
    s = jnp.argmax(logits(model.router, x), axis=-1)
    mis = 2.0 * (s != jnp.asarray(perm)[t]).astype(f.dtype)
    return Recovery(perm, mean_estimate((matched - fstar) ** 2), mean_estimate(mis), cost)


def misrouting_mass(model, teacher, x: jax.Array, tau, delta, *, permutation=None) -> Estimate:
    """Mass of the confidently misrouted set `E_δ(π)` (5.11).

    `E_δ(π) = ∪_k {x ∈ C_k : π_j^τ(x) ≥ 1 − δ for some j ≠ π(k)}`: teacher
    cell `k` confidently routed (gate ≥ 1 − δ, δ < 1/2) to an expert other than
    its match. Lemma 5.16 bounds it by the excess risk:
    `L̄_τ ≥ (κ − 2Bδ)₊² (P(E_δ) − K(K−1)ρ)` (5.12–5.13).

    Args:
        model: the student (`.router`, `.experts`).
        teacher: a `Teacher`.
        x: `[N, d]` inputs; tau: scalar `> 0`; delta: `0 < δ < 1/2`.
        permutation: the matching `π` (default: `recovery_error`'s expert
            matching, an admissible matching in the sense of (5.9)).

    Returns:
        `Estimate` of `P(X ∈ E_δ(π))`.
    """
    require_top1(model, "misrouting_mass")
    require_top1(teacher, "misrouting_mass")
    x = _check_pair(model, teacher, x, "misrouting_mass")
    check_delta(delta)
    g = gates(logits(model.router, x), tau)  # [N, K]
    K = g.shape[1]
    perm = _check_perm(permutation, K)
    if perm is None:
        perm = recovery_error(model, teacher, x).permutation
    t = jnp.argmax(logits(teacher.router, x), axis=-1)
    wrong = 1.0 - jax.nn.one_hot(jnp.asarray(perm)[t], K, dtype=g.dtype)
    ind = jnp.any((g >= 1.0 - delta) & (wrong > 0), axis=1).astype(g.dtype)
    return mean_estimate(ind)


def expert_separation(model, teacher, x: jax.Array, kappa, *, permutation=None) -> ExpertSeparation:
    """The expert-separation constants of Assumption 5.11 (5.9).

    `table[k, j] = P(X ∈ C_k, |f_j(X) − f*_k(X)| < κ)`; a matching `π` is
    admissible with constant `ρ` when `table[k, j] ≤ ρ` for all `k` and
    `j ≠ π(k)`. Returns the matching with the smallest such `ρ`.

    Args:
        model: the student (`.experts`; `.router` unused).
        teacher: a `Teacher`.
        x: `[N, d]` inputs; kappa: separation radius `κ > 0`.
        permutation: optional fixed matching.

    Returns:
        `ExpertSeparation(permutation, rho Estimate, table Estimate [K, K], kappa)`.
    """
    require_top1(model, "expert_separation")
    require_top1(teacher, "expert_separation")
    x = _check_pair(model, teacher, x, "expert_separation")
    check_positive(kappa, "kappa")
    f, fstar, t = _teacher_outputs(model, teacher, x)
    K = f.shape[1]
    T1 = jax.nn.one_hot(t, K, dtype=f.dtype)
    close = (jnp.abs(f - fstar[:, None]) < kappa).astype(f.dtype)  # [N, K] over j
    per = T1[:, :, None] * close[:, None, :]  # [N, K(teacher), K(student)]
    table = mean_estimate(per)
    perm = _check_perm(permutation, K)
    off = np.asarray(table.value).copy()
    if perm is None:
        # cost of matching k -> j is the largest off-match entry in row k
        rowmax = np.array([[np.delete(off[k], j).max() for j in range(K)] for k in range(K)])
        perm = _best_permutation(rowmax, "max")
    mask = np.ones((K, K), bool)
    mask[np.arange(K), perm] = False
    flat_idx = int(np.argmax(np.where(mask, off, -np.inf)))
    k, j = divmod(flat_idx, K)
    rho = Estimate(table.value[k, j], table.stderr[k, j])
    return ExpertSeparation(perm, rho, table, float(kappa))
