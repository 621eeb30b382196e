"""Soft and hard predictors, risks and temperature sweeps (§2, §4).

`soft_risk` / `hard_risk` are the empirical objectives on the given sample:
differentiable scalars to `grad`. `risk_sweep` estimates the population soft
risk (2.5), hard risk (2.11) and their gap at many temperatures in one pass,
with standard errors, streaming over sample chunks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _gating, _tables
from ._stats import (
    Estimate,
    chunk_size_for,
    sample_axis_sharding,
    stream_chunks,
    stream_moments,
)
from ._trees import filter_jit
from ._validate import (
    check_delta,
    check_dim,
    check_finite_params,
    check_finite_rows,
    check_k,
    check_law_dim,
    check_positive,
    check_tau,
    check_taus,
    check_xy,
    input_dim,
    is_concrete,
    poisons,
)
from .models import is_top1, routing_of
from .routing import expert_outputs, gates, hard_gates, logits

__all__ = [
    "Estimate",
    "RiskSweep",
    "SweepDiagnostics",
    "diagnostic_sweep",
    "population_sweep",
    "soft_predict",
    "hard_predict",
    "soft_risk",
    "hard_risk",
    "risk_sweep",
]


class RiskSweep(NamedTuple):
    """Soft and hard risks over a temperature grid, with standard errors.

    Attributes:
        soft: `Estimate` of `L_τ` (2.5); value, stderr `[T]`.
        hard: `Estimate` of `L_0` (2.11); value, stderr scalars.
        gap: `Estimate` of `L_τ − L_0` from paired per-sample differences; `[T]`.
    """

    soft: Estimate  # [T]
    hard: Estimate  # []
    gap: Estimate  # [T]

    to_dict = _tables.to_dict
    __repr__ = _tables.table_repr


def _routing(model, K: int):
    """`(k, ρ, selection)` of `model`, with `k < K` checked against the logits' `K`."""
    k, rho, sel = routing_of(model)
    check_k(k, K, "model.k")
    return k, rho, sel


def _weights(model, a: jax.Array, tau) -> jax.Array:
    """Routing weights `[N, K]` of logits `a: [N, K]` (T.5): soft at `tau`, hard for `None`."""
    k, rho, sel = _routing(model, a.shape[1])
    s = a if sel is None else jax.vmap(sel)(a)
    return _gating.route(s, a, tau, k, rho)


@poisons(tau="tau")
def soft_predict(model, x: jax.Array, tau) -> jax.Array:
    """Soft predictor `f_τ(x) = Σ_k π_k^τ(x) f_k(x)` (2.4); top-k: T.5.

    With `model.k > 1` (or a combine temperature) the weights are
    `μ_j^τ c_j / Σ_l μ_l^τ c_l`: the soft top-k mask (T.3) times the combine
    weights (T.4), normalised.

    Args:
        model: a pytree with `.router` and `.experts` (e.g. `MoE`).
        x: `[N, d]` inputs.
        tau: scalar temperature `> 0`.

    Returns:
        `[N]` predictions.
    """
    check_tau(tau)
    a, f = logits(model.router, x), expert_outputs(model.experts, x)
    if is_top1(model):
        return jnp.sum(gates(a, tau) * f, -1)
    return jnp.sum(_weights(model, a, tau) * f, -1)


def hard_predict(model, x: jax.Array) -> jax.Array:
    """Hard predictor `f_0(x) = f_{k*(x)}(x)` (2.10), lowest index winning ties (2.9): `[N]`.

    Top-k (T.5): `Σ_{j∈S_k} c_j f_j / Σ_{j∈S_k} c_j` over the hard top-k set (T.2).
    """
    a, f = logits(model.router, x), expert_outputs(model.experts, x)
    if is_top1(model):
        return jnp.sum(hard_gates(a) * f, -1)
    return jnp.sum(_weights(model, a, None) * f, -1)


@poisons(tau="tau")
def soft_risk(model, x: jax.Array, y: jax.Array, tau) -> jax.Array:
    """Empirical soft risk `(1/N) Σ_n (y_n − f_τ(x_n))²` (2.5): a scalar objective.

    Args:
        model: a pytree with `.router` and `.experts`.
        x: `[N, d]`, y: `[N]`, tau: scalar `> 0`.
    """
    x, y = check_xy(x, y)
    return jnp.mean((y - soft_predict(model, x, tau)) ** 2)


