"""Model pytrees: routers, expert banks, mixtures, teachers and input laws (§2, §5).

Every model is a frozen dataclass registered as a pytree
(see `_pytree`) whose `__call__` handles one input
`x: [d]`. A router returns logits `a(x): [K]` (2.2); an expert bank returns the
outputs of all `K` experts `(f_1(x), …, f_K(x)): [K]`. Batched versions live in
`softhard.routing` (`logits`, `expert_outputs`), which `vmap` over rows.

A user's own router or expert bank is *any* pytree with such a `__call__`:
nothing needs to be registered with softhard.

Input laws (`Gaussian`, `Uniform`, `GaussianMixture`) are pytrees with
`.sample(key, n) -> [n, d]` and `.log_prob(x: [d]) -> scalar`.

Shapes are checked on construction on the trailing axes only, so a stack of
models (extra leading axes, for `vmap` over models) is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _gating
from ._validate import (
    check_count,
    check_cov,
    check_key,
    check_law_dim,
    check_same_experts,
    check_tau,
    input_dim,
    is_concrete,
    poison_tau,
)

__all__ = [
    "LinearRouter",
    "MLPRouter",
    "NormalizedRouter",
    "LinearExperts",
    "MLPExperts",
    "MoE",
    "Teacher",
    "LinearTarget",
    "Gaussian",
    "StandardGaussian",
    "Uniform",
    "GaussianMixture",
    "LinenModule",
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _as_array(obj, name: str, cls: str = "model"):
    """Turn user input (lists, numbers, NumPy) into a JAX array of reals; leave placeholders.

    Tracers, `jax.ShapeDtypeStruct`s and other array-like placeholders (a
    `shape` and a `dtype`) pass through, so only plain data is converted.
    None, strings, booleans, complex numbers and other objects are refused.
    """
    bad = f"{cls}: `{name}` must be an array of real numbers"
    if obj is None or isinstance(obj, (str, bytes, bool, np.bool_, complex, dict, set)):
        raise ValueError(f"{bad}, got {type(obj).__name__} {obj!r:.60}")
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, np.ndarray):
        dtype = obj.dtype
    else:
        try:
            arr = np.asarray(obj)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{bad}, got {type(obj).__name__} {obj!r:.60}") from e
        dtype = arr.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{bad}, got dtype {dtype}")
    if isinstance(obj, (list, tuple, int, float, np.ndarray, np.generic)):
        return jnp.asarray(obj, dtype=jnp.result_type(float))
    if jnp.issubdtype(dtype, jnp.integer) and isinstance(obj, jax.Array):
        return obj.astype(jnp.result_type(float))
    return obj


def _shaped(*objs) -> bool:
    return all(hasattr(o, "shape") and hasattr(o, "ndim") for o in objs)


def _canonical(self, ranks: dict) -> bool:
    """True when every field is an array of exactly its documented rank.

    Only then are shapes checked in full: a user may also construct stacks of
    models (extra leading axes, for `vmap`) or build a model from tracers
    inside a transformation, neither of which should be rejected. A field of
    *lower* rank than documented (a 1-D `W`, a scalar `b`) is never a stack
    and raises. (Results of tree operations never reach this check: `_pytree`
    rebuilds them without `__post_init__`.)
    """
    cls = type(self).__name__
    fields = [getattr(self, n) for n in ranks]
    for n, f, r in zip(ranks, fields, ranks.values()):
        if _shaped(f) and f.ndim < r:
            dims = ", ".join("?" * r)
            _fail(cls, f"`{n}` must be a {r}-D array [{dims}], got shape {tuple(f.shape)}")
    return _shaped(*fields) and all(f.ndim == r for f, r in zip(fields, ranks.values()))


def _convert_fields(self, names) -> None:
    for n in names:
        object.__setattr__(self, n, _as_array(getattr(self, n), n, type(self).__name__))


def _finite(self, names) -> None:
    """Every concrete field in `names` is finite (no NaN, no inf)."""
    for n in names:
        v = getattr(self, n)
        if _shaped(v) and is_concrete(v) and not bool(np.all(np.isfinite(np.asarray(v)))):
            _fail(type(self).__name__, f"`{n}` must be finite, got {np.asarray(v)}")


def _check_noise(self) -> None:
    """`noise_std`: a finite scalar (or array of entries) `>= 0` when concrete."""
    ns = self.noise_std
    if _shaped(ns) and is_concrete(ns):
        v = np.asarray(ns)
        if not (np.all(np.isfinite(v)) and np.all(v >= 0)):
            _fail(type(self).__name__, f"`noise_std` must be finite and >= 0, got {v}")


def _check_sample(key, n) -> int:
    check_key(key)
    return check_count(n, "n", minimum=0)


def _fail(cls: str, msg: str):
    raise ValueError(f"{cls}: {msg}")


def _check_affine(self, cls: str, a: str, c: str, min_experts: int = 1) -> None:
    """Convert the fields `a: [K, d]` and `c: [K]` and check that they match, `K ≥ min_experts`."""
    _convert_fields(self, (a, c))
    if not _canonical(self, {a: 2, c: 1}):
        return
    A, C = getattr(self, a), getattr(self, c)
    if C.shape[-1:] != A.shape[-2:-1]:
        _fail(
            cls,
            f"`{c}` must have shape [K] = ({A.shape[-2]},) to match `{a}` {A.shape}, got {C.shape}",
        )
    if A.shape[-2] < min_experts:
        _fail(cls, f"needs K >= {min_experts} experts, `{a}` has shape {A.shape}")


@dataclasses.dataclass(frozen=True)
class _TwoLayer:
    """The fields of a one-hidden-layer map (`MLPRouter`, `MLPExperts`)."""

    W1: jax.Array
    b1: jax.Array
    W2: jax.Array
    b2: jax.Array
    activation: Callable = dataclasses.field(default=jnp.tanh, metadata={"static": True})


class _Rows:
    """`num_experts` and `dim` of a model whose first field is a `[K, d]` matrix."""

    @property
    def num_experts(self) -> int:
        return getattr(self, dataclasses.fields(self)[0].name).shape[-2]

    @property
    def dim(self) -> int:
        return getattr(self, dataclasses.fields(self)[0].name).shape[-1]


def _pytree(cls):
    """Frozen dataclass registered as a pytree whose unflatten skips `__post_init__`.

    Validation runs when a user constructs a model or law. Tree operations
    (`jax.grad` cotangents, `jvp` tangents, `vmap` stacks, `tree_map` results,
    optax updates) rebuild objects through `tree_unflatten`, whose leaves are
    not models at all (a gradient of a covariance need not be symmetric or
    positive definite), so they are rebuilt without checks, as `equinox` does.
    Fields marked `metadata={"static": True}` are auxiliary data.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    meta = tuple(f.name for f in fields if f.metadata.get("static", False))

    def flatten(obj):
        return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta)

    def flatten_with_keys(obj):
        children, aux = flatten(obj)
        return [(jax.tree_util.GetAttrKey(n), c) for n, c in zip(data, children)], aux

    def unflatten(aux, children):
        obj = object.__new__(cls)
        for n, v in zip(data, children):
            object.__setattr__(obj, n, v)
        for n, v in zip(meta, aux):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(
        cls,
        flatten_with_keys,
        unflatten,
        flatten_func=flatten,
    )
    return cls


