"""Section 7 at a larger scale, over several seeds: how robust are the paper's checks?

    python scripts/reproduce_paper.py [--out results_paper] [--seeds 0 1 2 3 4]
                                      [--n 67108864] [--only table1,table2]
                                      [--quick]

`softhard reproduce` runs each table once (N = 2^24 for Tables 1 and 2), in
under a minute on 2 CPU cores. This script runs the same experiments with more Monte
Carlo samples (default N = 2^26 for Tables 1 and 2) once per seed, each into
`OUT/seed<S>/` (every file of `softhard reproduce`), and writes
`OUT/seeds.json` (atomically): per check, its value for every seed, and how
many seeds passed. A check of the paper's text that fails for some seeds is a
statement about sampling noise at that N; the exact columns do not depend on
the seed. Slow: minutes per seed on a CPU, seconds on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys

from softhard.diagnostics.io import write_json
from softhard.diagnostics.reproduce import TABLES, reproduce


def collect(summaries: dict) -> dict:
    """Per check: the value and pass/fail for every seed, and the pass count."""
    checks: dict = {}
    for seed, summary in summaries.items():
        for table in summary["tables"].values():
            for c in table["checks"]:
                row = checks.setdefault(c["name"], {"criterion": c["criterion"], "seeds": {}})
                row["seeds"][str(seed)] = {"value": c["value"], "passed": c["passed"]}
    for row in checks.values():
        row["passed"] = sum(v["passed"] for v in row["seeds"].values())
        row["of"] = len(row["seeds"])
    return checks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results_paper")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--n", type=int, default=2**26, help="Monte Carlo samples, Tables 1 and 2")
    p.add_argument("--only", help="comma-separated subset of " + ",".join(TABLES))
    p.add_argument("--quick", action="store_true", help="the quick sizes (for the tests)")
    args = p.parse_args(argv)
    if args.n < 1024:
        p.error(f"--n must be at least 1024, got {args.n}")
    only = None if args.only is None else [t.strip() for t in args.only.split(",") if t.strip()]
    sizes = None if args.quick else {"table1": {"n": args.n}, "table2": {"n": args.n}}
    summaries = {}
    for seed in args.seeds:
        out = os.path.join(args.out, f"seed{seed}")
        try:
            summaries[seed] = reproduce(out, quick=args.quick, seed=seed, only=only, sizes=sizes)
        except ValueError as e:
            print(f"reproduce_paper: {e}", file=sys.stderr)
            return 2
        s = summaries[seed]
        print(f"seed {seed}: {s['seconds']:.1f} s, all checks passed: {s['all_passed']}")
    checks = collect(summaries)
    write_json(
        os.path.join(args.out, "seeds.json"),
        {"seeds": args.seeds, "sizes": sizes, "quick": args.quick, "checks": checks},
    )
    for name, row in checks.items():
        print(f"  {row['passed']}/{row['of']}  {name}  ({row['criterion']})")
    return 0 if all(r["passed"] == r["of"] for r in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
