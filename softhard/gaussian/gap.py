"""The exact first-order gap coefficient `c` in `L_τ − L_0 = c τ + o(τ)` (EQUATIONS.md §3).

An integral over the student interfaces of the conditional expectation of
`2 ln 2 Δf J − Δf²` (`_interface_integrand`), with the jump `J` of the
regression function where a teacher interface coincides (`_coincidence`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import is_concrete
from ._normal import _Moments, _npdf, _safe_div, _safe_norm
from ._problem import (
    _affine,
    _cell_moments,
    _check_problem,
    _combine,
    _reduce,
    _Reduced,
    _Struct,
)
from ._quadrature import _RULE_FINE, _ray_quadrature, _rule, _student_rays
from .risks import _span_poison

_LN2 = math.log(2.0)


def _pairs(K: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(K) for j in range(i + 1, K)]


def _coincidence(model, teacher, st: _Struct, tol):
    """Signs `[n_student_pairs, n_teacher_pairs]` of coinciding interfaces, else 0.

    Teacher pair score `t_kl = a*_k − a*_l` coincides with the student's
    `s_ij = a_i − a_j` when `t_kl ≡ λ s_ij` as affine functions: the coefficient
    vector `(W*_k − W*_l, b*_k − b*_l)` lies within relative distance `tol` of
    the line through `(W_i − W_j, b_i − b_j)`. The entry is `sign(λ)`.
    """
    W = jnp.concatenate([model.router.W, model.router.b[:, None]], axis=1)
    Wt = jnp.concatenate([teacher.router.W, teacher.router.b[:, None]], axis=1)
    out = []
    for i, j in _pairs(st.K):
        vs = W[i] - W[j]
        row = []
        for k, kk in _pairs(st.Kt):
            vt = Wt[k] - Wt[kk]
            lam = _safe_div(jnp.dot(vt, vs), jnp.dot(vs, vs))
            resid = _safe_norm(vt - lam * vs)
            same = (resid <= tol * _safe_norm(vt)) & (lam != 0)
            row.append(jnp.where(same, jnp.sign(lam), 0.0))
        out.append(jnp.stack(row))
    return jnp.stack(out)


def _bilinear(red: _Reduced, om, mom: _Moments | None, eu, ev):
    """`E[1_A U V | ζ]` for `U = euᵀo`, `V = evᵀo` (static coefficient vectors)."""
    mu_u = _combine(eu, om)
    mu_v = _combine(ev, om)
    eu_j, ev_j = jnp.asarray(eu, red.R.dtype), jnp.asarray(ev, red.R.dtype)
    cov = eu_j @ red.R @ ev_j
    ku = eu_j @ red.Aot  # [nt]
    kv = ev_j @ red.Aot
    if mom is None:
        return mu_u * mu_v + cov + jnp.dot(ku, kv)
    nt = len(mom.m1)
    out = (mu_u * mu_v + cov) * mom.p
    out = out + sum((mu_u * kv[t] + mu_v * ku[t]) * mom.m1[t] for t in range(nt))
    return out + sum(ku[s] * kv[t] * mom.m2[s][t] for s in range(nt) for t in range(nt))


def _sigmoid_gap(a, i: int, m: int, rho):
    """`c_i / (c_i + c_m) = σ((a_i − a_m)/ρ)` at nodes (T.4), the combine share of `i` vs `m`."""
    return jax.nn.sigmoid((a[i] - a[m]) / rho)


def _student_omega(red: _Reduced, st: _Struct, zs, pair):
    """`ω = c_i / Σ_{l ∈ S_k} c_l` on the interface of `pair` (T.11): scalar or `[N]`.

    `k = 1`: 1; `k = 2` (K = 3, the third expert `m` selected): `1/2` for
    `ρ = ∞`, else `σ((a_i − a_m)/ρ)` (`c_i = c_j` on the interface).
    """
    if st.k == 1:
        return 1.0
    (m,) = [v for v in range(st.K) if v not in pair]
    if st.rho is None:
        return 1.0 / st.k
    a = _affine(jnp.zeros(st.K - 1, red.Lzz.dtype), red.Lzz, zs) + [jnp.zeros_like(zs[0])]
    return _sigmoid_gap(a, pair[0], m, st.rho)


def _teacher_jump_cell(st: _Struct, k: int, kk: int):
    """Where the teacher's pair `(k, l)` interface carries its jump, and the swapped weight ω*.

    Constraints `c·t ≥ 0` (`[n_c, K*−1]`) and, for a top-2 teacher, the third
    expert `m`: `(k, l)` are the teacher's top two for `kt = 1` and its bottom
    two for `kt = 2` (T.11 for the teacher); `m = None` for `kt = 1`.
    """
    others = [m for m in range(st.Kt) if m not in (k, kk)]
    if not others:
        return None, None
    eye = np.eye(st.Kt - 1)
    T = np.concatenate([eye, np.zeros((1, st.Kt - 1))])  # t-coefficients of a*_k − a*_K
    cell = np.stack([T[k] - T[m] for m in others])
    if st.kt == 1:
        return cell, None
    return -cell, others[0]


def _interface_integrand(red: _Reduced, st: _Struct, zeta, pair, signs):
    """`E[2 ln2 Δ̃f J − Δ̃f² | ζ]` on the student interface of `pair = (i, j)`: `[...]`.

    `Δ̃f = ω (f_i − f_j)` with the combine weight `ω` of the swapped expert
    (T.11, `_student_omega`); `J` is the jump of `E[Y | X]` across the
    interface, from the `i` side (`s_ij > 0`) to the `j` side: `sign(λ) ω*
    (f*_k − f*_l)` on the part where the coinciding teacher pair `(k, l)` is
    the pair the teacher swaps there (its top two for a top-1 teacher, its
    bottom two for a top-2 one, ω* its combine weight), and 0 elsewhere
    (`signs`: `[n_teacher_pairs]` from `_coincidence`).
    """
    shape = zeta.shape[:-1]
    zs = [zeta[..., j].ravel() for j in range(zeta.shape[-1])]
    om = _affine(red.o0, red.Aoz, zs)
    no = red.o0.shape[0]
    i, j = pair
    omega = _student_omega(red, st, zs, pair)
    e_df = np.zeros(no)
    e_df[i], e_df[j] = 1.0, -1.0
    out = -(omega * omega) * _bilinear(red, om, None, e_df, e_df)
    if signs is not None:
        tm = _affine(red.t0, red.Atz, zs)
        ta = tm + [jnp.zeros_like(zs[0])]  # teacher logits relative to the last (means)
        for p, (k, kk) in enumerate(_pairs(st.Kt)):
            e_dg = np.zeros(no)
            e_dg[st.K + k], e_dg[st.K + kk] = 1.0, -1.0
            cell, m = _teacher_jump_cell(st, k, kk)
            mom = None if cell is None else _cell_moments(red, tm, cell)
            if m is None:
                w_t = 1.0
            elif st.rho_t is None:
                w_t = 1.0 / st.kt
            else:  # a finite-ρ top-k teacher: its logits are functions of ζ (checked)
                w_t = _sigmoid_gap(ta, k, m, st.rho_t)
            jump = _bilinear(red, om, mom, e_df, e_dg)
            out = out + 2.0 * _LN2 * signs[p] * omega * w_t * jump
    return out.reshape(shape)


@functools.partial(jax.jit, static_argnames=("st",))
def _gap_coefficient(model, teacher, law, tol, st: _Struct):
    red = _reduce(model, teacher, law, st)
    dt = red.mu.dtype
    signs = None if st.linear else _coincidence(model, teacher, st, tol)
    if st.K == 2:
        # the interface is the point ζ = 0; the density of s = Lzz ζ there is φ(μ')/Lzz (3.14)
        zeta = jnp.zeros((1, 1), dt)
        dens = _npdf(red.mu[0]) / red.Lzz[0, 0]
        sg = None if signs is None else signs[0]
        return dens * _interface_integrand(red, st, zeta, (0, 1), sg)[0]
    dirs, gamma, pairs = _student_rays(red, st.k)
    total = jnp.zeros((), dt)
    for p, pair in enumerate(pairs):
        zeta, w = _ray_quadrature(red, st, dirs[p][None], _rule(_RULE_FINE, dt))
        # the polar weight has r^{nz−1} = r; the line integral needs the 2-D density alone
        r = jnp.linalg.norm(zeta[0], axis=-1)
        w = _safe_div(w[0], r) * _safe_norm(gamma[p]) ** -1
        sg = None if signs is None else signs[p]
        total = total + jnp.sum(w * _interface_integrand(red, st, zeta[0], pair, sg))
    return _span_poison(red, st, total)


def exact_gap_coefficient(model, teacher, law, *, coincidence_tol=1e-9):
    """First-order coefficient `c` in `L_τ − L_0 = c τ + o(τ)` for Gaussian inputs.

    EQUATIONS.md §3, "General target, K=2" [X], with `Δf = f_1 − f_2`:

        c = ∫_{s=0} (2 ln 2 · Δf · J − Δf²) p/|∇s| dH^{d−1}
          = G(0) · E[2 ln 2 · Δf J − Δf² | s(X) = 0],

    `G(0)` the density of `s = a_1 − a_2` at 0 (3.14) and `J` the jump of the
    regression function `E[Y | X]` across the student interface `S = {s = 0}`,
    from the expert-1 side to the expert-2 side. For `K = 3` the sum of the same
    integral over the three top-two interfaces (rays in the logit-difference
    plane), `s_ij` in place of `s` [X].

    The jump `J`:

    - `LinearTarget`: `E[Y | X]` is continuous, `J = 0`, `c = −G(0) E[Δf² | s = 0]`
      (softening helps).
    - `Teacher` whose interface coincides with the student's (a teacher pair
      score `a*_k − a*_l ≡ λ s` as affine functions, e.g. the student's own
      router): `J = sign(λ) (f*_k − f*_l)` where `(k, l)` are the teacher's top
      two. Realizable (`f* = f`, same router): `c = (2 ln 2 − 1) G(0) E[Δf² | s = 0]`.
    - `Teacher` with any other separator: the teacher's jump lies on a
      different hyperplane, which meets `S` in a set of `H^{d−1}`-measure zero,
      so `J = 0` a.e. on `S` and `c = −G(0) E[Δf² | s = 0]`. The contribution of
      the crossing is `O(τ²)`, and the teacher's interface at a distance `D`
      from `S` contributes `O(e^{−D/τ})`: the coefficient is exact, but the
      range of `τ` where `c τ` describes the gap shrinks as the interfaces
      approach, so `c` jumps when they coincide. Coincidence is decided on the
      parameters, with relative tolerance `coincidence_tol`.

    Args:
        model: `MoE(LinearRouter, LinearExperts)`, `K ∈ {2, 3}`.
        teacher: `Teacher` (linear, `K* ≤ 3`) or `LinearTarget`.
        law: `Gaussian`.
        coincidence_tol: relative distance below which a teacher pair's
            coefficient vector `(W*_k − W*_l, b*_k − b*_l)` counts as parallel to
            the student's.

    Returns:
        scalar `c`.

    >>> from softhard import LinearExperts, LinearRouter, MoE, StandardGaussian, Teacher
    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 0.0]], b=[0.0, 0.0])
    >>> e = LinearExperts(B=[[0.0, 1.0], [0.0, -1.0]], c=[0.0, 0.0])
    >>> c = exact_gap_coefficient(MoE(r, e), Teacher(r, e), StandardGaussian(2))
    >>> round(float(c), 4)  # (2 ln 2 − 1) · φ(0) · E[(2 x_2)²]
    0.6164
    """
    st = _check_problem(model, teacher, law)
    bad = jnp.shape(coincidence_tol) != ()
    if not bad and is_concrete(coincidence_tol):
        bad = not float(coincidence_tol) >= 0
    if bad:
        raise ValueError(f"`coincidence_tol` must be a scalar >= 0, got {coincidence_tol!r}")
    return _gap_coefficient(model, teacher, law, coincidence_tol, st)
