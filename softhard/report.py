"""Router reports from logits alone, per layer (§2, §3, §4, T.1–T.10).

`router_report(logits, k=)` answers, from a layer's router logits `[N, K]`
only, how far the router is from hard top-k routing: the top-k margin `Δ_k`
(T.1) and its law (quantiles, histogram, exact ties, the boundary-mass
profile `M_k(w) = P(Δ_k ≤ w)` of T.7 and its power-law tail fit, 4.4), over
a temperature grid the gate discrepancy `E‖μ^τ − μ^0‖_1` (the expert-free
part of the soft–hard gap) with its bound `2(K − k) E[e^{−Δ_k/τ}]` (T.8), the
ambiguity mass `m_δ^(k)(τ)` (T.7) and the gate entropy, the expert load, and
the T.10 certificate when output bounds are given.

The logits are streamed: the rows are sliced chunk by chunk on the host (a
NumPy memmap of 10^8 rows is never read whole), each chunk goes to JAX, and
only sufficient statistics come back (counts for a fixed width grid and a
margin histogram, per-chunk means and centred second moments merged in
float64 by Chan's update). A first pass over an evenly spread subsample (the
pilot) picks the default width grid, the histogram edges and the default τ
grid from the margin's quantiles. Rows with a NaN or inf are counted and
reported (`nonfinite`), and every other figure is over the finite rows only:
they are never dropped silently nor counted inside or outside a layer.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _gating, _tables
from ._stats import Estimate, binomial_estimate, chunk_size_for
from ._validate import (
    check_delta,
    check_k,
    check_nonnegative,
    check_taus,
    check_width,
    inv_temperature,
)
from .boundary import MarginTail, fit_tail_profile, tail_widths
from .certificate import soft_hard_bound
from .routing import hard_gates

__all__ = [
    "RouterReport",
    "router_report",
    "router_reports",
    "router_summary",
    "load_layers",
    "LOGITS_SUFFIXES",
    "QUANTILE_LEVELS",
]

#: the file formats `load_layers` reads
LOGITS_SUFFIXES = (".npy", ".npz", ".safetensors")
#: margin quantiles reported
QUANTILE_LEVELS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
#: rows of the pilot subsample (64 evenly spread contiguous blocks)
PILOT_ROWS = 1 << 16
_PILOT_BLOCKS = 64
#: geometric bins of the margin histogram (plus an underflow and an overflow bin)
HIST_BINS = 1024


class RouterReport(NamedTuple):
    """One layer's report from its logits (`router_report`); `.to_dict()`, a table `repr`.

    Every fraction is over the `n_finite` finite rows unless it says otherwise.

    Attributes:
        n: rows in the input, finite or not.
        n_finite: rows whose `K` logits are all finite (the sample of every figure).
        K: experts; k: experts per input (top-k, T.2).
        nonfinite: `Estimate` of the fraction of all `n` rows holding NaN or inf.
        ties: `Estimate` of the atom `P(Δ_k = 0)` (exact ties of the k-th and (k+1)-th logit).
        atom: whether the ties are an atom of the margin law, not rounding: `True` when
            they significantly outnumber the rows with `0 < Δ_k ≤ ulp` (one unit in the
            last place of the k-th logit), `ties > near + 3 sqrt(near) + 3`. Rounding a
            continuous law to floats ties about as many rows as it leaves one ulp apart;
            a real atom (ReLU routers, quantised logits) ties far more.
        near_ties: rows with `0 < Δ_k ≤ ulp`, the yardstick of `atom`.
        quantile_levels: `[Q]` levels `p`; margin_quantiles: `Estimate` `[Q]` of the
            `p`-quantiles of `Δ_k`, from the histogram (stderr: half the distribution-free
            interval `q(p ± sqrt(p(1−p)/n))`); quantile_resolution: the relative bin width.
        margin_min: smallest positive margin; margin_max: largest margin (both exact).
        hist_edges: `[B+1]` geometric bin edges `e_0 < … < e_B`; hist_counts: `[B+2]`
            counts of `0 < Δ_k < e_0`, `e_{i−1} ≤ Δ_k < e_i`, `Δ_k ≥ e_B` (ties apart).
        widths: `[W]` widths; mass: `Estimate` `[W]` of `M_k(w) = P(Δ_k ≤ w)` (T.7).
        mass_at_1: `Estimate` of `M_k(1)`, the mass within one logit unit (layer summaries).
        tail: `MarginTail` fit `M_k(w) ≈ C_m w^α` (4.4) with `status`, or `None`;
            tail_note: why there is no fit, or what the status means.
        taus: `[T]` temperatures; delta: the δ of the ambiguity mass.
        gate_discrepancy: `Estimate` `[T]` of `E‖μ^τ − μ^0‖_1` (T.3 vs T.2), exact per row.
        gate_bound: `Estimate` `[T]` of `2(K − k) E[e^{−Δ_k/τ}]`, its bound (T.8).
        ambiguity: `Estimate` `[T]` of `m_δ^(k)(τ) = P(min_{j∈S_k} μ_j^τ < 1 − δ)` (T.7).
        entropy: `Estimate` `[T]` of the entropy of the routing weights `μ^τ/k` (nats).
        selection: `Estimate` `[K]` of `P(j ∈ S_k)`, the hard selection fraction per expert.
        soft_load: `Estimate` `[T, K]` of `E[μ_j^τ]`.
        dead_experts: `[D]` indices of experts never selected in the sample.
        coselection: `Estimate` `[K, K]` of `P(i, j ∈ S_k)` (k > 1), else `None`.
        certificate: `[T]` the T.10 bound on `|L_τ − L_0|`, or `None`.
        statement: which statement the report makes: the T.10 certificate, the
            gate-level T.8 statement alone, or why the certificate was refused.
        bounds: `(B_Y, B_f)` as given, or `None`.
        notes: tuple of warnings (non-finite rows, atoms, misfits, dead experts).
    """

    n: int
    n_finite: int
    K: int
    k: int
    nonfinite: Estimate  # []
    ties: Estimate  # []
    atom: bool
    near_ties: int
    quantile_levels: np.ndarray  # [Q]
    margin_quantiles: Estimate  # [Q]
    quantile_resolution: float
    margin_min: float
    margin_max: float
    hist_edges: np.ndarray  # [B+1]
    hist_counts: np.ndarray  # [B+2]
    widths: np.ndarray  # [W]
    mass: Estimate  # [W]
    mass_at_1: Estimate  # []
    tail: MarginTail | None
    tail_note: str
    taus: np.ndarray  # [T]
    delta: float
    gate_discrepancy: Estimate  # [T]
    gate_bound: Estimate  # [T]
    ambiguity: Estimate  # [T]
    entropy: Estimate  # [T]
    selection: Estimate  # [K]
    soft_load: Estimate  # [T, K]
    dead_experts: np.ndarray  # [D]
    coselection: Estimate | None  # [K, K]
    certificate: np.ndarray | None  # [T]
    statement: str
    bounds: tuple | None
    notes: tuple

    to_dict = _tables.to_dict
    __repr__ = _tables.table_repr
    __str__ = _tables.table_repr


# ----------------------------------------------------------------------------
# input checks and chunking
# ----------------------------------------------------------------------------


def _check_logits_array(a, name: str = "logits"):
    """`a` must be a 2-D array `[N, K]` of real numbers with `N ≥ 1`, `K ≥ 2` (not read)."""
    shape, dtype = getattr(a, "shape", None), getattr(a, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"`{name}` must be an array [N, K] of logits, got {type(a).__name__}")
    if len(shape) != 2:
        raise ValueError(
            f"`{name}` must have shape [N, K] (tokens × experts), got shape {tuple(shape)}; "
            "flatten leading axes with .reshape(-1, K)"
        )
    if shape[1] < 2:
        raise ValueError(f"`{name}` needs K >= 2 experts, got shape {tuple(shape)}")
    if shape[0] < 1:
        raise ValueError(f"`{name}` must hold at least one row, got shape {tuple(shape)}")
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not real or jnp.issubdtype(dtype, jnp.bool_):
        raise ValueError(f"`{name}` must hold real numbers (a float dtype), got dtype {dtype}")
    return a


def _work_dtype(dtype):
    """The dtype a chunk is computed in: float32, or float64 when given and enabled."""
    if np.dtype(dtype) == np.float64 and jax.config.jax_enable_x64:
        return np.float64
    return np.float32


def _rows(a, start: int, stop: int, dtype) -> np.ndarray | jax.Array:
    """Rows `start:stop` of `a` (NumPy, memmap or JAX) in `dtype`, on the host for NumPy input."""
    if isinstance(a, jax.Array):
        return a[start:stop].astype(dtype)
    return np.asarray(a[start:stop]).astype(dtype, copy=False)


def _pilot(a, dtype) -> np.ndarray:
    """An evenly spread subsample of at most `PILOT_ROWS` rows, `[P, K]` (64 contiguous blocks)."""
    n = a.shape[0]
    if n <= PILOT_ROWS:
        return np.asarray(_rows(a, 0, n, dtype))
    block = PILOT_ROWS // _PILOT_BLOCKS
    starts = np.linspace(0, n - block, _PILOT_BLOCKS).astype(np.int64)
    return np.concatenate([np.asarray(_rows(a, int(s), int(s) + block, dtype)) for s in starts])


def _np_margin(a: np.ndarray, k: int) -> np.ndarray:
    """Δ_k (T.1) of the finite rows of `a: [P, K]`, float64 (the pilot only)."""
    a = a[np.all(np.isfinite(a), axis=1)]
    s = -np.sort(-a.astype(np.float64), axis=1)
    return s[:, k - 1] - s[:, k]


def _hist_edges(margin: np.ndarray) -> np.ndarray:
    """`HIST_BINS + 1` geometric edges from a decade below the smallest positive pilot margin."""
    pos = margin[margin > 0]
    if pos.size < 2 or not pos.max() > pos.min():
        lo, hi = 1e-8, 1e8
    else:
        lo, hi = pos.min() / 10.0, pos.max() * 10.0
    return np.geomspace(lo, hi, HIST_BINS + 1)


def _default_taus(margin: np.ndarray) -> np.ndarray:
    """Seven temperatures from 10^-3 to 1 times the median margin (one digit), and τ = 1."""
    pos = margin[margin > 0]
    scale = float(np.median(pos)) if pos.size else 1.0
    scale = float(f"{scale:.1g}")
    taus = np.unique(np.concatenate([np.geomspace(1e-3, 1.0, 7) * scale, [1.0]]))
    return np.asarray([float(f"{t:.3g}") for t in taus])


# ----------------------------------------------------------------------------
# the per-chunk statistics (jit) and their float64 merge on the host
# ----------------------------------------------------------------------------


class _Mom(NamedTuple):
    n: np.ndarray  # [...] counts
    mean: np.ndarray  # [...]
    m2: np.ndarray  # [...] centred second moments


def _masked_moments(values: jax.Array, mask: jax.Array):
    """`(n, mean, m2)` of `values: [..., c]` over the rows where `mask: [c]`, two-pass."""
    m = jnp.broadcast_to(mask.astype(values.dtype), values.shape)
    cnt = jnp.sum(mask.astype(values.dtype))
    mean = jnp.sum(values * m, axis=-1) / jnp.maximum(cnt, 1)
    m2 = jnp.sum(((values - mean[..., None]) * m) ** 2, axis=-1)
    return jnp.broadcast_to(cnt, mean.shape), mean, m2


def _combine(acc: _Mom | None, n, mean, m2) -> _Mom:
    """Chan's update of float64 host moments `acc` by one chunk's `(n, mean, m2)`."""
    n, mean, m2 = (np.asarray(v, np.float64) for v in (n, mean, m2))
    if acc is None:
        return _Mom(n, mean, m2)
    tot = acc.n + n
    w = np.where(tot > 0, n / np.maximum(tot, 1), 0.0)
    d = mean - acc.mean
    return _Mom(tot, acc.mean + d * w, acc.m2 + m2 + d**2 * acc.n * w)


def _to_estimate(m: _Mom) -> Estimate:
    var = m.m2 / np.maximum(m.n - 1, 1)
    return Estimate(m.mean, np.sqrt(var / np.maximum(m.n, 1)))


@functools.partial(jax.jit, static_argnames=("k",))
def _chunk_stats(a, rows_ok, widths, edges, taus, delta, *, k):
    """Sufficient statistics of one chunk `a: [c, K]`; `rows_ok: [c]` masks the padding."""
    K = a.shape[1]
    finite = jnp.all(jnp.isfinite(a), axis=1)
    ok = rows_ok & finite
    a = jnp.where(ok[:, None], a, jnp.zeros((), a.dtype))
    top = jax.lax.top_k(a, k + 1)[0]
    d = top[:, k - 1] - top[:, k]  # Δ_k (T.1), [c]
    okf = ok.astype(a.dtype)
    count = functools.partial(jnp.sum, dtype=jnp.int32)
    nb = edges.shape[0]
    idx = jnp.searchsorted(edges, d, side="right")  # 0 … B+1
    idx = jnp.where(d == 0, nb + 1, idx)
    idx = jnp.where(ok, idx, nb + 2)
    hist = jnp.zeros(nb + 3, jnp.int32).at[idx].add(1)
    # sort each row once for every τ (T.3 needs the order, not the values / τ)
    parts = _gating.topk_parts(a) if k > 1 else None
    hard = hard_gates(a, k=1) if k == 1 else (parts.rank < k).astype(a.dtype)  # μ^0 (T.2)
    hard_ok = hard * okf[:, None]
    out = {
        "n": count(ok),
        "nonfinite": count(rows_ok & ~finite),
        "ties": count(ok & (d == 0)),
        # 0 < Δ_k ≤ one ulp of the k-th logit: as many as rounding alone would tie
        "near": count(
            ok & (d > 0) & (d <= jnp.abs(jnp.nextafter(top[:, k - 1], jnp.inf) - top[:, k - 1]))
        ),
        "below": count(ok[:, None] & (d[:, None] <= widths[None, :]), axis=0),
        "below1": count(ok & (d <= 1)),
        "hist": hist[: nb + 1],
        "dmin": jnp.min(jnp.where(ok & (d > 0), d, jnp.inf)),
        "dmax": jnp.max(jnp.where(ok, d, -jnp.inf)),
        "selected": count(hard_ok > 0, axis=0),
    }
    if k > 1:
        out["cosel"] = jnp.einsum("ci,cj->ij", hard_ok, hard).astype(jnp.int32)

    def per_tau(tau):
        # μ^τ (T.3), [c, K]; the τ grid is checked on the host (router_report)
        mu = _gating.softmax_gates(a, tau) if k == 1 else _gating.topk_mask_of(parts, tau, k)
        # ‖μ^τ − μ^0‖_1 = 2 Σ_{j∉S_k} μ_j^τ (rows sum to k, μ ≤ 1): the small entries keep
        # their relative precision, where 1 − μ_j on S_k cancels (float32 at τ ≪ the logits)
        disc = 2.0 * jnp.sum(jnp.where(hard > 0, jnp.zeros((), mu.dtype), mu), axis=1)
        bound = 2.0 * (K - k) * jnp.exp(-d * inv_temperature(tau, a.dtype))  # T.8
        low = jnp.min(jnp.where(hard > 0, mu, jnp.inf), axis=1)
        wts = mu / k
        ent = -jnp.sum(jax.scipy.special.xlogy(wts, wts), axis=1)
        vals = jnp.stack([disc, bound, ent])  # [3, c]
        return (
            _masked_moments(vals, ok),
            _masked_moments(mu.T, ok),  # soft load [K]
            count(ok & (low < 1.0 - delta)),
        )

    out["per_tau"] = jax.lax.map(per_tau, taus)
    return out


def _stream(a, *, k, widths, edges, taus, delta, chunk, dtype, progress) -> dict:
    """Stream `_chunk_stats` over the rows of `a`; returns the merged host statistics."""
    n = a.shape[0]
    w_j, e_j = jnp.asarray(widths, dtype), jnp.asarray(edges, dtype)
    t_j, d_j = jnp.asarray(taus, dtype), jnp.asarray(delta, dtype)
    acc: dict = {}
    moms: list = [None, None]
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=len(starts), unit="chunk", desc="router_report", leave=False)
    for s in starts:
        block = _rows(a, s, min(s + chunk, n), dtype)
        m = block.shape[0]
        if m < chunk:  # one compiled shape: pad the ragged last chunk, masked out
            pad = ((0, chunk - m), (0, 0))
            block = jnp.pad(block, pad) if isinstance(block, jax.Array) else np.pad(block, pad)
        rows_ok = np.arange(chunk) < m
        out = jax.device_get(_chunk_stats(block, rows_ok, w_j, e_j, t_j, d_j, k=k))
        (mom_g, mom_l, amb) = out.pop("per_tau")
        moms[0] = _combine(moms[0], *mom_g)
        moms[1] = _combine(moms[1], *mom_l)
        out["amb"] = amb
        for key, v in out.items():
            v = np.asarray(v)
            if key == "dmin":
                acc[key] = min(acc.get(key, np.inf), float(v))
            elif key == "dmax":
                acc[key] = max(acc.get(key, -np.inf), float(v))
            else:
                acc[key] = acc.get(key, 0) + v.astype(np.int64)
    acc["gate_moments"], acc["load_moments"] = moms
    return acc


# ----------------------------------------------------------------------------
# from the statistics to the report
# ----------------------------------------------------------------------------


def _quantile_fn(hist: np.ndarray, ties: int, edges: np.ndarray, dmin: float, dmax: float):
    """The margin's quantile function from the histogram (geometric interpolation in a bin)."""
    lower = np.concatenate([[0.0, min(dmin, edges[0])], edges])  # the atom, underflow, bins
    upper = np.concatenate([[0.0, edges[0]], edges[1:], [max(dmax, edges[-1])]])
    counts = np.concatenate([[ties], hist]).astype(np.float64)
    cum = np.cumsum(counts)
    total = cum[-1]

    def q(p: float) -> float:
        target = p * total
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, counts.size - 1)
        if i == 0 or counts[i] == 0:
            return float(upper[i])
        frac = (target - (cum[i] - counts[i])) / counts[i]
        lo, hi = lower[i], upper[i]
        if lo > 0 and hi > lo:
            return float(lo * (hi / lo) ** frac)
        return float(lo + (hi - lo) * frac)

    return q


