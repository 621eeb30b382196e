"""Exact soft and hard risks and their gap for Gaussian inputs (2.5, 2.11, 4.5, 5.3).

The conditional squared error given the student coordinates ζ is closed form
(`_risk_integrand`); `_integrate` does the rest (see `softhard.gaussian`).
`_soft_integrals` makes the derivatives exact where a teacher shares the
student's interface.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._validate import check_tau, check_taus, inv_temperature, poisons
from ._normal import _Moments
from ._problem import (
    _affine,
    _cell_moments,
    _cell_targets,
    _check_problem,
    _complement,
    _reduce,
    _Reduced,
    _Struct,
    _teacher_cells,
)
from ._quadrature import _RULE_COARSE, _RULE_FINE, _integrate

#: jitter on (nearly) degenerate teacher scores for derivatives, in standard deviations
#: (see `_soft_integrals`); each quadrature rule resolves layers well below it
_JITTER = {2: 1e-10, 3: 3e-6}


# ----------------------------------------------------------------------------
# integrands
# ----------------------------------------------------------------------------


def _logits(red: _Reduced, zs):
    """Logits `(a_1 − a_K, …, a_{K−1} − a_K, 0)` at nodes; `zs`: nz × [N] -> K × [N]."""
    z = _affine(jnp.zeros(red.Lzz.shape[0], red.Lzz.dtype), red.Lzz, zs)
    return z + [jnp.zeros_like(zs[0])]


def _soft_gates(a, tau):
    """Softmax gates (2.3) by log-sum-exp; `a`: K × [N] -> K × [N].

    `1/τ` is capped as in the sweep kernel (`_validate.inv_temperature`): a τ
    that underflows in the dtype gives the hard limit, never `0/0`.
    """
    top = a[0]
    for v in a[1:]:
        top = jnp.maximum(top, v)
    top = jax.lax.stop_gradient(top)
    inv = inv_temperature(tau, top.dtype)
    ex = [jnp.exp((v - top) * inv) for v in a]
    total = sum(ex[1:], ex[0])
    return [v / total for v in ex]


def _hard_gates(a):
    """One-hot of the lowest-index argmax (2.9), K × [N]."""
    out, taken = [], jnp.zeros(a[0].shape, bool)
    for i, v in enumerate(a):
        win = ~taken
        for j, u in enumerate(a):
            if j != i:
                win = win & ((v >= u) if j > i else (v > u))
        out.append(win.astype(v.dtype))
        taken = taken | win
    return out


def _dropped(a):
    """One-hot of the expert left out of the hard top-2 of 3 (T.2), K × [N].

    The last in the order `(−a_j, j)`: the smallest logit, ties to the highest
    index (so the lowest indices are kept).
    """
    out = []
    for i, v in enumerate(a):
        drop = None
        for j, u in enumerate(a):
            if j != i:
                c = (v <= u) if j < i else (v < u)
                drop = c if drop is None else drop & c
        out.append(drop.astype(v.dtype))
    return out


def _top2_of_3(a, tau):
    """Soft top-2 mask of three logits (T.3), K × [N], rows summing to 2.

    Uncapped, `μ = 2 softmax(a/τ)`, while that keeps the largest entry `≤ 1`,
    i.e. `S = Σ_j exp((a_j − a_max)/τ) ≥ 2`; otherwise the winner (lowest
    index) is capped at 1 and the other two share 1 by softmax, computed from
    their own maximum. Differences are taken in logit units before the capped
    `1/τ` (`_validate.inv_temperature`) multiplies them: no `0/0` or `∞ − ∞`
    for any τ.
    """
    inv = inv_temperature(tau, a[0].dtype)
    top = jax.lax.stop_gradient(functools.reduce(jnp.maximum, a))
    ex = [jnp.exp((v - top) * inv) for v in a]
    S = sum(ex[1:], ex[0])
    is_top = [h > 0 for h in _hard_gates(a)]
    rest = [jnp.where(t, -jnp.inf, v) for t, v in zip(is_top, a)]
    second = jax.lax.stop_gradient(functools.reduce(jnp.maximum, rest))
    q = [
        jnp.where(t, 0.0, jnp.exp((jnp.where(t, second, v) - second) * inv))
        for t, v in zip(is_top, a)
    ]
    Q = sum(q[1:], q[0])  # ≥ 1: the second entry contributes exp(0)
    capped = [jnp.where(t, 1.0, qj / Q) for t, qj in zip(is_top, q)]
    return [jnp.where(S >= 2.0, 2.0 * e / S, c) for e, c in zip(ex, capped)]


def _route(a, tau, k: int, rho):
    """Predictor weights (T.5) at nodes, K × [N]: soft at `tau`, hard (T.2) for `tau=None`.

    The mask: softmax (2.3) / one-hot (2.9) for `k = 1`, the soft / hard top-2
    of 3 (T.3, T.2) for `k = 2`; times the combine weights `exp(a_j/ρ)` (T.4,
    none for `ρ = ∞`), normalised. Top-1 with `ρ = ∞` is the paper's gates.
    """
    if k == 1:
        mu = _hard_gates(a) if tau is None else _soft_gates(a, tau)
    else:
        mu = [1.0 - v for v in _dropped(a)] if tau is None else _top2_of_3(a, tau)
    if rho is None:
        if k == 1:
            return mu
        u = mu
    else:
        u = [m * c for m, c in zip(mu, _soft_gates(a, rho))]  # normalising c is harmless
    total = sum(u[1:], u[0])
    return [v / total for v in u]


def _lin(coefs, vals):
    """`Σ_l coefs[l] vals[l]`; static zero coefficients are skipped, static ones not multiplied."""
    out = None
    for c, v in zip(coefs, vals):
        static = isinstance(c, float)
        if static and c == 0.0:
            continue
        term = v if static and c == 1.0 else c * v
        out = term if out is None else out + term
    return out


def _expected_sq(red: _Reduced, K: int, om, mom: _Moments | None, lam, pi):
    """`E[1_cell (Σ_l λ_l g_l − Σ_j π_j f_j)² | ζ]`; `pi`: K × [N], `lam`: n_target entries.

    `lam` are the target's coefficients over the target outputs in the cell
    (static floats, or `[N]` for a teacher whose weights vary with ζ); `mom`
    the cell's moments of the teacher residual, `None` for the whole space.
    """
    R = red.R
    idx = [K + g for g in range(len(lam))]
    mean = _lin(lam, [om[g] for g in idx]) - sum(pi[j] * om[j] for j in range(K))
    var = _lin([u * v for u in lam for v in lam], [R[g, h] for g in idx for h in idx])
    cross = [sum(pi[j] * R[j, g] for j in range(K)) for g in idx]
    var = var - 2.0 * _lin(lam, cross)
    var = var + sum(pi[i] * pi[j] * R[i, j] for i in range(K) for j in range(K))
    nt = red.Aot.shape[1]
    kappa = [
        _lin(lam, [red.Aot[g, t] for g in idx]) - sum(pi[j] * red.Aot[j, t] for j in range(K))
        for t in range(nt)
    ]
    if mom is None:
        return mean * mean + var + sum(kt * kt for kt in kappa)
    out = (mean * mean + var) * mom.p
    out = out + 2.0 * mean * sum(kappa[t] * mom.m1[t] for t in range(nt))
    return out + sum(kappa[s] * kappa[t] * mom.m2[s][t] for s in range(nt) for t in range(nt))


def _teacher_terms(r: _Reduced, st: _Struct, zs):
    """Per-node pieces of the target: outputs' conditional means, cell moments, coefficients.

    Returns `(om, moms, lams)`: `om` the conditional means of all outputs
    (no × [N]); per teacher cell its moments (`None`: everywhere) and the
    target's coefficients over the target outputs (`_cell_targets`). A top-k
    teacher with finite ρ has logits that are functions of ζ (checked): one
    "cell", with its hard weights (T.5) at the nodes as coefficients.
    """
    om = _affine(r.o0, r.Aoz, zs)
    tm = _affine(r.t0, r.Atz, zs)
    if st.det_teacher:
        w = _route(tm + [jnp.zeros_like(zs[0])], None, st.kt, st.rho_t)
        return om, [None], [w]
    cells = _teacher_cells(0 if st.linear else st.Kt, st.kt)
    moms = [_cell_moments(r, tm, c) for c in cells[:-1]]
    # the cells partition the teacher plane: the last one is the complement
    moms.append(_complement(moms) if moms else _cell_moments(r, tm, cells[-1]))
    return om, moms, _cell_targets(st)


def _risk_integrand(red: _Reduced, red_soft: _Reduced, st: _Struct, zeta, taus, want):
    """Conditional squared errors `E[(Y − f(X))² | ζ] − σ_ξ²` at nodes `zeta: [..., nz]`.

    Everything that does not depend on the temperature (logits, conditional
    means, the teacher cells' moments) is computed once for all `taus: [T]`.
    `want` ⊆ {"soft", "hard", "gap"}; the soft values use `red_soft` (possibly
    jittered, see `_soft_integrals`), the hard ones `red`. The predictors are
    the top-k ones of T.5 with the model's `k` and `ρ`.

    Returns:
        `[M, ...]`: the requested rows, `T` each for "soft" and "gap", one for
        "hard", in the order of `want`.
    """
    shape = zeta.shape[:-1]
    zs = [zeta[..., j].ravel() for j in range(zeta.shape[-1])]
    a = _logits(red, zs)

    def total(r, om, moms, lams, pi):
        terms = zip(moms, lams)
        return sum(_expected_sq(r, st.K, om, mom, lam, pi) for mom, lam in terms)

    hard = soft = None
    if "hard" in want or "gap" in want:
        hard = total(red, *_teacher_terms(red, st, zs), _route(a, None, st.k, st.rho))
    if "soft" in want or "gap" in want:
        parts = _teacher_terms(red_soft, st, zs)
        soft = jax.vmap(lambda t: total(red_soft, *parts, _route(a, t, st.k, st.rho)))(taus)
    rows = []
    for w in want:
        if w == "soft":
            rows.append(soft)
        elif w == "hard":
            rows.append(hard[None])
        else:
            # the gap integrand itself, for relative accuracy as τ → 0
            rows.append(soft - hard[None])
    return jnp.concatenate(rows).reshape((-1,) + shape)


def _span_poison(red: _Reduced, st: _Struct, out):
    """NaN unless a finite-ρ top-k teacher's logits are functions of ζ (traced parameters)."""
    if not st.det_teacher:
        return out
    var = jnp.sum(red.Atz * red.Atz, axis=-1) + jnp.sum(red.Ltt * red.Ltt, axis=-1)
    ok = jnp.all(jnp.sum(red.Ltt * red.Ltt, axis=-1) <= 1e-9 * jnp.max(var))
    return jnp.where(ok, out, jnp.nan)


# ----------------------------------------------------------------------------
# integrals and the risks
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("st", "want", "jitter"))
def _exact_risks(model, target, law, taus, st: _Struct, want: tuple[str, ...], jitter: float):
    """Integrals over ζ of the rows of `_risk_integrand` at temperatures `taus: [T]`: `[M]`.

    With `jitter > 0` the soft rows use teacher scores with a jitter of about
    `jitter` standard deviations where they are (nearly) functions of the
    student scores (see `_soft_integrals`); the hard rows never do.
    """
    red = _reduce(model, target, law, st)
    red_soft = _reduce(model, target, law, st, jitter) if jitter else red
    taus = jnp.asarray(taus, red.mu.dtype)
    rules = (_RULE_FINE, _RULE_FINE) if st.K == 2 else (_RULE_COARSE, _RULE_COARSE)

    def fn(zeta):
        return _risk_integrand(red, red_soft, st, zeta, taus, want)

    soft_taus = taus if ("soft" in want or "gap" in want) else None
    return _span_poison(red, st, _integrate(red, st, fn, *rules, taus=soft_taus))