# ----------------------------------------------------------------------------
# routers
# ----------------------------------------------------------------------------


@_pytree
class LinearRouter(_Rows):
    """Linear router `a(x) = W x + b` (2.2).

    Attributes:
        W: `[K, d]` router weights (row k scores expert k).
        b: `[K]` biases.

    >>> r = LinearRouter(W=[[1.0, 0.0], [0.0, 1.0]], b=[0.0, 0.0])
    >>> r(jnp.array([2.0, 1.0])).tolist()
    [2.0, 1.0]
    """

    W: jax.Array
    b: jax.Array

    def __post_init__(self):
        _check_affine(self, "LinearRouter", "W", "b", min_experts=2)

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> logits: [K]`."""
        return jnp.dot(self.W, x, precision=jax.lax.Precision.HIGHEST) + self.b


@_pytree
class MLPRouter(_TwoLayer):
    """One-hidden-layer router `a(x) = W2 act(W1 x + b1) + b2`.

    Attributes:
        W1: `[H, d]`, b1: `[H]`, W2: `[K, H]`, b2: `[K]`.
        activation: elementwise function (static), default `jnp.tanh`.
    """

    def __post_init__(self):
        _convert_fields(self, ("W1", "b1", "W2", "b2"))
        if _canonical(self, {"W1": 2, "b1": 1, "W2": 2, "b2": 1}):
            H = self.W1.shape[-2]
            if self.b1.shape[-1:] != (H,) or self.W2.shape[-1:] != (H,):
                _fail(
                    "MLPRouter",
                    f"expected W1 [H, d], b1 [H], W2 [K, H]; got W1 {self.W1.shape}, "
                    f"b1 {self.b1.shape}, W2 {self.W2.shape}",
                )
            if self.b2.shape[-1:] != self.W2.shape[-2:-1]:
                _fail("MLPRouter", f"`b2` must have shape [K] to match W2 {self.W2.shape}")
            if self.W2.shape[-2] < 2:
                _fail("MLPRouter", f"needs K >= 2 experts, `W2` has shape {self.W2.shape}")

    @property
    def num_experts(self) -> int:
        return self.W2.shape[-2]

    @property
    def dim(self) -> int:
        return self.W1.shape[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> logits: [K]`."""
        hp = jax.lax.Precision.HIGHEST
        h = self.activation(jnp.dot(self.W1, x, precision=hp) + self.b1)
        return jnp.dot(self.W2, h, precision=hp) + self.b2


@_pytree
class NormalizedRouter(_Rows):
    """Router with unit-norm rows: `a_k(x) = scale · w_kᵀx / ‖w_k‖ + b_k` (2.2).

    With a `LinearRouter`, `L_τ(W, b) = L_1(W/τ, b/τ)`: for a realisable
    teacher, sharpening always lowers the soft risk and `L_τ` has no finite
    minimiser (Theorem 5.17 works on a compact parameter set). Normalising the
    rows bounds the sharpness, `|∇_x (a_i − a_j)| ≤ 2·scale`, so `L_τ` attains
    interior minimisers and the recovery rates (5.16–5.17) can be observed.
    Its gauge directions are the `K` radial row directions and the common bias
    shift (`softhard.landscape.gauge_directions`).

    Attributes:
        W: `[K, d]` row directions (any nonzero length).
        b: `[K]` biases.
        scale: static positive float, the logit scale.

    >>> r = NormalizedRouter(W=jnp.array([[2.0, 0.0], [0.0, -3.0]]), b=jnp.zeros(2))
    >>> r(jnp.array([1.0, 1.0])).tolist()
    [1.0, -1.0]
    """

    W: jax.Array
    b: jax.Array
    scale: float = dataclasses.field(default=1.0, metadata={"static": True})

    def __post_init__(self):
        _check_affine(self, "NormalizedRouter", "W", "b", min_experts=2)
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, (int, float, np.number)):
            _fail("NormalizedRouter", f"`scale` must be a number > 0, got {s!r}")
        if not (math.isfinite(float(s)) and float(s) > 0):
            _fail("NormalizedRouter", f"`scale` must be a finite number > 0, got {s!r}")
        W = self.W
        if _shaped(W) and is_concrete(W) and W.ndim >= 2:
            zero = np.all(np.asarray(W) == 0, axis=-1)
            if np.any(zero):
                rows = np.argwhere(zero).ravel().tolist()
                _fail("NormalizedRouter", f"`W` has zero rows {rows}: every row needs a direction")

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> logits: [K]`."""
        norms = jnp.sqrt(jnp.sum(self.W**2, axis=-1))
        return self.scale * jnp.dot(self.W, x, precision=jax.lax.Precision.HIGHEST) / norms + self.b


