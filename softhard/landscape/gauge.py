"""Router symmetries by dispatch: gauge bases, expert permutations, canonical forms (§2, §5).

A softmax router is invariant under adding one function to every logit
(EQUATIONS.md §2, "Symmetries"), and an MoE under relabelling its experts.
What these symmetries look like in parameter space depends on the router and
expert-bank classes, so each is a `functools.singledispatch` function with one
registration per built-in class:

* `gauge_basis(router) -> [p_r, G] | None`: an orthonormal basis of the
  router's gauge directions in its raveled parameter space;
* `permute_router(router, perm)` / `permute_bank(experts, perm)`: relabel the
  experts (`perm: [K]` NumPy ints; expert `k` of the result is `perm[k]`);
* `canonical_router(router)`: a gauge-fixed representative.

A user registers their own classes the same way, e.g.

    @softhard.landscape.gauge_basis.register(MyRouter)
    def _(router): ...

An unregistered router has no analytic gauge (`gauge_directions` finds it
numerically when given a sample `x`), is its own canonical form, and cannot
be permuted (a `ValueError` that says what to register).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._trees import partition, ravel_arrays
from .._validate import check_permutation, check_x, num_experts_of
from ..models import LinearExperts, LinearRouter, MLPExperts, MLPRouter, NormalizedRouter

__all__ = [
    "gauge_basis",
    "gauge_directions",
    "permute_router",
    "permute_bank",
    "canonical_router",
    "canonical_form",
    "permute_experts",
]


def _registered(fn, obj) -> bool:
    """True when `fn` (a singledispatch function) has a registration for `type(obj)`."""
    return fn.dispatch(type(obj)) is not fn.dispatch(object)


# ----------------------------------------------------------------------------
# gauge bases
# ----------------------------------------------------------------------------


@functools.singledispatch
def gauge_basis(router) -> jax.Array | None:
    """Analytic gauge basis `[p_r, G]` of `router` in its raveled space (`None`: unknown).

    Registered for `LinearRouter` (`d + 1` translations), `MLPRouter` (`H + 1`
    translations of the output layer) and `NormalizedRouter` (`K` radial row
    directions and the bias shift). Register your own router class with
    `gauge_basis.register(MyRouter)`; the columns must be orthonormal.
    """
    del router
    return None


def _columns(router, updates) -> jax.Array:
    """Stack `ravel(replace(zeros_like(router), **u))` over the field updates `u`."""
    z = jax.tree.map(jnp.zeros_like, router)
    cols = [ravel_pytree(_tangent(z, u(z)))[0] for u in updates]
    return jnp.stack(cols, axis=1)


def _tangent(z, fields: dict):
    """`z` with `fields` replaced, without the constructor's checks.

    A gauge column is a tangent vector, not a router: a translation of one
    row of a `NormalizedRouter` has zero rows elsewhere, which the constructor
    rightly refuses for a model (as `jax.grad` cotangents skip it).
    """
    out = copy.copy(z)
    for name, value in fields.items():
        object.__setattr__(out, name, value)
    return out


def _translations(router, w: str, b: str) -> jax.Array:
    """`W ↦ W + 1uᵀ` (one column per input unit) and `b ↦ b + c1`, columns `1/√K`."""
    K, d = getattr(router, w).shape[-2:]
    c = 1.0 / math.sqrt(K)
    updates = [lambda z, j=j: {w: getattr(z, w).at[:, j].set(c)} for j in range(d)]
    updates.append(lambda z: {b: getattr(z, b) + c})
    return _columns(router, updates)


@gauge_basis.register(LinearRouter)
def _(router):
    return _translations(router, "W", "b")


@gauge_basis.register(MLPRouter)
def _(router):
    return _translations(router, "W2", "b2")


@gauge_basis.register(NormalizedRouter)
def _(router):
    K = router.W.shape[-2]
    unit = router.W / jnp.sqrt(jnp.sum(router.W**2, axis=-1, keepdims=True))
    updates = [lambda z, k=k: {"W": z.W.at[k].set(unit[k])} for k in range(K)]
    updates.append(lambda z: {"b": z.b + 1.0 / math.sqrt(K)})
    return _columns(router, updates)


def _numeric_gauge(router, x, rtol) -> jax.Array:
    """Null space `[p_r, G]` of the Jacobian of the centred logits over a sample.

    Differentiates in the inexact-array leaves of `router` only (`ravel_arrays`),
    so an equinox or flax router with function or integer leaves works. The
    cut-off is `rtol · s_max`, `rtol` by default `default_rtol(dtype, J.shape)`.
    """
    flat, unravel = ravel_arrays(router)

    def centred(p):
        a = jax.vmap(unravel(p))(x)
        return (a - jnp.mean(a, axis=-1, keepdims=True)).ravel()

    J = jax.jacfwd(centred)(flat)  # [n K, p_r]
    if rtol is None:
        rtol = default_rtol(flat.dtype, J.shape)
    _, s, vt = jnp.linalg.svd(J, full_matrices=True)
    s_full = jnp.zeros(flat.shape[0], s.dtype).at[: s.shape[0]].set(s)
    null = np.asarray(s_full <= rtol * (s[0] if s.size else 1.0))
    return vt[null].T


def default_rtol(dtype, shape) -> float:
    """Default relative cut-off of the numerical gauge: `10 · max(m, p) · eps`, `J: [m, p]`.

    The rounding level of the singular values of a Jacobian computed in
    `dtype` (as in `numpy.linalg.matrix_rank`, with a factor 10 of headroom):
    `1.8e-3` in float32 and `3.4e-12` in float64 at `m = 1536`. Exact
    invariances have singular values at this level in either precision; a
    larger `rtol` also counts nearly flat (not invariant) directions as gauge,
    which would hide their curvature from the spectrum.
    """
    return 10.0 * max(int(d) for d in shape) * float(jnp.finfo(dtype).eps)


def _check_rtol(rtol):
    if rtol is None:
        return None
    if not (isinstance(rtol, (int, float, np.floating)) and not isinstance(rtol, bool)):
        raise ValueError(f"`rtol` must be a positive number or None, got {rtol!r}")
    if not (0 < float(rtol) < 1):
        raise ValueError(
            f"`rtol` must be in (0, 1) (a relative singular-value cut-off), got {rtol!r}"
        )
    return float(rtol)


def gauge_directions(model, *, x: jax.Array | None = None, rtol: float | None = None) -> jax.Array:
    """Orthonormal basis of the router gauge directions in raveled parameter space.

    Softmax gates (2.3) are unchanged when one function `c(x)` is added to
    every logit (EQUATIONS.md §2, "Symmetries"). Within a parameterisation:

    * `LinearRouter`: `W ↦ W + 1uᵀ` (`u ∈ R^d`) and `b ↦ b + c1`, `d + 1`
      directions (columns `1/√K` on one coordinate of every row);
    * `MLPRouter`: the same on the output layer `(W2, b2)`, `H + 1` directions;
    * `NormalizedRouter`: each row's radial direction `w_k/‖w_k‖` (`K`) and
      the common bias shift, `K + 1` directions (these depend on the point).

    The loss is constant along each of them. The translations (linear and
    MLP output layers, the bias shift) are exact null vectors of the Hessian
    at every point; a radial direction of `NormalizedRouter` satisfies
    `H w_k = −∇_{w_k} L` (Euler's identity for a scale-invariant function), so
    it is a null vector exactly at critical points, where spectra are read.
    Every router found in `model` (the model itself, `model.router`, or any
    node of the pytree) whose class has a `gauge_basis` registration (the
    built-ins, and any a user registers) contributes its directions at its
    raveled offset. With a sample `x`, the directions are instead found
    numerically for `model.router` (any router, including an unregistered
    one): the null space of the Jacobian of the centred logits
    `a(x_n) − mean_k a_k(x_n)` over up to 512 rows of `x`, singular values
    below `rtol · s_max` (this also finds other exact invariances, e.g. dead
    units). Without `x` an unregistered router contributes no directions.

    Rows are positions in the raveled *inexact-array* leaves of `model`
    (`softhard._trees.ravel_arrays`): function, integer and other static
    leaves of an equinox or flax model are not parameters.

    Args:
        model: a router, an MoE-like pytree, or any pytree holding routers.
        x: optional `[N, d]` sample for the numerical null space.
        rtol: relative singular-value cut-off of the numerical null space, in
            `(0, 1)`; default `None` scales it to the dtype and the Jacobian's
            size (`default_rtol`: `10 · max(m, p) · eps`, so float32 finds the
            same gauge as float64).

    Returns:
        `[P, G]` with orthonormal columns (`G = 0` when there is no gauge).

    >>> from softhard import LinearRouter
    >>> gauge_directions(LinearRouter(W=jnp.ones((3, 2)), b=jnp.zeros(3))).shape
    (9, 3)
    """
    rtol = _check_rtol(rtol)
    custom = None
    if x is not None:
        x = check_x(x)
        custom = model.router if hasattr(model, "router") else model
        if not callable(custom):
            raise ValueError("`model.router` (or `model`) must be a callable router for `x=`")

    def is_router(node):
        return (custom is not None and node is custom) or _registered(gauge_basis, node)

    nodes = jax.tree_util.tree_flatten(model, is_leaf=is_router)[0]
    flat, _ = ravel_arrays(model)
    P = flat.shape[0]
    blocks = []
    offset = 0
    for node in nodes:
        size = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(partition(node)[0]))
        if custom is not None and node is custom:
            basis = _numeric_gauge(node, x[:512].astype(flat.dtype), rtol)
        else:
            basis = gauge_basis(node)
        if basis is not None and basis.shape[1] > 0:
            full = jnp.zeros((P, basis.shape[1]), flat.dtype)
            blocks.append(full.at[offset : offset + size].set(basis.astype(flat.dtype)))
        offset += size
    if not blocks:
        return jnp.zeros((P, 0), flat.dtype)
    return jnp.concatenate(blocks, axis=1)


def check_basis(gauge, P: int):
    """`None` or an orthonormalised `[P, G]` basis (`None` when `G = 0`)."""
    if gauge is None:
        return None
    G = jnp.asarray(gauge)
    if G.ndim != 2 or G.shape[0] != P:
        raise ValueError(f"`gauge` must be a [P, G] basis with P = {P}, got shape {G.shape}")
    if G.shape[1] == 0:
        return None
    return jnp.linalg.qr(G)[0]


def resolve_gauge(gauge, params, x=None):
    """`gauge` (`None`, `"auto"` or a `[P, G]` basis) as `None` or an orthonormal basis.

    `"auto"` is `gauge_directions(params, x=x)`: the registered routers'
    analytic gauge, or with a sample `x` the numerical gauge of
    `params.router` (what an unregistered, e.g. equinox, router needs).
    """
    if isinstance(gauge, str):
        if gauge != "auto":
            raise ValueError(f"`gauge` must be None, 'auto' or a [P, G] basis, got {gauge!r}")
        G = gauge_directions(params, x=x)
        return G if G.shape[1] > 0 else None
    if x is not None:
        raise ValueError("`gauge_x` is used only with gauge='auto'")
    return check_basis(gauge, ravel_arrays(params)[0].shape[0])


# ----------------------------------------------------------------------------
# expert permutations and canonical forms
# ----------------------------------------------------------------------------


def _unregistered(kind: str, obj):
    name = type(obj).__name__
    raise ValueError(
        f"no expert permutation is known for the {kind} type {name}: register one with "
        f"`softhard.landscape.permute_{kind}.register({name})`"
    )


@functools.singledispatch
def permute_router(router, perm: np.ndarray):
    """Permute a router's outputs: output `k` of the result is output `perm[k]`.

    Registered for `LinearRouter`, `NormalizedRouter` and `MLPRouter`; an
    unregistered class raises a `ValueError` naming what to register.
    """
    del perm
    _unregistered("router", router)


@functools.singledispatch
def permute_bank(experts, perm: np.ndarray):
    """Permute an expert bank: expert `k` of the result is expert `perm[k]`.

    Registered for `LinearExperts` and `MLPExperts`; an unregistered class
    raises a `ValueError` naming what to register.
    """
    del perm
    _unregistered("bank", experts)


def _take(obj, perm, names):
    return dataclasses.replace(obj, **{n: getattr(obj, n)[perm] for n in names})


permute_router.register(LinearRouter, lambda r, perm: _take(r, perm, ("W", "b")))
permute_router.register(NormalizedRouter, lambda r, perm: _take(r, perm, ("W", "b")))
permute_router.register(MLPRouter, lambda r, perm: _take(r, perm, ("W2", "b2")))
permute_bank.register(LinearExperts, lambda e, perm: _take(e, perm, ("B", "c")))
permute_bank.register(MLPExperts, lambda e, perm: _take(e, perm, ("W1", "b1", "W2", "b2")))


def permutable(model) -> bool:
    """True when `model.router` and `model.experts` both have permutation registrations."""
    return _registered(permute_router, getattr(model, "router", None)) and _registered(
        permute_bank, getattr(model, "experts", None)
    )


def permute_experts(model, perm):
    """Relabel the experts of an MoE: expert `k` of the result is expert `perm[k]`.

    Permutes the router's output rows and the expert bank together, which
    leaves `f_τ` unchanged (EQUATIONS.md §2, "Symmetries"), through
    `permute_router` and `permute_bank`: the built-in routers (`LinearRouter`,
    `MLPRouter`, `NormalizedRouter`) and expert banks (`LinearExperts`,
    `MLPExperts`), and any class registered with them.

    Args:
        model: an MoE-like pytree with `.router` and `.experts`.
        perm: `[K]` a permutation of `range(K)`.

    Returns:
        the relabelled model, same type.
    """
    if not hasattr(model, "router") or not hasattr(model, "experts"):
        raise ValueError("`model` must have `.router` and `.experts` fields")
    perm = check_permutation(perm, num_experts_of(model))
    r, e = permute_router(model.router, perm), permute_bank(model.experts, perm)
    return dataclasses.replace(model, router=r, experts=e)


@functools.singledispatch
def canonical_router(router):
    """Gauge-fixed representative of a router (an unregistered router is its own).

    `LinearRouter`: rows centred (`W − mean_k W_k`, `b − mean b`); `MLPRouter`:
    the same on the output layer; `NormalizedRouter`: unit rows, centred bias.
    """
    return router


@canonical_router.register(LinearRouter)
def _(r):
    return dataclasses.replace(r, W=r.W - r.W.mean(0, keepdims=True), b=r.b - r.b.mean())


@canonical_router.register(MLPRouter)
def _(r):
    return dataclasses.replace(r, W2=r.W2 - r.W2.mean(0, keepdims=True), b2=r.b2 - r.b2.mean())


@canonical_router.register(NormalizedRouter)
def _(r):
    unit = r.W / jnp.sqrt(jnp.sum(r.W**2, axis=-1, keepdims=True))
    return dataclasses.replace(r, W=unit, b=r.b - r.b.mean())


def canonical_form(params):
    """`params` with its router gauge-fixed (`canonical_router`); a router itself, or
    a dataclass model with a `.router` field."""
    if hasattr(params, "router") and dataclasses.is_dataclass(params):
        return dataclasses.replace(params, router=canonical_router(params.router))
    return canonical_router(params)
