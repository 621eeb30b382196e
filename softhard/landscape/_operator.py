"""The operator layer: the Hessian (or any symmetric matrix) as a matvec.

Every spectral routine of `softhard.landscape` (and the Section 6 operator
spectra) works on a `LinearOperator`: a symmetric linear map on `R^P` given by
its matrix-vector product, its size and dtype, with an optional gauge basis
`G: [P, G]` whose span it projects out (`u ↦ Π A Π u`, `Π = I − G Gᵀ`), and a
dense materialisation. There are three ways to get one:

* `hessian_operator(loss_fn, params)`: the Hessian `∇²L` at `params`, its
  matvec `u ↦ ∇²L u` linearised once (`jax.linearize(jax.grad(f), p)`,
  forward-over-reverse, so each product costs about one gradient), or
  streamed over a sample `data=(x, y)` (per-chunk `jvp` of `grad`);
* `linear_operator(matvec, size)`: wraps a bare matvec callable;
* a dense symmetric `[P, P]` matrix.

`as_operator` turns any of these (or a `(loss_fn, params)` pair) into an
operator; every spectral routine calls it on its first arguments, so a plain
callable there is always a *loss* and never ambiguous with a matvec (the
pattern of `jax.scipy.sparse.linalg._normalize_matvec`, and of lineax's
`FunctionLinearOperator`).

Parameter pytrees are *raveled* over their inexact-array leaves only
(`softhard._trees.ravel_arrays`, leaf order of `jax.tree_util.tree_leaves`;
functions and other static leaves are carried, not raveled);
`LinearOperator.unravel` maps a `[P]` vector back to the whole pytree.

With `data=(x, y)` the loss is a per-chunk mean `loss_fn(params, x_c, y_c)`
and every matvec streams the sample chunk by chunk (`lax.scan`; peak memory
one chunk's), sharded over a device `mesh` when one is given (`shard_map` +
`psum`, also across processes under `jax.distributed`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from .._stats import sample_axis_sharding
from .._trees import combine, partition, ravel_arrays
from .._validate import check_count, check_finite_params, check_square
from . import _structured
from .gauge import resolve_gauge

__all__ = [
    "LinearOperator",
    "hessian_operator",
    "linear_operator",
    "as_operator",
    "loss_gradient",
    "loss_value_and_gradient",
]

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
        matmat: `U: [P, b] -> A U: [P, b]` in one pass where the operator has
            one (the structured soft-risk Hessian), else `None`; `apply` uses it.

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
    matmat: Callable | None = None

    def apply(self, U: jax.Array) -> jax.Array:
        """`A U` for a block `U: [P, b]`: `matmat`, else `matvec` mapped over the columns."""
        if self.matmat is not None:
            return self.matmat(U)
        return jax.vmap(self.matvec, in_axes=1, out_axes=1)(U)

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
        """`Π u = u − G (Gᵀ u)` in `u`'s dtype (`u` itself without a gauge); `u: [P]`, `[P, b]`."""
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


def _bind(loss_fn: Callable, loss_kwargs: dict | None) -> Callable:
    """`loss_fn` with the extra keyword arguments bound (`functools.partial`)."""
    return functools.partial(loss_fn, **loss_kwargs) if loss_kwargs else loss_fn


def check_loss(loss_fn, params, name: str = "loss_fn", *, data=None) -> None:
    """`loss_fn` must map `params` (and a chunk of `data`, if given) to a scalar.

    Only the inexact-array leaves of `params` are parameters (`_trees.partition`);
    other leaves (activation functions, numbers) are carried along. With
    `data`, `loss_fn(params, *chunk)` is checked on abstract chunks.
    """
    if not callable(loss_fn):
        raise ValueError(f"`{name}` must be a callable params -> scalar, got {type(loss_fn)}")
    arrays, static = partition(params)
    leaves = jax.tree_util.tree_leaves(params)
    if not jax.tree_util.tree_leaves(arrays):
        kinds = sorted({type(v).__name__ for v in leaves}) or ["none"]
        raise ValueError(
            "`params` must be a pytree with at least one floating array leaf, got leaves of "
            f"type {kinds}"
        )
    check_finite_params(arrays, "params")
    abstract = () if data is None else tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in data)
    try:
        out = jax.eval_shape(lambda a, *c: loss_fn(combine(a, static), *c), arrays, *abstract)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        form = (
            "params -> scalar" if data is None else f"(params, {len(data)} data arrays) -> scalar"
        )
        raise ValueError(
            f"`{name}` must be a callable {form} (extra keywords included): {e}"
        ) from e
    if getattr(out, "shape", None) != ():
        raise ValueError(f"`{name}` must return a scalar, got shape {getattr(out, 'shape', out)}")


