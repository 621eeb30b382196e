"""The operator layer: the Hessian (or any symmetric matrix) as a matvec.

Every spectral routine of `softhard.landscape` (and the Section 6 operator
spectra) works on a `LinearOperator`: a symmetric linear map on `R^P` given by
its matrix-vector product, its size and dtype, with an optional gauge basis
`G: [P, G]` whose span it projects out (`u ↦ Π A Π u`, `Π = I − G Gᵀ`), and a
dense materialisation. There are three ways to get one:

* `hessian_operator(loss_fn, params)`: the Hessian `∇²L` at `params`, its
  matvec `u ↦ ∇²L u` linearised once (`jax.linearize(jax.grad(f), p)`,
  forward-over-reverse, so each product costs about one gradient);
* `linear_operator(matvec, size)`: wraps a bare matvec callable;
* a dense symmetric `[P, P]` matrix.

`as_operator` turns any of these (or a `(loss_fn, params)` pair) into an
operator; every spectral routine calls it on its first arguments, so a plain
callable there is always a *loss* and never ambiguous with a matvec (the
pattern of `jax.scipy.sparse.linalg._normalize_matvec`, and of lineax's
`FunctionLinearOperator`).

Parameter pytrees are *raveled* with `jax.flatten_util.ravel_pytree` (leaf
order of `jax.tree_util.tree_leaves`); `LinearOperator.unravel` maps a `[P]`
vector back to a pytree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._validate import check_count, check_finite_params, check_square
from .gauge import resolve_gauge

__all__ = ["LinearOperator", "hessian_operator", "linear_operator", "as_operator"]

_HP = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class LinearOperator:
    """A symmetric linear operator on `R^P`, defined by its matrix-vector product.

    With a gauge basis the operator is `Π A Π`, `Π = I − G Gᵀ`: `matvec`
    already includes the projections, and spectra are taken on the
    `P − G`-dimensional complement of `span(G)` (`free_size`).

    Attributes:
        matvec: `u: [P] -> A u: [P]`, pure and traceable (`vmap` over it works).
        size: `P`.
        dtype: the dtype `matvec` works in.
        unravel: `[P] -> pytree` for an operator on raveled parameters (the
            Hessian of a pytree function), else `None`.
        gauge: `[P, G]` orthonormal basis projected out, or `None`.
        matrix: the dense `[P, P]` matrix when the operator was built from one
            (then `dense()` returns it unchanged), else `None`.

    >>> op = linear_operator(lambda u: 2.0 * u, 3)
    >>> op.dense().tolist()
    [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    """

    matvec: Callable
    size: int
    dtype: object
    unravel: Callable | None = None
    gauge: jax.Array | None = None
    matrix: jax.Array | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """`(P, P)`."""
        return (self.size, self.size)

    @property
    def gauge_dim(self) -> int:
        """Number of gauge directions projected out (`G`, 0 without a gauge)."""
        return 0 if self.gauge is None else int(self.gauge.shape[1])

    @property
    def free_size(self) -> int:
        """`P − G`, the dimension of the space the spectrum lives on."""
        return self.size - self.gauge_dim

    def project(self, u: jax.Array) -> jax.Array:
        """`Π u = u − G (Gᵀ u)` in `u`'s dtype (`u` itself without a gauge); `u: [P]`."""
        if self.gauge is None:
            return u
        G = self.gauge.astype(u.dtype)
        return u - jnp.dot(G, jnp.dot(G.T, u, precision=_HP), precision=_HP)

    def dense(self, batch_size: int | None = 64) -> jax.Array:
        """The `[P, P]` matrix, symmetrised: `matvec` mapped over the identity's columns.

        The columns are computed in batches of `batch_size` tangents
        (`jax.lax.map`), so memory stays `O(batch_size · cost of one matvec)`;
        `None` maps them all at once (`jax.vmap`, i.e. `jax.jacfwd` of the gradient).
        """
        if self.matrix is not None:
            return self.matrix
        eye = jnp.eye(self.size, dtype=self.dtype)
        if batch_size is None or batch_size >= self.size:
            H = jax.vmap(self.matvec)(eye)
        else:
            H = jax.lax.map(self.matvec, eye, batch_size=check_count(batch_size, "batch_size"))
        return 0.5 * (H + H.T)

    def restricted(self, batch_size: int | None = 64):
        """`(QᵀAQ: [P − G, P − G], Q: [P, P − G])`, `Q` an orthonormal basis of `span(G)^⊥`.

        Without a gauge: `(A: [P, P], None)`. Eigenvectors `w` of the first
        matrix are eigenvectors `Q w` of the operator.
        """
        A = self.dense(batch_size)
        if self.gauge is None:
            return A, None
        Q = complement(self.gauge)
        return jnp.dot(Q.T, jnp.dot(A, Q, precision=_HP), precision=_HP), Q


def complement(G: jax.Array) -> jax.Array:
    """Orthonormal basis `[P, P − G]` of the orthogonal complement of `G: [P, G]`."""
    u = jnp.linalg.svd(G, full_matrices=True)[0]
    return u[:, G.shape[1] :]


# ----------------------------------------------------------------------------
# constructors
# ----------------------------------------------------------------------------


def check_loss(loss_fn, params, name: str = "loss_fn") -> None:
    """`loss_fn` must map the floating, finite pytree `params` to a scalar."""
    if not callable(loss_fn):
        raise ValueError(f"`{name}` must be a callable params -> scalar, got {type(loss_fn)}")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("`params` must be a pytree with at least one array leaf")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"`params` leaves must be floating arrays, got dtype {leaf.dtype}")
    check_finite_params(params, "params")
    out = jax.eval_shape(loss_fn, params)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"`{name}` must return a scalar, got shape {getattr(out, 'shape', out)}")