def _soft_integrals(model, target, law, taus, st: _Struct, want: tuple[str, ...]):
    """`_exact_risks` whose derivatives are exact also where the teacher coincides.

    Where a teacher score is a function of the student scores (a teacher with
    the student's separator, the realizable case), the teacher's conditional
    residual given ζ has zero variance, and the first-order change of the risk
    when the student moves off the teacher is a boundary term that the
    conditional representation cannot carry. The value is exact there; its
    derivatives are taken through the same computation with the teacher's
    conditional variance floored smoothly at `ε²` (an independent jitter of
    `ε` = 1e-10 (K = 2) or 3e-6 (K = 3) standard deviations on a teacher score
    that is within `ε` of a function of the student scores, none otherwise),
    which keeps the representation smooth. The jitter moves the soft risk by
    `O(ε²/τ)` and its derivatives by about `O(ε²/τ²)` relative, only near such
    coincidences; the quadrature resolves layers well below `ε`.
    """
    # flat leaves: the tangents then never pass through the models' constructors
    leaves, treedef = jax.tree_util.tree_flatten((model, target, law))
    return _soft_integrals_flat(tuple(leaves), taus, treedef, st, want)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _soft_integrals_flat(leaves, taus, treedef, st: _Struct, want: tuple[str, ...]):
    model, target, law = jax.tree_util.tree_unflatten(treedef, leaves)
    return _exact_risks(model, target, law, taus, st, want, 0.0)


