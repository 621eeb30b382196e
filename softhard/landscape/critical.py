"""Critical points of a loss and their type: minimum, strict saddle, degenerate (§5).

`find_critical_points` runs `optax` searches (Adam, then L-BFGS, then Newton
polishing for minima; Levenberg–Marquardt on `∇L = 0` for saddles) from a list
of starts and merges runs that reach the same point up to the router gauge and
an expert relabelling (`softhard.landscape.gauge`). `classify_critical_point`
reads the type off the gauge-fixed Hessian spectrum (Theorem 5.17: every
critical point whose hard partition is not teacher-equivalent is a strict
saddle, `λ_min(∇²L_τ) < 0`), through the operator layer.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._validate import check_kind
from ._operator import LinearOperator, _hessian_operator, as_operator, check_loss, flat_loss
from .gauge import canonical_form, permutable, permute_experts, resolve_gauge
from .spectra import hessian_spectrum

__all__ = ["CriticalPoint", "Classification", "find_critical_points", "classify_critical_point"]


class CriticalPoint(NamedTuple):
    """A critical point found by `find_critical_points`.

    Attributes:
        params: the parameter pytree.
        loss: scalar loss value.
        grad_norm: scalar `‖∇L‖` (Euclidean, raveled).
        count: how many initialisations converged to it (up to permutation/gauge).
        method: `"minimum"` (Adam/L-BFGS/Newton) or `"saddle"` (gradient-norm
            minimisation/Newton), the search that found it first.
    """

    params: object
    loss: float
    grad_norm: float
    count: int
    method: str


class Classification(NamedTuple):
    """The type of a critical point (`classify_critical_point`).

    Attributes:
        kind: `"minimum"`, `"strict saddle"` (λ_min < −tol; includes maxima),
            `"degenerate"` (|λ_min| ≤ tol) or `"not critical"` (‖∇L‖ > grad_tol).
        lambda_min: smallest (gauge-fixed) Hessian eigenvalue.
        lambda_max: largest (gauge-fixed) Hessian eigenvalue.
        grad_norm: `‖∇L‖` (NaN when an operator was classified: no gradient).
        num_negative: number of eigenvalues `< −tol` (the Morse index; `-1`
            when only the extreme eigenvalues were computed).
        tol: the eigenvalue tolerance used.
        gauge_dim: number of gauge directions projected out.
    """

    kind: str
    lambda_min: float
    lambda_max: float
    grad_norm: float
    num_negative: int
    tol: float
    gauge_dim: int


# ----------------------------------------------------------------------------
# deduplication up to gauge and permutation
# ----------------------------------------------------------------------------


def _num_experts_of(params):
    """`K` for a model whose router and bank can be permuted, else `None`."""
    if not permutable(params):
        return None
    K = getattr(params.router, "num_experts", None)
    return getattr(params.experts, "num_experts", None) if K is None else K


def _same_point(p, q, tol) -> bool:
    """Whether `p` and `q` coincide up to gauge and expert permutation."""
    a = np.asarray(ravel_pytree(canonical_form(p))[0])
    scale = 1.0 + np.linalg.norm(a)
    K = _num_experts_of(q)
    perms = [None] if K is None or K > 7 else itertools.permutations(range(K))
    for perm in perms:
        qq = q if perm is None else permute_experts(q, perm)
        b = np.asarray(ravel_pytree(canonical_form(qq))[0])
        if np.linalg.norm(a - b) <= tol * scale:
            return True
    return False


# ----------------------------------------------------------------------------
# the optimiser runs (on raveled vectors)
# ----------------------------------------------------------------------------


def _call_with(loss_fn, args, p):
    return loss_fn(p, *args)


def _flat_with(loss_fn, params, args):
    """`flat_loss` of `p ↦ loss_fn(p, *args)`."""
    return flat_loss(functools.partial(_call_with, loss_fn, args), params)


@functools.partial(jax.jit, static_argnames=("loss_fn", "steps", "learning_rate"))
def _adam_run(loss_fn, params, args, steps, learning_rate):
    # optimisers run on the raveled vector: tree utilities that reduce leaves to
    # scalars cannot rebuild shape-validated model dataclasses
    f, flat, unravel = _flat_with(loss_fn, params, args)
    opt = optax.adam(learning_rate)

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(f)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (flat, opt.init(flat)), None, length=steps)
    return unravel(p)


@functools.partial(jax.jit, static_argnames=("loss_fn", "max_iters"))
def _lbfgs_run(loss_fn, params, args, tol, max_iters):
    """`optax.lbfgs` (backtracking line search) on `L` until `‖∇L‖ ≤ tol`."""
    f, flat, unravel = _flat_with(loss_fn, params, args)
    opt = optax.lbfgs(
        linesearch=optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=40, store_grad=True
        )
    )
    vg = optax.value_and_grad_from_state(f)

    def cond(carry):
        _, s, it = carry
        gn = jnp.linalg.norm(optax.tree_utils.tree_get(s, "grad"))
        return (it == 0) | ((it < max_iters) & (gn > tol) & jnp.isfinite(gn))

    def body(carry):
        p, s, it = carry
        value, g = vg(p, state=s)
        u, s = opt.update(g, s, p, value=value, grad=g, value_fn=f)
        return optax.apply_updates(p, u), s, it + 1

    p, _, _ = jax.lax.while_loop(cond, body, (flat, opt.init(flat), 0))
    return unravel(p)


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _levenberg_marquardt(loss_fn, params, args, tol, steps):
    """Minimise `½‖∇L‖²` by Levenberg–Marquardt on `∇L = 0` (Jacobian `∇²L`).

    Trial step `−V diag(λ_i/(λ_i² + μ)) Vᵀ ∇L` from the eigendecomposition
    `∇²L = V diag(λ) Vᵀ` (the dense `hessian_operator` at each iterate);
    accepted when it lowers `‖∇L‖`, after which `μ` is divided by 10,
    otherwise multiplied by 10. Newton's method (quadratic convergence to a
    critical point of any index) once `μ → 0`, a descent method for `‖∇L‖`
    far from one. Exact null directions (gauge, `λ_i = 0`) are never moved
    along. `steps` trials at most, in one `lax.while_loop`.
    """
    f, flat, unravel = _flat_with(loss_fn, params, args)

    def system(p):
        g = jax.grad(f)(p)
        vals, vecs = jnp.linalg.eigh(_hessian_operator(f, p).dense(None))
        return g, vals, vecs, jnp.linalg.norm(g)

    g0, vals0, vecs0, gn0 = system(flat)
    scale0 = jnp.maximum(jnp.max(jnp.abs(vals0)), jnp.finfo(flat.dtype).tiny)
    mu0 = 1e-4 * scale0**2

    def cond(c):
        _, _, _, _, gn, mu, it = c
        scale = jnp.maximum(jnp.max(jnp.abs(c[2])), jnp.finfo(flat.dtype).tiny)
        return (it < steps) & (gn > 1e-3 * tol) & jnp.isfinite(gn) & (mu < 1e30 * scale**2)

    def body(c):
        p, g, vals, vecs, gn, mu, it = c
        scale = jnp.max(jnp.abs(vals))
        keep = jnp.abs(vals) > 1e-12 * scale
        coef = jnp.where(keep, vals / (vals**2 + mu) * (vecs.T @ g), 0.0)
        cand = p - vecs @ coef
        g2, vals2, vecs2, gn2 = system(cand)
        ok = jnp.isfinite(gn2) & (gn2 < gn)
        pick = functools.partial(jnp.where, ok)
        return (
            pick(cand, p),
            pick(g2, g),
            pick(vals2, vals),
            pick(vecs2, vecs),
            pick(gn2, gn),
            jnp.where(ok, mu / 10.0, jnp.maximum(mu * 10.0, 1e-30 * scale**2)),
            it + 1,
        )

    out = jax.lax.while_loop(cond, body, (flat, g0, vals0, vecs0, gn0, mu0, 0))
    return unravel(out[0]), out[4]


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _value_and_grad_norm(loss_fn, params, args):
    f, flat, _ = _flat_with(loss_fn, params, args)
    v, g = jax.value_and_grad(f)(flat)
    return v, jnp.linalg.norm(g)


def find_critical_points(
    loss_fn: Callable,
    inits: Sequence,
    *,
    args: tuple = (),
    kind: str = "minimum",
    tol: float = 1e-8,
    adam_steps: int = 300,
    learning_rate: float = 1e-2,
    max_iters: int = 2000,
    newton_steps: int = 30,
    saddle_steps: int = 200,
    dedup_tol: float = 1e-5,
) -> list[CriticalPoint]:
    """Critical points of `loss_fn` from a list of starting points, deduplicated.

    * `kind="minimum"`: Adam (`adam_steps`, `optax.adam`), then L-BFGS
      (`optax.lbfgs`, backtracking line search) until `‖∇L‖ ≤ tol`, then
      Newton polishing (`newton_steps` damped steps, below).
    * `kind="saddle"`: gradient-norm minimisation of `½‖∇L‖²` by
      Levenberg–Marquardt on `∇L = 0` with the dense Hessian as Jacobian
      (`saddle_steps` steps): a descent method for `‖∇L‖` far from a critical
      point and Newton's method near one, so it converges quadratically to
      critical points of any index. The exact gauge null directions of the
      Hessian are never moved along.
    * `kind="any"`: both searches from every start.

    A run counts when it reaches `‖∇L‖ ≤ tol` (the default `1e-8` needs
    float64). Points are returned in their gauge-fixed form
    (`canonical_router`: linear router output rows centred; `NormalizedRouter`
    rows of unit length, where the raw gradient and Hessian scale with
    `1/‖w_k‖`). Runs that reach the same point up to the router gauge and an
    expert relabelling (`permute_experts`, registered models, `K ≤ 7`) are
    merged (relative distance `≤ dedup_tol`).

    Dense Newton steps make this a tool for small models (`P` up to a few
    thousand); the optimiser loops are jitted once per `loss_fn` object, so
    pass changing data (a temperature, a sample) through `args`.

    Args:
        loss_fn: `(params, *args) -> scalar`.
        inits: a sequence of parameter pytrees (starting points).
        args: extra arguments passed to `loss_fn` (traced, no recompilation).
        kind: `"minimum"`, `"saddle"` or `"any"`.
        tol: gradient-norm tolerance.
        adam_steps, learning_rate: the Adam warm-up (minima only).
        max_iters: L-BFGS iteration cap.
        newton_steps: Newton polishing iteration cap (minima).
        saddle_steps: Levenberg–Marquardt iteration cap (saddles).
        dedup_tol: relative distance below which two points are the same.

    Returns:
        list of `CriticalPoint`, sorted by loss.
    """
    check_kind(kind, "kind", ("minimum", "saddle", "any"))
    if not isinstance(inits, (list, tuple)) or len(inits) == 0:
        raise ValueError("`inits` must be a non-empty list of parameter pytrees")
    if not tol > 0:
        raise ValueError(f"`tol` must be > 0, got {tol!r}")
    args = tuple(args)
    check_loss(functools.partial(_call_with, loss_fn, args), inits[0])
    methods = ["minimum", "saddle"] if kind == "any" else [kind]
    found: list[CriticalPoint] = []
    for p0 in inits:
        for method in methods:
            # the gauge-fixed representative between stages: for a scale-invariant
            # router (NormalizedRouter) the raw gradient shrinks as the rows grow,
            # which would fake convergence
            p = canonical_form(p0)
            if method == "minimum":
                if adam_steps > 0:
                    p = _adam_run(loss_fn, p, args, int(adam_steps), float(learning_rate))
                p = _lbfgs_run(loss_fn, canonical_form(p), args, tol, int(max_iters))
                p, gn = _levenberg_marquardt(
                    loss_fn, canonical_form(p), args, tol, int(newton_steps)
                )
            else:
                p, gn = _levenberg_marquardt(loss_fn, p, args, tol, int(saddle_steps))
            p = canonical_form(p)
            value, gn = (float(v) for v in _value_and_grad_norm(loss_fn, p, args))
            if not gn <= tol:
                continue
            for i, c in enumerate(found):
                if _same_point(p, c.params, dedup_tol):
                    found[i] = c._replace(count=c.count + 1)
                    break
            else:
                found.append(CriticalPoint(p, value, gn, 1, method))
    return sorted(found, key=lambda c: c.loss)


# ----------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("loss_fn",))
def _dense_classify(loss_fn, params, args, G):
    """`‖∇L‖` and the (gauge-fixed) dense spectrum, in one compiled call."""
    f = functools.partial(_call_with, loss_fn, args)
    gn = jnp.linalg.norm(ravel_pytree(jax.grad(f)(params))[0])
    return gn, jnp.linalg.eigvalsh(_hessian_operator(f, params, G).restricted(None)[0])


def _operator_spectrum(op: LinearOperator, dense_limit: int):
    """`(eigenvalues ascending, all?)`: the dense spectrum, or Lanczos extremes above the limit."""
    if op.free_size <= dense_limit:
        return jnp.linalg.eigvalsh(op.restricted(None)[0]), True
    return hessian_spectrum(op, None, 1, which="both").eigenvalues, False


def classify_critical_point(
    loss_fn,
    params=None,
    tol=None,
    *,
    gauge="auto",
    grad_tol=None,
    args: tuple = (),
    dense_limit: int = 4000,
) -> Classification:
    """Minimum, strict saddle or degenerate, from the (gauge-fixed) Hessian spectrum.

    A critical point is a *strict saddle* when `λ_min(∇²L) < 0` (Theorem 5.17);
    here `λ_min < −tol` gives `"strict saddle"` (local maxima included),
    `λ_min > tol` gives `"minimum"`, and otherwise `"degenerate"`. The gauge
    directions (`gauge_directions`) are exact null vectors of the Hessian of
    a softmax-routed model at a critical point, so by default
    (`gauge="auto"`) the spectrum is taken on their orthogonal complement;
    with `gauge=None` a minimum of a linear router is reported `"degenerate"`.

    `loss_fn` may also be a `LinearOperator` (e.g. `hessian_operator(...,
    gauge=G)`) or a symmetric matrix, with `params=None`: the Hessian is then
    given, `"auto"` keeps the operator's own gauge, and there is no gradient
    (`grad_norm` is NaN, `grad_tol` must be `None`).

    Args:
        loss_fn: `(params, *args) -> scalar`, or an operator or a matrix.
        params: the candidate critical point (with a loss function).
        tol: eigenvalue tolerance (default `sqrt(eps) · max(1, max|λ|)`:
            `1.5e-8` relative in float64).
        gauge: `"auto"`, `None` or a `[P, G]` basis.
        grad_tol: when given, `‖∇L‖ > grad_tol` gives `"not critical"`.
        args: extra arguments, `loss_fn(params, *args)`; the dense path is
            compiled once per `loss_fn` object, so pass changing data here.
        dense_limit: above this many (gauge-fixed) parameters the extreme
            eigenvalues come from Lanczos (`num_negative` is then `-1`).

    Returns:
        `Classification(kind, lambda_min, lambda_max, grad_norm, num_negative, tol, gauge_dim)`.
    """
    args = tuple(args)
    if callable(loss_fn):  # a loss; an operator or a matrix is not callable
        f = functools.partial(_call_with, loss_fn, args)
        check_loss(f, params)
        G = resolve_gauge(gauge, params)
        flat = ravel_pytree(params)[0]
        dtype, gdim = flat.dtype, 0 if G is None else int(G.shape[1])
        if flat.shape[0] - gdim <= dense_limit:
            (gn, vals), full = _dense_classify(loss_fn, params, args, G), True
        else:
            gn = jnp.linalg.norm(ravel_pytree(jax.grad(f)(params))[0])
            vals, full = _operator_spectrum(_hessian_operator(f, params, G), dense_limit)
    else:
        if grad_tol is not None:
            raise ValueError("`grad_tol` needs a loss function: an operator has no gradient")
        op = as_operator(loss_fn, params, gauge=gauge)
        gn, dtype, gdim = math.nan, op.dtype, op.gauge_dim
        vals, full = _operator_spectrum(op, dense_limit)
    gn, vals = float(gn), np.asarray(vals)
    lmin, lmax = float(vals[0]), float(vals[-1])
    if tol is None:
        eps = float(jnp.finfo(dtype).eps)
        tol = math.sqrt(eps) * max(1.0, abs(lmin), abs(lmax))
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0, got {tol!r}")
    nneg = int(np.sum(vals < -tol)) if full else -1
    if grad_tol is not None and gn > float(grad_tol):
        kind = "not critical"
    elif lmin < -tol:
        kind = "strict saddle"
    elif lmin > tol:
        kind = "minimum"
    else:
        kind = "degenerate"
    return Classification(kind, lmin, lmax, gn, nneg, tol, gdim)