def _quantiles(levels, q: Callable, n: int) -> Estimate:
    value, stderr = [], []
    for p in levels:
        s = math.sqrt(p * (1 - p) / n)
        value.append(q(p))
        stderr.append(0.5 * (q(min(p + s, 1.0)) - q(max(p - s, 0.0))))
    return Estimate(np.asarray(value), np.asarray(stderr))


def _tail(widths, mass: Estimate, ties: Estimate, n: int, k: int) -> tuple:
    """`fit_tail_profile` on the widths strictly above the atom; `(MarginTail | None, note)`."""
    keep = np.asarray(mass.value) > float(ties.value)
    ws = np.asarray(widths)[keep]
    if np.unique(ws).size < 2:
        return None, (
            "no tail fit: fewer than two widths have M_k(w) above the atom P(Δ_k = 0); "
            "give larger `widths`"
        )
    sub = Estimate(np.asarray(mass.value)[keep], np.asarray(mass.stderr)[keep])
    try:
        tail = fit_tail_profile(ws, sub, n, atom=ties, k=k)
    except ValueError as e:
        return None, f"no tail fit: {e}"
    note = {
        "ok": "power law accepted on the grid",
        "misfit": "the power law is rejected on the grid (see tail.residual)",
        "atom": "exact ties of positive mass: (4.4) fails; the fit is of P(0 < Δ_k ≤ w) "
        "above the atom only",
    }[tail.status]
    if not keep.all():
        note += f"; {int((~keep).sum())} widths at or below the atom left out"
    return tail, note


