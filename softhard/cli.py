"""The `softhard` command.

softhard                 a temperature sweep of the Table 2 example (= `softhard demo`)
softhard demo [--offset B] [--n N] [--taus ...] [--seed S]
softhard sweep CONFIG [--csv PATH] [--plot PATH]
                         a temperature sweep of a model given as a JSON/TOML config
softhard reproduce [--out DIR] [--quick] [--seed S] [--only T1,T2]
softhard analyze FILE [...]  a router report from a logits dump

The long-running commands (sweep, reproduce, analyze) show a tqdm progress
bar on stderr when stderr is a terminal, and none otherwise (pipes, files,
CI logs). `softhard sweep` warns on stderr when the router's top-two logits
tie exactly on a positive fraction of the sample (an atom of the margin at 0):
the gap `L_τ − L_0` then has a non-vanishing limit as `τ → 0`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable

import jax
import numpy as np


def _device_note() -> str:
    import jax

    devs = jax.devices()
    return f"{devs[0].platform} x{len(devs)} ({devs[0].device_kind})"


def _columns(d, taus) -> dict:
    """The printed/CSV table of a `SweepDiagnostics` over `taus: [T]`."""
    return {
        "tau": np.asarray(taus),
        "soft_risk": np.asarray(d.soft.value),
        "soft_stderr": np.asarray(d.soft.stderr),
        "hard_risk": np.full(len(taus), float(d.hard.value)),
        "gap": np.asarray(d.gap.value),
        "gap_stderr": np.asarray(d.gap.stderr),
        "gap_over_tau": np.asarray(d.gap.value) / np.asarray(taus),
        "mass_2tau": np.asarray(d.mass.value),
        "mass_stderr": np.asarray(d.mass.stderr),
    }


def _demo(args) -> int:
    import jax
    import jax.numpy as jnp

    from .diagnostics import table2_setup
    from .risk import diagnostic_sweep

    model, teacher, law = table2_setup(args.offset)
    taus = np.asarray(args.taus, dtype=float)
    t0 = time.perf_counter()
    x, y = teacher.sample(jax.random.key(args.seed), law, args.n)
    cols = _columns(diagnostic_sweep(model, x, y, jnp.asarray(taus, x.dtype)), taus)
    elapsed = time.perf_counter() - t0
    print(
        f"Table 2 example (offset b = {args.offset:g}): X ~ N(0, I_2), s = x_1 - b, "
        f"f_1 - f_2 = 2 x_2, realizable (L_0 = {cols['hard_risk'][0]:.3g})"
    )
    print(f"N = {args.n}, seed {args.seed}, device {_device_note()}, {elapsed:.2f} s")
    _print_table(
        {k: cols[k] for k in ("tau", "mass_2tau", "soft_risk", "gap", "gap_stderr")}
        | {"gap/tau": cols["gap_over_tau"]}
    )
    return 0


def _print_table(columns: dict) -> None:
    names = list(columns)
    widths = [max(10, len(n)) for n in names]
    print(" ".join(f"{n:>{w}}" for n, w in zip(names, widths)))
    print("-" * (sum(widths) + len(widths) - 1))
    for i in range(len(columns[names[0]])):
        print(" ".join(f"{float(columns[n][i]):>{w}.5g}" for n, w in zip(names, widths)))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["target"], meta_fields=["tick"])
@dataclasses.dataclass(frozen=True)
class _Ticking:
    """A target whose `.sample` calls `tick()` on the host each time it runs.

    `population_sweep` draws chunk `i` inside its streaming loop, so wrapping
    the target gives one tick per chunk: the progress of a single jitted call.
    The draws are the wrapped target's own, so the sample is unchanged.
    """

    target: object
    tick: Callable

    def sample(self, key, law, n):
        jax.debug.callback(self.tick)
        return self.target.sample(key, law, n)


_BARS: list = []  # the open sweep bars; `_tick` advances the newest


def _tick() -> None:
    """Advance the current sweep bar (one module-level function: jit's cache key stays put)."""
    if _BARS:
        _BARS[-1].update(1)


def _sweep_chunk(cfg) -> int:
    """The chunk length `population_sweep` streams `cfg` with (its default rule)."""
    from ._stats import chunk_size_for

    dtype = jax.numpy.result_type(float)
    K = jax.eval_shape(cfg.model.router, jax.ShapeDtypeStruct((cfg.law.dim,), dtype)).shape[0]
    return chunk_size_for(int(cfg.n), len(cfg.taus) * K * 2)


def sweep_columns(cfg, *, progress: bool = False) -> dict:
    """Run the sweep a config describes; returns the table's columns.

    The sample is drawn chunk by chunk inside the streaming loop
    (`population_sweep`), so memory does not grow with `cfg.n`. With
    `progress`, a tqdm bar on stderr counts the chunks (the result is the same).
    """
    import jax.numpy as jnp
    from tqdm.auto import tqdm

    from .risk import population_sweep

    taus = jnp.asarray(cfg.taus, dtype=jnp.result_type(float))
    chunk = _sweep_chunk(cfg)
    target, bar = cfg.target, None
    if progress:
        bar = tqdm(total=-(-cfg.n // chunk), desc="softhard sweep", unit="chunk", leave=False)
        _BARS.append(bar)
        target = _Ticking(cfg.target, _tick)
    try:
        d = population_sweep(
            cfg.model,
            target,
            cfg.law,
            taus,
            key=jax.random.key(cfg.seed),
            n=cfg.n,
            diagnostics=True,
            chunk_size=chunk,
        )
        d = jax.block_until_ready(d)
    finally:
        if bar is not None:
            jax.effects_barrier()  # every tick has run before the bar closes
            _BARS.remove(bar)
            bar.close()
    return _columns(d, np.asarray(taus))


PILOT_ROWS = 2**16


def tie_fraction(cfg, *, rows: int = PILOT_ROWS) -> tuple[float, int]:
    """Fraction of sample rows whose top-two router logits tie exactly (`Δ = 0`, (2.6)).

    Taken on the sweep's own sample: its first chunks (chunk `i` drawn from
    `fold_in(key(cfg.seed), i)`, as `population_sweep` draws them), up to
    `min(rows, cfg.n)` rows. A fraction `> 0` is an atom of the margin at 0
    (e.g. two identical router rows, or a ReLU MLP router whose hidden units
    all vanish on a region): the soft gates split the tie at every τ while the
    hard gate picks one expert, so `L_τ − L_0` does not vanish as `τ → 0`.

    Returns:
        `(fraction, rows)`: the tied fraction and the number of rows examined.
    """
    import jax.numpy as jnp

    from .routing import logits, top_two_margin

    dtype = jnp.result_type(float)
    chunk = _sweep_chunk(cfg)
    m = min(int(rows), int(cfg.n))
    key = jax.random.key(cfg.seed)
    ties, seen, i = 0, 0, 0
    while seen < m:
        x, _ = cfg.target.sample(jax.random.fold_in(key, i), cfg.law, chunk)
        x = x[: m - seen].astype(dtype)
        ties += int(jnp.sum(top_two_margin(logits(cfg.model.router, x)) == 0))
        seen += x.shape[0]
        i += 1
    return ties / seen, seen


def _sweep(args) -> int:
    from .diagnostics.config import load_config
    from .diagnostics.io import check_writable, figure_format, save_figure, write_csv

    try:
        cfg = load_config(args.config)
    except ValueError as e:
        print(f"softhard sweep: invalid config: {e}", file=sys.stderr)
        return 2
    try:  # every output is checked before the computation, not after it
        if args.csv:
            check_writable(args.csv, "--csv")
        if args.plot:
            figure_format(args.plot, "--plot")
            check_writable(args.plot, "--plot")
    except ValueError as e:
        print(f"softhard sweep: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    cols = sweep_columns(cfg, progress=sys.stderr.isatty())
    print(
        f"{args.config}: N = {cfg.n}, seed {cfg.seed}, device {_device_note()}, "
        f"{time.perf_counter() - t0:.2f} s"
    )
    _print_table(cols)
    frac, rows = tie_fraction(cfg)
    if frac > 0:
        print(
            f"softhard sweep: warning: the router's top-two logits tie exactly (margin Δ = 0) "
            f"on a fraction {frac:.4g} of {rows} sample rows (an atom P(Δ = 0) > 0): there the "
            "gap L_τ − L_0 has a non-vanishing limit as τ → 0 (the soft gates split a tie at "
            "every τ, the hard gate picks one expert) unless the tied experts agree",
            file=sys.stderr,
        )
    if args.csv:
        write_csv(args.csv, cols)
        print(f"wrote {args.csv}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
        ax[0].errorbar(cols["tau"], cols["gap"], yerr=cols["gap_stderr"], marker="o", ms=3)
        ax[0].set(
            xscale="log",
            xlabel=r"temperature $\tau$",
            ylabel=r"$L_\tau - L_0$",
            title="soft–hard gap",
        )
        ax[1].plot(cols["mass_2tau"], cols["gap"], "o-", ms=3)
        ax[1].set(
            xlabel=r"boundary mass $M(2\tau)$",
            ylabel=r"$L_\tau - L_0$",
            title="gap vs boundary mass",
        )
        fig.tight_layout()
        save_figure(fig, args.plot)
        plt.close(fig)
        print(f"wrote {args.plot}")
    return 0


def _reproduce(args) -> int:
    from .diagnostics.reproduce import device_note, reproduce

    only = None if args.only is None else [t.strip() for t in args.only.split(",") if t.strip()]
    print(
        f"softhard reproduce: device {device_note()}, seed {args.seed}, "
        f"{'quick' if args.quick else 'full'} run, writing to {args.out}/"
    )
    try:
        summary = reproduce(args.out, quick=args.quick, seed=args.seed, only=only)
    except ValueError as e:
        print(f"softhard reproduce: {e}", file=sys.stderr)
        return 2
    for name, t in summary["tables"].items():
        print(f"{name}: {t['seconds']:.1f} s, files {', '.join(t['files'])}")
        for c in t["checks"]:
            mark = "PASS" if c["passed"] else "FAIL"
            print(f"  [{mark}] {c['name']} = {c['value']:.4g}  ({c['criterion']})")
    print(
        f"summary: {args.out}/summary.json, all checks passed: {summary['all_passed']}, "
        f"{summary['seconds']:.1f} s"
    )
    return 0 if summary["all_passed"] else 1


def _analyze(args) -> int:
    from .diagnostics.analyze import run_cli

    return run_cli(args)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="softhard", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="temperature sweep of the Table 2 example")
    demo.add_argument("--offset", type=float, default=0.0, help="interface offset b")
    demo.add_argument("--n", type=int, default=2**20, help="Monte Carlo samples")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--taus", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.45, 0.6])
    demo.set_defaults(func=_demo)
    rep = sub.add_parser("reproduce", help="the paper's Section 7 tables and figures")
    rep.add_argument("--out", default="results", help="output directory (default: results)")
    rep.add_argument("--quick", action="store_true", help="small sizes (about 15 s)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--only", help="comma-separated subset of table1,table2,table3")
    rep.set_defaults(func=_reproduce)
    sweep = sub.add_parser("sweep", help="temperature sweep of a model from a JSON/TOML config")
    sweep.add_argument(
        "config", help="path to a .json or .toml config (see softhard.diagnostics.config)"
    )
    sweep.add_argument("--csv", help="also write the table as CSV")
    sweep.add_argument("--plot", help="also write a PNG figure")
    sweep.set_defaults(func=_sweep)
    an = sub.add_parser("analyze", help="router report from a logits dump (.npy/.npz/.safetensors)")
    an.add_argument("file", help="logits [N, K]: .npy (memory-mapped), .npz or .safetensors")
    an.add_argument("--k", type=int, default=1, help="experts per token (top-k), default 1")
    an.add_argument("--layer", nargs="+", help="only these layers (names in the file)")
    an.add_argument("--taus", type=float, nargs="+", help="temperatures (default: from margins)")
    an.add_argument("--bounds", type=float, nargs=2, metavar=("B_Y", "B_f"),
                    help="bounds on |Y| and |f_j| for the T.10 certificate")  # fmt: skip
    an.add_argument("--delta", type=float, default=0.1, help="delta of the ambiguity mass")
    an.add_argument("--allow-nonfinite", action="store_true",
                    help="report over the finite rows when some hold NaN/inf")  # fmt: skip
    an.add_argument("--out", help="folder for report.json, layers.csv/.tex and figures")
    an.set_defaults(func=_analyze)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _parser()
    if not argv:
        argv = ["demo"]
    args = p.parse_args(argv)
    if args.command == "demo":
        if args.n < 2:
            p.error("--n must be at least 2")
        if not all(math.isfinite(t) and t > 0 for t in args.taus):
            p.error(f"--taus must all be finite temperatures > 0, got {args.taus}")
        if not math.isfinite(args.offset):
            p.error(f"--offset must be a finite number, got {args.offset}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
