"""Checks at the public boundary, done in Python before tracing.

A `ValueError` always names the argument and the expected form. Types are
checked first: `None`, strings, booleans and complex numbers are never taken
for numbers (`tau=True` is not `1`, `'0.1'` is not `0.1`), integer arrays are
promoted to the default float dtype.

Traced arguments (inside `jit`/`vmap`/`grad`): shapes and dtypes are still
checked, values cannot be. The documented behaviour is **NaN poisoning**: a
public function whose value check was skipped for a traced argument returns
NaN wherever that argument is outside its domain (`poison_tau`: a traced
`tau <= 0`, NaN or inf gives an all-NaN result), so a jitted or vmapped call
never returns a plausible number for an invalid input. `checkify`-style errors
are not raised.

Tiny temperatures (one rule for all): every kernel multiplies by the capped
inverse temperature `min(1/τ, finfo.max)` (`inv_temperature`), the rule of the
fused sweep kernel; a τ that underflows or is subnormal (flushed to 0 on CPU
XLA) then behaves as the hard limit instead of giving `0/0 = NaN`.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values we can inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _describe(x) -> str:
    r = repr(x)
    return f"{type(x).__name__} {r if len(r) <= 60 else r[:57] + '...'}"


def check_real_scalar(x, name: str, what: str = "a real number"):
    """`x` must be a real number: not None, a string, a bool or complex (tracers pass)."""
    if x is None or isinstance(x, (str, bytes, bool, np.bool_, complex, np.complexfloating)):
        raise ValueError(f"`{name}` must be {what}, got {_describe(x)}")
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        if not isinstance(x, (int, float, np.number)):
            raise ValueError(f"`{name}` must be {what}, got {_describe(x)}")
    elif not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"`{name}` must be {what}, got an array of dtype {dtype}")
    return x


def as_real_array(x, name: str, what: str = "an array"):
    """`x` as a JAX array of real numbers (integers promoted to the default float dtype).

    Rejects None, strings, objects, booleans and complex numbers with a `ValueError`.
    """
    if x is None or isinstance(x, (str, bytes)):
        raise ValueError(f"`{name}` must be {what} of real numbers, got {_describe(x)}")
    try:
        a = jnp.asarray(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be {what} of real numbers, got {_describe(x)}") from e
    if jnp.issubdtype(a.dtype, jnp.integer):
        return a.astype(jnp.result_type(float))
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be {what} of real numbers, got dtype {a.dtype}")
    return a


def inv_temperature(tau, dtype):
    """The capped inverse temperature `min(1/τ, finfo(dtype).max)` in `dtype` (no inf, no NaN)."""
    t = jnp.asarray(tau, dtype)
    return jnp.minimum(1 / t, jnp.asarray(jnp.finfo(dtype).max, dtype))


def floor_tau(tau, dtype):
    """`max(τ, finfo(dtype).tiny ** (1/4))` in `dtype`: the floor of closed forms that use τ².

    τ⁴ ≥ tiny keeps τ², 1/τ² and their products normal numbers; the soft–hard
    gap is O(τ), so below the floor (3e-10 in float32, 1e-77 in float64) the
    τ → 0 limit is reached to working precision and flooring changes nothing.
    """
    t = jnp.asarray(tau, dtype)
    return jnp.maximum(t, jnp.asarray(float(jnp.finfo(dtype).tiny) ** 0.25, dtype))


#: the domains a traced argument is poisoned against (`poison`, `poisons`)
DOMAINS = {
    "tau": lambda t: (t > 0) & jnp.isfinite(t),  # a temperature
    "width": lambda w: w >= 0,  # a width (inf allowed, NaN not)
    "delta": lambda d: (d > 0) & (d < 0.5),  # δ, ε in (0, 1/2)
    "positive": lambda v: (v > 0) & jnp.isfinite(v),  # a finite number > 0
}


def poison(out, value, domain: str):
    """NaN poisoning: `out` where the traced `value` lies in `domain`, NaN elsewhere.

    `domain` is a key of `DOMAINS`. A concrete `value` was checked already and
    `out` is returned unchanged. `out` may be any pytree; each floating leaf
    whose leading axes match `value`'s shape (a `[T]` grid of temperatures, a
    `[W]` grid of widths) is poisoned entry by entry, every other floating
    leaf wholly when any entry of `value` is invalid. Integer, boolean and
    non-array leaves are left alone.
    """
    if value is None or is_concrete(value):
        return out
    ok = DOMAINS[domain](jnp.asarray(value))
    every = jnp.all(ok)

    def leaf(o):
        if not isinstance(o, jax.Array) or not jnp.issubdtype(o.dtype, jnp.inexact):
            return o
        if ok.ndim and o.shape[: ok.ndim] == ok.shape:
            where = ok.reshape(ok.shape + (1,) * (o.ndim - ok.ndim))
        else:
            where = every
        return jnp.where(where, o, jnp.nan)

    return jax.tree.map(leaf, out)


def poison_tau(out, tau):
    """`poison(out, tau, "tau")`: NaN wherever a traced `tau` is not a finite number > 0."""
    return poison(out, tau, "tau")


def poisons(**domains):
    """Decorator: NaN poisoning (`poison`) of the named arguments when they are traced.

    `@poisons(tau="tau", delta="delta")` applies the documented rule for
    traced arguments (module docstring) to a public function: after the call,
    the result is NaN wherever a traced argument lies outside its domain.
    Concrete arguments are checked by the function itself and cost nothing here.
    """

    def decorate(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            leaves = jax.tree_util.tree_leaves((args, kwargs))
            if all(is_concrete(v) for v in leaves):
                return out
            bound = sig.bind(*args, **kwargs)
            for name, domain in domains.items():
                if name in bound.arguments:
                    out = poison(out, bound.arguments[name], domain)
            return out

        return wrapper

    return decorate


def check_tau(tau, name: str = "tau"):
    """`tau` must be a real scalar > 0 (checked when concrete)."""
    check_real_scalar(tau, name, "a temperature > 0 (a real number)")
    shape = jnp.shape(tau)
    if shape != ():
        raise ValueError(f"`{name}` must be a scalar temperature, got shape {shape}")
    if is_concrete(tau):
        t = float(np.asarray(tau))
        if not t > 0 or not np.isfinite(t):
            raise ValueError(f"`{name}` must be a finite temperature > 0, got {t!r}")
    return tau


def check_taus(taus, name: str = "taus"):
    """`taus` must be a 1-D array `[T]` of temperatures > 0."""
    taus = as_real_array(taus, name, "a 1-D array [T] of temperatures")
    if taus.ndim != 1 or taus.shape[0] == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array [T], got shape {taus.shape}")
    return _check_temperature_values(taus, name)


def _check_temperature_values(t, name: str):
    """Every concrete entry of `t` is a finite temperature > 0."""
    if is_concrete(t):
        v = np.asarray(t)
        if not (np.all(v > 0) and np.all(np.isfinite(v))):
            raise ValueError(f"`{name}` must hold finite temperatures > 0, got {v}")
    return t


def check_logits(logits, name: str = "logits"):
    """`logits` must be `[N, K]` with K >= 2."""
    logits = as_real_array(logits, name, "an array [N, K]")
    if logits.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, K], got shape {logits.shape}")
    if logits.shape[1] < 2:
        raise ValueError(f"`{name}` needs K >= 2 experts, got shape {logits.shape}")
    return logits


def check_x(x, name: str = "x"):
    """`x` must be a 2-D batch `[N, d]` of inputs."""
    x = as_real_array(x, name, "an array [N, d]")
    if x.ndim != 2:
        raise ValueError(f"`{name}` must have shape [N, d], got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one sample, got shape {x.shape}")
    return x


def input_dim(obj) -> int | None:
    """The input dimension `d` a router / expert bank / model / law exposes (`.dim`), else None."""
    d = getattr(obj, "dim", None)
    if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
        return int(d)
    router = getattr(obj, "router", None)
    return None if router is None or router is obj else input_dim(router)


def check_dim(x, d: int | None, name: str = "x", source: str = "router"):
    """`x: [..., d]` must end in the input dimension `d` of `source` (skipped when `d` is None)."""
    if d is not None and jnp.shape(x)[-1:] != (d,):
        raise ValueError(
            f"`{name}` must have shape [N, d] with d = {d} (the input dimension of `{source}`), "
            f"got shape {jnp.shape(x)}"
        )
    return x


def num_experts_of(obj, d: int | None = None) -> int | None:
    """`K` of a router, an expert bank or a model (its router), or None when unknown.

    Read from `.num_experts`, else (when the input dimension `d` is known) from
    the shape of one abstract call; None when neither works.
    """
    router = getattr(obj, "router", None)
    if router is not None and router is not obj:
        return num_experts_of(router, d)
    K = getattr(obj, "num_experts", None)
    if isinstance(K, (int, np.integer)) and not isinstance(K, bool):
        return int(K)
    d = input_dim(obj) if d is None else d
    if d is None or not callable(obj):
        return None
    try:
        shape = jax.eval_shape(obj, jax.ShapeDtypeStruct((d,), jnp.result_type(float))).shape
    except Exception:
        return None
    return int(shape[-1]) if len(shape) == 1 else None


def check_law_dim(law, d, source: str) -> None:
    """`law.dim` must equal the input dimension `d` of `source` (skipped when unknown)."""
    ld = getattr(law, "dim", None)
    if d is not None and isinstance(ld, int) and ld != d:
        raise ValueError(
            f"`law` draws inputs of dimension {ld} but `{source}` takes d = {d}: "
            "the law and the model must share the input dimension"
        )


def check_permutation(perm, K: int | None, name: str = "perm") -> np.ndarray:
    """`perm` as a `[K]` int array holding each of `0 … K − 1` once (K unknown: its own length)."""
    try:
        raw = np.asarray(perm)
    except Exception as e:
        raise ValueError(f"`{name}` must be a permutation of range(K), got {perm!r}") from e
    if raw.dtype == bool or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer expert indices, got {perm!r}")
    p = raw.astype(np.int64)
    n = K if K is not None else p.shape[0] if p.ndim == 1 else 0
    if p.ndim != 1 or p.shape[0] != n or sorted(p.tolist()) != list(range(n)):
        raise ValueError(
            f"`{name}` must be a permutation of range(K) with K = {n}, got {p.tolist()}"
        )
    return p


def check_same_experts(first, second, where: str, names=("router", "experts")) -> None:
    """`first` and `second` (routers, banks or models) have the same `K` and `d` when known.

    Raises a `ValueError` naming both, e.g. `MoE: `experts` has K = 3 ... `router` has K = 2`.
    """
    d1, d2 = input_dim(first), input_dim(second)
    if d1 is not None and d2 is not None and d1 != d2:
        raise ValueError(
            f"{where}: `{names[1]}` takes inputs of dimension d = {d2} but `{names[0]}` takes "
            f"d = {d1}"
        )
    d = d1 if d1 is not None else d2
    K1, K2 = num_experts_of(first, d), num_experts_of(second, d)
    if K1 is not None and K2 is not None and K1 != K2:
        raise ValueError(
            f"{where}: `{names[1]}` has K = {K2} experts but `{names[0]}` has K = {K1} "
            "(the router must score exactly the experts of the bank)"
        )


def check_outputs_match(a, f, where: str = "model"):
    """Router logits `a: [N, K]` and expert outputs `f: [N, K]` must have the same shape."""
    if jnp.shape(a) != jnp.shape(f):
        raise ValueError(
            f"`{where}.experts` returns outputs of shape {jnp.shape(f)} but `{where}.router` "
            f"returns logits of shape {jnp.shape(a)}: the router and the bank need the same K"
        )
    return a, f


def check_xy(x, y):
    """`x: [N, d]` and `y: [N]` with matching N."""
    x = check_x(x)
    y = as_real_array(y, "y", "an array [N]")
    if y.shape != (x.shape[0],):
        raise ValueError(f"`y` must have shape [N] = ({x.shape[0]},) to match `x`, got {y.shape}")
    return x, y


def check_finite_rows(a, name: str, purpose: str = "estimating") -> None:
    """Raise for a concrete array `[N, ...]` with a NaN or inf entry in some row.

    A non-finite row has no margin and no loss: counted as "outside" every
    layer it would bias every mass and rate while the risks turn NaN, so it is
    refused (never silently dropped). Traced arrays are not inspected.
    """
    if not is_concrete(a) or jnp.size(a) == 0:
        return
    with jax.ensure_compile_time_eval():  # also when called inside a jit on a closed-over array
        if bool(jnp.all(jnp.isfinite(a))):
            return
        bad = np.asarray(~jnp.all(jnp.isfinite(jnp.reshape(a, (jnp.shape(a)[0], -1))), axis=1))
    rows = np.flatnonzero(bad)
    raise ValueError(
        f"`{name}` must be finite: {rows.size} of {jnp.shape(a)[0]} rows hold NaN or inf "
        f"(first at row {int(rows[0])}); drop or repair them before {purpose}"
    )


def check_finite_params(tree, name: str) -> None:
    """Raise if any concrete floating leaf of `tree` holds NaN or inf."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in leaves:
        if not hasattr(leaf, "dtype") or not is_concrete(leaf):
            continue
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            continue
        if not bool(np.all(np.isfinite(np.asarray(leaf)))):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"`{name}` has NaN or inf in parameter `{name}{where}`")


