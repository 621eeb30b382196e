"""The GPU benchmark: one command, one GPU, under 8 minutes, one JSON.

    python scripts/gpu_bench.py [--out gpu_bench.json] [--repeats 3] [--quick]

Cases (each against a baseline measured in the same process):

* `sweep_gpu`: the fused temperature sweep at N = 2^24, T = 256 (K = 8, d = 32,
  float32): exponentials per second against the device's exp microbenchmark
  and against the naive sweep (`scripts/bench.py`'s `case_sweep_gpu`);
* `hessian_stream_gpu`: the float64 top-10 Hessian eigenvalues (K = 8, d = 32)
  at N = 2^22, streamed in chunks of 2^18 through the structured HVP, against
  the naive path that linearises the whole-sample loss at once; peak device
  memory of each (`memory_stats()["peak_bytes_in_use"]` where the backend
  reports it);
* `hessian_large_gpu`: the top-5 spectrum of a K = 64, d = 256 MoE
  (P = 32 896) at N = 2^20, float32, streamed.

Without a GPU it refuses to run (exit 2) unless `--quick` is given, which runs
the same code at small sizes on whatever device JAX has (a code-path check,
not a benchmark; `tests/test_bench.py` runs it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

# peak device memory is only meaningful without XLA's preallocation (set before JAX starts)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp

import softhard as sh

_HERE = pathlib.Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("softhard_bench", _HERE / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _moe(K: int, d: int, dtype, key):
    ks = jax.random.split(key, 4)

    def rows(i):
        return jax.random.normal(ks[i], (K, d), dtype) / d**0.5, jax.random.normal(
            ks[i + 1], (K,), dtype
        )

    return sh.MoE(sh.LinearRouter(*rows(0)), sh.LinearExperts(*rows(2)))


def _sample(n: int, d: int, dtype, key):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, d), dtype), jax.random.normal(ky, (n,), dtype)


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def case_hessian_stream_gpu(quick: bool, repeats: int) -> dict:
    """Streamed structured top-10 vs the naive linearise-all path, float64, K = 8, d = 32."""
    jax.config.update("jax_enable_x64", True)
    K, d, k, steps, tau = 8, 32, 10, 40, 0.1
    n, chunk = (2**14, 2**12) if quick else (2**22, 2**18)
    model = _moe(K, d, jnp.float64, jax.random.key(0))
    x, y = _sample(n, d, jnp.float64, jax.random.key(1))

    def streamed():
        return sh.hessian_spectrum(
            sh.soft_risk, model, k=k, data=(x, y), tau=tau, chunk_size=chunk,
            which="magnitude", num_matvecs=steps,
        ).eigenvalues  # fmt: skip

    def naive():
        loss = lambda m: sh.soft_risk(m, x, y, tau)
        return sh.hessian_spectrum(
            loss, model, k=k, which="magnitude", num_matvecs=steps
        ).eigenvalues

    streamed()  # compile
    t_stream = bench._best_time(lambda: jax.block_until_ready(streamed()), repeats)
    peak_stream = _peak_bytes()
    vals_naive, _ = _timed(naive)  # compile (and, on a small device, the first to run out)
    t_naive = bench._best_time(lambda: jax.block_until_ready(naive()), repeats)
    peak_naive = _peak_bytes()
    vals = streamed()
    return {
        "case": "hessian_stream_gpu",
        "device": str(jax.devices()[0]),
        "K": K,
        "d": d,
        "N": n,
        "chunk_size": chunk,
        "k": k,
        "lanczos_steps": steps,
        "streamed_s": t_stream,
        "naive_s": t_naive,
        "speedup_vs_naive": t_naive / t_stream,
        "peak_bytes_after_streamed": peak_stream,
        "peak_bytes_after_naive": peak_naive,
        "sample_bytes": int(x.nbytes + y.nbytes),
        "max_rel_diff_vs_naive": bench._max_rel(vals, vals_naive),
        "eigenvalues": [float(v) for v in vals],
        "targets": {"max_rel_diff": 1e-8},
    }


def case_hessian_large_gpu(quick: bool, repeats: int) -> dict:
    """Top-5 spectrum of a K = 64, d = 256 MoE at N = 2^20, float32, streamed."""
    K, d, k, steps = 64, 256, 5, 20
    n, chunk = (2**12, 2**11) if quick else (2**20, 2**17)
    model = _moe(K, d, jnp.float32, jax.random.key(2))
    x, y = _sample(n, d, jnp.float32, jax.random.key(3))

    def run():
        return sh.hessian_spectrum(
            sh.soft_risk, model, k=k, data=(x, y), tau=0.1, chunk_size=chunk,
            which="magnitude", num_matvecs=steps,
        ).eigenvalues  # fmt: skip

    _, t_first = _timed(run)
    vals, t = _timed(run)
    return {
        "case": "hessian_large_gpu",
        "device": str(jax.devices()[0]),
        "K": K,
        "d": d,
        "P": 2 * K * (d + 1),
        "N": n,
        "first_call_s": t_first,
        "seconds": t,
        "peak_bytes": _peak_bytes(),
        "eigenvalues": [float(v) for v in vals],
    }


CASES = {
    "sweep_gpu": bench.case_sweep_gpu,
    "hessian_large_gpu": case_hessian_large_gpu,
    "hessian_stream_gpu": case_hessian_stream_gpu,  # last: it turns on float64
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, any device (code path)")
    p.add_argument("--out", default="gpu_bench.json")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    gpus = [dv for dv in jax.devices() if dv.platform == "gpu"]
    if not gpus and not args.quick:
        print(
            "gpu_bench: no GPU visible to JAX (use --quick for a code-path check)", file=sys.stderr
        )
        sys.exit(2)
    t0 = time.perf_counter()
    cases = [fn(args.quick, args.repeats) for fn in CASES.values()]
    results = {
        "machine": {"devices": [str(dv) for dv in jax.devices()], "jax": jax.__version__},
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "cases": cases,
    }
    bench._write_atomic(args.out, results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
