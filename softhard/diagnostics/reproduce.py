"""`softhard reproduce`: Tables 1–3 of Section 7 and Table 4 (top-2 routing, §T) as files.

One run holds a lock on its output folder (`io.output_lock`: a concurrent
run into the same folder refuses), records its seed and a fresh run id in
every file it writes, removes a stale `summary.json` before the first table
and writes the new one last, so a `summary.json` always describes the tables
beside it (an interrupted run leaves no summary at all).
"""

from __future__ import annotations

import os
import sys
import time

import jax

from .._validate import check_seed
from .io import new_run_id, output_lock, save_figure, write_csv, write_json, write_latex

__all__ = ["reproduce", "TABLES", "SIZES"]

TABLES = ("table1", "table2", "table3", "table4")

#: Monte Carlo and training sizes: the default run and the quick one (CI)
SIZES = {
    "full": {
        "table1": {"n": 2**24},
        "table2": {"n": 2**24},
        "table3": {"n": 20_000, "steps": 1500},
        "table4": {"n": 2**22},
    },
    "quick": {
        "table1": {"n": 2**16},
        "table2": {"n": 2**16},
        "table3": {"n": 20_000, "steps": 1500},
        "table4": {"n": 2**16},
    },
}


def device_note() -> str:
    """What JAX runs on, e.g. `cpu x1 (cpu)`."""
    devs = jax.devices()
    return f"{devs[0].platform} x{len(devs)} ({devs[0].device_kind})"


def _run_table(name: str, key, sizes: dict):
    from . import experiments

    return getattr(experiments, name)(key=key, **sizes[name])


def _write_table(out_dir: str, res, run: dict) -> list[str]:
    """Every file of one table, each recording `run = {"seed": …, "run_id": …}`."""
    import matplotlib.pyplot as plt

    idx = res.name[-1]
    files = [
        write_csv(os.path.join(out_dir, f"{res.name}.csv"), res.columns, meta=run),
        write_json(
            os.path.join(out_dir, f"{res.name}.json"),
            {
                "table": res.name,
                **run,
                "columns": res.columns,
                "checks": [c._asdict() for c in res.checks],
                "meta": res.meta,
            },
        ),
        write_latex(
            os.path.join(out_dir, f"{res.name}.tex"),
            res.columns,
            headers=res.headers,
            formats=res.formats,
            meta=run,
        ),
        save_figure(res.figure, os.path.join(out_dir, f"fig{idx}.png"), meta=run),
    ]
    plt.close(res.figure)
    return files


def reproduce(
    out_dir: str = "results",
    *,
    quick: bool = False,
    seed: int = 0,
    only=None,
    progress: bool | None = None,
    sizes: dict | None = None,
) -> dict:
    """Run the requested tables, write every file atomically, and return the summary.

    Args:
        out_dir: directory for `tableN.{csv,json,tex}`, `figN.png`, `summary.json`.
        quick: small sizes (CI, about 15 s); the default (N = 2^24 for Tables 1
            and 2) takes under a minute on 2 CPU cores.
        seed: PRNG seed; table `N` uses `fold_in(key(seed), N)`.
        only: iterable of table names (default: all three).
        progress: show a progress bar (default: when stderr is a terminal).
        sizes: per-table overrides of the sizes, e.g. `{"table1": {"n": 2**26}}`,
            merged over `SIZES["quick" or "full"]` (`scripts/reproduce_paper.py`).

    Returns:
        the `summary.json` payload: per table its checks, files and seconds.
    """
    import matplotlib

    matplotlib.use("Agg")
    from tqdm.auto import tqdm

    names = list(TABLES if only is None else only)
    bad = sorted(set(names) - set(TABLES))
    if bad or not names:
        raise ValueError(f"`only` must name tables among {list(TABLES)}, got {names}")
    base = SIZES["quick" if quick else "full"]
    extra = dict(sizes or {})
    if set(extra) - set(TABLES):
        raise ValueError(f"`sizes` must be keyed by tables among {list(TABLES)}, got {list(extra)}")
    sizes = {t: {**base[t], **extra.get(t, {})} for t in TABLES}
    seed = check_seed(seed)
    key = jax.random.key(seed)
    if progress is None:
        progress = sys.stderr.isatty()
    run = {"seed": seed, "run_id": new_run_id()}
    summary = {
        "device": device_note(),
        "jax": jax.__version__,
        **run,
        "quick": quick,
        "tables": {},
    }
    with output_lock(out_dir, "out"):
        summary_path = os.path.join(out_dir, "summary.json")
        if os.path.exists(summary_path):  # stale: never beside tables of another run
            os.remove(summary_path)
        bar = tqdm(names, desc="softhard reproduce", unit="table", disable=not progress)
        t_all = time.perf_counter()
        for name in bar:
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            res = _run_table(name, jax.random.fold_in(key, int(name[-1])), sizes)
            files = _write_table(out_dir, res, run)
            summary["tables"][name] = {
                "seconds": time.perf_counter() - t0,
                "sizes": sizes[name],
                "checks": [c._asdict() for c in res.checks],
                "files": [os.path.basename(f) for f in files],
            }
        summary["seconds"] = time.perf_counter() - t_all
        summary["all_passed"] = all(
            c["passed"] for t in summary["tables"].values() for c in t["checks"]
        )
        write_json(summary_path, summary)  # last: it describes the tables beside it
    return summary