# ----------------------------------------------------------------------------
# experts
# ----------------------------------------------------------------------------


@_pytree
class LinearExperts(_Rows):
    """A bank of `K` linear experts `f_k(x) = B_k · x + c_k`.

    Attributes:
        B: `[K, d]`, c: `[K]`.
    """

    B: jax.Array
    c: jax.Array

    def __post_init__(self):
        _check_affine(self, "LinearExperts", "B", "c")

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> outputs: [K]`."""
        return jnp.dot(self.B, x, precision=jax.lax.Precision.HIGHEST) + self.c


@_pytree
class MLPExperts(_TwoLayer):
    """`K` one-hidden-layer experts `f_k(x) = W2_k · act(W1_k x + b1_k) + b2_k`.

    Attributes:
        W1: `[K, H, d]`, b1: `[K, H]`, W2: `[K, H]`, b2: `[K]`.
        activation: elementwise function (static), default `jnp.tanh`.
    """

    def __post_init__(self):
        _convert_fields(self, ("W1", "b1", "W2", "b2"))
        if _canonical(self, {"W1": 3, "b1": 2, "W2": 2, "b2": 1}):
            ok = (
                self.b1.shape[-2:] == self.W1.shape[-3:-1]
                and self.W2.shape[-2:] == self.W1.shape[-3:-1]
                and self.b2.shape[-1:] == self.W1.shape[-3:-2]
            )
            if not ok:
                _fail(
                    "MLPExperts",
                    f"expected W1 [K, H, d], b1 [K, H], W2 [K, H], b2 [K]; got W1 "
                    f"{self.W1.shape}, b1 {self.b1.shape}, W2 {self.W2.shape}, b2 {self.b2.shape}",
                )

    @property
    def num_experts(self) -> int:
        return self.W1.shape[-3]

    @property
    def dim(self) -> int:
        return self.W1.shape[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: [d] -> outputs: [K]`."""
        hp = jax.lax.Precision.HIGHEST
        h = self.activation(jnp.einsum("khd,d->kh", self.W1, x, precision=hp) + self.b1)
        return jnp.sum(self.W2 * h, axis=-1) + self.b2


# ----------------------------------------------------------------------------
# mixtures and teachers
# ----------------------------------------------------------------------------


def _check_routing(cls: str, k, rho) -> None:
    """`k`: an integer `>= 1`; `rho`: `None` (ρ = ∞) or a finite number `> 0`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        _fail(cls, f"`k` must be an integer >= 1 (experts per input), got {k!r}")
    if rho is not None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float, np.number)):
            _fail(cls, f"`combine_temperature` must be None or a number > 0, got {rho!r}")
        if not (math.isfinite(float(rho)) and float(rho) > 0):
            _fail(cls, f"`combine_temperature` must be None or a finite number > 0, got {rho!r}")