def _certificate(taus, K, k, tail: MarginTail | None, bounds) -> tuple:
    """`(bound [T] | None, statement)`: T.10 with `bounds`, else the gate-level T.8 statement."""
    gate = (
        "gate-level statement (T.8): E‖μ^τ − μ^0‖_1 ≤ 2(K−k) E[exp(−Δ_k/τ)], both measured "
        "from the logits"
    )
    if bounds is None:
        return None, gate + "; no output bounds (B_Y, B_f) given, so no risk certificate"
    if tail is None:
        return None, gate + "; T.10 certificate refused: no margin-tail fit"
    if tail.status == "atom":
        return None, gate + (
            f"; T.10 certificate refused: the top-{k} margin has an atom "
            f"(P(Δ_k = 0) = {float(tail.atom.value):.3g}), so (4.4) fails and the soft-hard "
            "gap need not vanish as τ → 0"
        )
    b_y, b_f = bounds
    alpha = max(float(tail.alpha.value), 0.0)
    bound = soft_hard_bound(
        jnp.asarray(taus), b_y, b_f, K, float(tail.C_env), alpha, float(tail.w0), k=k
    )
    statement = (
        f"T.10 certificate (ρ = ∞, equal combine weights): |L_τ − L_0| ≤ 4 B_f (B_Y + B_f) "
        f"((K−k)/k) [C_m Γ(α+1) τ^α + e^(−w_0/τ)] with B_Y = {b_y:g}, B_f = {b_f:g}, "
        f"C_m = C_env = {float(tail.C_env):.4g}, α = {alpha:.4g}, w_0 = {float(tail.w0):.4g} "
        "(the power law is extrapolated below w_1)"
    )
    if tail.status == "misfit":
        statement += "; the power law is rejected on the grid: the envelope still bounds it there"
    return np.asarray(bound, np.float64), statement