def flat_loss(loss_fn: Callable, params):
    """`(f, flat: [P], unravel)` with `f(p: [P]) = loss_fn(unravel(p))`."""
    flat, unravel = ravel_pytree(params)

    def f(p):
        return loss_fn(unravel(p))

    return f, flat, unravel


def _with_gauge(matvec: Callable, size: int, dtype, unravel, G) -> LinearOperator:
    """The operator `u ↦ Π A Π u` (or `A u` when `G` is None) in `dtype`."""
    op = LinearOperator(matvec, size, dtype, unravel, G)
    if G is None:
        return op

    def projected(u):
        return op.project(matvec(op.project(u)))

    return dataclasses.replace(op, matvec=projected)


def _hessian_operator(loss_fn: Callable, params, G=None) -> LinearOperator:
    """`hessian_operator` without validation, for use inside transformations."""
    f, flat, unravel = flat_loss(loss_fn, params)
    _, lin = jax.linearize(jax.grad(f), flat)
    return _with_gauge(lin, flat.shape[0], flat.dtype, unravel, G)


def hessian_operator(loss_fn: Callable, params, *, gauge=None) -> LinearOperator:
    """The Hessian `∇²L(params)` as an operator on raveled parameters `[P]`.

    The gradient of `f(p) = loss_fn(unravel(p))` is linearised once at the
    point (`jax.linearize(jax.grad(f), flat)`), so each product `u ↦ ∇²L u`
    is one forward-over-reverse pass (about the cost of one gradient) and no
    Hessian is materialised until `.dense()` is called.

    Args:
        loss_fn: `params -> scalar` (e.g. `lambda m: soft_risk(m, x, y, tau)`).
        params: parameter pytree with `P` scalars in all.
        gauge: `None`, `"auto"` (`gauge_directions(params)`) or a `[P, G]`
            basis whose span is projected out (`Π ∇²L Π`).

    Returns:
        `LinearOperator` with `size = P`, `dtype` of the raveled parameters,
        `unravel`, and `gauge` (orthonormal, or `None`).

    >>> op = hessian_operator(lambda p: p[0] ** 2 * p[1], jnp.array([1.0, 3.0]))
    >>> op.matvec(jnp.array([1.0, 0.0])).tolist(), op.size
    ([6.0, 2.0], 2)
    """
    check_loss(loss_fn, params)
    return _hessian_operator(loss_fn, params, resolve_gauge(gauge, params))


