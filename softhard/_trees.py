"""Array/static leaf filtering of model pytrees (DESIGN.md, Conventions).

A user's router may be an equinox or flax `nnx` module whose pytree carries
non-array leaves: activation functions, `custom_jvp` objects, Python numbers,
strings. softhard differentiates, jits, sweeps and builds Hessians over the
*inexact-array* leaves only, the idea of equinox's `filter`:

    params, static = partition(model)      # params: arrays, None elsewhere
    model = combine(params, static)        # the inverse

`filter_jit(fn)` jits `fn` with every non-array leaf of every argument made
static (hashed by value where it can be, by identity otherwise), so a model
with a `jax.nn.relu` leaf passes through `jax.jit` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["combine", "filter_jit", "is_inexact_array", "partition", "ravel_arrays"]


def is_inexact_array(x) -> bool:
    """True for a JAX or NumPy array (or tracer) with a floating or complex dtype."""
    if isinstance(x, jax.Array | np.ndarray | np.generic):
        return jnp.issubdtype(x.dtype, jnp.inexact)
    return False


def is_array(x) -> bool:
    """True for any JAX or NumPy array or tracer (integer and boolean ones included)."""
    return isinstance(x, jax.Array | np.ndarray | np.generic)


def partition(tree, predicate: Callable = is_inexact_array):
    """Split `tree` into `(arrays, static)`: the leaves where `predicate` holds, and the rest.

    Both halves have `tree`'s structure with `None` where the other half has
    a leaf; `combine(arrays, static)` rebuilds `tree`.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keep = [predicate(v) for v in leaves]
    arrays = [v if k else None for v, k in zip(leaves, keep)]
    static = [None if k else v for v, k in zip(leaves, keep)]
    return treedef.unflatten(arrays), treedef.unflatten(static)


def combine(*trees):
    """Merge trees of one structure that hold `None` where another holds a leaf."""

    def first(*xs):
        return next((x for x in xs if x is not None), None)

    return jax.tree_util.tree_map(first, *trees, is_leaf=lambda x: x is None)


class _Static:
    """A hashable holder of the static half of an argument (jit's `static_argnums`)."""

    __slots__ = ("_key", "tree")

    def __init__(self, tree):
        self.tree = tree
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        self._key = (treedef, tuple(_hash_key(v) for v in leaves))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and self._key == other._key


def _hash_key(v):
    try:
        hash(v)
    except TypeError:
        return ("id", id(v))
    return ("value", type(v), v)


def filter_jit(fn: Callable) -> Callable:
    """`jax.jit(fn)` with every non-array leaf of every positional and keyword argument static.

    Arrays (of any dtype) are traced; everything else (functions, numbers,
    strings, `None`) is part of the compilation key, as in `equinox.filter_jit`.
    Returned values must be arrays (or pytrees of arrays).
    """

    @functools.partial(jax.jit, static_argnums=(1,))
    def jitted(dynamic, static):
        args, kwargs = combine(dynamic, static.tree)
        return fn(*args, **kwargs)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dynamic, static = partition((args, kwargs), is_array)
        return jitted(dynamic, _Static(static))

    return wrapper


def ravel_arrays(tree):
    """`ravel_pytree` over the inexact-array leaves of `tree` only.

    Returns `(flat [P], unravel)` where `unravel(flat)` rebuilds the whole
    tree, non-array leaves included (they are carried, not raveled).
    """
    from jax.flatten_util import ravel_pytree

    arrays, static = partition(tree)
    flat, unravel_arrays = ravel_pytree(arrays)

    def unravel(v):
        return combine(unravel_arrays(v), static)

    return flat, unravel