def flat_loss(loss_fn: Callable, params):
    """`(f, flat: [P], unravel)` with `f(p: [P]) = loss_fn(unravel(p))`.

    Only the inexact-array leaves are raveled (`_trees.ravel_arrays`);
    `unravel` rebuilds the whole pytree, non-array leaves included.
    """
    flat, unravel = ravel_arrays(params)

    def f(p):
        return loss_fn(unravel(p))

    return f, flat, unravel


def _with_gauge(matvec: Callable, size: int, dtype, unravel, G, matmat=None) -> LinearOperator:
    """The operator `u ↦ Π A Π u` (or `A u` when `G` is None) in `dtype`."""
    op = LinearOperator(matvec, size, dtype, unravel, G, matmat=matmat)
    if G is None:
        return op

    def projected(u):
        return op.project(matvec(op.project(u)))

    block = None
    if matmat is not None:

        def block(U):
            return op.project(matmat(op.project(U)))

    return dataclasses.replace(op, matvec=projected, matmat=block)


def _hessian_operator(loss_fn: Callable, params, G=None) -> LinearOperator:
    """`hessian_operator` without validation, for use inside transformations."""
    f, flat, unravel = flat_loss(loss_fn, params)
    _, lin = jax.linearize(jax.grad(f), flat)
    return _with_gauge(lin, flat.shape[0], flat.dtype, unravel, G)


# ----------------------------------------------------------------------------
# streamed and sharded sums over the sample
# ----------------------------------------------------------------------------

#: default working-set target of one chunk: samples × features per sample
_CHUNK_ELEMENTS = 1 << 18


class _Data(NamedTuple):
    """A validated sample: `arrays` sharing axis 0 (`n` rows), chunk length, mesh axes."""

    arrays: tuple
    n: int
    chunk: int
    mesh: object  # jax.sharding.Mesh or None
    names: tuple  # mesh axes the sample axis is sharded over


def _mesh_of(arrays, mesh):
    """`(mesh, axis names)` to shard the sample over: the given mesh, else `arrays[0]`'s own."""
    if mesh is not None:
        if not isinstance(mesh, jax.sharding.Mesh):
            raise ValueError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        return mesh, tuple(mesh.axis_names)
    found = sample_axis_sharding(arrays[0])
    return (None, ()) if found is None else (found[0], tuple(found[1]))