def check_width(w, name: str = "w"):
    """Widths must be >= 0: a scalar or a 1-D array `[W]`."""
    w = as_real_array(w, name, "a width or an array [W] of widths")
    if w.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array [W], got shape {w.shape}")
    if is_concrete(w) and not bool(np.all(np.asarray(w) >= 0)):
        raise ValueError(f"`{name}` must be >= 0, got {np.asarray(w)}")
    return w


def check_delta(delta, name: str = "delta"):
    """`0 < delta < 1/2`."""
    check_real_scalar(delta, name, "a number in (0, 1/2)")
    if jnp.shape(delta) != ():
        raise ValueError(f"`{name}` must be a scalar in (0, 1/2), got shape {jnp.shape(delta)}")
    if is_concrete(delta):
        d = float(np.asarray(delta))
        if not 0.0 < d < 0.5:
            raise ValueError(f"`{name}` must lie in (0, 1/2), got {d!r}")
    return delta


def check_kind(value, name: str, choices) -> str:
    """`value` must be one of `choices` (a string option such as `kind` or `which`)."""
    if value not in tuple(choices):
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be one of {opts}, got {value!r}")
    return value


def float_dtype(*xs):
    """The floating dtype of `xs`; Python scalars stay weak (float32 arrays stay float32)."""
    return jnp.result_type(*xs, float)