def hard_risk(model, x: jax.Array, y: jax.Array) -> jax.Array:
    """Empirical hard risk `(1/N) Σ_n (y_n − f_0(x_n))²` (2.11): a scalar.

    Its gradient in the router parameters is zero almost everywhere (hard
    routing is locally constant on a sample); the population gradient is
    `softhard.hard_risk_gradient`.
    """
    x, y = check_xy(x, y)
    return jnp.mean((y - hard_predict(model, x)) ** 2)


# ----------------------------------------------------------------------------
# temperature sweeps
# ----------------------------------------------------------------------------


class SweepDiagnostics(NamedTuple):
    """Everything the fused sweep kernel measures, each an `Estimate`.

    Attributes:
        soft: `L_τ` (2.5), `[T]`.
        hard: `L_0` (2.11), scalar.
        gap: `L_τ − L_0`, paired, `[T]`.
        mass: top-two boundary mass `M(c τ) = P(Δ ≤ c τ)` (2.13), `[T]`; top-k:
            `M_k(c τ) = P(Δ_k ≤ c τ)` (T.7).
        ambiguity: `m_δ(τ) = P(max_k π_k^τ < 1 − δ)` (5.5), `[T]`; top-k:
            `P(min_{j∈S_k} μ_j^τ < 1 − δ)` (T.7).
        entropy: mean gate entropy `E[−Σ_k π_k^τ log π_k^τ]` in nats, `[T]`; top-k:
            of the normalised routing weights (T.5).
    """

    soft: Estimate  # [T]
    hard: Estimate  # []
    gap: Estimate  # [T]
    mass: Estimate  # [T]
    ambiguity: Estimate  # [T]
    entropy: Estimate  # [T]

    to_dict = _tables.to_dict
    __repr__ = _tables.table_repr


#: expert counts up to this are unrolled in the sweep kernel; larger ones use a scan
_UNROLL_K = 32


def _gate_sums(z, f, inv_tau, full: bool):
    """`S = Σ_k w_k`, `Σ_k w_k f_k` (and `Σ_k w_k z_k`), `w_k = exp(z_k/τ)`: each `[T, n]`.

    `z, f: [K, n]` (experts leading, samples contiguous), `inv_tau: [T, 1]`.
    Looping over the `K` rows keeps every operation an elementwise `[T, n]`
    update that XLA fuses and vectorises along the contiguous sample axis; the
    `[n, K]` layout with a minor-axis reduction over `K` runs several times
    slower on CPU (`scripts/bench.py`, case sweep_cpu).
    """

    def step(carry, zf):
        zk, fk = zf
        w = jnp.exp(zk[None, :] * inv_tau)  # [T, n]
        out = (carry[0] + w, carry[1] + w * fk[None, :])
        return out + ((carry[2] + w * zk[None, :]),) if full else out

    shape = (inv_tau.shape[0], z.shape[1])
    carry = tuple(jnp.zeros(shape, z.dtype) for _ in range(3 if full else 2))
    if z.shape[0] <= _UNROLL_K:
        for k in range(z.shape[0]):
            carry = step(carry, (z[k], f[k]))
        return carry
    return jax.lax.scan(lambda c, zf: (step(c, zf), None), carry, (z, f))[0]


