"""Benchmarks for softhard, each against baselines measured in the same process.

    python scripts/bench.py [--quick] [--out bench.json] [--cases sweep_cpu,...]

Writes JSON: for every case the project's time, the baselines' times and their
ratios (best of `repeats` wall-clock runs after a warm-up / compilation run).
Targets live here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import softhard as sh


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _block(tree):
    return jax.tree.map(lambda a: a.block_until_ready(), tree)


def _sweep_problem(K: int, d: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dtype = np.float32
    router = sh.LinearRouter(
        rng.normal(size=(K, d)).astype(dtype), rng.normal(size=K).astype(dtype)
    )
    experts = sh.LinearExperts(
        rng.normal(size=(K, d)).astype(dtype), rng.normal(size=K).astype(dtype)
    )
    model = sh.MoE(router, experts)
    x = rng.normal(size=(n, d)).astype(dtype)
    y = rng.normal(size=n).astype(dtype)
    return model, x, y


def numpy_sweep(model, x, y, taus):
    """Baseline: a plain NumPy loop over τ (logits and outputs computed once)."""
    W, b = np.asarray(model.router.W), np.asarray(model.router.b)
    B, c = np.asarray(model.experts.B), np.asarray(model.experts.c)
    a = x @ W.T + b
    f = x @ B.T + c
    z = a - a.max(-1, keepdims=True)
    hard = (y - np.take_along_axis(f, a.argmax(-1)[:, None], -1)[:, 0]) ** 2
    out = []
    for t in taus:
        w = np.exp(z / t)
        ft = (w * f).sum(-1) / w.sum(-1)
        ls = (y - ft) ** 2
        out.append((ls.mean(), (ls - hard).mean()))
    return np.array(out)


def naive_jax_sweep(model, x, y, taus):
    """Baseline: per-τ `lax.map` over precomputed `[N, K]` logits and outputs."""
    a = sh.logits(model.router, x)
    f = sh.expert_outputs(model.experts, x)

    @jax.jit
    def run(a, f, y, taus):
        hard = jnp.mean((y - jnp.sum(sh.hard_gates(a) * f, -1)) ** 2)

        def one(t):
            return jnp.mean((y - jnp.sum(jax.nn.softmax(a / t, -1) * f, -1)) ** 2)

        return jax.lax.map(one, taus), hard

    return run(a, f, y, taus)


def case_sweep_cpu(quick: bool, repeats: int) -> dict:
    K, d, T = 8, 32, 64
    n = 2**14 if quick else 2**20
    model, x, y = _sweep_problem(K, d, n)
    taus = np.geomspace(1e-3, 1.0, T).astype(np.float32)
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(taus)
    t_sh = _best_time(lambda: _block(sh.risk_sweep(model, xj, yj, tj)), repeats)
    t_np = _best_time(lambda: numpy_sweep(model, x, y, taus), max(1, repeats // 2))
    t_naive = _best_time(lambda: _block(naive_jax_sweep(model, xj, yj, tj)), repeats)
    ref = numpy_sweep(model, x.astype(np.float64), y.astype(np.float64), taus.astype(np.float64))
    got = np.asarray(sh.risk_sweep(model, xj, yj, tj).soft.value)
    return {
        "case": "sweep_cpu",
        "K": K,
        "d": d,
        "N": n,
        "T": T,
        "dtype": "float32",
        "softhard_s": t_sh,
        "numpy_loop_s": t_np,
        "naive_jax_s": t_naive,
        "speedup_vs_numpy": t_np / t_sh,
        "speedup_vs_naive_jax": t_naive / t_sh,
        "max_rel_err_vs_float64_numpy": float(np.max(np.abs(got - ref[:, 0]) / np.abs(ref[:, 0]))),
        "targets": {"speedup_vs_numpy": 10.0, "speedup_vs_naive_jax": 2.0},
    }


CASES = {"sweep_cpu": case_sweep_cpu}


def _write_atomic(path: str, payload: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".bench-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI)")
    p.add_argument("--out", default="bench.json")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args(argv)
    names = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(dv) for dv in jax.devices()],
        },
        "quick": args.quick,
        "cases": [CASES[c](args.quick, args.repeats) for c in names],
    }
    _write_atomic(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