def _check_k_below_K(cls: str, router, k: int) -> None:
    """`k < K` when the router knows its `K` (`num_experts`); else checked where it runs."""
    K = getattr(router, "num_experts", None)
    if isinstance(K, int) and not k < K:
        _fail(cls, f"`k` must be < K = {K} (top-k of K experts), got k = {k}")


def routing_of(model) -> tuple[int, float | None, Callable | None]:
    """`(k, combine_temperature, selection)` of any model (top-1 defaults for a plain pytree)."""
    return (
        int(getattr(model, "k", 1)),
        getattr(model, "combine_temperature", None),
        getattr(model, "selection", None),
    )


def selection_scores(model, a: jax.Array) -> jax.Array:
    """Selection scores `[N, K]` of logits `a: [N, K]` (§T, last paragraph): `a` by default."""
    sel = routing_of(model)[2]
    return a if sel is None else jax.vmap(sel)(a)


def is_top1(model) -> bool:
    """True for the paper's routing: top-1 softmax, raw logits, no combine temperature."""
    return routing_of(model) == (1, None, None)


def require_top1(model, where: str) -> None:
    """Raise for a top-k (or combine-temperature) model where only top-1 routing is built yet.

    Better a clear error than a top-1 answer for a top-k model.
    """
    if not is_top1(model):
        k, rho, sel = routing_of(model)
        raise ValueError(
            f"`{where}` supports top-1 softmax routing only so far; got a model with k = {k}, "
            f"combine_temperature = {rho!r}, selection = {sel!r} (the top-k risks, sweeps "
            "and boundary masses are built: soft_risk, risk_sweep, diagnostic_sweep, "
            "boundary_mass(k=...))"
        )


