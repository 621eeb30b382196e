"""Fit any MoE on data at a temperature τ or along an annealing schedule τ(t) (issue 14).

`fit(model, x, y, tau)` minimises the empirical soft risk
`L̂_τ(θ, φ) = (1/N) Σ_n (y_n − f_τ(x_n; θ, φ))²` (2.5), `f_τ` the soft
predictor (2.4; top-k: T.5), over the inexact-array leaves of *any* router
and expert family: the built-in ones, or a user's pytree (an equinox or flax
`nnx` module, whose activation functions and integer fields are carried
unchanged, `softhard._trees.partition`). With `schedule=` the temperature
follows `τ(t)` (e.g. an optax schedule such as `optax.exponential_decay`):
an annealing trajectory. Theorem 4.5 bounds `|L_τ − L_0|` uniformly on
compact parameter sets, which Remark 4.6 notes is what controls the
soft–hard approximation *along an annealing trajectory*; `fit` therefore
records, at chosen steps of the path, the boundary mass `M(w)` (2.13; top-k
`M_k`, T.7) and the Theorem 4.5 certificate (4.5)–(4.8) / T.10 next to the
measured gap `L̂_τ − L̂_0`.

The optimiser steps run in one jitted `lax.scan` per block of
`record_every` steps (one compilation for all blocks); the boundary mass
and the certificate are host computations at the record steps only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _tables
from ._stats import Estimate
from ._trees import combine, filter_jit, is_inexact_array, partition
from ._validate import (
    check_count,
    check_finite_params,
    check_key,
    check_nonnegative,
    check_tau,
    check_xy,
)
from .boundary import boundary_mass
from .certificate import certify
from .models import routing_of, selection_scores
from .risk import soft_risk
from .routing import logits

__all__ = ["FitHistory", "FitResult", "fit"]

#: the default optimiser of `fit`: Adam with step size 1e-2
DEFAULT_LEARNING_RATE = 1e-2


class FitHistory(NamedTuple):
    """The training record of `fit`: every step, and the path diagnostics at record steps.

    Step `t` (0-based) is the optimiser update from `θ_t` to `θ_{t+1}`, taken
    at temperature `tau[t]`; `loss[t]` and `grad_norm[t]` are evaluated at
    `θ_t` (the values the update used). Record step `r` is the model after
    `r` updates (`r = 0` is the initial model; the last record is the returned
    model), at the temperature `τ(r)` where the path then stands.

    Attributes:
        step: `[S]` update indices `0, …, S − 1` (integers).
        tau: `[S]` the temperature of each update.
        loss: `[S]` `L̂_τ(θ_t)` (2.5) on the (mini)batch of the step.
        grad_norm: `[S]` `‖∇L̂_τ(θ_t)‖₂` over all parameters.
        record_step: `[R]` the record steps `r` (updates done).
        record_tau: `[R]` `τ(r)` at each record.
        width: `[R]` the width `w` of the boundary mass (default `2 τ(r)`).
        boundary_mass: `Estimate` `[R]` of `M(w)` (2.13; top-k `M_k(w)`, T.7) of the
            selection scores on the whole sample (binomial stderr).
        certificate: `[R]` the Theorem 4.5 bound (T.10) at `τ(r)` (`certify`), NaN
            where none applies or it was not computed.
        gap: `Estimate` `[R]` of the measured `L̂_τ − L̂_0` at `τ(r)` (NaN without a
            certificate).
        certificate_status: `[R]` strings: the margin-tail fit status (`"ok"`,
            `"misfit"`: the envelope is still a bound on the grid), `"atom"` (exact
            ties of positive mass: (4.4) fails, no certificate), `"refused: …"`
            (`certify` raised, with its reason) or `"skipped"`.
        status: `"ok"`, or `"diverged"`: the update at step `diverged_at` gave a
            non-finite loss, gradient or parameters and training stopped there; the
            returned model is the last finite one (`θ_{diverged_at}`).
        diverged_at: the diverging step, `-1` when `status == "ok"`.
        final_loss: `L̂_τ` of the returned model at `record_tau[-1]`, on the whole sample.
        final_grad_norm: `‖∇L̂_τ‖₂` of the returned model there.
    """

    step: jax.Array  # [S] int
    tau: jax.Array  # [S]
    loss: jax.Array  # [S]
    grad_norm: jax.Array  # [S]
    record_step: jax.Array  # [R] int
    record_tau: jax.Array  # [R]
    width: jax.Array  # [R]
    boundary_mass: Estimate  # [R]
    certificate: jax.Array  # [R]
    gap: Estimate  # [R]
    certificate_status: tuple  # [R] str
    status: str
    diverged_at: int
    final_loss: jax.Array  # scalar
    final_grad_norm: jax.Array  # scalar

    to_dict = _tables.to_dict
    __repr__ = _tables.table_repr


class FitResult(NamedTuple):
    """`fit`'s answer: the trained model and its `FitHistory`.

    Attributes:
        model: the trained model, a pytree like the input (non-array leaves unchanged).
        history: `FitHistory`.
    """

    model: object
    history: FitHistory

    def to_dict(self) -> dict:
        """JSON-ready: the history's dict and the model's array leaves by tree path."""
        leaves = jax.tree_util.tree_flatten_with_path(self.model)[0]
        params = {
            jax.tree_util.keystr(path): _tables.jsonable(leaf)
            for path, leaf in leaves
            if is_inexact_array(leaf)
        }
        return {"model": params, "history": self.history.to_dict()}

    __repr__ = _tables.table_repr


@functools.cache
def _default_optimizer():
    """`optax.adam(DEFAULT_LEARNING_RATE)`, built once so that its compiled steps are reused."""
    return optax.adam(DEFAULT_LEARNING_RATE)


def _check_model(model):
    if not (hasattr(model, "router") and hasattr(model, "experts")):
        raise ValueError(
            "`model` must be a pytree with `.router` and `.experts` (e.g. softhard.MoE), "
            f"got {type(model).__name__}"
        )
    params, _ = partition(model)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("`model` has no floating-point array leaves to train")
    check_finite_params(model, "model")
    return jnp.result_type(*(leaf.dtype for leaf in leaves))


def _schedule_values(schedule, steps: int, dtype) -> np.ndarray:
    """`[τ(0), …, τ(steps)]` on the host, each checked to be a finite number > 0."""
    if not callable(schedule):
        raise ValueError(
            "`schedule` must be a callable step -> tau (e.g. optax.exponential_decay(...)), "
            f"got {type(schedule).__name__}"
        )
    t = jnp.arange(steps + 1)
    try:
        vals = np.asarray(jax.vmap(schedule)(t))
    except Exception:  # a schedule that does not trace: call it step by step
        vals = np.asarray([np.asarray(schedule(int(s))) for s in range(steps + 1)])
    if vals.shape != (steps + 1,):
        raise ValueError(
            f"`schedule` must return a scalar temperature per step, got shape {vals.shape[1:]}"
        )
    vals = vals.astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(vals) & (vals > 0)))
    if bad.size:
        s = int(bad[0])
        raise ValueError(
            f"`schedule` must give a finite temperature > 0 at every step, got "
            f"tau({s}) = {vals[s]!r}"
        )
    return vals.astype(dtype)


def _step_batch(x, y, t, key, batch_size):
    if batch_size is None:
        return x, y
    idx = jax.random.choice(jax.random.fold_in(key, t), x.shape[0], (batch_size,), replace=False)
    return x[idx], y[idx]


@filter_jit
def _block(model, opt_state, ok, x, y, taus, active, t0, tau_end, key, optimizer, batch_size):
    """`len(taus)` optimiser steps in one `lax.scan`; inactive (padding) steps change nothing.

    A step whose loss, gradient norm or new parameters are not finite is not
    taken, and `ok` turns False: every later step is skipped too. Also returns
    the full-sample loss and gradient norm at the final parameters and `tau_end`.
    """
    params, static = partition(model)
    loss_fn = functools.partial(_soft_loss, static=static)

    def step(carry, inp):
        p, state, good = carry
        tau, act, t = inp
        xb, yb = _step_batch(x, y, t, key, batch_size)
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb, tau)
        gnorm = optax.tree.norm(g)
        upd, new_state = optimizer.update(g, state, p)
        new_p = optax.apply_updates(p, upd)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        for leaf in jax.tree_util.tree_leaves(new_p):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        take = good & act & finite
        p = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new_p, p)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new_state, state)
        good = good & (finite | ~act)
        return (p, state, good), (loss, gnorm, take)

    ts = t0 + jnp.arange(taus.shape[0])
    (params, opt_state, ok), outs = jax.lax.scan(step, (params, opt_state, ok), (taus, active, ts))
    end_loss, end_g = jax.value_and_grad(loss_fn)(params, x, y, tau_end)
    return params, opt_state, ok, outs, (end_loss, optax.tree.norm(end_g))


def _soft_loss(params, x, y, tau, *, static):
    """`L̂_τ` (2.5) as a function of the trainable leaves `params` (the rest is `static`)."""
    return soft_risk(combine(params, static), x, y, tau)


def _loss_and_grad_norm(model, x, y, tau):
    params, static = partition(model)
    loss, g = jax.value_and_grad(_soft_loss)(params, x, y, tau, static=static)
    return loss, optax.tree.norm(g)


def _record(model, x, y, tau, width, with_certificate: bool):
    """Boundary mass at `width` and the Theorem 4.5 certificate at `tau`, on the host."""
    scores = selection_scores(model, logits(model.router, x))
    mass = boundary_mass(scores, width, k=routing_of(model)[0])
    nan = jnp.asarray(jnp.nan, x.dtype)
    if not with_certificate:
        return mass, nan, Estimate(nan, nan), "skipped"
    try:
        cert = certify(model, x, y, jnp.asarray([tau], x.dtype))
    except ValueError as e:  # an atom in the margin, or any other refusal: say so, go on
        msg = str(e)
        tied = "atom" in msg or "tied" in msg
        status = "atom" if tied else "refused: " + msg.split("\n")[0][:120]
        return mass, nan, Estimate(nan, nan), status
    gap = Estimate(cert.gap.value[0], cert.gap.stderr[0])
    return mass, cert.bound[0], gap, cert.tail.status


def fit(
    model,
    x: jax.Array,
    y: jax.Array,
    tau=None,
    *,
    optimizer=None,
    steps: int = 500,
    schedule: Callable | None = None,
    key=None,
    batch_size: int | None = None,
    record_every: int | None = None,
    width=None,
    certificate: bool = True,
    verbose: bool = False,
) -> FitResult:
    """Train a mixture of experts on `(x, y)` by minimising the soft risk `L̂_τ` (2.5).

    Runs `steps` updates of `optimizer` on `L̂_τ(θ, φ) = (1/N) Σ_n (y_n −
    f_τ(x_n))²` (2.5) over the inexact-array leaves of `model` (router and
    experts together; any other leaf, e.g. an equinox activation function or
    the routing `k`, is kept as it is). Exactly one of `tau` (a fixed
    temperature) and `schedule` (an annealing path `t ↦ τ(t)`, such as
    `optax.exponential_decay(0.5, 100, 0.5)`) is given. Update `t` is taken at
    `τ(t)`; the schedule is evaluated on the host at `t = 0, …, steps` and
    every value must be a finite number `> 0`.

    Every `record_every` updates (and at the start and the end) the history
    records, on the whole sample, the boundary mass `M(w)` (2.13; top-k:
    T.7) at `w = 2 τ(r)` (or `width`) and the Theorem 4.5 certificate (T.10)
    from `certify` next to the measured gap `L̂_τ − L̂_0`: Remark 4.6's
    uniform soft–hard control along an annealing trajectory. A margin with
    an atom gets no certificate (status `"atom"`, bound NaN); the training
    goes on.

    NaN guard: an update that makes the loss, the gradient or the
    parameters non-finite is not taken; training stops there with status
    `"diverged"` and the last finite model is returned (never a NaN model).

    The computation runs in the model's floating dtype (`x`, `y` and `τ` are
    cast to it): a float32 model stays float32.

    Args:
        model: pytree with `.router` and `.experts` (e.g. `MoE`, or one built from
            a user's equinox / flax `nnx` modules), finite.
        x: `[N, d]` inputs; y: `[N]` targets.
        tau: fixed temperature `> 0` (scalar), or `None` with `schedule`.
        optimizer: an `optax.GradientTransformation`; default
            `optax.adam(1e-2)` (`DEFAULT_LEARNING_RATE`).
        steps: number of updates `S ≥ 1`.
        schedule: callable `step -> τ > 0` (an optax schedule), or `None` with `tau`.
        key: `jax.random` key for minibatches; only with `batch_size`.
        batch_size: `None` (full batch, the default) or `1 ≤ B ≤ N` samples drawn
            without replacement at every step (then `loss` is the minibatch loss).
        record_every: updates between records (default `ceil(S / 10)`).
        width: boundary-mass width `≥ 0` for every record, or `None` for `2 τ(r)`.
        certificate: compute the certificate at the records (`False`: status `"skipped"`).
        verbose: print one line per record.

    Returns:
        `FitResult(model, history)`; `history` is a `FitHistory` (shapes `[S]` per
        step, `[R]` per record).

    >>> import softhard as sh, jax.numpy as jnp
    >>> m = sh.MoE(sh.LinearRouter(jnp.array([[1.0], [-1.0]]), jnp.zeros(2)),
    ...            sh.LinearExperts(jnp.zeros((2, 1)), jnp.zeros(2)))
    >>> x = jnp.linspace(-1.0, 1.0, 64)[:, None]
    >>> res = sh.fit(m, x, jnp.abs(x[:, 0]), 0.1, steps=50, certificate=False)
    >>> res.history.status, bool(res.history.loss[-1] < res.history.loss[0])
    ('ok', True)
    """
    dtype = _check_model(model)
    x, y = check_xy(x, y)
    steps = check_count(steps, "steps")
    if (tau is None) == (schedule is None):
        raise ValueError(
            "exactly one of `tau` (a fixed temperature > 0) and `schedule` (a callable "
            f"step -> tau) must be given, got tau={tau!r} and schedule={schedule!r}"
        )
    if schedule is None:
        check_tau(tau)
        taus = np.full(steps + 1, float(np.asarray(tau)), dtype=dtype)
    else:
        taus = _schedule_values(schedule, steps, dtype)
    if optimizer is None:
        optimizer = _default_optimizer()
    elif not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ValueError(
            f"`optimizer` must be an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}"
        )
    if batch_size is None:
        if key is not None:
            raise ValueError("`key` is only used with `batch_size` (minibatches); pass neither")
    else:
        batch_size = check_count(batch_size, "batch_size")
        if batch_size > x.shape[0]:
            raise ValueError(f"`batch_size` must be <= N = {x.shape[0]}, got {batch_size}")
        key = check_key(key)
    every = (
        math.ceil(steps / 10) if record_every is None else check_count(record_every, "record_every")
    )
    every = min(every, steps)
    if width is not None:
        check_nonnegative(width, "width")
    x, y = x.astype(dtype), y.astype(dtype)

    params, static = partition(model)
    opt_state = optimizer.init(params)
    ok = jnp.asarray(True)
    n_blocks = math.ceil(steps / every)
    padded = np.zeros(n_blocks * every, dtype=dtype)
    padded[:steps] = taus[:steps]
    losses, gnorms = [], []
    records: list[tuple] = []
    diverged_at = -1

    def add_record(r: int, m):
        t = float(taus[r])
        w = 2.0 * t if width is None else float(np.asarray(width))
        mass, bound, gap, status = _record(m, x, y, t, w, certificate)
        records.append((r, t, w, mass, bound, gap, status))
        if verbose:
            print(
                f"fit: step {r:>6d}  tau {t:.4g}  M({w:.3g}) {float(mass.value):.4g}  "
                f"certificate {float(bound):.4g} [{status}]"
            )

    add_record(0, model)
    for b in range(n_blocks):
        lo = b * every
        active = np.arange(lo, lo + every) < steps
        n_active = int(active.sum())
        params, opt_state, ok, (loss, gnorm, taken), end = _block(
            combine(params, static),
            opt_state,
            ok,
            x,
            y,
            jnp.asarray(padded[lo : lo + every]),
            jnp.asarray(active),
            jnp.asarray(lo),
            jnp.asarray(taus[lo + n_active]),
            key,
            optimizer,
            batch_size,
        )
        taken = np.asarray(taken)[:n_active]
        if not bool(ok):
            first = int(np.flatnonzero(~taken)[0])
            diverged_at = lo + first
            losses.append(loss[: first + 1])
            gnorms.append(gnorm[: first + 1])
            add_record(diverged_at, combine(params, static))
            break
        losses.append(loss[:n_active])
        gnorms.append(gnorm[:n_active])
        add_record(lo + n_active, combine(params, static))

    trained = combine(params, static)
    n_run = sum(int(v.shape[0]) for v in losses)
    if diverged_at < 0:
        final_loss, final_gnorm = end
    else:  # the last block ended elsewhere: evaluate at the returned (last finite) model
        final_loss, final_gnorm = _loss_and_grad_norm(trained, x, y, taus[diverged_at])
    rec = list(zip(*records))
    history = FitHistory(
        step=jnp.arange(n_run),
        tau=jnp.asarray(taus[:n_run]),
        loss=jnp.concatenate(losses),
        grad_norm=jnp.concatenate(gnorms),
        record_step=jnp.asarray(rec[0]),
        record_tau=jnp.asarray(rec[1], dtype),
        width=jnp.asarray(rec[2], dtype),
        boundary_mass=Estimate(
            jnp.stack([m.value for m in rec[3]]), jnp.stack([m.stderr for m in rec[3]])
        ),
        certificate=jnp.stack([jnp.asarray(v) for v in rec[4]]),
        gap=Estimate(jnp.stack([g.value for g in rec[5]]), jnp.stack([g.stderr for g in rec[5]])),
        certificate_status=tuple(rec[6]),
        status="ok" if diverged_at < 0 else "diverged",
        diverged_at=diverged_at,
        final_loss=final_loss,
        final_grad_norm=final_gnorm,
    )
    return FitResult(trained, history)