@_soft_integrals_flat.defjvp
def _soft_integrals_jvp(treedef, st, want, primals, tangents):
    # a finite-ρ top-k teacher is a function of ζ: no teacher residual to jitter
    jitter = 0.0 if st.linear or st.det_teacher else _JITTER[st.K]

    def integrals(leaves, taus, jitter):
        model, target, law = jax.tree_util.tree_unflatten(treedef, leaves)
        return _exact_risks(model, target, law, taus, st, want, jitter)

    value, tangent = jax.jvp(functools.partial(integrals, jitter=jitter), primals, tangents)
    if jitter:
        value = integrals(*primals, 0.0)
    return value, tangent


def _noise_var(target):
    return jnp.asarray(target.noise_std) ** 2


class ExactRisks(NamedTuple):
    """Exact population risks over a temperature grid (Gaussian inputs).

    Attributes:
        soft: `L_τ` (2.5), including `σ_ξ²`; `[T]`.
        hard: `L_0` (2.11), including `σ_ξ²`; scalar.
        gap: `L_τ − L_0` (4.5), integrated directly; `[T]`.
    """

    soft: jax.Array  # [T]
    hard: jax.Array  # []
    gap: jax.Array  # [T]


@poisons(taus="tau")
def exact_risk_sweep(model, teacher, law, taus) -> ExactRisks:
    """Exact soft risk, hard risk and gap at every temperature, in one pass.

    The exact counterpart of `softhard.risk_sweep` (no standard errors): the
    conditional moments and teacher cells are computed once per node and
    shared by all temperatures, so a sweep costs little more than one `τ`.
    Accuracy as `exact_soft_risk`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        taus: `[T]` temperatures `> 0`.

    Returns:
        `ExactRisks(soft [T], hard [], gap [T])`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, LinearTarget
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> out = exact_risk_sweep(MoE(r, e), LinearTarget(w=[0.0, 0.0]), StandardGaussian(2),
    ...                        jnp.array([0.1, 1.0]))
    >>> out.soft.shape, out.hard.shape
    ((2,), ())
    """
    st = _check_problem(model, teacher, law)
    taus = check_taus(taus)
    T = taus.shape[0]
    vals = _soft_integrals(model, teacher, law, taus, st, ("soft", "hard", "gap"))
    noise = _noise_var(teacher).astype(vals.dtype)
    return ExactRisks(vals[:T] + noise, vals[T] + noise, vals[T + 1 :])