def router_report(
    logits,
    *,
    k: int = 1,
    taus=None,
    widths=None,
    delta=0.1,
    bounds=None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> RouterReport:
    """A report on one layer's router from its logits `[N, K]` alone (T.1–T.10).

    Streamed: rows are sliced chunk by chunk (`chunk_size` rows, by default
    about 2^21 logits per chunk) from a NumPy array, a memmap (`np.load(path,
    mmap_mode="r")`) or a JAX array, so memory does not grow with `N`. Every
    Monte Carlo figure has a standard error: binomial for fractions
    (`M_k(w)`, ties, ambiguity, selection), `s/√n` from merged moments for
    means (gate discrepancy, its bound, entropy, soft load). The figures per
    row are exact functions of the logits: `μ^τ = gates(a, τ, k=k)` (T.3),
    `μ^0 = hard_gates(a, k=k)` (T.2, ties to the lowest index),
    `‖μ^τ − μ^0‖_1 ≤ 2(K − k) e^{−Δ_k/τ}` (T.8).

    Defaults from a pilot subsample (at most 2^16 rows in 64 evenly spread
    blocks): `widths` is `boundary.tail_widths` of its margins (12 geometric
    widths between low quantiles and the quartile), `taus` seven temperatures
    from 10^-3 to 1 times the median margin and τ = 1.

    Args:
        logits: `[N, K]`, any real dtype (float16/bfloat16/integers are computed in float32).
        k: experts per input, `1 <= k < K`.
        taus: `[T]` temperatures `> 0`, or `None`.
        widths: `[W]` widths `> 0` for `M_k(w)` and the tail fit, or `None`.
        delta: the δ of the ambiguity mass, in `(0, 1/2)`.
        bounds: `(B_Y, B_f)`, bounds on `|Y|` and on every `|f_j|` (Assumption 4.3),
            for the T.10 certificate; `None` for the gate-level statement alone.
        chunk_size: rows per chunk, or `None`.
        progress: show a tqdm bar over the chunks.

    Returns:
        `RouterReport` (see its attributes); `.to_dict()` is JSON-ready.

    >>> a = np.array([[2.0, 0.0, -1.0], [0.0, 0.5, 3.0], [1.0, 1.0, 0.0], [0.1, 0.0, 0.2]])
    >>> r = router_report(a, taus=[0.5, 1.0], widths=[0.1, 1.0])
    >>> r.n_finite, float(r.ties.value), r.dead_experts.tolist()
    (4, 0.25, [1])
    >>> [round(float(v), 4) for v in r.mass.value]
    [0.5, 0.5]
    """
    a = _check_logits_array(logits)
    n, K = int(a.shape[0]), int(a.shape[1])
    k = check_k(k, K)
    check_delta(delta)
    dtype = _work_dtype(a.dtype)
    pilot_margin = _np_margin(_pilot(a, dtype), k)
    if taus is None:
        taus = _default_taus(pilot_margin)
    taus = np.asarray(check_taus(taus), np.float64)
    widths = _widths(widths, pilot_margin)
    if bounds is not None:
        bounds = _check_bounds(bounds)
    edges = _hist_edges(pilot_margin)
    chunk = chunk_size_for(n, 4 * K * max(1, k), chunk_size)
    st = _stream(
        a,
        k=k,
        widths=widths,
        edges=edges,
        taus=taus,
        delta=float(delta),
        chunk=chunk,
        dtype=dtype,
        progress=progress,
    )
    return _assemble(
        st, n=n, K=K, k=k, taus=taus, widths=widths, edges=edges, delta=delta, bounds=bounds
    )


def _widths(widths, pilot_margin) -> np.ndarray:
    if widths is None:
        try:
            return tail_widths(pilot_margin)
        except ValueError:
            return np.geomspace(1e-6, 1.0, 12)  # a degenerate pilot: the report says why below
    w = np.asarray(check_width(widths, "widths"), np.float64).reshape(-1)
    if w.size == 0 or not np.all(w > 0):
        raise ValueError(f"`widths` must be a non-empty 1-D array [W] of widths > 0, got {w}")
    return np.sort(w)


def _check_bounds(bounds) -> tuple:
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"`bounds` must be a pair (B_Y, B_f) of numbers >= 0, got {bounds!r}")
    check_nonnegative(bounds[0], "bounds[0] (B_Y)")
    check_nonnegative(bounds[1], "bounds[1] (B_f)")
    return float(bounds[0]), float(bounds[1])