def _topk_risk_sweep(s, a, f, y, taus, k: int, rho) -> RiskSweep:
    """Soft and hard top-k risks at every τ from the top `k + 1` order alone (T.3–T.6).

    Only the `k + 1` largest selection scores need an order (`k + 1` masked
    argmaxes, ties to the lowest index as T.2): with `v_0 ≥ … ≥ v_k` at
    indices `j_0, …, j_k` and the rest `L = {l ∉ j_0 … j_{k−1}}`, the tail
    sums of `_topk_chunk_quantities` are, at `r = k`,
    `R_k = Σ_{l∈L} e^{(s_l − v_k)/τ}`, `P_k = Σ_{l∈L} e^{(s_l − v_k)/τ} c_l`,
    `Q_k = Σ_{l∈L} e^{(s_l − v_k)/τ} c_l f_l` (every term `≤ 1`), and below it
    `R_r = 1 + g_{r+1} R_{r+1}`, `Q_r = c_{j_r} f_{j_r} + g_{r+1} Q_{r+1}` (likewise
    `P`) with `g_{r+1} = e^{(v_{r+1} − v_r)/τ} ≤ 1`. With `r*` the first
    `r ≤ k − 1` with `R_r ≥ k − r` (T.3's capped count),
    `Σ_l μ_l c_l f_l = Σ_{l<r*} c_{j_l} f_{j_l} + (k − r*) Q_{r*}/R_{r*}` (likewise
    `P`), and the soft predictor (T.5) is their ratio (`Q/k` for ρ = ∞). Cost
    per sample and τ: `K + k` exponentials, no sort.
    """
    n, K = a.shape
    cols = jnp.arange(K)[None, :]
    rest = jnp.ones((n, K), bool)  # L: not among the first r selected
    masked = s
    idx, vals = [], []
    for _ in range(k + 1):
        j = jnp.argmax(masked, axis=-1)  # [n], the lowest index among ties
        hit = cols == j[:, None]
        idx.append(j)
        vals.append(jnp.take_along_axis(s, j[:, None], axis=-1)[:, 0])
        if len(idx) <= k:
            rest = rest & ~hit
        masked = jnp.where(hit, -jnp.inf, masked)
    c = None if rho is None else jnp.exp(_gating.scaled(a, rho))  # [n, K], ≤ 1
    pick = lambda m, j: jnp.take_along_axis(m, j[:, None], axis=-1)[:, 0]
    f_top = [pick(f, j) for j in idx[:k]]
    c_top = None if c is None else [pick(c, j) for j in idx[:k]]
    if c is None:
        hard_pred = sum(f_top) / k
    else:
        hard_pred = sum(ci * fi for ci, fi in zip(c_top, f_top)) / sum(c_top)
    hard = (y - hard_pred) ** 2  # [n], the hard top-k predictor (T.5)
    if c is None:  # ρ = ∞: weights 1 in the weighted sums (XLA fuses those best; measured)
        c, c_top = jnp.ones_like(f), [jnp.ones_like(y)] * k
    inv = jnp.minimum(1.0 / taus, jnp.finfo(taus.dtype).max)[:, None]  # [T, 1]
    rel = jnp.where(rest, s - vals[k][:, None], -jnp.inf).T  # [K, n], ≤ 0 on L, −inf off it
    rows = (rel, (c * f).T, c.T)  # [K, n] each

    def step(carry, row):  # one expert: fused [T, n] updates, as the top-1 `_gate_sums`
        w = jnp.exp(row[0][None, :] * inv)  # [T, n]
        return (carry[0] + w, carry[1] + w * row[1][None, :], carry[2] + w * row[2][None, :])

    zero = jnp.zeros((inv.shape[0], n), rel.dtype)
    carry = (zero, zero, zero)
    if K <= _UNROLL_K:
        for m in range(K):
            carry = step(carry, tuple(r[m] for r in rows))
    else:
        carry = jax.lax.scan(lambda cr, row: (step(cr, row), None), carry, rows)[0]
    R, Q, P = carry  # the tail sums at r = k, [T, n]
    Rs, Qs, Ps = [None] * k, [None] * k, [None] * k
    for r in range(k - 1, -1, -1):
        g = jnp.exp((vals[r + 1] - vals[r])[None, :] * inv)  # [T, n], ≤ 1
        R = 1.0 + g * R
        Q = (c_top[r] * f_top[r])[None, :] + g * Q
        P = c_top[r][None, :] + g * P
        Rs[r], Qs[r], Ps[r] = R, Q, P
    num = den = chosen = None
    head_f = jnp.zeros_like(y)  # Σ_{l<r} c_{j_l} f_{j_l}, [n]
    head_c = jnp.zeros_like(y)  # Σ_{l<r} c_{j_l}
    for r in range(k):  # r* = the first r with R_r ≥ k − r; r = k − 1 always fits
        scale = (k - r) / Rs[r]
        n_r = head_f[None, :] + scale * Qs[r]
        d_r = head_c[None, :] + scale * Ps[r]
        if chosen is None:
            num, den = n_r, d_r
            chosen = Rs[r] >= (k - r) if r < k - 1 else jnp.ones(Rs[r].shape, bool)
        else:
            take = ~chosen & (Rs[r] >= (k - r)) if r < k - 1 else ~chosen
            num, den = jnp.where(take, n_r, num), jnp.where(take, d_r, den)
            chosen = chosen | take
        head_f = head_f + c_top[r] * f_top[r]
        head_c = head_c + c_top[r]
    pred = num / den  # T.5: Σ μ c f / Σ μ c
    soft = (y[None, :] - pred) ** 2  # [T, n]
    return RiskSweep(soft=soft, hard=hard, gap=soft - hard[None, :])