class _Routed:
    """Top-k routing read off the model (EQUATIONS.md T.2–T.5) for `MoE` and `Teacher`.

    `k` experts per input; combine temperature `ρ` (`None`: ρ = ∞, equal
    weights; `1.0`: Mixtral's renormalised softmax over the selected experts);
    `selection`: an optional static map of the router's logits `[K] -> [K]`
    to the scores that *select* the experts (a per-expert bias, a sigmoid),
    while the raw logits set the combine weights (last paragraph of §T).
    """

    def scores(self, a: jax.Array) -> jax.Array:
        """Selection scores `[..., K]` of router logits `a: [..., K]`."""
        return a if self.selection is None else self.selection(a)

    def weights(self, x: jax.Array, tau=None) -> jax.Array:
        """Routing weights `[K]` at one input (T.5): soft at `tau > 0`, hard for `tau=None`."""
        a = self.router(x)
        return _gating.route(self.scores(a), a, tau, self.k, self.combine_temperature)

    def hard(self, x: jax.Array) -> jax.Array:
        """`x: [d]` -> scalar `f_0(x)` (2.10, T.5): top-1, the output of the lowest-index winner."""
        if is_top1(self):
            return self.experts(x)[jnp.argmax(self.router(x))]
        return jnp.sum(self.weights(x) * self.experts(x))


@_pytree
class MoE(_Routed):
    """A mixture of experts: a router and an expert bank with the same `K`.

    `model(x, tau)` is the soft prediction at one input `x: [d]` (2.4; top-k:
    T.5); `model.hard(x)` the hard prediction (2.10, T.5) with the
    lowest-index tie rule (2.9, T.2). Batched versions: `softhard.soft_predict`,
    `softhard.hard_predict`. `k`, `combine_temperature` and `selection` are
    static: every risk, sweep and estimator reads the routing off the model.

    Attributes:
        router: `x: [d] -> [K]` logits; experts: `x: [d] -> [K]` outputs.
        k: experts per input, `1 <= k < K` (1: the paper's top-1 softmax routing).
        combine_temperature: `ρ > 0` of the combine weights `exp(a_j/ρ)` (T.4),
            or `None` for ρ = ∞ (equal weights over the selected experts).
        selection: `None`, or a static `[K] -> [K]` map from logits to the
            selection scores (e.g. `lambda a: a + bias`).
    """

    router: object
    experts: object
    k: int = dataclasses.field(default=1, metadata={"static": True})
    combine_temperature: float | None = dataclasses.field(default=None, metadata={"static": True})
    selection: Callable | None = dataclasses.field(default=None, metadata={"static": True})

    def __post_init__(self):
        _check_routing("MoE", self.k, self.combine_temperature)
        check_same_experts(self.router, self.experts, "MoE")
        _check_k_below_K("MoE", self.router, int(self.k))

    def __call__(self, x: jax.Array, tau) -> jax.Array:
        """`x: [d]`, scalar `tau > 0` -> scalar `f_tau(x)` (2.4, T.5); NaN for a traced bad τ."""
        check_tau(tau)
        if is_top1(self):
            out = jnp.sum(_gating.softmax_gates(self.router(x), tau) * self.experts(x))
        else:
            out = jnp.sum(self.weights(x, tau) * self.experts(x))
        return poison_tau(out, tau)


