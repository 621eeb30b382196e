"""An adversarial sweep of the public API, the CLI and the results files (issue 15).

One table of cases, each a bad or edge input and the one answer it must get:

* `reject`: a `ValueError` whose message matches a pattern naming the
  argument (or, for the CLI, exit status 2 with such a message on stderr);
* `nan`: NaN poisoning, every floating entry of the result NaN (a traced
  argument outside its domain, `softhard._validate` module docstring);
* `finite`: a finite answer, checked against the value it must equal where
  there is one (a tiny temperature is the hard limit, an interface far from
  the sample has no mass).

Numeric cases run in float32 and float64. The categories follow the issue's
sections; `python tests/test_adversarial.py` prints the case count per
category (tried / rejected cleanly / computed).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import GOOD  # the good sweep config the CLI tests start from

import softhard as sh
from softhard import _stats
from softhard.cli import main as cli_main
from softhard.diagnostics import io as sh_io
from softhard.diagnostics import table2_setup

F32, F64 = jnp.float32, jnp.float64
SILENT, TRACED, TINY, HANGS, OBSCURE, FILES, CLI = (
    "silent wrong numbers",
    "traced arguments",
    "tiny temperatures",
    "hangs and memory",
    "obscure errors",
    "results files",
    "CLI",
)


class Case(NamedTuple):
    category: str
    item: int  # the issue's item number
    name: str
    run: Callable  # run(dtype) -> result; CLI cases: -> (exit status, stderr)
    expect: str  # "reject" | "nan" | "finite"
    check: object = None  # reject: message pattern; finite: callable(result, dtype) or None
    dtypes: tuple = (F32, F64)


CASES: list[Case] = []


def case(category, item, name, expect, check=None, dtypes=(F32, F64)):
    def register(fn):
        CASES.append(Case(category, item, name, fn, expect, check, dtypes))
        return fn

    return register


def reject(category, item, name, pattern, dtypes=(F32, F64)):
    return case(category, item, name, "reject", pattern, dtypes)


ONCE = (F64,)  # cases without a numeric precision (constructors of shapes, the CLI)


# ----------------------------------------------------------------------------
# fixtures built per precision (small: every case runs in milliseconds)
# ----------------------------------------------------------------------------


def setup(dt):
    model, teacher, law = table2_setup(0.0, dtype=dt)
    x, y = teacher.sample(jax.random.key(0), law, 64)
    return model, teacher, law, x, y


def linear(K, d, dt, seed=0):
    """A `(LinearRouter, LinearExperts)` pair with K experts on R^d (no router for K = 1)."""
    rng = np.random.default_rng(seed)
    W, b = jnp.asarray(rng.normal(size=(K, d)), dt), jnp.asarray(rng.normal(size=K), dt)
    return (sh.LinearRouter(W, b) if K >= 2 else None), sh.LinearExperts(W[::-1] + 1.0, b)


def loss_of(dt):
    model, _, _, x, y = setup(dt)
    return (lambda m: sh.soft_risk(m, x, y, 0.1)), model


# ----------------------------------------------------------------------------
# silent wrong numbers and data integrity (items 1–6, 12, 13)
# ----------------------------------------------------------------------------

for _K_r, _K_e in ((2, 3), (2, 1), (3, 2)):

    @reject(SILENT, 1, f"MoE router K={_K_r}, experts K={_K_e}", r"experts` has K = \d+ experts")
    def _moe_mismatch(dt, K_r=_K_r, K_e=_K_e):
        return sh.MoE(linear(K_r, 2, dt)[0], linear(K_e, 2, dt)[1])

    @reject(SILENT, 2, f"Teacher router K={_K_r}, experts K={_K_e}", r"experts` has K = \d+")
    def _teacher_mismatch(dt, K_r=_K_r, K_e=_K_e):
        return sh.Teacher(linear(K_r, 2, dt)[0], linear(K_e, 2, dt)[1])


@reject(SILENT, 1, "MoE router d=2, experts d=3", r"dimension d = 3 but `router` takes d = 2")
def _moe_dim(dt):
    return sh.MoE(linear(2, 2, dt)[0], linear(2, 3, dt)[1])


def _k3_teacher(dt):
    return sh.Teacher(*linear(3, 2, dt))


@reject(SILENT, 2, "recovery_error K=2 student, K=3 teacher", r"`teacher` has K = 3")
def _recovery_k(dt):
    model, _, _, x, _ = setup(dt)
    return sh.recovery_error(model, _k3_teacher(dt), x)


@reject(SILENT, 2, "misrouting_mass K=2 student, K=3 teacher", r"`teacher` has K = 3")
def _misrouting_k(dt):
    model, _, _, x, _ = setup(dt)
    return sh.misrouting_mass(model, _k3_teacher(dt), x, 0.1, 0.1)


@reject(SILENT, 2, "expert_separation K=2 student, K=3 teacher", r"`teacher` has K = 3")
def _separation_k(dt):
    model, _, _, x, _ = setup(dt)
    return sh.expert_separation(model, _k3_teacher(dt), x, 1.0)


@reject(SILENT, 3, "gaussian_slab_probability with an indefinite cov", r"`cov` must be positive")
def _slab_indefinite(dt):
    cov = jnp.asarray([[1.0, 2.0], [2.0, 1.0]], dt)
    return sh.gaussian_slab_probability(
        jnp.asarray([0.0, 1.0], dt), 0.0, jnp.zeros(2, dt), cov, 1.0
    )


@reject(SILENT, 3, "gaussian_slab_probability with a non-symmetric cov", r"`cov` must be symmetric")
def _slab_nonsym(dt):
    cov = jnp.asarray([[1.0, 0.5], [0.0, 1.0]], dt)
    return sh.gaussian_slab_probability(
        jnp.asarray([0.0, 1.0], dt), 0.0, jnp.zeros(2, dt), cov, 1.0
    )


for _kw, _pat in (
    ({"sigma": -1.0}, r"`sigma` must be a finite number > 0"),
    ({"sigma": 0.0}, r"`sigma` must be a finite number > 0"),
    ({"num_probes": 0}, r"`num_probes` must be an integer >= 1"),
    ({"num_matvecs": 0}, r"`num_matvecs` must be an integer >= 1"),
    ({"num_points": 0}, r"`num_points` must be an integer >= 1"),
    ({"grid": [float("nan"), 0.0]}, r"`grid` must hold finite"),
):

    @reject(SILENT, 4, f"spectral_density {_kw}", _pat)
    def _density(dt, kw=_kw):
        loss, model = loss_of(dt)
        return sh.spectral_density(loss, model, key=jax.random.key(0), **kw)


for _perm, _pat in (
    ([0, 1, 2], r"permutation of range\(K\) with K = 2"),
    ([0, 0], r"permutation of range\(K\) with K = 2"),
    ([1.5, 0], r"`perm` must hold integer expert indices"),
    ([True, False], r"`perm` must hold integer expert indices"),
):

    @reject(SILENT, 5, f"permute_experts {_perm}", _pat)
    def _permute(dt, perm=_perm):
        return sh.permute_experts(setup(dt)[0], perm)


for _kw, _pat in (
    ({"k": 100}, r"`k` must be <= the 12 dimensions"),
    ({"k": True}, r"`k` must be an integer >= 1, got True"),
    ({"k": float("nan")}, r"`k` must be an integer >= 1, got nan"),
    ({"k": 2, "num_matvecs": 2.5}, r"`num_matvecs` must be an integer"),
):

    @reject(SILENT, 6, f"hessian_spectrum {_kw}", _pat)
    def _spectrum(dt, kw=_kw):
        loss, model = loss_of(dt)
        return sh.hessian_spectrum(loss, model, **kw)


@reject(SILENT, 6, "gauge_directions rtol=-1", r"`rtol` must be in \(0, 1\)")
def _gauge_rtol(dt):
    return sh.gauge_directions(setup(dt)[0], rtol=-1)


@case(SILENT, 12, "gap_coefficient with the interface far from the sample", "finite",
      lambda est, dt: abs(float(est.value)) <= 3 * float(est.stderr) + 1e-12)  # fmt: skip
def _gap_far(dt):
    model, _, _, x, y = setup(dt)
    far = sh.MoE(sh.LinearRouter(model.router.W, jnp.asarray([-50.0, 0.0], dt)), model.experts)
    return sh.gap_coefficient(far, x, y)


@reject(SILENT, 12, "router_report of N = 0 logits", r"`logits` must hold at least one row")
def _report_empty(dt):
    return sh.router_report(jnp.zeros((0, 3), dt))


def _nan_row(dt):
    model, teacher, law, x, y = setup(dt)
    return model, x.at[3].set(jnp.nan), y


@reject(SILENT, 12, "boundary_mass with a NaN logit row", r"`logits` must be finite: 1 of 64 rows")
def _mass_nan_row(dt):
    model, x, _ = _nan_row(dt)
    return sh.boundary_mass(sh.logits(model.router, x), 0.1)


@reject(SILENT, 12, "diagnostic_sweep with a NaN input row", r"`x` must be finite: 1 of 64 rows")
def _sweep_nan_row(dt):
    model, x, y = _nan_row(dt)
    return sh.diagnostic_sweep(model, x, y, jnp.asarray([0.1], dt))


@reject(SILENT, 12, "risk_sweep with a NaN target", r"`y` must be finite: 1 of 64 rows")
def _sweep_nan_y(dt):
    model, _, _, x, y = setup(dt)
    return sh.risk_sweep(model, x, y.at[5].set(jnp.inf), jnp.asarray([0.1], dt))


_LAW_CASES = (
    ("Gaussian with an infinite variance", r"`cov` must be finite",
     lambda dt: sh.Gaussian(jnp.zeros(2, dt), jnp.diag(jnp.asarray([jnp.inf, 1.0], dt)))),
    ("Gaussian with a NaN mean", r"`mean` must be finite",
     lambda dt: sh.Gaussian(jnp.asarray([jnp.nan, 0.0], dt), jnp.eye(2, dtype=dt))),
    ("Gaussian with a [d, 1] mean", r"expected mean \[d\] and cov \[d, d\]",
     lambda dt: sh.Gaussian(jnp.zeros((2, 1), dt), jnp.eye(2, dtype=dt))),
    ("Gaussian with a [d] cov", r"`cov` must be a 2-D array|expected mean",
     lambda dt: sh.Gaussian(jnp.zeros(2, dt), jnp.ones(2, dt))),
    ("GaussianMixture with a non-symmetric cov", r"`covs\[0\]` must be symmetric",
     lambda dt: sh.GaussianMixture(jnp.asarray([0.5, 0.5], dt), jnp.zeros((2, 2), dt),
                                   jnp.asarray([[[1.0, 0.5], [0.0, 1.0]]] * 2, dt))),
    ("Uniform with low = -inf", r"`low` must be finite",
     lambda dt: sh.Uniform(jnp.asarray([-jnp.inf, 0.0], dt), jnp.ones(2, dt))),
    ("NormalizedRouter with a zero row", r"`W` has zero rows \[0\]",
     lambda dt: sh.NormalizedRouter(jnp.asarray([[0.0, 0.0], [1.0, 0.0]], dt), jnp.zeros(2, dt))),
    ("Teacher with noise_std = -1", r"`noise_std` must be finite and >= 0",
     lambda dt: sh.Teacher(*linear(2, 2, dt), noise_std=-1.0)),
    ("LinearRouter with a 1-D W", r"`W` must be a 2-D array",
     lambda dt: sh.LinearRouter(jnp.ones(2, dt), jnp.zeros(2, dt))),
    ("LinearRouter with a scalar b", r"`b` must be a 1-D array",
     lambda dt: sh.LinearRouter(jnp.ones((2, 2), dt), jnp.asarray(0.0, dt))),
    ("LinearRouter with a string W", r"`W` must be an array of real numbers",
     lambda dt: sh.LinearRouter("abc", jnp.zeros(2, dt))),
    ("LinearRouter with W = None", r"`W` must be an array of real numbers",
     lambda dt: sh.LinearRouter(None, jnp.zeros(2, dt))),
)  # fmt: skip
for _name, _pat, _fn in _LAW_CASES:
    reject(SILENT, 13, _name, _pat)(_fn)


# ----------------------------------------------------------------------------
# traced arguments: NaN poisoning (item 9)
# ----------------------------------------------------------------------------


_A = np.asarray([[1.0, 0.0, -0.5], [0.2, 0.1, 0.0]])


def _poison_cases():
    # (name, fn(dt, traced value), bad value)
    def soft_risk(dt, t):
        model, _, _, x, y = setup(dt)
        return sh.soft_risk(model, x, y, t)

    def sweep(dt, t):
        model, _, _, x, y = setup(dt)
        return sh.risk_sweep(model, x, y, jnp.stack([t, t])).soft

    def diag_delta(dt, d):
        model, _, _, x, y = setup(dt)
        return sh.diagnostic_sweep(model, x, y, jnp.asarray([0.1], dt), delta=d).ambiguity

    def exact_soft(dt, t):
        model, teacher, law, _, _ = setup(dt)
        return sh.exact_soft_risk(model, teacher, law, t)

    def exact_gap(dt, t):
        model, teacher, law, _, _ = setup(dt)
        return sh.exact_risk_gap(model, teacher, law, t)

    def exact_mass(dt, w):
        model, _, law, _, _ = setup(dt)
        return sh.exact_boundary_mass(model.router, law, w)

    def effective(dt, t):
        return sh.effective_operator(jnp.eye(2, dtype=dt), jnp.asarray([1.0, 0.0], dt), t)

    return (
        ("gates tau", lambda dt, t: sh.gates(jnp.asarray(_A, dt), t), -0.1),
        ("log_gates tau", lambda dt, t: sh.log_gates(jnp.asarray(_A, dt), t), 0.0),
        ("soft_risk tau", soft_risk, -0.1),
        ("soft_risk tau = inf", soft_risk, np.inf),
        ("risk_sweep taus", sweep, -0.1),
        ("diagnostic_sweep delta", diag_delta, 0.7),
        ("boundary_mass w", lambda dt, w: sh.boundary_mass(jnp.asarray(_A, dt), w), -1.0),
        ("boundary_mass w = nan", lambda dt, w: sh.boundary_mass(jnp.asarray(_A, dt), w), np.nan),
        (
            "ambiguity_mass delta",
            lambda dt, d: sh.ambiguity_mass(jnp.asarray(_A, dt), 0.1, d),
            0.7,
        ),  # fmt: skip
        ("ambiguity_mass tau", lambda dt, t: sh.ambiguity_mass(jnp.asarray(_A, dt), t, 0.1), -1.0),
        ("slab_width eps", lambda dt, e: sh.slab_width(0.1, e), 0.0),
        ("exact_soft_risk tau", exact_soft, -1.0),
        ("exact_risk_gap tau", exact_gap, 0.0),
        ("exact_boundary_mass w", exact_mass, -0.5),
        ("effective_operator tau", effective, -1.0),
    )


for _name, _fn, _bad in _poison_cases():

    @case(TRACED, 9, f"jit: {_name} = {_bad}", "nan")
    def _jit_poison(dt, fn=_fn, bad=_bad):
        return jax.jit(lambda v: fn(dt, v))(jnp.asarray(bad, dt))


@case(TRACED, 9, "vmap of soft_risk over [0.1, -0.1, 0]", "finite",
      lambda r, dt: np.isfinite(r[0]) and np.isnan(r[1:]).all())  # fmt: skip
def _vmap_poison(dt):
    model, _, _, x, y = setup(dt)
    return np.asarray(
        jax.vmap(lambda t: sh.soft_risk(model, x, y, t))(jnp.asarray([0.1, -0.1, 0.0], dt))
    )


@case(TRACED, 9, "jit: a valid traced tau is not poisoned", "finite",
      lambda r, dt: np.allclose(r[0], r[1], rtol=1e-6))  # fmt: skip
def _jit_valid(dt):
    model, _, _, x, y = setup(dt)
    f = lambda t: sh.soft_risk(model, x, y, t)
    return float(jax.jit(f)(jnp.asarray(0.1, dt))), float(f(0.1))


# ----------------------------------------------------------------------------
# tiny temperatures (item 11): one rule, the capped inverse temperature
# ----------------------------------------------------------------------------


def _tiny_cases():
    sub = {F32: 1e-45, F64: 5e-324}  # the smallest subnormals

    def gates_equal_hard(dt, t):
        a = jnp.asarray(_A, dt)
        return np.allclose(np.asarray(sh.gates(a, t)), np.asarray(sh.hard_gates(a)))

    def soft_is_hard(dt, t):
        model, _, _, x, y = setup(dt)
        return np.allclose(float(sh.soft_risk(model, x, y, t)), float(sh.hard_risk(model, x, y)))

    def exact_soft(dt, t):
        model, teacher, law, _, _ = setup(dt)
        return np.isclose(float(sh.exact_soft_risk(model, teacher, law, t)), 0.0, atol=1e-6)

    def exact_gap(dt, t):
        model, teacher, law, _, _ = setup(dt)
        return np.isfinite(float(sh.exact_risk_gap(model, teacher, law, t)))

    def log_gates(dt, t):
        return np.all(~np.isnan(np.asarray(sh.log_gates(jnp.asarray(_A, dt), t))))

    def effective(dt, t):
        M = sh.effective_operator(jnp.eye(2, dtype=dt), jnp.asarray([1.0, 0.0], dt), t)
        return np.all(np.isfinite(np.asarray(M)))

    out = []
    for name, fn in (
        ("gates", gates_equal_hard),
        ("soft_risk", soft_is_hard),
        ("exact_soft_risk", exact_soft),
        ("exact_risk_gap", exact_gap),
        ("log_gates", log_gates),
        ("effective_operator", effective),
    ):
        out.append((f"{name} at tau = 1e-300 (0 in float32)", fn, lambda dt: 1e-300))
        out.append((f"{name} at a subnormal tau", fn, lambda dt: sub[dt]))
    return out


for _name, _fn, _tau in _tiny_cases():

    @case(TINY, 11, _name, "finite", lambda ok, dt: bool(ok))
    def _tiny(dt, fn=_fn, tau=_tau):
        return fn(dt, tau(dt))


# ----------------------------------------------------------------------------
# hangs and memory (items 14, 15)
# ----------------------------------------------------------------------------


@case(HANGS, 14, "pairwise_level_set_densities at K = 128 (8128 pairs)", "finite",
      lambda est, dt: est.value.shape == (8128,) and bool(jnp.all(jnp.isfinite(est.value))),
      dtypes=ONCE)  # fmt: skip
def _pairs_k128(dt):
    a = jax.random.normal(jax.random.key(0), (64, 128), dt)
    return sh.pairwise_level_set_densities(a)


@case(HANGS, 15, "streamed moments over n = 2^31 + 5 samples (int32 row indices overflow)",
      "finite", lambda m, dt: abs(float(m.n) / (2**31 + 5) - 1) < 1e-6 and float(m.mean) == 1.0,
      dtypes=ONCE)  # fmt: skip
def _stream_2_31(dt):
    return _stats.reduce_chunks(lambda i, s: jnp.ones(2**24, jnp.float32), 2**31 + 5, 2**24)


# ----------------------------------------------------------------------------
# obscure errors: the wrong dimension, non-numbers, messages naming the argument (16, 18, 19)
# ----------------------------------------------------------------------------


def _x3(dt):
    return jnp.ones((8, 3), dt), jnp.ones(8, dt)


for _name, _fn in (
    ("soft_risk", lambda m, t, law, x, y: sh.soft_risk(m, x, y, 0.1)),
    ("hard_predict", lambda m, t, law, x, y: sh.hard_predict(m, x)),
    ("risk_sweep", lambda m, t, law, x, y: sh.risk_sweep(m, x, y, [0.1])),
    ("diagnostic_sweep", lambda m, t, law, x, y: sh.diagnostic_sweep(m, x, y, [0.1])),
    ("gap_coefficient", lambda m, t, law, x, y: sh.gap_coefficient(m, x, y)),
    ("certify", lambda m, t, law, x, y: sh.certify(m, x, y, [0.1])),
    ("recovery_error", lambda m, t, law, x, y: sh.recovery_error(m, t, x)),
    ("fit", lambda m, t, law, x, y: sh.fit(m, x, y, 0.1, steps=1)),
):

    @reject(OBSCURE, 16, f"{_name} with x of dimension 3 for a d = 2 model", r"`x` must have shape")
    def _wrong_dim(dt, fn=_fn):
        model, teacher, law, _, _ = setup(dt)
        return fn(model, teacher, law, *_x3(dt))


@reject(
    OBSCURE, 16, "population_sweep with a law of dimension 3", r"`law` draws inputs of dimension 3"
)
def _pop_dim(dt):
    model, teacher, _, _, _ = setup(dt)
    law3 = sh.StandardGaussian(3)
    return sh.population_sweep(model, teacher, law3, [0.1], key=jax.random.key(0), n=64)


@reject(
    OBSCURE, 16, "Teacher.sample with a law of dimension 3", r"`law` draws inputs of dimension 3"
)
def _sample_dim(dt):
    return setup(dt)[1].sample(jax.random.key(0), sh.StandardGaussian(3), 4)


for _name, _val in (("None", None), ("complex", 0.1 + 1j), ("'0.1'", "0.1"), ("True", True)):

    @reject(OBSCURE, 18, f"soft_risk tau = {_name}", r"`tau` must be a temperature > 0")
    def _tau_type(dt, v=_val):
        model, _, _, x, y = setup(dt)
        return sh.soft_risk(model, x, y, v)

    @reject(OBSCURE, 18, f"gates tau = {_name}", r"`tau` must be a temperature > 0")
    def _gates_type(dt, v=_val):
        return sh.gates(jnp.asarray(_A, dt), v)


for _name, _arr, _pat in (
    ("bool logits", lambda dt: jnp.asarray([[True, False]]), r"`logits` must be an array"),
    ("complex logits", lambda dt: jnp.asarray([[1 + 1j, 0]]), r"`logits` must be an array"),
):

    @reject(OBSCURE, 18, f"gates of {_name}", _pat)
    def _logit_type(dt, arr=_arr):
        return sh.gates(arr(dt), 0.1)


@reject(OBSCURE, 18, "soft_risk of complex x", r"`x` must be an array \[N, d\] of real numbers")
def _x_complex(dt):
    model, _, _, x, y = setup(dt)
    return sh.soft_risk(model, x.astype(jnp.complex64), y, 0.1)


_KEY = jax.random.key(0)
for _name, _call, _pat in (
    ("law.sample(key, -1)", lambda law: law.sample(_KEY, -1), r"`n` must be an integer"),
    ("law.sample(key, 2.5)", lambda law: law.sample(_KEY, 2.5), r"`n` must be an integer"),
    ("law.sample(0, 4)", lambda law: law.sample(0, 4), r"`key` must be a jax.random key"),
    ("law.sample(None, 4)", lambda law: law.sample(None, 4), r"`key` must be a jax.random key"),
):  # fmt: skip

    @reject(OBSCURE, 18, _name, _pat)
    def _sample(dt, call=_call):
        return call(setup(dt)[2])


@reject(OBSCURE, 18, "StandardGaussian(2.5)", r"`d` must be an integer >= 1", dtypes=ONCE)
def _std_gauss(dt):
    return sh.StandardGaussian(2.5)


@reject(OBSCURE, 18, "hessian(batch_size=-1)", r"`batch_size` must be an integer >= 1")
def _hessian_bs(dt):
    loss, model = loss_of(dt)
    return sh.hessian(loss, model, batch_size=-1)


@reject(OBSCURE, 18, "hvp with a wrong-shape tangent", r"`v` must have the pytree structure")
def _hvp_tangent(dt):
    loss, model = loss_of(dt)
    return sh.hvp(loss, model, jnp.ones(3, dt))


@reject(OBSCURE, 19, "pairwise_level_set_densities with N = 1", r"`logits` must hold N >= 2")
def _pairs_n1(dt):
    return sh.pairwise_level_set_densities(jnp.zeros((1, 3), dt))


@reject(OBSCURE, 19, "certify with a NaN in x names x", r"`x` must be finite")
def _certify_nan(dt):
    model, x, y = _nan_row(dt)
    return sh.certify(model, x, y, [0.1])


# ----------------------------------------------------------------------------
# results files (items 7, 8)
# ----------------------------------------------------------------------------


@case(FILES, 7, "write_atomic honours the umask", "finite",
      lambda mode, dt: mode == 0o640, dtypes=ONCE)  # fmt: skip
def _umask(dt):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        old = os.umask(0o027)
        try:
            path = sh_io.write_atomic(os.path.join(d, "t.csv"), "a\n")
        finally:
            os.umask(old)
        return stat.S_IMODE(os.stat(path).st_mode)


@reject(FILES, 8, "a second run into a locked output folder", r"is in use by another softhard run",
        dtypes=ONCE)  # fmt: skip
def _locked(dt):
    import tempfile

    with tempfile.TemporaryDirectory() as d, sh_io.output_lock(d):
        # flock is per open file description: a second open in this process conflicts too
        with sh_io.output_lock(d):
            return "entered twice"


@case(FILES, 8, "a killed run's hidden temp file is removed on the next run", "finite",
      lambda left, dt: left == [], dtypes=ONCE)  # fmt: skip
def _stale_tmp(dt):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        stale = os.path.join(d, sh_io.TMP_PREFIX + "killed.csv")
        open(stale, "w").close()
        with sh_io.output_lock(d):
            pass
        return [f for f in os.listdir(d) if f.startswith(sh_io.TMP_PREFIX)]


# ----------------------------------------------------------------------------
# the CLI (items 10, 15, 17, 19): exit status 2 and a message naming the field
# ----------------------------------------------------------------------------


def _run_cli(argv) -> tuple[int, str]:
    """`softhard argv` in this process: (exit status, stderr)."""
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli_main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code
    return rc, err.getvalue()


def _cfg(**changes):
    cfg = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        cfg[key] = value
    return cfg


def _sweep_cli(cfg, *extra):
    def run(dt):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.json")
            with open(path, "w") as fh:
                fh.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
            return _run_cli(["sweep", path, *[a.replace("{d}", d) for a in extra]])

    return run


_TEACHER3 = {
    "type": "teacher",
    "router": {"type": "linear", "W": [[1, 0, 0], [0, 0, 0]], "b": [0, 0]},
    "experts": {"type": "linear", "B": [[1, 0, 0], [0, 0, 0]], "c": [0, 0]},
}
_MIXTURE_INDEF = {
    "type": "gaussian_mixture",
    "weights": [0.5, 0.5],
    "means": [[0, 0], [1, 1]],
    "covs": [[[1, 2], [2, 1]], [[1, 0], [0, 1]]],
}
_CLI_CASES = (
    (10, "gaussian_mixture with an indefinite covariance", _cfg(law=_MIXTURE_INDEF), (),
     r"covs\[0\]|positive definite"),
    (10, "noise_std Infinity", '{"router": {"type": "linear", "W": [[1.0, 0.0], [0.0, 0.0]], '
     '"b": [0.0, 0.0]}, "experts": {"type": "linear", "B": [[0.0, 2.0], [0.0, 0.0]], "c": [0.0, '
     '0.0]}, "law": {"type": "standard_gaussian", "d": 2}, "target": {"type": "self", '
     '"noise_std": Infinity}, "taus": [0.1]}', (), r"`target.noise_std` must be a finite"),
    (15, "a config larger than the cap", "{" + " " * (65 * 2**20) + "}", (),
     r"a sweep config is at most"),
    (17, "taus [1e-320] (subnormal)", _cfg(taus=[1e-320]), (), r"`taus` must hold temperatures in"),
    (17, "geomspace [[1], 1, 4]", _cfg(taus={"geomspace": [[1], 1, 4]}), (), r"`taus.geomspace`"),
    (17, "target.c [1, 2]", _cfg(target={"type": "linear", "w": [1, 0], "c": [1, 2]}), (),
     r"`target.c` must be a finite number"),
    (17, "activation ['tanh']", _cfg(router={"type": "mlp", "activation": ["tanh"], "K": 2,
     "hidden": 3, "d": 2, "init": {"seed": 0, "scale": 1.0}}), (), r"`router.activation`"),
    (17, "seed 2**70", _cfg(seed=2**70), (), r"`seed` must be an integer in"),
    (17, "a teacher whose router dimension differs from the law's", _cfg(target=_TEACHER3), (),
     r"`target.router` does not accept inputs of dimension 2"),
    (17, "--csv into a directory", GOOD, ("--csv", "{d}"), r"`--csv` .* is a directory"),
    (17, "--plot into a directory", GOOD, ("--plot", "{d}"), r"`--plot` .* no figure suffix"),
    (17, "--csv under a file", GOOD, ("--csv", "{d}/c.json/x.csv"), r"is not a directory"),
    (19, "geomspace ['a', 1, 4]", _cfg(taus={"geomspace": ["a", 1, 4]}), (), r"`taus.geomspace`"),
    (19, "target.c 'abc'", _cfg(target={"type": "linear", "w": [1, 0], "c": "abc"}), (),
     r"`target.c`"),
    (19, "seed true", _cfg(seed=True), (), r"`seed` must be an integer"),
)  # fmt: skip
for _item, _name, _cfgv, _extra, _pat in _CLI_CASES:
    case(CLI, _item, f"sweep: {_name}", "reject", _pat, ONCE)(_sweep_cli(_cfgv, *_extra))


def _cli_argv(argv):
    def run(dt):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "afile"), "w").close()
            os.makedirs(os.path.join(d, "adir.json"))
            return _run_cli([a.replace("{d}", d) for a in argv])

    return run


for _item, _name, _argv, _pat in (
    (17, "sweep of a config path that is a directory", ["sweep", "{d}/adir.json"],
     r"is not a regular file"),
    (15, "sweep of /dev/zero", ["sweep", "/dev/zero"], r"supported formats|not a regular file"),
    (17, "reproduce --out a file", ["reproduce", "--quick", "--out", "{d}/afile"],
     r"exists and is not a directory"),
    (17, "demo --taus nan", ["demo", "--taus", "nan"], r"--taus must all be finite"),
    (17, "demo --taus inf", ["demo", "--taus", "inf"], r"--taus must all be finite"),
    (17, "demo --offset nan", ["demo", "--offset", "nan"], r"--offset must be a finite"),
):  # fmt: skip
    case(CLI, _item, _name, "reject", _pat, ONCE)(_cli_argv(_argv))


# ----------------------------------------------------------------------------
# the runner: one outcome per case
# ----------------------------------------------------------------------------


def outcome(c: Case, dt) -> tuple[str, str]:
    """`(kind, detail)`: kind is "rejected", "computed" or "failed"."""
    if c.category == CLI:
        rc, err = c.run(dt)
        if rc == 2 and c.check and __import__("re").search(c.check, err):
            return "rejected", err.strip().splitlines()[-1]
        return "failed", f"exit {rc}: {err.strip()[-300:]}"
    try:
        with np.errstate(all="ignore"):
            out = c.run(dt)
    except ValueError as e:
        import re

        if c.expect == "reject" and re.search(c.check, str(e)):
            return "rejected", str(e)
        return "failed", f"ValueError not matching {c.check!r}: {e}"
    except Exception as e:  # any other exception is a defect
        return "failed", f"{type(e).__name__}: {e}"
    if c.expect == "reject":
        return "failed", f"returned {out!r:.200}"
    if c.expect == "nan":
        leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(out)]
        leaves = [v for v in leaves if np.issubdtype(v.dtype, np.floating)]
        if leaves and all(np.isnan(v).all() for v in leaves):
            return "computed", "NaN-poisoned"
        return "failed", f"not poisoned: {out!r:.200}"
    ok = c.check is None or bool(c.check(out, dt))
    return ("computed", "checked") if ok else ("failed", f"wrong value: {out!r:.200}")


PARAMS = [
    pytest.param(c, dt, id=f"{c.item}-{c.name}-{jnp.dtype(dt).name}")
    for c in CASES
    for dt in c.dtypes
]


@pytest.mark.parametrize("c, dt", PARAMS)
def test_adversarial(c, dt):
    kind, detail = outcome(c, dt)
    assert kind != "failed", f"[{c.category}, item {c.item}] {c.name}: {detail}"


def test_every_item_of_the_issue_has_a_case():
    covered = {c.item for c in CASES}
    assert set(range(1, 20)) <= covered, sorted(set(range(1, 20)) - covered)


def summary() -> dict:
    """Case counts per category: tried / rejected cleanly / computed / failed."""
    table: dict = {}
    for c, dt in ((p.values[0], p.values[1]) for p in PARAMS):
        row = table.setdefault(c.category, {"tried": 0, "rejected": 0, "computed": 0, "failed": 0})
        kind, _ = outcome(c, dt)
        row["tried"] += 1
        row[kind] += 1
    return table


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    rows = summary()
    print(f"{'category':<24}{'tried':>7}{'rejected':>10}{'computed':>10}{'failed':>8}")
    for cat, r in rows.items():
        print(f"{cat:<24}{r['tried']:>7}{r['rejected']:>10}{r['computed']:>10}{r['failed']:>8}")
    total = {
        k: sum(r[k] for r in rows.values()) for k in ("tried", "rejected", "computed", "failed")
    }
    print(f"{'all':<24}{total['tried']:>7}{total['rejected']:>10}{total['computed']:>10}"
          f"{total['failed']:>8}")  # fmt: skip
    sys.exit(1 if total["failed"] else 0)