def _assemble(st, *, n, K, k, taus, widths, edges, delta, bounds) -> RouterReport:
    nf = int(st["n"])
    notes = []
    if st["nonfinite"] > 0:
        notes.append(
            f"{int(st['nonfinite'])} of {n} rows hold NaN or inf: counted in `nonfinite`, "
            "every other figure is over the finite rows"
        )
    if nf == 0:
        raise ValueError(f"`logits` has no finite row: all {n} rows hold NaN or inf")
    frac = lambda c: binomial_estimate(np.asarray(c, np.float64) / nf, nf)
    ties = frac(st["ties"])
    n_ties, near = int(st["ties"]), int(st["near"])
    atom = n_ties > near + 3.0 * np.sqrt(near) + 3.0
    if atom:
        notes.append(
            f"exact ties: P(Δ_{k} = 0) = {float(ties.value):.3g} ({n_ties} rows, against "
            f"{near} rows within one ulp of a tie); the margin law has an atom, no "
            "margin-tail rate or certificate applies"
        )
    elif n_ties > 0:
        notes.append(
            f"{n_ties} exact ties, as many as float rounding of a continuous margin gives "
            f"({near} rows within one ulp of a tie): not an atom; counted in M_k(w)"
        )
    q = _quantile_fn(st["hist"], int(st["ties"]), edges, st["dmin"], st["dmax"])
    mass = frac(st["below"])
    no_atom = Estimate(np.zeros_like(ties.value), np.zeros_like(ties.stderr))
    tail, tail_note = _tail(widths, mass, ties if atom else no_atom, nf, k)
    if tail is not None and tail.status == "misfit":
        notes.append("margin tail: the power law is rejected on the width grid")
    gm = _to_estimate(st["gate_moments"])  # [T, 3]
    selection = frac(st["selected"])
    dead = np.flatnonzero(np.asarray(st["selected"]) == 0)
    if dead.size:
        notes.append(f"{dead.size} dead experts (never selected): {dead.tolist()}")
    certificate, statement = _certificate(taus, K, k, tail, bounds)
    return RouterReport(
        n=n,
        n_finite=nf,
        K=K,
        k=k,
        nonfinite=binomial_estimate(np.float64(st["nonfinite"]) / n, n),
        ties=ties,
        atom=bool(atom),
        near_ties=near,
        quantile_levels=np.asarray(QUANTILE_LEVELS),
        margin_quantiles=_quantiles(QUANTILE_LEVELS, q, nf),
        quantile_resolution=float(edges[1] / edges[0] - 1.0),
        margin_min=float(st["dmin"]),
        margin_max=float(st["dmax"]),
        hist_edges=edges,
        hist_counts=np.asarray(st["hist"]),
        widths=widths,
        mass=mass,
        mass_at_1=frac(st["below1"]),
        tail=tail,
        tail_note=tail_note,
        taus=taus,
        delta=float(delta),
        gate_discrepancy=Estimate(gm.value[:, 0], gm.stderr[:, 0]),
        gate_bound=Estimate(gm.value[:, 1], gm.stderr[:, 1]),
        ambiguity=frac(st["amb"]),
        entropy=Estimate(gm.value[:, 2], gm.stderr[:, 2]),
        selection=selection,
        soft_load=_to_estimate(st["load_moments"]),
        dead_experts=dead,
        coselection=frac(st["cosel"]) if k > 1 else None,
        certificate=certificate,
        statement=statement,
        bounds=bounds,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------
# many layers: files and mappings
# ----------------------------------------------------------------------------


class _Layers(Mapping):
    """A lazy mapping `name -> [N, K]` array: each layer is opened when asked for."""

    def __init__(self, names, opener):
        self._names, self._open = list(names), opener

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._open(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _npy(path: str):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if _pickled(e):
            raise ValueError(
                f"{path!r} holds a pickled (object) array; softhard never unpickles: save the "
                "logits as a float array (np.save(path, logits.astype(np.float32)))"
            ) from e
        raise ValueError(
            f"{path!r} is not a readable .npy array (truncated or corrupt?): {e}"
        ) from e
    except (OSError, EOFError) as e:
        raise ValueError(
            f"{path!r} is not a readable .npy array (truncated or corrupt?): {e}"
        ) from e


def _pickled(e: Exception) -> bool:
    text = str(e)
    return "allow_pickle" in text or "Object arrays" in text or "Python objects" in text


def _npz_memmap(path: str, name: str):
    """A read-only memmap of an uncompressed (`np.savez`) member, or None (compressed, odd)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + nbytes > os.path.getsize(path):
        raise ValueError(f"member {name!r} is truncated")
    order = "F" if fortran else "C"
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)


def _npz_layers(path: str) -> _Layers:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            names = list(z.files)
    except Exception as e:  # zipfile, OSError, ValueError: all "not readable"
        raise ValueError(
            f"{path!r} is not a readable .npz archive (truncated or corrupt?): {e}"
        ) from e

    def opener(name):
        try:
            mm = _npz_memmap(path, name)
            if mm is not None:
                return mm
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                return z[name]
        except ValueError as e:
            if _pickled(e):
                raise ValueError(
                    f"{path!r}: layer {name!r} is a pickled (object) array; softhard never "
                    "unpickles"
                ) from e
            raise ValueError(f"{path!r}: layer {name!r} cannot be read: {e}") from e
        except Exception as e:
            raise ValueError(f"{path!r}: layer {name!r} cannot be read (truncated?): {e}") from e

    return _Layers(names, opener)


def _safetensors_layers(path: str) -> _Layers:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="np") as f:
            names = list(f.keys())
    except Exception as e:  # SafetensorError and friends
        raise ValueError(f"{path!r} is not a readable .safetensors file: {e}") from e

    def opener(name):
        try:
            with safe_open(path, framework="np") as f:
                return f.get_tensor(name)
        except Exception as e:
            raise ValueError(f"{path!r}: tensor {name!r} cannot be read: {e}") from e

    return _Layers(names, opener)


def load_layers(path, layers=None) -> Mapping:
    """The layers of a logits dump, `name -> [N, K]`, opened lazily (never by pickle).

    `.npy`: one layer named after the file, memory-mapped (`mmap_mode="r"`);
    `.npz`: one layer per member, memory-mapped when stored uncompressed
    (`np.savez`), else read when asked for (`np.savez_compressed`); `.safetensors`:
    one per tensor (`safetensors.safe_open(framework="np")`).

    Args:
        path: a `.npy`, `.npz` or `.safetensors` file.
        layers: names to keep (in this order), or `None` for all.

    Raises:
        ValueError: unknown suffix, unreadable/truncated file, pickled arrays, unknown layer.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in LOGITS_SUFFIXES:
        raise ValueError(
            f"{path!r}: unknown logits file type {ext or '(no suffix)'!r}; use one of "
            + ", ".join(LOGITS_SUFFIXES)
        )
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} does not exist or is not a file")
    if ext == ".npy":
        name = os.path.splitext(os.path.basename(path))[0]
        arr = _npy(path)
        found = _Layers([name], lambda _: arr)
    elif ext == ".npz":
        found = _npz_layers(path)
    else:
        found = _safetensors_layers(path)
    if not len(found):
        raise ValueError(f"{path!r} holds no arrays")
    if layers is None:
        return found
    missing = [n for n in layers if n not in found]
    if missing:
        raise ValueError(f"{path!r} has no layer {missing}; it has {list(found)}")
    return _Layers(list(layers), found.__getitem__)


def router_reports(layers, **kwargs) -> dict[str, RouterReport]:
    """`router_report` of every layer of a mapping `name -> [N, K]` or of a logits file.

    Args:
        layers: a mapping (e.g. `{"layer0": logits0, …}`), or a path that
            `load_layers` reads (`.npy`, `.npz`, `.safetensors`).
        **kwargs: passed to `router_report` (`k`, `taus`, `widths`, `delta`, `bounds`, …).

    Returns:
        `{name: RouterReport}` in the order of `layers`; `router_summary` tabulates it.
    """
    if isinstance(layers, (str, os.PathLike)):
        layers = load_layers(layers)
    if not isinstance(layers, Mapping) or not len(layers):
        raise ValueError(
            f"`layers` must be a non-empty mapping name -> logits [N, K] or a file path, got "
            f"{type(layers).__name__}"
        )
    out = {}
    for name in layers:
        try:
            out[str(name)] = router_report(layers[name], **kwargs)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from e
    return out


def router_summary(reports: Mapping[str, RouterReport]) -> dict:
    """One row per layer: `{column: [L]}` (for CSV/LaTeX; `write_csv` takes it as is).

    Columns: layer, n, n_finite, K, k, nonfinite, ties, atom (0/1), median margin (± se),
    `M_k(1)` (± se), tail status, α (± se), ambiguity and gate discrepancy at
    the largest τ ≤ 1 of each layer's grid (or its smallest τ), dead experts.
    """
    cols: dict = {
        c: []
        for c in (
            "layer", "n", "n_finite", "K", "k", "nonfinite", "ties", "atom", "median_margin",
            "median_margin_se", "mass_at_1", "mass_at_1_se", "tail_status", "alpha",
            "alpha_se", "tau_ref", "ambiguity", "ambiguity_se", "gate_discrepancy",
            "gate_discrepancy_se", "dead_experts",
        )
    }  # fmt: skip
    for name, r in reports.items():
        med = list(r.quantile_levels).index(0.5)
        below = np.flatnonzero(r.taus <= 1.0)
        t = int(below[-1]) if below.size else 0
        row = {
            "layer": name,
            "n": r.n,
            "n_finite": r.n_finite,
            "K": r.K,
            "k": r.k,
            "nonfinite": float(r.nonfinite.value),
            "ties": float(r.ties.value),
            "atom": int(r.atom),
            "median_margin": float(r.margin_quantiles.value[med]),
            "median_margin_se": float(r.margin_quantiles.stderr[med]),
            "mass_at_1": float(r.mass_at_1.value),
            "mass_at_1_se": float(r.mass_at_1.stderr),
            "tail_status": "none" if r.tail is None else r.tail.status,
            "alpha": float("nan") if r.tail is None else float(r.tail.alpha.value),
            "alpha_se": float("nan") if r.tail is None else float(r.tail.alpha.stderr),
            "tau_ref": float(r.taus[t]),
            "ambiguity": float(r.ambiguity.value[t]),
            "ambiguity_se": float(r.ambiguity.stderr[t]),
            "gate_discrepancy": float(r.gate_discrepancy.value[t]),
            "gate_discrepancy_se": float(r.gate_discrepancy.stderr[t]),
            "dead_experts": int(r.dead_experts.size),
        }
        for c, v in row.items():
            cols[c].append(v)
    return cols