@_pytree
class Teacher(_Routed):
    """A hard-routed teacher (5.1): `Y = f*_{k*(X)}(X) + ξ`, `ξ ~ N(0, noise_std²)`.

    The partition `C_k = {x : k*(x) = k}` is the hard partition of `router`
    (lowest index wins ties, (2.9)); `experts` are the teacher experts `f*_k`.
    With `k > 1` the teacher routes top-k: `f*(x)` is the hard top-k
    predictor (T.5) with combine temperature `combine_temperature`.

    Attributes:
        router: any router pytree (`x: [d] -> [K]`).
        experts: any expert bank (`x: [d] -> [K]`).
        noise_std: scalar noise standard deviation `σ_ξ ≥ 0`.
        k, combine_temperature, selection: the routing, as in `MoE`.
    """

    router: object
    experts: object
    noise_std: jax.Array = 0.0
    k: int = dataclasses.field(default=1, metadata={"static": True})
    combine_temperature: float | None = dataclasses.field(default=None, metadata={"static": True})
    selection: Callable | None = dataclasses.field(default=None, metadata={"static": True})

    def __post_init__(self):
        _convert_fields(self, ("noise_std",))
        _check_noise(self)
        _check_routing("Teacher", self.k, self.combine_temperature)
        check_same_experts(self.router, self.experts, "Teacher")
        _check_k_below_K("Teacher", self.router, int(self.k))

    def regression(self, x: jax.Array) -> jax.Array:
        """`x: [d]` -> `f*(x)` (5.2; top-k: the hard predictor T.5), the noiseless target."""
        return self.hard(x)

    def cell(self, x: jax.Array) -> jax.Array:
        """`x: [d]` -> the teacher cell index `k` with `x ∈ C_k` (5.10; the top-1 winner)."""
        return jnp.argmax(self.router(x))

    def sample(self, key: jax.Array, law, n: int) -> tuple[jax.Array, jax.Array]:
        """Draw `(x: [n, d], y: [n])` with `x ~ law` and `y = f*(x) + ξ`."""
        n = _check_sample(key, n)
        check_law_dim(law, input_dim(self.router), "teacher.router")
        kx, ky = jax.random.split(key)
        x = law.sample(kx, n)
        y = jax.vmap(self.regression)(x)
        noise = jax.random.normal(ky, (n,), dtype=y.dtype)
        return x, y + self.noise_std * noise


@_pytree
class LinearTarget:
    """A linear regression target `Y = w·X + c + ξ`, `ξ ~ N(0, noise_std²)`.

    The non-realizable counterpart of `Teacher` (no routing: the regression
    function is continuous across every interface). Same `regression` /
    `sample` interface as `Teacher`.

    Attributes:
        w: `[d]`, c: scalar, noise_std: scalar `≥ 0`.
    """

    w: jax.Array
    c: jax.Array = 0.0
    noise_std: jax.Array = 0.0

    def __post_init__(self):
        _convert_fields(self, ("w", "c", "noise_std"))
        _canonical(self, {"w": 1})
        _finite(self, ("w", "c"))
        _check_noise(self)

    def regression(self, x: jax.Array) -> jax.Array:
        """`x: [d]` -> `E[Y | X = x] = w·x + c`."""
        return jnp.dot(self.w, x, precision=jax.lax.Precision.HIGHEST) + self.c

    def sample(self, key: jax.Array, law, n: int) -> tuple[jax.Array, jax.Array]:
        """Draw `(x: [n, d], y: [n])` with `x ~ law`."""
        n = _check_sample(key, n)
        check_law_dim(law, self.w.shape[-1] if _shaped(self.w) else None, "target.w")
        kx, ky = jax.random.split(key)
        x = law.sample(kx, n)
        y = jax.vmap(self.regression)(x)
        return x, y + self.noise_std * jax.random.normal(ky, (n,), dtype=y.dtype)


