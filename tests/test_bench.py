"""`scripts/bench.py --quick`: the JSON's schema, and every baseline's answer equals ours.

The timings are not asserted (they live in the JSON, never in unit tests);
what can fail here is the benchmark itself: a case that stops running, a
field that disappears, or a baseline that computes something else than the
project's result (a ratio against a different computation is not a result).
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: every case's fields, with the type each must have
SCHEMA = {
    "sweep_cpu": {
        "K": int,
        "d": int,
        "N": int,
        "T": int,
        "softhard_s": float,
        "numpy_loop_s": float,
        "naive_jax_s": float,
        "speedup_vs_numpy": float,
        "speedup_vs_naive_jax": float,
        "exp_microbench_s": float,
        "fraction_of_exp_limit": float,
        "max_rel_err_vs_float64_numpy": float,
        "max_rel_diff_vs_naive_jax": float,
        "max_rel_diff_vs_numpy_loop": float,
        "targets": dict,
    },
    "sweep_gpu": {
        "device": str,
        "softhard_s": float,
        "naive_jax_s": float,
        "softhard_exp_per_s": float,
        "limit_exp_per_s": float,
        "speedup_vs_naive_jax": float,
        "fraction_of_exp_limit": float,
        "max_rel_diff_vs_naive_jax": float,
        "targets": dict,
    },
    "sweep_topk": {
        "top1_s": float,
        "top2_s": float,
        "top2_rho1_s": float,
        "top2_over_top1": float,
        "top2_rho1_over_top1": float,
        "max_rel_diff_vs_soft_risk": float,
        "targets": dict,
    },
    "memory": {"sizes": list, "runs": dict, "peak_ratio_big_over_small": float, "targets": dict},
    "sharded": {"N": int, "devices": int, "max_rel_diff": float, "targets": dict},
    "hessian_stream": {
        "sizes": list,
        "runs": dict,
        "naive_small": dict,
        "peak_above_sample_ratio_big_over_small": float,
        "max_rel_diff_streamed_vs_naive": float,
        "targets": dict,
    },
    "hessian_large": {
        "P": int,
        "N": int,
        "seconds": float,
        "peak_rss_mb": float,
        "eigenvalues": list,
    },
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--quick",
            "--repeats",
            "1",
            "--out",
            str(out),
            "--cases",
            ",".join(SCHEMA),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    return {c["case"]: c for c in data["cases"]}, data


def test_schema(bench):
    cases, data = bench
    assert set(data) >= {"machine", "quick", "cases"} and data["quick"] is True
    assert set(cases) == set(SCHEMA)
    for name, fields in SCHEMA.items():
        for field, typ in fields.items():
            assert isinstance(cases[name].get(field), typ), (name, field, cases[name].get(field))
            if typ is float:
                assert math.isfinite(cases[name][field]) and cases[name][field] >= 0, (name, field)


def test_baselines_compute_the_same_answer(bench):
    cases, _ = bench
    sweep = cases["sweep_cpu"]
    # float32 sweep against a float64 NumPy reference, and against float32 baselines
    assert sweep["max_rel_err_vs_float64_numpy"] < 1e-4
    assert sweep["max_rel_diff_vs_naive_jax"] < 1e-4
    assert sweep["max_rel_diff_vs_numpy_loop"] < 1e-4
    assert cases["sweep_gpu"]["max_rel_diff_vs_naive_jax"] < 1e-4
    assert cases["sweep_topk"]["max_rel_diff_vs_soft_risk"] < 1e-4
    # 4 simulated devices against 1, float64
    assert cases["sharded"]["devices"] == 4 and cases["sharded"]["max_rel_diff"] < 1e-10
    # memory does not grow with N (10x more samples, fresh processes)
    assert cases["memory"]["peak_ratio_big_over_small"] < 1.5
    # the streamed Hessian spectrum equals the whole-sample one; memory flat in N
    assert cases["hessian_stream"]["max_rel_diff_streamed_vs_naive"] < 1e-10
    assert cases["hessian_stream"]["peak_above_sample_ratio_big_over_small"] < 1.5
    assert all(math.isfinite(v) for v in cases["hessian_large"]["eigenvalues"])


def test_gpu_bench_quick_runs_every_case(tmp_path):
    """`scripts/gpu_bench.py --quick`: the GPU script's code path on any device (no timing)."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_bench.py"), "--quick", "--repeats", "1",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cases = {c["case"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"sweep_gpu", "hessian_stream_gpu", "hessian_large_gpu"}
    assert cases["sweep_gpu"]["max_rel_diff_vs_naive_jax"] < 1e-4
    assert cases["hessian_stream_gpu"]["max_rel_diff_vs_naive"] < 1e-10
    assert all(math.isfinite(v) for v in cases["hessian_large_gpu"]["eigenvalues"])
