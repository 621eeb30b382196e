"""Benchmarks for softhard, each against baselines measured in the same process.

    python scripts/bench.py [--quick] [--out bench.json] [--cases sweep_cpu,...]

Writes JSON: for every case the project's time, the baselines' times and their
ratios (best of `repeats` wall-clock runs after a warm-up / compilation run).
Targets live here, never in timed unit tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import softhard as sh


def _best_time(fn, repeats: int) -> float:
    """Best of `repeats` timed calls of `fn`, after one warm-up (compilation and caches)."""
    return _best_times([fn], repeats)[0]


def _best_times(fns, repeats: int) -> list:
    """Best time of each of `fns` (one warm-up each), timed in turn within each repeat.

    For a ratio of two timings: both see the same machine conditions (this
    shared machine's load drifts by ±20 % between runs seconds apart).
    """
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


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


@jax.jit
def naive_jax_sweep(model, x, y, taus):
    """Baseline: per-τ `lax.map` over `[N, K]` logits and outputs computed once.

    Jitted once at module level (the first timed call's warm-up compiles it),
    so every timed call runs compiled code, like `risk_sweep`.
    """
    a = sh.logits(model.router, x)
    f = sh.expert_outputs(model.experts, x)
    hard = jnp.mean((y - jnp.sum(sh.hard_gates(a) * f, -1)) ** 2)

    def one(t):
        return jnp.mean((y - jnp.sum(jax.nn.softmax(a / t, -1) * f, -1)) ** 2)

    return jax.lax.map(one, taus), hard


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@jax.jit
def _exp_sum(z, taus):
    return jax.lax.map(lambda t: jnp.sum(jnp.exp(z * (1.0 / t))), taus)


def _exp_input(n: int, K: int) -> jax.Array:
    """The resident `[n, K]` buffer of non-positive exponents the exp limit reads."""
    return -jnp.abs(jax.random.normal(jax.random.key(0), (n, K), jnp.float32))


def _exp_limit_s(n: int, K: int, taus, repeats: int) -> float:
    """Time of the exp-throughput limit: `N·K·T` exponentials of a resident `[n, K]` buffer.

    Only the exponentials and one add each: no model and no other memory
    traffic. A sweep that evaluates `K` exponentials per sample and τ cannot
    be faster than this.
    """
    z = _exp_input(n, K)
    return _best_time(lambda: _exp_sum(z, taus).block_until_ready(), repeats)


def case_sweep_cpu(quick: bool, repeats: int) -> dict:
    K, d, T = 8, 32, 64
    n = 2**14 if quick else 2**20
    model, x, y = _sweep_problem(K, d, n)
    taus = np.geomspace(1e-3, 1.0, T).astype(np.float32)
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(taus)
    z = _exp_input(n, K)
    # the sweep and its exp limit timed in turn (their ratio is a target)
    t_sh, t_exp = _best_times(
        [
            lambda: _block(sh.risk_sweep(model, xj, yj, tj)),
            lambda: _exp_sum(z, tj).block_until_ready(),
        ],
        max(repeats, 5),
    )
    t_np = _best_time(lambda: numpy_sweep(model, x, y, taus), max(1, repeats // 2))
    t_naive = _best_time(lambda: _block(naive_jax_sweep(model, xj, yj, tj)), repeats)
    ref = numpy_sweep(model, x.astype(np.float64), y.astype(np.float64), taus.astype(np.float64))
    got = np.asarray(sh.risk_sweep(model, xj, yj, tj).soft.value)
    naive = np.asarray(naive_jax_sweep(model, xj, yj, tj)[0])
    loop = numpy_sweep(model, x, y, taus)[:, 0]
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
        "exp_microbench_s": t_exp,
        "fraction_of_exp_limit": t_exp / t_sh,
        "max_rel_err_vs_float64_numpy": _max_rel(got, ref[:, 0]),
        "max_rel_diff_vs_naive_jax": _max_rel(got, naive),
        "max_rel_diff_vs_numpy_loop": _max_rel(got, loop),
        "targets": {"speedup_vs_numpy": 10.0, "speedup_vs_naive_jax": 2.0},
    }


def case_sweep_topk(quick: bool, repeats: int) -> dict:
    """The fused top-2 sweep (EQUATIONS.md §T) against the top-1 sweep of the same model.

    Same router, experts, sample and τ grid (float32); the top-2 answer is also
    checked against the per-τ objective `soft_risk` (an independent kernel).
    """
    K, d, T = 8, 32, 64
    n = 2**14 if quick else 2**20
    model, x, y = _sweep_problem(K, d, n)
    taus = np.geomspace(1e-3, 1.0, T).astype(np.float32)
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(taus)
    top2 = sh.MoE(model.router, model.experts, k=2)
    mixtral = sh.MoE(model.router, model.experts, k=2, combine_temperature=1.0)
    t1 = _best_time(lambda: _block(sh.risk_sweep(model, xj, yj, tj)), repeats)
    t2 = _best_time(lambda: _block(sh.risk_sweep(top2, xj, yj, tj)), repeats)
    t2r = _best_time(lambda: _block(sh.risk_sweep(mixtral, xj, yj, tj)), repeats)
    got = np.asarray(sh.risk_sweep(top2, xj, yj, tj).soft.value)[::8]
    ref = [float(sh.soft_risk(top2, xj, yj, t)) for t in tj[::8]]
    return {
        "case": "sweep_topk",
        "K": K,
        "d": d,
        "N": n,
        "T": T,
        "top1_s": t1,
        "top2_s": t2,
        "top2_rho1_s": t2r,
        "top2_over_top1": t2 / t1,
        "top2_rho1_over_top1": t2r / t1,
        "max_rel_diff_vs_soft_risk": _max_rel(got, ref),
        "targets": {"top2_over_top1_max": 2.0},
    }


_MEMORY_PROBE = """
import resource, sys, time
import jax, jax.numpy as jnp
import softhard as sh
from softhard.diagnostics import table2_setup
n = int(sys.argv[1])
model, teacher, law = table2_setup(0.0, d=32)
taus = jnp.geomspace(0.01, 1.0, 64)
t0 = time.perf_counter()
out = sh.population_sweep(model, teacher, law, taus, key=jax.random.key(0), n=n, diagnostics=True)
out.gap.value.block_until_ready()
# VmHWM is this process's own peak (ru_maxrss would carry the parent's peak across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak_kb, time.perf_counter() - t0)
"""


def _run_probe(code: str, *args, env_extra=None) -> str:
    import subprocess
    import sys

    env = dict(os.environ)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1]


def case_memory(quick: bool, repeats: int) -> dict:
    """Peak RSS of a 64-temperature diagnostic sweep at two sample sizes (fresh processes)."""
    sizes = (10**5, 10**6) if quick else (10**6, 10**7)
    rows = {}
    for n in sizes:
        rss_kb, secs = _run_probe(_MEMORY_PROBE, n, env_extra={"JAX_PLATFORMS": "cpu"}).split()
        rows[str(n)] = {"peak_rss_mb": int(rss_kb) / 1024, "seconds": float(secs)}
    small, big = (rows[str(n)]["peak_rss_mb"] for n in sizes)
    return {
        "case": "memory",
        "d": 32,
        "T": 64,
        "sizes": list(sizes),
        "runs": rows,
        "peak_ratio_big_over_small": big / small,
        "targets": {"peak_ratio_big_over_small_max": 1.5},
    }


_SHARD_PROBE = """
import json, time
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import softhard as sh
n = int(__import__("sys").argv[1])
rng = np.random.default_rng(0)
K, d = 8, 32
m = sh.MoE(sh.LinearRouter(rng.normal(size=(K, d)), rng.normal(size=K)),
           sh.LinearExperts(rng.normal(size=(K, d)), rng.normal(size=K)))
x = jnp.asarray(rng.normal(size=(n, d))); y = jnp.asarray(rng.normal(size=n))
taus = jnp.geomspace(1e-3, 1.0, 16)
ref = sh.diagnostic_sweep(m, x, y, taus)
xs = jax.device_put(x, NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data")))
out = sh.diagnostic_sweep(m, xs, y, taus)
err = max(float(jnp.max(jnp.abs(a - b) / jnp.maximum(jnp.abs(b), 1e-300)))
          for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)))
print(json.dumps({"devices": len(jax.devices()), "max_rel_diff": err}))
"""


def case_sharded(quick: bool, repeats: int) -> dict:
    """The diagnostic sweep on 4 simulated CPU devices against 1 device (float64)."""
    n = 2**12 if quick else 2**18
    out = json.loads(
        _run_probe(
            _SHARD_PROBE,
            n,
            env_extra={
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            },
        )
    )
    return {"case": "sharded", "N": n, **out, "targets": {"max_rel_diff": 1e-10}}


def case_sweep_gpu(quick: bool, repeats: int) -> dict:
    """GPU sweep: achieved exponentials/s vs the naive sweep and an exp microbenchmark."""
    gpus = [dv for dv in jax.devices() if dv.platform == "gpu"]
    if not gpus and not quick:
        return {"case": "sweep_gpu", "skipped": "no GPU visible to JAX"}
    # --quick without a GPU runs the same code on the CPU at a small size, so
    # that the case cannot rot in CI; its figures say nothing about a GPU
    K, d = 8, 32
    n, T = (2**14, 16) if not gpus else (2**18, 32) if quick else (2**24, 256)
    model, x, y = _sweep_problem(K, d, n)
    taus = np.geomspace(1e-3, 1.0, T).astype(np.float32)
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(taus)
    t_sh = _best_time(lambda: _block(sh.risk_sweep(model, xj, yj, tj)), repeats)
    t_naive = _best_time(lambda: _block(naive_jax_sweep(model, xj, yj, tj)), repeats)
    t_exp = _exp_limit_s(n, K, tj, repeats)
    n_exp = n * K * T
    got = sh.risk_sweep(model, xj, yj, tj).soft.value
    naive = naive_jax_sweep(model, xj, yj, tj)[0]
    return {
        "case": "sweep_gpu",
        "device": str(gpus[0]) if gpus else "cpu (no GPU: code-path check only)",
        "K": K,
        "d": d,
        "N": n,
        "T": T,
        "softhard_s": t_sh,
        "naive_jax_s": t_naive,
        "exp_microbench_s": t_exp,
        "softhard_exp_per_s": n_exp / t_sh,
        "limit_exp_per_s": n_exp / t_exp,
        "speedup_vs_naive_jax": t_naive / t_sh,
        "fraction_of_exp_limit": t_exp / t_sh,
        "max_rel_diff_vs_naive_jax": _max_rel(got, naive),
        "targets": {"speedup_vs_naive_jax": 3.0, "fraction_of_exp_limit": 0.25},
    }


def case_hessian(quick: bool, repeats: int) -> dict:
    """Top-10 Hessian eigenvalues of a K = 8, d = 32 MoE vs hessian-eigenthings and PyHessian.

    Ours is the user's call `hessian_spectrum(sh.soft_risk, model, k, data=(x, y),
    tau=...)`, which takes the structured HVP; the generic forward-over-reverse
    HVP (`structured=False`) is timed beside it. PyHessian has no Lanczos: it
    finds the top eigenvalues by power iteration with deflation, run here to a
    relative change of 1e-10 per eigenvalue or 200 products (its own stopping rule), float64.

    `softhard_mixed_s` is the same call with `matvec_dtype=jnp.float32`: the
    Lanczos steps on float32 products, their 20 extreme Ritz vectors refined by
    one float64 Rayleigh–Ritz step (float64 answers, checked against `eigh`).

    Both run Lanczos with full reorthogonalisation and the same number of
    Hessian-vector products (`lanczos_steps`) on the same model and sample, in
    float64 (the headline figures) and again in float32 (matvecs and basis in
    float32 on both sides, as on a GPU); every answer is compared with dense
    float64 `eigh`. `matvec_ms` is the time per Hessian-vector product.
    """
    try:
        import pyhessian  # noqa: F401
        import torch
        from hessian_eigenthings import HessianOperator, lanczos, supervised_loss
    except ImportError as e:
        return {"case": "hessian", "skipped": f"bench extra not installed: {e}"}
    from softhard.landscape import hessian as dense_hessian
    from softhard.landscape import hessian_spectrum

    x64_before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    torch.set_num_threads(os.cpu_count() or 1)
    K, d, tau, k, steps = 8, 32, 0.1, 10, 80
    n = 2**12 if quick else 2**16
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(K, d)) / np.sqrt(d), rng.normal(size=K)
    B, c = rng.normal(size=(K, d)) / np.sqrt(d), rng.normal(size=K)
    x, y = rng.normal(size=(n, d)), rng.normal(size=n)

    def ours(dtype, structured=True, matvec_dtype=None):
        # the user's call: the built-in loss with its data, so the structured
        # HVP (J^T C J per sample, cached at the point) is used
        model = sh.MoE(sh.LinearRouter(W, b), sh.LinearExperts(B, c))
        model = jax.tree.map(lambda a: jnp.asarray(a, dtype), model)
        xj, yj = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        t_ = jnp.asarray(tau, dtype)

        def top(m):
            return hessian_spectrum(
                sh.soft_risk, m, k, data=(xj, yj), tau=t_, which="magnitude",
                num_matvecs=steps, structured=structured, matvec_dtype=matvec_dtype,
            ).eigenvalues  # fmt: skip

        top = jax.jit(top)
        t = _best_time(lambda: top(model).block_until_ready(), repeats)
        loss = lambda m: sh.soft_risk(m, xj, yj, t_)
        return t, np.sort(np.asarray(top(model), dtype=np.float64)), (loss, model)

    def pyhessian_run(tdtype):
        from pyhessian import hessian as PyHessian

        torch.set_default_dtype(tdtype)  # its random start vectors take the default dtype
        net = torch_moe(tdtype)
        data = (torch.from_numpy(x).to(tdtype), torch.from_numpy(y).to(tdtype))
        crit = torch.nn.MSELoss()

        # built once, outside the timed call (its gradient graph is reused by every product)
        h = PyHessian(net, crit, data=data, cuda=False)

        def run():
            # power iteration with deflation: to a relative change of 1e-10, at most 200 steps each
            torch.manual_seed(0)
            return h.eigenvalues(maxIter=200, tol=1e-10, top_n=k)[0]

        try:
            t = _best_time(run, 1)
            return t, np.sort(np.asarray(run(), dtype=np.float64))
        finally:
            torch.set_default_dtype(torch.float32)

    def torch_moe(tdtype):
        class TorchMoE(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.router = torch.nn.Linear(d, K).to(tdtype)
                self.experts = torch.nn.Linear(d, K).to(tdtype)
                with torch.no_grad():
                    for lin, (w_, b_) in ((self.router, (W, b)), (self.experts, (B, c))):
                        lin.weight.copy_(torch.from_numpy(w_))
                        lin.bias.copy_(torch.from_numpy(b_))

            def forward(self, inp):
                g = torch.softmax(self.router(inp) / tau, dim=-1)
                return (g * self.experts(inp)).sum(-1)

        return TorchMoE()

    def theirs(tdtype):
        data = [(torch.from_numpy(x).to(tdtype), torch.from_numpy(y).to(tdtype))]
        op = HessianOperator(torch_moe(tdtype), data, supervised_loss(torch.nn.functional.mse_loss))

        def run():
            return lanczos(op, k=k, max_iter=steps, reorthogonalize=True, which="LM", seed=0)

        t = _best_time(run, max(1, repeats // 2 if not quick else repeats))
        return t, np.sort(np.asarray(run().eigenvalues.double(), dtype=np.float64))

    try:
        t64, v64, (loss64, model64) = ours(jnp.float64)
        dense = np.linalg.eigvalsh(np.asarray(dense_hessian(loss64, model64)))
        ref = np.sort(dense[np.argsort(-np.abs(dense))[:k]])
        rel = lambda v: _max_rel(v, ref)
        tm64, vm64, _ = ours(jnp.float64, matvec_dtype=jnp.float32)
        tg64, vg64, _ = ours(jnp.float64, structured=False)
        t32, v32, _ = ours(jnp.float32)
        th64, w64 = theirs(torch.float64)
        th32, w32 = theirs(torch.float32)
        tp64, p64 = pyhessian_run(torch.float64)
    finally:
        jax.config.update("jax_enable_x64", x64_before)
    return {
        "case": "hessian",
        "K": K,
        "d": d,
        "P": int(2 * K * (d + 1)),
        "N": n,
        "tau": tau,
        "k": k,
        "lanczos_steps": steps,
        "dtype": "float64",
        "softhard_s": t64,
        "hessian_eigenthings_s": th64,
        "speedup_vs_hessian_eigenthings": th64 / t64,
        "softhard_matvec_ms": 1e3 * t64 / steps,
        "hessian_eigenthings_matvec_ms": 1e3 * th64 / steps,
        "max_rel_diff_softhard_vs_eigenthings": _max_rel(v64, w64),
        "max_rel_err_softhard_vs_eigh": rel(v64),
        "max_rel_err_eigenthings_vs_eigh": rel(w64),
        "softhard_mixed_s": tm64,
        "speedup_vs_hessian_eigenthings_mixed": th64 / tm64,
        "speedup_vs_pyhessian_mixed": tp64 / tm64,
        "max_rel_err_softhard_mixed_vs_eigh": rel(vm64),
        "max_rel_diff_softhard_mixed_vs_eigenthings": _max_rel(vm64, w64),
        "softhard_generic_hvp_s": tg64,
        "structured_over_generic_speedup": tg64 / t64,
        "max_rel_diff_structured_vs_generic": _max_rel(v64, vg64),
        "pyhessian_s": tp64,
        "speedup_vs_pyhessian": tp64 / t64,
        "max_rel_err_pyhessian_vs_eigh": rel(p64),
        "max_rel_diff_softhard_vs_pyhessian": _max_rel(v64, p64),
        "float32": {
            "softhard_s": t32,
            "hessian_eigenthings_s": th32,
            "speedup_vs_hessian_eigenthings": th32 / t32,
            "speedup_vs_hessian_eigenthings_float64": th64 / t32,
            "max_rel_err_softhard_vs_eigh": rel(v32),
            "max_rel_err_eigenthings_vs_eigh": rel(w32),
        },
        "top_eigenvalues": v64.tolist(),
        "targets": {
            "speedup_vs_hessian_eigenthings": 10.0,
            "speedup_vs_pyhessian": 1.0,
            "max_rel_diff": 1e-8,
        },
    }


_HESSIAN_PROBE = """
import json, sys, time
import jax
x64 = sys.argv[5] == "float64"
jax.config.update("jax_enable_x64", x64)
import jax.numpy as jnp
import softhard as sh
n, K, d, chunk = (int(v) for v in sys.argv[1:5])
dtype = sys.argv[5]
k, steps, path = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
dt = jnp.dtype(dtype)
ks = jax.random.split(jax.random.key(0), 6)
def rows(i):
    return jax.random.normal(ks[i], (K, d), dt) / d**0.5, jax.random.normal(ks[i + 1], (K,), dt)
model = sh.MoE(sh.LinearRouter(*rows(0)), sh.LinearExperts(*rows(2)))
x = jax.random.normal(ks[4], (n, d), dt)  # one copy of the sample, made on the device
y = jax.random.normal(ks[5], (n,), dt)
jax.block_until_ready((x, y))
sample_kb = (x.nbytes + y.nbytes) / 1024
def status_kb(key):
    return int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1])
# drawing the sample has a transient peak of its own (random bits, then floats):
# reset the high-water mark so the peak below is the spectrum's (Linux clear_refs 5)
open("/proc/self/clear_refs", "w").write("5")
base_kb = status_kb("VmRSS:")
t0 = time.perf_counter()
if path == "naive":  # linearise the whole-sample loss at once (the generic, unstreamed path)
    spec = sh.hessian_spectrum(lambda m: sh.soft_risk(m, x, y, 0.1), model, k=k,
                               which="magnitude", num_matvecs=steps)
else:
    spec = sh.hessian_spectrum(sh.soft_risk, model, k=k, data=(x, y), tau=0.1,
                               chunk_size=chunk, which="magnitude", num_matvecs=steps)
vals = [float(v) for v in jax.block_until_ready(spec.eigenvalues)]
secs = time.perf_counter() - t0
peak_kb = status_kb("VmHWM:")
print(json.dumps({"seconds": secs, "peak_rss_mb": peak_kb / 1024, "sample_mb": sample_kb / 1024,
                  "before_mb": base_kb / 1024,
                  "peak_above_sample_mb": (peak_kb - sample_kb) / 1024, "eigenvalues": vals}))
"""


def _hessian_probe(n, K, d, chunk, dtype, k, steps, path) -> dict:
    env = {"JAX_PLATFORMS": "cpu"}
    return json.loads(
        _run_probe(_HESSIAN_PROBE, n, K, d, chunk, dtype, k, steps, path, env_extra=env)
    )


def case_hessian_stream(quick: bool, repeats: int) -> dict:
    """Streamed Hessian top-10 (K = 8, d = 32, float64): peak RSS flat in N, fresh processes.

    The same spectrum at `N = 2^18` and `N = 2^22` (`2^12`, `2^16` quick), streamed in
    chunks of `2^15` samples, and at the small N by the naive path that linearises
    the whole-sample loss at once. Peak RSS (the high-water mark, reset after the
    sample is drawn) is reported above the sample's own bytes.
    """
    small, big = (2**12, 2**15) if quick else (2**18, 2**22)
    K, d, k, steps = 8, 32, 10, 40
    chunk = 2**11 if quick else 2**15
    runs = {
        str(n): _hessian_probe(n, K, d, chunk, "float64", k, steps, "stream") for n in (small, big)
    }
    naive = _hessian_probe(small, K, d, chunk, "float64", k, steps, "naive")
    s, b = runs[str(small)], runs[str(big)]
    return {
        "case": "hessian_stream",
        "K": K,
        "d": d,
        "chunk_size": chunk,
        "k": k,
        "lanczos_steps": steps,
        "sizes": [small, big],
        "runs": runs,
        "naive_small": naive,
        "peak_above_sample_ratio_big_over_small": b["peak_above_sample_mb"]
        / s["peak_above_sample_mb"],
        "naive_over_streamed_peak_above_sample_small": naive["peak_above_sample_mb"]
        / s["peak_above_sample_mb"],
        "max_rel_diff_streamed_vs_naive": _max_rel(
            np.sort(s["eigenvalues"]), np.sort(naive["eigenvalues"])
        ),
        "targets": {"peak_above_sample_ratio_big_over_small_max": 1.3, "max_rel_diff": 1e-8},
    }


def case_hessian_large(quick: bool, repeats: int) -> dict:
    """Top-5 Hessian eigenvalues, K = 64, d = 256 (P = 32 896), N = 2^20, float32, streamed."""
    n = 2**11 if quick else 2**20
    K, d, chunk, k, steps = 64, 256, 2**14, 5, 20
    out = _hessian_probe(n, K, d, chunk, "float32", k, steps, "stream")
    return {
        "case": "hessian_large",
        "K": K,
        "d": d,
        "P": 2 * K * (d + 1),
        "N": n,
        "k": k,
        "lanczos_steps": steps,
        "dtype": "float32",
        **{f: out[f] for f in ("seconds", "peak_rss_mb", "sample_mb", "peak_above_sample_mb")},
        "eigenvalues": out["eigenvalues"],
        "targets": {"completes_in_minutes": True},
    }


#: run order; the PyTorch case goes last: after it, JAX timings in the same
#: process were measured 2x slower (PyTorch's worker threads stay busy)
CASES = {
    "sweep_cpu": case_sweep_cpu,
    "sweep_gpu": case_sweep_gpu,
    "sweep_topk": case_sweep_topk,
    "memory": case_memory,
    "sharded": case_sharded,
    "hessian_stream": case_hessian_stream,
    "hessian_large": case_hessian_large,
    "hessian": case_hessian,
}


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
    names = [c for c in CASES if c in names]  # always in the run order of CASES
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