def check_data(data, chunk_size=None, mesh=None) -> _Data:
    """`data` must be an array or a tuple of arrays `[N, ...]` sharing the sample axis.

    With a `mesh` (or arrays already sharded along axis 0), the sample axis
    is sharded over all the mesh's axes, which needs `N` divisible by the
    number of shards; `chunk_size` then counts samples per device.
    """
    if data is None:
        if chunk_size is not None or mesh is not None:
            raise ValueError("`chunk_size` and `mesh` need `data=(x, y)`: the sample to stream")
        return None
    if not isinstance(data, tuple | list):
        data = (data,)
    if not data:
        raise ValueError("`data` must be an array or a non-empty tuple of arrays [N, ...]")
    arrays = []
    for i, a in enumerate(data):
        a = a if isinstance(a, jax.Array) else jnp.asarray(a)
        if a.ndim < 1 or not (
            jnp.issubdtype(a.dtype, jnp.number) or jnp.issubdtype(a.dtype, jnp.bool_)
        ):
            raise ValueError(
                f"`data[{i}]` must be a numeric array [N, ...], got shape {a.shape}, "
                f"dtype {a.dtype}"
            )
        arrays.append(a)
    n = arrays[0].shape[0]
    if n < 1 or any(a.shape[0] != n for a in arrays):
        raise ValueError(
            "`data` arrays must share a sample axis N >= 1, got leading sizes "
            f"{[a.shape[0] for a in arrays]}"
        )
    mesh, names = _mesh_of(arrays, mesh)
    shards = 1 if mesh is None else math.prod(mesh.shape[a] for a in names)
    if n % shards:
        raise ValueError(f"`data`: N = {n} must be divisible by the {shards} shards of `mesh`")
    n_local = n // shards
    if chunk_size is None:
        per = max(1, sum(math.prod(a.shape[1:]) for a in arrays))
        chunk = min(n_local, max(256, _CHUNK_ELEMENTS // per))
    else:
        chunk = min(check_count(chunk_size, "chunk_size"), n_local)
    if mesh is not None:
        spec = jax.sharding.NamedSharding(mesh, PartitionSpec(names))
        arrays = [
            a if a.sharding.is_equivalent_to(spec, a.ndim) else jax.device_put(a, spec)
            for a in arrays
        ]
    return _Data(tuple(arrays), n, chunk, mesh, names)


def _chunk_sum(fn: Callable, arrays: tuple, chunk: int, template: jax.Array) -> jax.Array:
    """`Σ_c n_c · fn(chunk_c)` over consecutive chunks of `arrays` (one device).

    `fn(*chunk_arrays) -> [P]` is a chunk *mean* (e.g. the HVP of a chunk's
    mean loss); `n_c` its number of samples. The full chunks run under one
    `lax.scan` (traced once, peak memory one chunk); a ragged tail of
    `r = n mod chunk` samples is one more call on exactly those `r` samples
    with weight `r`, so no sample is padded, repeated or masked.
    """
    n = arrays[0].shape[0]
    full, r = divmod(n, chunk)
    acc = jnp.zeros_like(template)
    if full:

        def body(total, i):
            part = tuple(jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk, axis=0) for a in arrays)
            return total + fn(*part), None

        acc = chunk * jax.lax.scan(body, acc, jnp.arange(full))[0]
    if r:
        acc = acc + r * fn(*(a[full * chunk :] for a in arrays))
    return acc


def _sample_mean(fn: Callable, data: _Data, template: jax.Array, *operands) -> jax.Array:
    """`(1/N) Σ_c n_c · fn(*operands, chunk_c)`, streamed, and sharded over `data.mesh`.

    `operands` (vectors `[P]`) are replicated; with a mesh each device streams
    its own shard (`jax.shard_map`) and the partial sums are `psum`-med, so
    every device holds the result. The same code runs across hosts under
    `jax.distributed` on global arrays.
    """

    def local(ops, arrays):
        return _chunk_sum(lambda *c: fn(*ops, *c), arrays, data.chunk, template)

    if data.mesh is None:
        total = local(operands, data.arrays)
    else:
        spec = PartitionSpec(data.names)

        def sharded(ops, arrays):
            return jax.lax.psum(local(ops, arrays), data.names)

        total = jax.shard_map(
            sharded,
            mesh=data.mesh,
            in_specs=(PartitionSpec(), tuple(spec for _ in data.arrays)),
            out_specs=PartitionSpec(),
            check_vma=False,
        )(operands, data.arrays)
    return total / data.n


def _streamed_hessian(loss_fn: Callable, params, data: _Data, G=None) -> LinearOperator:
    """The sample-mean Hessian as a streamed (and sharded) matvec; no validation."""
    flat, unravel = ravel_arrays(params)

    def chunk_hvp(p, u, *chunk):
        g = jax.grad(lambda q: loss_fn(unravel(q), *chunk))
        return jax.jvp(g, (p,), (u,))[1].astype(p.dtype)

    if data.mesh is None and data.chunk >= data.n:  # one chunk: linearise once
        return _hessian_operator(lambda q: loss_fn(q, *data.arrays), params, G)

    def matvec(u):
        return _sample_mean(chunk_hvp, data, flat, flat, u.astype(flat.dtype))

    return _with_gauge(matvec, flat.shape[0], flat.dtype, unravel, G)


def loss_gradient(
    loss_fn: Callable, params, *, data=None, chunk_size=None, mesh=None, **loss_kwargs
) -> jax.Array:
    """The raveled gradient `∇L(params): [P]`, streamed over `data` like `hessian_operator`.

    Args: as in `hessian_operator`. Returns the `[P]` gradient in raveled order
    (inexact-array leaves only); `loss_value_and_gradient` also returns `L`.
    """
    stream = {"data": data, "chunk_size": chunk_size, "mesh": mesh}
    return loss_value_and_gradient(loss_fn, params, **stream, **loss_kwargs)[1]


def loss_value_and_gradient(
    loss_fn: Callable, params, *, data=None, chunk_size=None, mesh=None, **loss_kwargs
) -> tuple[jax.Array, jax.Array]:
    """`(L(params), ∇L(params): [P])`, streamed over `data` like `hessian_operator`.

    With `data`, `L` is the sample-weighted mean of the per-chunk losses and
    `∇L` of their gradients (one pass). Args: as in `hessian_operator`.
    """
    loss = _bind(loss_fn, loss_kwargs)
    d = check_data(data, chunk_size, mesh)
    check_loss(loss, params, data=None if d is None else _chunk_shapes(d))
    flat, unravel = ravel_arrays(params)
    if d is None:
        return jax.value_and_grad(lambda q: loss(unravel(q)))(flat)

    def chunk_value_grad(p, *chunk):
        v, g = jax.value_and_grad(lambda q: loss(unravel(q), *chunk))(p)
        return jnp.concatenate([v[None], g]).astype(p.dtype)

    template = jnp.zeros(flat.shape[0] + 1, flat.dtype)
    both = _sample_mean(chunk_value_grad, d, template, flat)
    return both[0], both[1:]


def _chunk_shapes(d: _Data) -> tuple:
    """Abstract `[chunk, ...]` arrays, for checking a per-chunk loss."""
    return tuple(jax.ShapeDtypeStruct((d.chunk, *a.shape[1:]), a.dtype) for a in d.arrays)


def _resolve(gauge, params):
    """`resolve_gauge`, skipped for `None` (which needs no raveling of `params`)."""
    return None if gauge is None else resolve_gauge(gauge, params)


def hessian_operator(
    loss_fn: Callable,
    params,
    *,
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    gauge=None,
    structured: bool = True,
    **loss_kwargs,
) -> LinearOperator:
    """The Hessian `∇²L(params)` as an operator on raveled parameters `[P]`.

    Without `data`, the gradient of `f(p) = loss_fn(unravel(p))` is linearised
    once at the point (`jax.linearize(jax.grad(f), flat)`), so each product
    `u ↦ ∇²L u` is one forward-over-reverse pass (about the cost of one
    gradient) and no Hessian is materialised until `.dense()` is called.

    With `data=(x, y)` (any tuple of arrays sharing the sample axis `N`),
    `loss_fn(params, x_c, y_c)` is a *per-chunk* loss, the mean over a chunk
    (`soft_risk` is one), and `L = (1/N) Σ_c n_c L_c` the sample mean. Each
    product is the sample-weighted mean of the chunks' Hessian-vector products
    (`jax.jvp` of `jax.grad` per chunk under one `lax.scan`), so peak memory is
    one chunk's, not the sample's; a ragged last chunk (`N mod chunk_size`
    samples) is one more product on exactly those samples, weighted by its
    size. With a `mesh` (or `x` already sharded along axis 0), the sample axis
    is sharded over all the mesh's axes: every device streams its shard and
    the partial sums are `psum`-med (`jax.shard_map`), which also runs across
    processes under `jax.distributed` on global arrays. When the whole
    (unsharded) sample fits in one chunk it is linearised once, as without `data`.

    Extra keyword arguments are passed to `loss_fn` (`functools.partial`), so
    the built-in losses need no wrapper:

        hessian_operator(sh.soft_risk, model, data=(x, y), tau=0.1)
        # each chunk: soft_risk(model, x_c, y_c, tau=0.1)

    Only inexact-array leaves of `params` are parameters (`_trees.ravel_arrays`):
    an equinox-style model carrying functions as leaves works unchanged.

    Structured path (`_structured`): when `loss_fn` is `softhard.soft_risk`
    itself, `params` a built-in `MoE` (`LinearRouter`, `MLPRouter`,
    `NormalizedRouter` with `LinearExperts` or `MLPExperts`; any `k`,
    `combine_temperature`, `selection`), `data=(x, y)`, the only keyword
    `tau`, and no `mesh`, each product uses the exact Gauss–Newton split
    `(1/N) Σ_n J_nᵀ C_n J_n u + (1/N) Σ_n g_n · ∇²z_n u` of the per-sample
    loss in logit/output space `z_n = (a(x_n), f(x_n))` (2.2, 2.5), with
    `C_n`, `g_n` cached at the point (the second term is zero for linear
    families). Without `chunk_size` the whole sample's factors are kept when
    they fit (about `2^25` elements; linearised once), else they are
    recomputed per chunk inside the streamed matvec. `structured=False`
    forces the generic forward-over-reverse path; both give the same
    operator to rounding.

    Args:
        loss_fn: `params -> scalar`, or with `data` `(params, *chunk) -> scalar`
            (the mean over the chunk).
        params: parameter pytree with `P` floating scalars in all.
        data: `None`, an array or a tuple of arrays `[N, ...]` (e.g. `(x, y)`).
        chunk_size: samples per chunk (per device with a mesh); default about
            `2^18` data elements per chunk.
        mesh: `jax.sharding.Mesh` to shard the sample axis over (`N` must be
            divisible by its size).
        gauge: `None`, `"auto"` (`gauge_directions(params)`) or a `[P, G]`
            basis whose span is projected out (`Π ∇²L Π`).
        structured: `False` to opt out of the structured soft-risk path.
        **loss_kwargs: bound into `loss_fn`, e.g. `tau=0.1`.

    Returns:
        `LinearOperator` with `size = P`, `dtype` of the raveled parameters,
        `unravel`, and `gauge` (orthonormal, or `None`).

    >>> op = hessian_operator(lambda p: p[0] ** 2 * p[1], jnp.array([1.0, 3.0]))
    >>> op.matvec(jnp.array([1.0, 0.0])).tolist(), op.size
    ([6.0, 2.0], 2)
    """
    loss = _bind(loss_fn, loss_kwargs)
    d = check_data(data, chunk_size, mesh)
    if d is None:
        check_loss(loss, params)
        return _hessian_operator(loss, params, _resolve(gauge, params))
    check_loss(loss, params, data=_chunk_shapes(d))
    G = _resolve(gauge, params)
    if not isinstance(structured, bool):
        raise ValueError(f"`structured` must be True or False, got {structured!r}")
    if (
        structured
        and d.mesh is None
        and _structured.applies(loss_fn, params, loss_kwargs, d.arrays)
    ):
        return _structured_hessian(params, d, G, loss_kwargs["tau"], chunk_size is None)
    return _streamed_hessian(loss, params, d, G)


def _structured_hessian(model, data: _Data, G, tau, whole_ok: bool) -> LinearOperator:
    """The structured soft-risk Hessian (`_structured`): whole sample if it fits, else per chunk.

    The whole-sample route is taken when the sample is one chunk, or when no
    `chunk_size` was given and the per-sample factors fit `_structured.WHOLE_ELEMENTS`.
    """
    flat, unravel = ravel_arrays(model)
    x, y = data.arrays
    fits = _structured.factor_elements(model, data.n) <= _structured.WHOLE_ELEMENTS
    matmat = None
    if data.chunk >= data.n or (whole_ok and fits):
        matvec, matmat = _structured.whole_matvec(model, x, y, tau)
    else:
        hvp = _structured.chunk_hvp(model, tau)

        def matvec(u):
            return _sample_mean(hvp, data, flat, flat, u.astype(flat.dtype))

    return _with_gauge(matvec, flat.shape[0], flat.dtype, unravel, G, matmat)


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


def as_operator(
    obj,
    params=None,
    *,
    gauge=None,
    name: str = "loss_fn",
    data=None,
    chunk_size: int | None = None,
    mesh=None,
    loss_kwargs: dict | None = None,
) -> LinearOperator:
    """Normalise the first arguments of a spectral routine to a `LinearOperator`.

    * a `LinearOperator`: returned as it is (with `gauge`, a `[P, G]` basis,
      projected out in addition when it has none yet; `"auto"` keeps it);
    * a square symmetric matrix `[P, P]` (JAX or NumPy array): its matvec, and
      `dense()` returns the matrix itself;
    * a callable with `params`: `hessian_operator(obj, params, gauge=gauge,
      data=data, chunk_size=chunk_size, mesh=mesh, **loss_kwargs)`.

    Args:
        obj: an operator, a matrix or a loss function `params -> scalar`
            (`(params, *chunk) -> scalar` with `data`).
        params: the parameter pytree for a loss function, else `None`.
        gauge: as in `hessian_operator` (`"auto"` only with a loss function).
        name: the argument's name in error messages.
        data, chunk_size, mesh: the sample to stream (loss functions only).
        loss_kwargs: extra keyword arguments of the loss function.

    Returns:
        `LinearOperator`.
    """
    loss_kwargs = dict(loss_kwargs or {})
    if not callable(obj) or isinstance(obj, LinearOperator):
        given = [
            k
            for k, v in (("data", data), ("chunk_size", chunk_size), ("mesh", mesh))
            if v is not None
        ]
        given += sorted(loss_kwargs)
        if given:
            raise ValueError(
                f"`{given[0]}` is an option of a loss function (with `params`); `{name}` is "
                f"a {type(obj).__name__}, not a loss"
            )
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
        return hessian_operator(
            obj, params, gauge=gauge, data=data, chunk_size=chunk_size, mesh=mesh, **loss_kwargs
        )
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        if params is not None:
            raise ValueError(f"`params` must be None when `{name}` is a matrix")
        M = check_square(obj, name)
        return _matrix_operator(M, _basis(gauge, M.shape[0]))
    raise ValueError(
        f"`{name}` must be a loss function (with `params`), a LinearOperator or a square "
        f"matrix [P, P], got {type(obj).__name__}"
    )
