"""`scripts/bench.py --quick` runs and writes valid JSON (the fast case of the benchmarks)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--quick",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    cases = {c["case"]: c for c in data["cases"]}
    assert {"sweep_cpu", "memory", "sharded"} <= set(cases)
    sweep = cases["sweep_cpu"]
    assert sweep["softhard_s"] > 0 and sweep["numpy_loop_s"] > 0 and sweep["naive_jax_s"] > 0
    assert sweep["max_rel_err_vs_float64_numpy"] < 1e-4  # float32 sweep vs float64 NumPy
    assert cases["sharded"]["devices"] == 4 and cases["sharded"]["max_rel_diff"] < 1e-10
    assert cases["memory"]["peak_ratio_big_over_small"] < 1.5
    gpu = cases["sweep_gpu"]  # on a CPU-only machine: the same code at a small size
    assert gpu["softhard_s"] > 0 and 0 < gpu["fraction_of_exp_limit"]
    assert gpu["softhard_exp_per_s"] > 0 and gpu["speedup_vs_naive_jax"] > 0