@poisons(tau="tau")
def exact_soft_risk(model, teacher, law, tau):
    """Population soft risk `L_τ = E[(Y − f_τ(X))²]` (2.5) for Gaussian inputs, exactly.

    `X ~ law = N(μ, Σ)`, `model` a `MoE` of a `LinearRouter` and `LinearExperts`
    (`K ≤ 3`), `Y` from `teacher`: a hard-routed linear `Teacher` (any router,
    `K* ≤ 3`; lowest index wins ties (2.9)) or a `LinearTarget`, each with
    Gaussian noise. Includes the noise variance: `L_τ = σ_ξ² + L̄_τ` (5.3).

    Computed by quadrature over the student logit differences with closed-form
    conditional moments (see the module docstring): relative error about 1e-13
    for `K = 2` and 1e-8 for `K = 3`, for any `τ` in `[1e-8, 10]`. `jit`-able,
    `vmap`-able over `tau` and differentiable in every parameter.

    Args:
        model: `MoE(LinearRouter, LinearExperts)` with `W: [K, d]`, `K ∈ {2, 3}`.
        teacher: `Teacher(LinearRouter, LinearExperts, noise_std)` or `LinearTarget`.
        law: `Gaussian(mean: [d], cov: [d, d])`.
        tau: scalar temperature `> 0`.

    Returns:
        scalar `L_τ`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, Teacher
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> L = exact_soft_risk(MoE(r, e), Teacher(r, e), StandardGaussian(2), 0.01)
    >>> round(float(L) / 0.01, 4)  # ≈ (2 ln 2 − 1) E[Δf²] φ(0) = 0.6164 as τ → 0
    0.6164
    """
    st = _check_problem(model, teacher, law)
    check_tau(tau)
    val = _soft_integrals(model, teacher, law, jnp.reshape(tau, (1,)), st, ("soft",))[0]
    return val + _noise_var(teacher).astype(val.dtype)


def exact_hard_risk(model, teacher, law):
    """Population hard risk `L_0 = E[(Y − f_0(X))²]` (2.11) for Gaussian inputs, exactly.

    Same models and accuracy as `exact_soft_risk`; the hard predictor (2.10)
    uses the lowest-index tie rule (2.9), a null set here. Includes `σ_ξ²`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.

    Returns:
        scalar `L_0`.
    """
    st = _check_problem(model, teacher, law)
    val = _exact_risks(model, teacher, law, jnp.ones((1,)), st, ("hard",), 0.0)[0]
    return val + _noise_var(teacher).astype(val.dtype)


@poisons(tau="tau")
def exact_risk_gap(model, teacher, law, tau):
    """Soft-to-hard gap `L_τ − L_0` (4.5) for Gaussian inputs, exactly.

    Integrates the conditional difference of the two squared errors, so the
    relative accuracy holds as `τ → 0` (the gap is `O(τ)`, Corollary 4.4).

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        tau: scalar temperature `> 0`.

    Returns:
        scalar `L_τ − L_0`.
    """
    st = _check_problem(model, teacher, law)
    check_tau(tau)
    return _soft_integrals(model, teacher, law, jnp.reshape(tau, (1,)), st, ("gap",))[0]