# ----------------------------------------------------------------------------
# input laws
# ----------------------------------------------------------------------------


class _Law:
    """`dim` of an input law whose first field ends in the input axis `d`."""

    @property
    def dim(self) -> int:
        return getattr(self, dataclasses.fields(self)[0].name).shape[-1]


def _cholesky(cov: jax.Array) -> jax.Array:
    return jnp.linalg.cholesky(cov)


@_pytree
class Gaussian(_Law):
    """Gaussian input law `N(mean, cov)`.

    Attributes:
        mean: `[d]`, cov: `[d, d]` symmetric positive definite.

    >>> law = Gaussian(mean=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]])
    >>> law.sample(jax.random.key(0), 5).shape
    (5, 2)
    """

    mean: jax.Array
    cov: jax.Array

    def __post_init__(self):
        _convert_fields(self, ("mean", "cov"))
        if _shaped(self.mean, self.cov) and self.cov.ndim != self.mean.ndim + 1:
            _fail(
                "Gaussian",
                f"expected mean [d] and cov [d, d] (or stacks [..., d], [..., d, d]); got mean "
                f"{tuple(self.mean.shape)}, cov {tuple(self.cov.shape)}",
            )
        if _canonical(self, {"mean": 1, "cov": 2}):
            d = self.mean.shape[-1:]
            if self.cov.shape[-2:] != d * 2:
                _fail(
                    "Gaussian",
                    f"expected mean [d] and cov [d, d]; got mean {self.mean.shape}, "
                    f"cov {self.cov.shape}",
                )
            _finite(self, ("mean",))
            try:  # finite, symmetric, positive definite when concrete
                check_cov(self.cov, "cov")
            except ValueError as e:
                _fail("Gaussian", str(e))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """`n` draws, `[n, d]`."""
        n = _check_sample(key, n)
        z = jax.random.normal(key, (n, self.dim), dtype=self.mean.dtype)
        return self.mean[None, :] + z @ _cholesky(self.cov).T

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at one point `x: [d]` -> scalar."""
        L = _cholesky(self.cov)
        z = jax.scipy.linalg.solve_triangular(L, x - self.mean, lower=True)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(L)))
        return -0.5 * (jnp.sum(z**2) + logdet + self.dim * math.log(2 * math.pi))


def StandardGaussian(d: int) -> Gaussian:
    """The standard Gaussian `N(0, I_d)` as a `Gaussian` law."""
    d = check_count(d, "d", minimum=1)
    dtype = jnp.result_type(float)
    return Gaussian(mean=jnp.zeros(d, dtype), cov=jnp.eye(d, dtype=dtype))


@_pytree
class Uniform(_Law):
    """Uniform law on the box `[low, high]` (`low, high: [d]`, `low < high`)."""

    low: jax.Array
    high: jax.Array

    def __post_init__(self):
        _convert_fields(self, ("low", "high"))
        if _canonical(self, {"low": 1, "high": 1}):
            if self.low.shape != self.high.shape:
                _fail(
                    "Uniform",
                    f"`low` and `high` must both have shape [d]; got {self.low.shape}, "
                    f"{self.high.shape}",
                )
            _finite(self, ("low", "high"))
            if is_concrete(self.low) and is_concrete(self.high):
                if not np.all(np.asarray(self.low) < np.asarray(self.high)):
                    _fail("Uniform", "`low` must be < `high` in every coordinate")

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """`n` draws, `[n, d]`."""
        n = _check_sample(key, n)
        u = jax.random.uniform(key, (n, self.dim), dtype=self.low.dtype)
        return self.low[None, :] + u * (self.high - self.low)[None, :]

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at `x: [d]` (−inf outside the box)."""
        inside = jnp.all((x >= self.low) & (x <= self.high))
        return jnp.where(inside, -jnp.sum(jnp.log(self.high - self.low)), -jnp.inf)