def _topk_chunk_quantities(model, taus, x, y, *, full: bool, mass_factor=2.0, delta=0.1):
    """`_chunk_quantities` for top-k routing or a combine temperature (T.3–T.7).

    The selection scores are sorted once per sample (τ-independent); at each
    τ the soft top-k mask (T.3) follows from the `K − 1` consecutive sorted
    gaps `g_m = exp((s_(m) − s_(m−1))/τ) ≤ 1`: the tail sums relative to their
    head `R_r = Σ_{l≥r} e^{(s_(l) − s_(r))/τ} = 1 + g_{r+1} R_{r+1}` give the
    capped count `r* = min{r : R_r ≥ k − r}`, and the uncapped entries are
    `(k − r*) E_l / R_{r*}` with `E_l = Π_{m=r*+1}^{l} g_m`. So the sweep costs
    `K − 1` exponentials per sample and τ, like the top-1 kernel; the objective
    path (`_gating.topk_mask`, used by `soft_risk`) is an independent
    implementation that the tests compare it with. Diagnostics: `M_k(cτ)`
    (T.7), the top-k ambiguity `P(min_{j∈S_k} μ_j^τ < 1 − δ)` (T.7; the
    smallest selected entry sits at sorted position `k − 1`) and the entropy
    of the normalised routing weights.
    """
    a = jax.vmap(model.router)(x)  # [n, K]
    f = jax.vmap(model.experts)(x)  # [n, K]
    k, rho, sel = routing_of(model)
    s = a if sel is None else jax.vmap(sel)(a)
    if not full:
        return _topk_risk_sweep(s, a, f, y, taus, k, rho)
    K = a.shape[1]
    order = jnp.argsort(-s, axis=-1, stable=True)
    ss = jnp.take_along_axis(s, order, axis=-1).T  # [K, n], descending
    fs = jnp.take_along_axis(f, order, axis=-1).T
    if rho is None:
        log_c = jnp.zeros_like(ss)
    else:
        log_c = jnp.take_along_axis(_gating.scaled(a, rho), order, axis=-1).T  # log c ≤ 0
    cs = jnp.exp(log_c)  # [K, n]
    c_sel, cf_sel = jnp.sum(cs[:k], 0), jnp.sum(cs[:k] * fs[:k], 0)
    hard = (y - cf_sel / c_sel) ** 2  # [n], the hard top-k predictor (T.5)
    inv_tau = jnp.minimum(1.0 / taus, jnp.finfo(taus.dtype).max)[:, None]  # [T, 1]
    gaps = [None] + [jnp.exp((ss[m] - ss[m - 1])[None, :] * inv_tau) for m in range(1, K)]
    ones = jnp.ones((taus.shape[0], x.shape[0]), ss.dtype)
    R = [None] * K
    R[K - 1] = ones
    for r in range(K - 2, -1, -1):
        R[r] = 1.0 + gaps[r + 1] * R[r + 1]
    r_star, R_star = jnp.full(ones.shape, k - 1, jnp.int32), R[k - 1]
    for r in range(k - 2, -1, -1):
        fits = R[r] >= (k - r)
        r_star, R_star = jnp.where(fits, r, r_star), jnp.where(fits, R[r], R_star)
    scale = (k - r_star).astype(ss.dtype) / R_star  # [T, n]
    U = F = UlogU = jnp.zeros_like(ones)
    E = ones
    s_star = jnp.zeros_like(ones)
    min_sel = ones
    for pos in range(K):
        at_star = r_star == pos
        E = jnp.where(at_star, 1.0, E * gaps[pos]) if pos else E
        mu = jnp.where(pos < r_star, 1.0, scale * E)
        u = mu * cs[pos][None, :]
        U, F = U + u, F + u * fs[pos][None, :]
        if full:
            s_star = jnp.where(at_star, ss[pos][None, :], s_star)
            log_mu = jnp.where(
                pos < r_star, 0.0, jnp.log(scale) + (ss[pos][None, :] - s_star) * inv_tau
            )
            UlogU = UlogU + jnp.where(u > 0, u * (log_mu + log_c[pos][None, :]), 0.0)
            if pos == k - 1:
                min_sel = mu
    soft = (y[None, :] - F / U) ** 2  # [T, n]
    if not full:
        return RiskSweep(soft=soft, hard=hard, gap=soft - hard[None, :])
    ent = jnp.log(U) - UlogU / U  # entropy of w = u / U
    amb = (min_sel < 1.0 - delta).astype(soft.dtype)
    margin = ss[k - 1] - ss[k]  # Δ_k (T.1), [n]
    mass = (margin[None, :] <= mass_factor * taus[:, None]).astype(soft.dtype)
    return SweepDiagnostics(soft, hard, soft - hard[None, :], mass, amb, ent)