def linear_operator(matvec: Callable, size: int, dtype=None, *, gauge=None) -> LinearOperator:
    """Wrap a symmetric matvec `u: [P] -> A u: [P]` as an operator.

    This is the one way to hand a bare matvec to a spectral routine: a plain
    callable passed there is always a loss function.

    Args:
        matvec: pure, traceable `[P] -> [P]`, linear and symmetric.
        size: `P`.
        dtype: the dtype of the vectors (default: JAX's default float).
        gauge: `None` or a `[P, G]` basis to project out.

    Returns:
        `LinearOperator`.
    """
    if not callable(matvec):
        raise ValueError(f"`matvec` must be a callable [P] -> [P], got {type(matvec)}")
    size = check_count(size, "size")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    out = jax.eval_shape(matvec, jax.ShapeDtypeStruct((size,), dtype))
    if getattr(out, "shape", None) != (size,):
        raise ValueError(
            f"`matvec` must map [P] = ({size},) to [P], got shape {getattr(out, 'shape', out)}"
        )
    return _with_gauge(matvec, size, dtype, None, _basis(gauge, size))


def _basis(gauge, P: int):
    """`None` or an orthonormal `[P, G]` basis, for operators without parameters."""
    if isinstance(gauge, str):
        raise ValueError(
            "`gauge='auto'` needs a loss function and its `params`; pass a [P, G] basis "
            "for an operator or a matrix"
        )
    return resolve_gauge(gauge, jnp.zeros(P))


def _matrix_operator(M: jax.Array, G) -> LinearOperator:
    def matvec(u):
        return jnp.dot(M, u, precision=_HP)

    op = _with_gauge(matvec, M.shape[0], M.dtype, None, G)
    if G is None:
        return dataclasses.replace(op, matrix=M)
    return op


def as_operator(obj, params=None, *, gauge=None, name: str = "loss_fn") -> LinearOperator:
    """Normalise the first arguments of a spectral routine to a `LinearOperator`.

    * a `LinearOperator`: returned as it is (with `gauge`, a `[P, G]` basis,
      projected out in addition when it has none yet; `"auto"` keeps it);
    * a square symmetric matrix `[P, P]` (JAX or NumPy array): its matvec, and
      `dense()` returns the matrix itself;
    * a callable with `params`: `hessian_operator(obj, params, gauge=gauge)`.

    Args:
        obj: an operator, a matrix or a loss function `params -> scalar`.
        params: the parameter pytree for a loss function, else `None`.
        gauge: as in `hessian_operator` (`"auto"` only with a loss function).
        name: the argument's name in error messages.

    Returns:
        `LinearOperator`.
    """
    if isinstance(obj, LinearOperator):
        if params is not None:
            raise ValueError(f"`params` must be None when `{name}` is an operator")
        if gauge is None or isinstance(gauge, str) and gauge == "auto":
            return obj
        if obj.gauge is not None:
            raise ValueError(f"`gauge`: the operator `{name}` already projects out a gauge")
        return _with_gauge(obj.matvec, obj.size, obj.dtype, obj.unravel, _basis(gauge, obj.size))
    if callable(obj):
        if params is None:
            raise ValueError(
                f"`params` must be given with the loss function `{name}`; to pass a matvec, "
                "wrap it with `linear_operator(matvec, size)`"
            )
        return hessian_operator(obj, params, gauge=gauge)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        if params is not None:
            raise ValueError(f"`params` must be None when `{name}` is a matrix")
        M = check_square(obj, name)
        return _matrix_operator(M, _basis(gauge, M.shape[0]))
    raise ValueError(
        f"`{name}` must be a loss function (with `params`), a LinearOperator or a square "
        f"matrix [P, P], got {type(obj).__name__}"
    )