@_pytree
class GaussianMixture(_Law):
    """Mixture `Σ_c w_c N(means_c, covs_c)`.

    Attributes:
        weights: `[C]` non-negative, summing to 1.
        means: `[C, d]`, covs: `[C, d, d]`.
    """

    weights: jax.Array
    means: jax.Array
    covs: jax.Array

    def __post_init__(self):
        _convert_fields(self, ("weights", "means", "covs"))
        if _canonical(self, {"weights": 1, "means": 2, "covs": 3}):
            ok = (
                self.weights.shape[-1:] == self.means.shape[-2:-1]
                and self.covs.shape[-3:] == self.means.shape[-2:] + self.means.shape[-1:]
            )
            if not ok:
                _fail(
                    "GaussianMixture",
                    f"expected weights [C], means [C, d], covs [C, d, d]; got "
                    f"{self.weights.shape}, {self.means.shape}, {self.covs.shape}",
                )
            _finite(self, ("weights", "means"))
            if is_concrete(self.weights):
                w = np.asarray(self.weights)
                if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
                    _fail("GaussianMixture", f"`weights` must be >= 0 and sum to 1, got {w}")
            if is_concrete(self.covs):
                for i, c in enumerate(self.covs):
                    try:  # finite, symmetric, positive definite
                        check_cov(c, f"covs[{i}]")
                    except ValueError as e:
                        _fail("GaussianMixture", str(e))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """`n` draws, `[n, d]`."""
        n = _check_sample(key, n)
        kc, kz = jax.random.split(key)
        comp = jax.random.choice(kc, self.weights.shape[0], (n,), p=self.weights)
        z = jax.random.normal(kz, (n, self.dim), dtype=self.means.dtype)
        L = jax.vmap(_cholesky)(self.covs)
        return self.means[comp] + jnp.einsum("nij,nj->ni", L[comp], z)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at `x: [d]`."""
        comps = jax.vmap(lambda m, c: Gaussian(m, c).log_prob(x))(self.means, self.covs)
        return jax.nn.logsumexp(comps, b=self.weights)


# ----------------------------------------------------------------------------
# flax linen modules (the one wrapper a linen router or expert bank needs)
# ----------------------------------------------------------------------------


@jax.tree_util.register_pytree_with_keys_class
class LinenModule:
    """A flax `linen` module with its variables, as a softhard router or expert bank.

    A linen module holds no parameters (they live in a separate `variables`
    dict), so it is not itself a model pytree; this wrapper is. Its pytree
    leaves are the arrays of `variables` (what softhard differentiates,
    trains and builds Hessians over); the module is static (compared by
    value, as linen modules are frozen dataclasses). `__call__(x: [d])`
    returns `module.apply(variables, x)`: logits `[K]` for a router, the
    `K` expert outputs for a bank. flax `nnx` modules and equinox modules
    are pytrees already and need no wrapper.

        dense = flax.linen.Dense(K)
        router = LinenModule(dense, dense.init(key, x[0]))
        model = MoE(router, experts)

    Attributes:
        module: the `flax.linen.Module` (static).
        variables: its variables (`module.init(...)`), a pytree of arrays.
    """

    def __init__(self, module, variables):
        if not callable(getattr(module, "apply", None)):
            raise ValueError(
                f"LinenModule: `module` must be a flax.linen.Module, got {type(module).__name__}"
            )
        self.module = module
        self.variables = variables

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.module.apply(self.variables, x)

    def __repr__(self) -> str:
        return f"LinenModule({self.module!r})"

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("variables"), self.variables),), self.module

    @classmethod
    def tree_unflatten(cls, module, children):
        obj = object.__new__(cls)
        obj.module, obj.variables = module, children[0]
        return obj