def _chunk_quantities(model, taus, x, y, *, full: bool, mass_factor=2.0, delta=0.1):
    """Per-sample quantities of one chunk at every temperature (sample axis last).

    Logits and expert outputs are computed once; every temperature reads them
    in the same pass. Per (sample, τ) the only transcendental work is the `K`
    exponentials `w_k = exp((a_k − a_max)/τ)` (the winner's is exactly 1), and,
    for the full diagnostics, one logarithm: with `S = Σ_k w_k`,
    `max_k π_k = 1/S` and the entropy is `log S − Σ_k w_k (a_k − a_max)/τ / S`.
    """
    if not is_top1(model):
        return _topk_chunk_quantities(
            model, taus, x, y, full=full, mass_factor=mass_factor, delta=delta
        )
    # experts leading, samples contiguous, straight from the batched router and
    # experts (`out_axes=1`): transposing `[n, K]` outputs instead let XLA fuse the
    # transpose and `a − a_max` into the kernel, recomputed with strided reads for
    # every temperature (about 25 % of a sweep; scripts/bench.py, case sweep_cpu)
    a = jax.vmap(model.router, out_axes=1)(x)  # [K, n]
    f = jax.vmap(model.experts, out_axes=1)(x)  # [K, n]
    z = a - jnp.max(a, axis=0, keepdims=True)  # [K, n], ≤ 0
    f_hard = jnp.take_along_axis(f, jnp.argmax(a, axis=0)[None, :], axis=0)[0]
    hard = (y - f_hard) ** 2  # [n]
    # 1/τ capped at the largest float so that the winner's 0 · (1/τ) stays 0 for
    # subnormal τ (the other weights still underflow to exactly 0)
    inv_tau = jnp.minimum(1.0 / taus, jnp.finfo(taus.dtype).max)[:, None]  # [T, 1]
    sums = _gate_sums(z, f, inv_tau, full)
    S = sums[0]
    soft = (y[None, :] - sums[1] / S) ** 2  # [T, n]
    if not full:
        return RiskSweep(soft=soft, hard=hard, gap=soft - hard[None, :])
    # entropy −Σ π log π with log π_k = z_k/τ − log S; 0·log 0 = 0 since w_k z_k → 0
    ent = jnp.log(S) - sums[2] * inv_tau / S
    amb = (S * (1.0 - delta) > 1.0).astype(S.dtype)  # max gate 1/S < 1 − δ
    top2 = jax.lax.top_k(a.T, 2)[0]
    margin = top2[:, 0] - top2[:, 1]  # Δ (2.6), [n]
    mass = (margin[None, :] <= mass_factor * taus[:, None]).astype(soft.dtype)
    return SweepDiagnostics(soft, hard, soft - hard[None, :], mass, amb, ent)


@filter_jit
def _sweep(model, x, y, taus, chunk, full, mesh=None, axis_names=None, mass_factor=2.0, delta=0.1):
    # filter_jit: the model's non-array leaves (an equinox activation, a flax
    # module's static fields) and the Python arguments are static; arrays traced
    def fn(xc, yc):
        q = _chunk_quantities(model, taus, xc, yc, full=full, mass_factor=mass_factor, delta=delta)
        # non-finite sample rows, counted in the same pass that reads the chunk
        bad = ~(jnp.all(jnp.isfinite(xc), axis=-1) & jnp.isfinite(yc))
        return q, bad.astype(yc.dtype)

    out, bad = stream_moments(fn, (x, y), chunk, mesh=mesh, axis_names=axis_names)
    return out, bad.value