def check_cov(cov, name: str = "cov"):
    """`cov` must be a finite symmetric positive-definite matrix `[d, d]`."""
    cov = as_real_array(cov, name, "a covariance matrix [d, d]")
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ValueError(
            f"`{name}` must be a square covariance matrix [d, d], got shape {cov.shape}"
        )
    if is_concrete(cov):
        c = np.asarray(cov, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"`{name}` must be finite, got {c}")
        if not np.allclose(c, c.T, rtol=1e-6, atol=1e-12):
            raise ValueError(f"`{name}` must be symmetric, got {c}")
        if np.linalg.eigvalsh(c).min() <= 0:
            raise ValueError(f"`{name}` must be positive definite, got {c}")
    return cov


def check_vector(v, d: int, name: str, *, nonzero: bool = False):
    """`v` must be a finite vector `[d]` (and not all zero when `nonzero`)."""
    v = as_real_array(v, name, f"a vector [d] = ({d},)")
    if v.shape != (d,):
        raise ValueError(f"`{name}` must have shape [d] = ({d},), got shape {v.shape}")
    if is_concrete(v):
        a = np.asarray(v)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite, got {a}")
        if nonzero and not np.any(a != 0):
            raise ValueError(f"`{name}` must be a non-zero vector, got {a}")
    return v