def _refuse_nonfinite(out, bad, x, y):
    """`out`, or the `check_finite_rows` error when the sweep counted a non-finite row."""
    if is_concrete(bad) and float(bad) > 0:
        check_finite_rows(x, "x", "sweeping")
        check_finite_rows(y[:, None], "y", "sweeping")
    return out


def _shard_like(x, *others):
    """Sharding of the sample axis of `x` (or None), with `others` placed to match."""
    sharded = sample_axis_sharding(x)
    if sharded is None:
        return None, others
    n_dev = _n_shards(sharded)
    if x.shape[0] % n_dev:
        raise ValueError(
            f"`x` is sharded over {n_dev} devices; its sample axis ({x.shape[0]}) must be a "
            "multiple of that"
        )
    from jax.sharding import NamedSharding, PartitionSpec

    mesh, names = sharded
    spec = PartitionSpec(names if len(names) > 1 else names[0])
    placed = tuple(jax.device_put(o, NamedSharding(mesh, spec)) for o in others)
    return sharded, placed


def _prepare_sweep(model, x, y, taus, chunk_size, per_tau_cost: int):
    x, y = check_xy(x, y)
    check_dim(x, input_dim(model.router), "x")
    taus = check_taus(taus)
    check_finite_params(model, "model")
    dtype = jnp.result_type(x.dtype, y.dtype, float)
    x, y, taus = x.astype(dtype), y.astype(dtype), taus.astype(dtype)
    K = jax.eval_shape(model.router, jax.ShapeDtypeStruct(x.shape[1:], dtype)).shape
    if len(K) != 1 or K[0] < 2:
        raise ValueError(f"`model.router` must return logits [K] with K >= 2, got shape {K}")
    _routing(model, K[0])
    sharded, (y,) = _shard_like(x, y)
    n_local = x.shape[0] if sharded is None else x.shape[0] // _n_shards(sharded)
    chunk = chunk_size_for(n_local, taus.shape[0] * K[0] * per_tau_cost, chunk_size)
    mesh_args = {} if sharded is None else {"mesh": sharded[0], "axis_names": sharded[1]}
    return x, y, taus, chunk, mesh_args


@poisons(taus="tau")
def risk_sweep(model, x: jax.Array, y: jax.Array, taus: jax.Array, *, chunk_size=None) -> RiskSweep:
    """Soft risk, hard risk and gap at every temperature, with standard errors.

    Estimates the population risks `L_τ` (2.5), `L_0` (2.11) and `L_τ − L_0`
    (4.5) by sample means over `(x, y)`. Logits and expert outputs are computed
    once per chunk and all `T` temperatures are evaluated from them in the same
    pass; chunks are streamed through a `lax.fori_loop`, so memory beyond the
    inputs does not grow with `N`. The gap's standard error comes from the
    paired per-sample differences.

    If `x` is sharded along its sample axis over several devices
    (`jax.sharding.NamedSharding` with `PartitionSpec(axis)`), each device
    streams over its own shard and the moments are merged across devices; the
    result equals the single-device one up to reduction order.

    Args:
        model: a pytree with `.router` and `.experts` (e.g. `MoE`).
        x: `[N, d]` inputs; y: `[N]` targets.
        taus: `[T]` temperatures `> 0`.
        chunk_size: samples per chunk (default: about 2^21 / (T K) elements).

    Returns:
        `RiskSweep(soft, hard, gap)`: `soft` and `gap` of shape `[T]`, `hard` scalar.
    """
    x, y, taus, chunk, mesh_args = _prepare_sweep(model, x, y, taus, chunk_size, 1)
    return _refuse_nonfinite(*_sweep(model, x, y, taus, chunk, False, **mesh_args), x, y)