def check_square(M, name: str = "M"):
    """`M` must be a finite symmetric matrix `[d, d]`."""
    M = as_real_array(M, name, "a square matrix [d, d]")
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
        raise ValueError(f"`{name}` must be a square symmetric matrix [d, d], got shape {M.shape}")
    if is_concrete(M):
        a = np.asarray(M, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` must be finite, got {a}")
        if not np.allclose(a, a.T, rtol=1e-6, atol=1e-12 * max(1.0, np.abs(a).max())):
            raise ValueError(f"`{name}` must be symmetric, got {a}")
    return M


def _check_scalar(x, name: str, *, strict: bool):
    """`x` must be a finite scalar `> 0` (`strict`) or `>= 0` (checked when concrete)."""
    what = "> 0" if strict else ">= 0"
    check_real_scalar(x, name, f"a real number {what}")
    if jnp.shape(x) != ():
        raise ValueError(f"`{name}` must be a scalar {what}, got shape {jnp.shape(x)}")
    if is_concrete(x):
        v = float(np.asarray(x))
        if not ((v > 0 if strict else v >= 0) and np.isfinite(v)):
            raise ValueError(f"`{name}` must be a finite number {what}, got {v!r}")
    return x


def check_positive(x, name: str):
    """`x` must be a finite scalar > 0 (checked when concrete)."""
    return _check_scalar(x, name, strict=True)


def check_nonnegative(x, name: str):
    """`x` must be a finite scalar >= 0 (checked when concrete)."""
    return _check_scalar(x, name, strict=False)


def check_count(n, name: str, minimum: int = 1) -> int:
    """`n` must be a Python/NumPy integer (not a bool) >= `minimum`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {n!r}")
    return int(n)


def check_key(key, name: str = "key"):
    """`key` must be given: a `jax.random` key (no default key is ever used)."""
    msg = f"`{name}` must be a jax.random key, e.g. jax.random.key(0) (no default key is used)"
    if key is None:
        raise ValueError(msg)
    dtype = getattr(key, "dtype", None)
    if dtype is None:
        raise ValueError(f"{msg}, got {_describe(key)}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype == jnp.uint32 and jnp.shape(key)[-1:] == (2,):  # a legacy jax.random.PRNGKey
        return key
    raise ValueError(f"{msg}, got an array of dtype {dtype} and shape {jnp.shape(key)}")


def check_tau_grid(tau, name: str = "tau"):
    """`tau` must be a scalar or a 1-D array `[T]` of finite temperatures > 0."""
    tau = as_real_array(tau, name, "a temperature or an array [T] of temperatures")
    if tau.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or a 1-D array [T], got shape {tau.shape}")
    return _check_temperature_values(tau, name)


def check_k(k, K: int | None = None, name: str = "k", *, allow_all: bool = False) -> int:
    """`k` must be an integer (not a bool) with `1 <= k < K` (`<= K` with `allow_all`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"`{name}` must be an integer >= 1 (experts per input), got {k!r}")
    if K is not None and not (int(k) <= K if allow_all else int(k) < K):
        bound = f"<= K = {K}" if allow_all else f"< K = {K}"
        raise ValueError(f"`{name}` must be {bound} for logits with K = {K} experts, got {k!r}")
    return int(k)


def check_seed(seed, name: str = "seed") -> int:
    """A PRNG seed: an integer (not a bool) in `[0, 2**32)` (larger seeds collide without x64)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer, got {seed!r}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"`{name}` must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)