@poisons(taus="tau", mass_factor="positive", delta="delta")
def diagnostic_sweep(
    model,
    x: jax.Array,
    y: jax.Array,
    taus: jax.Array,
    *,
    mass_factor=2.0,
    delta=0.1,
    chunk_size=None,
) -> SweepDiagnostics:
    """The fused sweep: risks, gap, boundary mass, ambiguity mass and gate entropy.

    One pass over the sample computes, at every temperature, the soft risk
    (2.5), the paired gap `L_τ − L_0`, the top-two boundary mass
    `M(c τ) = P(Δ ≤ c τ)` (2.13) with `c = mass_factor`, the ambiguity mass
    `m_δ(τ)` (5.5) and the mean gate entropy (nats). Memory traffic does not
    grow with `T`: each chunk's logits and expert outputs are read once and
    the extra quantities reuse the softmax normaliser (no extra
    exponentials). Streams over chunks and shards like `risk_sweep`.

    Args:
        model: a pytree with `.router` and `.experts`.
        x: `[N, d]`; y: `[N]`; taus: `[T]` temperatures `> 0`.
        mass_factor: `c > 0` in `M(c τ)` (TABLES.md uses `c = 2`).
        delta: `0 < δ < 1/2` for the ambiguity mass.
        chunk_size: samples per chunk.

    Returns:
        `SweepDiagnostics`, each field an `Estimate` (`[T]`; `hard` scalar).
    """
    check_delta(delta)
    check_positive(mass_factor, "mass_factor")
    x, y, taus, chunk, mesh_args = _prepare_sweep(model, x, y, taus, chunk_size, 2)
    out, bad = _sweep(
        model,
        x,
        y,
        taus,
        chunk,
        True,
        mass_factor=jnp.asarray(mass_factor, x.dtype),  # traced: poisoned, never concretised
        delta=jnp.asarray(delta, x.dtype),
        **mesh_args,
    )
    return _refuse_nonfinite(out, bad, x, y)


@filter_jit
def _population_sweep(model, target, law, taus, key, n, chunk, full, mass_factor, delta):
    def quantities(i):
        x, y = target.sample(jax.random.fold_in(key, i), law, chunk)
        x, y = x.astype(taus.dtype), y.astype(taus.dtype)
        return _chunk_quantities(model, taus, x, y, full=full, mass_factor=mass_factor, delta=delta)

    return stream_chunks(quantities, n, chunk)


@poisons(taus="tau", mass_factor="positive", delta="delta")
def population_sweep(
    model,
    target,
    law,
    taus: jax.Array,
    *,
    key: jax.Array,
    n: int,
    diagnostics: bool = False,
    mass_factor=2.0,
    delta=0.1,
    chunk_size=None,
):
    """`risk_sweep` / `diagnostic_sweep` on `n` fresh draws, sampled chunk by chunk.

    Chunk `i` (of `chunk_size` rows) is drawn from `jax.random.fold_in(key, i)`
    inside the streaming loop, the last chunk's rows past `n` masked out, so no
    `[N, d]` array is ever materialised: memory is one chunk,
    whatever `n` (a sweep over 10^8 samples runs in the memory of 10^5).

    Args:
        model: a pytree with `.router` and `.experts`.
        target: anything with `.sample(key, law, n) -> (x, y)` (`Teacher`, `LinearTarget`).
        law: input law with `.sample(key, n)`.
        taus: `[T]` temperatures `> 0`.
        key: PRNG key; the same key gives the same result.
        n: number of samples.
        diagnostics: if True return `SweepDiagnostics`, else `RiskSweep`.
        mass_factor, delta: as in `diagnostic_sweep`.
        chunk_size: samples per chunk.

    Returns:
        `RiskSweep` or `SweepDiagnostics` of `Estimate`s.
    """
    taus = check_taus(taus)
    check_finite_params(model, "model")
    check_delta(delta)
    check_positive(mass_factor, "mass_factor")
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"`n` must be an integer >= 2, got {n!r}")
    dtype = jnp.result_type(taus.dtype, float)
    check_law_dim(law, input_dim(model.router), "model.router")
    if hasattr(target, "router"):
        check_law_dim(law, input_dim(target.router), "target.router")
    K = jax.eval_shape(model.router, jax.ShapeDtypeStruct((law.dim,), dtype)).shape
    if len(K) != 1 or K[0] < 2:
        raise ValueError(f"`model.router` must return logits [K] with K >= 2, got shape {K}")
    _routing(model, K[0])
    chunk = chunk_size_for(int(n), taus.shape[0] * K[0] * (2 if diagnostics else 1), chunk_size)
    return _population_sweep(
        model,
        target,
        law,
        taus.astype(dtype),
        key,
        int(n),
        chunk,
        bool(diagnostics),
        jnp.asarray(mass_factor, dtype),
        jnp.asarray(delta, dtype),
    )


def _n_shards(sharded) -> int:
    mesh, names = sharded
    return int(np.prod([mesh.shape[a] for a in names]))
